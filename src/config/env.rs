//! Reading settings from a snapshot of the environment.
//!
//! Settings are parsed from an [`Env`] rather than from `std::env` directly, so that tests
//! build any configuration without touching the process environment, and so that every
//! error names the variable it came from.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One bad setting: which variable, and what is wrong with it. Printed as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// A value that must never be logged or shown: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A snapshot of environment variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment as it is now. Variables that are not valid UTF-8 are
    /// skipped: none of ours can be.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `name`; an empty value counts as unset, as in most shells' `${X:-}`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `name` parsed by `parse`, or `default` when unset. `expected` says what is allowed,
    /// for the error message.
    pub fn parse_or<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse(raw.trim())
                .ok_or_else(|| ConfigError::new(name, format!("expected {expected}, got {raw:?}"))),
        }
    }

    /// A whole number from 1 to `max`, or `default` when unset.
    pub fn count(&self, name: &str, default: usize, max: usize) -> Result<usize, ConfigError> {
        self.parse_or(
            name,
            default,
            &format!("a whole number from 1 to {max}"),
            |s| s.parse().ok().filter(|n| (1..=max).contains(n)),
        )
    }

    /// Milliseconds from `min` to `max`, or `default` (in milliseconds) when unset.
    pub fn millis(
        &self,
        name: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        self.parse_or(
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
    }

    /// A secret given either as `name` or as a path in `name_FILE` (Docker secrets,
    /// Kubernetes secret volumes). Both at once is an error: which one wins would be a
    /// guess. A trailing newline in the file is dropped. The value never appears in an error.
    pub fn secret(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        self.secret_source(name)?
            .map(|source| {
                source
                    .read()
                    .map_err(|problem| ConfigError::new(source.variable(), problem.to_string()))
            })
            .transpose()
    }

    /// Like [`Env::secret`], but a file stays a file: [`SecretSource::read`] reads it again
    /// each time, so that a rotated secret needs no restart. The file is read once here
    /// all the same, so that a missing or empty one stops start-up.
    pub fn secret_source(&self, name: &str) -> Result<Option<SecretSource>, ConfigError> {
        let file_var = format!("{name}_FILE");
        let source = match (self.get(name), self.get(&file_var)) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    name,
                    format!("set either {name} or {file_var}, not both"),
                ));
            }
            (Some(value), None) => SecretSource::Value(Secret::new(value)),
            (None, Some(path)) => SecretSource::File {
                variable: file_var,
                path: PathBuf::from(path),
            },
            (None, None) => return Ok(None),
        };
        source
            .read()
            .map_err(|problem| ConfigError::new(source.variable(), problem.to_string()))?;
        Ok(Some(source))
    }
}

/// Where a secret comes from: a value, or a file read anew at each use.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Value(Secret),
    File { variable: String, path: PathBuf },
}

impl SecretSource {
    /// The secret as it is now. The error names the file, never its content.
    pub fn read(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Value(secret) => Ok(secret.clone()),
            SecretSource::File { path, .. } => read_secret_file(path),
        }
    }

    /// The variable it was configured with, for messages.
    pub fn variable(&self) -> &str {
        match self {
            SecretSource::Value(_) => "the connection settings",
            SecretSource::File { variable, .. } => variable,
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("SecretSource::Value(..)"),
            SecretSource::File { variable, path } => f
                .debug_struct("SecretSource::File")
                .field("variable", variable)
                .field("path", path)
                .finish(),
        }
    }
}

/// Why a secret file gave no secret. The messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let content = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let value = content.strip_suffix('\n').unwrap_or(&content);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(SecretError::Empty(path.to_owned()));
    }
    Ok(Secret::new(value))
}

pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("PORT", "")]);
        assert_eq!(env.get("PORT"), None);
    }

    #[test]
    fn parse_errors_name_the_variable_and_the_allowed_values() {
        let env = Env::from_pairs([("PORT", "http")]);
        let err = env
            .parse_or("PORT", 5000u16, "a port number", |s| s.parse().ok())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"PORT: expected a port number, got "http""#
        );
    }

    #[test]
    fn secrets_come_from_a_file_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let env = Env::from_pairs([("PGPASSWORD_FILE", path.to_str().unwrap())]);
        assert_eq!(
            env.secret("PGPASSWORD").unwrap().unwrap().expose(),
            "s3cret"
        );
    }

    #[test]
    fn a_secret_given_twice_is_refused_without_showing_it() {
        let env = Env::from_pairs([("PGPASSWORD", "hunter2"), ("PGPASSWORD_FILE", "/x")]);
        let err = env.secret("PGPASSWORD").unwrap_err();
        assert!(err.to_string().contains("not both"));
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn a_missing_secret_file_is_named() {
        let env = Env::from_pairs([("PGPASSWORD_FILE", "/nonexistent/pw")]);
        let err = env.secret("PGPASSWORD").unwrap_err();
        assert_eq!(err.variable, "PGPASSWORD_FILE");
        assert!(err.problem.contains("/nonexistent/pw"));
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(..)");
    }
}
