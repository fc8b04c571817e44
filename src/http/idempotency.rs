//! `Idempotency-Key`: a client's name for one attempt at a non-idempotent request, sent
//! again unchanged with each retry, so that the server can tell a retry from a new request
//! (the IETF draft "The Idempotency-Key HTTP Header Field"). Only read and checked here;
//! what a retry then means is the route's business.

use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::request::Parts;

use super::problem::ApiError;
use super::request_id;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// A key as the client sent it: a bare token, or the draft's quoted string (`"…"`), of 1
/// to 128 letters, digits and `-_.:`: it is stored, and written into log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &[u8]) -> Option<Self> {
        let unquoted = value
            .strip_prefix(b"\"")
            .and_then(|rest| rest.strip_suffix(b"\""))
            .unwrap_or(value);
        request_id::is_sane(unquoted).then(|| Self(String::from_utf8_lossy(unquoted).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The request's key, if it sent one; a malformed key is a 400, never ignored (the client
/// would believe its retries safe).
pub struct MaybeIdempotencyKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(ApiError::InvalidParameter(
                "Idempotency-Key must be sent once".into(),
            ));
        }
        IdempotencyKey::parse(value.as_bytes())
            .map(|key| Self(Some(key)))
            .ok_or_else(|| {
                ApiError::InvalidParameter(
                    "Idempotency-Key must be 1 to 128 letters, digits or -_.: \
                     (a UUID serves), bare or in double quotes"
                        .into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_quoted_keys_are_the_same_key() {
        let bare = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap();
        let quoted = IdempotencyKey::parse(b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"").unwrap();
        assert_eq!(bare, quoted);
        assert_eq!(bare.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            &b""[..],
            b"\"\"",
            b"a b",
            b"\"unterminated",
            b"x\"y",
            b"line\nbreak",
            &[b'k'; 129][..],
        ] {
            assert_eq!(IdempotencyKey::parse(bad), None, "{bad:?}");
        }
    }
}
