//! `farol healthcheck`: GET a URL (default: this instance's `/livez`) and report whether
//! it answered 200. The runtime image has no shell and no curl, so Docker's `HEALTHCHECK`
//! runs this. Plain blocking std networking: no runtime is needed for one request.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use axum::http::Uri;
use axum::http::uri::InvalidUri;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the check failed: printed after `farol healthcheck: `.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("invalid URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: InvalidUri,
    },
    #[error("only http:// URLs are supported, got {0:?}")]
    NotHttp(String),
    #[error("no host in {0:?}")]
    NoHost(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Setting the socket's timeouts failed.
    #[error(transparent)]
    Socket(io::Error),
    #[error("cannot send the request: {0}")]
    Send(#[source] io::Error),
    #[error("no answer: {0}")]
    NoAnswer(#[source] io::Error),
    #[error("{url} answered status {status}")]
    Status { url: String, status: String },
}

/// `Ok(())` when `url` answers 200 within the timeout; otherwise why not.
pub fn check(url: &str) -> Result<(), HealthcheckError> {
    let uri: Uri = url.parse().map_err(|source| HealthcheckError::InvalidUrl {
        url: url.to_owned(),
        source,
    })?;
    if uri.scheme_str() != Some("http") {
        return Err(HealthcheckError::NotHttp(url.to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| HealthcheckError::NoHost(url.to_owned()))?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let address = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|source| HealthcheckError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| HealthcheckError::NoAddress(host.to_owned()))?;

    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .map_err(|source| HealthcheckError::Connect { address, source })?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(HealthcheckError::Socket)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(HealthcheckError::Socket)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: farol-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .map_err(HealthcheckError::Send)?;

    // The status line is all we need; 64 bytes hold it.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(HealthcheckError::NoAnswer(e)),
        }
        if head[..read].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let status = line.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(HealthcheckError::Status {
            url: url.to_owned(),
            status: status.to_owned(),
        })
    }
}
