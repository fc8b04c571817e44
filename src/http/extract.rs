//! Extractors whose rejections are problem+json: axum's own answer plain text.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::budget::{PayloadBudget, ReadError};
use super::problem::ApiError;

pub use crate::config::budget::BODY_LIMIT_BYTES;

/// A JSON object body, with problem+json rejections: media type 415, size 413, syntax
/// 400, anything but an object or a mismatch with `T` 422, no room left in the payload
/// budget 503.
///
/// The body is read frame by frame against the payload budget (`http::budget`), then
/// parsed. axum's `Json<T>` alone would accept `["a", "b"]` for a struct (serde fills
/// fields from a sequence in order): the body is first taken as raw JSON, checked to be an
/// object, then read into `T`.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    PayloadBudget: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let (bytes, _charge) = PayloadBudget::from_ref(state)
            .read(body, BODY_LIMIT_BYTES)
            .await
            .map_err(|error| match error {
                ReadError::TooLarge => {
                    ApiError::PayloadTooLarge("the request body exceeds 1 MiB".into())
                }
                ReadError::OverBudget => ApiError::OverloadedMemory,
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
            .map(Json)
            .map_err(|e| ApiError::InvalidBody(e.to_string()))
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
