//! A real PgBouncer (the machine's: Debian's 1.18 here, older than 1.21, so it cannot
//! carry named prepared statements across server connections) in transaction pooling
//! mode, in front of a PostgreSQL server: far more client connections than server ones.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pg::{as_server_user, chown_to_server_user, free_port};

pub struct PgBouncer {
    pub port: u16,
    user: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("PgBouncer is installed (scripts/install-deps database)")
}

impl PgBouncer {
    /// Pools every database of the server behind `server_url` (trust authentication, as
    /// the test servers use) with `server_connections` server connections per database.
    pub fn start(server_url: &str, server_connections: usize) -> Self {
        let server: tokio_postgres::Config = server_url.parse().expect("a server URL");
        let host = match &server.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        };
        let server_port = server.get_ports().first().copied().unwrap_or(5432);
        let user = server.get_user().unwrap_or("postgres");
        let dir = tempfile::tempdir().unwrap();
        chown_to_server_user(dir.path());
        let port = free_port();
        // Clients are trusted; the password (when the server asks for one, as the CI job's
        // does) is what PgBouncer logs in to the server with.
        let password = server
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let userlist = dir.path().join("userlist.txt");
        // the file's quoting: a double quote inside a field is doubled
        let quote = |field: &str| format!("\"{}\"", field.replace('"', "\"\""));
        std::fs::write(&userlist, format!("{} {}\n", quote(user), quote(&password))).unwrap();
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n\
                 * = host={host} port={server_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {userlist}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_connections}\n\
                 max_client_conn = 1000\n\
                 server_reset_query =\n\
                 logfile = {log}\n",
                log = dir.path().join("pgbouncer.log").display(),
                userlist = userlist.display()
            ),
        )
        .unwrap();
        let child = as_server_user(&mut Command::new(binary()))
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            user: user.to_owned(),
            child,
            _dir: dir,
        }
    }

    /// `database_url` (a database on the server behind this pooler), through the pooler.
    pub fn url(&self, database_url: &str) -> String {
        let database = database_url
            .rsplit_once('/')
            .and_then(|(_, rest)| rest.split('?').next())
            .expect("a URL naming a database");
        // the keyword form, quoted: any user name the server's URL had
        let user = self.user.replace('\\', "\\\\").replace('\'', "\\'");
        format!(
            "host=127.0.0.1 port={} user='{user}' dbname={database} sslmode=disable",
            self.port
        )
    }
}

impl PgBouncer {
    /// Whether the pooler's process is still there (it exits on a fatal fault).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The binary's version line ("PgBouncer 1.18.0"), and the last lines of its log: for
    /// a failing test's message.
    pub fn describe(&self) -> String {
        let version = Command::new(binary())
            .arg("--version")
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default();
        let log =
            std::fs::read_to_string(self._dir.path().join("pgbouncer.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        format!(
            "{version}; its log ends: {:?}",
            tail.into_iter().rev().collect::<Vec<_>>()
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
