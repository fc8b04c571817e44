//! Schema migrations, embedded in the binary from `migrations/`.
//!
//! They run under a session-level PostgreSQL advisory lock, so that replicas starting
//! together (or a Job beside running pods) apply each migration exactly once: the others
//! wait for the lock, then find nothing left to do.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

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

/// Applies pending migrations; returns how many were applied.
pub async fn apply(client: &mut Client) -> Result<usize, String> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| format!("cannot take the migration lock: {e}"))?;
    let outcome = embedded::migrations::runner()
        .set_migration_table_name(HISTORY_TABLE)
        .run_async(client)
        .await;
    // Unlock even when a migration failed; closing the connection would also release it.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = outcome.map_err(|e| format!("migration failed: {e}"))?;
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "migration applied"
        );
    }
    Ok(report.applied_migrations().len())
}

/// Whether every embedded migration is applied (for `MIGRATE_ON_START=false`, where a
/// Job applies them). Reads only; creates nothing.
pub async fn is_current(client: &Client) -> Result<bool, String> {
    let query = format!("SELECT max(version) FROM {HISTORY_TABLE}");
    match client.query_one(&query, &[]).await {
        Ok(row) => Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) >= latest_version()),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}
