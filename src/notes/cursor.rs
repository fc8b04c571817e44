//! The opaque pagination cursor: the position (created_at, id) of the last note of a page.
//!
//! Encoded as 24 bytes (microseconds since the epoch, then the UUID) in unpadded
//! base64url: always exactly 32 characters, and every 32-character base64url string
//! decodes to *some* position. A forged cursor therefore cannot make a query fail; it
//! only starts the listing somewhere, which reveals nothing a client could not list anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use uuid::Uuid;

pub const ENCODED_LEN: usize = 32;
/// PostgreSQL's timestamptz reaches further, but `time` stops at ±9999 years: positions
/// outside year 1..=9999 are clamped, which orders them the same against every real note.
const MIN_MICROS: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
const MAX_MICROS: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let micros = (self.created_at.unix_timestamp_nanos() / 1_000) as i64;
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&micros.to_be_bytes());
        bytes[8..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `None` when `text` is not 32 base64url characters.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() != ENCODED_LEN {
            return None;
        }
        let bytes: [u8; 24] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
        let micros = i64::from_be_bytes(bytes[..8].try_into().ok()?).clamp(MIN_MICROS, MAX_MICROS);
        let created_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()?;
        let id = Uuid::from_bytes(bytes[8..].try_into().ok()?);
        Some(Self { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_microsecond_precision() {
        let cursor = Cursor {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_000)
                .unwrap(),
            id: Uuid::now_v7(),
        };
        let text = cursor.encode();
        assert_eq!(text.len(), ENCODED_LEN);
        assert_eq!(Cursor::decode(&text), Some(cursor));
    }

    #[test]
    fn every_well_formed_string_decodes_even_extreme_ones() {
        for text in [
            "A".repeat(32),
            "_".repeat(32),
            "-".repeat(32),
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz".into(),
        ] {
            assert!(Cursor::decode(&text).is_some(), "{text}");
        }
    }

    #[test]
    fn malformed_strings_do_not() {
        for text in [
            "",
            "abc",
            &"A".repeat(31),
            &"A".repeat(33),
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert_eq!(Cursor::decode(text), None, "{text}");
        }
    }
}
