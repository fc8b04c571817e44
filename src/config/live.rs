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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::ProductionGuard;
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
    guard: ProductionGuard,
    /// The last content seen per key, so that an unchanged bad file is reported once,
    /// not once per poll.
    last_seen: BTreeMap<&'static str, Option<String>>,
    /// The last good value per key, as text.
    good: BTreeMap<&'static str, String>,
    /// Keys whose file could not be read at the last poll (reported once).
    unreadable: BTreeSet<&'static str>,
    /// What the last poll returned; `None` before the first.
    current: Option<LiveSettings>,
    /// Whether a switch to production is being refused (reported once).
    refusing: bool,
}

/// One key's file in one snapshot of the directory.
#[derive(Debug, PartialEq)]
enum KeyFile {
    Present(String),
    Missing,
    Unreadable(String),
}

/// The directory was changed while it was read: the next poll reads it again.
struct Swapped;

impl DirWatcher {
    pub fn new(
        dir: PathBuf,
        base: LiveSettings,
        chaos_enabled: bool,
        guard: ProductionGuard,
    ) -> Self {
        Self {
            dir,
            base,
            chaos_enabled,
            guard,
            last_seen: BTreeMap::new(),
            good: BTreeMap::new(),
            unreadable: BTreeSet::new(),
            current: None,
            refusing: false,
        }
    }

    /// Reads the directory once and returns the settings it implies, or `None` when they
    /// did not change since the last call.
    pub fn poll(&mut self) -> Option<LiveSettings> {
        let snapshot = match read_snapshot(&self.dir) {
            Ok(snapshot) => snapshot,
            Err(Swapped) => return None,
        };
        for (key, file) in snapshot {
            let content = match file {
                KeyFile::Unreadable(error) => {
                    // Not a removal: keep what the key had, say why once.
                    if self.unreadable.insert(key) {
                        tracing::warn!(
                            key,
                            path = %self.dir.join(key).display(),
                            %error,
                            "cannot read a CONFIG_DIR file, keeping the last good value"
                        );
                    }
                    continue;
                }
                KeyFile::Present(text) => Some(text),
                KeyFile::Missing => None,
            };
            self.unreadable.remove(key);
            if self.last_seen.get(key) == Some(&content) {
                continue;
            }
            self.last_seen.insert(key, content.clone());
            self.take(key, content);
        }
        let settings = self.guarded(self.effective());
        if self.current.as_ref() == Some(&settings) {
            return None;
        }
        self.current = Some(settings.clone());
        Some(settings)
    }

    /// Records a key's new file content: a good value, a bad one (kept out), or none.
    fn take(&mut self, key: &'static str, content: Option<String>) {
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

    fn effective(&self) -> LiveSettings {
        let mut settings = self.base.clone();
        for (key, raw) in &self.good {
            // Values in `good` were validated when they were stored.
            let _ = settings.apply(key, raw);
        }
        settings
    }

    /// `settings`, unless they would switch the service to production while the database
    /// password is the public development one: then the mode stays what it was. Checked
    /// at every poll, so that production applies as soon as a real password is in place.
    fn guarded(&mut self, mut settings: LiveSettings) -> LiveSettings {
        let was = self
            .current
            .as_ref()
            .map_or(self.base.app_mode, |c| c.app_mode);
        let refusal = (settings.app_mode == AppMode::Production && was != AppMode::Production)
            .then(|| self.guard.refusal())
            .flatten();
        match refusal {
            Some(reason) => {
                if !self.refusing {
                    tracing::error!(
                        key = "APP_MODE",
                        path = %self.dir.join("APP_MODE").display(),
                        mode = was.as_str(),
                        "refused to switch to production with {reason}; the mode stays {}",
                        was.as_str()
                    );
                }
                self.refusing = true;
                settings.app_mode = was;
            }
            None => self.refusing = false,
        }
        settings
    }
}

/// Reads every key from one snapshot of `dir`. A Kubernetes ConfigMap volume shows each
/// key as a symlink through `..data`, itself a symlink that the kubelet swaps to a new
/// timestamped directory on each update, then deletes the old one: following the keys
/// one by one could read half of the old map and half of the new one, or find the old
/// one's files gone. So `..data` is resolved once, every key is read from that one
/// target, and `..data` is resolved again at the end: if it moved meanwhile, what was
/// read may be half gone, and the next poll reads the new map whole. A plain directory
/// (compose, tests) is read as it is.
fn read_snapshot(dir: &Path) -> Result<Vec<(&'static str, KeyFile)>, Swapped> {
    let data = dir.join("..data");
    let resolve = || match std::fs::canonicalize(&data) {
        Ok(target) => Ok(Some(target)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    };
    let target = match resolve() {
        Ok(target) => target,
        Err(error) => {
            return Ok(KEYS
                .into_iter()
                .map(|key| (key, KeyFile::Unreadable(format!("..data: {error}"))))
                .collect());
        }
    };
    let root = target.clone().unwrap_or_else(|| dir.to_path_buf());
    let files = KEYS
        .into_iter()
        .map(|key| {
            let file = match std::fs::read(root.join(key)) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => KeyFile::Present(text.trim().to_owned()),
                    Err(_) => KeyFile::Unreadable("not UTF-8 text".into()),
                },
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => KeyFile::Missing,
                Err(error) => KeyFile::Unreadable(error.to_string()),
            };
            (key, file)
        })
        .collect();
    if target.is_some() && resolve().ok().flatten() != target {
        tracing::debug!(dir = %dir.display(), "CONFIG_DIR changed while read; reading again at the next poll");
        return Err(Swapped);
    }
    Ok(files)
}

/// The live settings `CONFIG_DIR` gives at start-up, before any guard: for the start-up
/// checks, which refuse a bad start outright instead of keeping a mode.
pub fn initial_settings(dir: &Path, base: &LiveSettings, chaos_enabled: bool) -> LiveSettings {
    let mut watcher = DirWatcher::new(
        dir.to_path_buf(),
        base.clone(),
        chaos_enabled,
        ProductionGuard::default(),
    );
    watcher.poll().unwrap_or_else(|| base.clone())
}

/// Applies changes in `watcher`'s directory to `live` every `interval`, for as long as the
/// task runs. The first poll happens at once, so files present at start-up apply before
/// the first request.
pub fn watch_config_dir(
    mut watcher: DirWatcher,
    live: LiveConfig,
    interval: Duration,
    on_change: OnChange,
) -> impl Future<Output = ()> {
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

    /// A watcher of `dir` over the default settings, with no production guard.
    fn watcher(dir: &Path, chaos_enabled: bool) -> DirWatcher {
        DirWatcher::new(
            dir.into(),
            LiveSettings::default(),
            chaos_enabled,
            ProductionGuard::default(),
        )
    }

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
        let mut watcher = watcher(dir.path(), true);
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
        let mut watcher = watcher(dir.path(), true);
        std::fs::write(dir.path().join("CHAOS_ERROR_RATE"), "0.25").unwrap();
        assert_eq!(watcher.poll().unwrap().chaos_error_rate, 0.25);
        std::fs::write(dir.path().join("CHAOS_ERROR_RATE"), "lots").unwrap();
        assert_eq!(watcher.poll(), None, "nothing applied");
        assert_eq!(watcher.effective().chaos_error_rate, 0.25);
    }

    #[test]
    fn a_file_that_cannot_be_read_keeps_the_last_good_value_only_a_missing_one_reverts() {
        let dir = tempfile::tempdir().unwrap();
        let base = LiveSettings::default();
        let mut watcher = watcher(dir.path(), true);
        let level = dir.path().join("LOG_LEVEL");
        std::fs::write(&level, "debug").unwrap();
        assert_eq!(watcher.poll().unwrap().log_level, LogLevel::Debug);

        // A read error that is not "no such file" (here: a directory in its place).
        std::fs::remove_file(&level).unwrap();
        std::fs::create_dir(&level).unwrap();
        assert_eq!(watcher.poll(), None, "the last good value stays");
        assert_eq!(watcher.effective().log_level, LogLevel::Debug);

        std::fs::remove_dir(&level).unwrap();
        assert_eq!(
            watcher.poll().unwrap().log_level,
            base.log_level,
            "removed: back to the environment"
        );
    }

    /// The kubelet's layout: `..data` points at a timestamped directory, each key is a
    /// symlink through `..data`.
    fn kubelet_dir(root: &Path, snapshots: &[(&str, &[(&str, &str)])], current: &str) {
        for (name, files) in snapshots {
            std::fs::create_dir(root.join(name)).unwrap();
            for (key, value) in *files {
                std::fs::write(root.join(name).join(key), value).unwrap();
            }
        }
        std::os::unix::fs::symlink(current, root.join("..data")).unwrap();
        for key in ["APP_MODE", "LOG_LEVEL"] {
            std::os::unix::fs::symlink(format!("..data/{key}"), root.join(key)).unwrap();
        }
    }

    fn swap_data(root: &Path, to: &str) {
        std::os::unix::fs::symlink(to, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    }

    #[test]
    fn a_map_deleted_while_it_is_read_is_not_taken_for_keys_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        kubelet_dir(
            root,
            &[
                ("..2026_old", &[("LOG_LEVEL", "debug")]),
                ("..2026_new", &[("LOG_LEVEL", "debug")]),
            ],
            "..2026_old",
        );
        let fifo = root.join("..2026_old/APP_MODE");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let mut watcher = watcher(root, false);
        let poll = std::thread::spawn(move || {
            let first = watcher.poll();
            (first, watcher.poll())
        });
        // While the watcher reads the old map, the kubelet swaps and starts deleting it:
        // its LOG_LEVEL is gone before the watcher gets there, its directory not yet.
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        swap_data(root, "..2026_new");
        std::fs::remove_file(root.join("..2026_old/LOG_LEVEL")).unwrap();
        std::io::Write::write_all(&mut writer, b"production").unwrap();
        drop(writer);

        let (first, second) = poll.join().unwrap();
        assert_eq!(first, None, "a poll across a swap applies nothing");
        let applied = second.unwrap();
        assert_eq!(
            (applied.app_mode, applied.log_level),
            (AppMode::Development, LogLevel::Debug),
            "the next poll reads the new map whole; LOG_LEVEL never fell back to the environment"
        );
    }

    #[test]
    fn a_swap_in_the_middle_of_a_poll_never_applies_half_of_each_configmap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        kubelet_dir(
            root,
            &[
                ("..2026_old", &[("LOG_LEVEL", "debug")]),
                (
                    "..2026_new",
                    &[("APP_MODE", "development"), ("LOG_LEVEL", "warn")],
                ),
            ],
            "..2026_old",
        );
        // The old map's APP_MODE is a pipe: the watcher's read of it waits until this
        // test writes, and the test swaps the maps in between, exactly between two reads.
        let fifo = root.join("..2026_old/APP_MODE");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);

        let mut watcher = watcher(root, false);
        let poll = std::thread::spawn(move || {
            let first = watcher.poll();
            (first, watcher.poll())
        });
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        swap_data(root, "..2026_new");
        std::io::Write::write_all(&mut writer, b"production").unwrap();
        drop(writer);

        let (first, second) = poll.join().unwrap();
        assert_eq!(
            first, None,
            "the poll that read across the swap applies nothing (the old code applied production with the new map's warn)"
        );
        let applied = second.unwrap();
        assert_eq!(
            (applied.app_mode, applied.log_level),
            (AppMode::Development, LogLevel::Warn),
            "the next poll applies the new map whole"
        );
    }

    fn guard_with_password(password: &str) -> (tempfile::TempDir, ProductionGuard) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, password).unwrap();
        let env = Env::from_pairs([
            ("PGUSER", "farol"),
            ("PGPASSWORD_FILE", file.to_str().unwrap()),
        ]);
        let db = crate::config::DatabaseConfig::from_env(&env, Duration::from_secs(1)).unwrap();
        (dir, ProductionGuard::new(&db))
    }

    #[test]
    fn a_live_switch_to_production_with_the_development_password_is_refused_until_it_changes() {
        let (secrets, guard) = guard_with_password(&format!(
            " {}\n",
            crate::config::DEVELOPMENT_DEFAULT_PASSWORD
        ));
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = DirWatcher::new(dir.path().into(), LiveSettings::default(), false, guard);
        assert_eq!(watcher.poll().unwrap().app_mode, AppMode::Development);

        std::fs::write(dir.path().join("APP_MODE"), "production").unwrap();
        assert_eq!(watcher.poll(), None, "refused: the mode stays development");
        assert_eq!(watcher.poll(), None);

        std::fs::write(secrets.path().join("password"), "a-real-one\n").unwrap();
        assert_eq!(
            watcher.poll().unwrap().app_mode,
            AppMode::Production,
            "applies once the password is a real one, with no change to the file"
        );
    }

    #[test]
    fn a_password_file_that_cannot_be_read_refuses_production_too() {
        let (secrets, guard) = guard_with_password("a-real-one\n");
        std::fs::remove_file(secrets.path().join("password")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("APP_MODE"), "production").unwrap();
        let mut watcher = DirWatcher::new(dir.path().into(), LiveSettings::default(), false, guard);
        assert_eq!(watcher.poll().unwrap().app_mode, AppMode::Development);
    }

    #[test]
    fn the_start_up_read_of_config_dir_shows_the_mode_it_asks_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("APP_MODE"), "production\n").unwrap();
        let initial = initial_settings(dir.path(), &LiveSettings::default(), false);
        assert_eq!(initial.app_mode, AppMode::Production);
    }

    #[test]
    fn chaos_files_are_ignored_unless_enabled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CHAOS_LATENCY_MS"), "500").unwrap();
        let mut watcher = watcher(dir.path(), false);
        assert_eq!(watcher.poll().unwrap().chaos_latency, Duration::ZERO);
    }
}
