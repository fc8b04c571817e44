//! Raw HTTP/1.1 over TCP, for requests a well-behaved client library will not send.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as is to `base` (`http://host:port`) and returns everything the server
/// answers until it closes the connection (send `Connection: close`) or 10 s pass.
pub async fn exchange(base: &str, request: &[u8]) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // The server may answer (413) and close before it has read everything: a failed
    // write then is expected, the answer is what matters.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
