//! A stand-in for the OpenTelemetry Collector: takes OTLP over HTTP (`POST /v1/traces`) as
//! fast as it comes, counts the requests and bytes, keeps nothing and answers an empty
//! success. The benchmark sends farol's spans here, so that what farol pays to send them
//! is mostly its own cost, not a real collector's (the sink still takes a share of the
//! same two cores); the fire drill too, and stops it to make every export fail.
//! `GET /count` answers `REQUESTS BYTES`. Configured by PORT; listens on 127.0.0.1 only.
//!
//!     cargo run --release --example otlp_sink
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
}

// one thread: the sink shares the machine's two cores with farol and wrk
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("PORT: the port to listen on");
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(counts): State<Arc<Counts>>, body: Bytes| async move {
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    // an empty ExportTraceServiceResponse: full success
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                },
            ),
        )
        .route(
            "/count",
            get(|State(counts): State<Arc<Counts>>| async move {
                format!(
                    "{} {}\n",
                    counts.requests.load(Ordering::Relaxed),
                    counts.bytes.load(Ordering::Relaxed)
                )
            }),
        )
        // a batch of 512 spans is about 100 KB, more with long paths: axum's 2 MB default
        // would answer a large one 413, which would look like spans lost
        .layer(DefaultBodyLimit::max(16 << 20))
        .with_state(counts);
    // Started again on its port after the fire drill's fault: a loopback connection may
    // hold the port as its source for a moment meanwhile.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => break listener,
            Err(err)
                if err.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(err) => panic!("cannot listen on 127.0.0.1:{port}: {err}"),
        }
    };
    axum::serve(listener, app).await.expect("serve");
}
