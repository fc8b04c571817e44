//! Graceful shutdown: on SIGTERM (or SIGINT) the service turns unready at once, keeps
//! serving for `SHUTDOWN_DELAY_MS` (while load balancers and kube-proxy stop sending it
//! traffic), then stops accepting and drains in-flight requests within
//! `SHUTDOWN_TIMEOUT_MS`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Shared by the readiness probe and the servers.
#[derive(Clone)]
pub struct Shutdown {
    draining: Arc<AtomicBool>,
    started: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            draining: Arc::new(AtomicBool::new(false)),
            started: watch::Sender::new(false),
        }
    }
}

impl Shutdown {
    /// Begins shutting down: `/readyz` answers 503 from now on.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Release);
        self.started.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Resolves once [`Shutdown::begin`] has been called.
    pub async fn begun(&self) {
        let mut started = self.started.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = started.wait_for(|started| *started).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
}
