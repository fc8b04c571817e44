//! Extractors whose rejections are problem+json: axum's own answer plain text.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::budget::{BodyCharge, PayloadBudget, ReadError};
use super::problem::{self, ApiError};
use super::request_id;

pub use crate::config::budget::BODY_LIMIT_BYTES;

/// Whether a body read was in progress when the request's work was dropped at its time
/// limit (false outside a request's [`request_id::scope`]): a client that sends slowly
/// gets 408, and must not spend the service's error budget with 503s.
pub fn was_reading_body() -> bool {
    request_id::reading_body()
}

/// A JSON object body, with problem+json rejections: media type 415, size 413, syntax
/// 400, anything but an object or a mismatch with `T` 422, no room left in the payload
/// budget 503 (and, through [`was_reading_body`], a body still arriving at the request's
/// time limit 408).
///
/// Every route that takes a body takes it through this extractor: its limit is the only
/// one (no layer over the routes sets one; an API test sends every operation in the
/// OpenAPI document that has a body more than the limit). The body is read frame by
/// frame against the payload budget (`http::budget`), then parsed. axum's `Json<T>`
/// alone would accept `["a", "b"]` for a struct (serde fills fields from a sequence in
/// order): the body is first taken as raw JSON, checked to be an object, then read into
/// `T`.
///
/// The body's charge comes with the value ([`BodyCharge`]): what was parsed out of it
/// (a note's title and body, up to 40 KB of text) lives as long as the request's work,
/// which may be a whole wait for the database, and stays counted that long, once the
/// handler has cut the charge down to it ([`BodyCharge::keep`]).
pub struct Json<T>(pub T, pub BodyCharge);

/// The most of a JSON path written in a problem's detail.
const MAX_PATH_BYTES: usize = 64;

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    PayloadBudget: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        request_id::set_reading_body(true);
        let read = PayloadBudget::from_ref(state)
            .read(body, BODY_LIMIT_BYTES)
            .await;
        request_id::set_reading_body(false);
        let (bytes, charge) = read.map_err(|error| match error {
            ReadError::TooLarge => {
                ApiError::PayloadTooLarge("the request body exceeds 1 MiB".into())
            }
            ReadError::OverBudget => ApiError::OverloadedMemory,
            ReadError::ClientGone => ApiError::BodyIncomplete,
            ReadError::Broken => {
                ApiError::MalformedJson("the request body could not be read".into())
            }
        })?;
        // axum's own extractor on the bytes read: its media-type check and JSON syntax.
        let request = Request::from_parts(parts, Body::from(bytes));
        let axum::Json(raw) = axum::Json::<Box<RawValue>>::from_request(request, state).await?;
        if !raw.get().starts_with('{') {
            return Err(ApiError::InvalidBody("expected a JSON object".into()));
        }
        let mut reader = serde_json::Deserializer::from_str(raw.get());
        serde_path_to_error::deserialize(&mut reader)
            .map(|value| Json(value, charge))
            .map_err(|error| {
                // "path: what is wrong", the path cut short on its own: an unknown key is
                // its own path, and a long one would leave no room for the rest.
                // (as serde_path_to_error's own Display: no path where none is known)
                let known = (error.path().iter())
                    .any(|segment| !matches!(segment, serde_path_to_error::Segment::Unknown));
                let path = error.path().to_string();
                let wrong = error.into_inner().to_string();
                ApiError::InvalidBody(if known {
                    format!("{}: {wrong}", problem::cut(path, MAX_PATH_BYTES))
                } else {
                    wrong
                })
            })
    }
}

/// `Path<T>`: a malformed path parameter (e.g. not a UUID) is a 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `Query<T>`: a query string that does not parse is a 422.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// axum prefixes serde's message with its own sentence; the client needs only serde's.
fn serde_detail(text: String) -> String {
    match text.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("Failed to") => rest.to_owned(),
        _ => text,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let detail = serde_detail(rejection.body_text());
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("the request body exceeds 1 MiB".into())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::InvalidBody(detail),
            _ => ApiError::MalformedJson(detail),
        }
    }
}

impl From<PathRejection> for ApiError {
    /// Our only path parameters are note ids.
    fn from(_: PathRejection) -> Self {
        ApiError::InvalidParameter("the id in the path is not a UUID".into())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidQuery(serde_detail(rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::header;
    use futures_util::stream;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Anything {}

    fn post(body: Body) -> Request {
        Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap()
    }

    #[derive(serde::Deserialize)]
    struct Text {
        #[allow(dead_code)]
        text: String,
    }

    #[tokio::test]
    async fn what_a_body_was_parsed_into_stays_charged_until_it_is_dropped() {
        let budget = PayloadBudget::new(1 << 20);
        let free = budget.available_kib();
        let body = format!(r#"{{"text":"{}"}}"#, "x".repeat(20 * 1024));
        let Ok(parsed) = Json::<Text>::from_request(post(Body::from(body)), &budget).await else {
            panic!("a valid body is parsed");
        };
        assert!(
            free - budget.available_kib() >= 40,
            "twice the body's 20 KiB, held with the parsed value: {} KiB free of {free}",
            budget.available_kib()
        );
        drop(parsed);
        assert_eq!(budget.available_kib(), free, "given back with it");
    }

    #[tokio::test]
    async fn a_body_that_arrived_is_no_longer_being_read() {
        let budget = PayloadBudget::new(1 << 20);
        let reading = request_id::scope(axum::http::HeaderValue::from_static("a-request"), async {
            let parsed = Json::<Anything>::from_request(post(Body::from("{}")), &budget).await;
            assert!(parsed.is_ok());
            was_reading_body()
        })
        .await;
        assert!(!reading, "a time limit passing now is the server's: 503");
    }

    #[tokio::test]
    async fn a_body_still_arriving_when_the_limit_passes_is_being_read() {
        let budget = PayloadBudget::new(1 << 20);
        let never_ends = Body::from_stream(stream::pending::<Result<Vec<u8>, std::io::Error>>());
        let reading = request_id::scope(axum::http::HeaderValue::from_static("a-request"), async {
            let limited = tokio::time::timeout(
                Duration::from_millis(20),
                Json::<Anything>::from_request(post(never_ends), &budget),
            );
            assert!(limited.await.is_err(), "the read never ends");
            was_reading_body()
        })
        .await;
        assert!(reading, "the client's slowness: 408");
        assert!(!was_reading_body(), "outside a request: false");
    }
}
