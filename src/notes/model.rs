//! What a note is, and what a client may send to make one.
//!
//! A request body deserialises into [`NoteInput`] (shape: unknown fields refused), which
//! [`NoteInput::validate`] turns into [`NoteContent`] (rules: lengths, no NUL). Storage
//! takes only `NoteContent`, so unvalidated text cannot reach the database. A refusal is
//! the domain's own [`InvalidNote`]; the routes turn it into a problem.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub const TITLE_MAX_CHARS: usize = 200;
pub const BODY_MAX_CHARS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Note {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The body of `POST /api/v1/notes` and `PUT /api/v1/notes/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    /// 1 to 200 characters (Unicode scalar values), no NUL character.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub title: String,
    /// 0 to 10000 characters, no NUL character.
    #[schema(max_length = 10000, pattern = "^[^\\u0000]*$")]
    pub body: String,
}

/// A title and body that passed validation.
#[derive(Debug, Clone)]
pub struct NoteContent {
    title: String,
    body: String,
}

impl NoteContent {
    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn body(&self) -> &str {
        &self.body
    }

    /// The bytes of its text: what a note held in memory takes, roughly.
    pub fn text_bytes(&self) -> usize {
        self.title.len() + self.body.len()
    }
}

/// Why a note's content was refused: every rule it broke, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the note breaks {} rule(s)", .0.len())]
pub struct InvalidNote(pub Vec<Violation>);

/// One broken rule: the field, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: &'static str,
    pub message: String,
}

impl NoteInput {
    /// Checks every rule and reports every failure at once.
    pub fn validate(self) -> Result<NoteContent, InvalidNote> {
        let mut errors = Vec::new();
        check_text(&mut errors, "title", &self.title, 1, TITLE_MAX_CHARS);
        check_text(&mut errors, "body", &self.body, 0, BODY_MAX_CHARS);
        if errors.is_empty() {
            Ok(NoteContent {
                title: self.title,
                body: self.body,
            })
        } else {
            Err(InvalidNote(errors))
        }
    }
}

fn check_text(
    errors: &mut Vec<Violation>,
    field: &'static str,
    text: &str,
    min: usize,
    max: usize,
) {
    let chars = text.chars().count();
    let problem = if chars < min {
        Some(format!("must not be empty (at least {min} character)"))
    } else if chars > max {
        Some(format!("must be at most {max} characters, got {chars}"))
    } else if text.contains('\0') {
        // PostgreSQL text cannot hold NUL; refusing it here keeps it a client error.
        Some("must not contain the NUL character".into())
    } else {
        None
    };
    if let Some(message) = problem {
        errors.push(Violation { field, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(title: &str, body: &str) -> NoteInput {
        NoteInput {
            title: title.into(),
            body: body.into(),
        }
    }

    fn failures(result: Result<NoteContent, InvalidNote>) -> Vec<&'static str> {
        match result {
            Err(InvalidNote(violations)) => violations.into_iter().map(|v| v.field).collect(),
            Ok(content) => panic!("expected a refusal, got {content:?}"),
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert!(
            input(&"é".repeat(200), &"ü".repeat(10_000))
                .validate()
                .is_ok()
        );
        assert_eq!(failures(input(&"é".repeat(201), "").validate()), ["title"]);
        assert_eq!(
            failures(input("t", &"ü".repeat(10_001)).validate()),
            ["body"]
        );
    }

    #[test]
    fn every_failure_is_reported_at_once() {
        assert_eq!(failures(input("", "a\0b").validate()), ["title", "body"]);
    }

    #[test]
    fn an_empty_body_is_fine() {
        let note = input("title", "").validate().unwrap();
        assert_eq!((note.title(), note.body()), ("title", ""));
    }
}
