//! The one middleware every request passes: request id, admission control (load
//! shedding), the request timeout, fault injection for drills, panics turned into 500s,
//! then the metrics and the access log line. One function rather than a stack of layers:
//! each request pays for one timer, one clock read and one log line, and the order of
//! these concerns is visible in one place.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use super::problem::ApiError;
use super::request_id;
use crate::state::AppState;

tokio::task_local! {
    /// The current request's id, for log lines written deep inside a handler (a task
    /// local costs far less per request than a tracing span).
    static REQUEST_ID: HeaderValue;
}

/// The id of the request being handled, or "" outside of one.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// The route label of requests that matched no route: keeps the label set bounded.
pub const UNMATCHED: &str = "unmatched";

/// Probes and scrapes: never shed (the orchestrator must see a busy replica as alive,
/// and Prometheus must still watch it being busy), and logged at debug only (they come
/// every few seconds from machines and would drown the lines people read).
fn is_probe(route: &str) -> bool {
    matches!(route, "/livez" | "/readyz" | "/metrics")
}

/// Fault injection applies to the API only, never to the probes, `/` or `/metrics`.
fn is_chaos_target(route: &str) -> bool {
    route.starts_with("/api/")
}

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id::from_headers(request.headers());
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);

    state.metrics.http_active.inc();
    let work = async {
        if is_probe(route) {
            return run_catching_panics(next, request).await;
        }
        match state.limiter.try_acquire() {
            Err(_) => ApiError::Overloaded.into_response(),
            Ok(_permit) => {
                tokio::time::timeout(state.request_timeout, handle(&state, route, request, next))
                    .await
                    .unwrap_or_else(|_| ApiError::Timeout.into_response())
            }
        }
    };
    let mut response = REQUEST_ID.scope(request_id.clone(), work).await;
    state.metrics.http_active.dec();

    let elapsed = started.elapsed();
    let status = response.status();
    state.metrics.observe_request(
        method.as_str(),
        route,
        status.as_str(),
        elapsed.as_secs_f64(),
    );
    macro_rules! access_log {
        ($level:expr) => {
            tracing::event!(
                target: "farol::access",
                $level,
                request_id = request_id.to_str().unwrap_or_default(),
                method = method.as_str(),
                route,
                status = status.as_u16(),
                duration_ms = elapsed.as_micros() as f64 / 1000.0,
                "request"
            )
        };
    }
    if is_probe(route) {
        access_log!(tracing::Level::DEBUG);
    } else {
        access_log!(tracing::Level::INFO);
    }
    response
        .headers_mut()
        .insert(request_id::HEADER, request_id);
    response
}

async fn handle(state: &AppState, route: &str, request: Request, next: Next) -> Response {
    if state.chaos_enabled && is_chaos_target(route) {
        let (latency, error_rate) = {
            let live = state.live.load();
            (live.chaos_latency, live.chaos_error_rate)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if error_rate > 0.0 && fastrand::f64() < error_rate {
            return ApiError::InjectedFault.into_response();
        }
    }
    run_catching_panics(next, request).await
}

/// A panicking handler answers 500 and the service lives on. Here rather than in a
/// layer of its own, which would cost every request another boxed level of routing.
async fn run_catching_panics(next: Next, request: Request) -> Response {
    AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
        .unwrap_or_else(panic_response)
}

/// Turns a panic in a handler into a 500 problem (the cause is logged, not sent).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(request_id = current_request_id(), panic = %message, "handler panicked");
    ApiError::Internal.into_response()
}
