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
//! mode"). A cancel that returns after the close has also been passed on by the server, as
//! libpq's callers may assume.
//!
//! farol connects the cancel's socket itself when its settings mean one address, known
//! without asking DNS: one host given as an address (or with `hostaddr`), or a Unix
//! socket (without `hostaddr`). Otherwise (several hosts, or a name) only the driver knows which address a
//! connection reached, and farol sends the driver's cancel, which goes there and does not
//! wait.

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

/// How long a cancel may take, both counted from its start.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// to connect, shake hands (TLS) and write the request
    pub send: Duration,
    /// for the server to close the connection (never less than `send`): past it, the
    /// request counts as sent, and whether it ended the statement is for the caller to see
    pub close: Duration,
}

/// What became of a cancel request that was sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// and the server closed the cancel's connection (or the driver sent it, which does
    /// not wait for that)
    Closed,
    /// and the server had not closed the cancel's connection when the bound passed
    NotClosed,
}

/// Why a cancel request was not sent.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot connect to {to}: {source}")]
    Connect {
        to: String,
        #[source]
        source: io::Error,
    },
    /// The driver's cancel, or the TLS handshake and the request on farol's own socket.
    /// Its causes are in the message, as `describe` gives them (never a server's DETAIL
    /// or HINT, which can quote row values): not a `#[source]`, so that nothing that
    /// walks an error's sources prints them again, or prints those.
    #[error("{}", describe(.0))]
    Driver(tokio_postgres::Error),
    #[error("not sent within {} ms", .0.as_millis())]
    NotSent(Duration),
}

impl CancelError {
    fn connecting_to(to: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Connect {
            to: to.to_string(),
            source,
        }
    }
}

/// Where the cancel goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// the driver's own cancel: to the address the connection reached, without waiting
    Driver,
    Tcp {
        /// the name TLS checks the certificate against
        name: String,
        address: SocketAddr,
    },
    Unix(PathBuf),
}

/// The one address the settings mean, known without asking DNS: one host, given as an
/// address or with `hostaddr`, or a Unix socket without one. Otherwise the driver's
/// cancel: with several hosts, or a name (whose addresses may be several, or have changed
/// since the connection was made: a cancel sent to another server is ignored there), only
/// the driver knows which address the connection reached; and a lookup would make cancels
/// wait on DNS.
fn target(driver: &tokio_postgres::Config) -> Target {
    let [host] = driver.get_hosts() else {
        return Target::Driver;
    };
    // libpq's defaults: one port for every host, 5432 when none is given.
    let port = driver.get_ports().first().copied().unwrap_or(5432);
    match host {
        // `hostaddr` beside a socket directory: the driver goes to the address, over TCP
        Host::Unix(_) if !driver.get_hostaddrs().is_empty() => Target::Driver,
        Host::Unix(dir) => Target::Unix(dir.join(format!(".s.PGSQL.{port}"))),
        Host::Tcp(name) => {
            let given = driver.get_hostaddrs().first().copied();
            match given.or_else(|| name.parse::<IpAddr>().ok()) {
                Some(ip) => Target::Tcp {
                    name: name.clone(),
                    address: SocketAddr::new(ip, port),
                },
                None => Target::Driver,
            }
        }
    }
}

/// Asks the server `config` names to cancel the statement running on `token`'s connection,
/// over TLS as `sslmode` says, and, where the settings give an address, waits until the
/// server has closed the cancel's connection, within `bounds`. An error means the request
/// was not sent.
pub async fn send(
    config: &DatabaseConfig,
    token: &CancelToken,
    bounds: Bounds,
) -> Result<Sent, CancelError> {
    let start = tokio::time::Instant::now();
    let connector = tls::connector(config)?;
    let written = Arc::new(AtomicBool::new(false));
    let sending = async {
        match target(&config.driver) {
            Target::Driver => token
                .cancel_query(connector)
                .await
                .map_err(CancelError::Driver),
            Target::Tcp { name, address } => {
                let stream = TcpStream::connect(address)
                    .await
                    .map_err(CancelError::connecting_to(address))?;
                send_on(token, connector, &name, stream, &written).await
            }
            Target::Unix(path) => {
                let stream = UnixStream::connect(&path)
                    .await
                    .map_err(CancelError::connecting_to(path.display()))?;
                // as the driver does for a socket directory: no host name to check
                send_on(token, connector, "", stream, &written).await
            }
        }
    };
    tokio::pin!(sending);
    if let Ok(result) = tokio::time::timeout_at(start + bounds.send, &mut sending).await {
        return result.map(|()| Sent::Closed);
    }
    if !written.load(Ordering::Acquire) {
        return Err(CancelError::NotSent(bounds.send));
    }
    let until = start + bounds.close.max(bounds.send);
    match tokio::time::timeout_at(until, sending).await {
        Ok(result) => result.map(|()| Sent::Closed),
        // Dropping the socket now is what PgBouncer 1.18 and 1.19 can die of; waiting
        // longer would hold the pool slot longer.
        Err(_) => Ok(Sent::NotClosed),
    }
}

/// The request, over TLS as `sslmode` says, on `stream`, already connected to the server.
async fn send_on<S>(
    token: &CancelToken,
    mut connector: MakeRustlsConnect,
    name: &str,
    stream: S,
    written: &Arc<AtomicBool>,
) -> Result<(), CancelError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // (its error type is `Infallible`: the name is checked in the handshake)
    let Ok(tls) = MakeTlsConnect::<UntilClosed<S>>::make_tls_connect(&mut connector, name);
    let stream = UntilClosed {
        stream,
        written: written.clone(),
    };
    token
        .cancel_query_raw(stream, tls)
        .await
        .map_err(CancelError::Driver)
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

    fn target_of(dsn: &str) -> Target {
        target(&DatabaseConfig::from_connection_string(dsn).unwrap().driver)
    }

    #[test]
    fn a_cancel_goes_to_an_address_known_without_dns_else_to_the_driver() {
        assert_eq!(
            target_of("postgres://u@127.0.0.1:6432/db"),
            Target::Tcp {
                name: "127.0.0.1".into(),
                address: "127.0.0.1:6432".parse().unwrap()
            }
        );
        assert_eq!(
            target_of("host=db.example hostaddr=10.0.0.7 user=u"),
            Target::Tcp {
                name: "db.example".into(),
                address: "10.0.0.7:5432".parse().unwrap()
            }
        );
        assert_eq!(
            target_of("host=/run/postgresql port=5433 user=u"),
            Target::Unix("/run/postgresql/.s.PGSQL.5433".into())
        );
        assert_eq!(
            target_of("host=/run/postgresql hostaddr=10.0.0.7 user=u"),
            Target::Driver
        );
        // a name, however many addresses it has now; several hosts
        assert_eq!(target_of("postgres://u@pooler:6432/db"), Target::Driver);
        assert_eq!(target_of("postgres://u@localhost/db"), Target::Driver);
        assert_eq!(
            target_of("postgres://u@10.0.0.1,10.0.0.2/db"),
            Target::Driver
        );
    }
}
