//! A TCP address whose destination can move: a service address or DNS name that leads to
//! another server after a failover. Connections made before a move stay where they were.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct MovableAddress {
    pub port: u16,
    target: Arc<AtomicU16>,
    accepting: JoinHandle<()>,
}

impl MovableAddress {
    /// Listens on a free port of 127.0.0.1, forwarding to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let destination = target.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = destination.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            port,
            target,
            accepting,
        }
    }

    /// New connections go to 127.0.0.1:`port` from now on.
    pub fn point_at(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

impl Drop for MovableAddress {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
