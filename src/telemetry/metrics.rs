//! The Prometheus metrics of DESIGN.md section 4, with OpenTelemetry semantic-convention
//! names. Each [`Metrics`] has its own registry, so that several instances (tests) never
//! mix their figures.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

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
    pub db_connections: IntGaugeVec,
    pub db_connections_max: IntGauge,
    pub db_duration: HistogramVec,
}

impl Metrics {
    pub fn new(version: &str, commit: &str) -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        )
        .expect("valid metric");
        let http_active = IntGauge::new(
            "http_server_active_requests",
            "Number of active HTTP server requests.",
        )
        .expect("valid metric");
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
        let build_info = IntGaugeVec::new(
            Opts::new("farol_build_info", "The running build: always 1."),
            &["version", "commit"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[version, commit]).set(1);

        for collector in [
            Box::new(http_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_active.clone()),
            Box::new(db_connections.clone()),
            Box::new(db_connections_max.clone()),
            Box::new(db_duration.clone()),
            Box::new(build_info),
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
            db_connections,
            db_connections_max,
            db_duration,
        }
    }

    /// Records one finished request.
    pub fn observe_request(&self, method: &str, route: &str, status: &str, seconds: f64) {
        self.http_duration
            .with_label_values(&[method, route, status])
            .observe(seconds);
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to memory does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}
