//! Health endpoints: `/health` (the database, for people and the original challenge),
//! `/livez` (the process, for restarts) and `/readyz` (traffic, for load balancers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::fixed_json;
use crate::db::health::Health;
use crate::state::AppState;

const OK: &str = r#"{"status":"ok"}"#;

/// `{"status":"ok"}`
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusOk {
    #[schema(example = "ok")]
    pub status: String,
}

/// A failed check, in a fixed vocabulary.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthError {
    #[schema(example = "error")]
    pub status: String,
    pub checks: HealthChecks,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthChecks {
    /// `down` (unreachable), `timeout` (no answer in time) or `busy` (no pooled connection
    /// free in time: the service is saturated, the database may be fine).
    #[schema(example = "down")]
    pub database: String,
}

/// Why the service is not ready: `starting` or `draining`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NotReady {
    #[schema(example = "starting")]
    pub status: String,
}

/// The service and its database: one real round trip, bounded by `DB_QUERY_TIMEOUT_MS`, to
/// a server that takes writes (a read-only one, a standby, is down for farol). The checks
/// that come while a round trip is in flight share it (`db::health`).
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The database answered, and takes writes", body = StatusOk),
        (status = 503, description = "The database is down (or takes no writes), did not answer in time, or every pooled connection stayed busy", body = HealthError),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    match state.db.check().await {
        Health::Up => fixed_json(StatusCode::OK, OK),
        Health::Timeout => fixed_json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"error","checks":{"database":"timeout"}}"#,
        ),
        // No pooled connection became free in time: the service is saturated, which is
        // not an outage (no connection was evicted, `/` still says "up").
        Health::Busy => fixed_json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"error","checks":{"database":"busy"}}"#,
        ),
        Health::Down => fixed_json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"error","checks":{"database":"down"}}"#,
        ),
    }
}

/// The process serves: never touches the database.
#[utoipa::path(
    get, path = "/livez", tag = "operations",
    responses((status = 200, description = "Alive", body = StatusOk))
)]
pub async fn livez() -> Response {
    fixed_json(StatusCode::OK, OK)
}

/// Ready for traffic: the database was reached and the schema is current, and shutdown
/// has not begun. A later database outage does not make it unready.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = StatusOk),
        (status = 503, description = "Starting (database not reached yet, or migrations pending) or draining", body = NotReady),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_draining() {
        fixed_json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
    } else if state.is_ready() {
        fixed_json(StatusCode::OK, OK)
    } else {
        fixed_json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"starting"}"#)
    }
}
