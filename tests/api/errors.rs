//! Every error class of docs/api-problems.md answers a precise problem+json.

use serde_json::{Value, json};

use crate::support::app::{TestApp, assert_problem, spawn_app};
use crate::support::raw;

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    for body in [
        r#"{"title": "x""#,
        "not json",
        r#"{"title": "x", "body": "y"} trailing"#,
        "",
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/notes"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "malformed-json").await;
    }
}

#[tokio::test]
async fn invalid_utf8_is_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/notes"))
        .header("content-type", "application/json")
        .body(b"{\"title\": \"\xff\xfe\", \"body\": \"\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed-json").await;
}

#[tokio::test]
async fn wrong_types_missing_and_unknown_fields_are_422() {
    let app = spawn_app().await;
    for (body, mentions) in [
        (json!({"title": 1, "body": ""}), "title"),
        (json!({"title": "t"}), "body"),
        (json!({"body": "b"}), "title"),
        (json!({"title": "t", "body": "", "admin": true}), "admin"),
        (json!(["title", "body"]), "expected a JSON object"),
        (json!(null), "expected a JSON object"),
    ] {
        let problem = assert_problem(
            app.post_json("/api/v1/notes", &body).await,
            422,
            "invalid-body",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(mentions),
            "{problem}"
        );
    }
}

/// serde's message quotes an unknown key: a long one does not come back whole.
#[tokio::test]
async fn a_detail_quoting_a_long_key_is_bounded() {
    let app = spawn_app().await;
    let key = "k".repeat(100_000);
    let problem = assert_problem(
        app.post_json("/api/v1/notes", &json!({ key: 1 })).await,
        422,
        "invalid-body",
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.len() < 300, "{} bytes", detail.len());
    assert!(detail.contains("unknown field"), "{detail}");
}

#[tokio::test]
async fn failed_validation_is_422_listing_every_field() {
    let app = spawn_app().await;
    let problem = assert_problem(
        app.post_json("/api/v1/notes", &json!({"title": "", "body": "a\u{0}b"}))
            .await,
        422,
        "validation-failed",
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["title", "body"]);
}

#[tokio::test]
async fn a_bad_id_is_400() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/notes/42",
        "/api/v1/notes/not-a-uuid",
        "/api/v1/notes/%27%20OR%201=1",
    ] {
        assert_problem(app.get(path).await, 400, "invalid-parameter").await;
        assert_problem(app.delete(path).await, 400, "invalid-parameter").await;
    }
}

#[tokio::test]
async fn an_unknown_route_is_404() {
    let app = spawn_app().await;
    let problem = assert_problem(app.get("/api/v2/notes").await, 404, "not-found").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("/api/v2/notes")
    );
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let app = spawn_app().await;
    let response = app
        .client
        .patch(app.url("/api/v1/notes"))
        .send()
        .await
        .unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_problem(response, 405, "method-not-allowed").await;
    let response = app.client.post(app.url("/health")).send().await.unwrap();
    assert_problem(response, 405, "method-not-allowed").await;
}

/// A note's JSON one byte over the 1 MiB limit in its body alone.
fn note_over_1_mib() -> String {
    format!(
        r#"{{"title":"t","body":"{}"}}"#,
        "a".repeat(1024 * 1024 + 1)
    )
}

/// `body` sent as JSON with `method` to `path`.
async fn send_json(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_body_over_1_mib_is_413_even_without_content_length() {
    let app = spawn_app().await;
    let huge = note_over_1_mib();
    let response = send_json(&app, reqwest::Method::POST, "/api/v1/notes", &huge).await;
    assert_problem(response, 413, "payload-too-large").await;

    // Chunked: the server cannot see the size up front and must stop reading at 1 MiB.
    let mut request =
        b"POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for chunk in huge.as_bytes().chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw::exchange(&app.address, &request).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json")
    );
}

/// The 1 MiB limit is the JSON extractor's own, not a layer over every route: an
/// operation that read its body some other way would escape it, and fail here.
#[tokio::test]
async fn every_operation_that_takes_a_body_answers_413_past_1_mib() {
    let app = spawn_app().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let huge = note_over_1_mib();
    let mut checked = Vec::new();
    for (template, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation.get("requestBody").is_none() {
                continue;
            }
            // every path parameter is a note id
            let path: Vec<&str> = template
                .split('/')
                .map(|part| {
                    if part.starts_with('{') {
                        "00000000-0000-4000-8000-000000000000"
                    } else {
                        part
                    }
                })
                .collect();
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = send_json(&app, method.clone(), &path.join("/"), &huge).await;
            assert_problem(response, 413, "payload-too-large").await;
            checked.push(format!("{method} {template}"));
        }
    }
    for expected in ["POST /api/v1/notes", "PUT /api/v1/notes/{id}"] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} not among {checked:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_or_wrong_content_type_is_415() {
    let app = spawn_app().await;
    let body = r#"{"title":"t","body":""}"#;
    let response = app
        .client
        .post(app.url("/api/v1/notes"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported-media-type").await;
    let response = app
        .client
        .post(app.url("/api/v1/notes"))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported-media-type").await;
}

#[tokio::test]
async fn limits_outside_1_to_100_are_422() {
    let app = spawn_app().await;
    for limit in ["0", "101", "-1", "abc", "99999999999999999999999", "1.5"] {
        let problem = assert_problem(
            app.get(&format!("/api/v1/notes?limit={limit}")).await,
            422,
            "invalid-query",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains("limit"),
            "{limit}: {problem}"
        );
    }
    assert_eq!(app.get("/api/v1/notes?limit=1").await.status(), 200);
    assert_eq!(app.get("/api/v1/notes?limit=100").await.status(), 200);
}

#[tokio::test]
async fn forged_cursors_are_refused_or_harmless() {
    let app = spawn_app().await;
    app.create_note("one", "").await;
    for cursor in ["x", "%27%3B--", &"A".repeat(31), &"*".repeat(32)] {
        let problem = assert_problem(
            app.get(&format!("/api/v1/notes?cursor={cursor}")).await,
            422,
            "invalid-query",
        )
        .await;
        assert_eq!(
            problem["detail"],
            "cursor must be 32 base64url characters, as next_cursor gives it"
        );
    }
    // Well-formed but invented: a position, nothing more. The note (written now) is
    // older than a position past year 9999 ("f": clamped to the last representable
    // instant) and newer than 1970 ("A"), just before it ("_": -1 µs) and a position
    // before year 1 ("g": clamped to the first instant).
    for (cursor, notes) in [("A", 0), ("_", 0), ("g", 0), ("f", 1)] {
        let cursor = cursor.repeat(32);
        let response = app.get(&format!("/api/v1/notes?cursor={cursor}")).await;
        assert_eq!(response.status(), 200, "{cursor}");
        let page: Value = response.json().await.unwrap();
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            notes,
            "{cursor}: {page}"
        );
    }
}
