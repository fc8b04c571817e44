//! Throwaway PostgreSQL clusters for the tests, from the server binaries on the machine.
//!
//! Tests never read `DATABASE_URL` or `.env`. With `FAROL_TEST_DATABASE_URL` set, the
//! shared server is that one (the tests create a database per test on it); otherwise the
//! first test starts a cluster of its own. Tests that stop or break the database always
//! start a private cluster, so they never disturb the others.
//!
//! A cluster is a `postgres` child process that gets SIGQUIT when this test process dies
//! (PR_SET_PDEATHSIG), however it dies: nothing is left running after `cargo test`.
//! As root, initdb and postgres run as the `postgres` user, since they refuse root.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct PgCluster {
    dir: PathBuf,
    pub port: u16,
    server: Mutex<Option<(u32, JoinHandle<()>)>>,
    extra_config: Vec<String>,
}

/// The uid and gid to run the server binaries as: `postgres` when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").unwrap();
    // SAFETY: getpwnam reads a static buffer; we copy the two ids out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "running as root needs a `postgres` system user"
    );
    // SAFETY: checked non-null above, and nothing else has called getpwnam since
    Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect("a PostgreSQL server version")
}

pub fn as_server_user(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    command
}

pub fn chown_to_server_user(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string and plain ids.
        let changed = unsafe { libc::chown(c.as_ptr(), uid, gid) };
        assert_eq!(changed, 0, "chown {}", path.display());
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Removes the data directories of earlier test processes that are gone.
fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("pg-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl PgCluster {
    /// initdb and start a new cluster on a free port. `extra_config` lines go into its
    /// postgresql.conf (e.g. TLS settings).
    pub fn start_with(extra_config: &[&str]) -> Self {
        let root = std::env::temp_dir().join("farol-test-pg");
        std::fs::create_dir_all(&root).unwrap();
        remove_stale_dirs(&root);
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown_to_server_user(&root);
        chown_to_server_user(&dir);

        let output = as_server_user(&mut Command::new(bin_dir().join("initdb")))
            .args([
                "-D",
                "data",
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .current_dir(&dir)
            .output()
            .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self {
            dir,
            port: free_port(),
            server: Mutex::new(None),
            extra_config: extra_config.iter().map(|s| s.to_string()).collect(),
        };
        cluster.resume();
        cluster
    }

    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A cluster that will listen on `port` once [`PgCluster::resume`] is called: for
    /// tests of a service that starts before its database.
    pub fn prepared_on(port: u16) -> Self {
        let mut cluster = Self::start();
        cluster.stop();
        cluster.port = port;
        cluster
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let mut server = self.server.lock().unwrap();
        assert!(server.is_none(), "already running");
        let mut command = Command::new(bin_dir().join("postgres"));
        as_server_user(&mut command)
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
            ])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .args(self.extra_config.iter().flat_map(|c| ["-c", c.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("server.log")).unwrap());
        // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec,
        // after the uid change (which would clear it).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        // The death signal fires when the *thread* that forked exits: fork from a thread
        // that lives exactly as long as the server.
        let (tx, rx) = std::sync::mpsc::channel();
        let keeper = std::thread::spawn(move || {
            let mut child: Child = command.spawn().expect("postgres starts");
            tx.send(child.id()).unwrap();
            let _ = child.wait();
        });
        let pid = rx.recv().unwrap();
        *server = Some((pid, keeper));
        drop(server);
        self.wait_until_accepting();
    }

    fn wait_until_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: see {}",
                self.dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown: clients are disconnected, the server exits.
    pub fn stop(&mut self) {
        if let Some((pid, keeper)) = self.server.lock().unwrap().take() {
            // SAFETY: the pid is our own child, still waited on by `keeper`.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            keeper.join().unwrap();
        }
    }

    /// Freezes the server and every backend (SIGSTOP): a database that hangs rather than
    /// stops, as behind a network partition. [`PgCluster::thaw`] undoes it.
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal_all(libc::SIGCONT);
    }

    fn signal_all(&self, signal: i32) {
        let Some((postmaster, _)) = &*self.server.lock().unwrap() else {
            return;
        };
        let mut pids = vec![*postmaster as i32];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the fields after the last ')'
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(*postmaster) {
                pids.push(pid);
            }
        }
        for pid in pids {
            // SAFETY: our own server's processes.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server shared by the tests of this process: `FAROL_TEST_DATABASE_URL`, or a
/// cluster started on first use.
pub fn shared_server_url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var("FAROL_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => CLUSTER.get_or_init(PgCluster::start).url("postgres"),
        })
        .clone()
}

/// Creates a fresh, uniquely named database on the server at `admin_url` and returns a
/// URL for it.
pub async fn create_database(admin_url: &str) -> String {
    let name = format!("farol_test_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("the test server accepts connections");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    replace_database(admin_url, &name)
}

/// A fresh database on the server at `admin_url`, owned by a fresh login role that is no
/// superuser, as farol's own role is meant to be; a URL that logs in as that role.
pub async fn create_owned_database(admin_url: &str) -> String {
    let name = format!("farol_owner_{}", uuid::Uuid::new_v4().simple());
    let client = admin(admin_url).await;
    // two statements: CREATE DATABASE cannot share the implicit transaction of a batch
    client
        .batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{name}'"))
        .await
        .expect("CREATE ROLE");
    client
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {name}"))
        .await
        .expect("CREATE DATABASE");
    let url = replace_database(admin_url, &name);
    let rest = url.split_once('@').expect("a URL with a user").1;
    format!("postgres://{name}:{name}@{rest}")
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base
        .rfind('/')
        .filter(|i| *i > "postgres://".len())
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..cut]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A cluster where every role but the superuser must give its password (scram): for
/// rotating a password under a running service.
pub struct PasswordCluster {
    pub cluster: PgCluster,
    _hba: tempfile::TempDir,
}

impl PasswordCluster {
    pub fn start() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let hba = tempfile::tempdir().unwrap();
        let file = hba.path().join("pg_hba.conf");
        std::fs::write(
            &file,
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        std::fs::set_permissions(hba.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cluster = PgCluster::start_with(&[&format!("hba_file={}", file.display())]);
        Self { cluster, _hba: hba }
    }

    /// A login role with `password` and a database of the same name that it owns.
    pub async fn create_role_and_database(&self, name: &str, password: &str) {
        self.admin(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
            .await;
        self.admin(&format!("CREATE DATABASE {name} OWNER {name}"))
            .await;
    }

    pub async fn admin(&self, sql: &str) {
        let (client, connection) =
            tokio_postgres::connect(&self.cluster.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }
}

/// A superuser connection to `url`'s server, for changing it under the service.
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Every session of the server read-only, or not, from its next statement on.
pub async fn set_read_only(admin: &tokio_postgres::Client, read_only: bool) {
    let change = if read_only {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    // one statement per call: ALTER SYSTEM refuses to run inside a transaction block
    admin.batch_execute(change).await.unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

/// The server process of the session waiting on a lock in this database, once there is
/// one (at most 5 s).
pub async fn lock_waiter(observer: &tokio_postgres::Client) -> i32 {
    for _ in 0..100 {
        let row = observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no session came to wait on the lock");
}

/// Waits (at most 5 s) until the server process `pid` has ended: without a cancel it
/// would wait on its lock as long as the lock is held.
pub async fn wait_until_gone(observer: &tokio_postgres::Client, pid: i32) {
    for _ in 0..100 {
        let left: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the statement farol stopped waiting for still runs, in process {pid}");
}
