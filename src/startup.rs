//! Builds the application from its settings, binds its ports, and runs it until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::live::{DirWatcher, OnChange, watch_config_dir};
use crate::config::{LiveConfig, ProductionGuard, Settings};
use crate::db::{self, Database, readiness};
use crate::http::budget::PayloadBudget;
use crate::http::server;
use crate::notes::batch::Inserts;
use crate::routes;
use crate::shutdown::Shutdown;
use crate::state::{AppState, BUILD, Shared};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::Traces;

/// How often `CONFIG_DIR` is read for changes.
const CONFIG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the spans still queued at exit may take to leave.
const LAST_SPANS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the application could not start, or stopped with an error: printed after `farol: `.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] db::SetupError),
    /// The bound listener could not say its own address.
    #[error(transparent)]
    LocalAddress(std::io::Error),
    #[error(transparent)]
    Traces(#[from] crate::telemetry::traces::TracesError),
    #[error("server task failed: {0}")]
    ServerTask(#[source] tokio::task::JoinError),
}

/// A built application with its ports bound: ready to run.
pub struct Application {
    settings: Settings,
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    on_live_change: Option<OnChange>,
    traces: Option<Traces>,
}

impl Application {
    /// Binds the ports and builds the state. Port 0 picks a free port (tests).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let http = &settings.http;
        let listener = bind(SocketAddr::new(http.host, http.port)).await?;
        let metrics_listener = match http.metrics_port {
            Some(port) => Some(bind(SocketAddr::new(http.host, port)).await?),
            None => None,
        };
        let metrics = Arc::new(Metrics::new(BUILD.version, BUILD.commit));
        let traces = match &settings.traces {
            Some(traces) => Some(Traces::start(traces, metrics.traces.clone())?),
            None => None,
        };
        let tracer = traces.as_ref().map(Traces::tracer);
        let db = Database::new(
            &settings.database,
            metrics.db_duration.clone(),
            metrics.db_abandoned.clone(),
            tracer.clone(),
        )?;
        let state = AppState::new(Shared {
            inserts: Inserts::new(
                db.clone(),
                settings.database.pool_max,
                metrics.note_inserts_queued.clone(),
                tracer.is_some(),
            ),
            db,
            metrics,
            live: LiveConfig::new(settings.live.start.clone()),
            shutdown: Shutdown::default(),
            ready: Arc::new(AtomicBool::new(false)),
            limiter: Semaphore::new(http.max_concurrent_requests),
            payload_budget: PayloadBudget::new(http.payload_budget_bytes),
            request_timeout: http.request_timeout,
            chaos_enabled: settings.chaos.enabled,
            metrics_on_main_port: http.metrics_port.is_none(),
            tracer,
        });
        Ok(Self {
            settings,
            state,
            listener,
            metrics_listener,
            on_live_change: None,
            traces,
        })
    }

    /// Called after every live configuration change (the CLI swaps the log level here).
    pub fn on_live_change(mut self, callback: OnChange) -> Self {
        self.on_live_change = Some(callback);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` resolves, then shuts down gracefully: unready at once, serving
    /// on for `SHUTDOWN_DELAY_MS`, then draining in-flight requests for at most
    /// `SHUTDOWN_TIMEOUT_MS`, then closing the pool.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            settings,
            state,
            listener,
            metrics_listener,
            on_live_change,
            traces,
        } = self;
        let mut background: Vec<JoinHandle<()>> = vec![tokio::spawn(readiness::supervise(
            state.db.clone(),
            settings.database.migrate_on_start,
            readiness::Timeouts {
                connect: settings.database.connect_timeout,
                query: settings.database.query_timeout,
            },
            state.ready.clone(),
        ))];
        if let Some(dir) = &settings.live.dir {
            let watcher = DirWatcher::new(
                dir.clone(),
                settings.live.start.clone(),
                settings.chaos.enabled,
                ProductionGuard::new(&settings.database.connection),
            );
            let on_change = on_live_change.unwrap_or_else(|| Box::new(|_| {}));
            background.push(tokio::spawn(watch_config_dir(
                watcher,
                state.live.clone(),
                CONFIG_POLL_INTERVAL,
                on_change,
            )));
        }

        tokio::spawn({
            let shutdown = state.shutdown.clone();
            let delay = settings.shutdown.delay;
            async move { shutdown.run(stop, delay).await }
        });
        let drain_begun = || {
            let shutdown = state.shutdown.clone();
            async move { shutdown.drain_begun().await }
        };
        let abandoned = || {
            let shutdown = state.shutdown.clone();
            async move { shutdown.abandoned().await }
        };

        if let Some(files) = crate::config::budget::open_files_limit()
            && settings.http.max_connections as u64
                + crate::config::budget::reserved_fds(settings.database.pool_max)
                > files
        {
            tracing::warn!(
                max_connections = settings.http.max_connections,
                open_files_limit = files,
                "MAX_CONNECTIONS is above what the open-file limit allows: accepting will fail before the bound"
            );
        }
        tracing::info!(
            address = %listener.local_addr().map_err(StartupError::LocalAddress)?,
            metrics_port = settings.http.metrics_port,
            max_connections = settings.http.max_connections,
            payload_budget_mib = settings.http.payload_budget_bytes / (1024 * 1024),
            database = %settings.database.connection.describe(),
            mode = state.live.load().app_mode.as_str(),
            version = BUILD.version,
            "listening"
        );
        let (router, _) = routes::router(state.clone());
        let connections = Arc::new(Semaphore::new(settings.http.max_connections));
        let metrics = &state.metrics;
        metrics
            .http_connections_max
            .set(i64::try_from(settings.http.max_connections).unwrap_or(i64::MAX));
        let main = tokio::spawn(server::serve(
            listener,
            move |clock| router.on_connection(clock),
            connections,
            Some(server::ConnectionMetrics {
                open: metrics.http_connections_open.clone(),
                cut: metrics.http_connections_cut.clone(),
            }),
            drain_begun(),
            abandoned(),
        ));
        let metrics = metrics_listener.map(|listener| {
            let router = routes::metrics_router(state.clone());
            // Its own bound: a flood of connections on the main port must not keep
            // Prometheus from watching it.
            let connections = Arc::new(Semaphore::new(crate::config::budget::METRICS_CONNECTIONS));
            tokio::spawn(server::serve(
                listener,
                move |clock| router.on_connection(clock),
                connections,
                None,
                drain_begun(),
                abandoned(),
            ))
        });

        let servers = async {
            let main = main.await;
            if let Some(metrics) = metrics {
                let _ = metrics.await;
            }
            main
        };
        let timeout = settings.shutdown.timeout;
        let deadline = async {
            drain_begun().await;
            tokio::time::sleep(timeout).await;
        };
        let outcome = tokio::select! {
            joined = servers => joined.map_err(StartupError::ServerTask),
            () = deadline => {
                state.shutdown.abandon();
                tracing::warn!(
                    in_flight = state.metrics.http_active.get(),
                    "drain timed out; abandoning the requests still in flight"
                );
                Ok(())
            }
        };
        for task in background {
            task.abort();
        }
        state.db.settle_abandoned().await;
        state.db.close();
        if let Some(traces) = traces {
            // The last requests' spans, briefly: the grace period an orchestrator gives
            // counts the drain, not a collector's whims.
            let timeout = settings.traces.as_ref().map(|t| t.export_timeout);
            traces
                .shutdown(timeout.unwrap_or_default().min(LAST_SPANS_TIMEOUT))
                .await;
        }
        tracing::info!("stopped");
        outcome
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartupError::Bind { address, source })
}
