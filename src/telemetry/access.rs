//! The access log: one line per request, which `routes::observe` writes as the request
//! ends. With JSON logs the line is written straight into the log writer ([`install`]):
//! as a tracing event it would cost every request the event's dispatch, its fields
//! recorded one by one and every field name escaped (about two thousand instructions of
//! `GET /`'s, as a callgrind profile estimated them), for the same line that
//! `json::JsonLines` makes of the event ([`event`]), which the tests hold it to. Text
//! logs, and a process that never installs the writer (the tests' in-process servers),
//! log the event.
//!
//! Whether the line is written is asked of the global subscriber (`tracing::enabled!`),
//! whose one filter is the live level (`logging.rs`): a layer added there with a filter
//! of its own, or one that reads events, would not see these lines.

use std::io::Write as _;
use std::sync::OnceLock;

use tracing::Level;

use super::writer::BatchWriter;

/// The access lines' target: a filter or a reader can pick them out by it.
pub const TARGET: &str = "farol::access";

/// What the access line says of a request.
pub struct Access<'a> {
    /// A sane token or a UUID (`http::request_id`); escaped all the same.
    pub request_id: &'a str,
    /// The method's label: a client's own method is not written (it can be 32 KiB long).
    pub method: &'a str,
    /// The route template, or `unmatched`.
    pub route: &'a str,
    pub status: u16,
    /// The problem's type, on answers that are problems.
    pub problem: Option<&'a str>,
    /// Whole microseconds, in milliseconds: written as thousandths, exactly.
    pub duration_ms: f64,
    /// The request's trace and span ids, with traces on.
    pub trace: Option<(&'a str, &'a str)>,
}

static DIRECT: OnceLock<BatchWriter> = OnceLock::new();

/// From now on this process writes its access lines straight into `writer`, as JSON.
pub fn install(writer: BatchWriter) {
    let _ = DIRECT.set(writer);
}

/// Logs `access`: at debug for probes and scrapes (they come every few seconds from
/// machines), else at info; nothing if the level is off (the live level applies: every
/// change rebuilds what `enabled!` caches).
pub fn log(access: &Access<'_>, probe: bool) {
    log_to(DIRECT.get(), access, probe);
}

/// [`log`], writing into `direct` if given, else as an event.
fn log_to(direct: Option<&BatchWriter>, access: &Access<'_>, probe: bool) {
    let (level, enabled) = if probe {
        (
            Level::DEBUG,
            tracing::enabled!(target: TARGET, Level::DEBUG),
        )
    } else {
        (Level::INFO, tracing::enabled!(target: TARGET, Level::INFO))
    };
    if !enabled {
        return;
    }
    match direct {
        Some(writer) => {
            let mut line = String::with_capacity(super::json::LINE_CAPACITY);
            super::json::write_access(&mut line, level, access);
            // one write, one line: it never interleaves with another
            let _ =
                tracing_subscriber::fmt::MakeWriter::make_writer(writer).write_all(line.as_bytes());
        }
        None => event(level, access),
    }
}

/// The access line as a tracing event (text logs, the tests' servers).
pub fn event(level: Level, access: &Access<'_>) {
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                // a field, not a format string: a `&str` is written as it is, where a
                // message goes through the formatting machinery
                message = "request",
                request_id = access.request_id,
                method = access.method,
                route = access.route,
                status = access.status,
                // absent on answers that are not problems
                problem = access.problem,
                duration_ms = access.duration_ms,
                trace_id = access.trace.map(|(trace_id, _)| trace_id),
                span_id = access.trace.map(|(_, span_id)| span_id),
            )
        };
    }
    // a call site per level: each caches whether its level is on
    if level == Level::DEBUG {
        at!(Level::DEBUG)
    } else {
        at!(Level::INFO)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The routes whose lines reach the writer at `level`, of a request to `/` and a
    /// probe's.
    fn written_at(level: LevelFilter) -> Vec<String> {
        let out = Written::default();
        let (writer, guard) = super::super::writer::batch_writer(out.clone());
        let access = |route| Access {
            request_id: "r-1",
            method: "GET",
            route,
            status: 200,
            problem: None,
            duration_ms: 0.5,
            trace: None,
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(level), || {
            log_to(Some(&writer), &access("/"), false);
            log_to(Some(&writer), &access("/livez"), true);
        });
        drop(guard); // writes out what is buffered
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let object: serde_json::Value = serde_json::from_str(line).unwrap();
                object["route"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn the_written_line_follows_the_level_and_probes_are_at_debug() {
        assert!(written_at(LevelFilter::WARN).is_empty());
        assert_eq!(written_at(LevelFilter::INFO), ["/"]);
        assert_eq!(written_at(LevelFilter::DEBUG), ["/", "/livez"]);
    }
}
