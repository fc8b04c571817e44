//! The benchmark's baseline: the least an HTTP server on farol's stack (tokio, hyper
//! through axum, tokio-postgres with a deadpool pool) can do per request.
//!
//! `GET /` answers a fixed JSON body; `GET /health` runs farol's health query (is the
//! server one that takes writes?) over a pooled, prepared connection. No logging, metrics, timeouts, request ids or load shedding:
//! whatever farol measures above this in `scripts/bench` is the cost of what it adds.
//! What farol chose for speed rather than added as a feature, it has too: the same
//! allocator (mimalloc), `TCP_NODELAY`, the same release profile.
//! Configured by DATABASE_URL (libpq key=value or URL form), PORT and DB_POOL_MAX (16,
//! farol's default); listens on 127.0.0.1 only.
//!
//!     cargo run --release --example baseline
use axum::{Json, Router, extract::State, http::StatusCode, routing::get, serve::ListenerExt};
use deadpool_postgres::{Manager, Pool};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let app = Router::new()
        .route(
            "/",
            get(|| async { Json(json!({"message": "web server is up"})) }),
        )
        .route("/health", get(health))
        .with_state(pool);
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a port")))
            .await
            .expect("cannot listen on PORT")
            .tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
    axum::serve(listener, app).await.expect("the server failed");
}

async fn health(State(pool): State<Pool>) -> Result<Json<Value>, StatusCode> {
    let unavailable = |_| StatusCode::SERVICE_UNAVAILABLE;
    let client = pool
        .get()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let statement = client
        .prepare_cached("SELECT current_setting('transaction_read_only') = 'off'")
        .await
        .map_err(unavailable)?;
    client
        .query_one(&statement, &[])
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({"status": "ok"})))
}
