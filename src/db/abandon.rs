//! A statement nobody waits for any more: farol's timeout passed, the request's time limit
//! passed, or the client went away and the request was dropped.
//!
//! The server still runs it, and its connection would go back to the pool as it is: the
//! next query there would queue behind it, and a pool slot would look free while the
//! server was still busy with it. Behind a pooler in transaction mode farol sets no
//! statement_timeout, so without one on the role the statement would run until it ends,
//! holding its locks; and no statement_timeout ends a commit's wait for a synchronous
//! standby. So the connection and its pool slot go to a task that waits for the
//! connection to answer again. A statement that ends by itself within
//! [`ENDS_BY_ITSELF_WITHIN`] (most do: a client that went away mid-query) leaves its
//! connection idle and in step, and it goes back to the pool. Past that, the task asks
//! the server to cancel the statement (PostgreSQL's cancel request, on a connection of its
//! own to the same server), waits on, then closes the connection and gives the slot back.
//!
//! Closed once cancelled, never reused: a cancel request gets no answer (the server's
//! closing the cancel's connection, which `cancel::send` waits for, says only that it was
//! passed on), and the server may act on it late. Should the statement end by itself
//! meanwhile, the cancel would stop whatever that connection ran next, perhaps another
//! request's commit waiting for the standby, which a cancel reports as done. A new
//! connection costs little beside a statement that outlived its timeout; beside every
//! request whose client hangs up, it would not (a cancel's connection and a new pooled
//! one, TLS and authentication included, for each), hence the wait before cancelling.
//!
//! A cancelled write may still have been applied: a commit that waits for a synchronous
//! standby is cut short as committed, after the request was answered as a failure. That
//! is what `outcome-unknown` and the idempotency key are for (docs/service.md).

use std::time::Duration;

use tokio::time::Instant;

use deadpool::managed::Object;

use super::cancel::{self, CancelError};
use super::{Connection, Database};

/// What became of a statement farol stopped waiting for: the label values of
/// `farol_db_abandoned_statements_total`.
pub const ABANDONED_OUTCOMES: [&str; 4] = ["ended", "cancelled", "not_cancelled", "still_running"];

/// How long a statement farol stopped waiting for may take to end by itself before it is
/// cancelled: long enough for what a client hanging up mid-query leaves (a page being
/// read, a commit). Never past the statement's own timeout (a timed-out one is cancelled
/// at once), and not at exit, where the cancels have [`EXIT_WAIT`] to themselves.
pub const ENDS_BY_ITSELF_WITHIN: Duration = Duration::from_millis(500);

/// At exit, how long the last cancels may take (docs/kubernetes.md counts it in the grace
/// period).
pub const EXIT_WAIT: Duration = Duration::from_secs(1);

/// The connection and the pool slot it holds, until dropped: then the connection is
/// closed (or, with `keep`, once its statement has ended by itself, given back to the
/// pool) and the slot given back, whether the task settling them finished or was dropped
/// (at exit) or panicked.
struct Settling {
    database: Database,
    connection: Option<Connection>,
    keep: bool,
}

impl Drop for Settling {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !self.keep
        {
            drop(Object::take(connection));
        }
        // (a connection kept went back to the pool above, before its slot comes free)
        self.database.inner.slots.add_permits(1);
    }
}

/// How a statement was left.
pub(super) struct Left {
    /// Whether the connection may go back to the pool if its statement ends by itself
    /// (not when it was left while preparing one).
    pub reusable: bool,
    /// When its timeout would have passed: the wait for it to end by itself stops then,
    /// at the latest, so that the cancel always leaves well before the server's own
    /// `statement_timeout` (500 ms later) could end the statement at the same moment.
    pub until: Instant,
}

/// Hands `connection`, whose statement is still running, and its pool slot (already
/// taken out of the count by the caller) to a task that settles them. Without a runtime
/// (only while it shuts down) they are settled at once: closed, and the slot given back.
pub(super) fn settle_later(database: &Database, connection: Connection, left: Left) {
    let settling = Settling {
        database: database.clone(),
        connection: Some(connection),
        keep: false,
    };
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(settle(settling, left));
    }
}

/// Why a statement farol stopped waiting for was not seen to end.
#[derive(Debug, thiserror::Error)]
enum NotEnded {
    /// The connection failed without an answer from the server (its causes in the
    /// message, as for `CancelError::Driver`).
    #[error("{}", super::describe(.0))]
    Connection(tokio_postgres::Error),
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
}

/// Waits for the connection to answer an empty query, which the server runs once the
/// statement has ended: within [`ENDS_BY_ITSELF_WITHIN`], the connection is kept; past
/// it, the statement is cancelled while the wait goes on. Bounded by the server's own
/// statement_timeout, so that, where farol sets one, it ends the statement if the cancel
/// cannot reach the server.
async fn settle(mut settling: Settling, left: Left) {
    let database = &settling.database;
    let connection = settling
        .connection
        .as_ref()
        .expect("set until the guard drops");
    let bound = super::server_statement_timeout(database.inner.query_timeout);
    let ended = async {
        match tokio::time::timeout(bound, connection.simple_query("")).await {
            Ok(Ok(_)) => Ok(()),
            // the server's answer: the statement ended (the cancel may stop the empty
            // query itself)
            Ok(Err(error)) if error.as_db_error().is_some() => Ok(()),
            Ok(Err(error)) => Err(NotEnded::Connection(error)),
            Err(_) => Err(NotEnded::NoAnswer(bound)),
        }
    };
    tokio::pin!(ended);
    // At exit, no wait: the cancel has the exit's one second to itself.
    let mut exiting = database.inner.exiting.subscribe();
    let ended_by_itself = tokio::select! {
        biased;
        result = &mut ended => Some(result),
        () = tokio::time::sleep_until(left.until.min(Instant::now() + ENDS_BY_ITSELF_WITHIN)) => None,
        _ = exiting.wait_for(|exiting| *exiting) => None,
    };
    let (cancelled, ended) = match ended_by_itself {
        Some(Ok(())) => {
            record(database, "ended");
            // back to the pool, then the slot; else closed
            settling.keep = left.reusable;
            return;
        }
        // the connection failed: a cancel may still reach the statement
        Some(Err(failed)) => (cancel(database, connection, bound).await, Err(failed)),
        None => tokio::join!(cancel(database, connection, bound), ended),
    };
    // Either failure leaves work on the server that nobody waits for: a statement that
    // may still hold its locks, or (a commit waiting for a standby) a server process.
    let (outcome, failure) = match (&cancelled, &ended) {
        (Err(reason), _) => (
            "not_cancelled",
            Some(format!("the cancel failed: {reason}")),
        ),
        (Ok(()), Err(reason)) => (
            "still_running",
            Some(format!("cancelled, but it did not end: {reason}")),
        ),
        (Ok(()), Ok(())) => ("cancelled", None),
    };
    record(database, outcome);
    if let Some(reason) = failure
        && database.inner.abandoned.should_log(&reason)
    {
        tracing::warn!(
            database = %database.inner.config.describe(),
            reason,
            "a statement farol stopped waiting for may still run; its connection is closed"
        );
    }
    if let (Err(cancel_failure), Err(no_answer)) = (cancelled, ended) {
        // Neither a new connection nor the old one reaches the server.
        database.mark_down(
            &format!("an abandoned statement: {no_answer}; its cancel: {cancel_failure}"),
            true,
        );
    }
    // `settling`, dropped on return, closes the connection and gives the slot back
}

fn record(database: &Database, outcome: &str) {
    database
        .inner
        .abandoned_outcomes
        .with_label_values(&[outcome])
        .inc();
}

/// Sends the cancel request (`cancel::send`: as libpq does, where the settings give an
/// address, waiting for the server to close the cancel's connection) within the connect
/// timeout, and waits for the close as long as for the statement's end (or the connect
/// timeout, if longer): the two are waited for together, so settling takes no longer than
/// before. A close that does not come is logged: a pooler that keeps cancels
/// open holds each settling pool slot for the whole bound.
async fn cancel(
    database: &Database,
    connection: &Connection,
    bound: Duration,
) -> Result<(), CancelError> {
    let inner = &database.inner;
    let bounds = cancel::Bounds {
        send: inner.connect_timeout,
        close: bound,
    };
    let sent = cancel::send(&inner.config, &connection.cancel_token(), bounds).await?;
    if sent == cancel::Sent::NotClosed {
        let reason = format!(
            "the server did not close a cancel's connection within {} ms",
            bound.max(inner.connect_timeout).as_millis()
        );
        if inner.abandoned.should_log(&reason) {
            tracing::warn!(
                database = %inner.config.describe(),
                reason,
                "a cancel request was sent"
            );
        }
    }
    Ok(())
}

/// Waits, at most `bound`, until no connection is being settled (nor in use): each holds
/// a pool slot until it is closed.
pub(super) async fn wait_for_settled(database: &Database, bound: Duration) {
    let inner = &database.inner;
    let all = u32::try_from(inner.pool.status().max_size).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(bound, inner.slots.acquire_many(all)).await;
}
