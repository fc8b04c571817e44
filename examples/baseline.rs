//! The benchmark's baseline: the least an HTTP server on farol's stack (tokio, hyper
//! through axum, tokio-postgres with a deadpool pool) can do per request.
//!
//! `GET /` answers a fixed JSON body; `GET /health` runs farol's health query (is the
//! server one that takes writes?) over a pooled, prepared connection, one round trip at a
//! time shared by the checks that come while it is in flight, as farol's are: in a task of
//! its own that runs to its end when its checks go (the least a server can do that sends
//! one statement at a time whatever `/health`'s rate; with no timeouts here, a stalled
//! round trip holds every check that joins it); `POST
//! /api/v1/notes` runs farol's INSERT … RETURNING on a title and body read with serde and
//! answers the row as JSON. No logging, metrics, timeouts, request ids, load shedding or
//! validation:
//! whatever farol measures above this in `scripts/bench` is the cost of what it adds.
//! What farol chose for speed rather than added as a feature, it has too: the same
//! allocator (mimalloc, called as farol calls it, without farol's count of what each
//! thread frees), `TCP_NODELAY`, the same release profile.
//! Configured by DATABASE_URL (libpq key=value or URL form), PORT and DB_POOL_MAX (16,
//! farol's default); listens on 127.0.0.1 only.
//!
//!     cargo run --release --example baseline
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
    serve::ListenerExt,
};
use deadpool_postgres::{Manager, Pool};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

#[global_allocator]
static ALLOCATOR: farol::allocator::Mimalloc = farol::allocator::Mimalloc;

#[tokio::main]
async fn main() {
    let dsn = std::env::var("DATABASE_URL").expect("DATABASE_URL must name the database");
    let port = std::env::var("PORT").unwrap_or_else(|_| "5103".into());
    let pool_size =
        std::env::var("DB_POOL_MAX").map_or(16, |n| n.parse().expect("DB_POOL_MAX is a count"));
    let config: tokio_postgres::Config = dsn.parse().expect("DATABASE_URL is not a valid DSN");
    let pool = Pool::builder(Manager::new(config, tokio_postgres::NoTls))
        .max_size(pool_size)
        .build()
        .expect("the pool's settings are valid");
    let state = AppState {
        pool,
        ping: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/",
            get(|| async { Json(json!({"message": "web server is up"})) }),
        )
        .route("/health", get(health))
        .route("/api/v1/notes", post(create_note))
        .with_state(state);
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a port")))
            .await
            .expect("cannot listen on PORT")
            .tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
    axum::serve(listener, app).await.expect("the server failed");
}

/// The round trip of `/health` in flight, if any: checks that come while it is under way
/// wait for its answer instead of sending their own. Its task's answer: a task that
/// panicked answers 503, like any failure.
type Ping = Shared<BoxFuture<'static, Result<(), StatusCode>>>;

/// The ping in flight, and how many were started: a ping's task empties the slot when it
/// ends, unless a later one is there by then.
#[derive(Default)]
struct Slot {
    started: u64,
    ping: Option<Ping>,
}

#[derive(Clone)]
struct AppState {
    pool: Pool,
    ping: Arc<Mutex<Slot>>,
}

// nothing that holds the lock leaves the slot half changed: a poisoned one is whole
fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn health(State(state): State<AppState>) -> Result<Json<Value>, StatusCode> {
    let ping = {
        let mut slot = lock(&state.ping);
        match &slot.ping {
            // (a ping whose task panicked stays in the slot until a check awaits it to its
            // end, which is answered 503; nothing in the ping panics)
            Some(ping) if ping.peek().is_none() => ping.clone(),
            _ => {
                slot.started += 1;
                let (pool, shared, this) = (state.pool.clone(), state.ping.clone(), slot.started);
                let ping = tokio::spawn(async move {
                    let answer = query_one(
                        &pool,
                        "SELECT current_setting('transaction_read_only') = 'off'",
                        &[],
                        &[],
                    )
                    .await
                    .map(drop);
                    // emptied before the answer, as farol's: a check that comes after it
                    // starts a ping of its own, even when no check waited for this one
                    let mut slot = lock(&shared);
                    if slot.started == this {
                        slot.ping = None;
                    }
                    answer
                })
                .map(|ended| ended.unwrap_or(Err(StatusCode::SERVICE_UNAVAILABLE)))
                .boxed()
                .shared();
                slot.ping = Some(ping.clone());
                ping
            }
        }
    };
    ping.await?;
    Ok(Json(json!({"status": "ok"})))
}

/// One row of `sql`, over a pooled connection and a named statement prepared once per
/// connection (as farol's are); any failure is a 503.
async fn query_one(
    pool: &Pool,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, StatusCode> {
    let unavailable = |_| StatusCode::SERVICE_UNAVAILABLE;
    let client = pool
        .get()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let statement = client
        .prepare_typed_cached(sql, types)
        .await
        .map_err(unavailable)?;
    client
        .query_one(&statement, params)
        .await
        .map_err(unavailable)
}

#[derive(serde::Deserialize)]
struct NoteContent {
    title: String,
    body: String,
}

/// farol's statement (src/notes/store.rs), the same way: named, prepared, typed.
const INSERT_NOTE: &str = "INSERT INTO notes (id, title, body, created_at, updated_at) \
     SELECT $1, $2, $3, moment, moment FROM clock_timestamp() AS moment \
     RETURNING id, title, body, created_at, updated_at";

async fn create_note(
    State(AppState { pool, .. }): State<AppState>,
    Json(note): Json<NoteContent>,
) -> Result<(StatusCode, Json<Value>), StatusCode> {
    let row = query_one(
        &pool,
        INSERT_NOTE,
        &[Type::UUID, Type::TEXT, Type::TEXT],
        &[&Uuid::now_v7(), &note.title, &note.body],
    )
    .await?;
    let time = |column| {
        row.get::<_, OffsetDateTime>(column)
            .format(&Rfc3339)
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    };
    let answer = json!({
        "id": row.get::<_, Uuid>("id"),
        "title": row.get::<_, String>("title"),
        "body": row.get::<_, String>("body"),
        "created_at": time("created_at")?,
        "updated_at": time("updated_at")?,
    });
    Ok((StatusCode::CREATED, Json(answer)))
}
