//! Opening a connection: the password and the CA file as they are now, then the driver.
//!
//! Every new connection, pooled or not, is made here. Reading the password file and the
//! CA file again each time is what lets a rotated password (`PGPASSWORD_FILE`, as
//! Kubernetes secret volumes and CloudNativePG rotate it) or a renewed CA take effect
//! without a restart; the pool makes new connections rare enough for that to cost nothing.
//!
//! With several hosts, each is tried in turn here, within an equal share of
//! `DB_CONNECT_TIMEOUT_MS`. The driver's own timeout bounds only the TCP connect of each
//! address: a host that takes the connection and then never answers (a hung server, a
//! proxy whose backend is gone) would hold the whole connect until the caller's bound ran
//! out, and the next host would never be tried.

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;
use tokio::task::JoinHandle;
use tokio_postgres::Config;
use tokio_postgres::config::{Host, LoadBalanceHosts};

use super::describe;
use super::tls::{self, TlsError};
use crate::config::{DatabaseConfig, PasswordError};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Before the driver was asked: a password file that cannot be read.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Before the driver was asked: a CA file that cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The driver's own reason: refused, TLS, authentication, a timeout.
    #[error("{}", describe(.0))]
    Driver(#[source] tokio_postgres::Error),
    /// Several hosts, none connected: each one's reason, named by its host.
    #[error("no host connected: {}", .0.join("; "))]
    EveryHost(Vec<String>),
}

/// Opens one connection and spawns the task that drives it. `purpose` names the
/// connection in the debug line logged when it ends.
pub async fn open(
    config: &DatabaseConfig,
    purpose: &'static str,
) -> Result<(tokio_postgres::Client, JoinHandle<()>), ConnectError> {
    let settings = config.connection_settings()?;
    let tls = tls::connector(config)?;
    let mut hosts = each_host(&settings);
    let (client, connection) = if hosts.len() < 2 {
        settings.connect(tls).await.map_err(ConnectError::Driver)?
    } else {
        if settings.get_load_balance_hosts() == LoadBalanceHosts::Random {
            fastrand::shuffle(&mut hosts);
        }
        // Within nine tenths of the budget: the callers' bounds, each the whole budget and
        // started a little earlier, then leave time for the reasons to be told.
        let deadline = settings
            .get_connect_timeout()
            .map(|budget| tokio::time::Instant::now() + *budget * 9 / 10);
        let count = hosts.len();
        let mut reasons = Vec::with_capacity(count);
        let mut connected = None;
        for (tried, (name, one)) in hosts.into_iter().enumerate() {
            let attempt = one.connect(tls.clone());
            let outcome = match deadline {
                // what is left, shared among the hosts left: one that fails fast leaves
                // its time to the next
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let share = left / (count - tried) as u32;
                    tokio::time::timeout(share, attempt).await.map_err(|_| {
                        format!(
                            "no connection within {} ms, its share of DB_CONNECT_TIMEOUT_MS",
                            share.as_millis()
                        )
                    })
                }
                None => Ok(attempt.await),
            };
            let reason = match outcome {
                Ok(Ok(pair)) => {
                    connected = Some(pair);
                    break;
                }
                Ok(Err(error)) => describe(&error),
                Err(timed_out) => timed_out,
            };
            reasons.push(format!("{name}: {reason}"));
        }
        connected.ok_or(ConnectError::EveryHost(reasons))?
    };
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(purpose, error = %describe(&error), "database connection ended");
        }
    });
    Ok((client, task))
}

/// With several hosts, the settings once for each, with that host alone (its address and
/// its port), named for the reasons; empty with one host, which the driver connects as it
/// is. Every other setting is copied: a test compares the result with the same string
/// written for one host. (The lists' lengths were checked when the settings were read.)
fn each_host(all: &Config) -> Vec<(String, Config)> {
    let hosts = all.get_hosts();
    if hosts.len() < 2 {
        return Vec::new();
    }
    let ports = all.get_ports();
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // libpq: one port for every host, or one per host
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let mut one = Config::new();
            let mut name = match host {
                Host::Tcp(name) => {
                    one.host(name);
                    name.clone()
                }
                Host::Unix(path) => {
                    one.host_path(path);
                    path.display().to_string()
                }
            };
            if name.contains(':') {
                name = format!("[{name}]");
            }
            if let Some(address) = all.get_hostaddrs().get(i) {
                one.hostaddr(*address);
                name = format!("{name} ({address})");
            }
            one.port(port);
            if let Some(timeout) = all.get_connect_timeout() {
                one.connect_timeout(*timeout);
            }
            if let Some(user) = all.get_user() {
                one.user(user);
            }
            if let Some(password) = all.get_password() {
                one.password(password);
            }
            if let Some(dbname) = all.get_dbname() {
                one.dbname(dbname);
            }
            if let Some(options) = all.get_options() {
                one.options(options);
            }
            if let Some(name) = all.get_application_name() {
                one.application_name(name);
            }
            if let Some(timeout) = all.get_tcp_user_timeout() {
                one.tcp_user_timeout(*timeout);
            }
            if let Some(interval) = all.get_keepalives_interval() {
                one.keepalives_interval(interval);
            }
            if let Some(retries) = all.get_keepalives_retries() {
                one.keepalives_retries(retries);
            }
            one.ssl_mode(all.get_ssl_mode())
                .ssl_negotiation(all.get_ssl_negotiation())
                .keepalives(all.get_keepalives())
                .keepalives_idle(all.get_keepalives_idle())
                .target_session_attrs(all.get_target_session_attrs())
                .channel_binding(all.get_channel_binding())
                .load_balance_hosts(all.get_load_balance_hosts());
            (format!("{name}:{port}"), one)
        })
        .collect()
}

/// The pool's manager: connections from [`open`], with deadpool-postgres's statement
/// cache, recycled without a round trip (a closed connection is dropped; any other failure
/// shows on the next query, which the pool then replaces).
pub struct PoolManager {
    pub config: DatabaseConfig,
}

impl managed::Manager for PoolManager {
    type Type = ClientWrapper;
    type Error = ConnectError;

    async fn create(&self) -> Result<ClientWrapper, ConnectError> {
        // Boxed: unboxed, the connect future (TLS, several hosts, authentication) is part
        // of every `Pool::get` future, which is then about 14 KB instead of about 1 KB
        // (the test below), and each query moves that future through its timeout and its
        // callers: copies on every query, for a connect that happens once in a
        // connection's life (docs/benchmarks.md measured what they cost).
        let (client, task) = Box::pin(open(&self.config, "pool")).await?;
        Ok(ClientWrapper::new(client, task))
    }

    async fn recycle(
        &self,
        client: &mut ClientWrapper,
        _: &Metrics,
    ) -> RecycleResult<ConnectError> {
        if client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_keeps_every_other_setting() {
        let settings = "user=u password=p dbname=d options='-c a=b' application_name=app \
            sslmode=require sslnegotiation=direct tcp_user_timeout=4 keepalives=0 \
            keepalives_idle=5 keepalives_interval=6 keepalives_retries=7 \
            target_session_attrs=read-write channel_binding=require load_balance_hosts=random";
        let all: Config = format!(
            "host=a,b,/run/pg hostaddr=10.0.0.1,10.0.0.2,10.0.0.3 port=1,2,3 connect_timeout=3 {settings}"
        )
        .parse()
        .unwrap();
        let hosts = each_host(&all);
        let names: Vec<&str> = hosts.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["a (10.0.0.1):1", "b (10.0.0.2):2", "/run/pg (10.0.0.3):3"]
        );
        let second: Config =
            format!("host=b hostaddr=10.0.0.2 port=2 connect_timeout=3 {settings}")
                .parse()
                .unwrap();
        assert_eq!(hosts[1].1, second);
    }

    #[test]
    fn each_host_shares_one_port() {
        let all: Config = "host=a,::1 port=7 user=u".parse().unwrap();
        let hosts = each_host(&all);
        assert_eq!(hosts[1].0, "[::1]:7");
        assert_eq!(hosts[1].1.get_ports(), [7]);
        assert!(each_host(&"host=a port=7 user=u".parse().unwrap()).is_empty());
    }

    /// Every query awaits a pool checkout inside its timeout, and its callers' futures
    /// hold that future by value: whatever its size, it is copied several times per
    /// query. With the connect future inside it, it was 14,008 bytes in a debug build and
    /// 13,936 in a release build; without, 1,112 in a debug build (`cargo test`'s). The
    /// bound leaves room for dependency updates and still fails by three times unboxed.
    #[test]
    fn a_pool_checkout_does_not_carry_the_connect_future() {
        let config = DatabaseConfig::from_connection_string("postgres://u@h/db").unwrap();
        let pool: managed::Pool<PoolManager> = managed::Pool::builder(PoolManager { config })
            .max_size(1)
            .build()
            .unwrap();
        let checkout = pool.get();
        let size = size_of_val(&checkout);
        assert!(size <= 4096, "a pool checkout's future is {size} bytes");
    }
}
