//! Getting to ready: reach the database, put the schema in place, then keep watching.
//!
//! The service starts serving its probes at once, database or not. This task retries the
//! database (the one waiting policy of `wait`) until it answers and the migrations
//! are applied (by us under `MIGRATE_ON_START`, else by the migration Job), then marks
//! the service ready. Afterwards it pings every [`PING_INTERVAL`] so that the state `/`
//! shows is fresh even when no request touches the database. Readiness is never taken
//! back by an outage: every replica shares the database, so removing them all from
//! service would help no one.
//!
//! Each wait on the way is bounded (connecting by `DB_CONNECT_TIMEOUT_MS`, the migration
//! lock by [`migrate::LOCK_WAIT`]); the migration itself is not, since a migration cut
//! short would start over and never finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::connect::ConnectError;
use super::migrate::Schema;
use super::wait::Retry;
use super::{Database, DbError, connect_direct, migrate, server_statement_timeout};
use crate::config::Statements;
use crate::telemetry::error_chain;

pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Runs forever (the caller aborts it at shutdown).
pub async fn supervise(
    db: Database,
    migrate_on_start: bool,
    timeouts: Timeouts,
    ready: Arc<AtomicBool>,
) {
    let mut retry = Retry::default();
    let mut role_checked = false;
    while let Err(reason) = prepare(&db, migrate_on_start, timeouts, &mut role_checked).await {
        retry
            .failed(reason.to_string(), "database not ready yet")
            .await;
    }
    ready.store(true, Ordering::Release);
    tracing::info!(
        attempts = retry.failures() + 1,
        "ready: database reachable and schema current"
    );

    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // The outcome lands in `db.is_up()`; failures are logged there, with their reason.
        let _ = db.ping().await;
    }
}

/// The bounds on getting to ready: `DB_CONNECT_TIMEOUT_MS` and `DB_QUERY_TIMEOUT_MS`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub query: Duration,
}

/// Why the service is not ready yet: the reason logged while [`supervise`] retries.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("connecting took longer than DB_CONNECT_TIMEOUT_MS")]
    ConnectTimeout,
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    #[error("reading the schema version took longer than DB_QUERY_TIMEOUT_MS")]
    SchemaVersionTimeout,
    #[error("{}", error_chain(.0))]
    SchemaVersion(#[source] tokio_postgres::Error),
    #[error(
        "waiting for migrations up to version {0} (MIGRATE_ON_START=false: the migration job applies them)"
    )]
    MigrationsPending(i32),
    #[error(transparent)]
    Ping(#[from] DbError),
}

async fn prepare(
    db: &Database,
    migrate_on_start: bool,
    timeouts: Timeouts,
    role_checked: &mut bool,
) -> Result<(), NotReady> {
    let mut client = tokio::time::timeout(timeouts.connect, connect_direct(db.config()))
        .await
        .map_err(|_| NotReady::ConnectTimeout)??;
    // What the role may do, said once, as soon as the database is reached: before the
    // schema is in place (pending migrations can keep a replica waiting a long time), and
    // not again on each retry.
    if !std::mem::replace(role_checked, true) {
        check_not_superuser(&client, timeouts.query).await;
        if db.statements() == Statements::Unnamed {
            check_server_statement_timeout(&client, timeouts.query).await;
        }
    }
    if migrate_on_start {
        migrate::apply(&mut client, migrate::LOCK_WAIT).await?;
    } else {
        let history = tokio::time::timeout(timeouts.query, migrate::read_history(&client))
            .await
            .map_err(|_| NotReady::SchemaVersionTimeout)?
            .map_err(NotReady::SchemaVersion)?;
        match history {
            Schema::Current | Schema::Beyond => {}
            Schema::Pending => {
                return Err(NotReady::MigrationsPending(migrate::latest_version()));
            }
            Schema::Diverged(version) => {
                return Err(NotReady::Migrate(migrate::MigrateError::Diverged(version)));
            }
        }
    }
    match db.ping().await {
        // Reached, with the schema current: a server that takes no writes (a standby
        // during a failover) is the outage `/health` reports, not a reason to stay unready.
        Ok(()) | Err(DbError::ReadOnly { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// farol needs a role that owns its database, nothing more: with a superuser's powers (a
/// superuser, a member of one, or of the roles that may run programs or touch files on the
/// server), a compromised farol could run programs on the database server (`COPY … TO
/// PROGRAM`) and read its files. Said at start-up (a database volume made before farol
/// had a role of its own keeps it a superuser, docs/security.md); the service runs either
/// way.
async fn check_not_superuser(client: &tokio_postgres::Client, query_timeout: Duration) {
    let sql = "SELECT current_user::text, EXISTS (SELECT 1 FROM pg_roles r \
               WHERE (r.rolsuper OR r.rolname IN ('pg_execute_server_program', \
               'pg_read_server_files', 'pg_write_server_files')) \
               AND pg_has_role(current_user, r.oid, 'MEMBER'))";
    let role = tokio::time::timeout(query_timeout, client.query_typed_one(sql, &[])).await;
    match role.map(|row| row.map(|row| (row.get::<_, String>(0), row.get::<_, bool>(1)))) {
        Ok(Ok((role, true))) => tracing::warn!(
            role,
            "farol's database role has a superuser's powers: a compromised farol could run \
             programs on the database server; give it a role of its own that owns its \
             database and nothing more"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(
            error = %super::describe(&error),
            "cannot read the privileges of farol's database role"
        ),
        Err(_) => tracing::warn!("reading the privileges of farol's database role took too long"),
    }
}

/// Behind a pooler farol sends no statement_timeout: the role must carry one, later than
/// farol's own timeout by the margin that keeps a cancelled wait for a synchronous standby
/// from reaching a client as a success (docs/database.md). Said once, at start-up; the
/// service runs either way.
async fn check_server_statement_timeout(client: &tokio_postgres::Client, query_timeout: Duration) {
    let wanted = server_statement_timeout(query_timeout);
    let sql = "SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'";
    let setting = tokio::time::timeout(query_timeout, client.query_typed_one(sql, &[])).await;
    match setting.map(|row| row.map(|row| row.get::<_, i64>(0))) {
        Ok(Ok(0)) => tracing::warn!(
            wanted_ms = wanted.as_millis() as u64,
            "the server sets no statement_timeout for this role: a query whose client gave up \
             runs on (ALTER ROLE … SET statement_timeout)"
        ),
        Ok(Ok(ms)) if u128::from(ms.unsigned_abs()) < wanted.as_millis() => tracing::warn!(
            statement_timeout_ms = ms,
            wanted_ms = wanted.as_millis() as u64,
            "the server's statement_timeout does not come after DB_QUERY_TIMEOUT_MS by 500 ms: \
             a commit cancelled while it waits for a synchronous standby could reach a client \
             as a success"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(
            error = %super::describe(&error),
            "cannot read the server's statement_timeout"
        ),
        Err(_) => tracing::warn!("reading the server's statement_timeout took too long"),
    }
}
