//! Notes in PostgreSQL. Every statement is prepared once per connection (cached) and runs
//! through [`Database::run`], so it is bounded in time and measured.

use tokio_postgres::Row;
use uuid::Uuid;

use super::{Cursor, Note, NoteContent};
use crate::db::{Database, DbError};

const COLUMNS: &str = "id, title, body, created_at, updated_at";

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

pub async fn create(db: &Database, content: &NoteContent) -> Result<Note, DbError> {
    // UUIDv7 ids grow with time, so inserts land at the end of the primary-key index.
    let id = Uuid::now_v7();
    let (title, body) = (content.title().to_owned(), content.body().to_owned());
    db.run("insert_note", |client| async move {
        // One clock reading for both times: the columns' defaults would each read
        // clock_timestamp(), a microsecond apart under load, and a new note would show
        // an update it never had.
        let sql = format!(
            "INSERT INTO notes (id, title, body, created_at, updated_at) \
             SELECT $1::uuid, $2::text, $3::text, moment, moment FROM clock_timestamp() AS moment \
             RETURNING {COLUMNS}"
        );
        let statement = client.prepare_cached(&sql).await?;
        client.query_one(&statement, &[&id, &title, &body]).await
    })
    .await
    .map(|row| note(&row))
}

pub async fn get(db: &Database, id: Uuid) -> Result<Option<Note>, DbError> {
    db.run("get_note", |client| async move {
        let sql = format!("SELECT {COLUMNS} FROM notes WHERE id = $1");
        let statement = client.prepare_cached(&sql).await?;
        client.query_opt(&statement, &[&id]).await
    })
    .await
    .map(|row| row.as_ref().map(note))
}

/// Up to `limit` notes older than `after` (or the newest ones without it).
pub async fn list(db: &Database, limit: i64, after: Option<Cursor>) -> Result<Page, DbError> {
    // One more than asked: its presence says whether a next page exists.
    let fetch = limit + 1;
    let rows = db
        .run("list_notes", |client| async move {
            match after {
                None => {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM notes ORDER BY created_at DESC, id DESC LIMIT $1"
                    );
                    let statement = client.prepare_cached(&sql).await?;
                    client.query(&statement, &[&fetch]).await
                }
                Some(cursor) => {
                    let sql = format!(
                        "SELECT {COLUMNS} FROM notes WHERE (created_at, id) < ($1, $2) \
                         ORDER BY created_at DESC, id DESC LIMIT $3"
                    );
                    let statement = client.prepare_cached(&sql).await?;
                    client
                        .query(&statement, &[&cursor.created_at, &cursor.id, &fetch])
                        .await
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
    let (title, body) = (content.title().to_owned(), content.body().to_owned());
    db.run("update_note", |client| async move {
        let sql = format!(
            "UPDATE notes SET title = $2, body = $3, updated_at = clock_timestamp() \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let statement = client.prepare_cached(&sql).await?;
        client.query_opt(&statement, &[&id, &title, &body]).await
    })
    .await
    .map(|row| row.as_ref().map(note))
}

/// Whether a note was deleted.
pub async fn delete(db: &Database, id: Uuid) -> Result<bool, DbError> {
    db.run("delete_note", |client| async move {
        let statement = client
            .prepare_cached("DELETE FROM notes WHERE id = $1")
            .await?;
        client.execute(&statement, &[&id]).await
    })
    .await
    .map(|deleted| deleted > 0)
}
