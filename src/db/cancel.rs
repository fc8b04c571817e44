//! PostgreSQL's cancel request, sent the way libpq sends it: on a connection of its own,
//! then waiting until the server closes that connection, which it does once it has passed
//! the request on.
//!
//! tokio-postgres's `CancelToken::cancel_query` closes its end as soon as the request is
//! written. PostgreSQL itself does not mind. PgBouncer 1.18.0 and 1.19.0 do: a cancel whose
//! client has gone before PgBouncer finished forwarding it can make it free that client
//! twice and exit, and every client of that PgBouncer loses its database. Thirty-two
//! statements abandoned at once were enough here, and even when PgBouncer 1.18.0 stayed up
//! it cancelled almost none of them (docs/database.md, "Behind a pooler in transaction
//! mode"). Waiting for the close also means that a cancel reported as sent has been passed
//! on, as libpq's callers may assume.
//!
//! farol connects the cancel's socket itself when its settings can mean one address only:
//! one host, given as an address (or `hostaddr`), a Unix socket, or a name that resolves
//! to one address (a Kubernetes Service's name does, unless headless). Otherwise it cannot
//! tell which address a connection reached (the driver does not say), and sends the
//! driver's cancel, which goes there and does not wait.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::CancelToken;
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::describe;
use super::tls;
use crate::config::DatabaseConfig;

/// Where the one host of a connection string listens.
#[derive(Debug, PartialEq, Eq)]
enum Server {
    Tcp {
        /// the name TLS checks the certificate against
        name: String,
        /// `hostaddr`, when given: where to connect instead of resolving `name`
        address: Option<IpAddr>,
        port: u16,
    },
    Unix(PathBuf),
}

/// The one server `driver` names, or `None` with several hosts.
fn single_server(driver: &tokio_postgres::Config) -> Option<Server> {
    let [host] = driver.get_hosts() else {
        return None;
    };
    // libpq's defaults: one port for every host, 5432 when none is given.
    let port = driver.get_ports().first().copied().unwrap_or(5432);
    Some(match host {
        Host::Tcp(name) => Server::Tcp {
            name: name.clone(),
            address: driver.get_hostaddrs().first().copied(),
            port,
        },
        Host::Unix(dir) => Server::Unix(dir.join(format!(".s.PGSQL.{port}"))),
    })
}

/// How long a cancel may take.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// to resolve, connect, shake hands (TLS) and write the request
    pub send: Duration,
    /// then, for the server to close the connection: past it, the request counts as sent
    /// (whether it ended the statement is for the caller to see)
    pub close: Duration,
}

/// Where the cancel goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// the driver's own cancel: to the address the connection reached, without waiting
    Driver,
    Tcp {
        name: String,
        address: SocketAddr,
    },
    Unix(PathBuf),
}

/// The one address the settings can mean, or the driver when they can mean several: then
/// the connection may have reached any of them (several hosts, a name with several
/// addresses: DNS round robin, a headless Service, `load_balance_hosts`), and a cancel sent
/// to another server would be ignored there. A name that cannot be resolved now goes to
/// the driver too, which kept the address it connected to.
async fn target(driver: &tokio_postgres::Config) -> Target {
    match single_server(driver) {
        None => Target::Driver,
        Some(Server::Unix(path)) => Target::Unix(path),
        Some(Server::Tcp {
            name,
            address: Some(ip),
            port,
        }) => Target::Tcp {
            name,
            address: SocketAddr::new(ip, port),
        },
        Some(Server::Tcp {
            name,
            address: None,
            port,
        }) => {
            let only = match tokio::net::lookup_host((name.as_str(), port)).await {
                Ok(mut addresses) => match (addresses.next(), addresses.next()) {
                    (Some(address), None) => Some(address),
                    _ => None,
                },
                Err(_) => None,
            };
            match only {
                Some(address) => Target::Tcp { name, address },
                None => Target::Driver,
            }
        }
    }
}

/// Asks the server `config` names to cancel the statement running on `token`'s connection,
/// over TLS as `sslmode` says, and waits until the server has closed the cancel's
/// connection, within `bounds`. An error means the request was not sent.
pub async fn send(
    config: &DatabaseConfig,
    token: &CancelToken,
    bounds: Bounds,
) -> Result<(), String> {
    let connector = tls::connector(config).map_err(|error| error.to_string())?;
    let written = Arc::new(AtomicBool::new(false));
    let sending = async {
        match target(&config.driver).await {
            Target::Driver => token
                .cancel_query(connector)
                .await
                .map_err(|e| describe(&e)),
            Target::Tcp { name, address } => {
                let stream = TcpStream::connect(address)
                    .await
                    .map_err(|error| format!("cannot connect to {address}: {error}"))?;
                send_on(token, connector, &name, stream, &written).await
            }
            Target::Unix(path) => {
                let stream = UnixStream::connect(&path)
                    .await
                    .map_err(|error| format!("cannot connect to {}: {error}", path.display()))?;
                // as the driver does for a socket directory: no host name to check
                send_on(token, connector, "", stream, &written).await
            }
        }
    };
    tokio::pin!(sending);
    if let Ok(result) = tokio::time::timeout(bounds.send, &mut sending).await {
        return result;
    }
    if !written.load(Ordering::Acquire) {
        return Err(format!("not sent within {} ms", bounds.send.as_millis()));
    }
    match tokio::time::timeout(bounds.close, sending).await {
        Ok(result) => result,
        Err(_) => {
            // Dropping the socket now is what PgBouncer 1.18 and 1.19 can die of; waiting
            // longer would hold the pool slot longer.
            tracing::debug!(
                wait_ms = bounds.close.as_millis(),
                "a cancel request was sent, and the server did not close its connection"
            );
            Ok(())
        }
    }
}

/// The request, over TLS as `sslmode` says, on `stream`, already connected to the server.
async fn send_on<S>(
    token: &CancelToken,
    mut connector: MakeRustlsConnect,
    name: &str,
    stream: S,
    written: &Arc<AtomicBool>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls = MakeTlsConnect::<UntilClosed<S>>::make_tls_connect(&mut connector, name)
        .map_err(|error| error.to_string())?;
    let stream = UntilClosed {
        stream,
        written: written.clone(),
    };
    token
        .cancel_query_raw(stream, tls)
        .await
        .map_err(|error| describe(&error))
}

/// The cancel's socket, whose shutdown (the driver's last step after writing and flushing
/// the request, through TLS's close when there is one) marks the request `written`, then
/// waits until the server closes the connection. As libpq, it takes an error while
/// waiting for the close as the close.
struct UntilClosed<S> {
    stream: S,
    written: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for UntilClosed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for UntilClosed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.written.store(true, Ordering::Release);
        // The server sends nothing but, over TLS, its own close_notify: read and dropped.
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(dsn: &str) -> Option<Server> {
        single_server(&DatabaseConfig::from_connection_string(dsn).unwrap().driver)
    }

    #[test]
    fn the_cancel_goes_to_the_one_host_named_or_to_the_driver_with_several() {
        assert_eq!(
            server("postgres://u@pooler:6432/db"),
            Some(Server::Tcp {
                name: "pooler".into(),
                address: None,
                port: 6432
            })
        );
        assert_eq!(
            server("host=db.example hostaddr=10.0.0.7 user=u"),
            Some(Server::Tcp {
                name: "db.example".into(),
                address: Some("10.0.0.7".parse().unwrap()),
                port: 5432
            })
        );
        assert_eq!(
            server("host=/run/postgresql port=5433 user=u"),
            Some(Server::Unix("/run/postgresql/.s.PGSQL.5433".into()))
        );
        assert_eq!(server("postgres://u@a:5433,b:5434/db"), None);
    }

    async fn target_of(dsn: &str) -> Target {
        target(&DatabaseConfig::from_connection_string(dsn).unwrap().driver).await
    }

    #[tokio::test]
    async fn a_cancel_goes_to_an_address_it_is_sure_of_else_to_the_driver() {
        assert_eq!(
            target_of("postgres://u@127.0.0.1:6432/db").await,
            Target::Tcp {
                name: "127.0.0.1".into(),
                address: "127.0.0.1:6432".parse().unwrap()
            }
        );
        assert_eq!(
            target_of("host=db.example hostaddr=10.0.0.7 user=u").await,
            Target::Tcp {
                name: "db.example".into(),
                address: "10.0.0.7:5432".parse().unwrap()
            }
        );
        assert_eq!(
            target_of("host=/run/postgresql user=u").await,
            Target::Unix("/run/postgresql/.s.PGSQL.5432".into())
        );
        assert_eq!(target_of("postgres://u@a,b/db").await, Target::Driver);
        // not resolvable now: the driver kept the address it connected to
        assert_eq!(
            target_of("postgres://u@no-such-host.invalid/db").await,
            Target::Driver
        );
    }
}
