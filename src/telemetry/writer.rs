//! The log writer: requests never wait on stdout, and never wake a thread per line.
//!
//! Lines are appended to a shared buffer under a short lock; a background thread writes
//! the buffer out in one `write(2)` every [`FLUSH_INTERVAL`], or sooner once it holds
//! [`FLUSH_AT`] bytes. tracing-appender's non-blocking writer, the usual choice, hands
//! every line to its thread through a channel (an allocation and, at a few thousand
//! lines a second, a thread wake-up per line): on the benchmark's `/health` that cost
//! several percent of the throughput. If stdout stalls, the buffer stops growing at
//! [`MAX_BUFFERED`] (plus the batch stuck in the write) and further lines are dropped and
//! counted, never queued without bound; the count is logged once writing resumes. At
//! exit the guard waits at most [`EXIT_WAIT`] for the last lines: a stuck stdout must
//! not keep a stopping process alive.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
const FLUSH_AT: usize = 64 * 1024;
const MAX_BUFFERED: usize = 16 * 1024 * 1024;
/// What a buffer starts with and, after a stall grew it past [`SHRINK_ABOVE`], keeps.
const RETAINED: usize = FLUSH_AT * 2;
const SHRINK_ABOVE: usize = RETAINED * 4;
pub const EXIT_WAIT: Duration = Duration::from_secs(1);

struct Shared {
    buffer: Mutex<Vec<u8>>,
    ready: Condvar,
    closed: AtomicBool,
    dropped: AtomicU64,
}

/// Hands out [`LineSink`]s to the tracing subscriber.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Dropping it writes out what is buffered and stops the thread.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer for `out` and the guard that keeps its thread.
pub fn batch_writer(out: impl Write + Send + 'static) -> (BatchWriter, FlushGuard) {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Vec::with_capacity(RETAINED)),
        ready: Condvar::new(),
        closed: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
    });
    let thread = std::thread::Builder::new()
        .name("farol-log-writer".into())
        .spawn({
            let shared = shared.clone();
            move || write_out(&shared, out)
        })
        .expect("the log writer thread starts");
    (
        BatchWriter {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_out(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::with_capacity(RETAINED);
    loop {
        let closed = {
            let buffer = shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let (mut buffer, _) = shared
                .ready
                .wait_timeout_while(buffer, FLUSH_INTERVAL, |b| {
                    b.len() < FLUSH_AT && !shared.closed.load(Ordering::Acquire)
                })
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *buffer, &mut batch);
            shared.closed.load(Ordering::Acquire)
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if batch.is_empty() && dropped == 0 {
            if closed {
                return;
            }
            continue;
        }
        // Nothing to do when stdout is gone; the lines are lost either way.
        let _ = out.write_all(&batch);
        batch.clear();
        // A stall (a slow disk, a paused log reader) grows the buffers; give the memory
        // back once it is over rather than keep the high-water mark for good. The two
        // buffers trade places at every flush, so both come back down.
        if batch.capacity() > SHRINK_ABOVE {
            batch.shrink_to(RETAINED);
        }
        let _ = out.flush();
        if dropped > 0 {
            // Through the subscriber like any line (its format, its level): it lands in
            // the buffer and goes out with the next batch.
            tracing::warn!(
                target: "farol::telemetry",
                dropped,
                "log lines dropped: stdout could not keep up"
            );
        }
        // At exit, one more round for that warning.
        if closed && dropped == 0 {
            return;
        }
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineSink(&self.shared)
    }
}

/// Appends to the shared buffer. The subscriber writes each formatted line in one call,
/// so lines never interleave.
pub struct LineSink<'a>(&'a Shared);

impl Write for LineSink<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut buffer = self.0.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() + line.len() > MAX_BUFFERED {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let before = buffer.len();
            buffer.extend_from_slice(line);
            // Wake the writer once, when the buffer crosses the mark: a notify is a
            // system call, and while the writer is busy every line would pay one.
            if before < FLUSH_AT && buffer.len() >= FLUSH_AT {
                self.0.ready.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + EXIT_WAIT;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
            // Otherwise the thread is stuck in a write: leave it; the process is ending.
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<StdMutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_and_the_guard_flushes() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        writer
                            .make_writer()
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let own: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(own, (0..5000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn lines_are_written_within_the_flush_interval() {
        let sink = Sink::default();
        let (writer, _guard) = batch_writer(sink.clone());
        writer.make_writer().write_all(b"soon\n").unwrap();
        std::thread::sleep(FLUSH_INTERVAL * 5);
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"soon\n");
    }

    /// A stdout that never accepts anything.
    struct Stuck(Arc<AtomicBool>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while !self.0.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stdout_does_not_hold_up_the_exit() {
        let release = Arc::new(AtomicBool::new(false));
        let (writer, guard) = batch_writer(Stuck(release.clone()));
        writer.make_writer().write_all(b"last words\n").unwrap();
        // Let the thread pick the line up and get stuck writing it.
        std::thread::sleep(FLUSH_INTERVAL * 3);
        let started = std::time::Instant::now();
        drop(guard);
        let waited = started.elapsed();
        release.store(true, Ordering::Release);
        assert!(
            waited >= EXIT_WAIT && waited < EXIT_WAIT + Duration::from_secs(2),
            "waited {waited:?}"
        );
    }

    #[test]
    fn a_stuck_stdout_drops_lines_instead_of_growing_or_blocking_then_memory_is_given_back() {
        let release = Arc::new(AtomicBool::new(false));
        let (writer, guard) = batch_writer(Stuck(release.clone()));
        let line = vec![b'x'; 1024];
        let started = std::time::Instant::now();
        for _ in 0..(2 * MAX_BUFFERED / 1024) {
            writer.make_writer().write_all(&line).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "writers never wait on stdout"
        );
        assert!(writer.shared.buffer.lock().unwrap().len() <= MAX_BUFFERED);
        assert!(writer.shared.dropped.load(Ordering::Relaxed) > 0);
        release.store(true, Ordering::Release);
        // Once stdout moves again, the memory the stall took is given back.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while writer.shared.buffer.lock().unwrap().capacity() > SHRINK_ABOVE {
            assert!(
                std::time::Instant::now() < deadline,
                "the buffer still holds {} bytes of capacity",
                writer.shared.buffer.lock().unwrap().capacity()
            );
            writer.make_writer().write_all(b"after\n").unwrap();
            std::thread::sleep(FLUSH_INTERVAL);
        }
        drop(guard);
    }
}
