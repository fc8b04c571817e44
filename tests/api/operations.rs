//! `/`, the probes, `/version`, `/metrics`, the OpenAPI document and request ids.

use serde_json::{Value, json};

use crate::support::app::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_is_exactly_status_ok() {
    let app = spawn_app().await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), r#"{"status":"ok"}"#);
}

#[tokio::test]
async fn livez_and_readyz_are_ok_when_ready() {
    let app = spawn_app().await;
    for path in ["/livez", "/readyz"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "ok"})
        );
    }
}

#[tokio::test]
async fn root_describes_the_service_as_json() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["vary"], "accept");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["service"], "farol");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["mode"], "development");
    assert_eq!(body["database"], "up");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn root_shows_the_configured_mode() {
    let app = spawn_app_with(&[("APP_MODE", "production")]).await;
    let body: Value = app.get("/").await.json().await.unwrap();
    assert_eq!(body["mode"], "production");
}

#[tokio::test]
async fn browsers_get_a_self_contained_status_page() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"));
    let page = response.text().await.unwrap();
    for expected in [
        "farol",
        env!("CARGO_PKG_VERSION"),
        "development",
        r#"id="database" class="state-up">up<"#,
        "/health",
        "/api/v1/openapi.json",
    ] {
        assert!(page.contains(expected), "page lacks {expected}");
    }
    for external in ["http://", "https://", "<script", "src="] {
        assert!(!page.contains(external), "page must not load {external}");
    }
}

#[tokio::test]
async fn version_reports_the_build() {
    let app = spawn_app().await;
    let body: Value = app.get("/version").await.json().await.unwrap();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["commit"].is_string());
    assert_eq!(body["profile"], "debug");
}

#[tokio::test]
async fn metrics_carry_the_design_names_and_route_templates() {
    let app = spawn_app().await;
    let note = app.create_note("m", "").await;
    app.get(&format!("/api/v1/notes/{}", note["id"].as_str().unwrap()))
        .await;
    app.get("/no/such/route").await;
    app.get("/health").await;

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",http_route="/api/v1/notes/{id}",le="0.005"}"#,
        r#"http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="201",http_route="/api/v1/notes"} 1"#,
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404",http_route="unmatched"} 1"#,
        "http_server_active_requests",
        r#"db_client_connection_count{state="idle"}"#,
        r#"db_client_connection_count{state="used"}"#,
        "db_client_connection_max 16",
        r#"db_client_operation_duration_seconds_count{db_operation_name="insert_note"} 1"#,
        r#"db_client_operation_duration_seconds_count{db_operation_name="health_check"}"#,
        "farol_build_info{commit=",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(expected), "missing {expected}\n{text}");
    }
    assert!(
        !text.contains("/no/such/route"),
        "unmatched paths must not become labels"
    );
}

/// The middleware finds a request's route before the router does, from the routes it was
/// given: every route the main port serves must be among them, or its requests would be
/// labelled, shed and logged as unmatched. (A route the router has and the middleware's
/// list lacks fails any test that requests it: a debug check compares the two.)
#[tokio::test]
async fn every_route_is_labelled_with_its_own_template() {
    let app = spawn_app().await;
    let templates = [
        "/",
        "/health",
        "/livez",
        "/readyz",
        "/version",
        "/metrics",
        "/api/v1/notes",
        "/api/v1/notes/{id}",
        "/api/v1/openapi.json",
    ];
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.extend(["/api/v1/openapi.json", "/metrics"]);
    documented.sort_unstable();
    let mut expected = templates.to_vec();
    expected.sort_unstable();
    assert_eq!(documented, expected, "a route was added: label it here too");
    for template in &templates {
        let path = template.replace("{id}", &uuid::Uuid::new_v4().to_string());
        assert!(
            !path.contains('{'),
            "a parameter this test does not fill: {template}"
        );
        app.get(&path).await;
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    for template in &templates {
        assert!(
            text.contains(&format!(r#"http_route="{template}""#)),
            "{template} is labelled as itself\n{text}"
        );
    }
    assert!(!text.contains(r#"http_route="unmatched""#), "{text}");
}

#[tokio::test]
async fn metrics_port_moves_metrics_off_the_main_port() {
    let app =
        spawn_app_with(&[("METRICS_PORT", &crate::support::pg::free_port().to_string())]).await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    let metrics_address = app.metrics_address.as_ref().unwrap();
    let response = app
        .client
        .get(format!("{metrics_address}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers().contains_key("x-request-id"),
        "every listener's answers carry X-Request-Id"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("http_server_request_duration_seconds"));
    let elsewhere = app
        .client
        .get(format!("{metrics_address}/api/v1/notes"))
        .send()
        .await
        .unwrap();
    crate::support::app::assert_problem(elsewhere, 404, "not-found").await;
}

#[tokio::test]
async fn openapi_documents_every_route_and_problem() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/", &["get"][..]),
        ("/health", &["get"]),
        ("/livez", &["get"]),
        ("/readyz", &["get"]),
        ("/version", &["get"]),
        ("/api/v1/notes", &["get", "post"]),
        ("/api/v1/notes/{id}", &["get", "put", "delete"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is documented"
            );
        }
    }
    let post = &paths["/api/v1/notes"]["post"]["responses"];
    for status in ["201", "400", "413", "415", "422", "503"] {
        assert!(post[status].is_object(), "POST documents {status}");
    }
    assert!(post["422"]["content"]["application/problem+json"].is_object());
    let input = &doc["components"]["schemas"]["NoteInput"];
    assert_eq!(
        input["additionalProperties"], false,
        "unknown fields are rejected"
    );
    assert_eq!(input["properties"]["title"]["maxLength"], 200);
}

#[tokio::test]
async fn sane_request_ids_are_echoed_and_forged_ones_replaced() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/livez"))
        .header("x-request-id", "trace-42.a_b:c")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-42.a_b:c");
    for forged in [
        "x\" injected=\"1",
        &"a".repeat(500),
        "{\"level\":\"ERROR\"}",
    ] {
        let response = app
            .client
            .get(app.url("/livez"))
            .header("x-request-id", forged)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, forged);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    let missing = app.get("/api/v1/notes/nope").await;
    assert!(uuid::Uuid::parse_str(missing.headers()["x-request-id"].to_str().unwrap()).is_ok());
}
