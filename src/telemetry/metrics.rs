//! The service's Prometheus metrics (docs/service.md lists them), with OpenTelemetry
//! semantic-convention names. Each [`Metrics`] has its own registry, so that several instances (tests) never
//! mix their figures.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::Method;
use prometheus::proto::LabelPair;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::openmetrics::{self, Exemplar};
use super::traces::{ExportCounters, SpanIds};

/// The `http_request_method` label: the method if it is one of the standard ones, else
/// `_OTHER`, as the OpenTelemetry HTTP conventions say. hyper accepts any token as a
/// method, and a label value taken from the client would let anyone add series (and
/// memory) at will.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Database operations are mostly sub-millisecond: finer buckets at the low end.
const DB_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub http_duration: HistogramVec,
    pub http_active: IntGauge,
    /// The main port's connections: open, the bound on them, and those cut off at a
    /// bound (`http::server`).
    pub http_connections_open: IntGauge,
    pub http_connections_max: IntGauge,
    pub http_connections_cut: IntCounterVec,
    pub db_connections: IntGaugeVec,
    pub db_connections_max: IntGauge,
    pub db_duration: HistogramVec,
    /// Statements farol stopped waiting for, by what became of them (`db::abandon`).
    pub db_abandoned: IntCounterVec,
    /// Creates of notes waiting for an insert statement (`notes::batch`).
    pub note_inserts_queued: IntGauge,
    /// The trace export's counters: zero while traces are off.
    pub traces: ExportCounters,
    latency_exemplars: LatencyExemplars,
}

const HTTP_DURATION: &str = "http_server_request_duration_seconds";
const HTTP_DURATION_LABELS: [&str; 3] = [
    "http_request_method",
    "http_route",
    "http_response_status_code",
];

/// The latest sampled trace of each bucket of each series of the latency histogram.
/// Bounded as the histogram is: its labels are bounded, and each series keeps one
/// exemplar per bucket.
#[derive(Default)]
struct LatencyExemplars(Mutex<HashMap<String, [Option<Exemplar>; HTTP_BUCKETS.len() + 1]>>);

impl LatencyExemplars {
    fn key(method: &str, route: &str, status: &str) -> String {
        // a separator no label value here can hold
        format!("{method}\n{route}\n{status}")
    }

    fn record(&self, key: String, seconds: f64, ids: &SpanIds) {
        let bucket = HTTP_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(HTTP_BUCKETS.len());
        let mut series = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // taken under the lock: of two requests racing for one bucket, the one stored
        // last is the newer, and Prometheus refuses an exemplar older than the last
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        series.entry(key).or_default()[bucket] = Some(Exemplar {
            trace_id: ids.trace_id.clone(),
            span_id: ids.span_id.clone(),
            value: seconds,
            timestamp,
        });
    }

    fn get(&self, labels: &[LabelPair], bucket: usize) -> Option<Exemplar> {
        let value = |name: &str| {
            labels
                .iter()
                .find(|pair| pair.name() == name)
                .map_or("", LabelPair::value)
        };
        let [method, route, status] = HTTP_DURATION_LABELS.map(value);
        let series = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        series
            .get(&Self::key(method, route, status))?
            .get(bucket)?
            .clone()
    }
}

impl Metrics {
    pub fn new(version: &str, commit: &str) -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(HTTP_DURATION, "Duration of HTTP server requests.")
                .buckets(HTTP_BUCKETS.to_vec()),
            &HTTP_DURATION_LABELS,
        )
        .expect("valid metric");
        let http_active = IntGauge::new(
            "http_server_active_requests",
            "Number of active HTTP server requests.",
        )
        .expect("valid metric");
        let http_connections_open = IntGauge::new(
            "farol_http_connections_open",
            "Open client connections on the main port.",
        )
        .expect("valid metric");
        let http_connections_max = IntGauge::new(
            "farol_http_connections_max",
            "The most client connections the main port keeps open (MAX_CONNECTIONS); past it, new ones wait in the listen backlog while the oldest idle one is closed to make room.",
        )
        .expect("valid metric");
        let http_connections_cut = IntCounterVec::new(
            Opts::new(
                "farol_http_connections_cut_total",
                "Client connections closed at a bound: no whole request head in time on a connection never answered or with part of its next head received (head_timeout), or idle after an answer (idle_timeout); a head too large, answered 431 (head_too_large); an answer not read in time (write_timeout); the oldest keep-alive connection with nothing of a next request received, closed (at once if idle, else after the answer it is writing) to let in one waiting past MAX_CONNECTIONS (make_room).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in crate::http::server::CutReason::ALL.iter() {
            http_connections_cut.with_label_values(&[reason.label()]);
        }
        let db_connections = IntGaugeVec::new(
            Opts::new(
                "db_client_connection_count",
                "The number of connections that are currently in the state described by the state label.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let db_connections_max = IntGauge::new(
            "db_client_connection_max",
            "The maximum number of open connections allowed.",
        )
        .expect("valid metric");
        let db_duration = HistogramVec::new(
            HistogramOpts::new(
                "db_client_operation_duration_seconds",
                "Duration of database client operations, waiting for a connection included.",
            )
            .buckets(DB_BUCKETS.to_vec()),
            &["db_operation_name"],
        )
        .expect("valid metric");
        let db_abandoned = IntCounterVec::new(
            Opts::new(
                "farol_db_abandoned_statements_total",
                "Statements farol stopped waiting for (a timeout, a client gone): ended by themselves within 500 ms, their connection kept (ended), or then cancelled and ended (cancelled), the cancel failed (not_cancelled), or cancelled but still running when farol closed their connection (still_running).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in crate::db::ABANDONED_OUTCOMES {
            db_abandoned.with_label_values(&[outcome]);
        }
        let note_inserts_queued = IntGauge::new(
            "farol_note_inserts_queued",
            "Creates of notes queued for an insert statement (those of departed clients included until pruned).",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new("farol_build_info", "The running build: always 1."),
            &["version", "commit"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[version, commit]).set(1);
        let spans_exported = IntCounter::new(
            "farol_trace_spans_exported_total",
            "Spans the collector accepted.",
        )
        .expect("valid metric");
        let spans_dropped = IntCounterVec::new(
            Opts::new(
                "farol_trace_spans_dropped_total",
                "Spans dropped: the export queue was full (queue_full) or their export failed (export_failed).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["queue_full", "export_failed"] {
            spans_dropped.with_label_values(&[reason]);
        }

        for collector in [
            Box::new(http_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_active.clone()),
            Box::new(http_connections_open.clone()),
            Box::new(http_connections_max.clone()),
            Box::new(http_connections_cut.clone()),
            Box::new(db_connections.clone()),
            Box::new(db_connections_max.clone()),
            Box::new(db_duration.clone()),
            Box::new(db_abandoned.clone()),
            Box::new(note_inserts_queued.clone()),
            Box::new(build_info),
            Box::new(spans_exported.clone()),
            Box::new(spans_dropped.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            http_duration,
            http_active,
            http_connections_open,
            http_connections_max,
            http_connections_cut,
            db_connections,
            db_connections_max,
            db_duration,
            db_abandoned,
            note_inserts_queued,
            traces: ExportCounters {
                exported: spans_exported,
                dropped: spans_dropped,
            },
            latency_exemplars: LatencyExemplars::default(),
        }
    }

    /// Records one finished request. Every label is bounded: the method is one of the
    /// standard ones or `_OTHER`, the route a template of ours, the status a code we sent.
    /// A sampled trace's ids become the exemplar of the bucket the request fell in.
    pub fn observe_request(
        &self,
        method: &Method,
        route: &str,
        status: u16,
        seconds: f64,
        trace: Option<&SpanIds>,
    ) {
        let method = method_label(method);
        let mut status_text = itoa::Buffer::new();
        let status = status_text.format(status);
        self.http_duration
            .with_label_values(&[method, route, status])
            .observe(seconds);
        if let Some(ids) = trace.filter(|ids| ids.sampled) {
            let key = LatencyExemplars::key(method, route, status);
            self.latency_exemplars.record(key, seconds, ids);
        }
    }

    /// Sets the pool gauges from a snapshot taken at scrape time.
    pub fn set_pool(&self, idle: usize, used: usize, max: usize) {
        self.db_connections
            .with_label_values(&["idle"])
            .set(idle as i64);
        self.db_connections
            .with_label_values(&["used"])
            .set(used as i64);
        self.db_connections_max.set(max as i64);
    }

    /// The OpenMetrics exposition, with the latency histogram's exemplars.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        openmetrics::write(&mut out, &self.registry.gather(), |name, labels, bucket| {
            (name == HTTP_DURATION)
                .then(|| self.latency_exemplars.get(labels, bucket))
                .flatten()
        })
        .expect("writing to a String does not fail");
        out
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to memory does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_name_and_every_other_token_is_other() {
        for standard in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
        ] {
            let method = Method::from_bytes(standard.as_bytes()).unwrap();
            assert_eq!(method_label(&method), standard);
        }
        for made_up in ["M00001", "get", "PROPFIND", "BREW"] {
            let method = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "_OTHER", "{made_up}");
        }
    }

    fn ids(trace: char, sampled: bool) -> SpanIds {
        SpanIds {
            trace_id: trace.to_string().repeat(32),
            span_id: "b".repeat(16),
            sampled,
        }
    }

    #[test]
    fn a_sampled_request_is_the_exemplar_of_its_bucket_in_openmetrics_only() {
        let metrics = Metrics::new("v", "c");
        let route = "/api/v1/notes";
        metrics.observe_request(&Method::POST, route, 201, 0.03, Some(&ids('a', true)));
        // an unsampled trace was never recorded: no exemplar may point at it
        metrics.observe_request(&Method::POST, route, 201, 0.2, Some(&ids('c', false)));
        metrics.observe_request(&Method::POST, route, 201, 30.0, Some(&ids('d', true)));
        let text = metrics.render_openmetrics();
        let bucket = |le: &str| {
            let prefix = format!(
                "http_server_request_duration_seconds_bucket{{http_request_method=\"POST\",http_response_status_code=\"201\",http_route=\"{route}\",le=\"{le}\"}}"
            );
            text.lines()
                .find(|line| line.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
                .to_owned()
        };
        let line = bucket("0.05");
        let (sample, exemplar) = line.split_once(" # ").expect("an exemplar");
        assert!(sample.ends_with(" 1"), "{line}");
        let a = "a".repeat(32);
        let b = "b".repeat(16);
        assert!(
            exemplar.starts_with(&format!("{{trace_id=\"{a}\",span_id=\"{b}\"}} 0.03 ")),
            "{line}"
        );
        assert!(!bucket("0.025").contains(" # "), "below its bucket: none");
        assert!(!bucket("0.25").contains(" # "), "unsampled: none");
        assert!(
            bucket("+Inf").contains(&"d".repeat(32)),
            "past the last bound: +Inf"
        );
        assert!(text.ends_with("# EOF\n"));
        // counters: the family without _total, the sample with it
        assert!(text.contains("# TYPE farol_trace_spans_exported counter\n"));
        assert!(text.contains("\nfarol_trace_spans_exported_total 0\n"));
        // the classic text format has no exemplars
        assert!(!metrics.render().contains(&a));
    }

    /// Every sample line's series (`name{labels}`), whichever exposition.
    fn series(text: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let sample = line.split(" # ").next().unwrap_or(line);
                sample
                    .rsplit_once(' ')
                    .map_or(sample, |(series, _)| series)
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn both_expositions_name_the_same_series() {
        let metrics = Metrics::new("v", "c");
        metrics.observe_request(&Method::GET, "/", 200, 0.001, Some(&ids('a', true)));
        metrics.observe_request(&Method::POST, "/api/v1/notes", 503, 2.0, None);
        metrics
            .traces
            .dropped
            .with_label_values(&["queue_full"])
            .inc();
        metrics.set_pool(1, 2, 16);
        let text = series(&metrics.render());
        let open = series(&metrics.render_openmetrics());
        assert!(text.len() > 40, "{text:?}");
        assert_eq!(text, open);
    }

    #[test]
    fn every_counter_is_named_with_total() {
        // OpenMetrics names a counter's samples NAME_total: one named otherwise would be
        // left out of that exposition, and every rule on it would go blind
        let metrics = Metrics::new("v", "c");
        for family in metrics.registry.gather() {
            if family.get_field_type() == prometheus::proto::MetricType::COUNTER {
                assert!(family.name().ends_with("_total"), "{}", family.name());
            }
        }
    }

    #[test]
    fn made_up_methods_add_no_series() {
        let metrics = Metrics::new("v", "c");
        for n in 0..500 {
            let method = Method::from_bytes(format!("M{n:05}").as_bytes()).unwrap();
            metrics.observe_request(&method, "/livez", 200, 0.001, None);
        }
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
            .count();
        assert_eq!(series, 1, "{text}");
        assert!(text.contains(r#"http_request_method="_OTHER""#));
    }
}
