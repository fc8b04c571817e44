//! What a client can make the service hold, and for how long: metric series, request
//! heads, connections, request bodies, and requests abandoned half-way.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::app::{TestApp, assert_problem, spawn_app_with, start};
use crate::support::pg::{create_database, shared_server_url};
use crate::support::raw::exchange;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the end of a response head, or `limit` passes; returns what came.
async fn read_head(stream: &mut TcpStream, limit: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn made_up_methods_are_labelled_other_and_add_no_series() {
    let app = spawn_app_with(&[]).await;
    for n in 0..50 {
        let answer = exchange(
            &app.address,
            format!("M{n:05} /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !text.contains("M000"),
        "a client's method became a label:\n{text}"
    );
    let other = r#"http_server_request_duration_seconds_count{http_request_method="_OTHER",http_response_status_code="405",http_route="/livez"} 50"#;
    assert!(text.contains(other), "missing {other}\n{text}");
}

#[tokio::test]
async fn a_request_head_larger_than_a_proxy_passes_gets_431_at_once() {
    let app = spawn_app_with(&[]).await;
    let big = "x".repeat(40 * 1024);
    let started = Instant::now();
    let answer = exchange(
        &app.address,
        format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once: {:?}",
        started.elapsed()
    );
    // the connection cut off at the head's bound is counted
    app.wait_for_metric(
        r#"farol_http_connections_cut_total{reason="head_too_large"}"#,
        1.0,
    )
    .await;

    // What a proxy passes still passes.
    let fits = "x".repeat(20 * 1024);
    let answer = exchange(
        &app.address,
        format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(200)]
    );
}

/// Answers `request` on `stream` (kept open); the response head, or what came in `limit`.
async fn ask(stream: &mut TcpStream, request: &[u8], limit: Duration) -> String {
    stream.write_all(request).await.unwrap();
    read_head(stream, limit).await
}

#[tokio::test]
async fn past_max_connections_the_oldest_idle_connection_makes_room() {
    let url = create_database(&shared_server_url()).await;
    // The metrics port has its own bound: it shows the main port's while that is full.
    let app = start(&url, &[("MAX_CONNECTIONS", "2"), ("METRICS_PORT", "0")]).await;
    // Waiting on connections that close, so that no idle keep-alive connection of the
    // test's HTTP client holds a slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exchange(
        &app.address,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .starts_with("HTTP/1.1 200")
    {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (livez, head_begun, head_rest) = (
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
        b"GET /livez HTTP/1.1\r\nHo".as_slice(),
        b"st: x\r\n\r\n".as_slice(),
    );
    let answered = |head: &str| head.starts_with("HTTP/1.1 200");
    // The slots: one keep-alive connection answered once and idle since (what a client
    // holding the server's connections looks like), one with a request head begun.
    let mut first = connect(&app).await;
    assert!(answered(
        &ask(&mut first, livez, Duration::from_secs(5)).await
    ));
    let mut second = connect(&app).await;
    second.write_all(head_begun).await.unwrap();
    let metrics_address = app.metrics_address.as_deref().unwrap();
    // the probes are answered on the metrics port while the main one is full
    for probe in ["/livez", "/readyz"] {
        let answer = app.client.get(format!("{metrics_address}{probe}")).send();
        assert_eq!(answer.await.unwrap().status(), 200, "{probe}");
    }

    // A newcomer is served well before the idle connection's own timeout (10 s) would
    // have freed a slot: the idle one is closed; the one owing a request is left alone,
    // and its request, finished, is answered.
    let mut third = connect(&app).await;
    let answer = ask(&mut third, livez, Duration::from_secs(5)).await;
    assert!(answered(&answer), "served past the bound: {answer:?}");
    assert_closed(&mut first).await;
    let answer = ask(&mut second, head_rest, Duration::from_secs(5)).await;
    assert!(answered(&answer), "a request begun is not lost: {answer:?}");

    // Both slots owing a request: the bound holds, the newcomer waits...
    second.write_all(head_begun).await.unwrap();
    third.write_all(head_begun).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = connect(&app).await;
    let early = ask(&mut fourth, livez, Duration::from_millis(700)).await;
    assert_eq!(early, "", "served past the bound");
    // ...until one of them is answered, and so idle: then it is closed for the newcomer.
    let answer = ask(&mut third, head_rest, Duration::from_secs(5)).await;
    assert!(answered(&answer), "{answer:?}");
    let answer = read_head(&mut fourth, Duration::from_secs(5)).await;
    assert!(answered(&answer), "served once one was idle: {answer:?}");
    assert_closed(&mut third).await;
    let answer = ask(&mut second, head_rest, Duration::from_secs(5)).await;
    assert!(answered(&answer), "a request begun is not lost: {answer:?}");

    let metrics_url = format!("{metrics_address}/metrics");
    let scrape = app.client.get(&metrics_url).send().await.unwrap();
    let text = scrape.text().await.unwrap();
    for line in [
        "farol_http_connections_open 2",
        "farol_http_connections_max 2",
        "farol_http_connections_cut_total{reason=\"make_room\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
    }
    drop(fourth);
    drop(second);
    // the gauge follows the connections down: none is left open once all are closed
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = app.client.get(&metrics_url).send().await.unwrap();
        let text = text.text().await.unwrap();
        if text.lines().any(|l| l == "farol_http_connections_open 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open gauge stayed up:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server closed `stream` (within a second).
async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed: {read:?}");
}

/// An app whose payload budget is `kib` KiB.
async fn app_with_payload_budget(kib: usize) -> TestApp {
    app_with_payload_budget_and(kib, &[]).await
}

/// [`app_with_payload_budget`], with `overrides` of the environment.
async fn app_with_payload_budget_and(kib: usize, overrides: &[(&str, &str)]) -> TestApp {
    let url = create_database(&shared_server_url()).await;
    let mut settings =
        farol::config::Settings::from_env(&crate::support::app::test_env(&url, overrides)).unwrap();
    settings.http.payload_budget_bytes = kib * 1024;
    let app = crate::support::app::start_with_settings(settings).await;
    app.wait_ready().await;
    app
}

/// A connection that sends a POST head announcing a 1 MiB body, then `sent` bytes of it.
async fn post_part_of_a_body(app: &TestApp, sent: usize) -> TcpStream {
    let mut stream = connect(app).await;
    let mut request = b"POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{\"title\":\"t\",\"body\":\"".to_vec();
    request.resize(request.len() + sent, b'b');
    stream.write_all(&request).await.unwrap();
    stream
}

async fn post_body_of(app: &TestApp, bytes: usize) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/notes"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"title":"t","body":"{}"}}"#, "b".repeat(bytes)))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bodies_are_charged_as_they_arrive_and_past_the_budget_shed_not_buffered() {
    // 3 MiB of budget; bodies are charged twice their size (the bytes and the parse).
    let app = app_with_payload_budget(3 * 1024).await;

    // Announcing a large body takes nothing: only what arrives is charged.
    let _announcers = [
        post_part_of_a_body(&app, 100).await,
        post_part_of_a_body(&app, 100).await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        post_body_of(&app, 9000).await.status(),
        201,
        "announcements hold no budget"
    );

    // Two clients that really sent 760 KiB each hold 3040 KiB of the 3072.
    let holders = [
        post_part_of_a_body(&app, 760 * 1024).await,
        post_part_of_a_body(&app, 760 * 1024).await,
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let shed = post_body_of(&app, 20 * 1024).await;
    assert!(started.elapsed() < Duration::from_secs(1), "shed at once");
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem = assert_problem(shed, 503, "overloaded").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("memory"),
        "{problem}"
    );

    drop(holders);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post_body_of(&app, 9000).await.status(),
        201,
        "the budget is free again"
    );
}

#[tokio::test]
async fn a_request_whose_client_went_away_is_recorded_as_499_and_the_gauge_comes_back() {
    let app = spawn_app_with(&[("CHAOS_ENABLED", "true"), ("CHAOS_LATENCY_MS", "600")]).await;
    for _ in 0..5 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /api/v1/notes HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stream); // gone before the answer
    }
    // the five come back as 499s, and only the scrape itself is in flight
    app.wait_for_metric(
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="499",http_route="/api/v1/notes"}"#,
        5.0,
    )
    .await;
    app.wait_for_metric("http_server_active_requests", 1.0)
        .await;
}

/// A client that leaves half way through its body is a 4xx, never a 499: a 499 counts in
/// the latency SLO and HttpHighLatency (a client that gave up on a slow answer), and one
/// that drips its body for seconds and hangs up would spend that budget and page.
#[tokio::test]
async fn a_client_that_leaves_mid_body_is_a_4xx_not_a_499() {
    let app = spawn_app_with(&[]).await;
    for _ in 0..3 {
        let mut stream = post_part_of_a_body(&app, 100).await;
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stream);
    }
    app.wait_for_metric(
        r#"http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="400",http_route="/api/v1/notes"}"#,
        3.0,
    )
    .await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !text.contains(r#"http_response_status_code="499",http_route="/api/v1/notes""#),
        "{text}"
    );
    app.wait_for_metric("http_server_active_requests", 1.0)
        .await;

    // A body that breaks (a chunk size that is not hexadecimal) is the client's error.
    let answer = exchange(
        &app.address,
        b"POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("malformed-json"), "{answer}");
}

#[tokio::test]
async fn a_large_answer_that_does_not_fit_in_the_payload_budget_is_shed() {
    let app = app_with_payload_budget(150).await;
    for _ in 0..3 {
        app.create_note("large", &"\u{1}".repeat(10_000)).await;
    }
    // three notes of 60 KB of JSON each: 180 KB, past the 150 KiB budget
    let shed = app.get("/api/v1/notes?limit=3").await;
    assert_problem(shed, 503, "overloaded").await;
    // one fits
    assert_eq!(app.get("/api/v1/notes?limit=1").await.status(), 200);
}

/// `/metrics` is scraped when the payload budget is spent: a scrape refused then would
/// page as the service down, and leave monitoring blind when it is needed most. On its own
/// port it is never charged; on the main port, where any client could hold many slow
/// scrapes, one at a time goes past the budget (`budget::tests` shows the second refused).
#[tokio::test]
async fn metrics_are_scraped_whatever_the_payload_budget_holds() {
    for own_port in [true, false] {
        let overrides: &[(&str, &str)] = if own_port {
            &[("METRICS_PORT", "0")]
        } else {
            &[]
        };
        let app = app_with_payload_budget_and(1, overrides).await;
        // requests of many kinds: an exposition larger than any answer the budget charges
        let note = app.create_note("n", "").await;
        let id = note["id"].as_str().unwrap();
        let missing = "/api/v1/notes/00000000-0000-7000-8000-000000000000";
        for path in [
            "/",
            "/health",
            "/api/v1/notes",
            "/api/v1/notes/x",
            missing,
            "/nope",
        ] {
            app.get(path).await;
        }
        app.get(&format!("/api/v1/notes/{id}")).await;
        app.post_json("/api/v1/notes", &json!({"title": ""})).await;
        app.put_json(missing, &json!({"title": "t", "body": ""}))
            .await;
        app.delete(missing).await;
        for method in ["PATCH", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            for path in ["/api/v1/notes", "/nope"] {
                app.client
                    .request(method.clone(), app.url(path))
                    .send()
                    .await
                    .unwrap();
            }
        }

        let base = app
            .metrics_address
            .clone()
            .unwrap_or_else(|| app.address.clone());
        let scrape = app
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(scrape.status(), 200, "own port: {own_port}");
        let size = scrape.text().await.unwrap().len();
        // past the 1 KiB budget, which no answer this large fits
        assert!(
            size >= farol::http::budget::CHARGED_RESPONSE_BYTES,
            "{size} bytes: too small for the budget to have been asked"
        );
    }
}
