//! How a statement reaches the server: prepared once per connection and cached (named),
//! or parsed, bound and run in one round trip (unnamed).
//!
//! A pooler in transaction mode (PgBouncer, CloudNativePG's `Pooler`) hands each
//! transaction to whichever server connection is free. A named statement prepared on one
//! of them is unknown to the next, and PgBouncer before 1.21 cannot carry it across, so
//! behind such a pooler farol sends every statement unnamed (`DB_PREPARED_STATEMENTS`):
//! the whole exchange ends in one `Sync`, on one server connection. The cost is a parse
//! and a plan per statement, which the benchmark measures.
//!
//! A session dropped while a statement of its own runs (its caller stopped waiting) hands
//! its connection and pool slot to [`super::abandon`] rather than back to the pool.

use tokio::sync::SemaphorePermit;
use tokio::time::Instant;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::{Connection, Database, abandon};
use crate::config::Statements;

/// A parameter and its PostgreSQL type: an unnamed statement is never described first,
/// so the types travel with the values.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A pooled connection and its pool slot, and the way its statements are sent.
pub struct Session<'a> {
    // Declared before the slot, so that on a normal drop the connection is back in the
    // pool before the slot that lets the next request ask for it.
    client: Option<Connection>,
    slot: Option<SemaphorePermit<'a>>,
    database: &'a Database,
    statements: Statements,
    /// A statement was sent and its answer is not all read. (`&mut self` on the queries
    /// keeps it exact: one statement at a time.)
    running: bool,
    /// A statement is being prepared (named, not yet in the connection's cache): dropped
    /// then, the server keeps a prepared statement the driver never learnt the name of.
    preparing: bool,
    /// When the operation's `DB_QUERY_TIMEOUT_MS` runs out.
    deadline: Instant,
}

impl<'a> Session<'a> {
    pub(super) fn new(
        database: &'a Database,
        client: Connection,
        slot: SemaphorePermit<'a>,
        deadline: Instant,
    ) -> Self {
        Self {
            client: Some(client),
            slot: Some(slot),
            database,
            statements: database.statements(),
            running: false,
            preparing: false,
            deadline,
        }
    }

    /// Every row `sql` returns.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.running = true;
        let rows = self.send(sql, params).await;
        self.running = false;
        rows
    }

    async fn send(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        // the field borrowed alone: `preparing` is set while it is
        let client = self
            .client
            .as_ref()
            .expect("a session holds its connection until dropped");
        match self.statements {
            Statements::Named => {
                let types: Vec<Type> = params.iter().map(|(_, kind)| kind.clone()).collect();
                self.preparing = true;
                let statement = client.prepare_typed_cached(sql, &types).await;
                self.preparing = false;
                let statement = statement?;
                let values: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|(value, _)| *value).collect();
                client.query(&statement, &values).await
            }
            Statements::Unnamed => client.query_typed(sql, params).await,
        }
    }

    /// The first row `sql` returns, if any (the statements here return one at most).
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if !self.running {
            return; // the fields' own drops give back the connection, then the slot
        }
        if let (Some(client), Some(slot)) = (self.client.take(), self.slot.take()) {
            // the settling task gives the slot back when it has closed the connection
            slot.forget();
            // A connection left with a prepared statement it cannot name is never reused;
            // a statement may end by itself until its own timeout would have passed.
            let left = abandon::Left {
                reusable: !self.preparing,
                until: self.deadline,
            };
            abandon::settle_later(self.database, client, left);
        }
    }
}
