//! Configuration: read once at start-up from the environment (12-factor), except the
//! hot-reloadable keys of [`live`]. Every bad value stops start-up with one line naming
//! the variable (exit code 2, see `cli`).

pub mod budget;
pub mod database;
pub mod env;
pub mod live;
pub mod traces;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use database::{
    DatabaseConfig, DatabaseUrlError, PasswordError, SslMode, Statements, Verification,
};
pub use env::{ConfigError, Env, Secret, SecretError, SecretSource};
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

/// Every setting, in groups: each part of the service is handed its own group.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub shutdown: ShutdownSettings,
    pub chaos: ChaosSettings,
    pub live: LiveSources,
    pub log_format: LogFormat,
    /// `None`: no trace export (no OTLP endpoint set).
    pub traces: Option<traces::TraceSettings>,
}

/// The listeners and the bounds on what clients may hold.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: IpAddr,
    pub port: u16,
    /// When set, `/metrics` is served on this port only.
    pub metrics_port: Option<u16>,
    pub request_timeout: Duration,
    /// Open connections at most; past it, new ones wait in the kernel's listen backlog.
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
    /// Bytes of request bodies and large answers held at once (derived from the memory
    /// budget, not a setting): a body that stops fitting as it arrives, or an answer that
    /// does not fit, is shed (`http::budget`).
    pub payload_budget_bytes: usize,
}

/// Where the database is, and how farol uses it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub connection: DatabaseConfig,
    pub pool_max: usize,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub migrate_on_start: bool,
    /// Named (cached) or unnamed statements: unnamed behind a pooler in transaction mode.
    pub statements: Statements,
}

/// The way out after SIGTERM: serving on for `delay`, then draining within `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownSettings {
    pub delay: Duration,
    pub timeout: Duration,
}

/// Fault injection: only with `enabled` (start-up only) do the live `CHAOS_*` values act.
#[derive(Debug, Clone, Copy)]
pub struct ChaosSettings {
    pub enabled: bool,
}

/// The hot-reloadable settings: their start values, and the directory watched for them.
#[derive(Debug, Clone)]
pub struct LiveSources {
    pub start: LiveSettings,
    pub dir: Option<PathBuf>,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let millis = |name: &str, default, min, max| env.millis(name, default, min, max);
        // 0 asks the kernel for a free port: tests and one-off runs use it.
        let port = |name: &str, default: u16| {
            env.parse_or(name, default, "a port number (0-65535)", |s| s.parse().ok())
        };
        let count = |name: &str, default, max| env.count(name, default, max);
        let flag = |name: &str, default: bool| {
            env.parse_or(name, default, "true or false", env::parse_bool)
        };

        let chaos = ChaosSettings {
            enabled: flag("CHAOS_ENABLED", false)?,
        };
        let memory = budget::memory_budget();
        let connect_timeout = millis("DB_CONNECT_TIMEOUT_MS", 2000, 100, 60_000)?;
        let pool_max = count("DB_POOL_MAX", 16, 1000)?;
        let settings = Self {
            http: HttpSettings {
                host: env.parse_or("HOST", IpAddr::from([0, 0, 0, 0]), "an IP address", |s| {
                    s.parse().ok()
                })?,
                port: port("PORT", 5000)?,
                metrics_port: match env.get("METRICS_PORT") {
                    None => None,
                    Some(_) => Some(port("METRICS_PORT", 0)?),
                },
                request_timeout: millis("REQUEST_TIMEOUT_MS", 10_000, 10, 600_000)?,
                max_connections: count(
                    "MAX_CONNECTIONS",
                    budget::default_max_connections(memory, budget::open_files_limit(), pool_max),
                    1_000_000,
                )?,
                max_concurrent_requests: count("MAX_CONCURRENT_REQUESTS", 1024, 1_000_000)?,
                payload_budget_bytes: budget::payload_budget(memory, budget::BODY_LIMIT_BYTES),
            },
            database: DatabaseSettings {
                connection: DatabaseConfig::from_env(env, connect_timeout)?,
                pool_max,
                connect_timeout,
                query_timeout: millis("DB_QUERY_TIMEOUT_MS", 2000, 10, 60_000)?,
                migrate_on_start: flag("MIGRATE_ON_START", true)?,
                statements: env.parse_or(
                    "DB_PREPARED_STATEMENTS",
                    Statements::Named,
                    "named or unnamed (unnamed behind a pooler in transaction mode)",
                    |s| match s {
                        "named" => Some(Statements::Named),
                        "unnamed" => Some(Statements::Unnamed),
                        _ => None,
                    },
                )?,
            },
            shutdown: ShutdownSettings {
                delay: millis("SHUTDOWN_DELAY_MS", 0, 0, 600_000)?,
                timeout: millis("SHUTDOWN_TIMEOUT_MS", 10_000, 0, 600_000)?,
            },
            chaos,
            live: LiveSources {
                start: LiveSettings::from_env(env, chaos.enabled)?,
                dir: env.get("CONFIG_DIR").map(PathBuf::from),
            },
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
            traces: traces::TraceSettings::from_env(env)?,
        };
        settings.check_consistency()?;
        Ok(settings)
    }

    fn check_consistency(&self) -> Result<(), ConfigError> {
        if self.http.port != 0 && self.http.metrics_port == Some(self.http.port) {
            return Err(ConfigError::new(
                "METRICS_PORT",
                "must differ from PORT (leave it unset to serve /metrics on PORT)",
            ));
        }
        // A database operation waits twice, each wait bounded by DB_QUERY_TIMEOUT_MS: for
        // a pool slot, then the round trip.
        if self.http.request_timeout <= 2 * self.database.query_timeout {
            return Err(ConfigError::new(
                "REQUEST_TIMEOUT_MS",
                format!(
                    "must be greater than twice DB_QUERY_TIMEOUT_MS ({} ms: a pool slot, then \
                     the round trip): else the database's own, more precise answers (busy, \
                     timeout, unavailable) would not come first",
                    self.database.query_timeout.as_millis()
                ),
            ));
        }
        if let Some(dir) = &self.live.dir
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                "CONFIG_DIR",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if self.database.statements == Statements::Unnamed && self.database.migrate_on_start {
            return Err(ConfigError::new(
                "MIGRATE_ON_START",
                "must be false with DB_PREPARED_STATEMENTS=unnamed: migrations hold a \
                 session-level lock, which a pooler in transaction mode cannot keep; run \
                 `farol migrate` against the database itself, without \
                 DB_PREPARED_STATEMENTS=unnamed",
            ));
        }
        let guard = ProductionGuard::new(&self.database.connection);
        let (mode, source) = self.start_mode();
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

    /// The mode the service starts in, and where it came from when not the environment:
    /// a mounted `CONFIG_DIR/APP_MODE` wins.
    fn start_mode(&self) -> (AppMode, &'static str) {
        let start = &self.live.start;
        let from_dir = self
            .live
            .dir
            .as_deref()
            .map(|dir| live::initial_settings(dir, start, self.chaos.enabled).app_mode);
        match from_dir {
            Some(mode) if mode != start.app_mode => (mode, " (from CONFIG_DIR/APP_MODE)"),
            _ => (start.app_mode, ""),
        }
    }

    /// Worth a warning at start-up, not a refusal: production whose database connection
    /// may travel in plaintext beyond this machine. A private network may make that a
    /// choice (the compose stack's is one), so it is said, not forbidden.
    pub fn production_in_plaintext(&self) -> Option<&'static str> {
        (self.start_mode().0 == AppMode::Production)
            .then(|| self.database.connection.plaintext_beyond_this_machine())
            .flatten()
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
        assert_eq!(s.http.port, 5000);
        assert_eq!(s.http.metrics_port, None);
        assert_eq!(s.http.request_timeout, Duration::from_secs(10));
        assert_eq!(s.http.max_concurrent_requests, 1024);
        assert_eq!(s.database.pool_max, 16);
        assert_eq!(s.database.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.database.query_timeout, Duration::from_secs(2));
        assert!(s.database.migrate_on_start);
        assert_eq!(s.database.statements, Statements::Named);
        assert_eq!(s.shutdown.delay, Duration::ZERO);
        assert_eq!(s.shutdown.timeout, Duration::from_secs(10));
        assert!(!s.chaos.enabled);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.live.start, LiveSettings::default());
        assert_eq!(s.live.dir, None);
        assert_eq!(s.traces, None);
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
            ("DB_PREPARED_STATEMENTS", "none"),
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
    fn a_request_timeout_within_two_query_timeouts_is_refused() {
        for (request, query) in [("4000", "2000"), ("1000", "2000"), ("300", "500")] {
            let err = Settings::from_env(&env(&[
                ("REQUEST_TIMEOUT_MS", request),
                ("DB_QUERY_TIMEOUT_MS", query),
            ]))
            .unwrap_err();
            assert_eq!(err.variable, "REQUEST_TIMEOUT_MS", "{request} vs {query}");
            assert!(err.to_string().contains(&format!("({query} ms:")), "{err}");
        }
        let s = Settings::from_env(&env(&[
            ("REQUEST_TIMEOUT_MS", "300"),
            ("DB_QUERY_TIMEOUT_MS", "149"),
        ]))
        .unwrap();
        assert_eq!(s.http.request_timeout, Duration::from_millis(300));
    }

    #[test]
    fn production_to_a_remote_database_without_tls_is_worth_a_warning() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            Settings::from_env(&Env::from_pairs(pairs.iter().copied()))
                .unwrap()
                .production_in_plaintext()
        };
        let remote = ("DATABASE_URL", "postgres://farol@db.internal/farol");
        assert_eq!(with(&[remote, ("APP_MODE", "production")]), Some("prefer"));
        assert_eq!(with(&[remote, ("APP_MODE", "development")]), None);
        let encrypted = (
            "DATABASE_URL",
            "postgres://farol@db.internal/farol?sslmode=require",
        );
        assert_eq!(with(&[encrypted, ("APP_MODE", "production")]), None);
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
    fn unnamed_statements_mean_a_transaction_pooler_where_migrations_cannot_run() {
        let pooled = [("DB_PREPARED_STATEMENTS", "unnamed")];
        let err = Settings::from_env(&env(&pooled)).unwrap_err();
        assert_eq!(err.variable, "MIGRATE_ON_START");
        assert!(err.problem.contains("farol migrate"), "{err}");
        let s = Settings::from_env(&env(&[pooled[0], ("MIGRATE_ON_START", "false")])).unwrap();
        assert_eq!(s.database.statements, Statements::Unnamed);
    }

    #[test]
    fn a_missing_config_dir_is_refused() {
        let err = Settings::from_env(&env(&[("CONFIG_DIR", "/nonexistent/dir")])).unwrap_err();
        assert_eq!(err.variable, "CONFIG_DIR");
    }
}
