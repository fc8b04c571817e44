//! The HTTP/1.1 server loop: hyper, driven by hand rather than through `axum::serve`,
//! for what `axum::serve` does not offer, each a bound on what a client can hold:
//!
//! - a header read timeout: without one, a client that drips its headers a byte at a
//!   time holds a connection, and a file descriptor, for as long as it likes. It also
//!   closes keep-alive connections idle for that long (hyper starts it as soon as it
//!   waits for the next request). Each connection has its own clock
//!   (`connection_clock`), which keeps one sleep for its heads' and its requests'
//!   deadlines;
//! - a request head limit: a head larger than a proxy would pass gets 431 at once,
//!   instead of hyper's default of buffering about 400 KB per connection;
//! - a bound on open connections: past it, new connections wait in the kernel's listen
//!   backlog instead of in our memory (a warning says so, at most every ten seconds),
//!   all but the first, which is accepted and held unread while the oldest idle
//!   keep-alive connection (answered, and nothing of a next request received since) is
//!   closed to make room (one at a time: the next once it is gone, or a second on),
//!   checked again every [`ROOM_RETRY`] while none is. So clients that hold every slot
//!   with idle keep-alive connections cannot keep a newcomer out. A connection that has received
//!   part of a request since its last answer, or was never answered, is never closed
//!   for room. What the idle timeout's close risks, this one does too: a request sent
//!   at the instant of the close, or pipelined (sent in part before the previous
//!   answer), is cut unread;
//! - a write timeout: a client that stops reading its answer is cut off
//!   (`write_deadline`).
//!
//! And TCP_NODELAY on every connection. What those bounds do is counted
//! ([`ConnectionMetrics`]): at the connection bound, new clients wait before any request
//! of theirs is read, where no request metric or log line can see them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounterVec, IntGauge};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::connection_clock::ConnectionClock;
use super::write_deadline::{self, WRITE_TIMEOUT, WriteDeadline};

/// A client must send its whole request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and headers) read: what nginx passes by
/// default (four buffers of 8 KiB). hyper's read buffer never grows past it, for the
/// head or the body: it is most of what an open connection can make us hold, beside the
/// body a handler reads (bounded on its own, see `docs/security.md`).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// How often a connection waiting past the bound looks again for an idle one to close,
/// while every open connection owes a request.
pub const ROOM_RETRY: Duration = Duration::from_millis(250);

/// Declares [`CutReason`] from one list of variants and their labels, so that the list
/// of all of them ([`CutReason::ALL`]) cannot leave one out.
macro_rules! cut_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $label:literal,)+) => {
        /// Why the server closed a connection at one of its bounds: the `reason` label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum CutReason {
            $($(#[doc = $doc])* $variant,)+
        }

        impl CutReason {
            /// Every reason: the label values made at start-up, so that each series
            /// exists at 0 before its first cut.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            pub const fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }
        }
    };
}

cut_reasons! {
    /// No whole request head within [`HEADER_READ_TIMEOUT`] of the accept or of the last
    /// answer, on a connection that owed one (never answered, or part of its next head
    /// received: a slow client, or one holding the connection on purpose).
    HeadTimeout => "head_timeout",
    /// The same time bound on a connection that owed nothing: an idle keep-alive
    /// connection, closed as it should be. The split from `HeadTimeout` is a hint: a
    /// client can make its cut look idle ([`WriteDeadline::midway`]).
    IdleTimeout => "idle_timeout",
    /// A head over [`MAX_HEAD_BYTES`] or with too many headers (answered 431).
    HeadTooLarge => "head_too_large",
    /// An answer its client stopped reading for [`WRITE_TIMEOUT`].
    WriteTimeout => "write_timeout",
    /// The oldest keep-alive connection with nothing of a next request received, closed
    /// to let in a new one waiting past the bound on open connections: at once if idle,
    /// after the answer it is still writing otherwise.
    MakeRoom => "make_room",
}

/// Where the loop reports its connections: the gauge of those open (the bound is set
/// once, by whoever set it) and the counter of those cut off, by [`CutReason`].
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub open: IntGauge,
    pub cut: IntCounterVec,
}

/// Holds one count of the open gauge: given back when the connection's task ends, or is
/// dropped mid-way when the drain is abandoned.
struct Open(IntGauge);

impl Open {
    fn count(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The bound that ended a connection with `error`, if one did; `None` for the rest (a
/// client gone mid-request, a malformed request: routine, and not ours). `midway`: the
/// connection owed a request ([`WriteDeadline::midway`]).
fn cut_reason(error: &hyper::Error, midway: bool) -> Option<CutReason> {
    if error.is_timeout() {
        Some(if midway {
            CutReason::HeadTimeout
        } else {
            CutReason::IdleTimeout
        })
    } else if error.is_parse_too_large() {
        Some(CutReason::HeadTooLarge)
    } else if is_write_timeout(error) {
        Some(CutReason::WriteTimeout)
    } else {
        None
    }
}

/// Whether the error [`WriteDeadline`] fails a stalled write with is in `error`'s chain
/// of causes, where hyper puts it.
fn is_write_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |&e| e.source())
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(write_deadline::is_stalled)
}

/// Serves `service_for`'s service for each connection (a router, or one wrapped; given
/// the connection's clock for its requests' deadlines) on `listener` until `drain`
/// resolves; then stops accepting, lets every connection finish its in-flight request (idle
/// keep-alive connections are closed), and returns once all are gone, or, if `abandon`
/// resolves first, once the connections still open are dropped with their requests (so
/// that what those left running is let go of before the process exits). At most
/// `connections` are open at once (see the module's header for the one past it);
/// `metrics`, if given, counts them.
pub async fn serve<S>(
    listener: TcpListener,
    service_for: impl Fn(ConnectionClock) -> S,
    connections: Arc<Semaphore>,
    metrics: Option<ConnectionMetrics>,
    drain: impl Future<Output = ()>,
    abandon: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut http = http1::Builder::new();
    http.header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    // Cancelled, it asks every connection to close after its answer; each connection's
    // own child token closes just that one, idle, to make room.
    let draining = CancellationToken::new();
    let mut open_connections = OldestFirst::default();
    let mut tasks = JoinSet::new();
    let mut at_the_bound = Paced::default();
    let mut accept_failures = Paced::default();
    tokio::pin!(drain);
    loop {
        // Accept, then a free slot: one connection past the bound waits here, held, while
        // an idle one is closed to make room; the next wait in the kernel's backlog.
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning,
                    // and say so at a pace the log can bear (it fails 20 times a second).
                    if let Some(unsaid) = accept_failures.due() {
                        tracing::warn!(%error, failures_unsaid = unsaid, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut drain => break,
        };
        let slot = match connections.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if at_the_bound.due().is_some() {
                    tracing::warn!(
                        "connection limit reached (MAX_CONNECTIONS): new connections wait in the listen backlog while the oldest idle keep-alive connection is closed to make room"
                    );
                }
                match make_room(
                    &connections,
                    &mut open_connections,
                    metrics.as_ref(),
                    &mut drain,
                )
                .await
                {
                    Some(slot) => slot,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let open = metrics.as_ref().map(|m| Open::count(&m.open));
        let cut = metrics.as_ref().map(|m| m.cut.clone());
        let clock = ConnectionClock::default();
        let service = TowerToHyperService::new(service_for(clock.clone()));
        let stream = WriteDeadline::new(stream, WRITE_TIMEOUT);
        let midway = stream.midway();
        let connection = http
            .clone()
            .timer(clock)
            .serve_connection(TokioIo::new(stream), service);
        let close = draining.child_token();
        open_connections.push(close.clone(), &midway);
        // the ended ones' entries go, so that the set holds the open connections only
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _slot = slot;
            let _open = open;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                biased;
                ended = connection.as_mut() => ended,
                () = close.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // gone: never the oldest to ask again
            close.cancel();
            // A client that goes away mid-request is routine, not an error; neither is
            // a head too large (hyper has answered 431). The bounds' cuts are counted:
            // many of them is a client, or many, holding connections on purpose.
            if let Err(error) = ended {
                let midway = midway.load(Ordering::Relaxed);
                if let (Some(cut), Some(reason)) = (&cut, cut_reason(&error, midway)) {
                    cut.with_label_values(&[reason.label()]).inc();
                }
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    draining.cancel();
    tokio::select! {
        () = async { while tasks.join_next().await.is_some() {} } => {}
        () = abandon => {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// A free slot, once one frees: meanwhile the oldest idle connection is closed, looked
/// for again every [`ROOM_RETRY`] while none is. `None` if the drain began first.
async fn make_room(
    connections: &Arc<Semaphore>,
    open_connections: &mut OldestFirst,
    metrics: Option<&ConnectionMetrics>,
    drain: &mut (impl Future<Output = ()> + Unpin),
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    loop {
        // a slot freed since the last look (the one closed before, or any): no one to close
        if let Ok(slot) = connections.clone().try_acquire_owned() {
            return Some(slot);
        }
        if open_connections.close_oldest_idle()
            && let Some(metrics) = metrics
        {
            metrics
                .cut
                .with_label_values(&[CutReason::MakeRoom.label()])
                .inc();
        }
        tokio::select! {
            biased;
            slot = connections.clone().acquire_owned() => return slot.ok(),
            () = &mut *drain => return None,
            () = tokio::time::sleep(ROOM_RETRY) => {}
        }
    }
}

/// An open connection as the bound sees it: its close token (cancelled once it is gone
/// or asked to close) and whether it owes a request ([`WriteDeadline::midway`]), a weak
/// handle that no longer upgrades once the connection is gone.
struct Tracked {
    close: CancellationToken,
    midway: Weak<AtomicBool>,
}

impl Tracked {
    fn gone_or_asked(&self) -> bool {
        self.close.is_cancelled() || self.midway.strong_count() == 0
    }
}

/// The open connections in the order they were accepted, those gone or already closed
/// left behind lazily: pruned whenever the list has doubled since the last pruning, so
/// that it holds at most about twice the open ones. And the last one closed for room,
/// and when.
#[derive(Default)]
struct OldestFirst {
    tracked: std::collections::VecDeque<Tracked>,
    prune_at: usize,
    closing: Option<(Weak<AtomicBool>, std::time::Instant)>,
}

impl OldestFirst {
    const SMALLEST_PRUNE: usize = 64;
    /// How long the last one closed for room is waited for before another is closed: a
    /// connection still writing its answer closes after it, and an answer read slowly
    /// (but not stalled: [`WRITE_TIMEOUT`]) can take as long as its reader likes.
    const CLOSING_PATIENCE: Duration = Duration::from_secs(1);

    fn push(&mut self, close: CancellationToken, midway: &Arc<AtomicBool>) {
        if self.tracked.len() >= self.prune_at {
            self.tracked.retain(|t| !t.gone_or_asked());
            self.prune_at = (2 * self.tracked.len()).max(Self::SMALLEST_PRUNE);
        }
        let midway = Arc::downgrade(midway);
        self.tracked.push_back(Tracked { close, midway });
    }

    /// Closes the oldest connection that is open and owes no request; false if there is
    /// none, or if the last one closed for room is not gone yet and was closed less than
    /// [`Self::CLOSING_PATIENCE`] ago. hyper closes an idle connection at once, but one
    /// still writing its answer (its flag clears with the answer's first bytes) only
    /// after it: closing more meanwhile would cut two for one newcomer. A scan of the
    /// open ones at most, at the bound only.
    fn close_oldest_idle(&mut self) -> bool {
        self.close_oldest_idle_at(std::time::Instant::now())
    }

    fn close_oldest_idle_at(&mut self, now: std::time::Instant) -> bool {
        if self.closing.as_ref().is_some_and(|(midway, since)| {
            midway.strong_count() > 0
                && now.saturating_duration_since(*since) < Self::CLOSING_PATIENCE
        }) {
            return false;
        }
        while self.tracked.front().is_some_and(Tracked::gone_or_asked) {
            self.tracked.pop_front();
        }
        let idle = self.tracked.iter().position(|t| {
            !t.close.is_cancelled()
                && t.midway
                    .upgrade()
                    .is_some_and(|midway| !midway.load(Ordering::Relaxed))
        });
        match idle.and_then(|index| self.tracked.remove(index)) {
            Some(tracked) => {
                tracked.close.cancel();
                self.closing = Some((tracked.midway, now));
                true
            }
            None => false,
        }
    }
}

/// A warning written at most every [`WARN_EVERY`], however often its cause recurs: the
/// connection bound reached (past it, new connections wait, and the first thing on-call
/// would otherwise see is slow clients), or accepting failing.
#[derive(Default)]
struct Paced {
    last: Option<std::time::Instant>,
    unsaid: u64,
}

const WARN_EVERY: Duration = Duration::from_secs(10);

impl Paced {
    /// `Some(times it recurred unsaid since the last warning)` when the warning is due.
    fn due(&mut self) -> Option<u64> {
        self.due_at(std::time::Instant::now())
    }

    fn due_at(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            self.unsaid += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_warning_is_due_once_per_interval_and_counts_what_went_unsaid() {
        let mut paced = Paced::default();
        let t0 = std::time::Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(paced.due_at(at(0)), Some(0));
        for ms in (50..10_000).step_by(50) {
            assert_eq!(paced.due_at(at(ms)), None, "{ms} ms");
        }
        assert_eq!(paced.due_at(at(10_000)), Some(199));
        assert_eq!(paced.due_at(at(10_001)), None);
        assert_eq!(paced.due_at(at(30_000)), Some(1));
    }

    /// `count` tracked connections, their tokens and midway flags (all idle); dropping
    /// a flag is the connection gone.
    fn tracked(open: &mut OldestFirst, count: usize) -> Vec<(CancellationToken, Arc<AtomicBool>)> {
        (0..count)
            .map(|_| {
                let (close, midway) = (CancellationToken::new(), Arc::new(AtomicBool::new(false)));
                open.push(close.clone(), &midway);
                (close, midway)
            })
            .collect()
    }

    #[test]
    fn the_oldest_idle_connection_is_closed_never_one_owing_a_request() {
        let mut open = OldestFirst::default();
        let mut connections = tracked(&mut open, 4).into_iter();
        let gone = connections.next().unwrap();
        drop(gone.1);
        let (owing, owing_midway) = connections.next().unwrap();
        owing_midway.store(true, Ordering::Relaxed);
        let (second, second_midway) = connections.next().unwrap();
        let (third, third_midway) = connections.next().unwrap();

        assert!(open.close_oldest_idle());
        assert!(!gone.0.is_cancelled(), "a connection gone is passed over");
        assert!(
            !owing.is_cancelled(),
            "a request begun is never cut for room"
        );
        assert!(second.is_cancelled() && !third.is_cancelled());
        // still writing its answer: nothing more is closed until it is gone...
        let asked = std::time::Instant::now();
        assert!(!open.close_oldest_idle_at(asked));
        assert!(!third.is_cancelled(), "two closed for one newcomer");
        // ...or, read slowly, for at most the patience
        assert!(open.close_oldest_idle_at(asked + OldestFirst::CLOSING_PATIENCE));
        assert!(third.is_cancelled());
        drop(second_midway);
        drop(third_midway);
        assert!(
            !open.close_oldest_idle(),
            "only one owing a request is left"
        );
        // answered since: idle, and closed at the next look
        owing_midway.store(false, Ordering::Relaxed);
        assert!(open.close_oldest_idle());
        assert!(owing.is_cancelled());
    }

    #[test]
    fn connections_gone_are_pruned_so_the_list_stays_near_the_open_count() {
        let mut open = OldestFirst::default();
        let (kept, _kept_midway) = tracked(&mut open, 1).remove(0);
        for _ in 0..100_000 {
            drop(tracked(&mut open, 1)); // a connection that came and went
        }
        assert!(
            open.tracked.len() <= 2 * OldestFirst::SMALLEST_PRUNE,
            "{}",
            open.tracked.len()
        );
        assert!(open.close_oldest_idle());
        assert!(kept.is_cancelled(), "the one still open was kept");
    }

    #[test]
    fn each_cut_reason_has_a_label_of_its_own() {
        let labels: std::collections::HashSet<_> =
            CutReason::ALL.iter().map(|reason| reason.label()).collect();
        assert_eq!(labels.len(), CutReason::ALL.len(), "{labels:?}");
    }

    /// A cause wrapped the way hyper wraps an I/O error: as the source of its own.
    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error writing a response")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_stalled_write_is_found_among_the_causes_and_other_io_errors_are_not() {
        let stalled = Wrapped(io::Error::new(
            io::ErrorKind::TimedOut,
            write_deadline::Stalled,
        ));
        assert!(is_write_timeout(&stalled));
        assert!(is_write_timeout(&stalled.0));
        // the kernel's own timeout, on a read, is not a stalled answer
        let kernel = Wrapped(io::Error::from(io::ErrorKind::TimedOut));
        assert!(!is_write_timeout(&kernel));
        let reset = Wrapped(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(!is_write_timeout(&reset));
    }

    /// hyper itself, over the write deadline, on a client that asks and never reads: the
    /// connection ends with the error `cut_reason` names a write timeout (were hyper to
    /// stop keeping the I/O error as the cause, this reason would silently stay at 0).
    #[tokio::test(start_paused = true)]
    async fn an_answer_never_read_ends_the_connection_as_a_write_timeout() {
        use tokio::io::AsyncWriteExt;
        let (server, mut client) = tokio::io::duplex(4096);
        let io = WriteDeadline::new(server, WRITE_TIMEOUT);
        let midway = io.midway();
        let answer = hyper::service::service_fn(|_| async {
            let body = axum::body::Body::from(vec![b'x'; 1 << 20]);
            Ok::<_, Infallible>(hyper::Response::new(body))
        });
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let error = http1::Builder::new()
            .timer(ConnectionClock::default())
            .serve_connection(TokioIo::new(io), answer)
            .await
            .expect_err("an answer never read cannot finish");
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
        let midway = midway.load(Ordering::Relaxed);
        assert_eq!(
            cut_reason(&error, midway),
            Some(CutReason::WriteTimeout),
            "{error:?}"
        );
        drop(client);
    }

    /// hyper itself, over the connection's head timer: a keep-alive connection is given
    /// the whole header read timeout after each answer, not after the first head's wait.
    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_a_timeout_after_its_last_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(4096);
        let answer = hyper::service::service_fn(|_| async {
            Ok::<_, Infallible>(hyper::Response::new(axum::body::Body::from("ok")))
        });
        let started = tokio::time::Instant::now();
        let connection = tokio::spawn(
            http1::Builder::new()
                .timer(ConnectionClock::default())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(server), answer),
        );
        let mut answers = String::new();
        let mut chunk = [0u8; 1024];
        for pause in [Duration::ZERO, HEADER_READ_TIMEOUT * 3 / 4] {
            tokio::time::sleep(pause).await;
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let n = client.read(&mut chunk).await.unwrap();
            answers.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
        let second_answer = started.elapsed();
        assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
        let error = connection
            .await
            .unwrap()
            .expect_err("an idle connection is closed");
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(started.elapsed() - second_answer, HEADER_READ_TIMEOUT);
        assert_eq!(client.read(&mut chunk).await.unwrap(), 0, "closed");
    }

    #[test]
    fn the_open_gauge_is_given_back_however_the_connection_ends() {
        let gauge = IntGauge::new("open", "open").unwrap();
        let first = Open::count(&gauge);
        let second = Open::count(&gauge);
        assert_eq!(gauge.get(), 2);
        drop(first);
        assert_eq!(gauge.get(), 1);
        // a task aborted mid-connection drops what it holds, as a finished one does
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let task = tokio::spawn(async move {
                let _open = second;
                std::future::pending::<()>().await;
            });
            tokio::task::yield_now().await;
            task.abort();
            let _ = task.await;
        });
        assert_eq!(gauge.get(), 0);
    }
}
