//! The HTTP/1.1 server loop: hyper, driven by hand rather than through `axum::serve`,
//! for what `axum::serve` does not offer, each a bound on what a client can hold:
//!
//! - a header read timeout: without one, a client that drips its headers a byte at a
//!   time holds a connection, and a file descriptor, for as long as it likes. It also
//!   closes keep-alive connections idle for that long (hyper starts it as soon as it
//!   waits for the next request);
//! - a request head limit: a head larger than a proxy would pass gets 431 at once,
//!   instead of hyper's default of buffering about 400 KB per connection;
//! - a bound on open connections: past it, the loop stops accepting, so that new
//!   connections wait in the kernel's listen backlog instead of in our memory (a warning
//!   says so, at most every ten seconds);
//! - a write timeout: a client that stops reading its answer is cut off
//!   (`write_deadline`).
//!
//! And TCP_NODELAY on every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::write_deadline::{WRITE_TIMEOUT, WriteDeadline};

/// A client must send its whole request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and headers) read: what nginx passes by
/// default (four buffers of 8 KiB). hyper's read buffer never grows past it, for the
/// head or the body: it is most of what an open connection can make us hold, beside the
/// body a handler reads (bounded on its own, see `docs/security.md`).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Serves `router` on `listener` until `drain` resolves; then stops accepting, lets
/// every connection finish its in-flight request (idle keep-alive connections are
/// closed), and returns once all are gone, or, if `abandon` resolves first, once the
/// connections still open are dropped with their requests (so that what those left
/// running is let go of before the process exits). At most `connections` are open at
/// once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Arc<Semaphore>,
    drain: impl Future<Output = ()>,
    abandon: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut at_the_bound = BoundWarning::default();
    tokio::pin!(drain);
    loop {
        // A free slot first, then accept: at the bound, connections queue in the kernel.
        let slot = match connections.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                at_the_bound.warn();
                tokio::select! {
                    slot = connections.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut drain => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut drain => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let stream = WriteDeadline::new(stream, WRITE_TIMEOUT);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        // the ended ones' entries go, so that the set holds the open connections only
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _slot = slot;
            // A client that goes away mid-request is routine, not an error; neither is
            // a head too large (hyper has answered 431).
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = abandon => {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// A warning when the connection bound is reached, at most every ten seconds: past it, new
/// connections wait, and the first thing on-call sees would otherwise be slow clients.
#[derive(Default)]
struct BoundWarning {
    last: Option<std::time::Instant>,
}

impl BoundWarning {
    fn warn(&mut self) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            self.last = Some(now);
            tracing::warn!(
                "connection limit reached (MAX_CONNECTIONS): new connections wait in the listen backlog"
            );
        }
    }
}
