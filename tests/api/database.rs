//! The database going away, coming back, arriving late, being migrated by someone else,
//! and being reached over TLS. Every test here runs its own PostgreSQL cluster (or its
//! own database): none of them can disturb another test.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{assert_problem, start};
use crate::support::forward::MovableAddress;
use crate::support::pg::{
    PasswordCluster, PgCluster, admin, create_database, free_port, lock_waiter, set_read_only,
    shared_server_url,
};
use crate::support::tls::TlsCluster;

/// Made-up passwords of the rotation tests' throwaway roles.
const SECOND_PASSWORD: &str = "second-secret"; // pragma: allowlist secret (a throwaway test role's password)

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
    // the database reached: unready for the schema, not for the connection
    app.wait_for_status("/health", 200, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        app.get("/readyz").await.status(),
        503,
        "schema not there yet"
    );

    let config = farol::config::DatabaseConfig::from_connection_string(&url).unwrap();
    let mut client = farol::db::connect_direct(&config).await.unwrap();
    assert_eq!(
        farol::db::migrate::apply(&mut client, farol::db::migrate::LOCK_WAIT)
            .await
            .unwrap(),
        farol::db::migrate::latest_version() as usize,
        "every migration, once"
    );
    app.wait_ready().await;
    app.create_note("migrated", "by the job").await;
}

/// A rollback to an older release meets a schema a newer one migrated further: it
/// applies nothing and serves, when every migration it knows is there unchanged.
#[tokio::test]
async fn a_database_migrated_beyond_this_release_still_serves_it() {
    let url = create_database(&shared_server_url()).await;
    let config = farol::config::DatabaseConfig::from_connection_string(&url).unwrap();
    let mut client = farol::db::connect_direct(&config).await.unwrap();
    farol::db::migrate::apply(&mut client, farol::db::migrate::LOCK_WAIT)
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (9999, 'from_a_newer_release', '2026-12-03T00:00:00Z', '0')",
        )
        .await
        .unwrap();
    assert_eq!(
        farol::db::migrate::apply(&mut client, farol::db::migrate::LOCK_WAIT)
            .await
            .unwrap(),
        0
    );
    let app = start(&url, &[]).await;
    app.wait_ready().await;
    app.create_note("older", "release").await;

    // A history that lacks one of this release's migrations, or holds it changed, is not
    // one it can serve on: the migration refuses, naming it, and lets go of its lock; a
    // replica that leaves migrating to a Job stays unready.
    let observer = admin(&url).await;
    for change in [
        "UPDATE refinery_schema_history SET checksum = '1' WHERE version = 1",
        "DELETE FROM refinery_schema_history WHERE version = 1",
    ] {
        client.batch_execute(change).await.unwrap();
        let refused = farol::db::migrate::apply(&mut client, farol::db::migrate::LOCK_WAIT)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("lacks migration 1 of this release, or holds it changed"),
            "{change}: {refused}"
        );
        let locks: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(locks, 0, "{change}: the migration lock is let go");
    }
    let job_migrates = start(&url, &[("MIGRATE_ON_START", "false")]).await;
    job_migrates
        .wait_for_status("/health", 200, Duration::from_secs(10))
        .await;
    // Its readiness checks read the history one after the other, and none once ready: a
    // second check held up behind a lock shows that the first came to its end, unready.
    for _ in 0..2 {
        observer
            .batch_execute("BEGIN; LOCK TABLE refinery_schema_history IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        // polled from another session: one in a transaction sees a frozen snapshot
        lock_waiter(&client).await;
        observer.batch_execute("COMMIT").await.unwrap();
    }
    assert_eq!(job_migrates.get("/readyz").await.status(), 503);
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
    assert_eq!(
        rows.get::<_, i64>(0),
        i64::from(farol::db::migrate::latest_version()),
        "each migration applied once"
    );
}

async fn futures_join(url: &str) -> Vec<crate::support::app::TestApp> {
    let (a, b, c) = tokio::join!(start(url, &[]), start(url, &[]), start(url, &[]));
    vec![a, b, c]
}

/// Whether an app on `url` reaches the database (ready within `limit`), and how many
/// of the connections it holds then are encrypted.
async fn reaches(tls: &TlsCluster, url: String, limit: Duration) -> (bool, i64) {
    let app = start(&url, &[]).await;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if app.get("/readyz").await.status() == 200 {
            let healthy = app.get("/health").await.status() == 200;
            return (healthy, tls.encrypted_connections().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (false, 0)
}

/// libpq's rules, every one: `require` without a root certificate encrypts and checks
/// nothing; `require` with one and `verify-ca` check the chain but not the name;
/// `verify-full` checks both.
#[tokio::test]
async fn tls_modes_check_what_libpq_checks() {
    let tls = TlsCluster::start();
    // Long enough for the right cases on a busy machine; the wrong ones never get there.
    let limit = Duration::from_secs(10);
    let cases = [
        ("require", None, "127.0.0.1", true),
        ("require", Some("ca.crt"), "127.0.0.1", true),
        ("require", Some("other-ca.crt"), "localhost", false),
        ("verify-ca", Some("ca.crt"), "127.0.0.1", true),
        ("verify-ca", Some("other-ca.crt"), "localhost", false),
        ("verify-full", Some("ca.crt"), "localhost", true),
        ("verify-full", Some("ca.crt"), "127.0.0.1", false),
        ("verify-full", Some("other-ca.crt"), "localhost", false),
    ];
    let outcomes = futures_util::future::join_all(
        cases
            .iter()
            .map(|(mode, ca, host, _)| reaches(&tls, tls.url(host, mode, *ca), limit)),
    )
    .await;
    for ((mode, ca, host, expected), (reached, encrypted)) in cases.iter().zip(outcomes) {
        assert_eq!(
            reached, *expected,
            "sslmode={mode} sslrootcert={ca:?} host={host}"
        );
        if reached {
            assert!(
                encrypted > 0,
                "sslmode={mode}: the pool's connections use TLS"
            );
        }
    }
}

#[tokio::test]
async fn a_rotated_password_file_is_used_by_the_next_connection_without_a_restart() {
    let db = PasswordCluster::start();
    db.create_role_and_database("rotating", "first-secret")
        .await;
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, "first-secret\n").unwrap();
    let port = db.cluster.port.to_string();
    let env = farol::config::Env::from_pairs([
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "rotating"),
        ("PGDATABASE", "rotating"),
        ("PGPASSWORD_FILE", password_file.to_str().unwrap()),
        ("PGSSLMODE", "disable"),
        ("DB_QUERY_TIMEOUT_MS", "1000"),
    ]);
    let settings = farol::config::Settings::from_env(&env).unwrap();
    let app = crate::support::app::start_with_settings(settings).await;
    app.wait_ready().await;
    let note = app.create_note("before", "the rotation").await;

    // The database's password changes first and every session is cut, as an operator
    // rotating it does; the mounted file follows a little later.
    db.admin(&format!("ALTER ROLE rotating PASSWORD '{SECOND_PASSWORD}'"))
        .await;
    db.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rotating'")
        .await;
    app.wait_for_status("/health", 503, Duration::from_secs(5))
        .await;
    std::fs::write(&password_file, "second-secret\n").unwrap();
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    assert_eq!(
        app.get(&path).await.status(),
        200,
        "same process, new password"
    );
    app.create_note("after", "the rotation").await;
}

#[tokio::test]
async fn a_saturated_pool_is_busy_not_an_outage() {
    let url = create_database(&shared_server_url()).await;
    let app = start(
        &url,
        &[("DB_POOL_MAX", "1"), ("DB_QUERY_TIMEOUT_MS", "1500")],
    )
    .await;
    app.wait_ready().await;
    let note = app.create_note("locked", "by the test").await;
    let id = note["id"].as_str().unwrap().to_owned();

    // The test locks the note's row; writes to it then hold the pool's only connection,
    // one after the other, each for as long as its query may take.
    let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM notes WHERE id = '{id}' FOR UPDATE"
        ))
        .await
        .unwrap();
    let mut writes = Vec::new();
    for _ in 0..2 {
        let (client, url) = (app.client.clone(), app.url(&format!("/api/v1/notes/{id}")));
        writes.push(tokio::spawn(async move {
            client
                .put(url)
                .json(&json!({"title": "waits", "body": ""}))
                .send()
                .await
                .unwrap()
                .status()
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let note_path = format!("/api/v1/notes/{id}");
    let (health, read) = tokio::join!(app.get("/health"), app.get(&note_path));
    assert_eq!(health.status(), 503);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "error", "checks": {"database": "busy"}})
    );
    assert_eq!(read.headers()["retry-after"], "1");
    assert_problem(read, 503, "database-busy").await;
    let status: Value = app.get("/").await.json().await.unwrap();
    assert_eq!(status["database"], "up", "busy is not an outage");

    locker.batch_execute("ROLLBACK").await.unwrap();
    for write in writes {
        let status = write.await.unwrap();
        assert!(status == 200 || status == 503, "{status}");
    }
    assert_eq!(app.get("/health").await.status(), 200);
}

/// `/health` checks that come while a ping is in flight share it: any rate of them puts
/// one statement at a time on the database. Here the pool's one connection is held by a
/// write waiting on a locked row, so the first check's ping waits for it while the other
/// 31 come.
#[tokio::test]
async fn health_checks_that_come_together_share_one_round_trip() {
    const CHECKS: usize = 32;
    const SHARED_PINGS: &str =
        r#"db_client_operation_duration_seconds_count{db_operation_name="health_check"}"#;
    let url = create_database(&shared_server_url()).await;
    let app = start(
        &url,
        &[
            ("DB_POOL_MAX", "1"),
            ("DB_QUERY_TIMEOUT_MS", "30000"),
            ("REQUEST_TIMEOUT_MS", "90000"),
        ],
    )
    .await;
    app.wait_ready().await;
    let note = app.create_note("locked", "by the test").await;
    let note_path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    let locker = admin(&url).await;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM notes WHERE id = '{}' FOR UPDATE",
            note["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    let write = {
        let (client, url) = (app.client.clone(), app.url(&note_path));
        tokio::spawn(async move {
            let note = json!({"title": "waits", "body": ""});
            client.put(url).json(&note).send().await.unwrap().status()
        })
    };
    // the write holds the pool's connection (seen from outside the locker's transaction,
    // whose view of the statistics stays as it first read them)
    lock_waiter(&admin(&url).await).await;
    let started = Instant::now();
    let checks: Vec<_> = (0..CHECKS)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/health"));
            tokio::spawn(async move { client.get(url).send().await.unwrap() })
        })
        .collect();
    // the write, the checks and this scrape, all in farol at once
    let in_flight = (CHECKS + 2) as f64;
    while app.metric("http_server_active_requests").await != Some(in_flight) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the checks never all waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // counted as they come in, a moment before each reaches the check: time to get there
    // (the ping waits for the connection until the lock goes)
    tokio::time::sleep(Duration::from_millis(500)).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    for check in checks {
        let check = check.await.unwrap();
        assert_eq!(check.status(), 200);
        assert_eq!(check.text().await.unwrap(), r#"{"status":"ok"}"#);
    }
    assert_eq!(write.await.unwrap(), 200);
    assert_eq!(
        app.metric(SHARED_PINGS).await,
        Some(1.0),
        "one round trip for the {CHECKS} checks"
    );
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(
        app.metric(SHARED_PINGS).await,
        Some(2.0),
        "a check after the round trip ended sends one of its own"
    );
}

#[tokio::test]
async fn url_parameters_reach_postgresql_with_their_libpq_meaning() {
    let url = create_database(&shared_server_url()).await;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin.batch_execute("CREATE SCHEMA app").await.unwrap();
    // FAROL_TEST_DATABASE_URL (the CI job's server) may carry no query of its own
    let separator = if url.contains('?') { '&' } else { '?' };
    let app = start(
        &format!("{url}{separator}application_name=my%20app&options=-c%20search_path%3Dapp"),
        &[],
    )
    .await;
    app.wait_ready().await;
    app.create_note("in", "schema app").await;

    let names: Vec<String> = admin
        .query(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "my app"),
        "{names:?}"
    );
    let schema: String = admin
        .query_one(
            "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'notes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, "app", "the migration ran with search_path=app");
}

#[tokio::test]
async fn the_api_answers_503_not_500_until_its_schema_is_in_place() {
    let url = create_database(&shared_server_url()).await;
    let app = start(&url, &[("MIGRATE_ON_START", "false")]).await;
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
    let write = app
        .post_json("/api/v1/notes", &json!({"title": "too", "body": "early"}))
        .await;
    assert_eq!(write.headers()["retry-after"], "1");
    assert_problem(write, 503, "not-ready").await;
    assert_problem(app.get("/api/v1/notes").await, 503, "not-ready").await;
    assert_eq!(
        app.get("/api/v1/openapi.json").await.status(),
        200,
        "needs no schema"
    );

    let config = farol::config::DatabaseConfig::from_connection_string(&url).unwrap();
    let mut client = farol::db::connect_direct(&config).await.unwrap();
    farol::db::migrate::apply(&mut client, farol::db::migrate::LOCK_WAIT)
        .await
        .unwrap();
    app.wait_ready().await;
    app.create_note("now", "fine").await;
}

/// The backends of this database (other than the caller's) waiting on a lock.
async fn waiting_on_a_lock(client: &tokio_postgres::Client) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A migration may take longer than any timeout the service has: it is never cut short
/// and started again (it could never finish). Here the migration is held up by a lock
/// for over a minute, past the 60 s that once bounded it, with every bound the service
/// still has set low.
#[tokio::test]
async fn a_migration_that_outlasts_every_bound_is_never_cut_short() {
    let url = create_database(&shared_server_url()).await;
    let (blocker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    blocker
        .batch_execute(
            "CREATE TABLE refinery_schema_history (version int4 PRIMARY KEY, \
             name varchar(255), applied_on varchar(255), checksum varchar(255))",
        )
        .await
        .unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE refinery_schema_history IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // Watched from another session: inside a transaction, pg_stat_activity stays as it
    // was at the transaction's first look.
    let (observer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let app = start(
        &url,
        &[
            ("DB_CONNECT_TIMEOUT_MS", "200"),
            ("DB_QUERY_TIMEOUT_MS", "200"),
        ],
    )
    .await;
    let migrating = lock_waiter(&observer).await;

    tokio::time::sleep(Duration::from_secs(65)).await;
    assert_eq!(
        waiting_on_a_lock(&observer).await,
        [migrating],
        "the same migration session, still waiting: not abandoned for a new attempt"
    );
    assert_eq!(app.get("/readyz").await.status(), 503);

    blocker.batch_execute("COMMIT").await.unwrap();
    app.wait_ready().await;
    app.create_note("migrated", "in the end").await;
}

/// A rotated password stops new connections only: the established ones keep serving
/// until the file catches up. Failing to open one must not close the others, or a
/// rotation under load empties the pool (each failure closing what is idle).
#[tokio::test]
async fn a_password_rotated_before_its_file_leaves_the_established_connections_serving() {
    let db = PasswordCluster::start();
    db.create_role_and_database("steady", "first-secret").await;
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, "first-secret\n").unwrap();
    let port = db.cluster.port.to_string();
    let env = farol::config::Env::from_pairs([
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "steady"),
        ("PGDATABASE", "steady"),
        ("PGPASSWORD_FILE", password_file.to_str().unwrap()),
        ("PGSSLMODE", "disable"),
        ("DB_POOL_MAX", "3"),
    ]);
    let app =
        crate::support::app::start_with_settings(farol::config::Settings::from_env(&env).unwrap())
            .await;
    app.wait_ready().await;
    let note = app.create_note("read", "under load").await;
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());

    // Two connections in the pool: a write held on a locked row keeps one busy while a
    // read opens the other.
    let (locker, connection) =
        tokio_postgres::connect(&db.cluster.url("steady"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let id = note["id"].as_str().unwrap();
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM notes WHERE id = '{id}' FOR UPDATE"
        ))
        .await
        .unwrap();
    let write = {
        let (client, url) = (app.client.clone(), app.url(&path));
        tokio::spawn(async move {
            client
                .put(url)
                .json(&json!({"title": "w", "body": ""}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    lock_waiter(&admin(&db.cluster.url("steady")).await).await;
    assert_eq!(app.get(&path).await.status(), 200);
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(write.await.unwrap(), 200);

    // The password changes; the file has not caught up. Three reads at once: two take the
    // two connections, the third must open one, and fails.
    db.admin(&format!("ALTER ROLE steady PASSWORD '{SECOND_PASSWORD}'"))
        .await;
    let burst = futures_util::future::join_all((0..3).map(|_| app.get(&path))).await;
    let statuses: Vec<u16> = burst.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    // What the failed connect did not do: close the two that work.
    for _ in 0..5 {
        assert_eq!(
            app.get(&path).await.status(),
            200,
            "the established connections still serve"
        );
    }
    std::fs::write(&password_file, "second-secret\n").unwrap();
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
}

/// The backends of the sessions on `admin`'s database other than its own: farol's.
pub(crate) async fn farol_backends(admin: &tokio_postgres::Client) -> Vec<i32> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() ORDER BY pid",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// A server short of a resource (a full disk) fails a write with an ERROR of class 53 and
/// leaves the session alive: the write is a 503, and the pooled connections are kept
/// rather than closed and opened again for the next requests.
#[tokio::test]
async fn a_server_short_of_a_resource_fails_the_write_and_keeps_the_pooled_connections() {
    let url = create_database(&shared_server_url()).await;
    let app = start(&url, &[]).await;
    app.wait_ready().await;
    let note = app.create_note("kept", "").await;
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    let admin = admin(&url).await;
    admin
        .batch_execute(
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$; \
             CREATE TRIGGER disk_full BEFORE UPDATE ON notes \
             FOR EACH ROW EXECUTE FUNCTION disk_full()",
        )
        .await
        .unwrap();
    // several pooled connections, idle between requests
    let reads = futures_util::future::join_all((0..4).map(|_| app.get(&path))).await;
    assert!(reads.iter().all(|read| read.status() == 200));
    let before = farol_backends(&admin).await;
    assert!(before.len() > 1, "{before:?}");

    let write = app
        .put_json(&path, &json!({"title": "w", "body": ""}))
        .await;
    let problem = assert_problem(write, 503, "database-unavailable").await;
    assert!(
        !problem.to_string().contains("extend file"),
        "the server's words stay in the log: {problem}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        farol_backends(&admin).await,
        before,
        "no pooled connection was closed"
    );
    assert_eq!(app.get(&path).await.status(), 200);
}

/// A database that hangs (a partition) rather than refuses: the waits for a pool slot
/// behind hanging connects are the outage's, not saturation: `down`, never `busy`.
#[tokio::test]
async fn a_hanging_database_is_down_not_busy() {
    let cluster = PgCluster::start();
    let url = create_database(&cluster.url("postgres")).await;
    let app = start(
        &url,
        &[
            ("DB_POOL_MAX", "2"),
            ("DB_QUERY_TIMEOUT_MS", "400"),
            ("DB_CONNECT_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    app.wait_ready().await;
    cluster.freeze();
    let answers = futures_util::future::join_all((0..8).map(|_| app.get("/health"))).await;
    let mut words = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 503);
        let body: Value = answer.json().await.unwrap();
        words.push(body["checks"]["database"].as_str().unwrap().to_owned());
    }
    cluster.thaw();
    assert!(!words.iter().any(|w| w == "busy"), "{words:?}");
    app.wait_for_status("/health", 200, Duration::from_secs(10))
        .await;
}

/// The CA file is read again for each new connection: a renewed CA needs no restart (and
/// a wrong one stops new connections at once).
#[tokio::test]
async fn a_replaced_ca_file_is_used_by_the_next_connection_without_a_restart() {
    let tls = TlsCluster::start();
    let live_ca = tls.dir.path().join("live-ca.crt");
    std::fs::copy(tls.dir.path().join("ca.crt"), &live_ca).unwrap();
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        tls.cluster.port,
        live_ca.display()
    );
    let app = start(&url, &[]).await;
    app.wait_ready().await;
    let kill_sessions = || async {
        let (admin, connection) =
            tokio_postgres::connect(&tls.cluster.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'farol' AND pid <> pg_backend_pid()",
            )
            .await
            .unwrap();
    };

    // A CA that did not sign the server's certificate: new connections are refused.
    std::fs::copy(tls.dir.path().join("other-ca.crt"), &live_ca).unwrap();
    kill_sessions().await;
    app.wait_for_status("/health", 503, Duration::from_secs(5))
        .await;
    // The right one back: the same process connects again.
    std::fs::copy(tls.dir.path().join("ca.crt"), &live_ca).unwrap();
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_server_that_stops_taking_writes_gets_fast_503s_and_health_says_down_until_it_takes_them_again()
 {
    let cluster = PgCluster::start();
    let url = create_database(&cluster.url("postgres")).await;
    let app = start(&url, &[]).await;
    app.wait_ready().await;
    let kept = app
        .create_note("before", "the server turned read-only")
        .await;

    // What a write meets on a standby: every transaction read-only.
    let admin = admin(&cluster.url("postgres")).await;
    set_read_only(&admin, true).await;
    app.wait_for_status("/health", 503, Duration::from_secs(5))
        .await;
    assert_eq!(
        app.get("/health").await.json::<Value>().await.unwrap(),
        json!({"status": "error", "checks": {"database": "down"}}),
        "a server that answers SELECT but takes no writes is not the database farol needs"
    );
    let write = app
        .post_json("/api/v1/notes", &json!({"title": "t", "body": "b"}))
        .await;
    assert_eq!(write.headers()["retry-after"], "1");
    assert_problem(write, 503, "database-unavailable").await;
    let read: Value = app
        .get(&format!("/api/v1/notes/{}", kept["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, kept, "reads still work where they can");

    set_read_only(&admin, false).await;
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
    app.create_note("after", "writes again, no restart").await;
    let status: Value = app.get("/").await.json().await.unwrap();
    assert_eq!(status["database"], "up");
}

#[tokio::test]
async fn with_several_hosts_and_target_session_attrs_read_write_it_writes_to_the_primary() {
    // The first host is a "standby" (it takes no writes), the second the primary: libpq's
    // multi-host syntax, as CloudNativePG's and Patroni's clients use it.
    let standby = PgCluster::start_with(&["default_transaction_read_only=on"]);
    let primary = PgCluster::start();
    let database = create_database(&primary.url("postgres")).await;
    let (_, name) = port_and_name(&database);
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname={name} sslmode=disable \
         target_session_attrs=read-write",
        port_and_name(&standby.url("postgres")).0,
        port_and_name(&database).0,
    );
    let app = start(&url, &[]).await;
    app.wait_ready().await;
    let note = app.create_note("on", "the primary").await;
    assert_eq!(app.get("/health").await.status(), 200);
    let stored: i64 = admin(&database)
        .await
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "the note {note} is on the primary");
}

/// The port and the database name of a `postgres://user@host:port/name?…` URL.
fn port_and_name(url: &str) -> (String, String) {
    let (_, at) = url.split_once('@').unwrap();
    let (address, rest) = at.split_once('/').unwrap();
    let port = address.rsplit_once(':').unwrap().1;
    (port.to_owned(), rest.split('?').next().unwrap().to_owned())
}

#[tokio::test]
async fn a_first_host_that_never_answers_does_not_keep_the_next_from_being_tried() {
    // A listener nobody accepts from: the kernel completes the TCP handshake, so the
    // driver's connect timeout (TCP only) is met, and the start-up message is never
    // answered. The connect budget is shared among the hosts, so the second is reached.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let database = create_database(&shared_server_url()).await;
    let (port, name) = port_and_name(&database);
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={hung_port},{port} user=postgres dbname={name} \
         sslmode=disable target_session_attrs=read-write"
    );
    let app = start(&url, &[("DB_CONNECT_TIMEOUT_MS", "2000")]).await;
    app.wait_ready().await;
    app.create_note("past", "a hung first host").await;
    assert_eq!(app.get("/health").await.status(), 200);
    drop(hung);
}

#[tokio::test]
async fn when_the_address_leads_back_to_the_primary_the_connections_to_the_standby_are_dropped() {
    let primary = PgCluster::start();
    let standby = PgCluster::start_with(&["default_transaction_read_only=on"]);
    let on_primary = create_database(&primary.url("postgres")).await;
    let name = on_primary
        .rsplit_once('/')
        .and_then(|(_, rest)| rest.split('?').next())
        .unwrap()
        .to_owned();
    // The same database and schema on the "standby", written in a session of its own
    // that may write.
    let standby_admin = admin(&standby.url("postgres")).await;
    standby_admin
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    standby_admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut schema = admin(&standby.url(&name)).await;
    schema
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    farol::db::migrate::apply(&mut schema, farol::db::migrate::LOCK_WAIT)
        .await
        .unwrap();

    let address = MovableAddress::start(primary.port).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
        address.port
    );
    let app = start(&url, &[("DB_POOL_MAX", "4")]).await;
    app.wait_ready().await;
    app.create_note("first", "on the primary").await;

    // A failover that went wrong: the address now leads to a standby, and the primary's
    // sessions end. New connections reach the standby, which takes no writes.
    address.point_at(standby.port);
    admin(&primary.url("postgres"))
        .await
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    app.wait_for_status("/health", 503, Duration::from_secs(10))
        .await;
    let write = app
        .post_json("/api/v1/notes", &json!({"title": "t", "body": "b"}))
        .await;
    assert_problem(write, 503, "database-unavailable").await;

    // The address is put right. The pool still holds connections to the standby; they
    // must go (at most 5 s apart), and the next ones reach the primary: no restart.
    address.point_at(primary.port);
    let moved = Instant::now();
    loop {
        let write = app
            .post_json("/api/v1/notes", &json!({"title": "t", "body": "b"}))
            .await;
        if write.status() == 201 {
            break;
        }
        assert_eq!(write.status(), 503);
        assert!(
            moved.elapsed() < Duration::from_secs(15),
            "writes still fail 15 s after the address led back to the primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_role_statement_timeout_does_not_turn_the_wait_for_the_migration_lock_into_a_failure() {
    // Behind a pooler the role carries a statement_timeout; a migrator waiting behind
    // another must still end as "busy, try again", after its own lock wait.
    let url = create_database(&shared_server_url()).await;
    // FAROL_TEST_DATABASE_URL (the CI job's server) may carry no query of its own
    let separator = if url.contains('?') { '&' } else { '?' };
    let with_short_timeout = format!("{url}{separator}options=-c%20statement_timeout%3D200");
    let holder = admin(&url).await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&0x66_61_72_6f_6c_i64])
        .await
        .unwrap();
    let (mut waiter, connection) =
        tokio_postgres::connect(&with_short_timeout, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let started = Instant::now();
    let outcome = farol::db::migrate::apply(&mut waiter, Duration::from_millis(1500)).await;
    assert!(
        matches!(outcome, Err(farol::db::migrate::MigrateError::LockBusy(_))),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "it waited its own lock wait, not the role's 200 ms: {:?}",
        started.elapsed()
    );
}

/// A setting of the pool's sessions, as the server sees it.
async fn session_setting(app: &crate::support::app::TestApp, name: &'static str) -> String {
    app.state
        .db
        .run("test_setting", move |mut session| async move {
            let sql = format!("SELECT current_setting('{name}')");
            session.query_opt(&sql, &[]).await
        })
        .await
        .unwrap()
        .expect("current_setting returns a row")
        .get(0)
}

#[tokio::test]
async fn named_statements_are_planned_once_unless_the_url_says_otherwise() {
    let url = create_database(&shared_server_url()).await;
    let separator = if url.contains('?') { '&' } else { '?' };
    // A list page's generic plan looks dear to the planner, which under the default
    // (auto) would plan it anew at every execution.
    let app = start(&url, &[]).await;
    app.wait_ready().await;
    assert_eq!(
        session_setting(&app, "plan_cache_mode").await,
        "force_generic_plan"
    );
    // a list page run six times on one pooled connection: a generic plan every time
    // (under auto the first five are custom plans; on this empty table the sixth is then
    // generic, on a large one each stays custom: docs/benchmarks.md). The counters need
    // PostgreSQL 14.
    let plans = app
        .state
        .db
        .run("test_plans", |mut session| async move {
            let page = "SELECT id FROM notes ORDER BY created_at DESC, id DESC LIMIT $1";
            for _ in 0..6 {
                session
                    .query(page, &[(&21_i64, tokio_postgres::types::Type::INT8)])
                    .await?;
            }
            session
                .query_opt(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
                     WHERE statement LIKE 'SELECT id FROM notes ORDER BY%'",
                    &[],
                )
                .await
        })
        .await
        .unwrap()
        .expect("the statement is prepared on this connection");
    assert_eq!(
        (plans.get::<_, i64>(0), plans.get::<_, i64>(1)),
        (6, 0),
        "(generic, custom) plans"
    );
    // a setting of the caller's own in the URL's options wins, and the statement
    // timeout stays farol's
    let app = start(
        &format!("{url}{separator}options=-c%20plan_cache_mode%3Dforce_custom_plan%20-c%20statement_timeout%3D99"),
        &[("DB_QUERY_TIMEOUT_MS", "1500")],
    )
    .await;
    app.wait_ready().await;
    assert_eq!(
        session_setting(&app, "plan_cache_mode").await,
        "force_custom_plan"
    );
    assert_eq!(session_setting(&app, "statement_timeout").await, "2s");
    // unnamed statements (for a pooler, which refuses start-up options) send none; the
    // schema is in place from the first app
    let app = start(
        &url,
        &[
            ("DB_PREPARED_STATEMENTS", "unnamed"),
            ("MIGRATE_ON_START", "false"),
        ],
    )
    .await;
    app.wait_ready().await;
    assert_eq!(session_setting(&app, "plan_cache_mode").await, "auto");
}

/// farol connects the cancel's socket itself, as the settings say, whether over TCP with
/// TLS (`verify-full` here) or through a Unix socket; the cancel reaches the server and
/// ends the statement.
#[tokio::test]
async fn a_cancel_ends_the_statement_over_tls_and_through_a_unix_socket() {
    let tls = TlsCluster::start();
    let socket_dir = tls.cluster.socket_dir().display().to_string();
    let urls = [
        // `hostaddr`: one address for certain (`localhost` may have two), the certificate
        // still checked against the name
        format!(
            "{}&hostaddr=127.0.0.1",
            tls.url("localhost", "verify-full", Some("ca.crt"))
        ),
        format!(
            "host={socket_dir} port={} user=postgres dbname=postgres",
            tls.cluster.port
        ),
    ];
    for url in urls {
        let config = farol::config::DatabaseConfig::from_connection_string(&url).unwrap();
        let (client, _task) = farol::db::connect::open(&config, "test").await.unwrap();
        let token = client.cancel_token();
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let sleeping =
            tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
        let observer = admin(&tls.cluster.url("postgres")).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state: Option<String> = observer
                .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .unwrap()
                .get(0);
            if state.as_deref() == Some("active") {
                break;
            }
            assert!(Instant::now() < deadline, "{url}: the statement never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let bounds = farol::db::cancel::Bounds {
            send: Duration::from_secs(5),
            close: Duration::from_secs(5),
        };
        let sent = farol::db::cancel::send(&config, &token, bounds).await;
        assert!(
            matches!(sent, Ok(farol::db::cancel::Sent::Closed)),
            "{url}: {sent:?}"
        );
        let ended = tokio::time::timeout(Duration::from_secs(10), sleeping)
            .await
            .expect("the statement ended")
            .unwrap();
        let error = ended.expect_err("cancelled");
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "{url}: {error}"
        );
    }
}
