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

use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use prometheus::{IntCounter, IntCounterVec};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error_chain;
use crate::config::traces::{OtlpProtocol, RootSampler, SamplerChoice, TraceSettings};

/// What the rest of the service holds: a tracer (cheap to clone) and the W3C trace
/// context propagator.
#[derive(Clone, Debug)]
pub struct Tracer {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    /// Whether an incoming `traceparent` is continued (`OTEL_PROPAGATORS`).
    continue_incoming: bool,
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
        let last_failure = LastFailure::default();
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
                .with_http_client(ExplainedHttp {
                    inner: HyperClient::with_default_connector(settings.export_timeout, None),
                    last_failure: last_failure.clone(),
                })
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
                endpoint: settings.endpoint.clone(),
                last_failure,
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
                continue_incoming: settings.continue_incoming,
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
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the trace export task failed"),
            Err(_) => {
                self.task.abort();
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "the last spans were not exported in time and are lost"
                );
            }
        }
        // the processors' shutdown says "use Traces::shutdown": that is this
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
    /// carries a valid `traceparent` (and incoming traces are continued), else the root
    /// of a new one. Named after the route template (never the path, which holds ids),
    /// as the HTTP conventions say; what the client sent is bounded before it is kept.
    pub fn server_span(
        &self,
        headers: &axum::http::HeaderMap,
        method: &'static str,
        route: Option<&str>,
        path: &str,
    ) -> Context {
        let parent = if self.continue_incoming {
            self.propagator.extract(&Headers(headers))
        } else {
            Context::new()
        };
        // The conventions' names: `{method} {route}`, the method alone without a route,
        // `HTTP` for a method outside the standard ones.
        let name = match (method, route) {
            ("_OTHER", _) => "HTTP".to_owned(),
            (method, Some(route)) => format!("{method} {route}"),
            (method, None) => method.to_owned(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", bounded(path, MAX_PATH_BYTES)),
            KeyValue::new("url.scheme", "http"),
        ];
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// A database operation's client span, a child of the current request's span; none
    /// outside a request (the readiness checks would otherwise start a trace of their
    /// own every few seconds).
    pub fn client_span(&self, operation: &'static str) -> Option<ClientSpan> {
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
        Some(ClientSpan(Some(parent.with_span(span))))
    }
}

/// `work` in the trace of `context`, when there is one: for work a request hands to a
/// task of its own.
pub async fn in_context<T>(context: Option<Context>, work: impl Future<Output = T>) -> T {
    match context {
        Some(context) => work.with_context(context).await,
        None => work.await,
    }
}

/// A database operation's span. Ended by [`ClientSpan::end`] with the outcome; dropped
/// unended, its operation was abandoned (the request timed out or its client went away),
/// and it says so rather than pass for a success.
pub struct ClientSpan(Option<Context>);

impl ClientSpan {
    /// `error` is the kind of failure, from a fixed vocabulary.
    pub fn end(mut self, error: Option<&'static str>) {
        if let Some(cx) = self.0.take() {
            end_client_span(&cx, error);
        }
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        if let Some(cx) = self.0.take() {
            end_client_span(&cx, Some("cancelled"));
        }
    }
}

/// What a span keeps of the request path: enough to recognise it; a head may hold
/// tens of KiB of path, and every queued span would keep its copy.
const MAX_PATH_BYTES: usize = 256;

/// A `tracestate` longer than this is not continued: W3C's 32 members of up to 256
/// characters each would otherwise be copied into every span of the request.
const MAX_TRACESTATE_BYTES: usize = 512;

fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
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

fn end_client_span(cx: &Context, error: Option<&'static str>) {
    let span = cx.span();
    if let Some(kind) = error {
        span.set_attribute(KeyValue::new("error.type", kind));
        span.set_status(Status::error(""));
    }
    span.end();
}

/// The W3C header that carries a trace from service to service.
pub const TRACEPARENT: axum::http::HeaderName = axum::http::HeaderName::from_static("traceparent");

/// The `traceparent` header value that names the span of `cx` (its `tracestate` is not
/// sent back: the client has it).
pub fn traceparent(cx: &Context) -> Option<axum::http::HeaderValue> {
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return None;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    axum::http::HeaderValue::try_from(value).ok()
}

/// The ids of a span, as lowercase hex, and whether its trace is sampled (recorded and
/// sent: only then can an exemplar point at it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
    pub sampled: bool,
}

/// The ids of `cx`'s span, when it has a valid one.
pub fn ids(cx: &Context) -> Option<SpanIds> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| SpanIds {
        trace_id: context.trace_id().to_string(),
        span_id: context.span_id().to_string(),
        sampled: context.is_sampled(),
    })
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key).and_then(|v| v.to_str().ok())?;
        (key != "tracestate" || value.len() <= MAX_TRACESTATE_BYTES).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// The cause of the HTTP exporter's last failure: the exporter reduces a transport error
/// to "network error" and keeps the rest for its own debug log, which is not compiled in.
#[derive(Clone, Debug, Default)]
struct LastFailure(Arc<Mutex<Option<String>>>);

impl LastFailure {
    fn set(&self, cause: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cause);
    }

    fn take(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// hyper's client for the HTTP exporter, noting why an export failed.
#[derive(Debug)]
struct ExplainedHttp {
    inner: HyperClient,
    last_failure: LastFailure,
}

#[async_trait::async_trait]
impl HttpClient for ExplainedHttp {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<Bytes>,
    ) -> Result<opentelemetry_http::Response<Bytes>, HttpError> {
        let result = self.inner.send_bytes(request).await;
        match &result {
            Err(error) => self.last_failure.set(error_chain(error.as_ref())),
            // the status only: a gateway's error body may echo the request's headers,
            // a token among them
            Ok(response) if !response.status().is_success() => self
                .last_failure
                .set(format!("the collector answered {}", response.status())),
            Ok(_) => {}
        }
        result
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

    // The export task is flushed and stopped by `Traces::shutdown`, which owns it: a
    // caller of these would otherwise believe its spans sent.
    fn force_flush(&self) -> OTelSdkResult {
        Err(OTelSdkError::InternalFailure(
            "flushed by Traces::shutdown only".into(),
        ))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Err(OTelSdkError::InternalFailure(
            "stopped by Traces::shutdown only".into(),
        ))
    }
}

struct Batching {
    /// The collector, for the log lines that say it fails.
    endpoint: String,
    last_failure: LastFailure,
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
            // a cause left from an earlier failure is not this one's
            batching.last_failure.take();
            let result = tokio::time::timeout(batching.timeout, exporter.export(chunk)).await;
            match result {
                Ok(Ok(())) => {
                    counters.exported.inc_by(spans);
                    if failing {
                        tracing::info!(endpoint = batching.endpoint, "trace export works again");
                        failing = false;
                    }
                }
                Ok(Err(error)) => {
                    failed.inc_by(spans);
                    if !failing {
                        // once per failing streak: a collector that is down would
                        // otherwise log a line per batch
                        let cause = batching.last_failure.take();
                        tracing::warn!(
                            %error,
                            cause = cause.as_deref().unwrap_or("(the exporter's error says it all)"),
                            endpoint = batching.endpoint,
                            "trace export failed; spans are dropped until it works again"
                        );
                        failing = true;
                    }
                }
                Err(_) => {
                    failed.inc_by(spans);
                    if !failing {
                        tracing::warn!(
                            endpoint = batching.endpoint,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_path_is_cut_at_a_character_boundary() {
        assert_eq!(bounded("/api/v1/notes", MAX_PATH_BYTES), "/api/v1/notes");
        let long = format!("/{}", "é".repeat(300));
        let kept = bounded(&long, MAX_PATH_BYTES);
        assert!(kept.len() <= MAX_PATH_BYTES && kept.len() >= MAX_PATH_BYTES - 1);
        assert!(long.starts_with(&kept));
    }

    #[test]
    fn a_tracestate_past_its_bound_is_not_continued() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("tracestate", "vendor=ok".parse().unwrap());
        assert_eq!(Headers(&headers).get("tracestate"), Some("vendor=ok"));
        let long = format!("v={}", "x".repeat(MAX_TRACESTATE_BYTES));
        headers.insert("tracestate", long.parse().unwrap());
        assert_eq!(Headers(&headers).get("tracestate"), None);
        headers.insert("traceparent", "00-a-b-01".parse().unwrap());
        assert_eq!(Headers(&headers).get("traceparent"), Some("00-a-b-01"));
    }
}
