//! Schema migrations, embedded in the binary from `migrations/`.
//!
//! They run under a session-level PostgreSQL advisory lock, so that replicas starting
//! together (or a Job beside running pods) apply each migration exactly once: the others
//! wait for the lock, then find nothing left to do. The wait for the lock is bounded (the
//! caller retries and says why); the migration itself never is: a migration cut short
//! by a timeout would start again from the beginning and could never finish.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::telemetry::error_chain;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The advisory lock key: "farol" in ASCII, unlikely to collide with anyone else's.
const LOCK_KEY: i64 = 0x66_61_72_6f_6c;
const HISTORY_TABLE: &str = "refinery_schema_history";

/// The newest migration this binary knows.
pub fn latest_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// How long to wait for another instance's migration lock before saying so and trying
/// again.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Another instance is migrating: try again later.
    #[error("another instance holds the migration lock (waited {} s)", .0.as_secs())]
    LockBusy(Duration),
    /// The history lacks this migration of the release, or holds it changed (see
    /// [`Schema::Diverged`]).
    #[error(
        "the database's migration history lacks migration {0} of this release, or holds it \
         changed: this release cannot serve on it"
    )]
    Diverged(i32),
    #[error("{0}")]
    Failed(String),
}

/// How often a migration that is still running says so in the log.
const STILL_MIGRATING_EVERY: Duration = Duration::from_secs(30);

/// Applies pending migrations; returns how many were applied. Waits at most `lock_wait`
/// for the migration lock.
pub async fn apply(client: &mut Client, lock_wait: Duration) -> Result<usize, MigrateError> {
    // lock_timeout bounds the advisory lock's wait, server-side, and nothing else may:
    // a statement_timeout from the connection's options or the role (as behind a pooler)
    // would cut the wait short as a failure instead of "busy, try again". After the lock,
    // the session's limits are lifted for the migration, which must be allowed to take as
    // long as it takes.
    client
        .batch_execute(&format!(
            "SET statement_timeout = 0; SET lock_timeout = {}",
            lock_wait.as_millis().max(1)
        ))
        .await
        .map_err(|e| failed("cannot prepare the migration session", &e))?;
    match client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Err(MigrateError::LockBusy(lock_wait));
        }
        Err(e) => return Err(failed("cannot take the migration lock", &e)),
    }
    // Unlocked on every way out, a failed migration included; closing the connection
    // would also release it.
    let applied = apply_locked(client).await;
    unlock(client).await;
    applied
}

/// What `apply` does once it holds the migration lock.
async fn apply_locked(client: &mut Client) -> Result<usize, MigrateError> {
    client
        .batch_execute("SET lock_timeout = 0")
        .await
        .map_err(|e| failed("cannot prepare the migration session", &e))?;
    // A database a newer release has migrated further: what an older binary meets after a
    // rollback. It serves on when every migration it knows is there, unchanged: whether
    // it can is the newer release's promise (docs/database.md). Refinery would stop at
    // the versions it does not know.
    match read_history(client)
        .await
        .map_err(|e| failed("cannot read the migration history", &e))?
    {
        Schema::Pending => {}
        Schema::Current => return Ok(0),
        Schema::Beyond => {
            tracing::warn!(
                known = latest_version(),
                "the database is migrated beyond what this release knows (a rollback?), \
                 and holds every migration this release has: nothing to apply"
            );
            return Ok(0);
        }
        Schema::Diverged(version) => return Err(MigrateError::Diverged(version)),
    }
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    let run = runner.run_async(client);
    tokio::pin!(run);
    // Not bounded (a migration cut short would start over and never finish), but never
    // silent: a migration waiting on a lock another session holds, or a hung server, would
    // otherwise leave the service "starting" with nothing in its log to say why.
    let started = std::time::Instant::now();
    let outcome = loop {
        match tokio::time::timeout(STILL_MIGRATING_EVERY, &mut run).await {
            Ok(outcome) => break outcome,
            Err(_) => tracing::warn!(
                running_s = started.elapsed().as_secs(),
                "migrations still running: a long one, or one waiting for a lock that \
                 another session holds (pg_stat_activity on the database says which)"
            ),
        }
    };
    let report = outcome.map_err(|e| failed("migration failed", &e))?;
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "migration applied"
        );
    }
    Ok(report.applied_migrations().len())
}

fn failed(what: &str, e: &dyn std::error::Error) -> MigrateError {
    MigrateError::Failed(format!("{what}: {}", error_chain(e)))
}

async fn unlock(client: &Client) {
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
}

/// Where the database's schema stands for this release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Migrations of this release are still to be applied.
    Pending,
    /// Every migration of this release is applied, and no other.
    Current,
    /// Every migration of this release is applied, and newer ones too (a rollback).
    Beyond,
    /// The history is as new as this release or newer, but lacks this migration of it,
    /// or holds it changed: not a schema this release can serve on.
    Diverged(i32),
}

/// Reads the migration history: what `farol migrate` and, with `MIGRATE_ON_START=false`,
/// readiness go by. Reads only; creates nothing. The only failure is the driver's.
pub async fn read_history(client: &Client) -> Result<Schema, tokio_postgres::Error> {
    let query = format!("SELECT version, checksum FROM {HISTORY_TABLE}");
    // Unnamed, in one round trip: this also runs through a pooler in transaction mode.
    let rows = match client.query_typed(&query, &[]).await {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Schema::Pending),
        Err(e) => return Err(e),
    };
    let applied: HashMap<i32, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let newest = applied.keys().copied().max().unwrap_or(0);
    if newest < latest_version() {
        // refinery checks what is there when it applies the rest
        return Ok(Schema::Pending);
    }
    for migration in embedded::migrations::runner().get_migrations() {
        if applied.get(&migration.version()) != Some(&migration.checksum().to_string()) {
            return Ok(Schema::Diverged(migration.version()));
        }
    }
    Ok(if newest == latest_version() {
        Schema::Current
    } else {
        Schema::Beyond
    })
}
