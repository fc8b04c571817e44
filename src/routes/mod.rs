//! The routes, their OpenAPI document, and the middleware around them: the application's
//! side of HTTP (the generic plumbing in `crate::http` knows nothing of its state).

mod database_errors;
pub mod index;
pub mod meta;
pub mod notes;
pub mod observe;
pub mod probes;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::problem::{ApiError, FieldError, Problem};
use crate::state::{AppState, BUILD};
use crate::telemetry::metrics::method_label;
use observe::Unrouted;
pub use observe::{Observed, Routes};

pub use crate::http::extract::BODY_LIMIT_BYTES;
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Where Prometheus scrapes: on `METRICS_PORT` when set, else on the main port.
pub const METRICS_PATH: &str = "/metrics";

/// A JSON answer from a body fixed at build time or start-up (`/`, the probes).
/// `from_static` and a `Body`: a `&str` header value would be copied into a new one, and
/// a `&str` body would first set a text content type, on every answer.
fn fixed_json(status: StatusCode, body: &'static str) -> Response {
    let json = HeaderValue::from_static("application/json");
    (status, [(header::CONTENT_TYPE, json)], Body::from(body)).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "farol",
        description = "A small notes service on PostgreSQL, and its operational endpoints. \
                       Every API failure is an RFC 9457 problem (application/problem+json). \
                       Every response carries X-Request-Id."
    ),
    tags(
        (name = "notes", description = "The notes resource"),
        (name = "operations", description = "Status, health and build information")
    ),
    components(schemas(Problem, FieldError))
)]
struct ApiDoc;

/// The application router and its OpenAPI document, generated from the same route list
/// so that the document cannot drift from what is served.
pub fn router(state: AppState) -> (Observed, utoipa::openapi::OpenApi) {
    let (routes, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(index::status))
        .routes(routes!(probes::health))
        .routes(routes!(probes::livez))
        .routes(routes!(probes::readyz))
        .routes(routes!(meta::version))
        .routes(routes!(notes::create_note, notes::list_notes))
        .routes(routes!(
            notes::get_note,
            notes::replace_note,
            notes::delete_note
        ))
        .split_for_parts();
    api.info.version = BUILD.version.to_owned();

    let document = serde_json::to_string(&api).expect("the OpenAPI document serialises");
    let mut router = routes.route(
        OPENAPI_PATH,
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
    );
    let mut templates: Vec<&str> = api.paths.paths.keys().map(String::as_str).collect();
    templates.push(OPENAPI_PATH);
    if state.metrics_on_main_port {
        router = router.route(METRICS_PATH, get(meta::metrics));
        templates.push(METRICS_PATH);
    }
    let observed = with_middleware(router, Routes::new(templates), state);
    (observed, api)
}

/// The fallbacks, and the one middleware around them and every route: problem+json for
/// unknown routes and methods, and the request middleware (it sees and logs every
/// answer, and turns panics into 500s). `templates` are the routes' paths, each as given
/// to `routes`. There is no other layer: each would cost every request a boxed level
/// more; the body limit is the JSON extractor's own (`http::extract`), which reads every
/// body the routes take, within the limit and the payload budget.
pub fn with_middleware(routes: Router<AppState>, templates: Routes, state: AppState) -> Observed {
    let router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    Observed::new(router, templates, state)
}

/// The router of `METRICS_PORT`: `/metrics`, and the probes `/livez` and `/readyz`, with
/// the same middleware as the main port (request ids, problem answers, the access log at
/// debug). Probes answered here are answered even when the main port is at its
/// connection bound: a flood of connections there must not make the orchestrator restart
/// or unready a replica that restarting would not help.
pub fn metrics_router(state: AppState) -> Observed {
    let routes: [(&str, MethodRouter<AppState>); 3] = [
        (METRICS_PATH, get(meta::metrics)),
        ("/livez", get(probes::livez)),
        ("/readyz", get(probes::readyz)),
    ];
    let templates = Routes::new(routes.iter().map(|(path, _)| *path));
    let router = routes
        .into_iter()
        .fold(Router::new(), |router, (path, route)| {
            router.route(path, route)
        });
    with_middleware(router, templates, state)
}

async fn not_found(method: Method, uri: Uri) -> (Extension<Unrouted>, ApiError) {
    let problem = ApiError::NotFound(format!(
        "no route for {} {}",
        method_label(&method),
        uri.path()
    ));
    (Extension(Unrouted), problem)
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        method_label(&method),
        uri.path()
    ))
}
