//! `/`: what this service is and how it is doing, as JSON, or as a small status page for
//! a browser (`Accept: text/html`). The database state is the last one observed, never
//! a query per request: `/` must stay cheap however often it is hit. For the same reason
//! the JSON answer is serialized once for each of its four possible states, not per
//! request.

use std::sync::LazyLock;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::config::AppMode;
use crate::state::{AppState, BUILD};

const PAGE: &str = include_str!("status_page.html");
/// The page has no script and no external asset: a strict policy costs nothing.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    #[schema(example = "farol")]
    pub service: &'static str,
    pub version: &'static str,
    pub mode: AppMode,
    /// The last observed database state: `up` or `down`.
    #[schema(example = "up")]
    pub database: &'static str,
    pub message: &'static str,
}

/// The service's identity and state.
#[utoipa::path(
    get, path = "/", tag = "operations",
    responses((status = 200, description = "Status as JSON, or an HTML page for browsers",
        content((ServiceStatus = "application/json"), (String = "text/html"))))
)]
// The request itself rather than a `HeaderMap` extractor, which would clone every
// header of every request to read one.
pub async fn status(State(state): State<AppState>, request: Request) -> Response {
    let mode = state.live.load().app_mode;
    let database_up = state.db.is_up();
    let mut response = if wants_html(request.headers()) {
        let status = service_status(mode, database_up);
        let mut page = axum::response::Html(render_page(&status, &state)).into_response();
        page.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        page
    } else {
        super::fixed_json(StatusCode::OK, json_body(mode, database_up))
    };
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

fn service_status(mode: AppMode, database_up: bool) -> ServiceStatus {
    ServiceStatus {
        service: "farol",
        version: BUILD.version,
        mode,
        database: if database_up { "up" } else { "down" },
        message: "farol is running; /health checks the database",
    }
}

/// `/`'s JSON answer for a mode and a database state, the only two fields that change
/// while the process lives: each of the four is serialized on first use and kept.
fn json_body(mode: AppMode, database_up: bool) -> &'static str {
    static BODIES: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
        [AppMode::Development, AppMode::Production].map(|mode| {
            [false, true].map(|database_up| {
                serde_json::to_string(&service_status(mode, database_up))
                    .expect("a status of static strings serializes")
            })
        })
    });
    let mode = match mode {
        AppMode::Development => 0,
        AppMode::Production => 1,
    };
    &BODIES[mode][usize::from(database_up)]
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn render_page(status: &ServiceStatus, state: &AppState) -> String {
    let metrics_link = if state.metrics_on_main_port {
        r#"<li><a href="/metrics">/metrics</a> Prometheus metrics</li>"#
    } else {
        ""
    };
    PAGE.replace("{{version}}", &escape(status.version))
        .replace("{{commit}}", &escape(BUILD.commit))
        .replace("{{mode}}", status.mode.as_str())
        .replace("{{database}}", status.database)
        .replace(
            "{{ready}}",
            if state.is_ready() {
                "ready"
            } else {
                "not ready"
            },
        )
        .replace("{{metrics_link}}", metrics_link)
}

/// HTML-escapes text (ours today, but a build could carry anything in its commit).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_and_clients_json() {
        let mut headers = HeaderMap::new();
        assert!(!wants_html(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert!(wants_html(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_html(&headers));
    }

    #[test]
    fn each_json_answer_says_its_own_mode_and_database_state() {
        for (mode, name) in [
            (AppMode::Development, "development"),
            (AppMode::Production, "production"),
        ] {
            for (database_up, database) in [(false, "down"), (true, "up")] {
                let body: serde_json::Value =
                    serde_json::from_str(json_body(mode, database_up)).unwrap();
                assert_eq!(
                    body,
                    serde_json::json!({
                        "service": "farol",
                        "version": BUILD.version,
                        "mode": name,
                        "database": database,
                        "message": "farol is running; /health checks the database",
                    })
                );
            }
        }
    }

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
