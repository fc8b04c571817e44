//! The database going away, coming back, arriving late, being migrated by someone else,
//! and being reached over TLS. Every test here runs its own PostgreSQL cluster (or its
//! own database): none of them can disturb another test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{assert_problem, start};
use crate::support::pg::{PgCluster, create_database, free_port, shared_server_url};

#[tokio::test]
async fn an_outage_degrades_health_fast_and_recovery_needs_no_restart() {
    let mut cluster = PgCluster::start();
    let url = create_database(&cluster.url("postgres")).await;
    let app = start(&url, &[("DB_QUERY_TIMEOUT_MS", "1000")]).await;
    app.wait_ready().await;
    let note = app.create_note("survives", "the outage").await;
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());

    cluster.stop();
    let started = Instant::now();
    let health = app.get("/health").await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "fast: {:?}",
        started.elapsed()
    );
    assert_eq!(health.status(), 503);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "error", "checks": {"database": "down"}})
    );
    assert_eq!(app.get("/livez").await.status(), 200, "alive");
    assert_eq!(
        app.get("/readyz").await.status(),
        200,
        "an outage does not make it unready"
    );
    let started = Instant::now();
    let read = app.get(&path).await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(read.headers()["retry-after"], "1");
    assert_problem(read, 503, "database-unavailable").await;
    let status: Value = app.get("/").await.json().await.unwrap();
    assert_eq!(status["database"], "down", "the last observed state");

    cluster.resume();
    let back = Instant::now();
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
    let recovered_in = back.elapsed();
    let fetched: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(fetched, note, "nothing acknowledged was lost");
    let status: Value = app.get("/").await.json().await.unwrap();
    assert_eq!(status["database"], "up");
    eprintln!("recovered {recovered_in:?} after the database came back");
}

#[tokio::test]
async fn the_service_starts_before_its_database_and_becomes_ready_by_itself() {
    let port = free_port();
    let cluster = PgCluster::prepared_on(port);
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let app = start(&url, &[]).await;

    assert_eq!(app.get("/livez").await.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "starting"})
    );
    let started = Instant::now();
    assert_eq!(app.get("/health").await.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no hanging: {:?}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.resume();
    let waited = Instant::now();
    app.wait_ready().await;
    assert!(
        waited.elapsed() < Duration::from_secs(3),
        "backoff is capped at 1 s: {:?}",
        waited.elapsed()
    );
    assert_eq!(app.get("/health").await.status(), 200);
    app.create_note("late", "but fine").await;
}

#[tokio::test]
async fn without_migrate_on_start_it_waits_for_someone_else_to_migrate() {
    let url = create_database(&shared_server_url()).await;
    let app = start(&url, &[("MIGRATE_ON_START", "false")]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.get("/readyz").await.status(),
        503,
        "schema not there yet"
    );

    let config = farol::config::DatabaseConfig::from_connection_string(&url).unwrap();
    let mut client = farol::db::connect_direct(&config).await.unwrap();
    assert_eq!(farol::db::migrate::apply(&mut client).await.unwrap(), 1);
    app.wait_ready().await;
    app.create_note("migrated", "by the job").await;
}

#[tokio::test]
async fn replicas_starting_together_migrate_exactly_once() {
    let url = create_database(&shared_server_url()).await;
    let apps = futures_join(&url).await;
    for app in &apps {
        app.wait_ready().await;
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 1);
}

async fn futures_join(url: &str) -> Vec<crate::support::app::TestApp> {
    let (a, b, c) = tokio::join!(start(url, &[]), start(url, &[]), start(url, &[]));
    vec![a, b, c]
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed CA: `{name}.crt` and `{name}.key`.
fn make_ca(dir: &Path, name: &str) {
    let (key, crt, subject) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &EC_KEY,
            &[
                "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
            ],
        ]
        .concat(),
    );
}

/// `server.crt` and `server.key` for `localhost` (and no IP address), signed by `ca`.
fn make_server_certificate(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            &["req"][..],
            &EC_KEY,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

struct TlsCluster {
    cluster: PgCluster,
    dir: tempfile::TempDir,
}

fn tls_cluster() -> TlsCluster {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "other-ca"); // a CA that did not sign the server's certificate
    make_server_certificate(dir.path(), "ca");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in ["server.crt", "server.key", "ca.crt", "other-ca.crt"] {
        let path = dir.path().join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // PostgreSQL insists that its key belongs to it and nobody else can read it.
    let key = dir.path().join("server.key");
    let status = Command::new("chown").arg("postgres").arg(&key).status();
    if status.is_err() || !status.unwrap().success() {
        eprintln!("not root: the key stays ours");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cert = format!("ssl_cert_file={}", dir.path().join("server.crt").display());
    let key = format!("ssl_key_file={}", key.display());
    let cluster = PgCluster::start_with(&["ssl=on", &cert, &key]);
    TlsCluster { cluster, dir }
}

impl TlsCluster {
    fn url(&self, host: &str, mode: &str, ca: Option<&str>) -> String {
        let mut url = format!(
            "postgres://postgres@{host}:{}/postgres?sslmode={mode}",
            self.cluster.port
        );
        if let Some(ca) = ca {
            url.push_str(&format!(
                "&sslrootcert={}",
                self.dir.path().join(ca).display()
            ));
        }
        url
    }

    async fn encrypted_connections(&self) -> i64 {
        let (client, connection) =
            tokio_postgres::connect(&self.cluster.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE application_name = 'farol' AND ssl",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn tls_verify_full_connects_with_the_right_ca_and_host_only() {
    let tls = tls_cluster();

    let good = start(&tls.url("localhost", "verify-full", Some("ca.crt")), &[]).await;
    good.wait_ready().await;
    assert_eq!(good.get("/health").await.status(), 200);
    assert!(
        tls.encrypted_connections().await > 0,
        "the pool's connections use TLS"
    );

    let wrong_ca = start(
        &tls.url("localhost", "verify-full", Some("other-ca.crt")),
        &[],
    )
    .await;
    let wrong_host = start(&tls.url("127.0.0.1", "verify-full", Some("ca.crt")), &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for refused in [&wrong_ca, &wrong_host] {
        assert_eq!(refused.get("/readyz").await.status(), 503);
        assert_eq!(refused.get("/health").await.status(), 503);
    }
}

#[tokio::test]
async fn tls_require_encrypts_without_checking_the_certificate() {
    let tls = tls_cluster();
    let app = start(&tls.url("127.0.0.1", "require", None), &[]).await;
    app.wait_ready().await;
    assert_eq!(app.get("/health").await.status(), 200);
    assert!(tls.encrypted_connections().await > 0);
}
