//! Where the database is and how to reach it: `DATABASE_URL`, or the libpq variables.
//!
//! tokio-postgres parses connection strings but knows only `sslmode` `disable`, `prefer`
//! and `require`, and no `sslrootcert`. We take those two parameters out of the string
//! ourselves, hand the rest to tokio-postgres untouched, and build the TLS policy from
//! them (see `db::tls`). Every other parameter keeps libpq's meaning: several hosts with
//! `target_session_attrs`, `application_name`, `options`; but `connect_timeout`, which
//! is `DB_CONNECT_TIMEOUT_MS`'s alone (a URL that sets it is refused, not overruled).

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::{SslMode as DriverSslMode, TargetSessionAttrs};

use super::env::{ConfigError, Env, SecretError, SecretSource};

/// How to use TLS to PostgreSQL: libpq's `sslmode` values, but `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it. Its certificate is checked only against a root
    /// certificate given (as libpq does); a failed check is an error, never a fall back
    /// to plain TCP.
    Prefer,
    /// TLS or nothing. Without a root certificate the server's certificate is not checked
    /// (encryption against passive eavesdropping only); with one, it is checked as in
    /// `verify-ca`: libpq's rule, so that a root certificate given is never ignored.
    Require,
    /// TLS, the certificate chain checked against `sslrootcert`; the host name is not.
    VerifyCa,
    /// TLS, the chain checked against `sslrootcert` and the certificate must name the
    /// host connected to. The only mode that stops an active attacker on the path.
    VerifyFull,
}

/// What the TLS client checks of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: the connection is encrypted, the peer unauthenticated.
    None,
    /// The chain up to a root in this file.
    Chain(PathBuf),
    /// The chain up to a root in this file, and the host name.
    ChainAndHost(PathBuf),
}

impl SslMode {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "disable" => Some(Self::Disable),
            "prefer" => Some(Self::Prefer),
            "require" => Some(Self::Require),
            "verify-ca" => Some(Self::VerifyCa),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub fn driver_mode(self) -> DriverSslMode {
        match self {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }
}

const SSLMODES: &str = "disable, prefer, require, verify-ca or verify-full";
/// What PostgreSQL shows in `pg_stat_activity` unless the settings name something else.
const DEFAULT_APPLICATION_NAME: &str = "farol";

/// Why a connection string (or the TLS settings of the libpq variables) cannot be used.
/// The messages never quote the string as a whole, which may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("sslmode must be {SSLMODES}, got {0:?}")]
    UnknownSslMode(String),
    #[error("a URL parameter is not valid UTF-8 once decoded")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The word itself is not quoted: after an unquoted space inside a password, it would
    /// be the rest of the password.
    #[error(
        "expected key=value pairs, but word {0} has no value (a value with spaces needs quotes: key='a b')"
    )]
    MissingValue(usize),
    #[error("unterminated quoted value")]
    UnterminatedQuote,
    #[error("not a valid PostgreSQL connection string ({})", option_named(.0))]
    Invalid(#[source] tokio_postgres::Error),
    #[error("no host given")]
    NoHost,
    #[error("{0} ports for {1} hosts: give one port for all or one for each host")]
    PortsForHosts(usize, usize),
    #[error("sslmode {} needs the CA certificate file (sslrootcert / PGSSLROOTCERT)", .0.as_str())]
    RootCertRequired(SslMode),
    #[error("{} is not a readable file", .0.display())]
    RootCertNotAFile(PathBuf),
    /// A libpq variable filled in what the string left out, and that is what is wrong:
    /// the error names it, not `DATABASE_URL`.
    #[error("{1}")]
    InVariable(&'static str, Box<DatabaseUrlError>),
}

/// The driver's reason for refusing a connection string when it names the option whose
/// value is wrong (from the driver's own list of options: never the string's text), else
/// its kind alone: an unknown option's "name" may be a piece of a password that held an
/// unquoted space.
fn option_named(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error).map(ToString::to_string) {
        Some(cause) if cause.starts_with("invalid value for option `") => cause,
        _ => error.to_string(),
    }
}

/// The password of a new connection could not be read: the variable that names its
/// file, and why (never the password).
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {source}")]
pub struct PasswordError {
    pub variable: String,
    #[source]
    pub source: SecretError,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Everything but TLS and a password file. Its `Debug` output redacts the password.
    pub driver: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<PathBuf>,
    /// Where the password comes from, kept apart from `driver` so that a password file is
    /// read again for each new connection (a rotation needs no restart), and so that it
    /// can be compared with the development default.
    password: Option<SecretSource>,
}

impl DatabaseConfig {
    /// From `DATABASE_URL` (or `DATABASE_URL_FILE`), else from `PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD(_FILE)`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`,
    /// `PGTARGETSESSIONATTRS`. As in libpq, the variables also fill in what a
    /// `DATABASE_URL` leaves out (but its host, and the port of a `postgres://` URL): a
    /// `PGSSLMODE=verify-full` beside a URL without `sslmode` is kept, not dropped for
    /// `prefer`.
    pub fn from_env(env: &Env, connect_timeout: Duration) -> Result<Self, ConfigError> {
        let defaults = LibpqVars::from_env(env)?;
        let mut config =
            match env.secret("DATABASE_URL")? {
                Some(url) => Self::from_connection_string_over(url.expose(), defaults).map_err(
                    |problem| match problem {
                        DatabaseUrlError::InVariable(variable, problem) => {
                            ConfigError::new(variable, problem.to_string())
                        }
                        problem => ConfigError::new("DATABASE_URL", problem.to_string()),
                    },
                )?,
                None => Self::from_libpq_vars(env, defaults)?,
            };
        // The driver and libpq refuse lists that do not line up; farol, trying the hosts
        // itself (db::connect), must too, or a host would go to another's port or address.
        let hosts = config.driver.get_hosts().len();
        let (ports, addresses) = (
            config.driver.get_ports().len(),
            config.driver.get_hostaddrs().len(),
        );
        if ports > 1 && ports != hosts || addresses > 0 && addresses != hosts {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!(
                    "{hosts} hosts, {ports} ports and {addresses} hostaddrs: give one port \
                     for all or one for each host, and one hostaddr for each host or none"
                ),
            ));
        }
        if config.driver.get_connect_timeout().is_some() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "sets connect_timeout, which DB_CONNECT_TIMEOUT_MS sets (shared among the \
                 hosts): set that instead",
            ));
        }
        config.driver.connect_timeout(connect_timeout);
        Ok(config)
    }

    /// Parses a `postgres://` URL or a libpq `key=value` string. Errors never quote the
    /// string, which may hold a password.
    pub fn from_connection_string(dsn: &str) -> Result<Self, DatabaseUrlError> {
        Self::from_connection_string_over(dsn, LibpqVars::default())
    }

    /// [`Self::from_connection_string`], with `defaults` for what the string leaves out.
    fn from_connection_string_over(
        dsn: &str,
        defaults: LibpqVars,
    ) -> Result<Self, DatabaseUrlError> {
        let extracted = extract_tls_params(dsn)?;
        let mut driver: tokio_postgres::Config =
            extracted.rest.parse().map_err(DatabaseUrlError::Invalid)?;
        if driver.get_hosts().is_empty() {
            return Err(DatabaseUrlError::NoHost);
        }
        if driver.get_user().is_none()
            && let Some(user) = &defaults.user
        {
            driver.user(user);
        }
        if driver.get_dbname().is_none()
            && let Some(dbname) = &defaults.dbname
        {
            driver.dbname(dbname);
        }
        // (a postgres:// URL without a port has 5432 from the driver's parser already)
        if driver.get_ports().is_empty() && !defaults.ports.is_empty() {
            let hosts = driver.get_hosts().len();
            if defaults.ports.len() > 1 && defaults.ports.len() != hosts {
                return Err(DatabaseUrlError::InVariable(
                    "PGPORT",
                    Box::new(DatabaseUrlError::PortsForHosts(defaults.ports.len(), hosts)),
                ));
            }
            for port in &defaults.ports {
                driver.port(*port);
            }
        }
        if !extracted.sets_session_attrs
            && let Some(attrs) = defaults.target_session_attrs
        {
            driver.target_session_attrs(attrs);
        }
        let password = match driver.get_password() {
            Some(p) => Some(SecretSource::Value(super::Secret::new(
                String::from_utf8_lossy(p),
            ))),
            None => defaults.password,
        };
        // which variable to name if the TLS settings it filled in are what is wrong
        let tls_variable = if extracted.root_cert.is_none() && defaults.root_cert.is_some() {
            Some("PGSSLROOTCERT")
        } else if extracted.ssl_mode.is_none() && defaults.ssl_mode.is_some() {
            Some("PGSSLMODE")
        } else {
            None
        };
        Self::finish(
            driver,
            extracted
                .ssl_mode
                .or(defaults.ssl_mode)
                .unwrap_or(SslMode::Prefer),
            extracted.root_cert.or(defaults.root_cert),
            password,
        )
        .map_err(|problem| match tls_variable {
            Some(variable) => DatabaseUrlError::InVariable(variable, Box::new(problem)),
            None => problem,
        })
    }

    fn from_libpq_vars(env: &Env, vars: LibpqVars) -> Result<Self, ConfigError> {
        let mut driver = tokio_postgres::Config::new();
        // libpq's lists: several hosts, and one port for all of them or one for each
        let hosts: Vec<&str> = env
            .get("PGHOST")
            .unwrap_or("localhost")
            .split(',')
            .collect();
        if hosts.iter().any(|host| host.trim().is_empty()) {
            return Err(ConfigError::new("PGHOST", "an empty host name in the list"));
        }
        for host in &hosts {
            driver.host(host.trim());
        }
        if vars.ports.len() > 1 && vars.ports.len() != hosts.len() {
            return Err(ConfigError::new(
                "PGPORT",
                format!("{} ports for {} hosts", vars.ports.len(), hosts.len()),
            ));
        }
        for port in vars
            .ports
            .iter()
            .chain((vars.ports.is_empty()).then_some(&5432))
        {
            driver.port(*port);
        }
        driver.target_session_attrs(vars.target_session_attrs.unwrap_or(TargetSessionAttrs::Any));
        let user = vars.user.ok_or_else(|| {
            ConfigError::new(
                "DATABASE_URL",
                "not set, and neither is PGUSER: say where the database is",
            )
        })?;
        driver.dbname(vars.dbname.as_deref().unwrap_or(&user));
        driver.user(user);
        // Only the root certificate can be wrong past this point: name its variable.
        Self::finish(
            driver,
            vars.ssl_mode.unwrap_or(SslMode::Prefer),
            vars.root_cert,
            vars.password,
        )
        .map_err(|problem| ConfigError::new("PGSSLROOTCERT", problem.to_string()))
    }

    fn finish(
        mut driver: tokio_postgres::Config,
        ssl_mode: SslMode,
        root_cert: Option<PathBuf>,
        password: Option<SecretSource>,
    ) -> Result<Self, DatabaseUrlError> {
        if matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(DatabaseUrlError::RootCertRequired(ssl_mode));
        }
        if let Some(path) = &root_cert
            && !path.is_file()
        {
            return Err(DatabaseUrlError::RootCertNotAFile(path.clone()));
        }
        driver.ssl_mode(ssl_mode.driver_mode());
        // Notice a peer that vanished without closing the connection (a partition, a
        // killed VM) within about half a minute instead of two hours: for the pool's
        // connections and for the migration's, which may wait on a lock for long.
        driver
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        if driver.get_application_name().is_none() {
            driver.application_name(DEFAULT_APPLICATION_NAME);
        }
        Ok(Self {
            driver,
            ssl_mode,
            root_cert,
            password,
        })
    }

    /// The `sslmode` when it lets the connection to a host beyond this machine go
    /// unencrypted: `disable`, or `prefer`, which falls back to plaintext without a word
    /// (and, like `require` without a CA, would not notice an impostor). Loopback and
    /// Unix sockets never leave the machine.
    pub fn plaintext_beyond_this_machine(&self) -> Option<&'static str> {
        if !matches!(self.ssl_mode, SslMode::Disable | SslMode::Prefer) {
            return None;
        }
        // `hostaddr`, when given, is where the connection goes (the host name is then
        // only checked against the certificate).
        let addresses = self.driver.get_hostaddrs();
        let remote = if addresses.is_empty() {
            self.driver.get_hosts().iter().any(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => {
                    name != "localhost"
                        && !name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                }
                tokio_postgres::config::Host::Unix(_) => false,
            })
        } else {
            addresses.iter().any(|ip| !ip.is_loopback())
        };
        remote.then_some(self.ssl_mode.as_str())
    }

    /// Where the password comes from, if anywhere.
    pub fn password(&self) -> Option<&SecretSource> {
        self.password.as_ref()
    }

    /// The driver settings for a new connection: `driver` with the password as it is now
    /// (a password file is read again here). The error names the file, never a secret.
    pub fn connection_settings(&self) -> Result<tokio_postgres::Config, PasswordError> {
        let mut driver = self.driver.clone();
        if let Some(source) = &self.password {
            let password = source.read().map_err(|problem| PasswordError {
                variable: source.variable().to_owned(),
                source: problem,
            })?;
            driver.password(password.expose());
        }
        Ok(driver)
    }

    /// What the TLS client must check, libpq's way: a root certificate given is always
    /// used (`prefer` and `require` with one check the chain as `verify-ca` does).
    pub fn verification(&self) -> Verification {
        match (self.ssl_mode, &self.root_cert) {
            (SslMode::VerifyFull, Some(root)) => Verification::ChainAndHost(root.clone()),
            (SslMode::Disable, _) | (_, None) => Verification::None,
            (_, Some(root)) => Verification::Chain(root.clone()),
        }
    }

    /// `host:port/dbname` for logs: enough to tell where, nothing secret. With several
    /// hosts, all of them.
    pub fn describe(&self) -> String {
        let ports = self.driver.get_ports();
        let hosts: Vec<String> = self
            .driver
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                };
                // libpq: one port for every host, or one per host.
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                format!("{host}:{port}")
            })
            .collect();
        let db = self.driver.get_dbname().unwrap_or("?");
        format!("{}/{db}", hosts.join(","))
    }
}

/// The libpq variables but `PGHOST`, read and checked (an error names its variable):
/// the whole configuration without `DATABASE_URL`, the defaults of what it leaves out
/// with it.
#[derive(Default)]
struct LibpqVars {
    ports: Vec<u16>,
    user: Option<String>,
    dbname: Option<String>,
    password: Option<SecretSource>,
    ssl_mode: Option<SslMode>,
    root_cert: Option<PathBuf>,
    target_session_attrs: Option<TargetSessionAttrs>,
}

impl LibpqVars {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        fn optional<T>(
            env: &Env,
            name: &str,
            expected: &str,
            parse: fn(&str) -> Option<T>,
        ) -> Result<Option<T>, ConfigError> {
            env.parse_or(name, None, expected, |s| parse(s).map(Some))
        }
        Ok(Self {
            ports: env.parse_or(
                "PGPORT",
                Vec::new(),
                "a port number (1-65535), or a comma-separated list of one for each host",
                |s| {
                    s.split(',')
                        .map(|p| p.trim().parse().ok().filter(|p: &u16| *p > 0))
                        .collect()
                },
            )?,
            user: env.get("PGUSER").map(str::to_owned),
            dbname: env.get("PGDATABASE").map(str::to_owned),
            password: env.secret_source("PGPASSWORD")?,
            ssl_mode: optional(env, "PGSSLMODE", SSLMODES, SslMode::parse)?,
            root_cert: env.get("PGSSLROOTCERT").map(PathBuf::from),
            target_session_attrs: optional(
                env,
                "PGTARGETSESSIONATTRS",
                "any, read-write or read-only",
                |s| match s {
                    "any" => Some(TargetSessionAttrs::Any),
                    "read-write" => Some(TargetSessionAttrs::ReadWrite),
                    "read-only" => Some(TargetSessionAttrs::ReadOnly),
                    _ => None,
                },
            )?,
        })
    }
}

/// A connection string without `sslmode` and `sslrootcert`, their values, and whether it
/// chose its `target_session_attrs` (which the driver's default cannot tell).
struct Extracted {
    rest: String,
    ssl_mode: Option<SslMode>,
    root_cert: Option<PathBuf>,
    sets_session_attrs: bool,
}

/// Removes `sslmode` and `sslrootcert` from a connection string, in either form.
fn extract_tls_params(dsn: &str) -> Result<Extracted, DatabaseUrlError> {
    let mut ssl_mode = None;
    let mut root_cert = None;
    let mut sets_session_attrs = false;
    let mut take = |key: &str, value: &str| -> Result<bool, DatabaseUrlError> {
        match key {
            "target_session_attrs" => {
                sets_session_attrs = true;
                Ok(false)
            }
            "sslmode" => {
                ssl_mode = Some(
                    SslMode::parse(value)
                        .ok_or_else(|| DatabaseUrlError::UnknownSslMode(value.to_owned()))?,
                );
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        strip_url_params(dsn, &mut take)?
    } else {
        strip_keyword_params(dsn, &mut take)?
    };
    Ok(Extracted {
        rest,
        ssl_mode,
        root_cert,
        sets_session_attrs,
    })
}

type Take<'a> = dyn FnMut(&str, &str) -> Result<bool, DatabaseUrlError> + 'a;

/// Takes parameters out of a URL's query. The parameters kept are passed on byte for byte,
/// as the user wrote them: tokio-postgres percent-decodes them itself, and re-encoding
/// them here (form encoding turns a space into `+`, which it then reads as a plus sign)
/// would change their values.
fn strip_url_params(url: &str, take: &mut Take<'_>) -> Result<String, DatabaseUrlError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&percent_decode(key)?, &percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

/// Percent-decoding as libpq does it for URIs: `%XX` only (a `+` stays a plus).
fn percent_decode(text: &str) -> Result<String, DatabaseUrlError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(DatabaseUrlError::NotUtf8)
}

/// libpq's `key=value key='quoted value'` form: values may be single-quoted, with `\'`
/// and `\\` escapes inside.
fn strip_keyword_params(dsn: &str, take: &mut Take<'_>) -> Result<String, DatabaseUrlError> {
    let mut kept = Vec::new();
    let mut chars = dsn.char_indices().peekable();
    let mut words = 0;
    loop {
        words += 1;
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(DatabaseUrlError::MissingValue(words));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(DatabaseUrlError::UnterminatedQuote),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(DatabaseUrlError::UnterminatedQuote),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map_or(dsn.len(), |&(i, _)| i);
        if !take(&key, &value)? {
            kept.push(&dsn[start..end]);
        }
    }
    Ok(kept.iter().map(|s| s.trim()).collect::<Vec<_>>().join(" "))
}

/// `DB_PREPARED_STATEMENTS`: how statements reach the server (see `db::session`), `named`
/// (the default) or `unnamed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// Prepared once per connection and cached: the fastest, with a session of its own.
    Named,
    /// One round trip each, nothing kept on the server: for a pooler in transaction mode.
    Unnamed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_parameters_are_taken_out() {
        let got = extract_tls_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(got.rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(got.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(got.root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(!got.sets_session_attrs);
    }

    #[test]
    fn keyword_tls_parameters_are_taken_out() {
        let got =
            extract_tls_params("host=h sslmode = require password='a b\\'c' sslrootcert='/x y'") // pragma: allowlist secret (a test input of the TLS parameter parser)
                .unwrap();
        assert_eq!(got.rest, "host=h password='a b\\'c'"); // pragma: allowlist secret (the expected output of the same test input)
        assert_eq!(got.ssl_mode, Some(SslMode::Require));
        assert_eq!(got.root_cert, Some(PathBuf::from("/x y")));
    }

    #[test]
    fn plaintext_is_flagged_only_beyond_this_machine_without_tls() {
        let risk = |dsn: &str| {
            DatabaseConfig::from_connection_string(dsn)
                .unwrap()
                .plaintext_beyond_this_machine()
        };
        assert_eq!(
            risk("postgres://db.internal/x"),
            Some("prefer"),
            "the default"
        );
        assert_eq!(
            risk("postgres://10.0.0.5/x?sslmode=disable"),
            Some("disable")
        );
        assert_eq!(
            risk("host=localhost,db.internal dbname=x sslmode=prefer"),
            Some("prefer")
        );
        assert_eq!(
            risk("host=localhost hostaddr=10.0.0.5 dbname=x"),
            Some("prefer"),
            "hostaddr is where it goes"
        );
        for safe in [
            "postgres://db.internal/x?sslmode=require",
            "postgres://localhost/x?sslmode=disable",
            "postgres://127.0.0.1/x",
            "postgres://[::1]/x",
            "host=/run/postgresql dbname=x sslmode=disable",
            "host=db.internal hostaddr=127.0.0.1 dbname=x",
        ] {
            assert_eq!(risk(safe), None, "{safe}");
        }
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        let err =
            DatabaseConfig::from_connection_string("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(
            matches!(&err, DatabaseUrlError::UnknownSslMode(mode) if mode == "allow"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("disable, prefer, require, verify-ca or verify-full"),
            "{err}"
        );
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        for mode in ["verify-ca", "verify-full"] {
            let err =
                DatabaseConfig::from_connection_string(&format!("postgres://h/db?sslmode={mode}"))
                    .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("sslrootcert") && text.contains(mode),
                "{text}"
            );
        }
    }

    #[test]
    fn require_with_a_root_certificate_checks_the_chain_as_libpq_does() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let ca_path = ca.path().to_path_buf();
        let with = |mode: &str| {
            DatabaseConfig::from_connection_string(&format!(
                "postgres://h/db?sslmode={mode}&sslrootcert={}",
                ca_path.display()
            ))
            .unwrap()
            .verification()
        };
        assert_eq!(with("require"), Verification::Chain(ca_path.clone()));
        assert_eq!(with("verify-ca"), Verification::Chain(ca_path.clone()));
        assert_eq!(
            with("verify-full"),
            Verification::ChainAndHost(ca_path.clone())
        );
        assert_eq!(with("prefer"), Verification::Chain(ca_path.clone()));
        let plain = DatabaseConfig::from_connection_string("postgres://h/db?sslmode=require");
        assert_eq!(plain.unwrap().verification(), Verification::None);
    }

    #[test]
    fn url_parameters_reach_the_driver_with_their_percent_decoded_values() {
        let db = DatabaseConfig::from_connection_string(
            "postgres://u@h/db?application_name=my%20app&options=-c%20search_path%3Dapp&sslmode=disable",
        )
        .unwrap();
        assert_eq!(db.driver.get_application_name(), Some("my app"));
        assert_eq!(db.driver.get_options(), Some("-c search_path=app"));
        let plus = DatabaseConfig::from_connection_string("postgres://u@h/db?application_name=a+b")
            .unwrap();
        assert_eq!(
            plus.driver.get_application_name(),
            Some("a+b"),
            "a plus stays a plus"
        );
    }

    #[test]
    fn the_application_name_defaults_to_farol() {
        let db = DatabaseConfig::from_connection_string("postgres://u@h/db").unwrap();
        assert_eq!(db.driver.get_application_name(), Some("farol"));
    }

    #[test]
    fn several_hosts_are_described_with_their_ports() {
        let db = DatabaseConfig::from_connection_string(
            "postgres://u@a:5433,b:5434/db?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(db.describe(), "a:5433,b:5434/db");
    }

    #[test]
    fn errors_never_quote_the_password() {
        let err = DatabaseConfig::from_connection_string("postgres://u:hunter2@h:notaport/db")
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        assert!(
            err.to_string().contains("invalid value for option `port`"),
            "the option is named: {err}"
        );
        // an unknown option's name is not quoted back: it may be part of a password
        let err = DatabaseConfig::from_connection_string("host=h hunter2=x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_password_with_an_unquoted_space_is_not_quoted_back() {
        let dsn = "host=h password=hunter2 rest dbname=d"; // pragma: allowlist secret (made up)
        let err = DatabaseConfig::from_connection_string(dsn).unwrap_err();
        assert!(matches!(err, DatabaseUrlError::MissingValue(3)), "{err:?}");
        assert!(!err.to_string().contains("rest"), "{err}");
        assert!(err.to_string().contains("word 3"), "{err}");
    }

    #[test]
    fn the_password_is_kept_and_the_default_mode_is_prefer() {
        let db = DatabaseConfig::from_connection_string("postgres://u:pw@h/db").unwrap();
        assert_eq!(db.password().unwrap().read().unwrap().expose(), "pw");
        assert_eq!(db.ssl_mode, SslMode::Prefer);
        assert_eq!(db.describe(), "h:5432/db");
        assert!(!format!("{db:?}").contains("\"pw\""));
    }

    #[test]
    fn libpq_variables_are_read() {
        let env = Env::from_pairs([
            ("PGHOST", "db"),
            ("PGUSER", "farol"),
            ("PGPASSWORD", "x"),
            ("PGSSLMODE", "disable"),
        ]);
        let db = DatabaseConfig::from_env(&env, Duration::from_secs(1)).unwrap();
        assert_eq!(db.describe(), "db:5432/farol");
        assert_eq!(db.ssl_mode, SslMode::Disable);
    }

    #[test]
    fn a_password_file_is_read_again_for_each_connection() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "first\n").unwrap();
        let env = Env::from_pairs([
            ("PGUSER", "farol"),
            ("PGPASSWORD_FILE", file.to_str().unwrap()),
        ]);
        let db = DatabaseConfig::from_env(&env, Duration::from_secs(1)).unwrap();
        assert_eq!(
            db.connection_settings().unwrap().get_password(),
            Some(&b"first"[..])
        );
        std::fs::write(&file, "second\n").unwrap();
        assert_eq!(
            db.connection_settings().unwrap().get_password(),
            Some(&b"second"[..])
        );
        std::fs::remove_file(&file).unwrap();
        let err = db.connection_settings().unwrap_err();
        assert_eq!(err.variable, "PGPASSWORD_FILE");
        let text = err.to_string();
        assert!(
            text.contains("PGPASSWORD_FILE") && text.contains("password"),
            "{text}"
        );
    }

    #[test]
    fn libpq_lists_of_hosts_and_ports_are_read() {
        let env = Env::from_pairs([
            ("PGHOST", "db-1, db-2"),
            ("PGPORT", "5432,5433"),
            ("PGUSER", "farol"),
            ("PGTARGETSESSIONATTRS", "read-write"),
        ]);
        let db = DatabaseConfig::from_env(&env, Duration::from_secs(1)).unwrap();
        assert_eq!(db.describe(), "db-1:5432,db-2:5433/farol");
        assert_eq!(
            db.driver.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        for (variable, value) in [
            ("PGPORT", "5432,5433,5434"),
            ("PGHOST", "db-1,,db-2"),
            ("PGTARGETSESSIONATTRS", "primary"),
        ] {
            let mut pairs = vec![("PGHOST", "db-1,db-2"), ("PGUSER", "farol")];
            pairs.retain(|(name, _)| *name != variable);
            pairs.push((variable, value));
            let err = DatabaseConfig::from_env(&Env::from_pairs(pairs), Duration::from_secs(1))
                .unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
        }
    }

    #[test]
    fn lists_of_hosts_ports_and_addresses_that_do_not_line_up_are_refused() {
        for url in [
            "host=a,b,c port=1,2 user=u",
            "host=a,b hostaddr=10.0.0.1 user=u",
        ] {
            let env = Env::from_pairs([("DATABASE_URL", url)]);
            let err = DatabaseConfig::from_env(&env, Duration::from_secs(1)).unwrap_err();
            assert_eq!(err.variable, "DATABASE_URL", "{url}");
        }
        let env = Env::from_pairs([(
            "DATABASE_URL",
            "host=a,b port=1 hostaddr=10.0.0.1,10.0.0.2 user=u",
        )]);
        DatabaseConfig::from_env(&env, Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn the_libpq_variables_fill_in_what_the_url_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "").unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "from-file\n").unwrap();
        let vars = [
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", ca.to_str().unwrap()),
            ("PGPASSWORD_FILE", password.to_str().unwrap()),
            ("PGUSER", "env-user"),
            ("PGDATABASE", "env-db"),
            ("PGPORT", "6543"),
            ("PGTARGETSESSIONATTRS", "read-write"),
            ("PGHOST", "env-host"),
        ];
        let with = |url: &str| {
            let pairs = vars.iter().copied().chain([("DATABASE_URL", url)]);
            DatabaseConfig::from_env(&Env::from_pairs(pairs), Duration::from_secs(1)).unwrap()
        };
        let filled = with("host=url-host");
        assert_eq!(
            filled.ssl_mode,
            SslMode::VerifyFull,
            "not dropped for prefer"
        );
        assert_eq!(filled.root_cert.as_deref(), Some(ca.as_path()));
        assert_eq!(filled.describe(), "url-host:6543/env-db", "the URL's host");
        assert_eq!(filled.driver.get_user(), Some("env-user"));
        assert_eq!(
            filled.driver.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(
            filled.connection_settings().unwrap().get_password(),
            Some(&b"from-file"[..])
        );
        // what the URL says wins
        let own = with(
            "postgres://u:pw@url-host:5432/db?sslmode=disable&target_session_attrs=any", // pragma: allowlist secret (made up)
        );
        assert_eq!(own.ssl_mode, SslMode::Disable);
        assert_eq!(own.describe(), "url-host:5432/db");
        assert_eq!(own.driver.get_user(), Some("u"));
        assert_eq!(
            own.driver.get_target_session_attrs(),
            TargetSessionAttrs::Any
        );
        assert_eq!(
            own.connection_settings().unwrap().get_password(),
            Some(&b"pw"[..])
        );
        // and a bad variable is named even beside a URL, as is one that fills in wrongly
        for (pairs, variable) in [
            (vec![("PGSSLMODE", "maybe")], "PGSSLMODE"),
            (vec![("PGSSLROOTCERT", "/no/such/ca.pem")], "PGSSLROOTCERT"),
            (vec![("PGSSLMODE", "verify-full")], "PGSSLMODE"),
        ] {
            let pairs = pairs
                .into_iter()
                .chain([("DATABASE_URL", "postgres://u@h/db")]);
            let err = DatabaseConfig::from_env(&Env::from_pairs(pairs), Duration::from_secs(1))
                .unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
        }
        let pairs = [("DATABASE_URL", "host=a,b,c user=u"), ("PGPORT", "1,2")];
        let err =
            DatabaseConfig::from_env(&Env::from_pairs(pairs), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.variable, "PGPORT", "{err}");
    }

    #[test]
    fn a_connect_timeout_in_the_url_is_refused_for_db_connect_timeout_ms() {
        let env = Env::from_pairs([("DATABASE_URL", "postgres://u@h/db?connect_timeout=9")]);
        let err = DatabaseConfig::from_env(&env, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(err.to_string().contains("DB_CONNECT_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn nothing_to_connect_to_is_an_error_naming_database_url() {
        let err = DatabaseConfig::from_env(&Env::default(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
    }
}
