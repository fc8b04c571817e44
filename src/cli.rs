//! The command line: `farol [serve]`, `farol migrate`, `farol healthcheck`, `farol --version`.
//!
//! Exit codes: 0 success, 1 failure at run time, 2 bad configuration or usage.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Env, Settings, Statements};
use crate::db::wait::Retry;
use crate::shutdown::termination_signal;
use crate::startup::Application;
use crate::telemetry::logging::Logging;

/// How long `farol migrate` waits for the database to appear (a Job may start first).
const MIGRATE_WAIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(
    name = "farol",
    version,
    about = "A Rust web service on PostgreSQL, shipped with its operations."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default). Reads `.env` if there is one.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// GET this instance's /livez (or --url) and exit 0 on a 200, 1 otherwise.
    Healthcheck {
        /// The URL to check; default this instance's /livez, at $HOST (loopback for a
        /// wildcard) and $PORT.
        #[arg(long)]
        url: Option<String>,
    },
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Migrate => migrate(),
        Command::Healthcheck { url } => healthcheck(url),
    }
}

fn config_error(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("farol: invalid configuration: {error}");
    ExitCode::from(2)
}

/// Runs `work` on a runtime of its own to its end, then waits at most [`LAST_TASKS_WAIT`]
/// for the runtime to stop: its tasks are dropped (the access lines of requests abandoned
/// at exit are written then, and connections being settled are closed), but what its
/// blocking threads still run is not waited for. A name lookup (the driver resolves host
/// names there) cannot be cut short, and during a DNS outage one may take the resolver's
/// timeouts over every search domain, past the grace period that counts the exit's own
/// bounded waits. Nothing farol needs done runs there at exit.
fn run_to_end<F: Future>(work: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::allocator::collect_when_idle)
        .build()
        .expect("the tokio runtime starts");
    let output = runtime.block_on(work);
    runtime.shutdown_timeout(LAST_TASKS_WAIT);
    output
}

/// How long the runtime may take to stop at exit (see [`run_to_end`]).
const LAST_TASKS_WAIT: Duration = Duration::from_millis(100);

fn serve() -> ExitCode {
    // Only `serve` reads `.env`, and only the working directory's, if it exists; real
    // variables win over it. (`dotenvy::dotenv()` would also look in every parent
    // directory, and take settings from a file nobody meant for this process.)
    if let Err(error) = dotenvy::from_path(".env")
        && !error.not_found()
    {
        return config_error(format!(".env: {error}"));
    }
    let env = Env::from_process();
    let settings = match Settings::from_env(&env) {
        Ok(settings) => settings,
        Err(error) => return config_error(error),
    };
    let logging = Logging::init(settings.log_format, settings.live.start.log_level);
    if crate::allocator::allocator_not_counting() {
        tracing::warn!(message = crate::allocator::NOT_COUNTING_WARNING);
    }
    if let Some(error) = crate::allocator::huge_pages_error() {
        tracing::warn!(
            %error,
            "transparent huge pages could not be turned off: each 2 MiB the allocator \
             touches may stay resident (docs/benchmarks.md, \"No transparent huge pages\")"
        );
    }
    let ignored = Settings::ignored_chaos_variables(&env);
    if !settings.chaos.enabled && !ignored.is_empty() {
        tracing::warn!(
            ?ignored,
            "fault injection variables ignored: CHAOS_ENABLED is not true"
        );
    }
    if let Some(sslmode) = settings.production_in_plaintext() {
        tracing::warn!(
            sslmode,
            "APP_MODE is production and the database connection may be unencrypted: \
             sslmode {sslmode} to a host beyond this machine; set sslmode=verify-full \
             with sslrootcert"
        );
    }
    if let Err(error) = crate::allocator::start_purger() {
        tracing::warn!(
            %error,
            "the allocator's purger thread did not start: memory freed while the service \
             is idle goes back to the kernel only when a worker next wakes (src/allocator.rs)"
        );
    }
    let set_level = logging.level_setter();
    let outcome = run_to_end(async move {
        Application::build(settings)
            .await?
            .on_live_change(Box::new(move |live| set_level(live.log_level)))
            .run_until(termination_signal())
            .await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "farol stopped with an error");
            drop(logging);
            eprintln!("farol: {error}");
            ExitCode::FAILURE
        }
    }
}

fn migrate() -> ExitCode {
    let settings = match Settings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(error) => return config_error(error),
    };
    if settings.database.statements == Statements::Unnamed {
        return config_error(ConfigError::new(
            "DB_PREPARED_STATEMENTS",
            "unnamed means a pooler in transaction mode, and migrations hold a session-level \
             lock that such a pooler cannot keep: point `farol migrate` at the database itself",
        ));
    }
    let logging = Logging::init(settings.log_format, settings.live.start.log_level);
    let outcome = run_to_end(async {
        let started = Instant::now();
        let mut retry = Retry::default();
        let mut client = loop {
            // Each host's connect is bounded by its share of DB_CONNECT_TIMEOUT_MS and named
            // in the reason (db::connect); this outer bound only catches what hangs beyond
            // them all.
            let bound = settings.database.connect_timeout * 2;
            let connecting = crate::db::connect_direct(&settings.database.connection);
            let error = match tokio::time::timeout(bound, connecting).await {
                Ok(Ok(client)) => break client,
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!(
                    "connecting took longer than {} ms (twice DB_CONNECT_TIMEOUT_MS)",
                    bound.as_millis()
                ),
            };
            if started.elapsed() >= MIGRATE_WAIT {
                return Err(format!("database not reachable: {error}"));
            }
            retry.failed(error, "database not reachable yet").await;
        };
        // A Job beside starting replicas may find one of them migrating: wait it out.
        loop {
            match crate::db::migrate::apply(&mut client, crate::db::migrate::LOCK_WAIT).await {
                Err(busy @ crate::db::migrate::MigrateError::LockBusy(_)) => {
                    tracing::info!(reason = %busy, "waiting for the other migration");
                }
                outcome => break outcome.map_err(|e| e.to_string()),
            }
        }
    });
    match outcome {
        Ok(applied) => {
            tracing::info!(
                applied,
                latest = crate::db::migrate::latest_version(),
                "migrations done"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "migration failed");
            drop(logging);
            eprintln!("farol: {error}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(url: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let var = |name| std::env::var(name).ok();
        local_livez(var("HOST").as_deref(), var("PORT").as_deref())
    });
    match crate::healthcheck::check(&url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("farol healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}

/// This instance's `/livez`, where `serve` listens given the same `HOST` and `PORT`: a
/// wildcard address (the default; `serve` binds it dual-stack) is reached on IPv4's
/// loopback, any other address on itself.
fn local_livez(host: Option<&str>, port: Option<&str>) -> String {
    let port = port.unwrap_or("5000");
    let host = match host.map(|h| h.trim().parse::<std::net::IpAddr>()) {
        None | Some(Err(_)) => "127.0.0.1".to_owned(),
        Some(Ok(ip)) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        Some(Ok(std::net::IpAddr::V6(ip))) => format!("[{ip}]"),
        Some(Ok(ip)) => ip.to_string(),
    };
    format!("http://{host}:{port}/livez")
}

#[cfg(test)]
mod tests {
    use super::local_livez;

    #[test]
    fn the_healthcheck_asks_where_serve_listens() {
        assert_eq!(local_livez(None, None), "http://127.0.0.1:5000/livez");
        assert_eq!(
            local_livez(Some("0.0.0.0"), Some("8080")),
            "http://127.0.0.1:8080/livez"
        );
        assert_eq!(local_livez(Some("::"), None), "http://127.0.0.1:5000/livez");
        assert_eq!(
            local_livez(Some("0:0:0:0:0:0:0:0"), None),
            "http://127.0.0.1:5000/livez"
        );
        assert_eq!(
            local_livez(Some("10.0.0.5"), None),
            "http://10.0.0.5:5000/livez"
        );
        assert_eq!(local_livez(Some("::1"), None), "http://[::1]:5000/livez");
    }
}
