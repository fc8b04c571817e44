//! RFC 9457 problem details: every API failure answers `application/problem+json` with
//! `type`, `title`, `status` and `detail`. The vocabulary is fixed here, in one enum, so
//! that no driver text reaches a client by accident; the one library text that does, the
//! parser's account of a bad body or query, is cut short (it can quote the client).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Where each problem type is documented (`docs/api-problems.md`).
const TYPE_BASE: &str = "https://github.com/farol-project/farol/blob/main/docs/api-problems.md#";
pub const CONTENT_TYPE: &str = "application/problem+json";
/// How long a shed or failed client should wait before trying again, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; its fragment is a stable identifier.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// For validation failures: each offending field and why.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
    /// For a creation whose outcome is unknown: where the resource is if it was made.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// An `Idempotency-Key` sent again with a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("too many requests in flight")]
    Overloaded,
    #[error("the memory set aside for payloads is in use")]
    OverloadedMemory,
    #[error("the request took too long")]
    Timeout,
    /// The time limit passed while the client was still sending its body: its slowness,
    /// not the server's, so a 4xx that no availability alert counts.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the database is unavailable")]
    DatabaseUnavailable,
    #[error("every database connection is busy")]
    DatabaseBusy,
    /// A request that changes state, cut short after it may have taken effect: no
    /// answer came from the database in time, or the request's time limit passed while
    /// its handler ran. Unlike the other 503s, no `Retry-After`: a blind retry of a
    /// creation that did happen makes a duplicate. `location`: where the created
    /// resource is, if it was, when the handler knows.
    #[error("the outcome of the request is unknown")]
    OutcomeUnknown { location: Option<String> },
    #[error("the service is starting")]
    NotReady,
    #[error("injected fault")]
    InjectedFault,
    /// The cause is logged, never sent.
    #[error("internal error")]
    Internal,
    /// The client went away before its body had all come: nobody reads this answer. A
    /// 4xx, as the body sent too slowly is (408): neither spends the latency budget,
    /// which a 499 (a client that gave up on a slow answer) does.
    #[error("the connection ended before the request body had all arrived")]
    BodyIncomplete,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            InvalidBody(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Request body does not match the schema",
            ),
            Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Validation failed",
            ),
            InvalidQuery(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-query",
                "Invalid query parameter",
            ),
            InvalidParameter(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-parameter",
                "Invalid parameter",
            ),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            IdempotencyKeyReused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            ),
            Overloaded | OverloadedMemory => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service overloaded",
            ),
            Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "Request body timed out",
            ),
            DatabaseUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
            ),
            DatabaseBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database-busy",
                "Database busy",
            ),
            OutcomeUnknown { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome-unknown",
                "Outcome unknown",
            ),
            NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                "Service starting",
            ),
            InjectedFault => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected-fault",
                "Injected fault",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
            BodyIncomplete => (
                StatusCode::BAD_REQUEST,
                "body-incomplete",
                "Body incomplete",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn detail(&self) -> String {
        use ApiError::*;
        match self {
            Validation(errors) => format!("{} field(s) failed validation", errors.len()),
            Overloaded => "the service is at its concurrency limit; retry shortly".into(),
            OverloadedMemory => {
                "the memory set aside for request and response bodies is in use; retry shortly"
                    .into()
            }
            Timeout => "the request did not finish within the server's time limit".into(),
            BodyTimeout => "the request body did not arrive within the server's time limit".into(),
            DatabaseUnavailable => "the database did not answer; retry shortly".into(),
            DatabaseBusy => {
                "every database connection stayed busy for the whole wait; retry shortly".into()
            }
            OutcomeUnknown {
                location: Some(location),
            } => format!(
                "the database gave no answer in time, the connection broke under the insert, \
                 or the server's time limit cut the request short: the note may or may not \
                 have been created. Look for it at {location} before sending the request \
                 again; an Idempotency-Key header makes a retry safe"
            ),
            OutcomeUnknown { location: None } => {
                "the server's time limit cut the request short after it may have taken effect: \
                 check before sending it again; an Idempotency-Key header makes a retry safe"
                    .into()
            }
            NotReady => {
                "the service has not yet found its database schema in place; retry shortly".into()
            }
            InjectedFault => "fault injection is on (CHAOS_ERROR_RATE)".into(),
            Internal => "an unexpected error occurred; it has been logged".into(),
            other => cut(other.to_string(), MAX_DETAIL_BYTES),
        }
    }

    pub fn to_problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        Problem {
            type_: format!("{TYPE_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: self.detail(),
            errors: match self {
                ApiError::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
            location: match self {
                ApiError::OutcomeUnknown { location } => location.clone(),
                _ => None,
            },
        }
    }
}

/// The most of a detail made from library text (serde's and axum's messages) that is
/// sent: such text can quote the client's own input, and a 1 MiB key or a 32 KiB query
/// string would otherwise come back whole.
const MAX_DETAIL_BYTES: usize = 256;

/// `text` cut to `max` bytes at a character's boundary, with `…` where it was cut.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Which problem an answer is, for the access log: its type's last segment, with the
/// memory shed told apart from the concurrency shed (one type for clients, two causes
/// for whoever reads the log). Set on every problem answer's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProblemKind(pub &'static str);

impl ApiError {
    fn kind(&self) -> ProblemKind {
        match self {
            ApiError::OverloadedMemory => ProblemKind("overloaded-memory"),
            other => ProblemKind(other.parts().1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.to_problem();
        let body = serde_json::to_vec(&problem).expect("a problem always serialises");
        let mut response = (self.status(), body).into_response();
        response.extensions_mut().insert(self.kind());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status() == StatusCode::REQUEST_TIMEOUT {
            // the rest of the body was never read: the connection cannot carry another
            // request, and RFC 9110 asks the server to say that it closes it
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status() == StatusCode::SERVICE_UNAVAILABLE
            && !matches!(self, ApiError::OutcomeUnknown { .. })
        {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The access log reads the kind from the answer: the type's own name, but for the
    /// two sheds that share one type.
    #[test]
    fn every_problem_answer_says_which_problem_it_is() {
        for (error, kind) in [
            (ApiError::NotFound("x".into()), "not-found"),
            (ApiError::Timeout, "timeout"),
            (ApiError::DatabaseBusy, "database-busy"),
            (ApiError::DatabaseUnavailable, "database-unavailable"),
            (ApiError::Overloaded, "overloaded"),
            (ApiError::OverloadedMemory, "overloaded-memory"),
            (
                ApiError::OutcomeUnknown { location: None },
                "outcome-unknown",
            ),
        ] {
            let response = error.into_response();
            assert_eq!(
                response.extensions().get::<ProblemKind>(),
                Some(&ProblemKind(kind))
            );
        }
    }

    #[test]
    fn a_detail_quoting_the_client_is_cut_at_a_character_boundary() {
        let short = ApiError::InvalidBody("unknown field `admin`".into()).to_problem();
        assert_eq!(short.detail, "unknown field `admin`");
        for quoted in ["k".repeat(1 << 20), "é".repeat(1000)] {
            let detail = ApiError::InvalidBody(format!("unknown field `{quoted}`"))
                .to_problem()
                .detail;
            assert!(
                detail.len() <= MAX_DETAIL_BYTES + '…'.len_utf8(),
                "{}",
                detail.len()
            );
            assert!(detail.starts_with("unknown field `"), "{detail}");
            assert!(detail.ends_with('…'), "{detail}");
        }
    }

    /// Every 503 invites a retry after a second, but the one where the request may have
    /// taken effect: a retry there could make a duplicate.
    #[test]
    fn only_an_unknown_outcome_is_a_503_without_retry_after() {
        for error in [
            ApiError::Overloaded,
            ApiError::Timeout,
            ApiError::DatabaseBusy,
            ApiError::DatabaseUnavailable,
            ApiError::NotReady,
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], RETRY_AFTER_SECONDS);
        }
        let unknown = ApiError::OutcomeUnknown {
            location: Some("/api/v1/notes/x".into()),
        };
        let problem = unknown.to_problem();
        assert_eq!(problem.location.as_deref(), Some("/api/v1/notes/x"));
        assert!(
            problem.detail.contains("/api/v1/notes/x"),
            "{}",
            problem.detail
        );
        let response = unknown.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }
}
