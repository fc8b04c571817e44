//! Load shedding, the request timeout, fault injection and panics.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use farol::state::AppState;

use crate::support::app::{assert_problem, spawn_app_with};

#[tokio::test]
async fn requests_beyond_the_limit_are_shed_at_once_and_probes_are_not() {
    // Two slots, each held 800 ms by injected latency.
    let app = spawn_app_with(&[
        ("MAX_CONCURRENT_REQUESTS", "2"),
        ("CHAOS_ENABLED", "true"),
        ("CHAOS_LATENCY_MS", "800"),
    ])
    .await;
    let started = Instant::now();
    let requests = (0..6).map(|_| {
        let (client, url) = (app.client.clone(), app.url("/api/v1/notes"));
        tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            (response, started.elapsed())
        })
    });
    let requests: Vec<_> = requests.collect();
    // both permits taken (the scrape is the third request in flight)
    app.wait_for_metric("http_server_active_requests", 3.0)
        .await;
    for probe in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(app.get(probe).await.status(), 200, "{probe} is never shed");
    }

    let (mut served, mut shed) = (0, 0);
    for request in requests {
        let (response, elapsed) = request.await.unwrap();
        if response.status() == 200 {
            served += 1;
        } else {
            assert!(
                elapsed < Duration::from_millis(600),
                "shed at once, not queued: {elapsed:?}"
            );
            assert_eq!(response.headers()["retry-after"], "1");
            assert_problem(response, 503, "overloaded").await;
            shed += 1;
        }
    }
    assert_eq!((served, shed), (2, 4));
}

#[tokio::test]
async fn a_request_past_the_timeout_is_a_503_problem() {
    let app = spawn_app_with(&[
        ("REQUEST_TIMEOUT_MS", "200"),
        ("DB_QUERY_TIMEOUT_MS", "50"),
        ("CHAOS_ENABLED", "true"),
        ("CHAOS_LATENCY_MS", "3000"),
    ])
    .await;
    let started = Instant::now();
    let response = app.get("/api/v1/notes").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_problem(response, 503, "timeout").await;
}

#[tokio::test]
async fn injected_errors_hit_the_api_only() {
    let app = spawn_app_with(&[("CHAOS_ENABLED", "true"), ("CHAOS_ERROR_RATE", "1")]).await;
    assert_problem(app.get("/api/v1/notes").await, 500, "injected-fault").await;
    for path in ["/", "/health", "/livez", "/readyz", "/metrics", "/version"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_partial_error_rate_fails_about_that_share() {
    let app = spawn_app_with(&[("CHAOS_ENABLED", "true"), ("CHAOS_ERROR_RATE", "0.5")]).await;
    let mut failed = 0;
    for _ in 0..200 {
        if app.get("/api/v1/notes").await.status() == 500 {
            failed += 1;
        }
    }
    // Binomial(200, 0.5): outside 60..140 has a probability below 1e-8.
    assert!((60..140).contains(&failed), "{failed} of 200");
}

#[tokio::test]
async fn chaos_settings_do_nothing_unless_enabled_at_start() {
    let app = spawn_app_with(&[("CHAOS_ERROR_RATE", "1"), ("CHAOS_LATENCY_MS", "5000")]).await;
    let started = Instant::now();
    assert_eq!(app.get("/api/v1/notes").await.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_panicking_handler_answers_a_500_problem_and_the_service_lives_on() {
    let app = spawn_app_with(&[]).await;
    async fn boom() -> &'static str {
        panic!("a bug")
    }
    let routes: Router<AppState> = Router::new().route("/boom", get(boom));
    let observed = farol::routes::with_middleware(
        routes,
        farol::routes::Routes::new(["/boom"]),
        app.state.clone(),
    );
    let router = Router::new().fallback_service(observed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let response = app
        .client
        .get(format!("{address}/boom"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 500, "internal").await;
    assert!(
        !problem.to_string().contains("a bug"),
        "the cause is logged, not sent"
    );
    let again = app
        .client
        .get(format!("{address}/boom"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 500, "still serving after a panic");
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn a_client_dripping_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[]).await;
    let connect = || tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"));
    // beside it, a connection that never sends a byte (it owes its first request, as the
    // dripping one does), and one answered once, then idle (a keep-alive connection)
    let mut silent = connect().await.unwrap();
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(br#"{"status":"ok"}"#) {
        let mut chunk = [0u8; 1024];
        let n = idle.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before its answer: {answer:?}");
        answer.extend_from_slice(&chunk[..n]);
    }
    let mut stream = connect().await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server never closed the connection");
    let waited = started.elapsed();
    assert!(
        waited >= farol::http::server::HEADER_READ_TIMEOUT - Duration::from_millis(500),
        "not before the timeout: {waited:?}"
    );
    // the dripping and the silent connection are cut off at the head's deadline; the
    // one answered and then idle is closed at the same deadline, as idle
    for other in [&mut silent, &mut idle] {
        let mut nothing = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut nothing)).await;
        assert!(closed.is_ok(), "a connection beside it was never closed");
    }
    let head_timeouts = r#"farol_http_connections_cut_total{reason="head_timeout"}"#;
    app.wait_for_metric(head_timeouts, 2.0).await;
    // the test client's own keep-alive connection may have idled out too
    let idle_timeouts = r#"farol_http_connections_cut_total{reason="idle_timeout"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric(idle_timeouts).await.unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the idle connection was not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.metric(head_timeouts).await, Some(2.0));
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn a_client_that_drips_its_body_gets_a_408_not_a_503_against_the_error_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[
        ("REQUEST_TIMEOUT_MS", "300"),
        ("DB_QUERY_TIMEOUT_MS", "100"),
    ])
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"title\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed: the rest of the body will not be read")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("body-timeout"),
        "{answer}"
    );
    assert!(!answer.contains("retry-after"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");

    // measured as the client's failure: a 4xx, which the availability SLO leaves out
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with(
            "http_server_request_duration_seconds_count{http_request_method=\"POST\",\
             http_response_status_code=\"408\",http_route=\"/api/v1/notes\"}"
        )),
        "{metrics}"
    );
}
