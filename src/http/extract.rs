//! Extractors whose rejections are problem+json: axum's own answer plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;

use super::problem::ApiError;

/// `Json<T>` with problem+json rejections: syntax 400, schema 422, media type 415,
/// size 413.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

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
