//! `X-Request-Id`: taken from the request when it is a sane token, else generated.
//!
//! "Sane" is strict on purpose: the id is written into every log line, so anything that
//! could forge a log field or a line (quotes, control characters, newlines) or bloat the
//! logs is replaced rather than escaped.

use std::cell::{Cell, RefCell};
use std::future::Future;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// A `HeaderName`, not a `&str`: a map looks a name up as it is, where a string is
/// parsed into one first, on every request.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

/// What the code a request calls can ask of it: its id, for log lines written deep inside
/// a handler; whether it is reading its body now (the JSON extractor says so), for its
/// time limit to tell a slow client from a slow server; and where what it may have made
/// would be, for an answer cut short by that limit to name it. One task local for all:
/// one scope per request (a task local costs far less per request than a tracing span).
struct Scope {
    id: HeaderValue,
    /// Set before a body read, cleared once it has ended: a read cut short by the
    /// request's time limit leaves it set.
    reading_body: Cell<bool>,
    /// The path of the resource the request may have made (a create sets it before its
    /// write).
    location: RefCell<Option<String>>,
}

tokio::task_local! {
    static REQUEST: Scope;
}

/// Runs `work` as the request `id`: [`current`] inside it returns that id, and
/// [`reading_body`] what [`set_reading_body`] last set.
pub async fn scope<F: Future>(id: HeaderValue, work: F) -> F::Output {
    let scope = Scope {
        id,
        reading_body: Cell::new(false),
        location: RefCell::new(None),
    };
    REQUEST.scope(scope, work).await
}

/// The id of the request being handled, or "" outside of one.
pub fn current() -> String {
    REQUEST
        .try_with(|scope| scope.id.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Whether the request being handled is reading its body (false outside of one).
pub fn reading_body() -> bool {
    REQUEST
        .try_with(|scope| scope.reading_body.get())
        .unwrap_or(false)
}

/// Says whether the request being handled is reading its body (nothing outside of one).
pub fn set_reading_body(reading: bool) {
    let _ = REQUEST.try_with(|scope| scope.reading_body.set(reading));
}

/// Says where the resource the request is about to make would be (nothing outside of one).
pub fn set_location(path: String) {
    let _ = REQUEST.try_with(|scope| *scope.location.borrow_mut() = Some(path));
}

/// Where the request being handled said what it may have made would be, if it did.
pub fn location() -> Option<String> {
    REQUEST
        .try_with(|scope| scope.location.borrow().clone())
        .ok()
        .flatten()
}

/// The request's own id if acceptable, else a fresh UUID.
pub fn from_headers(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(HEADER)
        .filter(|value| is_sane(value.as_bytes()))
        .cloned()
        .unwrap_or_else(generate)
}

/// A token safe to write into a log line as is: 1 to 128 characters of letters, digits and
/// `-_.:`.
pub(crate) fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh v4 UUID, hyphenated. Its bytes are shared from the start: the id is cloned into
/// the request's scope and the response's headers, and a value copied from a `&str`
/// would be copied again (an allocation) on its first clone.
fn generate() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_sane_id_is_kept() {
        assert_eq!(from_headers(&with("abc-123_X.y:z")), "abc-123_X.y:z");
    }

    #[test]
    fn forged_ids_are_replaced() {
        for forged in [
            "a\"b",
            "x} {\"level\":\"ERROR\"",
            "tab\there",
            &"a".repeat(129),
            "space here",
        ] {
            let id = from_headers(&with(forged));
            assert_ne!(id, forged);
            assert_eq!(id.len(), 36, "a fresh UUID replaces {forged:?}");
        }
    }

    #[test]
    fn a_missing_id_is_generated_uniquely() {
        let a = from_headers(&HeaderMap::new());
        let b = from_headers(&HeaderMap::new());
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(
                id.to_str().unwrap(),
                parsed.hyphenated().to_string(),
                "lower case"
            );
        }
    }
}
