//! How a statement reaches the server: prepared once per connection and cached (named),
//! or parsed, bound and run in one round trip (unnamed).
//!
//! A pooler in transaction mode (PgBouncer, CloudNativePG's `Pooler`) hands each
//! transaction to whichever server connection is free. A named statement prepared on one
//! of them is unknown to the next, and PgBouncer before 1.21 cannot carry it across, so
//! behind such a pooler farol sends every statement unnamed (`DB_PREPARED_STATEMENTS`):
//! the whole exchange ends in one `Sync`, on one server connection. The cost is a parse
//! and a plan per statement, which the benchmark measures.

use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::Connection;
use crate::config::Statements;

/// A parameter and its PostgreSQL type: an unnamed statement is never described first,
/// so the types travel with the values.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A pooled connection, and the way its statements are sent.
pub struct Session {
    client: Connection,
    statements: Statements,
}

impl Session {
    pub(super) fn new(client: Connection, statements: Statements) -> Self {
        Self { client, statements }
    }

    /// Every row `sql` returns.
    pub async fn query(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match self.statements {
            Statements::Named => {
                let types: Vec<Type> = params.iter().map(|(_, kind)| kind.clone()).collect();
                let statement = self.client.prepare_typed_cached(sql, &types).await?;
                let values: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|(value, _)| *value).collect();
                self.client.query(&statement, &values).await
            }
            Statements::Unnamed => self.client.query_typed(sql, params).await,
        }
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
