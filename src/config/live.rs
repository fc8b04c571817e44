//! The settings that change while the service runs: `APP_MODE`, `LOG_LEVEL`,
//! `CHAOS_ERROR_RATE` and `CHAOS_LATENCY_MS`.
//!
//! Their start values come from the environment. When `CONFIG_DIR` is set (a mounted
//! ConfigMap), a file there named after a key wins over the environment, and
//! [`watch_config_dir`] applies changes within about a second, with no restart. The
//! watcher polls file contents instead of listening for inotify events on visible names:
//! the kubelet updates a ConfigMap volume by writing a new timestamped directory and
//! swapping the `..data` symlink, which changes no visible file name, so an event-based
//! watcher on the names misses it while a content comparison cannot. An invalid value is
//! logged and the last good value kept.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::env::{ConfigError, Env};

pub const KEYS: [&str; 4] = [
    "APP_MODE",
    "LOG_LEVEL",
    "CHAOS_ERROR_RATE",
    "CHAOS_LATENCY_MS",
];
pub const CHAOS_KEYS: [&str; 2] = ["CHAOS_ERROR_RATE", "CHAOS_LATENCY_MS"];
/// Fault injection never waits longer than this, whatever the file says: a drill that
/// sets a huge latency should not hold connections for hours.
const MAX_CHAOS_LATENCY_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppMode {
    Development,
    Production,
}

impl AppMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AppMode::Development => "development",
            AppMode::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One consistent set of the hot-reloadable settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    pub app_mode: AppMode,
    pub log_level: LogLevel,
    /// Share of `/api/*` requests answered with a 500, 0.0..=1.0.
    pub chaos_error_rate: f64,
    pub chaos_latency: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            app_mode: AppMode::Development,
            log_level: LogLevel::Info,
            chaos_error_rate: 0.0,
            chaos_latency: Duration::ZERO,
        }
    }
}

impl LiveSettings {
    /// Start values from the environment. Without `chaos_enabled` the `CHAOS_*` keys are
    /// ignored (the caller warns); a bad value of any key stops start-up.
    pub fn from_env(env: &Env, chaos_enabled: bool) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        for key in KEYS {
            if !chaos_enabled && CHAOS_KEYS.contains(&key) {
                continue;
            }
            if let Some(raw) = env.get(key) {
                settings.apply(key, raw)?;
            }
        }
        Ok(settings)
    }

    /// Sets `key` from its textual form, leaving everything unchanged on error.
    pub fn apply(&mut self, key: &str, raw: &str) -> Result<(), ConfigError> {
        let raw = raw.trim();
        let bad =
            |expected: &str| ConfigError::new(key, format!("expected {expected}, got {raw:?}"));
        match key {
            "APP_MODE" => {
                self.app_mode = match raw {
                    "development" => AppMode::Development,
                    "production" => AppMode::Production,
                    _ => return Err(bad("development or production")),
                }
            }
            "LOG_LEVEL" => {
                self.log_level = match raw.to_ascii_lowercase().as_str() {
                    "trace" => LogLevel::Trace,
                    "debug" => LogLevel::Debug,
                    "info" => LogLevel::Info,
                    "warn" => LogLevel::Warn,
                    "error" => LogLevel::Error,
                    _ => return Err(bad("one of trace, debug, info, warn, error")),
                }
            }
            "CHAOS_ERROR_RATE" => {
                self.chaos_error_rate = raw
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| bad("a fraction from 0.0 to 1.0"))?
            }
            "CHAOS_LATENCY_MS" => {
                self.chaos_latency = raw
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms <= MAX_CHAOS_LATENCY_MS)
                    .map(Duration::from_millis)
                    .ok_or_else(|| bad("milliseconds from 0 to 60000"))?
            }
            _ => return Err(ConfigError::new(key, "not a hot-reloadable setting")),
        }
        Ok(())
    }
}

impl fmt::Display for LiveSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "APP_MODE={} LOG_LEVEL={} CHAOS_ERROR_RATE={} CHAOS_LATENCY_MS={}",
            self.app_mode.as_str(),
            self.log_level.as_str(),
            self.chaos_error_rate,
            self.chaos_latency.as_millis()
        )
    }
}

/// Called with the new settings after every change, e.g. to swap the log filter.
pub type OnChange = Box<dyn Fn(&LiveSettings) + Send + Sync>;

/// The current live settings, shared by every request. Reading is a lock-free load.
#[derive(Clone)]
pub struct LiveConfig {
    current: Arc<ArcSwap<LiveSettings>>,
}

impl LiveConfig {
    pub fn new(initial: LiveSettings) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<LiveSettings>> {
        self.current.load()
    }

    fn store(&self, settings: LiveSettings) {
        self.current.store(Arc::new(settings));
    }
}

/// How the watcher finds and applies changes in a `CONFIG_DIR`.
pub struct DirWatcher {
    dir: PathBuf,
    /// The environment's values: what a key falls back to when its file goes away.
    base: LiveSettings,
    chaos_enabled: bool,
    /// The last content seen per key, so that an unchanged bad file is reported once,
    /// not once per poll.
    last_seen: BTreeMap<&'static str, Option<String>>,
    /// The last good value per key, as text.
    good: BTreeMap<&'static str, String>,
}

impl DirWatcher {
    pub fn new(dir: PathBuf, base: LiveSettings, chaos_enabled: bool) -> Self {
        Self {
            dir,
            base,
            chaos_enabled,
            last_seen: BTreeMap::new(),
            good: BTreeMap::new(),
        }
    }

    /// Reads the directory once and returns the settings it implies, or `None` when no
    /// file changed since the last call.
    pub fn poll(&mut self) -> Option<LiveSettings> {
        let mut changed = false;
        for key in KEYS {
            let content = read_key(&self.dir, key);
            if self.last_seen.get(key) == Some(&content) {
                continue;
            }
            self.last_seen.insert(key, content.clone());
            changed = true;
            match content {
                None => {
                    self.good.remove(key);
                }
                Some(_) if !self.chaos_enabled && CHAOS_KEYS.contains(&key) => {
                    tracing::warn!(
                        key,
                        "ignored: fault injection needs CHAOS_ENABLED=true at start-up"
                    );
                }
                Some(raw) => match LiveSettings::default().apply(key, &raw) {
                    Ok(()) => {
                        self.good.insert(key, raw);
                    }
                    Err(error) => tracing::warn!(
                        key,
                        path = %self.dir.join(key).display(),
                        %error,
                        "invalid value in CONFIG_DIR, keeping the last good value"
                    ),
                },
            }
        }
        changed.then(|| self.effective())
    }

    fn effective(&self) -> LiveSettings {
        let mut settings = self.base.clone();
        for (key, raw) in &self.good {
            // Values in `good` were validated when they were stored.
            let _ = settings.apply(key, raw);
        }
        settings
    }
}

/// A key's file content, following symlinks (the kubelet's `..data` indirection); a
/// missing or unreadable file counts as absent.
fn read_key(dir: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(key))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Applies changes in `watcher`'s directory to `live` every `interval`, for as long as the
/// task runs. The first poll happens at once, so files present at start-up apply before
/// the first request.
pub fn watch_config_dir(
    mut watcher: DirWatcher,
    live: LiveConfig,
    interval: Duration,
    on_change: OnChange,
) -> impl std::future::Future<Output = ()> {
    if let Some(settings) = watcher.poll() {
        apply(&live, settings, &on_change);
    }
    async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Reading a handful of small files: cheap enough to do on the runtime, but
            // a hung network mount must not block a worker thread.
            let (next, settings) = tokio::task::spawn_blocking(move || {
                let settings = watcher.poll();
                (watcher, settings)
            })
            .await
            .expect("the config poll does not panic");
            watcher = next;
            if let Some(settings) = settings {
                apply(&live, settings, &on_change);
            }
        }
    }
}

fn apply(live: &LiveConfig, settings: LiveSettings, on_change: &OnChange) {
    if **live.load() == settings {
        return;
    }
    tracing::info!(settings = %settings, "live configuration changed");
    on_change(&settings);
    live.store(settings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_are_validated() {
        let env = Env::from_pairs([("APP_MODE", "staging")]);
        let err = LiveSettings::from_env(&env, false).unwrap_err();
        assert_eq!(err.variable, "APP_MODE");
        assert!(err.problem.contains("development or production"));
    }

    #[test]
    fn chaos_keys_are_ignored_unless_enabled() {
        let env = Env::from_pairs([("CHAOS_ERROR_RATE", "0.5")]);
        assert_eq!(
            LiveSettings::from_env(&env, false)
                .unwrap()
                .chaos_error_rate,
            0.0
        );
        assert_eq!(
            LiveSettings::from_env(&env, true).unwrap().chaos_error_rate,
            0.5
        );
    }

    #[test]
    fn out_of_range_chaos_values_are_refused() {
        let mut s = LiveSettings::default();
        assert!(s.apply("CHAOS_ERROR_RATE", "1.5").is_err());
        assert!(s.apply("CHAOS_ERROR_RATE", "NaN").is_err());
        assert!(s.apply("CHAOS_LATENCY_MS", "-1").is_err());
        assert!(s.apply("CHAOS_LATENCY_MS", "600000").is_err());
        assert_eq!(s, LiveSettings::default());
    }

    #[test]
    fn files_win_over_the_environment_and_fall_back_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let base = LiveSettings::default();
        let mut watcher = DirWatcher::new(dir.path().into(), base.clone(), true);
        assert_eq!(watcher.poll(), Some(base.clone()));
        assert_eq!(watcher.poll(), None, "nothing changed");

        std::fs::write(dir.path().join("APP_MODE"), "production\n").unwrap();
        assert_eq!(watcher.poll().unwrap().app_mode, AppMode::Production);

        std::fs::remove_file(dir.path().join("APP_MODE")).unwrap();
        assert_eq!(watcher.poll().unwrap().app_mode, AppMode::Development);
    }

    #[test]
    fn a_bad_file_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = DirWatcher::new(dir.path().into(), LiveSettings::default(), true);
        std::fs::write(dir.path().join("CHAOS_ERROR_RATE"), "0.25").unwrap();
        assert_eq!(watcher.poll().unwrap().chaos_error_rate, 0.25);
        std::fs::write(dir.path().join("CHAOS_ERROR_RATE"), "lots").unwrap();
        assert_eq!(watcher.poll().unwrap().chaos_error_rate, 0.25);
    }

    #[test]
    fn chaos_files_are_ignored_unless_enabled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CHAOS_LATENCY_MS"), "500").unwrap();
        let mut watcher = DirWatcher::new(dir.path().into(), LiveSettings::default(), false);
        assert_eq!(watcher.poll().unwrap().chaos_latency, Duration::ZERO);
    }
}
