//! PostgreSQL's cancel request, sent the way libpq sends it: on a connection of its own,
//! then waiting until the server closes that connection, which it does once it has acted
//! on the request.
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
//! farol connects the cancel's socket itself when its settings name one host: that is the
//! host every connection went to. With several hosts, it cannot tell which one a connection
//! reached (the driver does not say), so it sends the driver's cancel, which goes to the
//! right server and does not wait.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

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

/// Asks the server `config` names to cancel the statement running on `token`'s connection,
/// over TLS as `sslmode` says, and waits until the server has closed the cancel's
/// connection. Unbounded: the caller bounds it.
pub async fn send(config: &DatabaseConfig, token: &CancelToken) -> Result<(), String> {
    let mut connector = tls::connector(config).map_err(|error| error.to_string())?;
    let Some(server) = single_server(&config.driver) else {
        return token
            .cancel_query(connector)
            .await
            .map_err(|e| describe(&e));
    };
    match &server {
        Server::Tcp {
            name,
            address,
            port,
        } => {
            let stream = match address {
                Some(address) => TcpStream::connect((*address, *port)).await,
                None => TcpStream::connect((name.as_str(), *port)).await,
            };
            let stream = stream.map_err(|error| format!("cannot connect: {error}"))?;
            send_on(token, &mut connector, name, stream).await
        }
        Server::Unix(path) => {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|error| format!("cannot connect to {}: {error}", path.display()))?;
            // as the driver does for a socket directory: no host name to check
            send_on(token, &mut connector, "", stream).await
        }
    }
}

/// The request, over TLS as `sslmode` says, on `stream`, already connected to the server.
async fn send_on<S>(
    token: &CancelToken,
    connector: &mut MakeRustlsConnect,
    name: &str,
    stream: S,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls = MakeTlsConnect::<UntilClosed<S>>::make_tls_connect(connector, name)
        .map_err(|error| error.to_string())?;
    token
        .cancel_query_raw(UntilClosed(stream), tls)
        .await
        .map_err(|error| describe(&error))
}

/// The cancel's socket, whose shutdown (the driver's last step after writing the request,
/// through TLS's close when there is one) waits until the server closes the connection.
/// As libpq, it takes an error while waiting for the close as the close: the request has
/// been written by then.
struct UntilClosed<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for UntilClosed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for UntilClosed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The server sends nothing but, over TLS, its own close_notify: read and dropped.
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.0).poll_read(cx, &mut buf) {
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
}
