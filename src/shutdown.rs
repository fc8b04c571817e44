//! Graceful shutdown: on SIGTERM (or SIGINT) the service turns unready at once, keeps
//! serving for `SHUTDOWN_DELAY_MS` (while load balancers and kube-proxy stop sending it
//! traffic), then stops accepting and drains in-flight requests within
//! `SHUTDOWN_TIMEOUT_MS`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Where the service is on its way out. The phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Unready (`/readyz` answers 503) but still accepting: the delay.
    Unready,
    /// No longer accepting; in-flight requests finish.
    Draining,
    /// The drain timed out: the requests still in flight are dropped.
    Abandoned,
}

/// Shared by the readiness probe, the servers and the shutdown sequence.
#[derive(Clone)]
pub struct Shutdown {
    phase: watch::Sender<Phase>,
    /// Set when the drain timed out and the requests still in flight are dropped: they
    /// were not given up by their clients.
    abandoning: Arc<AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Serving),
            abandoning: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Shutdown {
    /// Runs the sequence once `stop` resolves: unready at once, then, after `delay`, the
    /// drain.
    pub async fn run(&self, stop: impl Future<Output = ()>, delay: Duration) {
        stop.await;
        self.advance(Phase::Unready);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "unready; serving on until the delay ends"
        );
        tokio::time::sleep(delay).await;
        self.advance(Phase::Draining);
        tracing::info!("draining in-flight requests");
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|phase| {
            let forward = to > *phase;
            if forward {
                *phase = to;
            }
            forward
        });
    }

    /// The drain timed out: what is still in flight is dropped by the server.
    pub fn abandon(&self) {
        self.abandoning.store(true, Ordering::Release);
        self.advance(Phase::Abandoned);
    }

    pub fn is_abandoning(&self) -> bool {
        self.abandoning.load(Ordering::Acquire)
    }

    /// Whether `/readyz` should answer 503.
    pub fn is_draining(&self) -> bool {
        *self.phase.borrow() >= Phase::Unready
    }

    /// Resolves once the drain has begun: the servers stop accepting then.
    pub async fn drain_begun(&self) {
        let mut phase = self.phase.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = phase.wait_for(|phase| *phase >= Phase::Draining).await;
    }

    /// Resolves once the requests still in flight are to be dropped: then what they left
    /// running on the database is cancelled before the process exits.
    pub async fn abandoned(&self) {
        let mut phase = self.phase.subscribe();
        let _ = phase.wait_for(|phase| *phase == Phase::Abandoned).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unready_at_once_then_drain_after_the_delay() {
        let shutdown = Shutdown::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sequence = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown
                    .run(
                        async {
                            let _ = rx.await;
                        },
                        Duration::from_secs(5),
                    )
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!shutdown.is_draining());
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(shutdown.is_draining(), "unready at once");
        let drain = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.drain_begun().await }
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!drain.is_finished(), "still serving during the delay");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(drain.is_finished());
        sequence.await.unwrap();
    }
}
