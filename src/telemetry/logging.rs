//! Structured logs on stdout: one JSON object per line by default (`LOG_FORMAT=text` for
//! humans), written by a background thread so that a slow stdout never stalls a request
//! (`writer.rs`).
//! The level can change at run time (`LOG_LEVEL` in `CONFIG_DIR`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LogLevel};

/// Keeps the log writer alive (dropping it flushes what is queued) and changes the level.
pub struct Logging {
    _writer: super::writer::FlushGuard,
    level: LiveLevel,
}

impl Logging {
    /// Installs the global subscriber. Call once, early.
    ///
    /// The libraries under the database driver log through the `log` crate
    /// (tokio-postgres, rustls: a TLS alert, a server notice); their records at warn and
    /// above join the same JSON lines. Below warn they are not even formatted.
    pub fn init(format: LogFormat, level: LogLevel) -> Self {
        let _ = tracing_log::LogTracer::builder()
            .with_max_level(tracing_log::log::LevelFilter::Warn)
            .init();
        let (writer, guard) = super::writer::batch_writer(std::io::stdout());
        let live = LiveLevel::new(level);
        let registry = tracing_subscriber::registry().with(live.clone());
        match format {
            LogFormat::Json => {
                let direct = writer.clone();
                registry
                    .with(
                        tracing_subscriber::fmt::layer()
                            .event_format(super::json::JsonLines)
                            .with_writer(writer),
                    )
                    .init();
                // once the subscriber is in place (`init` panics if another is); the
                // access lines skip the event, and so this stack (access.rs)
                super::access::install(direct);
            }
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::stdout().is_terminal())
                        .with_writer(writer),
                )
                .init(),
        }
        Self {
            _writer: guard,
            level: live,
        }
    }

    /// A function that sets the level, for the live configuration to call.
    pub fn level_setter(&self) -> impl Fn(LogLevel) + Send + Sync + 'static {
        let live = self.level.clone();
        move |level| live.set(level)
    }
}

/// The level filter, changeable at run time. tracing-subscriber's `reload` layer does the
/// same behind a read-write lock taken on every event: two atomic read-modify-writes on
/// a cache line that every worker thread shares, per log line. Here the level is an
/// atomic that events never touch: each call site caches whether it is enabled, and a
/// change of level rebuilds those caches.
#[derive(Clone)]
struct LiveLevel(Arc<AtomicU8>);

impl LiveLevel {
    fn new(level: LogLevel) -> Self {
        Self(Arc::new(AtomicU8::new(rank(level_filter(level)))))
    }

    fn set(&self, level: LogLevel) {
        self.0.store(rank(level_filter(level)), Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
    }

    fn current(&self) -> LevelFilter {
        match self.0.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    }

    fn allows(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.current()
    }
}

fn rank(filter: LevelFilter) -> u8 {
    match filter {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LiveLevel {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.allows(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.allows(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.current())
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for Lines {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            self.0
                .lock()
                .unwrap()
                .push(event.metadata().level().to_string());
        }
    }

    #[test]
    fn a_level_change_applies_to_call_sites_already_seen() {
        let live = LiveLevel::new(LogLevel::Warn);
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry()
            .with(live.clone())
            .with(lines.clone());
        let emit = || {
            tracing::info!("info");
            tracing::debug!("debug");
            tracing::warn!("warn");
        };
        tracing::subscriber::with_default(subscriber, || {
            emit();
            live.set(LogLevel::Debug);
            emit();
            live.set(LogLevel::Error);
            emit();
        });
        assert_eq!(
            *lines.0.lock().unwrap(),
            ["WARN", "INFO", "DEBUG", "WARN"],
            "warn only, then everything down to debug, then nothing below error"
        );
    }
}
