//! One JSON object per log line, built in one `String` and handed over whole.
//!
//! tracing-subscriber's own JSON formatter collects every field of every event into a
//! map of `serde_json::Value`s before writing it: several allocations per line, measured
//! at about a tenth of the service's throughput on the benchmark's `/health`. This one
//! writes the same flat shape (`timestamp`, `level`, `target`, `message`, then the
//! event's fields) into one `String` per line: one allocation, 512 bytes, enough for an
//! access log line (about 410 bytes at most), then one copy into the subscriber's buffer.
//! A test holds it to the same objects: the same events through both formatters give the
//! same keys and values (not the same key order, nor byte for byte the same escapes).
//! [`write_access`] writes the access line of a request without its event (`access.rs`
//! says why); a test holds it to the object [`JsonLines`] writes for that event.

use std::fmt::{self, Write};

use opentelemetry::trace::TraceContextExt as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record from the `log` crate arrives with tracing-log's placeholder metadata;
        // its real level and target are recovered here, its `log.*` fields skipped below.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        // The line is built in a `String` of its own and handed over whole: every piece
        // written straight to `writer` would be a call through its `dyn fmt::Write`.
        let mut line = String::with_capacity(LINE_CAPACITY);
        line.push_str("{\"timestamp\":\"");
        write_now(&mut line);
        line.push_str("\",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push_str("\",\"target\":");
        write_string(&mut line, metadata.target())?;
        write_trace_ids(&mut line)?;
        let mut fields = Fields {
            line: &mut line,
            result: Ok(()),
            skip_log_fields: normalized.is_some(),
        };
        event.record(&mut fields);
        fields.result?;
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// An access log line with a client's own request id (up to 128 bytes) and trace ids
/// fits: about 410 bytes.
pub const LINE_CAPACITY: usize = 512;

/// The access line of `access` at `level`, the object [`JsonLines`] writes for
/// `access::event` (the tests compare them), without the event: its keys written as
/// they are, its values escaped as every value is.
pub fn write_access(line: &mut String, level: tracing::Level, access: &super::access::Access<'_>) {
    // into a `String`: a write cannot fail
    let _ = (|| -> fmt::Result {
        line.push_str("{\"timestamp\":\"");
        write_now(line);
        line.push_str("\",\"level\":\"");
        line.push_str(level.as_str());
        line.push_str("\",\"target\":");
        write_string(line, super::access::TARGET)?;
        line.push_str(",\"message\":\"request\",\"request_id\":");
        write_string(line, access.request_id)?;
        line.push_str(",\"method\":");
        write_string(line, access.method)?;
        line.push_str(",\"route\":");
        write_string(line, access.route)?;
        line.push_str(",\"status\":");
        line.push_str(itoa::Buffer::new().format(access.status));
        if let Some(problem) = access.problem {
            line.push_str(",\"problem\":");
            write_string(line, problem)?;
        }
        line.push_str(",\"duration_ms\":");
        write_f64(line, access.duration_ms)?;
        if let Some((trace_id, span_id)) = access.trace {
            line.push_str(",\"trace_id\":");
            write_string(line, trace_id)?;
            line.push_str(",\"span_id\":");
            write_string(line, span_id)?;
        }
        line.push_str("}\n");
        Ok(())
    })();
}

/// The ids of the span current on this thread (a request's, with traces on), as
/// `trace_id` and `span_id`: a log line and its trace find each other. Nothing when no
/// span is current (traces off, or outside a request).
fn write_trace_ids(out: &mut impl Write) -> fmt::Result {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return Ok(());
        }
        write!(
            out,
            ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
            context.trace_id(),
            context.span_id()
        )
    })
}

/// The clock now, as [`write_timestamp`] writes it. The part up to the second is the same
/// for every line of that second: it is kept per thread and written again as it is, and
/// only the microseconds are formatted (the calendar arithmetic once a second).
fn write_now(line: &mut String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    write_instant(line, now.as_secs(), now.subsec_micros());
}

/// [`write_now`] for the instant `seconds` after the Unix epoch and `micros` more.
fn write_instant(line: &mut String, seconds: u64, micros: u32) {
    // A line written while the thread's locals are torn down (its last moments) is
    // formatted whole.
    let cached = SECOND.try_with(|cell| {
        let (second, prefix) = &mut *cell.borrow_mut();
        if *second != seconds || prefix.is_empty() {
            prefix.clear();
            let at = time::OffsetDateTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
            // infallible into a `String`; the fraction and `Z` are cut off
            let _ = write_timestamp(prefix, at);
            prefix.truncate(PREFIX_LEN);
            *second = seconds;
        }
        line.push_str(prefix);
    });
    if cached.is_err() {
        let mut whole = String::new();
        let at = time::OffsetDateTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        let _ = write_timestamp(&mut whole, at);
        line.push_str(&whole[..PREFIX_LEN]);
    }
    let mut digits = *b"000000Z";
    let mut value = micros;
    for slot in digits[..6].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    line.extend(digits.map(char::from));
}

thread_local! {
    /// The Unix second last written on this thread, and its `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: std::cell::RefCell<(u64, String)> = const {
        std::cell::RefCell::new((0, String::new()))
    };
}

/// The length of `YYYY-MM-DDTHH:MM:SS.`.
const PREFIX_LEN: usize = 20;

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-25T19:22:49.961744Z`. Written digit
/// by digit: `write!` with zero padding costs several times as much, once per log line.
fn write_timestamp(out: &mut impl Write, now: time::OffsetDateTime) -> fmt::Result {
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, now.year().clamp(0, 9999) as u32);
    put(5, 2, u8::from(now.month()).into());
    put(8, 2, now.day().into());
    put(11, 2, now.hour().into());
    put(14, 2, now.minute().into());
    put(17, 2, now.second().into());
    put(20, 6, now.microsecond());
    out.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// Writes `value` as a JSON string, quotes included.
fn write_string(out: &mut impl Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// A `fmt::Write` that JSON-escapes what passes through it, so that `Debug` and
/// `Display` output can be written into a string without an intermediate buffer.
struct Escaped<'a, W: Write>(&'a mut W);

/// The bytes JSON strings must escape (and DEL, which terminals act on).
#[cfg(test)]
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\' || byte == 0x7f
}

/// Where the first byte that must be escaped is, eight bytes at a time: every log line
/// passes its names and values through here, mostly plain text, and one byte at a time
/// costs several instructions a byte. The bytes: those below 0x20, the quote, the
/// backslash and DEL (`needs_escape`, in the tests, is the definition).
fn first_to_escape(text: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const fn each(byte: u8) -> u64 {
        u64::from_ne_bytes([byte; 8])
    }
    // A byte's high bit set where it is zero, or (the first form) below 0x20. A borrow can
    // also flag a byte above a flagged one, never below: the lowest flag is exact.
    let zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let first_in = |bytes: [u8; 8]| {
        let word = u64::from_le_bytes(bytes);
        let flags = word.wrapping_sub(each(0x20)) & !word & HIGHS
            | zero(word ^ each(b'"'))
            | zero(word ^ each(b'\\'))
            | zero(word ^ each(0x7f));
        (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
    };
    let eight_at = |at: usize| -> [u8; 8] { text[at..at + 8].try_into().expect("eight bytes") };
    if text.len() < 8 {
        // padded with a byte that needs no escape
        let mut padded = [b'a'; 8];
        padded[..text.len()].copy_from_slice(text);
        return first_in(padded);
    }
    let mut at = 0;
    while at + 8 <= text.len() {
        if let Some(found) = first_in(eight_at(at)) {
            return Some(at + found);
        }
        at += 8;
    }
    // The last bytes, as the eight that end the text: those before them are known
    // clean, so no flag there is one of theirs.
    let last = text.len() - 8;
    (at < text.len())
        .then(|| first_in(eight_at(last)).map(|found| last + found))
        .flatten()
}

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, mut text: &str) -> fmt::Result {
        // Runs of plain text are copied whole: most values (ids, routes, messages) have
        // nothing to escape at all.
        while let Some(at) = first_to_escape(text.as_bytes()) {
            self.0.write_str(&text[..at])?;
            match text.as_bytes()[at] {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                byte => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let escape = [
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(byte >> 4)],
                        HEX[usize::from(byte & 0xf)],
                    ];
                    self.0
                        .write_str(std::str::from_utf8(&escape).map_err(|_| fmt::Error)?)?;
                }
            }
            text = &text[at + 1..];
        }
        self.0.write_str(text)
    }
}

/// Writes `value` if it is a whole number of thousandths below a billion, as every
/// request's `duration_ms` is (microseconds over a thousand), and says whether it did.
/// Integer arithmetic, less than half what ryu costs per line, and the same digits: the
/// decimal with at most three places is the only one that short which parses back to
/// `value` (its neighbours are a thousandth away, far more than `value`'s precision), so
/// it is ryu's shortest form, trailing zeros dropped but one ("2.0", "2.5", "0.125").
fn write_thousandths(out: &mut String, value: f64) -> bool {
    if !(value.is_sign_positive() && value < 1e9) {
        return false;
    }
    let thousandths = (value * 1000.0).round();
    if thousandths / 1000.0 != value {
        return false;
    }
    let thousandths = thousandths as u64;
    out.push_str(itoa::Buffer::new().format(thousandths / 1000));
    out.push('.');
    let fraction = thousandths % 1000;
    let digits =
        [fraction / 100, fraction / 10 % 10, fraction % 10].map(|d| char::from(b'0' + d as u8));
    let kept = if fraction.is_multiple_of(100) {
        1
    } else if fraction.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.extend(&digits[..kept]);
    true
}

/// A JSON number: thousandths exactly, else ryu's shortest form; JSON has no NaN or
/// infinity, which are written `null`.
fn write_f64(out: &mut String, value: f64) -> fmt::Result {
    if write_thousandths(out, value) {
        Ok(())
    } else if value.is_finite() {
        out.write_str(ryu::Buffer::new().format_finite(value))
    } else {
        out.write_str("null")
    }
}

struct Fields<'a> {
    line: &'a mut String,
    result: fmt::Result,
    /// A `log` record's `log.*` fields repeat its metadata: left out.
    skip_log_fields: bool,
}

impl Fields<'_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() && !(self.skip_log_fields && field.name().starts_with("log.")) {
            self.result = (|| {
                self.line.push(',');
                write_string(self.line, field.name())?;
                self.line.push(':');
                value(self.line)
            })();
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| write_string(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| write_f64(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON objects a subscriber writes for the events `emit` makes; `subscriber`
    /// builds it around the writer it must use.
    fn lines_written<S>(subscriber: impl FnOnce(Capture) -> S, emit: impl FnOnce()) -> Vec<Value>
    where
        S: Subscriber + Send + Sync + 'static,
    {
        let sink = Capture::default();
        tracing::subscriber::with_default(subscriber(sink.clone()), emit);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    fn capture(emit: impl FnOnce()) -> Vec<Value> {
        let ours = |writer: Capture| {
            tracing_subscriber::fmt()
                .event_format(JsonLines)
                .with_writer(move || writer.clone())
                .finish()
        };
        lines_written(ours, emit)
    }

    /// The same events through tracing-subscriber's own JSON formatter, flattened to the
    /// shape ours writes.
    fn capture_with_tracing_subscriber(emit: impl FnOnce()) -> Vec<Value> {
        let theirs = |writer: Capture| {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(move || writer.clone())
                .finish()
        };
        lines_written(theirs, emit)
    }

    #[test]
    fn a_line_written_while_a_span_is_current_carries_its_trace_and_span_ids() {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        };
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let lines = capture(|| {
            tracing::info!("before");
            {
                let _current = opentelemetry::Context::new()
                    .with_remote_span_context(span)
                    .attach();
                tracing::warn!(detail = 1u64, "inside");
            }
            tracing::info!("after");
        });
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[1]["span_id"], "00f067aa0ba902b7");
        assert_eq!(lines[1]["detail"], 1);
        for outside in [&lines[0], &lines[2]] {
            assert!(outside.get("trace_id").is_none(), "{outside}");
            assert!(outside.get("span_id").is_none(), "{outside}");
        }
    }

    #[test]
    fn the_same_events_give_the_same_objects_as_tracing_subscribers_json() {
        let error = std::io::Error::other("disk \"full\"");
        let emit = || {
            tracing::info!(
                request_id = "abc",
                status = 200u64,
                duration_ms = 1.25f64,
                "request"
            );
            tracing::warn!(
                text = "quote \" backslash \\ newline \n tab \t nul \0 bell \u{7} é 灯",
                delta = -7i64,
                flag = false,
                debug = ?vec!["a\"b"],
                error = &error as &dyn std::error::Error,
                "a \"message\" with {} args",
                2
            );
            tracing::error!(reason = "no message, fields only");
        };
        let ours = capture(emit);
        let theirs = capture_with_tracing_subscriber(emit);
        assert_eq!(ours.len(), 3);
        assert_eq!(theirs.len(), 3);
        for (mut ours, mut theirs) in ours.into_iter().zip(theirs) {
            // the clocks differ by the time between the two runs; both must parse
            for line in [&mut ours, &mut theirs] {
                let timestamp = line.as_object_mut().unwrap().remove("timestamp").unwrap();
                let parsed = time::OffsetDateTime::parse(
                    timestamp.as_str().unwrap(),
                    &time::format_description::well_known::Rfc3339,
                );
                assert!(parsed.is_ok(), "{timestamp}");
            }
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn every_field_kind_is_valid_json_and_keeps_its_value() {
        let error = std::io::Error::other("disk \"full\"");
        let lines = capture(|| {
            tracing::warn!(
                text = "quote \" backslash \\ newline \n tab \t nul \0 bell \u{7} é 灯",
                count = 42u64,
                delta = -7i64,
                ratio = 0.125f64,
                nan = f64::NAN,
                flag = true,
                debug = ?vec!["a\"b"],
                error = &error as &dyn std::error::Error,
                "a \"message\" with {} args",
                2
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["message"], "a \"message\" with 2 args");
        assert_eq!(
            line["text"],
            "quote \" backslash \\ newline \n tab \t nul \0 bell \u{7} é 灯"
        );
        assert_eq!(line["count"], 42);
        assert_eq!(line["delta"], -7);
        assert_eq!(line["ratio"], 0.125);
        assert_eq!(line["nan"], Value::Null);
        assert_eq!(line["flag"], true);
        assert_eq!(line["debug"], r#"["a\"b"]"#);
        assert_eq!(line["error"], "disk \"full\"");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{timestamp}"
        );
    }

    #[test]
    fn every_character_survives_escaping() {
        let mut text: String = (0u8..=0x7f).map(char::from).collect();
        text.push_str("é灯\u{2028}\u{10ffff} plain tail");
        for value in [
            text.as_str(),
            "",
            "\"",
            "\\",
            "no escapes at all",
            "\u{1f}end",
        ] {
            let mut out = String::new();
            write_string(&mut out, value).unwrap();
            assert_eq!(
                serde_json::from_str::<String>(&out).unwrap(),
                value,
                "{out}"
            );
            assert!(
                !out.bytes().any(|b| b < 0x20 || b == 0x7f),
                "raw control byte in {out:?}"
            );
        }
    }

    #[test]
    fn the_word_at_a_time_search_finds_the_first_byte_to_escape() {
        for length in 0..=24 {
            for at in 0..length {
                for byte in 0..=u8::MAX {
                    for filler in [b'a', 0xc3, b'~'] {
                        let mut text = vec![filler; length];
                        text[at] = byte;
                        let expected = text.iter().position(|&b| needs_escape(b));
                        assert_eq!(first_to_escape(&text), expected, "{text:?}");
                    }
                }
            }
        }
        // several bytes to escape among awkward neighbours, at every length up to 40
        let awkward = [
            0x00, 0x01, 0x1f, 0x20, 0x21, b'"', b'\\', 0x7e, 0x7f, 0x80, 0xff, b'a',
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 41) as usize;
            let text: Vec<u8> = (0..length)
                .map(|at| awkward[((state >> (at % 60)) as usize + at * 7) % awkward.len()])
                .collect();
            let expected = text.iter().position(|&b| needs_escape(b));
            assert_eq!(first_to_escape(&text), expected, "{text:?}");
        }
        // a second byte to escape after the first does not hide it
        let mut text = *b"abc\"\x01defghij";
        assert_eq!(first_to_escape(&text), Some(3));
        text[3] = b'z';
        assert_eq!(first_to_escape(&text), Some(4));
    }

    #[test]
    fn a_line_far_longer_than_its_first_buffer_is_written_whole() {
        let long = "x\"y".repeat(40_000);
        let lines = capture(|| tracing::info!(long = long.as_str(), "long"));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["long"], long.as_str());
        assert_eq!(lines[0]["message"], "long");
    }

    #[test]
    fn records_of_the_log_crate_keep_their_level_target_and_message() {
        let lines = capture(|| {
            let alert = "BadCertificate";
            tracing_log::format_trace(
                &tracing_log::log::Record::builder()
                    .level(tracing_log::log::Level::Warn)
                    .target("rustls::conn")
                    .module_path_static(Some("rustls::conn"))
                    .args(format_args!("Sending fatal alert {alert}"))
                    .build(),
            )
            .unwrap();
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "rustls::conn");
        assert_eq!(line["message"], "Sending fatal alert BadCertificate");
        assert!(
            line.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("log.")),
            "{line}"
        );
    }

    #[test]
    fn odd_field_names_are_escaped_too() {
        let lines = capture(|| tracing::info!("a\"b" = 1, "dotted.name" = 2, "log.mine" = 3, "m"));
        assert_eq!(lines[0]["a\"b"], 1);
        assert_eq!(lines[0]["dotted.name"], 2);
        assert_eq!(
            lines[0]["log.mine"], 3,
            "only a log record's own log.* fields are left out"
        );
    }

    #[test]
    fn numbers_are_json_numbers() {
        let lines = capture(|| {
            tracing::info!(
                max = u64::MAX,
                min = i64::MIN,
                tiny = 1e-7f64,
                huge = 1e300f64,
                whole = 3.0f64,
                infinite = f64::INFINITY,
                "n"
            );
        });
        let line = &lines[0];
        assert_eq!(line["max"].as_u64(), Some(u64::MAX));
        assert_eq!(line["min"].as_i64(), Some(i64::MIN));
        assert_eq!(line["tiny"].as_f64(), Some(1e-7));
        assert_eq!(line["huge"].as_f64(), Some(1e300));
        assert_eq!(line["whole"].as_f64(), Some(3.0));
        assert_eq!(line["infinite"], Value::Null);
    }

    #[test]
    fn thousandths_are_written_as_ryu_writes_them() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let every_small_one = 0..200_000u64;
        let spread_out = (0..200_000).map(|_| next() % 1_000_000_000_000);
        for thousandths in every_small_one.chain(spread_out) {
            let value = thousandths as f64 / 1000.0;
            let mut ours = String::new();
            assert!(write_thousandths(&mut ours, value), "{value} not taken");
            assert_eq!(
                ours,
                ryu::Buffer::new().format_finite(value),
                "{thousandths}"
            );
        }
    }

    #[test]
    fn what_is_not_thousandths_is_left_to_ryu() {
        // a step of the float either side of a thousandth: the check is exact, not close
        let beside = [
            1.5f64.next_up(),
            1.5f64.next_down(),
            0.001f64.next_up(),
            123.456f64.next_down(),
        ];
        let others = [
            0.0001,
            1.2345,
            1e-7,
            1e9,
            1e300,
            -1.5,
            -0.0,
            f64::NAN,
            f64::INFINITY,
        ];
        for value in others.into_iter().chain(beside) {
            let mut out = String::new();
            assert!(!write_thousandths(&mut out, value), "{value} taken");
            assert!(out.is_empty());
        }
    }

    /// `line` without its leading timestamp, which must be RFC 3339.
    fn without_timestamp(line: &str) -> String {
        let rest = line
            .strip_prefix("{\"timestamp\":\"")
            .unwrap_or_else(|| panic!("no timestamp first: {line}"));
        let (timestamp, rest) = rest.split_once("\",").unwrap();
        let parsed =
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339);
        assert!(parsed.is_ok(), "{timestamp}");
        format!("{{{rest}")
    }

    #[test]
    fn the_access_line_is_the_line_its_event_makes() {
        use super::super::access::{Access, event};
        let trace = Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"));
        let cases = [
            (
                tracing::Level::INFO,
                "abc-1",
                "GET",
                "/",
                200,
                None,
                0.125,
                None,
            ),
            (
                tracing::Level::DEBUG,
                "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                "_OTHER",
                "/livez",
                503,
                Some("overloaded"),
                12.0,
                trace,
            ),
            // what must be escaped is escaped alike; a duration that is not thousandths
            (
                tracing::Level::INFO,
                "a\"b\\c",
                "POST",
                "/x\n\u{7}\"y",
                499,
                Some("q\"t"),
                1.0 / 3.0,
                trace,
            ),
        ];
        for (level, request_id, method, route, status, problem, duration_ms, trace) in cases {
            let access = Access {
                request_id,
                method,
                route,
                status,
                problem,
                duration_ms,
                trace,
            };
            let mut line = String::new();
            write_access(&mut line, level, &access);
            assert!(
                line.ends_with("}\n") && line.matches('\n').count() == 1,
                "{line}"
            );
            let sink = Capture::default();
            let subscriber = tracing_subscriber::fmt()
                .event_format(JsonLines)
                .with_max_level(tracing::Level::TRACE)
                .with_writer({
                    let sink = sink.clone();
                    move || sink.clone()
                })
                .finish();
            tracing::subscriber::with_default(subscriber, || event(level, &access));
            let event_line = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            // the same bytes but for the clock: the same keys in the same order, escaped
            // alike
            assert_eq!(
                without_timestamp(&line),
                without_timestamp(&event_line),
                "{line}{event_line}"
            );
            let ours: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(ours["level"], level.as_str());
            assert_eq!(ours["route"], route);
            assert_eq!(ours.get("problem").is_some(), problem.is_some());
            assert_eq!(ours.get("trace_id").is_some(), trace.is_some());
        }
    }

    #[test]
    fn the_second_kept_from_line_to_line_is_the_clocks_own() {
        let written = |seconds: u64, micros: u32| {
            let mut line = String::new();
            write_instant(&mut line, seconds, micros);
            line
        };
        let expected = |seconds: u64, micros: u32| {
            let at = time::OffsetDateTime::UNIX_EPOCH
                + std::time::Duration::from_secs(seconds)
                + std::time::Duration::from_micros(micros.into());
            let mut out = String::new();
            write_timestamp(&mut out, at).unwrap();
            out
        };
        // the same second twice, the next, one long after, and back: each line its own
        for (seconds, micros) in [
            (1_764_633_599, 7),
            (1_764_633_599, 999_999),
            (1_764_633_600, 0),
            (4_102_444_800, 123_456),
            (1_764_633_599, 42),
        ] {
            assert_eq!(written(seconds, micros), expected(seconds, micros));
        }
        let mut now = String::new();
        write_now(&mut now);
        let parsed =
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert!((time::OffsetDateTime::now_utc() - parsed).abs() < time::Duration::seconds(5));
    }

    #[test]
    fn timestamps_pad_every_part() {
        let mut out = String::new();
        let end_of_year = time::macros::datetime!(1999-12-31 23:59:59.999999 UTC);
        write_timestamp(&mut out, end_of_year).unwrap();
        assert_eq!(out, "1999-12-31T23:59:59.999999Z");
        out.clear();
        write_timestamp(&mut out, time::macros::datetime!(0042-03-04 05:06:07 UTC)).unwrap();
        assert_eq!(out, "0042-03-04T05:06:07.000000Z");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = time::macros::datetime!(2026-01-02 03:04:05.000678 UTC);
        let mut out = String::new();
        write_timestamp(&mut out, at).unwrap();
        assert_eq!(out, "2026-01-02T03:04:05.000678Z");
    }
}
