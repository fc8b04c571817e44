//! Getting to ready: reach the database, put the schema in place, then keep watching.
//!
//! The service starts serving its probes at once, database or not. This task retries the
//! database with exponential backoff (capped at 1 s) until it answers and the migrations
//! are applied (by us under `MIGRATE_ON_START`, else by the migration Job), then marks
//! the service ready. Afterwards it pings every [`PING_INTERVAL`] so that the state `/`
//! shows is fresh even when no request touches the database. Readiness is never taken
//! back by an outage: every replica shares the database, so removing them all from
//! service would help no one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Database, connect_direct, migrate};

const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
/// A bound on one attempt, waiting for another replica's migration lock included.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs forever (the caller aborts it at shutdown).
pub async fn supervise(db: Database, migrate_on_start: bool, ready: Arc<AtomicBool>) {
    let mut delay = FIRST_RETRY;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let outcome = tokio::time::timeout(PREPARE_TIMEOUT, prepare(&db, migrate_on_start))
            .await
            .unwrap_or_else(|_| Err("timed out connecting or migrating".into()));
        match outcome {
            Ok(()) => break,
            Err(reason) => {
                // The first failure and then one in twenty: a log line per second for
                // an hour-long outage would drown everything else.
                if attempts == 1 || attempts.is_multiple_of(20) {
                    tracing::warn!(attempts, %reason, retry_in_ms = delay.as_millis() as u64, "database not ready yet");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
    ready.store(true, Ordering::Release);
    tracing::info!(attempts, "ready: database reachable and schema current");

    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // The outcome lands in `db.is_up()`; failures are logged on the transition.
        let _ = db.ping().await;
    }
}

async fn prepare(db: &Database, migrate_on_start: bool) -> Result<(), String> {
    let mut client = connect_direct(db.config()).await?;
    if migrate_on_start {
        migrate::apply(&mut client).await?;
    } else if !migrate::is_current(&client).await? {
        return Err(format!(
            "waiting for migrations up to version {} (MIGRATE_ON_START=false: the migration job applies them)",
            migrate::latest_version()
        ));
    }
    db.ping().await.map_err(|e| e.to_string())
}
