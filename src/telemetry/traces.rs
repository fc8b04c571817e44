//! Traces: OpenTelemetry spans for requests and database operations, sent over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (docs/tracing.md). Unset, nothing here runs.
//!
//! The export is bounded: ended spans wait in a queue of `OTEL_BSP_MAX_QUEUE_SIZE`; one
//! task sends them in batches, one export at a time, each within its timeout. A span that
//! finds the queue full, or whose export failed, is dropped and counted
//! (`farol_trace_spans_dropped_total`): a collector that is down or slow costs memory up
//! to the queue's bound and never a request's time. The SDK's own batch processor drops
//! too, but counts only for a log line at shutdown.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::traces::{OtlpProtocol, RootSampler, SamplerChoice, TraceSettings};

/// What the rest of the service holds: a tracer (cheap to clone) and the W3C trace
/// context propagator.
#[derive(Clone, Debug)]
pub struct Tracer {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// The export's counters, registered with the service's other metrics.
#[derive(Clone)]
pub struct ExportCounters {
    pub exported: IntCounter,
    /// label `reason`: `queue_full` or `export_failed`
    pub dropped: IntCounterVec,
}

/// The running export: the tracer to hand out, and the way to stop it.
pub struct Traces {
    tracer: Tracer,
    provider: SdkTracerProvider,
    close: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter for {endpoint}: {source}")]
pub struct TracesError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

impl Traces {
    /// Builds the exporter and starts its task. Needs a Tokio runtime.
    pub fn start(settings: &TraceSettings, counters: ExportCounters) -> Result<Self, TracesError> {
        let error = |source| TracesError {
            endpoint: settings.endpoint.clone(),
            source,
        };
        let mut exporter = match settings.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&settings.endpoint)
                .with_timeout(settings.export_timeout)
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(&settings.endpoint)
                .with_timeout(settings.export_timeout)
                .build(),
        }
        .map_err(error)?;
        let resource = Resource::builder_empty()
            .with_attributes(
                settings
                    .resource
                    .iter()
                    .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
            )
            .build();
        exporter.set_resource(&resource);
        let (queue, received) = mpsc::channel(settings.queue_size);
        let (close, closing) = oneshot::channel();
        let task = tokio::spawn(export_loop(
            received,
            closing,
            exporter,
            Batching {
                size: settings.batch_size,
                delay: settings.schedule_delay,
                timeout: settings.export_timeout,
            },
            counters.clone(),
        ));
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler(settings.sampler))
            .with_span_processor(BoundedQueue {
                queue,
                queue_full: counters.dropped.with_label_values(&["queue_full"]),
            })
            .build();
        Ok(Self {
            tracer: Tracer {
                tracer: provider.tracer("farol"),
                propagator: TraceContextPropagator::new(),
            },
            provider,
            close: Some(close),
            task,
        })
    }

    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }

    /// Sends what is queued, within `timeout`, then stops. Spans ended after this are
    /// dropped.
    pub async fn shutdown(mut self, timeout: Duration) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            self.task.abort();
            tracing::warn!("the last spans were not exported within the shutdown timeout");
        }
        let _ = self.provider.shutdown();
    }
}

fn sampler(choice: SamplerChoice) -> Sampler {
    let root = |root: RootSampler| match root {
        RootSampler::AlwaysOn => Sampler::AlwaysOn,
        RootSampler::AlwaysOff => Sampler::AlwaysOff,
        RootSampler::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    match choice {
        SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
        SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
        SamplerChoice::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        SamplerChoice::ParentBased(inner) => Sampler::ParentBased(Box::new(root(inner))),
    }
}

impl Tracer {
    /// The server span of a request: a child of the caller's trace when the request
    /// carries a valid `traceparent`, else the root of a new one. Named after the route
    /// template (never the path, which holds ids), as the HTTP conventions say.
    pub fn server_span(
        &self,
        headers: &axum::http::HeaderMap,
        method: &'static str,
        route: &str,
        path: &str,
    ) -> Context {
        let parent = self.propagator.extract(&Headers(headers));
        let span = self
            .tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("url.scheme", "http"),
            ])
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// A database operation's client span, a child of the current request's span; none
    /// outside a request (the readiness checks would otherwise start a trace of their
    /// own every few seconds).
    pub fn client_span(&self, operation: &'static str) -> Option<Context> {
        let parent = Context::current();
        if !parent.has_active_span() {
            return None;
        }
        let span = self
            .tracer
            .span_builder(operation)
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.operation.name", operation),
            ])
            .start_with_context(&self.tracer, &parent);
        Some(parent.with_span(span))
    }
}

/// Ends a server span with the status the client got: an error for 5xx only (a 4xx is
/// the client's mistake, not the server's failure).
pub fn end_server_span(cx: &Context, status: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_attribute(KeyValue::new("error.type", status.to_string()));
        span.set_status(Status::error(""));
    }
    span.end();
}

/// Ends a client span; `error` is the kind of failure, from a fixed vocabulary.
pub fn end_client_span(cx: &Context, error: Option<&'static str>) {
    let span = cx.span();
    if let Some(kind) = error {
        span.set_attribute(KeyValue::new("error.type", kind));
        span.set_status(Status::error(""));
    }
    span.end();
}

/// The W3C header that carries a trace from service to service.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` header value that names the span of `cx`.
pub fn traceparent(cx: &Context) -> Option<axum::http::HeaderValue> {
    let mut out = Traceparent(None);
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out.0
}

/// The trace and span ids of `cx`'s span, as lowercase hex, when it has a valid one.
pub fn ids(cx: &Context) -> Option<(String, String)> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

struct Traceparent(Option<axum::http::HeaderValue>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = axum::http::HeaderValue::try_from(value).ok();
        }
    }
}

/// Hands ended spans to the export task without ever waiting.
#[derive(Debug)]
struct BoundedQueue {
    queue: mpsc::Sender<SpanData>,
    queue_full: IntCounter,
}

impl SpanProcessor for BoundedQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.queue_full.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

struct Batching {
    size: usize,
    delay: Duration,
    timeout: Duration,
}

/// Sends batches of up to `size` spans, each as soon as it is full or its first span has
/// waited `delay`; on close, what is queued, then stops.
async fn export_loop(
    mut queue: mpsc::Receiver<SpanData>,
    mut closing: oneshot::Receiver<()>,
    exporter: opentelemetry_otlp::SpanExporter,
    batching: Batching,
    counters: ExportCounters,
) {
    let failed = counters.dropped.with_label_values(&["export_failed"]);
    let mut failing = false;
    let mut batch = Vec::with_capacity(batching.size);
    loop {
        let mut closed = tokio::select! {
            received = queue.recv_many(&mut batch, batching.size) => received == 0,
            _ = &mut closing => true,
        };
        let deadline = tokio::time::Instant::now() + batching.delay;
        while !closed && batch.len() < batching.size {
            let wanted = batching.size - batch.len();
            tokio::select! {
                received = queue.recv_many(&mut batch, wanted) => closed = received == 0,
                () = tokio::time::sleep_until(deadline) => break,
                // the exit does not wait for a batch to fill
                _ = &mut closing => closed = true,
            }
        }
        if closed {
            queue.close();
            while let Ok(span) = queue.try_recv() {
                batch.push(span);
            }
        }
        // more than one batch only when draining at close
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(batching.size));
            let chunk = std::mem::replace(&mut batch, rest);
            let spans = chunk.len() as u64;
            let result = tokio::time::timeout(batching.timeout, exporter.export(chunk)).await;
            match result {
                Ok(Ok(())) => {
                    counters.exported.inc_by(spans);
                    if failing {
                        tracing::info!("trace export works again");
                        failing = false;
                    }
                }
                Ok(Err(error)) => {
                    failed.inc_by(spans);
                    if !failing {
                        // once per failing streak: a collector that is down would
                        // otherwise log a line per batch
                        tracing::warn!(%error, "trace export failed; spans are dropped until it works again");
                        failing = true;
                    }
                }
                Err(_) => {
                    failed.inc_by(spans);
                    if !failing {
                        tracing::warn!(
                            timeout_ms = batching.timeout.as_millis() as u64,
                            "trace export timed out; spans are dropped until it works again"
                        );
                        failing = true;
                    }
                }
            }
        }
        if closed {
            let _ = exporter.shutdown();
            return;
        }
    }
}
