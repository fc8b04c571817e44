//! `/version` and `/metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::{AppState, BUILD, BuildInfo};

/// What is running.
#[utoipa::path(
    get, path = "/version", tag = "operations",
    responses((status = 200, description = "Version, commit and build profile", body = BuildInfo))
)]
pub async fn version() -> axum::Json<BuildInfo> {
    axum::Json(BUILD)
}

/// Prometheus text format. The pool gauges are read now, at scrape time.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (idle, used, max) = state.db.pool_status();
    state.metrics.set_pool(idle, used, max);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
