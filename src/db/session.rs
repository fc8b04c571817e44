//! How a statement reaches the server: prepared once per connection and cached (named),
//! or parsed, bound and run in one round trip (unnamed).
//!
//! A pooler in transaction mode (PgBouncer, CloudNativePG's `Pooler`) hands each
//! transaction to whichever server connection is free. A named statement prepared on one
//! of them is unknown to the next, and PgBouncer before 1.21 cannot carry it across, so
//! behind such a pooler farol sends every statement unnamed (`DB_PREPARED_STATEMENTS`):
//! the whole exchange ends in one `Sync`, on one server connection. The cost is a parse
//! and a plan per statement, which the benchmark measures.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::Connection;
use crate::config::Statements;

/// A parameter and its PostgreSQL type: an unnamed statement is never described first,
/// so the types travel with the values.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A pooled connection, and the way its statements are sent.
///
/// A session dropped while a statement awaits its answer (the query timeout fired, or the
/// request's client went away and took the request with it) takes its connection out of
/// the pool: the server is still running that statement, and the connection's next user
/// would wait behind it, up to the statement_timeout, and time out in turn (a ping
/// timing out so would pass for an outage). Dropped, the connection closes once the
/// server has answered; the pool opens a new one in its place.
pub struct Session {
    /// Always present until the session is dropped.
    client: Option<Connection>,
    statements: Statements,
    /// A statement has been sent and its answer not yet read.
    awaiting: AtomicBool,
}

impl Session {
    pub(super) fn new(client: Connection, statements: Statements) -> Self {
        Self {
            client: Some(client),
            statements,
            awaiting: AtomicBool::new(false),
        }
    }

    /// Every row `sql` returns.
    pub async fn query(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let client = self
            .client
            .as_ref()
            .expect("a live session has its connection");
        self.awaiting.store(true, Ordering::Relaxed);
        let rows = async {
            match self.statements {
                Statements::Named => {
                    let types: Vec<Type> = params.iter().map(|(_, kind)| kind.clone()).collect();
                    let statement = client.prepare_typed_cached(sql, &types).await?;
                    let values: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|(value, _)| *value).collect();
                    client.query(&statement, &values).await
                }
                Statements::Unnamed => client.query_typed(sql, params).await,
            }
        }
        .await;
        // Answered, with rows or an error: the server is done with the statement.
        self.awaiting.store(false, Ordering::Relaxed);
        rows
    }

    /// The first row `sql` returns, if any (the statements here return one at most).
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if *self.awaiting.get_mut()
            && let Some(client) = self.client.take()
        {
            drop(deadpool::managed::Object::take(client));
        }
    }
}
