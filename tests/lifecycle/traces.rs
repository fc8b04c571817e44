//! Traces over OTLP, to a receiver inside the test: one request is one trace, named alike
//! in its spans, its response and its log line; a collector that is gone or hangs costs
//! the requests nothing and its losses are counted.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};

use crate::support::otlp::{Behaviour, ReceivedSpan, Receiver};
use crate::support::pg::{create_database, free_port, shared_server_url};
use crate::support::process::FarolProcess;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
/// In the note's title: no span may carry a statement's parameters.
const SECRET_TITLE: &str = "parameters-never-reach-a-span";

fn kind(span: &ReceivedSpan) -> SpanKind {
    SpanKind::try_from(span.span.kind).unwrap()
}

/// A runtime for the test's own async parts (the receiver, the client), and a fresh
/// database.
fn runtime_and_database() -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    (rt, url)
}

/// farol on `database`, sending its spans to `endpoint`, ready.
fn spawn_traced(database: &str, endpoint: &str, extra: &[(&str, &str)]) -> FarolProcess {
    let mut env = vec![
        ("DATABASE_URL", database),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
    ];
    env.extend_from_slice(extra);
    let farol = FarolProcess::spawn(&env);
    farol.wait_for_log("ready", Duration::from_secs(10));
    farol
}

/// `GET /health` (a server span and a `health_check` span): its trace id, from the response.
fn health_trace_id(rt: &tokio::runtime::Runtime, farol: &FarolProcess) -> String {
    let response = rt
        .block_on(reqwest::get(format!("{}/health", farol.address)))
        .unwrap();
    assert_eq!(response.status(), 200);
    let traceparent = response.headers()["traceparent"].to_str().unwrap();
    traceparent.split('-').nth(1).unwrap().to_owned()
}

fn a_request_is_one_trace_over(protocol: &str) {
    let (rt, url) = runtime_and_database();
    let receiver = rt.block_on(async {
        match protocol {
            "grpc" => Receiver::grpc().await,
            _ => Receiver::http(Behaviour::Answer).await,
        }
    });
    let farol = spawn_traced(
        &url,
        &receiver.url(),
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "farol-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );

    let response = rt.block_on(
        reqwest::Client::new()
            .post(format!("{}/api/v1/notes", farol.address))
            .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
            .header("x-request-id", "traced-request")
            .json(&json!({"title": SECRET_TITLE, "body": "b"}))
            .send(),
    );
    let response = response.unwrap();
    assert_eq!(response.status(), 201);
    // The response names the trace it joined and the span farol made in it.
    let traceparent = response.headers()["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"));
    let server_span_id = parts[2];
    assert_ne!(server_span_id, CALLER_SPAN_ID);

    let spans =
        rt.block_on(receiver.wait_for(2, Duration::from_secs(10), |s| s.trace_id() == TRACE_ID));
    let server = spans
        .iter()
        .find(|s| kind(s) == SpanKind::Server)
        .expect("a server span");
    assert_eq!(server.span_id(), server_span_id);
    assert_eq!(server.parent_span_id(), CALLER_SPAN_ID);
    assert_eq!(server.span.name, "POST /api/v1/notes");
    assert_eq!(server.service_name.as_deref(), Some("farol-under-test"));
    for (key, value) in [
        ("http.request.method", "POST"),
        ("http.route", "/api/v1/notes"),
        ("url.path", "/api/v1/notes"),
        ("http.response.status_code", "201"),
    ] {
        assert_eq!(server.attribute(key).as_deref(), Some(value), "{key}");
    }
    let database = spans
        .iter()
        .find(|s| kind(s) == SpanKind::Client)
        .expect("a database span");
    assert_eq!(database.parent_span_id(), server_span_id);
    assert_eq!(database.span.name, "insert_note");
    assert_eq!(
        database.attribute("db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        database.attribute("db.operation.name").as_deref(),
        Some("insert_note")
    );
    assert!(
        database.span.start_time_unix_nano >= server.span.start_time_unix_nano
            && database.span.end_time_unix_nano <= server.span.end_time_unix_nano,
        "the database span lies inside the request's"
    );
    let text = format!("{spans:?}");
    assert!(
        !text.contains(SECRET_TITLE),
        "a parameter in a span: {text}"
    );

    // The access log line names the same trace and span.
    let line = farol.wait_for_log("traced-request", Duration::from_secs(5));
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["message"], "request");
    assert_eq!(entry["trace_id"], TRACE_ID);
    assert_eq!(entry["span_id"], server_span_id);

    // So does the exemplar of the latency bucket it fell in, for a scraper that asks
    // for OpenMetrics.
    let (content_type, text) = rt.block_on(metrics(&farol, OPENMETRICS));
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let exemplar = format!("# {{trace_id=\"{TRACE_ID}\",span_id=\"{server_span_id}\"}}");
    let bucket = text
        .lines()
        .find(|line| line.contains(&exemplar))
        .unwrap_or_else(|| panic!("no exemplar {exemplar}: {text}"));
    assert!(
        bucket.starts_with("http_server_request_duration_seconds_bucket{")
            && bucket.contains(r#"http_route="/api/v1/notes""#)
            && bucket.contains(r#"http_response_status_code="201""#),
        "{bucket}"
    );
    assert!(text.ends_with("# EOF\n"));
}

/// What Prometheus asks for: OpenMetrics first, the text format after it.
const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// farol's `/metrics` for a scraper that sends `accept`: the content type and the text.
async fn metrics(farol: &FarolProcess, accept: &str) -> (String, String) {
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", farol.address))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.text().await.unwrap())
}

#[test]
fn without_traces_metrics_stay_in_the_text_format_whatever_the_scraper_asks() {
    let (rt, url) = runtime_and_database();
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url)]);
    let (content_type, text) = rt.block_on(metrics(&farol, OPENMETRICS));
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(!text.contains("# EOF"));
    let health = rt
        .block_on(reqwest::get(format!("{}/health", farol.address)))
        .unwrap();
    assert!(
        health.headers().get("traceparent").is_none(),
        "no trace without traces"
    );
}

#[test]
fn a_request_is_one_trace_in_its_spans_response_and_log_over_http() {
    a_request_is_one_trace_over("http/protobuf");
}

#[test]
fn a_request_is_one_trace_in_its_spans_response_and_log_over_grpc() {
    a_request_is_one_trace_over("grpc");
}

#[test]
fn without_a_traceparent_a_request_starts_its_own_trace() {
    let (rt, url) = runtime_and_database();
    let receiver = rt.block_on(Receiver::http(Behaviour::Answer));
    let farol = spawn_traced(&url, &receiver.url(), &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    let trace_id = health_trace_id(&rt, &farol);
    let spans =
        rt.block_on(receiver.wait_for(2, Duration::from_secs(10), |s| s.trace_id() == trace_id));
    let server = spans.iter().find(|s| kind(s) == SpanKind::Server).unwrap();
    assert!(server.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(server.span.name, "GET /health");
    assert_eq!(server.service_name.as_deref(), Some("farol"));
    let ping = spans.iter().find(|s| kind(s) == SpanKind::Client).unwrap();
    assert_eq!(ping.span.name, "health_check");
    assert_eq!(ping.parent_span_id(), server.span_id());
}

/// Reads a counter of farol's `/metrics`, 0 when absent.
async fn counter(farol: &FarolProcess, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", farol.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for_counter(farol: &FarolProcess, series: &str, limit: Duration) -> f64 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let value = counter(farol, series).await;
        if value > 0.0 {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} stayed at 0 for {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_collector_that_is_gone_costs_the_requests_nothing_and_the_lost_spans_are_counted() {
    let (rt, url) = runtime_and_database();
    // nothing listens there
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let farol = spawn_traced(&url, &endpoint, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 5;
    rt.block_on(async {
        // rounds further apart than a batch's wait: several exports, each failing
        for _ in 0..ROUNDS {
            for _ in 0..PER_ROUND {
                let response = reqwest::get(format!("{}/health", farol.address))
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // every span counted: a server span and a `health_check` span per request (sent
        // one after the other, so none shares another's round trip)
        let all = (ROUNDS * PER_ROUND * 2) as f64;
        let series = r#"farol_trace_spans_dropped_total{reason="export_failed"}"#;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while counter(&farol, series).await < all {
            assert!(std::time::Instant::now() < deadline, "{series} below {all}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(counter(&farol, series).await, all);
        let exported = counter(&farol, "farol_trace_spans_exported_total").await;
        assert_eq!(exported, 0.0);
    });
    // said once, with its cause, not once per batch
    let line = farol.wait_for_log("trace export failed", Duration::from_secs(5));
    assert!(line.contains(&endpoint), "{line}");
    assert!(line.contains("Connection refused"), "the cause: {line}");
    std::thread::sleep(Duration::from_millis(100)); // the log writer's flush interval
    let warnings = farol
        .all_logs()
        .lines()
        .filter(|l| l.contains("trace export failed"))
        .count();
    assert_eq!(warnings, 1, "{}", farol.all_logs());
}

#[test]
fn an_unsampled_caller_and_the_probes_give_no_span() {
    let (rt, url) = runtime_and_database();
    let receiver = rt.block_on(Receiver::http(Behaviour::Answer));
    let farol = spawn_traced(&url, &receiver.url(), &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    let client = reqwest::Client::new();
    let get = |path: &str, traceparent: Option<String>| {
        let mut request = client.get(format!("{}{path}", farol.address));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        rt.block_on(async { request.send().await }).unwrap()
    };
    // the caller decided not to record this trace: farol follows, and says so
    let unsampled = get(
        "/health",
        Some(format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-00")),
    );
    let traceparent = unsampled.headers()["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-00"), "{traceparent}");
    for probe in ["/livez", "/readyz", "/metrics"] {
        let response = get(probe, None);
        assert!(response.headers().get("traceparent").is_none(), "{probe}");
    }
    // a sampled request after them: once its spans are in, anything before would be
    let sampled = get("/health", None);
    let trace_id = sampled.headers()["traceparent"]
        .to_str()
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .to_owned();
    rt.block_on(receiver.wait_for(2, Duration::from_secs(10), |s| s.trace_id() == trace_id));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        receiver.received(),
        2,
        "only the sampled request's two spans"
    );
}

#[test]
fn a_collector_that_hangs_never_holds_a_request_and_a_full_queue_drops_spans() {
    let (rt, url) = runtime_and_database();
    let receiver = rt.block_on(Receiver::http(Behaviour::Hang));
    let farol = spawn_traced(
        &url,
        &receiver.url(),
        &[
            // one export in flight for a minute, a queue of four spans
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ],
    );
    rt.block_on(async {
        // Far more spans than the queue holds, all while the first export hangs. Were a
        // request to wait for room in the queue, these would wait for the export's
        // minute; the bound below is a fraction of it.
        let requests = async {
            for _ in 0..50 {
                let response = reqwest::get(format!("{}/health", farol.address))
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), requests)
            .await
            .expect("requests answered while the collector hangs");
        let dropped = wait_for_counter(
            &farol,
            r#"farol_trace_spans_dropped_total{reason="queue_full"}"#,
            Duration::from_secs(10),
        )
        .await;
        // 100 spans made; at most the queue and one batch are held
        assert!(dropped >= 100.0 - 4.0 - 2.0, "{dropped}");
    });
    assert!(
        receiver.received() <= 2,
        "{} spans received",
        receiver.received()
    );
}

#[test]
fn the_spans_still_queued_at_sigterm_are_sent_before_exit() {
    let (rt, url) = runtime_and_database();
    let receiver = rt.block_on(Receiver::http(Behaviour::Answer));
    // a batch would wait a minute to fill: only the exit sends it
    let mut farol = spawn_traced(
        &url,
        &receiver.url(),
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    );
    let trace_id = health_trace_id(&rt, &farol);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(receiver.received(), 0, "nothing sent before the exit");
    farol.signal(libc::SIGTERM);
    assert_eq!(farol.wait_exit(Duration::from_secs(15)), 0);
    let spans =
        rt.block_on(receiver.wait_for(2, Duration::from_secs(1), |s| s.trace_id() == trace_id));
    assert_eq!(spans.len(), 2);
}
