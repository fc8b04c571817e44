//! Where the database is and how to reach it: `DATABASE_URL`, or the libpq variables.
//!
//! tokio-postgres parses connection strings but knows only `sslmode` `disable`, `prefer`
//! and `require`, and no `sslrootcert`. We take those two parameters out of the string
//! ourselves, hand the rest to tokio-postgres, and build the TLS policy from them
//! (see `db::tls`).

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::SslMode as DriverSslMode;

use super::env::{ConfigError, Env, Secret};

/// How to use TLS to PostgreSQL, libpq's `sslmode` values that we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, without checking its certificate.
    Prefer,
    /// TLS or nothing, without checking the certificate (encryption against passive
    /// eavesdropping only, as in libpq).
    Require,
    /// TLS, the certificate checked against `sslrootcert` and the host name.
    VerifyFull,
}

impl SslMode {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "disable" => Some(Self::Disable),
            "prefer" => Some(Self::Prefer),
            "require" => Some(Self::Require),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }

    pub fn driver_mode(self) -> DriverSslMode {
        match self {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }
}

const SSLMODES: &str = "disable, prefer, require or verify-full";

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Everything but TLS. Its `Debug` output redacts the password.
    pub driver: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<PathBuf>,
    /// The password, kept apart to compare it with the development default.
    password: Option<Secret>,
}

impl DatabaseConfig {
    /// From `DATABASE_URL` (or `DATABASE_URL_FILE`), else from `PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD(_FILE)`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`.
    pub fn from_env(env: &Env, connect_timeout: Duration) -> Result<Self, ConfigError> {
        let mut config = match env.secret("DATABASE_URL")? {
            Some(url) => Self::from_connection_string(url.expose())
                .map_err(|problem| ConfigError::new("DATABASE_URL", problem))?,
            None => Self::from_libpq_vars(env)?,
        };
        config.driver.connect_timeout(connect_timeout);
        config.driver.application_name("farol");
        Ok(config)
    }

    /// Parses a `postgres://` URL or a libpq `key=value` string. Errors never quote the
    /// string, which may hold a password.
    pub fn from_connection_string(dsn: &str) -> Result<Self, String> {
        let (rest, ssl_mode, root_cert) = extract_tls_params(dsn)?;
        let driver: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| format!("not a valid PostgreSQL connection string ({e})"))?;
        if driver.get_hosts().is_empty() {
            return Err("no host given".into());
        }
        let password = driver
            .get_password()
            .map(|p| Secret::new(String::from_utf8_lossy(p)));
        Self::finish(
            driver,
            ssl_mode.unwrap_or(SslMode::Prefer),
            root_cert,
            password,
        )
        .map_err(|e| e.problem)
    }

    fn from_libpq_vars(env: &Env) -> Result<Self, ConfigError> {
        let mut driver = tokio_postgres::Config::new();
        driver.host(env.get("PGHOST").unwrap_or("localhost"));
        let port = env.parse_or("PGPORT", 5432u16, "a port number (1-65535)", |s| {
            s.parse().ok().filter(|p| *p > 0)
        })?;
        driver.port(port);
        let user = env.get("PGUSER").ok_or_else(|| {
            ConfigError::new(
                "DATABASE_URL",
                "not set, and neither is PGUSER: say where the database is",
            )
        })?;
        driver.user(user);
        driver.dbname(env.get("PGDATABASE").unwrap_or(user));
        let password = env.secret("PGPASSWORD")?;
        if let Some(password) = &password {
            driver.password(password.expose());
        }
        let ssl_mode = env.parse_or("PGSSLMODE", SslMode::Prefer, SSLMODES, SslMode::parse)?;
        let root_cert = env.get("PGSSLROOTCERT").map(PathBuf::from);
        Self::finish(driver, ssl_mode, root_cert, password).map_err(|e| ConfigError {
            variable: e.variable.replace("sslrootcert", "PGSSLROOTCERT"),
            problem: e.problem,
        })
    }

    fn finish(
        mut driver: tokio_postgres::Config,
        ssl_mode: SslMode,
        root_cert: Option<PathBuf>,
        password: Option<Secret>,
    ) -> Result<Self, ConfigError> {
        if ssl_mode == SslMode::VerifyFull && root_cert.is_none() {
            return Err(ConfigError::new(
                "sslrootcert",
                "sslmode verify-full needs the CA certificate file (sslrootcert / PGSSLROOTCERT)",
            ));
        }
        if let Some(path) = &root_cert
            && !path.is_file()
        {
            return Err(ConfigError::new(
                "sslrootcert",
                format!("{} is not a readable file", path.display()),
            ));
        }
        driver.ssl_mode(ssl_mode.driver_mode());
        Ok(Self {
            driver,
            ssl_mode,
            root_cert,
            password,
        })
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// `host:port/dbname` for logs: enough to tell where, nothing secret.
    pub fn describe(&self) -> String {
        let host = match self.driver.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.driver.get_ports().first().copied().unwrap_or(5432);
        let db = self.driver.get_dbname().unwrap_or("?");
        format!("{host}:{port}/{db}")
    }
}

/// Removes `sslmode` and `sslrootcert` from a connection string, in either form, and
/// returns what is left and their values.
fn extract_tls_params(dsn: &str) -> Result<(String, Option<SslMode>, Option<PathBuf>), String> {
    let mut ssl_mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                ssl_mode = Some(
                    SslMode::parse(value)
                        .ok_or_else(|| format!("sslmode must be {SSLMODES}, got {value:?}"))?,
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
    Ok((rest, ssl_mode, root_cert))
}

type Take<'a> = dyn FnMut(&str, &str) -> Result<bool, String> + 'a;

fn strip_url_params(url: &str, take: &mut Take<'_>) -> Result<String, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if !take(&key, &value)? {
            kept.append_pair(&key, &value);
        }
    }
    let kept = kept.finish();
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{kept}")
    })
}

/// libpq's `key=value key='quoted value'` form: values may be single-quoted, with `\'`
/// and `\\` escapes inside.
fn strip_keyword_params(dsn: &str, take: &mut Take<'_>) -> Result<String, String> {
    let mut kept = Vec::new();
    let mut chars = dsn.char_indices().peekable();
    loop {
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
            return Err(format!(
                "expected key=value pairs, found {key:?} without a value"
            ));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated quoted value".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated quoted value".into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_parameters_are_taken_out() {
        let (rest, mode, cert) = extract_tls_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(cert, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn keyword_tls_parameters_are_taken_out() {
        let (rest, mode, cert) =
            extract_tls_params("host=h sslmode = require password='a b\\'c' sslrootcert='/x y'") // pragma: allowlist secret (a test input of the TLS parameter parser)
                .unwrap();
        assert_eq!(rest, "host=h password='a b\\'c'"); // pragma: allowlist secret (the expected output of the same test input)
        assert_eq!(mode, Some(SslMode::Require));
        assert_eq!(cert, Some(PathBuf::from("/x y")));
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        let err =
            DatabaseConfig::from_connection_string("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(
            err.contains("disable, prefer, require or verify-full"),
            "{err}"
        );
    }

    #[test]
    fn verify_full_needs_a_root_certificate() {
        let err = DatabaseConfig::from_connection_string("postgres://h/db?sslmode=verify-full")
            .unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
    }

    #[test]
    fn errors_never_quote_the_password() {
        let err = DatabaseConfig::from_connection_string("postgres://u:hunter2@h:notaport/db")
            .unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_password_is_kept_and_the_default_mode_is_prefer() {
        let db = DatabaseConfig::from_connection_string("postgres://u:pw@h/db").unwrap();
        assert_eq!(db.password().unwrap().expose(), "pw");
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
    fn nothing_to_connect_to_is_an_error_naming_database_url() {
        let err = DatabaseConfig::from_env(&Env::default(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
    }
}
