//! Structured logs on stdout: one JSON object per line by default (`LOG_FORMAT=text` for
//! humans), written by a background thread so that a slow stdout never stalls a request
//! (`writer.rs`).
//! The level can change at run time (`LOG_LEVEL` in `CONFIG_DIR`).

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Registry, reload};

use crate::config::{LogFormat, LogLevel};

/// Keeps the log writer alive (dropping it flushes what is queued) and changes the level.
pub struct Logging {
    _writer: super::writer::FlushGuard,
    level: reload::Handle<LevelFilter, Registry>,
}

impl Logging {
    /// Installs the global subscriber. Call once, early.
    pub fn init(format: LogFormat, level: LogLevel) -> Self {
        let (writer, guard) = super::writer::batch_writer(std::io::stdout());
        let (filter, handle) = reload::Layer::new(level_filter(level));
        let registry = tracing_subscriber::registry().with(filter);
        match format {
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .event_format(super::json::JsonLines)
                        .with_writer(writer),
                )
                .init(),
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
            level: handle,
        }
    }

    /// A function that sets the level, for the live configuration to call.
    pub fn level_setter(&self) -> impl Fn(LogLevel) + Send + Sync + 'static {
        let handle = self.level.clone();
        move |level| {
            if let Err(error) = handle.reload(level_filter(level)) {
                tracing::warn!(%error, "cannot change the log level");
            }
        }
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
