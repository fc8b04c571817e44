//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::LiveConfig;
use crate::db::Database;
use crate::http::budget::PayloadBudget;
use crate::notes::batch::Inserts;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::Tracer;

/// What was built: `/version`, `farol_build_info` and the status page show it.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct BuildInfo {
    pub version: &'static str,
    /// The git commit, baked in at compile time from `FAROL_COMMIT` (the Dockerfile
    /// passes it); `unknown` in a plain `cargo build`.
    pub commit: &'static str,
    pub profile: &'static str,
}

pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    commit: match option_env!("FAROL_COMMIT") {
        Some(commit) => commit,
        None => "unknown",
    },
    profile: if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    },
};

/// Cheap to clone: one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub db: Database,
    /// Creates of notes, several to a statement under load.
    pub inserts: Inserts,
    pub metrics: Arc<Metrics>,
    pub live: LiveConfig,
    pub shutdown: Shutdown,
    /// Set once the database was reached and the schema found current.
    pub ready: Arc<AtomicBool>,
    /// Admission control: a request that finds no permit is shed at once.
    pub limiter: Semaphore,
    /// Request bodies and large responses held at once (`http::budget`).
    pub payload_budget: PayloadBudget,
    pub request_timeout: Duration,
    pub chaos_enabled: bool,
    /// Whether `/metrics` is served on the main port (no `METRICS_PORT`).
    pub metrics_on_main_port: bool,
    /// Present when traces are exported.
    pub tracer: Option<Tracer>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Whether the database was reached and its schema found current, once: an outage
    /// later does not take it back.
    pub fn schema_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutdown.is_draining()
    }
}

impl axum::extract::FromRef<AppState> for PayloadBudget {
    fn from_ref(state: &AppState) -> Self {
        state.payload_budget.clone()
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
