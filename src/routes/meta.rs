//! `/version` and `/metrics`.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

use crate::state::{AppState, BUILD, BuildInfo};
use crate::telemetry::openmetrics;

/// What is running.
#[utoipa::path(
    get, path = "/version", tag = "operations",
    responses((status = 200, description = "Version, commit and build profile", body = BuildInfo))
)]
pub async fn version() -> axum::Json<BuildInfo> {
    axum::Json(BUILD)
}

/// Prometheus text format; OpenMetrics, with the latency histogram's exemplars, when
/// traces are on and the scraper asks for it. The pool gauges are read now, at scrape
/// time.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let (idle, used, max) = state.db.pool_status();
    state.metrics.set_pool(idle, used, max);
    let openmetrics = state.tracer.is_some()
        && headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(openmetrics::is_asked_for);
    // the format depends on what was asked: a cache in between must know
    let vary = (header::VARY, "accept");
    if openmetrics {
        (
            [(header::CONTENT_TYPE, openmetrics::CONTENT_TYPE), vary],
            state.metrics.render_openmetrics(),
        )
    } else {
        (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                vary,
            ],
            state.metrics.render(),
        )
    }
}
