//! The PostgreSQL connection pool, and every database wait bounded in time.
//!
//! All queries go through [`Database::run`], which bounds each wait by
//! `DB_QUERY_TIMEOUT_MS`, records the operation's duration, and keeps
//! [`Database::is_up`], the last observed state that `/` shows. Two waits, each with its
//! own bound and its own meaning: waiting for a free pooled connection (past the bound:
//! the service is busy, the database may be fine), then the round trip (connecting when
//! needed, then the query; past the bound: connecting means an outage, the query a
//! timeout). One bound over both would call saturation an outage: a request queued
//! behind slow queries would get its connection with too little time left for its query.

mod abandon;
pub mod cancel;
pub use abandon::ABANDONED_OUTCOMES;
pub mod connect;
pub mod health;
pub mod migrate;
pub mod outage;
pub mod read_only;
pub mod readiness;
pub mod session;
pub mod tls;
pub mod wait;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool::Runtime;
use deadpool::managed::{BuildError, Pool, PoolError};
use prometheus::{HistogramVec, IntCounterVec};
use tokio::sync::Semaphore;
use tokio_postgres::error::{Severity, SqlState};

use crate::config::{DatabaseConfig, DatabaseSettings, Statements};
use crate::telemetry::error_chain;
use crate::telemetry::traces::Tracer;
use connect::{ConnectError, PoolManager};
use outage::{DownLine, OutageLog, ReasonLog};
use read_only::ReadOnlyState;
use session::Session;
use tls::TlsError;

/// Through a pooler, how long pings may time out before the database counts as down
/// ([`Database::ping`]): five of the background pings, every 2 s.
pub const POOLER_SILENCE: Duration = Duration::from_secs(10);

/// The server's statement_timeout for a `DB_QUERY_TIMEOUT_MS` of `query_timeout`: half a
/// second more, so that our own timeout answers the client (503) first, by that margin.
pub(crate) fn server_statement_timeout(query_timeout: Duration) -> Duration {
    query_timeout + Duration::from_millis(500)
}

/// A pooled connection.
pub type Connection = deadpool::managed::Object<PoolManager>;

/// The driver's reason, for a log line: a server error as its severity, SQLSTATE and
/// message, without its DETAIL and HINT (which quote row values, e.g. "Failing row
/// contains (...)": note contents); anything else with its causes.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error_chain(error),
    }
}

/// Why a database operation did not give an answer. Callers turn all but `Query` into a
/// fast 503; the vocabulary is fixed so that no driver text reaches a client.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached; the reason is the driver's, for the logs.
    #[error("database unavailable: {reason}")]
    Unavailable {
        reason: String,
        /// Whether an established connection broke (so the idle ones are suspect too),
        /// rather than a new one failing to open (the idle ones may be fine: a rotated
        /// password only stops new connections).
        broke_established: bool,
        /// Whether the connection failed under a statement with no answer to it (it
        /// closed, an I/O error, or a FATAL from the server): what a write did then is
        /// unknown.
        unanswered: bool,
    },
    /// The server answers but takes no writes: a standby (after a failover, a service
    /// address or a DNS name can lead to one), or default_transaction_read_only on. For
    /// farol that is as good as down; reads still work meanwhile. The reason is the
    /// server's, for the logs.
    #[error("the server takes no writes: {reason}")]
    ReadOnly { reason: String },
    /// A statement that always returns a row (INSERT … RETURNING) returned none.
    #[error("the database returned no row for {0}")]
    NoRow(&'static str),
    /// Every pooled connection stayed in use for the whole wait: the service is busy,
    /// the database may be fine.
    #[error("no database connection became free within the query timeout")]
    Busy,
    #[error("database operation timed out")]
    Timeout,
    #[error("database error: {}", describe(.0))]
    Query(#[source] tokio_postgres::Error),
}

impl DbError {
    /// The failure's kind for a span's `error.type`, from a fixed vocabulary (never the
    /// driver's text); `None` for a row that is not there, which is an answer.
    fn kind(&self) -> Option<&'static str> {
        match self {
            DbError::Unavailable { .. } => Some("unavailable"),
            DbError::ReadOnly { .. } => Some("read_only"),
            DbError::NoRow(_) => None,
            DbError::Busy => Some("busy"),
            DbError::Timeout => Some("timeout"),
            DbError::Query(_) => Some("query"),
        }
    }

    /// An established connection that failed: `unanswered` when the server gave no
    /// answer, rather than an error of its own.
    fn broken(error: &tokio_postgres::Error, unanswered: bool) -> Self {
        DbError::Unavailable {
            reason: describe(error),
            broke_established: true,
            unanswered,
        }
    }

    fn unreachable(reason: impl Into<String>) -> Self {
        DbError::Unavailable {
            reason: reason.into(),
            broke_established: false,
            unanswered: false,
        }
    }

    fn from_query(error: tokio_postgres::Error) -> Self {
        if error.is_closed() {
            return Self::broken(&error, true);
        }
        match error.code() {
            // A statement_timeout fired: the server-side twin of our own timeout.
            Some(code) if *code == SqlState::QUERY_CANCELED => DbError::Timeout,
            // A write reached a server that takes none: the connections lead to the wrong
            // server (see `Database::mark_read_only`).
            Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => DbError::ReadOnly {
                reason: describe(&error),
            },
            // Class 08 (connection), 53 (resources, e.g. too many connections) and 57P
            // (shutting down, starting up): the database, not the request, is the problem.
            Some(code)
                if ["08", "53", "57P"]
                    .iter()
                    .any(|class| code.code().starts_with(class)) =>
            {
                // An ERROR answers the statement: it was not applied. A FATAL or PANIC
                // can come at any point of it, even after its commit was flushed (a
                // crash, an immediate shutdown, a pooler whose server connection died
                // under the statement it had forwarded): no answer, for a write.
                // (the localized severity where the server sends no other: before 9.6)
                let fatal = error
                    .as_db_error()
                    .is_some_and(|db| match db.parsed_severity() {
                        Some(severity) => matches!(severity, Severity::Fatal | Severity::Panic),
                        None => matches!(db.severity(), "FATAL" | "PANIC"),
                    });
                if fatal || !code.code().starts_with("53") {
                    Self::broken(&error, fatal)
                } else {
                    // An ERROR of a server short of a resource (53100 a full disk, 53200
                    // out of memory): the session lives on, and so do the idle ones,
                    // which would each be opened again for nothing. (PostgreSQL sends
                    // 57P at FATAL; an ERROR of it from another server is kept broken.)
                    DbError::Unavailable {
                        reason: describe(&error),
                        broke_established: false,
                        unanswered: false,
                    }
                }
            }
            Some(_) => DbError::Query(error),
            // No SQLSTATE: an I/O or protocol failure on the way.
            None => Self::broken(&error, true),
        }
    }

    /// Any failure to connect is unavailability, whatever its SQLSTATE: a rejected
    /// password (28P01) or a missing database (3D000) leave the service as unable to
    /// query as a refused connection does.
    fn from_pool(error: PoolError<ConnectError>) -> Self {
        match error {
            PoolError::Backend(failure) => Self::unreachable(failure.to_string()),
            PoolError::Timeout(_) => {
                Self::unreachable("connecting took longer than DB_CONNECT_TIMEOUT_MS")
            }
            other => Self::unreachable(other.to_string()),
        }
    }

    /// Whether a write that failed so may have been applied all the same: no answer came
    /// in time (farol cancels the statement it stopped waiting for, but the cancel races
    /// its commit, and a commit waiting for a synchronous standby is cut short as
    /// committed), or the connection broke under it. A timeout the server reported (its
    /// statement_timeout) counts too, though it rolled the statement back: both are
    /// `Timeout`, and saying "unknown" of a write that was not applied costs the client
    /// one look, where saying "retry" of one that was costs it a duplicate. Only non-idempotent writes need to tell.
    pub fn may_have_been_applied(&self) -> bool {
        matches!(
            self,
            DbError::Timeout
                | DbError::Unavailable {
                    unanswered: true,
                    ..
                }
        )
    }

    /// The same failure, for another caller of the same statement (several notes
    /// inserted in one); `None` for a query error, whose driver error cannot be copied
    /// and which may concern one row only.
    pub fn for_another_caller(&self) -> Option<Self> {
        Some(match self {
            DbError::Unavailable {
                reason,
                broke_established,
                unanswered,
            } => DbError::Unavailable {
                reason: reason.clone(),
                broke_established: *broke_established,
                unanswered: *unanswered,
            },
            DbError::ReadOnly { reason } => DbError::ReadOnly {
                reason: reason.clone(),
            },
            DbError::NoRow(operation) => DbError::NoRow(operation),
            DbError::Busy => DbError::Busy,
            DbError::Timeout => DbError::Timeout,
            DbError::Query(_) => return None,
        })
    }

    /// Whether this error says the database is down for farol: unreachable, or taking
    /// no writes. A timeout alone does not, nor does a busy pool.
    pub fn is_outage(&self) -> bool {
        matches!(self, DbError::Unavailable { .. } | DbError::ReadOnly { .. })
    }
}

/// What an operation's failure means for the service: the driver's errors are
/// classified by the rules of [`DbError`]; an operation may also decide for itself (the
/// ping, which finds a server that answers but takes no writes).
pub trait OperationError {
    fn into_db_error(self) -> DbError;
}

impl OperationError for tokio_postgres::Error {
    fn into_db_error(self) -> DbError {
        DbError::from_query(self)
    }
}

impl OperationError for DbError {
    fn into_db_error(self) -> DbError {
        self
    }
}

/// Why the pool could not be built. No connection is attempted then: only a CA file
/// that cannot be used, or a pool setting deadpool refuses.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot build the connection pool: {0}")]
    Pool(#[source] BuildError),
}

#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool<PoolManager>,
    /// One permit per pooled connection, taken before the pool is asked: holding one
    /// means a connection is free or can be made, so that the wait for it is bounded and
    /// judged apart from connecting (deadpool's own wait and connect are one call).
    slots: Semaphore,
    config: DatabaseConfig,
    connect_timeout: Duration,
    query_timeout: Duration,
    statements: Statements,
    /// The database answered but took no writes (see `read_only`).
    read_only: ReadOnlyState,
    outages: OutageLog,
    /// Why statements farol stopped waiting for could not be cancelled or did not end
    /// (`abandon`).
    abandoned: ReasonLog,
    durations: HistogramVec,
    /// `farol_db_abandoned_statements_total`, by outcome.
    abandoned_outcomes: IntCounterVec,
    /// Present when traces are exported: each operation in a request gets a client span.
    tracer: Option<Tracer>,
    /// `/health`'s ping in flight (`health`).
    check: health::SharedCheck,
    /// Through a pooler: when the pings began to time out, in milliseconds after
    /// `created` plus one; 0 while the last one answered.
    pooler_silent_since: AtomicU64,
    created: Instant,
    /// Set at exit: the statements left running are cancelled at once, without the wait
    /// for them to end by themselves (`abandon`), within the exit's one second.
    exiting: tokio::sync::watch::Sender<bool>,
}

impl Database {
    /// Builds the pool. No connection is made here: the service starts and serves its
    /// probes while the database is still away.
    pub fn new(
        settings: &DatabaseSettings,
        durations: HistogramVec,
        abandoned_outcomes: IntCounterVec,
        tracer: Option<Tracer>,
    ) -> Result<Self, SetupError> {
        let config = &settings.connection;
        let (connect_timeout, query_timeout) = (settings.connect_timeout, settings.query_timeout);
        let mut pooled = config.clone();
        // The server stops a statement that outlives our own timeout instead of working
        // on for a client that has gone, should farol's cancel not reach it
        // (`abandon`). Later than ours, so that ours answers first and the cancel is
        // farol's. (It does not end a commit's wait for a synchronous standby: only a
        // cancel does, and farol cancels only what it has given up on, on a connection it
        // then closes.) Not through a pooler in transaction mode: PgBouncer refuses the `options` start-up parameter unless told
        // to ignore it, and then ignores it; there the role's own statement_timeout does
        // this (docs/database.md).
        //
        // Also only for named statements: generic plans. Each statement here has one good
        // plan whatever its parameters (an index walk), but a list page's generic plan is
        // estimated dear (`LIMIT $n` counts as a tenth of the table, a cursor's row
        // comparison as a third), so under the default `auto` the server plans every
        // execution anew, and planning costs more than running: with generic plans a
        // page 5,000 notes deep went from 0.80 to 0.95 of the first page's rate in the
        // benchmark (docs/benchmarks.md).
        if settings.statements == Statements::Named {
            let options = pooled.driver.get_options().unwrap_or_default().to_owned();
            pooled.driver.options(format!(
                // the caller's own options after ours, so that a plan_cache_mode of its own
                // wins; the statement_timeout after theirs, since ours must hold
                "-c plan_cache_mode=force_generic_plan {options} -c statement_timeout={}",
                server_statement_timeout(query_timeout).as_millis()
            ));
        }
        // Fail now on a CA file that cannot be used, rather than at every connection.
        tls::connector(config)?;
        // Only connecting gets a timeout of its own. Waiting for a connection is bounded
        // by the operation's timeout in `run`, and recycling does no I/O.
        let pool = Pool::builder(PoolManager { config: pooled })
            .max_size(settings.pool_max)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .build()
            .map_err(SetupError::Pool)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                slots: Semaphore::new(settings.pool_max),
                config: config.clone(),
                connect_timeout,
                query_timeout,
                statements: settings.statements,
                read_only: ReadOnlyState::default(),
                outages: OutageLog::default(),
                abandoned: ReasonLog::default(),
                durations,
                abandoned_outcomes,
                tracer,
                check: health::SharedCheck::default(),
                exiting: tokio::sync::watch::Sender::new(false),
                pooler_silent_since: AtomicU64::new(0),
                created: Instant::now(),
            }),
        })
    }

    /// Runs `operation` on a pooled connection within the query timeout.
    /// `name` labels the duration metric (`db_operation_name`).
    pub async fn run<'a, T, E, F, Fut>(
        &'a self,
        name: &'static str,
        operation: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(Session<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: OperationError,
    {
        self.run_waiting(name, self.inner.query_timeout, operation)
            .await
    }

    /// [`Database::run`], with the wait for a pool slot bounded by `slot_wait` (at most
    /// the query timeout): for a caller that has waited already (a create in the insert
    /// queue), so that both waits together stay within one query timeout.
    async fn run_waiting<'a, T, E, F, Fut>(
        &'a self,
        name: &'static str,
        slot_wait: Duration,
        operation: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(Session<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: OperationError,
    {
        let started = Instant::now();
        let timeout = self.inner.query_timeout;
        let slot_wait = slot_wait.min(timeout);
        let span = self.inner.tracer.as_ref().and_then(|t| t.client_span(name));
        let result = async {
            // The fast path first: a free slot costs no timer.
            let slot = match self.inner.slots.try_acquire() {
                Ok(slot) => slot,
                Err(_) => match tokio::time::timeout(slot_wait, self.inner.slots.acquire()).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => return Err(DbError::unreachable("the pool is closed")),
                    // Busy only while the database answers: during an outage whose
                    // connects hang, the slots are held by attempts to connect, and the
                    // wait behind them is the outage's, not saturation.
                    Err(_) if self.is_reachable() => return Err(DbError::Busy),
                    Err(_) => {
                        return Err(DbError::unreachable(
                            "no connection could be made while waiting for a pool slot",
                        ));
                    }
                },
            };
            let connected = AtomicBool::new(false);
            // the query's own time: from here, not from the wait for a slot
            let deadline = tokio::time::Instant::now() + timeout;
            let round_trip = async {
                let client = self.inner.pool.get().await.map_err(DbError::from_pool)?;
                connected.store(true, Ordering::Relaxed);
                // The session holds the slot from here: if this future is dropped while
                // its statement runs, the slot stays taken until the connection is free.
                operation(Session::new(self, client, slot, deadline))
                    .await
                    .map_err(OperationError::into_db_error)
            };
            match tokio::time::timeout_at(deadline, round_trip).await {
                Ok(result) => result,
                Err(_) if !connected.load(Ordering::Relaxed) => Err(DbError::unreachable(
                    "connecting took longer than DB_QUERY_TIMEOUT_MS",
                )),
                Err(_) => Err(DbError::Timeout),
            }
        }
        .await;
        self.inner
            .durations
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        if let Some(span) = span {
            span.end(result.as_ref().err().and_then(DbError::kind));
        }
        match &result {
            Ok(_) => self.mark_up(),
            Err(DbError::Unavailable {
                reason,
                broke_established,
                ..
            }) => self.mark_down(reason, *broke_established),
            Err(DbError::ReadOnly { reason }) => {
                // read-only first: `/` must never say "up" in between
                self.mark_read_only(started, reason);
                self.mark_up();
            }
            Err(_) => {}
        }
        result
    }

    /// Runs an operation that writes, as [`Database::run`] does. Its success also ends a
    /// read-only state: under saturation the ping may find no free connection for a
    /// long while, and writes that commit must not leave `/` saying "down".
    pub async fn write<'a, T, E, F, Fut>(
        &'a self,
        name: &'static str,
        operation: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(Session<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: OperationError,
    {
        self.write_waiting(name, self.inner.query_timeout, operation)
            .await
    }

    /// [`Database::write`], with the wait for a pool slot bounded by `slot_wait` (see
    /// `run_waiting`).
    pub async fn write_waiting<'a, T, E, F, Fut>(
        &'a self,
        name: &'static str,
        slot_wait: Duration,
        operation: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(Session<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: OperationError,
    {
        let result = self.run_waiting(name, slot_wait, operation).await;
        if result.is_ok() {
            self.mark_writable();
        }
        result
    }

    /// One real round trip to a server that takes writes: what `/health` reports. A
    /// server that answers but is read-only (a standby) counts as down, since every
    /// write would fail there. Unlike other operations, a ping whose query times out
    /// counts as the database being down: this query is never slow on a database that
    /// answers (a partition, or a server that hangs). A busy pool does not: the database
    /// is not even asked. Through a pooler (unnamed statements) a timeout is first taken
    /// for saturation: a pooler whose server connections are all taken holds the query
    /// in its queue, and farol's own connections (to the pooler) are not suspect. Pings
    /// timing out for [`POOLER_SILENCE`] are more than a queue: a pooler gone, or a
    /// server hung behind it; that is down.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.ping_as("ping").await
    }

    /// [`Database::ping`], under the operation name `name` in metrics and traces.
    async fn ping_as(&self, name: &'static str) -> Result<(), DbError> {
        let result = self
            .run(name, |mut session| async move {
                let row = session
                    .query_opt(
                        "SELECT current_setting('transaction_read_only') = 'off'",
                        &[],
                    )
                    .await
                    .map_err(DbError::from_query)?;
                if row.is_some_and(|row| row.get::<_, bool>(0)) {
                    Ok(())
                } else {
                    Err(DbError::ReadOnly {
                        reason: "transaction_read_only is on".into(),
                    })
                }
            })
            .await;
        match result {
            Ok(()) => {
                if self.inner.pooler_silent_since.load(Ordering::Relaxed) != 0 {
                    self.inner.pooler_silent_since.store(0, Ordering::Relaxed);
                }
                self.mark_writable()
            }
            Err(DbError::Timeout) if self.inner.statements == Statements::Unnamed => {
                let now = u64::try_from(self.inner.created.elapsed().as_millis())
                    .unwrap_or(u64::MAX - 1)
                    + 1;
                let since = match self.inner.pooler_silent_since.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => now,
                    Err(earlier) => earlier,
                };
                if Duration::from_millis(now - since) >= POOLER_SILENCE {
                    self.mark_down(
                        "through the pooler, no health query answered within \
                         DB_QUERY_TIMEOUT_MS for 10 s",
                        true,
                    );
                }
            }
            Err(DbError::Timeout) => {
                // A hung server or a partition: the connection that hung is suspect.
                self.mark_down(
                    "the health query got no answer within DB_QUERY_TIMEOUT_MS",
                    true,
                );
            }
            Err(_) => {}
        }
        result
    }

    /// The last observed state, what `/` shows: up when the database answers and takes
    /// writes. No query is made.
    pub fn is_up(&self) -> bool {
        self.is_reachable() && !self.inner.read_only.is_set()
    }

    /// Whether the database answered the last operation, whatever it said.
    pub fn is_reachable(&self) -> bool {
        self.inner.outages.is_up()
    }

    /// Notes a server that answers but takes no writes (logged on entering the state),
    /// and drops the idle connections opened before `since` (the failed operation's
    /// start), at most once per [`read_only::EMPTY_POOL_AFTER`]: they lead to that server,
    /// and with several hosts and target_session_attrs=read-write a new connection finds
    /// the primary.
    fn mark_read_only(&self, since: Instant, reason: &str) {
        if self.inner.pool.is_closed() {
            return;
        }
        let entered = self.inner.read_only.enter(since, Instant::now());
        if entered.began {
            tracing::warn!(
                database = %self.inner.config.describe(),
                reason,
                "database takes no writes"
            );
        }
        if entered.empty_pool {
            self.inner.pool.retain(|_, metrics| metrics.created > since);
        }
    }

    /// A write succeeded, or a ping found the server writable: the read-only state, if
    /// any, is over.
    fn mark_writable(&self) {
        if self.inner.read_only.leave(Instant::now()) {
            tracing::info!(
                database = %self.inner.config.describe(),
                "database takes writes again"
            );
        }
    }

    fn mark_up(&self) {
        self.inner.outages.up(|| {
            tracing::info!(database = %self.inner.config.describe(), "database reachable");
        });
    }

    /// Notes a failure to reach the database, and logs why: when it was up until now, and
    /// each reason, at most once per `outage::REPEAT_AFTER` (`outage`). When an
    /// established connection broke, the idle ones are dropped too: they lead to a
    /// database that went away, and would fail one request each. When only a new
    /// connection failed to open (a rotated password, a full server), they are kept:
    /// they may well still work.
    pub fn mark_down(&self, reason: &str, broke_established: bool) {
        if self.inner.pool.is_closed() {
            return; // shutting down: not an outage
        }
        if broke_established {
            self.inner.pool.retain(|_, _| false);
        }
        let database = || self.inner.config.describe();
        self.inner.outages.down(reason, |line| match line {
            DownLine::BecameUnreachable => {
                tracing::warn!(database = %database(), reason, "database became unreachable");
            }
            DownLine::Unreachable => {
                tracing::warn!(database = %database(), reason, "database unreachable");
            }
        });
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

    /// `DB_QUERY_TIMEOUT_MS`: the bound on every wait for the database.
    pub fn query_timeout(&self) -> Duration {
        self.inner.query_timeout
    }

    /// How statements are sent: named, or unnamed for a pooler in transaction mode.
    pub fn statements(&self) -> Statements {
        self.inner.statements
    }

    /// Waits, at most [`abandon::EXIT_WAIT`], for the statements farol stopped waiting for
    /// to be cancelled (and for requests still using a connection): at exit, so that
    /// what the last requests left running on the server is stopped.
    pub async fn settle_abandoned(&self) {
        self.inner.exiting.send_replace(true);
        abandon::wait_for_settled(self, abandon::EXIT_WAIT).await;
    }

    /// Closes the pool: idle connections are dropped, and connections in use are dropped
    /// when their requests return them.
    pub fn close(&self) {
        self.inner.slots.close();
        self.inner.pool.close();
    }
}

/// A connection outside the pool, for migrations: they hold a session-level advisory lock
/// that must stay on one connection.
pub async fn connect_direct(
    config: &DatabaseConfig,
) -> Result<tokio_postgres::Client, ConnectError> {
    let (client, _task) = connect::open(config, "migration").await?;
    Ok(client)
}
