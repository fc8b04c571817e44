//! A statement nobody waits for any more: farol's timeout passed, the request's time limit
//! passed, or the client went away and the request was dropped.
//!
//! The server still runs it, and its connection would go back to the pool as it is: the
//! next query there would queue behind it, and a pool slot would look free while the
//! server was still busy with it. Behind a pooler in transaction mode farol sets no
//! statement_timeout, so without one on the role the statement would run until it ends,
//! holding its locks. So the connection and its pool slot go to a task that asks the
//! server to cancel the statement (PostgreSQL's cancel request, on a connection of its
//! own to the same server), waits for the connection to answer again, and only then gives
//! both back; a connection that does not answer in time is closed instead.
//!
//! A cancelled write may still have been applied: a commit that waits for a synchronous
//! standby is cut short as committed, and the request was already answered as a failure.
//! That is what `outcome-unknown` and the idempotency key are for (docs/service.md).

use std::time::Duration;

use deadpool::managed::Object;

use super::{Connection, Database, tls};

/// Hands `connection`, whose statement is still running, and its pool slot (already
/// taken out of the count by the caller) to a task that settles them. Without a runtime
/// (only while it shuts down) the connection is closed instead, and the slot given back.
pub(super) fn settle_later(database: &Database, connection: Connection) {
    let database = database.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                settle(&database, connection).await;
                database.inner.slots.add_permits(1);
            });
        }
        Err(_) => {
            drop(Object::take(connection));
            database.inner.slots.add_permits(1);
        }
    }
}

/// Cancels the running statement, then back to the pool once the connection answers an
/// empty query (which the server runs after the cancelled statement ends), within the
/// bound below; closed if it does not.
async fn settle(database: &Database, connection: Connection) {
    let inner = &database.inner;
    if let Err(reason) = cancel(database, &connection).await {
        // The statement may still end by itself (the server's statement_timeout, when
        // farol sets one): the wait below tells.
        tracing::debug!(reason, "could not cancel an abandoned statement");
    }
    // Long enough for the server's own statement_timeout to end the statement when the
    // cancel could not reach it.
    let bound = super::server_statement_timeout(inner.query_timeout);
    match tokio::time::timeout(bound, connection.simple_query("")).await {
        Ok(Ok(_)) => drop(connection), // back to the pool
        outcome => {
            let reason = match outcome {
                Ok(Err(error)) => super::describe(&error),
                _ => timed_out(bound),
            };
            tracing::debug!(
                reason,
                "closing a connection whose abandoned statement did not end"
            );
            drop(Object::take(connection));
        }
    }
}

/// Sends the cancel request, over TLS as the connection's own `sslmode` says, within the
/// connect timeout.
async fn cancel(database: &Database, connection: &Connection) -> Result<(), String> {
    let inner = &database.inner;
    let tls = tls::connector(&inner.config).map_err(|error| error.to_string())?;
    let token = connection.cancel_token();
    match tokio::time::timeout(inner.connect_timeout, token.cancel_query(tls)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(super::describe(&error)),
        Err(_) => Err(timed_out(inner.connect_timeout)),
    }
}

fn timed_out(bound: Duration) -> String {
    format!("no answer within {} ms", bound.as_millis())
}
