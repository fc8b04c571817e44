//! Opening a connection: the password and the CA file as they are now, then the driver.
//!
//! Every new connection, pooled or not, is made here. Reading the password file and the
//! CA file again each time is what lets a rotated password (`PGPASSWORD_FILE`, as
//! Kubernetes secret volumes and CloudNativePG rotate it) or a renewed CA take effect
//! without a restart; the pool makes new connections rare enough for that to cost nothing.

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;
use tokio::task::JoinHandle;

use super::describe;
use super::tls::{self, TlsError};
use crate::config::{DatabaseConfig, PasswordError};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Before the driver was asked: a password file that cannot be read.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Before the driver was asked: a CA file that cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The driver's own reason: refused, TLS, authentication, a timeout.
    #[error("{}", describe(.0))]
    Driver(#[source] tokio_postgres::Error),
}

/// Opens one connection and spawns the task that drives it. `purpose` names the
/// connection in the debug line logged when it ends.
pub async fn open(
    config: &DatabaseConfig,
    purpose: &'static str,
) -> Result<(tokio_postgres::Client, JoinHandle<()>), ConnectError> {
    let settings = config.connection_settings()?;
    let tls = tls::connector(config)?;
    let (client, connection) = settings.connect(tls).await.map_err(ConnectError::Driver)?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(purpose, error = %describe(&error), "database connection ended");
        }
    });
    Ok((client, task))
}

/// The pool's manager: connections from [`open`], with deadpool-postgres's statement
/// cache, recycled without a round trip (a closed connection is dropped; any other failure
/// shows on the next query, which the pool then replaces).
pub struct PoolManager {
    pub config: DatabaseConfig,
}

impl managed::Manager for PoolManager {
    type Type = ClientWrapper;
    type Error = ConnectError;

    async fn create(&self) -> Result<ClientWrapper, ConnectError> {
        // Boxed: unboxed, the connect future (TLS, several hosts, authentication) is part
        // of every `Pool::get` future, which is then about 14 KB instead of about 1 KB
        // (the test below), and each query moves that future through its timeout and its
        // callers: copies on every query, for a connect that happens once in a
        // connection's life (docs/benchmarks.md measured what they cost).
        let (client, task) = Box::pin(open(&self.config, "pool")).await?;
        Ok(ClientWrapper::new(client, task))
    }

    async fn recycle(
        &self,
        client: &mut ClientWrapper,
        _: &Metrics,
    ) -> RecycleResult<ConnectError> {
        if client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query awaits a pool checkout inside its timeout, and its callers' futures
    /// hold that future by value: whatever its size, it is copied several times per
    /// query. With the connect future inside it, it was 14,008 bytes in a debug build and
    /// 13,936 in a release build; without, 1,112 in a debug build (`cargo test`'s). The
    /// bound leaves room for dependency updates and still fails by three times unboxed.
    #[test]
    fn a_pool_checkout_does_not_carry_the_connect_future() {
        let config = DatabaseConfig::from_connection_string("postgres://u@h/db").unwrap();
        let pool: managed::Pool<PoolManager> = managed::Pool::builder(PoolManager { config })
            .max_size(1)
            .build()
            .unwrap();
        let checkout = pool.get();
        let size = size_of_val(&checkout);
        assert!(size <= 4096, "a pool checkout's future is {size} bytes");
    }
}
