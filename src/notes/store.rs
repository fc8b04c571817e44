//! Notes in PostgreSQL. Every statement runs through [`Database::run`], so it is bounded
//! in time and measured, and is sent as `DB_PREPARED_STATEMENTS` says (prepared once per
//! connection, or unnamed for a pooler in transaction mode): the parameters carry their
//! types for that.

use std::time::Duration;

use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Cursor, Note, NoteContent};
use crate::db::{Database, DbError};

const COLUMNS: &str = "id, title, body, created_at, updated_at";
/// What identifies the request that made a keyed note: its title ($2) and body ($3), the
/// title's length first so that no two pairs run together.
const REQUEST_DIGEST: &str =
    "sha256(convert_to(char_length($2::text)::text || ':' || $2::text || $3::text, 'UTF8'))";

fn note(row: &Row) -> Note {
    Note {
        id: row.get(0),
        title: row.get(1),
        body: row.get(2),
        created_at: row.get(3),
        updated_at: row.get(4),
    }
}

/// A page of notes, newest first, and where the next one starts.
pub struct Page {
    pub notes: Vec<Note>,
    pub next: Option<Cursor>,
}

/// What a create with an idempotency key did.
pub enum Created {
    /// Made the note.
    New(Note),
    /// Found the note that an earlier request with the same idempotency key made;
    /// `same_content`: that request sent the title and body this one sends (whatever the
    /// note holds now).
    Replayed { note: Note, same_content: bool },
    /// The key's note was made, then deleted: a conflict whose row was gone by the time it
    /// was read.
    KeyGone,
}

/// Inserts a note under `id` (from [`new_id`]): chosen by the caller, which can then say
/// where the note would be when the insert's outcome is unknown. `slot_wait` bounds the
/// wait for a pool slot (the create may have waited in a queue already: `batch`).
pub async fn insert(
    db: &Database,
    id: Uuid,
    content: &NoteContent,
    slot_wait: Duration,
) -> Result<Note, DbError> {
    let (title, body) = (content.title(), content.body());
    db.write_waiting("insert_note", slot_wait, |mut session| async move {
        // One clock reading for both times: the columns' defaults would each read
        // clock_timestamp(), a microsecond apart under load, and a new note would show
        // an update it never had.
        let sql = format!(
            "INSERT INTO notes (id, title, body, created_at, updated_at) \
             SELECT $1, $2, $3, moment, moment FROM clock_timestamp() AS moment \
             RETURNING {COLUMNS}"
        );
        let params = [
            (&id as _, Type::UUID),
            (&title as _, Type::TEXT),
            (&body as _, Type::TEXT),
        ];
        session.query_opt(&sql, &params).await
    })
    .await?
    .map(|row| note(&row))
    // INSERT … RETURNING without an error always returns its row
    .ok_or(DbError::NoRow("insert_note"))
}

/// Inserts several notes, each under its id, in one statement: one round trip and one
/// commit for all (`batch`). They share one clock reading. All or none are made; the
/// notes come back in no particular order.
pub async fn insert_many(
    db: &Database,
    notes: &[(Uuid, &NoteContent)],
    slot_wait: Duration,
) -> Result<Vec<Note>, DbError> {
    let ids: Vec<Uuid> = notes.iter().map(|(id, _)| *id).collect();
    let titles: Vec<&str> = notes.iter().map(|(_, content)| content.title()).collect();
    let bodies: Vec<&str> = notes.iter().map(|(_, content)| content.body()).collect();
    let rows = db
        .write_waiting("insert_notes", slot_wait, |mut session| async move {
            let sql = format!(
                "INSERT INTO notes (id, title, body, created_at, updated_at) \
                 SELECT added.id, added.title, added.body, moment, moment \
                 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS added (id, title, body), \
                 clock_timestamp() AS moment \
                 RETURNING {COLUMNS}"
            );
            let params = [
                (&ids as _, Type::UUID_ARRAY),
                (&titles as _, Type::TEXT_ARRAY),
                (&bodies as _, Type::TEXT_ARRAY),
            ];
            session.query(&sql, &params).await
        })
        .await?;
    Ok(rows.iter().map(note).collect())
}

/// Inserts a note under `id` unless `key` made one already: a key already used makes no
/// second note, and the first one is returned.
pub async fn create_keyed(
    db: &Database,
    id: Uuid,
    content: &NoteContent,
    key: &str,
) -> Result<Created, DbError> {
    let (title, body) = (content.title(), content.body());
    db.write("insert_note", |mut session| async move {
        // A concurrent request with the same key: this insert waits for it to end, then
        // does nothing; the read after it, a statement of its own, sees its note.
        let sql = format!(
            "INSERT INTO notes \
             (id, title, body, created_at, updated_at, idempotency_key, idempotency_digest) \
             SELECT $1, $2, $3, moment, moment, $4, {REQUEST_DIGEST} \
             FROM clock_timestamp() AS moment \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING {COLUMNS}"
        );
        let params = [
            (&id as _, Type::UUID),
            (&title as _, Type::TEXT),
            (&body as _, Type::TEXT),
            (&key as _, Type::TEXT),
        ];
        if let Some(row) = session.query_opt(&sql, &params).await? {
            return Ok::<_, tokio_postgres::Error>(Created::New(note(&row)));
        }
        // The note found may be committed on this server only: a commit waiting for a
        // synchronous standby, then cancelled (farol cancels what it gave up on), is
        // committed locally and visible at once. Answering
        // 201 for it then would acknowledge a write a failover can lose. Locking the row
        // writes WAL, so this statement's own commit waits for the standby to have
        // everything written before it, the note included. (A transaction that writes no
        // WAL commits without waiting.) KEY SHARE, the weakest lock: only a delete waits.
        let sql = format!(
            "SELECT {COLUMNS}, idempotency_digest = {REQUEST_DIGEST} \
             FROM notes WHERE idempotency_key = $4 FOR KEY SHARE"
        );
        Ok(match session.query_opt(&sql, &params).await? {
            Some(row) => Created::Replayed {
                note: note(&row),
                same_content: row.get::<_, Option<bool>>(5) == Some(true),
            },
            None => Created::KeyGone,
        })
    })
    .await
}

/// A new note's id. UUIDv7 ids grow with time, so inserts land at the end of the
/// primary-key index.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

pub async fn get(db: &Database, id: Uuid) -> Result<Option<Note>, DbError> {
    db.run("get_note", |mut session| async move {
        let sql = format!("SELECT {COLUMNS} FROM notes WHERE id = $1");
        session.query_opt(&sql, &[(&id, Type::UUID)]).await
    })
    .await
    .map(|row| row.as_ref().map(note))
}

/// Up to `limit` notes older than `after` (or the newest ones without it).
pub async fn list(db: &Database, limit: i64, after: Option<Cursor>) -> Result<Page, DbError> {
    // One more than asked: its presence says whether a next page exists.
    let fetch = limit + 1;
    let rows = db
        .run("list_notes", |mut session| async move {
            match after {
                None => {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM notes ORDER BY created_at DESC, id DESC LIMIT $1"
                    );
                    session.query(&sql, &[(&fetch, Type::INT8)]).await
                }
                Some(cursor) => {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM notes WHERE (created_at, id) < ($1, $2) \
                         ORDER BY created_at DESC, id DESC LIMIT $3"
                    );
                    let params = [
                        (&cursor.created_at as _, Type::TIMESTAMPTZ),
                        (&cursor.id as _, Type::UUID),
                        (&fetch as _, Type::INT8),
                    ];
                    session.query(&sql, &params).await
                }
            }
        })
        .await?;
    let mut notes: Vec<Note> = rows.iter().map(note).collect();
    let next = if notes.len() as i64 > limit {
        notes.truncate(limit as usize);
        notes.last().map(|last| Cursor {
            created_at: last.created_at,
            id: last.id,
        })
    } else {
        None
    };
    Ok(Page { notes, next })
}

pub async fn replace(
    db: &Database,
    id: Uuid,
    content: &NoteContent,
) -> Result<Option<Note>, DbError> {
    let (title, body) = (content.title(), content.body());
    db.write("update_note", |mut session| async move {
        let sql = format!(
            "UPDATE notes SET title = $2, body = $3, updated_at = clock_timestamp() \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let params = [
            (&id as _, Type::UUID),
            (&title as _, Type::TEXT),
            (&body as _, Type::TEXT),
        ];
        session.query_opt(&sql, &params).await
    })
    .await
    .map(|row| row.as_ref().map(note))
}

/// Whether a note was deleted.
pub async fn delete(db: &Database, id: Uuid) -> Result<bool, DbError> {
    db.write("delete_note", |mut session| async move {
        session
            .query_opt(
                "DELETE FROM notes WHERE id = $1 RETURNING id",
                &[(&id, Type::UUID)],
            )
            .await
    })
    .await
    .map(|deleted| deleted.is_some())
}
