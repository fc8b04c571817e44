//! A write timeout for connections: a client that stops reading its answer is cut off.
//!
//! hyper has a timeout for reading a request head, none for writing an answer. A client
//! that asks for a large page and never reads it would keep the connection, its slot
//! under `MAX_CONNECTIONS`, and the answer's memory for as long as TCP lets it (a peer
//! that advertises a zero window is never timed out by TCP itself). Here a write that
//! makes no progress for [`WRITE_TIMEOUT`] fails, and hyper closes the connection. Any
//! progress starts the wait again: a slow reader is fine, a stalled one is not.
//!
//! It also marks whether the connection owes a request ([`WriteDeadline::midway`]): from
//! its opening until its first answer, and whenever request bytes have arrived since the
//! last answer. When hyper's head timeout ends a connection, that mostly tells a client
//! that opened a connection or began a request head and stopped from an idle keep-alive
//! connection that was answered. Only mostly: hyper reads what comes as it comes, so a
//! partial head sent together with the previous request arrives before that request's
//! answer is written, and looks idle; body bytes read after an early answer look like a
//! head begun.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a write may wait for the client to read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cause of the error a stalled write fails with: what tells it from any other
/// `TimedOut` (the kernel's, on a read) further up.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing of the answer for the write timeout")]
pub struct Stalled;

/// Whether `error` is the one a stalled write fails with.
pub fn is_stalled(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|cause| cause.is::<Stalled>())
}

/// `io` with a deadline on write progress.
pub struct WriteDeadline<IO> {
    io: IO,
    timeout: Duration,
    /// Armed while a write waits; dropped on progress.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Set at first and when request bytes arrive, cleared when answer bytes are written.
    midway: Arc<AtomicBool>,
}

impl<IO> WriteDeadline<IO> {
    pub fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            // a new connection owes its first request
            midway: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether the connection owes a request: it has had no answer yet, or request bytes
    /// have arrived since the last answer bytes were written. Read it after the
    /// connection has ended.
    pub fn midway(&self) -> Arc<AtomicBool> {
        self.midway.clone()
    }

    /// After a write returned `Pending`: an error once the deadline has passed.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::TimedOut, Stalled)),
            Poll::Pending => Ok(()),
        }
    }

    /// Answer bytes written: whatever request had begun is being answered. (Not on a
    /// flush: hyper flushes on every turn of its loop, with nothing written.)
    fn answered(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.midway.store(false, Ordering::Relaxed);
        }
    }

    fn track<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => match self.check_stall(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.midway.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.answered(&result);
        self.track(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.answered(&result);
        self.track(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.track(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_shutdown(cx);
        self.track(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stalls_is_cut_off_after_the_timeout() {
        let (server, _client) = tokio::io::duplex(64);
        let mut server = WriteDeadline::new(server, WRITE_TIMEOUT);
        let started = tokio::time::Instant::now();
        let error = server.write_all(&[b'x'; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(is_stalled(&error));
        assert!(!is_stalled(&io::Error::from(io::ErrorKind::TimedOut)));
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_never_cut_off() {
        let (server, mut client) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 64];
            loop {
                tokio::time::sleep(WRITE_TIMEOUT / 2).await;
                match client.read(&mut chunk).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let mut server = WriteDeadline::new(server, WRITE_TIMEOUT);
        server.write_all(&[b'x'; 640]).await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        assert_eq!(reader.await.unwrap().len(), 640);
    }

    #[tokio::test]
    async fn midway_is_set_at_first_and_by_request_bytes_and_cleared_by_an_answer() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = WriteDeadline::new(server, WRITE_TIMEOUT);
        let midway = server.midway();
        assert!(
            midway.load(Ordering::Relaxed),
            "a new connection owes a request"
        );
        server.write_all(b"HTTP/1.1 408").await.unwrap();
        assert!(
            !midway.load(Ordering::Relaxed),
            "answered, nothing has arrived since"
        );
        client.write_all(b"GET / HT").await.unwrap();
        let mut head = [0u8; 8];
        server.read_exact(&mut head).await.unwrap();
        assert!(midway.load(Ordering::Relaxed), "a head has begun");
        server.flush().await.unwrap();
        assert!(
            midway.load(Ordering::Relaxed),
            "a flush with nothing written answers nothing"
        );
        server.write_all(b"HTTP/1.1 200 OK").await.unwrap();
        assert!(!midway.load(Ordering::Relaxed), "answered");
    }
}
