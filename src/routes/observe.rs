//! The one middleware every request passes: request id, admission control (load
//! shedding), the request timeout, fault injection for drills, panics turned into 500s,
//! then the metrics and the access log line. One function rather than a stack of layers:
//! each request pays for two clock reads (its start and its end), no timer of its own
//! (its timeout waits on its connection's clock, `http::connection_clock`) and one log
//! line, and the order of these concerns is visible in one place. It wraps the router
//! once, from outside, rather than each route: a layer set on axum's router wraps every
//! route in a boxed service of its own, which costs each request a boxed clone and a
//! boxed future more. So it finds the request's route itself ([`Routes`]) before the
//! router does.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use opentelemetry::context::FutureExt as _;
use tokio::time::Instant;
use tower_service::Service;

use crate::http::connection_clock::{self, ConnectionClock};
use crate::http::problem::{ApiError, ProblemKind};
use crate::http::{extract, idempotency, request_id};
use crate::state::AppState;
use crate::telemetry::access;
use crate::telemetry::metrics::method_label;
use crate::telemetry::traces;

use super::METRICS_PATH;

/// The route label of requests that matched no route: keeps the label set bounded.
pub const UNMATCHED: &str = "unmatched";

/// Probes and scrapes: not held by the concurrency limit nor the request's time limit
/// (the orchestrator must see a busy replica as alive, and Prometheus must still watch it
/// being busy), their answers not charged on `METRICS_PORT` (`observe`), and logged at
/// debug only (they come every few seconds from machines and would drown the lines
/// people read).
fn is_probe(route: &str) -> bool {
    matches!(route, "/livez" | "/readyz" | METRICS_PATH)
}

/// The routes that query the notes table.
fn needs_schema(route: &str) -> bool {
    route.starts_with("/api/") && route != super::OPENAPI_PATH
}

/// Fault injection applies to the API only, never to the probes, `/` or `/metrics`.
fn is_chaos_target(route: &str) -> bool {
    route.starts_with("/api/")
}

/// The templates of a router's routes, matched as axum's router matches them: with the
/// same matchit, pinned to the version axum pins, on the same path. A request is known
/// by its route's template before the router runs, for what depends on it (shedding,
/// the schema check, fault injection, the labels and the log line).
pub struct Routes(matchit::Router<Box<str>>);

impl Routes {
    /// The templates, as given to the router (an empty one is `/`, as axum and utoipa-axum
    /// take it). Panics on one that axum's router would have refused too (a conflict, a
    /// malformed parameter).
    pub fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut routes = matchit::Router::new();
        for template in templates {
            let template = if template.is_empty() { "/" } else { template };
            routes
                .insert(template, template.into())
                .unwrap_or_else(|error| panic!("route {template}: {error}"));
        }
        Self(routes)
    }

    /// The template of the route that answers `path`; `None` when none does (the
    /// fallback answers).
    pub fn template(&self, path: &str) -> Option<&str> {
        self.0.at(path).ok().map(|matched| &**matched.value)
    }
}

/// Set on the answer of the router's fallback: no route matched.
#[derive(Clone, Copy)]
pub struct Unrouted;

/// In debug builds (the tests), [`Routes`] must have found a template exactly when the
/// router answered from a route: a route given to the router and not to [`Routes`] would
/// otherwise be labelled, shed and logged as unmatched, without a sound.
fn debug_check_routed(matched: bool, response: &Response) {
    let unrouted = response.extensions().get::<Unrouted>().is_some();
    debug_assert!(
        matched != unrouted,
        "the middleware's routes and the router's differ: a template {} while the router {}",
        if matched { "matched" } else { "did not match" },
        if unrouted {
            "fell back"
        } else {
            "answered from a route"
        },
    );
}

/// The router, with [`observe`] around it: the service the server runs, one per
/// connection ([`Observed::on_connection`]). One `Arc`: hyper's adapter clones the
/// service for each request.
#[derive(Clone)]
pub struct Observed(Arc<OnConnection>);

struct OnConnection {
    inner: Arc<RouterAndState>,
    /// The connection's, for the request timeout; `None`: each request its own timer.
    clock: Option<ConnectionClock>,
}

struct RouterAndState {
    router: Router,
    routes: Routes,
    state: AppState,
}

impl Observed {
    /// `router` must have a route for each of `routes`' templates and no other.
    pub fn new(router: Router, routes: Routes, state: AppState) -> Self {
        Self(Arc::new(OnConnection {
            inner: Arc::new(RouterAndState {
                router,
                routes,
                state,
            }),
            clock: None,
        }))
    }

    /// The service for one connection, whose requests' timeouts wait on its `clock`.
    pub fn on_connection(&self, clock: ConnectionClock) -> Self {
        Self(Arc::new(OnConnection {
            inner: self.0.inner.clone(),
            clock: Some(clock),
        }))
    }
}

impl<B> Service<axum::http::Request<B>> for Observed
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // as axum's router, always ready: what waits is in the request's future
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let this = self.0.clone();
        Box::pin(async move {
            Ok(observe(&this.inner, this.clock.as_ref(), request.map(Body::new)).await)
        })
    }
}

async fn observe(
    inner: &RouterAndState,
    clock: Option<&ConnectionClock>,
    request: Request,
) -> Response {
    let state = &inner.state;
    let next = inner.router.clone();
    let route = inner.routes.template(request.uri().path());
    let mut completion = Completion::begin(state, &request, route);
    let route = completion.route();
    let probe = is_probe(route);
    let started = completion.started;
    let work = async {
        if probe {
            return run_catching_panics(next, request, true).await;
        }
        match state.limiter.try_acquire() {
            Err(_) => ApiError::Overloaded.into_response(),
            Ok(_permit) => {
                // A POST cut short once its handler runs may have taken effect: the
                // client must not be told to retry it blindly, unless it sent an
                // idempotency key, which makes a retry safe.
                let may_change_state = !request.method().is_idempotent()
                    && !request.headers().contains_key(idempotency::HEADER);
                let handler_ran = AtomicBool::new(false);
                // Awaited where it is made: a future bound to a name first would take
                // room in this one's state twice, and be copied with it.
                match connection_clock::timeout_at(
                    clock,
                    started + state.request_timeout,
                    handle(state, route, request, next, &handler_ran),
                )
                .await
                {
                    Ok(response) => response,
                    // inside the request's scope, where the body read says it was cut short
                    Err(_) if extract::was_reading_body() => ApiError::BodyTimeout.into_response(),
                    Err(_) if may_change_state && handler_ran.load(Ordering::Relaxed) => {
                        ApiError::OutcomeUnknown {
                            location: request_id::location(),
                        }
                        .into_response()
                    }
                    Err(_) => ApiError::Timeout.into_response(),
                }
            }
        }
    };
    // Boxed, one allocation per request: the request's future (its timeout, its handler)
    // is otherwise moved, all of it, into the request id's task-local scope, then (traces
    // on) into the trace context's wrapper, and into this function's own state; as a
    // box, each move is a pointer.
    let work = request_id::scope(completion.request_id.clone(), Box::pin(work));
    // With traces on, the request's span is the current context while it runs: its
    // database operations become child spans and its log lines carry its ids.
    let response = match &completion.trace {
        Some(trace) => work.with_context(trace.clone()).await,
        None => work.await,
    };
    // A large answer holds memory until its client has read it: charged to the payload
    // budget meanwhile, or shed now if it does not fit. Not `/metrics`' on its own port
    // (never shed there: a scrape refused while the budget is spent would page as the
    // service down, and leave monitoring blind when it is needed), which only Prometheus
    // reaches, at most `METRICS_CONNECTIONS` at once. Served on the main port, where any
    // client could hold many slow scrapes, it is charged as any answer, but one scrape at
    // a time may go past the budget (`charge_scrape`).
    let mut response = if probe && !state.metrics_on_main_port {
        response
    } else {
        let (parts, body) = response.into_parts();
        let charged = if route == METRICS_PATH {
            state.payload_budget.charge_scrape(body)
        } else {
            state.payload_budget.charge_response(body)
        };
        match charged {
            Some(body) => Response::from_parts(parts, body),
            None => ApiError::OverloadedMemory.into_response(),
        }
    };
    completion.status = Some(response.status());
    completion.problem = response
        .extensions()
        .get::<ProblemKind>()
        .map(|kind| kind.0);
    let headers = response.headers_mut();
    headers.insert(request_id::HEADER, completion.request_id.clone());
    if let Some(traceparent) = completion.trace.as_ref().and_then(traces::traceparent) {
        headers.insert(traces::TRACEPARENT, traceparent);
    }
    response
}

/// nginx's "client closed request": what a request is recorded with when its client went
/// away before the answer (hyper then drops the handler's future mid-way).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;
/// What a request is recorded with when the server dropped it: the drain at shutdown
/// timed out with it still in flight.
pub const ABANDONED_AT_SHUTDOWN: u16 = 503;

/// What every request leaves behind, however it ends: the active-requests gauge back down,
/// a latency observation and an access log line. Done on drop, because hyper drops the
/// future of a request whose client disconnected: without this, the gauge would stay up
/// for good and the slowest requests (the ones clients gave up on) would be missing from
/// the latency histogram that the alerts read.
struct Completion<'a> {
    state: &'a AppState,
    /// tokio's clock, which the request's deadline is on (the same as the system's,
    /// unless a test pauses it).
    started: Instant,
    method: Method,
    /// The route's template; `None` when no route matched.
    route: Option<&'a str>,
    request_id: HeaderValue,
    /// Set when a response exists; `None` on drop means the client went away.
    status: Option<StatusCode>,
    /// Which problem the answer was, if it was one: a wall of 503s is shed load, request
    /// timeouts, query timeouts, a busy pool or the database away, which the status alone
    /// cannot tell apart.
    problem: Option<&'static str>,
    /// The request's server span, when traces are on.
    trace: Option<opentelemetry::Context>,
}

impl<'a> Completion<'a> {
    fn begin(state: &'a AppState, request: &Request, route: Option<&'a str>) -> Self {
        state.metrics.http_active.inc();
        // Probes and scrapes make no trace: they come every few seconds from machines.
        let trace = state
            .tracer
            .as_ref()
            .filter(|_| !is_probe(route.unwrap_or(UNMATCHED)))
            .map(|tracer| {
                let method = method_label(request.method());
                tracer.server_span(request.headers(), method, route, request.uri().path())
            });
        Self {
            state,
            started: Instant::now(),
            method: request.method().clone(),
            route,
            request_id: request_id::from_headers(request.headers()),
            status: None,
            problem: None,
            trace,
        }
    }

    fn route(&self) -> &'a str {
        self.route.unwrap_or(UNMATCHED)
    }
}

impl Drop for Completion<'_> {
    fn drop(&mut self) {
        let state = self.state;
        state.metrics.http_active.dec();
        let elapsed = self.started.elapsed();
        let status = match self.status {
            Some(status) => status.as_u16(),
            None if state.shutdown.is_abandoning() => ABANDONED_AT_SHUTDOWN,
            None => CLIENT_CLOSED_REQUEST,
        };
        let route = self.route();
        let ids = self.trace.as_ref().and_then(|trace| {
            traces::end_server_span(trace, status);
            traces::ids(trace)
        });
        state.metrics.observe_request(
            &self.method,
            route,
            status,
            elapsed.as_secs_f64(),
            ids.as_ref(),
        );
        // The line is written after the request's context has ended: its trace ids are
        // given here.
        let access = access::Access {
            request_id: self.request_id.to_str().unwrap_or_default(),
            // the label, not the token: a made-up method can be 32 KiB long
            method: method_label(&self.method),
            route,
            status,
            problem: self.problem,
            // whole microseconds: the formatter writes thousandths cheaply
            duration_ms: micros(elapsed) as f64 / 1000.0,
            trace: ids
                .as_ref()
                .map(|ids| (ids.trace_id.as_str(), ids.span_id.as_str())),
        };
        access::log(&access, is_probe(route));
    }
}

/// `elapsed` in whole microseconds; a `u64` holds 584,000 years of them, and converts to
/// `f64` inline, where `Duration::as_micros`' `u128` takes a library call.
fn micros(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Runs the request's handler after the checks and faults that come first; `handler_ran`
/// is set once the handler itself starts (what it did before a timeout is then unknown).
async fn handle(
    state: &AppState,
    route: &str,
    request: Request,
    next: Router,
    handler_ran: &AtomicBool,
) -> Response {
    // Until the schema is in place, a query could only fail with "relation does not
    // exist": say "not yet" instead, which a client knows to retry.
    if needs_schema(route) && !state.schema_ready() {
        return ApiError::NotReady.into_response();
    }
    if state.chaos_enabled && is_chaos_target(route) {
        let (latency, error_rate) = {
            let live = state.live.load();
            (live.chaos_latency, live.chaos_error_rate)
        };
        if !latency.is_zero() {
            // boxed: a timer held inline would make every request's future larger
            Box::pin(tokio::time::sleep(latency)).await;
        }
        if error_rate > 0.0 && fastrand::f64() < error_rate {
            return ApiError::InjectedFault.into_response();
        }
    }
    handler_ran.store(true, Ordering::Relaxed);
    run_catching_panics(next, request, route != UNMATCHED).await
}

/// A panicking handler answers 500 and the service lives on. Here rather than in a
/// service of its own around the router, which would cost every request another boxed
/// future.
async fn run_catching_panics(mut next: Router, request: Request, matched: bool) -> Response {
    // The router is always ready (axum's own server calls it without asking, too).
    match AssertUnwindSafe(Service::<Request>::call(&mut next, request))
        .catch_unwind()
        .await
    {
        Ok(Ok(response)) => {
            debug_check_routed(matched, &response);
            response
        }
        Err(panic) => panic_response(panic),
    }
}

/// Turns a panic in a handler into a 500 problem (the cause is logged, not sent).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = crate::telemetry::panic_message(&*panic);
    tracing::error!(request_id = request_id::current(), panic = %message, "handler panicked");
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use http_body_util::BodyExt as _;

    use super::*;

    /// [`Routes`] finds the route the router will answer with, on the paths where a
    /// matcher could differ: trailing and doubled slashes, case, encoded slashes,
    /// parameters that are empty or span segments.
    #[tokio::test]
    async fn routes_match_a_path_as_the_router_does() {
        let templates = ["/", "/health", "/api/v1/notes", "/api/v1/notes/{id}"];
        let mut router = templates
            .iter()
            .fold(Router::new(), |router, &template| {
                router.route(template, get(move || async move { template }))
            })
            .fallback(|| async { "" });
        let routes = Routes::new(templates);
        for path in [
            "/",
            "//",
            "/health",
            "/health/",
            "/Health",
            "/api/v1/notes",
            "/api/v1/notes/",
            "/api/v1/notes//",
            "//api/v1/notes",
            "/api/v1/notes/0b7c",
            "/api/v1/notes/0b7c/",
            "/api/v1/notes/a/b",
            "/api/v1/notes/a%2Fb",
            "/api/v1/notes/%7Bid%7D",
            "/api/v1/notes/{id}",
            "/api/v1",
            "/nothing",
        ] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let answer = Service::call(&mut router, request).await.unwrap();
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            let answered_by = std::str::from_utf8(&body).unwrap();
            assert_eq!(
                routes.template(path).unwrap_or_default(),
                answered_by,
                "{path}"
            );
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    fn a_template_and_the_router_agree_or_the_debug_check_fails() {
        let routed = Response::new(Body::empty());
        let mut unrouted = Response::new(Body::empty());
        unrouted.extensions_mut().insert(Unrouted);
        debug_check_routed(true, &routed);
        debug_check_routed(false, &unrouted);
        for (matched, response) in [(false, &routed), (true, &unrouted)] {
            let check = std::panic::catch_unwind(AssertUnwindSafe(|| {
                debug_check_routed(matched, response)
            }));
            assert!(check.is_err(), "matched {matched} passed");
        }
    }
}
