//! Configuration: read once at start-up from the environment (12-factor), except the
//! hot-reloadable keys of [`live`]. Every bad value stops start-up with one line naming
//! the variable (exit code 2, see `cli`).

pub mod budget;
pub mod database;
pub mod env;
pub mod live;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use database::{DatabaseConfig, SslMode, Verification};
pub use env::{ConfigError, Env, Secret, SecretSource};
pub use live::{AppMode, LiveConfig, LiveSettings, LogLevel};

/// The password of the development compose stack. Anyone can read it in the repository,
/// so production refuses to start with it.
pub const DEVELOPMENT_DEFAULT_PASSWORD: &str = "farol-dev-only";

/// Refuses production with the development default password, wherever the mode would
/// become production: at start-up (the environment and the first read of `CONFIG_DIR`)
/// and at every live switch. The password is read as it is now (a password file may have
/// been rotated) and compared after trimming whitespace.
#[derive(Debug, Clone, Default)]
pub struct ProductionGuard {
    password: Option<SecretSource>,
}

impl ProductionGuard {
    pub fn new(database: &DatabaseConfig) -> Self {
        Self {
            password: database.password().cloned(),
        }
    }

    /// Why production must be refused now, if it must. A password that cannot be read
    /// cannot be shown not to be the development one: refused too.
    pub fn refusal(&self) -> Option<&'static str> {
        match self.password.as_ref()?.read() {
            Err(_) => Some("a database password file that cannot be read"),
            Ok(password) => (password.expose().trim() == DEVELOPMENT_DEFAULT_PASSWORD).then_some(
                "the development default database password (public in the compose file)",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    /// When set, `/metrics` is served on this port only.
    pub metrics_port: Option<u16>,
    pub database: DatabaseConfig,
    pub log_format: LogFormat,
    pub config_dir: Option<PathBuf>,
    pub migrate_on_start: bool,
    pub db_pool_max: usize,
    pub db_connect_timeout: Duration,
    pub db_query_timeout: Duration,
    pub request_timeout: Duration,
    /// Open connections at most; past it, new ones wait in the kernel's listen backlog.
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
    /// Bytes of request bodies held at once (derived from the memory budget, not a
    /// setting): a request whose declared body does not fit is shed.
    pub payload_budget_bytes: usize,
    pub shutdown_delay: Duration,
    pub shutdown_timeout: Duration,
    pub chaos_enabled: bool,
    /// Start values of the hot-reloadable settings.
    pub live: LiveSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let millis = |name: &str, default: u64, min: u64, max: u64| {
            env.parse_or(
                name,
                Duration::from_millis(default),
                &format!("milliseconds from {min} to {max}"),
                |s| {
                    s.parse::<u64>()
                        .ok()
                        .filter(|v| (min..=max).contains(v))
                        .map(Duration::from_millis)
                },
            )
        };
        // 0 asks the kernel for a free port: tests and one-off runs use it.
        let port = |name: &str, default: u16| {
            env.parse_or(name, default, "a port number (0-65535)", |s| s.parse().ok())
        };
        let count = |name: &str, default: usize, max: usize| {
            env.parse_or(
                name,
                default,
                &format!("a whole number from 1 to {max}"),
                |s| s.parse().ok().filter(|n| (1..=max).contains(n)),
            )
        };
        let flag = |name: &str, default: bool| {
            env.parse_or(name, default, "true or false", env::parse_bool)
        };

        let chaos_enabled = flag("CHAOS_ENABLED", false)?;
        let memory = budget::memory_budget();
        let db_connect_timeout = millis("DB_CONNECT_TIMEOUT_MS", 2000, 100, 60_000)?;
        let settings = Self {
            host: env.parse_or("HOST", IpAddr::from([0, 0, 0, 0]), "an IP address", |s| {
                s.parse().ok()
            })?,
            port: port("PORT", 5000)?,
            metrics_port: match env.get("METRICS_PORT") {
                None => None,
                Some(_) => Some(port("METRICS_PORT", 0)?),
            },
            database: DatabaseConfig::from_env(env, db_connect_timeout)?,
            log_format: env.parse_or(
                "LOG_FORMAT",
                LogFormat::Json,
                "json or text",
                |s| match s {
                    "json" => Some(LogFormat::Json),
                    "text" => Some(LogFormat::Text),
                    _ => None,
                },
            )?,
            config_dir: env.get("CONFIG_DIR").map(PathBuf::from),
            migrate_on_start: flag("MIGRATE_ON_START", true)?,
            db_pool_max: count("DB_POOL_MAX", 16, 1000)?,
            db_connect_timeout,
            db_query_timeout: millis("DB_QUERY_TIMEOUT_MS", 2000, 10, 60_000)?,
            request_timeout: millis("REQUEST_TIMEOUT_MS", 10_000, 10, 600_000)?,
            max_connections: count(
                "MAX_CONNECTIONS",
                budget::default_max_connections(memory, budget::open_files_limit()),
                1_000_000,
            )?,
            max_concurrent_requests: count("MAX_CONCURRENT_REQUESTS", 1024, 1_000_000)?,
            payload_budget_bytes: budget::payload_budget(memory, crate::routes::BODY_LIMIT_BYTES),
            shutdown_delay: millis("SHUTDOWN_DELAY_MS", 0, 0, 600_000)?,
            shutdown_timeout: millis("SHUTDOWN_TIMEOUT_MS", 10_000, 0, 600_000)?,
            chaos_enabled,
            live: LiveSettings::from_env(env, chaos_enabled)?,
        };
        settings.check_consistency()?;
        Ok(settings)
    }

    fn check_consistency(&self) -> Result<(), ConfigError> {
        if self.port != 0 && self.metrics_port == Some(self.port) {
            return Err(ConfigError::new(
                "METRICS_PORT",
                "must differ from PORT (leave it unset to serve /metrics on PORT)",
            ));
        }
        if let Some(dir) = &self.config_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                "CONFIG_DIR",
                format!("{} is not a directory", dir.display()),
            ));
        }
        let guard = ProductionGuard::new(&self.database);
        let from_dir = self
            .config_dir
            .as_deref()
            .map(|dir| live::initial_settings(dir, &self.live, self.chaos_enabled).app_mode);
        let (mode, source) = match from_dir {
            Some(mode) if mode != self.live.app_mode => (mode, " (from CONFIG_DIR/APP_MODE)"),
            _ => (self.live.app_mode, ""),
        };
        if mode == AppMode::Production
            && let Some(reason) = guard.refusal()
        {
            return Err(ConfigError::new(
                "APP_MODE",
                format!(
                    "production{source} refuses {reason}: set a real one \
                     (compose: FAROL_DB_PASSWORD_FILE in .env; elsewhere your secret store)"
                ),
            ));
        }
        Ok(())
    }

    /// The `CHAOS_*` variables set without `CHAOS_ENABLED`: worth a warning at start-up,
    /// since they do nothing.
    pub fn ignored_chaos_variables(env: &Env) -> Vec<&'static str> {
        live::CHAOS_KEYS
            .into_iter()
            .filter(|k| env.get(k).is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&str, &str)]) -> Env {
        let mut pairs = vec![("DATABASE_URL", "postgres://farol:pw@localhost/farol")]; // pragma: allowlist secret (a test URL, nothing listens there)
        pairs.extend_from_slice(extra);
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert_eq!(s.port, 5000);
        assert_eq!(s.metrics_port, None);
        assert_eq!(s.db_pool_max, 16);
        assert_eq!(s.db_query_timeout, Duration::from_secs(2));
        assert_eq!(s.request_timeout, Duration::from_secs(10));
        assert_eq!(s.max_concurrent_requests, 1024);
        assert_eq!(s.shutdown_delay, Duration::ZERO);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert!(s.migrate_on_start);
        assert!(!s.chaos_enabled);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.live, LiveSettings::default());
    }

    #[test]
    fn each_bad_value_is_named() {
        for (name, value) in [
            ("PORT", "-1"),
            ("PORT", "70000"),
            ("HOST", "localhost:1"),
            ("METRICS_PORT", "x"),
            ("DB_POOL_MAX", "0"),
            ("DB_QUERY_TIMEOUT_MS", "soon"),
            ("MAX_CONCURRENT_REQUESTS", "-4"),
            ("MAX_CONNECTIONS", "0"),
            ("MIGRATE_ON_START", "maybe"),
            ("LOG_FORMAT", "xml"),
            ("LOG_LEVEL", "loud"),
            ("APP_MODE", "prod"),
            ("CHAOS_ENABLED", "2"),
        ] {
            let err = Settings::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}: {err}");
        }
    }

    #[test]
    fn metrics_port_must_differ() {
        let err = Settings::from_env(&env(&[("METRICS_PORT", "5000")])).unwrap_err();
        assert_eq!(err.variable, "METRICS_PORT");
    }

    #[test]
    fn production_refuses_the_development_password() {
        let e = Env::from_pairs([
            ("PGHOST", "db"),
            ("PGUSER", "farol"),
            ("PGPASSWORD", DEVELOPMENT_DEFAULT_PASSWORD),
            ("APP_MODE", "production"),
        ]);
        let err = Settings::from_env(&e).unwrap_err();
        assert_eq!(err.variable, "APP_MODE");
        assert!(!err.to_string().contains(DEVELOPMENT_DEFAULT_PASSWORD));

        let dev = Env::from_pairs([
            ("PGHOST", "db"),
            ("PGUSER", "farol"),
            ("PGPASSWORD", DEVELOPMENT_DEFAULT_PASSWORD),
        ]);
        assert!(Settings::from_env(&dev).is_ok());
    }

    #[test]
    fn production_from_config_dir_at_start_up_refuses_the_development_password_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("APP_MODE"), "production\n").unwrap();
        let password = format!("{}  \n", DEVELOPMENT_DEFAULT_PASSWORD);
        let e = Env::from_pairs([
            ("PGHOST", "db"),
            ("PGUSER", "farol"),
            ("PGPASSWORD", password.as_str()),
            ("CONFIG_DIR", dir.path().to_str().unwrap()),
        ]);
        let err = Settings::from_env(&e).unwrap_err();
        assert_eq!(err.variable, "APP_MODE");
        assert!(err.problem.contains("CONFIG_DIR"), "{err}");
        assert!(!err.to_string().contains(DEVELOPMENT_DEFAULT_PASSWORD));

        std::fs::write(dir.path().join("APP_MODE"), "development\n").unwrap();
        assert!(Settings::from_env(&e).is_ok());
    }

    #[test]
    fn a_missing_config_dir_is_refused() {
        let err = Settings::from_env(&env(&[("CONFIG_DIR", "/nonexistent/dir")])).unwrap_err();
        assert_eq!(err.variable, "CONFIG_DIR");
    }
}
