//! The PostgreSQL connection pool, and every database wait bounded in time.
//!
//! All queries go through [`Database::run`], which bounds the whole operation (waiting
//! for a connection, connecting, the query itself) by `DB_QUERY_TIMEOUT_MS`, records its
//! duration, and keeps [`Database::is_up`], the last observed state that `/` shows.

pub mod migrate;
pub mod readiness;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use prometheus::HistogramVec;
use tokio_postgres::error::SqlState;

use crate::config::DatabaseConfig;

/// Why a database operation did not give an answer. Callers turn the first two into a
/// fast 503; the vocabulary is fixed so that no driver text reaches a client.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database operation timed out")]
    Timeout,
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl DbError {
    fn from_query(error: tokio_postgres::Error) -> Self {
        if error.is_closed() {
            return DbError::Unavailable(error.to_string());
        }
        match error.code() {
            // A statement_timeout fired: the server-side twin of our own timeout.
            Some(code) if *code == SqlState::QUERY_CANCELED => DbError::Timeout,
            // Class 08 (connection), 53 (resources, e.g. too many connections) and 57P
            // (shutting down, starting up): the database, not the request, is the problem.
            Some(code)
                if ["08", "53", "57P"]
                    .iter()
                    .any(|class| code.code().starts_with(class)) =>
            {
                DbError::Unavailable(error.to_string())
            }
            Some(_) => DbError::Query(error),
            // No SQLSTATE: an I/O or protocol failure on the way.
            None => DbError::Unavailable(error.to_string()),
        }
    }

    fn from_pool(error: PoolError) -> Self {
        match error {
            PoolError::Backend(e) => Self::from_query(e),
            PoolError::Timeout(_) => DbError::Timeout,
            other => DbError::Unavailable(other.to_string()),
        }
    }

    /// Whether this error says the database is down. A timeout alone does not: under
    /// overload, waits for a pooled connection time out while the database is fine.
    pub fn is_outage(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: DatabaseConfig,
    query_timeout: Duration,
    up: AtomicBool,
    durations: HistogramVec,
}

impl Database {
    /// Builds the pool. No connection is made here: the service starts and serves its
    /// probes while the database is still away.
    pub fn new(
        config: &DatabaseConfig,
        max_size: usize,
        connect_timeout: Duration,
        query_timeout: Duration,
        durations: HistogramVec,
    ) -> Result<Self, String> {
        let mut driver = config.driver.clone();
        // The server stops a statement that outlives our own timeout instead of working
        // on for a client that has gone.
        driver.options(format!(
            "{} -c statement_timeout={}",
            driver.get_options().unwrap_or_default(),
            query_timeout.as_millis()
        ));
        // Notice a peer that vanished without closing the connection (a partition, a
        // killed VM) within about half a minute instead of two hours.
        driver.keepalives_idle(Duration::from_secs(10));
        driver.keepalives_interval(Duration::from_secs(5));
        driver.keepalives_retries(3);
        let manager = Manager::from_config(
            driver,
            tls::connector(config)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Only connecting gets a timeout of its own. Waiting for a connection is bounded
        // by the operation's timeout in `run`, and the fast recycling method does no I/O:
        // a timer for either would cost every request a timer-wheel entry for nothing.
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| format!("cannot build the connection pool: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config: config.clone(),
                query_timeout,
                up: AtomicBool::new(false),
                durations,
            }),
        })
    }

    /// Runs `operation` on a pooled connection within the query timeout.
    /// `name` labels the duration metric (`db_operation_name`).
    pub async fn run<T, F, Fut>(&self, name: &'static str, operation: F) -> Result<T, DbError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let started = Instant::now();
        let work = async {
            let client = self.inner.pool.get().await.map_err(DbError::from_pool)?;
            operation(client).await.map_err(DbError::from_query)
        };
        let result = tokio::time::timeout(self.inner.query_timeout, work)
            .await
            .unwrap_or(Err(DbError::Timeout));
        self.inner
            .durations
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.observe(true),
            Err(e) if e.is_outage() => self.observe(false),
            Err(_) => {}
        }
        result
    }

    /// One real round trip: what `/health` reports. Unlike other operations, a ping
    /// that times out counts as the database being down: `SELECT 1` is never slow on a
    /// database that answers (a partition, or a server that hangs).
    pub async fn ping(&self) -> Result<(), DbError> {
        let result = self
            .run("ping", |client| async move {
                let statement = client.prepare_cached("SELECT 1").await?;
                client.query_one(&statement, &[]).await.map(|_| ())
            })
            .await;
        if matches!(result, Err(DbError::Timeout)) {
            self.observe(false);
        }
        result
    }

    /// The last observed state: no query is made.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    fn observe(&self, up: bool) {
        // A plain load first: every query reports here, and a read-modify-write per query
        // would bounce the cache line between cores for a value that rarely changes.
        if self.inner.up.load(Ordering::Relaxed) == up {
            return;
        }
        let was_up = self.inner.up.swap(up, Ordering::Relaxed);
        if was_up && !up {
            tracing::warn!("database became unreachable");
            // Idle connections to a database that went away are dead or soon will be:
            // drop them now rather than failing one request per connection later.
            self.inner.pool.retain(|_, _| false);
        } else if !was_up && up {
            tracing::info!(database = %self.inner.config.describe(), "database reachable");
        }
    }

    /// (idle, in use, maximum) connections, for the pool gauges.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let status = self.inner.pool.status();
        let idle = status.available;
        (idle, status.size.saturating_sub(idle), status.max_size)
    }

    pub fn config(&self) -> &DatabaseConfig {
        &self.inner.config
    }

    /// Closes the pool: idle connections are dropped, and connections in use are dropped
    /// when their requests return them.
    pub fn close(&self) {
        self.inner.pool.close();
    }
}

/// A connection outside the pool, for migrations: they hold a session-level advisory lock
/// that must stay on one connection.
pub async fn connect_direct(config: &DatabaseConfig) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = config
        .driver
        .connect(tls::connector(config)?)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "migration connection closed");
        }
    });
    Ok(client)
}
