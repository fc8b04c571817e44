//! `/api/v1/notes`: create, list, read, replace and delete notes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::extract::{Json, Path, Query};
use crate::http::idempotency::{IdempotencyKey, MaybeIdempotencyKey};
use crate::http::problem::{ApiError, FieldError, Problem};
use crate::notes::cursor::ENCODED_LEN;
use crate::notes::store::Created;
use crate::notes::{Cursor, InvalidNote, Note, NoteInput, store};
use crate::state::AppState;

/// A refused note is a 422 that names every broken rule.
impl From<InvalidNote> for ApiError {
    fn from(InvalidNote(violations): InvalidNote) -> Self {
        ApiError::Validation(
            violations
                .into_iter()
                .map(|violation| FieldError {
                    field: violation.field.into(),
                    message: violation.message,
                })
                .collect(),
        )
    }
}

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// One page of notes, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotePage {
    pub items: Vec<Note>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page; absent or empty for the first page.
    #[param(pattern = "^([A-Za-z0-9_-]{32})?$")]
    cursor: Option<String>,
}

/// Problems a write can meet.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only the OpenAPI document uses these variants
pub enum WriteProblems {
    #[response(
        status = 400,
        description = "Malformed JSON, a malformed id, or a malformed Idempotency-Key",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    #[response(
        status = 408,
        description = "The body did not arrive within REQUEST_TIMEOUT_MS",
        content_type = "application/problem+json"
    )]
    BodyTimeout(Problem),
    #[response(
        status = 413,
        description = "Body over 1 MiB",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "Content-Type is not application/json",
        content_type = "application/problem+json"
    )]
    MediaType(Problem),
    #[response(
        status = 422,
        description = "Wrong types, missing or unknown fields, or failed validation; \
                       for a POST, an Idempotency-Key sent again with another title or body",
        content_type = "application/problem+json"
    )]
    Invalid(Problem),
    #[response(
        status = 503,
        description = "Overloaded, timed out, the database busy or unavailable, or the service still starting; \
                       with Retry-After, except `outcome-unknown`: a POST cut short after it may have \
                       created the note (its `location` says where to look before sending it again)",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// Problems a read by id can meet.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadProblems {
    #[response(
        status = 400,
        description = "The id is not a UUID",
        content_type = "application/problem+json"
    )]
    BadId(Problem),
    #[response(
        status = 404,
        description = "No note with this id",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    #[response(
        status = 503,
        description = "Overloaded, timed out, the database busy or unavailable, or the service still starting",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// Where a note is served.
fn note_location(id: Uuid) -> String {
    format!("/api/v1/notes/{id}")
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no note with id {id}"))
}

/// Create a note.
#[utoipa::path(
    post, path = "/api/v1/notes", tag = "notes",
    request_body = NoteInput,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "Makes retries safe: a request sent again with the same key gets the \
                        note the first one made (201, Idempotent-Replayed: true), never a second \
                        note. 1 to 128 letters, digits or -_.: (a UUID serves), bare or quoted; \
                        kept as long as the note",
         min_length = 1, max_length = 130,
         pattern = r#"^("[A-Za-z0-9._:-]{1,128}"|[A-Za-z0-9._:-]{1,128})$"#),
    ),
    responses(
        (status = 201, description = "Created, or made by an earlier request with the same Idempotency-Key",
         body = Note,
         headers(
             ("Location" = String, description = "The new note's URL"),
             ("Idempotent-Replayed" = Option<String>, description = "`true` when an earlier request with the same Idempotency-Key made the note"),
         )),
        (status = 404, description = "The note another request made with this Idempotency-Key was deleted while this one waited for it",
         body = Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn create_note(
    State(state): State<AppState>,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    // the body's charge, held until the answer: the note's text lives that long
    Json(input, mut charge): Json<NoteInput>,
) -> Result<Response, ApiError> {
    let content = input.validate()?;
    charge.keep(content.text_bytes());
    // shared with the insert queue, where the note may outlive this request
    let charge = Arc::new(charge);
    let id = store::new_id();
    if key.is_none() {
        // an answer cut short by the request's time limit names it too (outcome-unknown)
        crate::http::request_id::set_location(note_location(id));
    }
    let created = state
        .inserts
        .create(
            id,
            content,
            key.as_ref().map(IdempotencyKey::as_str),
            charge.clone(),
        )
        .await;
    let (note, replayed) = match created {
        Ok(Created::New(note)) => (note, false),
        Ok(Created::Replayed {
            note,
            same_content: true,
        }) => (note, true),
        Ok(Created::Replayed { note, .. }) => {
            return Err(ApiError::IdempotencyKeyReused(format!(
                "this Idempotency-Key made note {} with another title or body",
                note.id
            )));
        }
        Ok(Created::KeyGone) => {
            return Err(ApiError::NotFound(
                "the note this Idempotency-Key made has been deleted".into(),
            ));
        }
        // With a key, a retry is safe: the usual 503 and its Retry-After.
        Err(error) if key.is_none() && error.may_have_been_applied() => {
            tracing::warn!(
                request_id = crate::http::request_id::current(),
                note = %id,
                error = %error,
                "a note's insert got no answer: it may have been created"
            );
            return Err(ApiError::OutcomeUnknown {
                location: Some(note_location(id)),
            });
        }
        Err(error) => return Err(error.into()),
    };
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, note_location(note.id))],
        axum::Json(note),
    )
        .into_response();
    if replayed {
        // the draft's answer to a retry: the first answer again, marked as such
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Marks an answer given again to a retry with the same `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// List notes, newest first.
#[utoipa::path(
    get, path = "/api/v1/notes", tag = "notes",
    params(ListParams),
    responses(
        (status = 200, description = "A page of notes", body = NotePage),
        (status = 422, description = "limit outside 1..100, or a malformed cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded, timed out, the database busy or unavailable, or the service still starting", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_notes(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<NotePage>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be from 1 to {MAX_LIMIT}, got {limit}"
        )));
    }
    let after = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "cursor must be {ENCODED_LEN} base64url characters, as next_cursor gives it"
            ))
        })?),
    };
    let page = store::list(&state.db, limit, after).await?;
    Ok(axum::Json(NotePage {
        items: page.notes,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// Read one note.
#[utoipa::path(
    get, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "The note's id")),
    responses((status = 200, description = "The note", body = Note), ReadProblems)
)]
pub async fn get_note(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Note>, ApiError> {
    store::get(&state.db, id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| not_found(id))
}

/// Replace a note's title and body.
#[utoipa::path(
    put, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "The note's id")),
    request_body = NoteInput,
    responses(
        (status = 200, description = "The updated note", body = Note),
        (status = 404, description = "No note with this id", body = Problem, content_type = "application/problem+json"),
        WriteProblems,
    )
)]
pub async fn replace_note(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    // the body's charge, held until the answer: the note's text lives that long
    Json(input, mut charge): Json<NoteInput>,
) -> Result<axum::Json<Note>, ApiError> {
    let content = input.validate()?;
    charge.keep(content.text_bytes());
    store::replace(&state.db, id, &content)
        .await?
        .map(axum::Json)
        .ok_or_else(|| not_found(id))
}

/// Delete a note.
#[utoipa::path(
    delete, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "The note's id")),
    responses((status = 204, description = "Deleted"), ReadProblems)
)]
pub async fn delete_note(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if store::delete(&state.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}
