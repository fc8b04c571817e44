//! Behind a pooler in transaction mode: a real PgBouncer (Debian's 1.18 here) in front of
//! farol's pool, with unnamed statements; and the cancel request farol sends for a
//! statement it stopped waiting for, which PgBouncer 1.18 and 1.19 can die of.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::app::{TestApp, start};
use crate::support::pg::{admin, create_database, shared_server_url};
use crate::support::pgbouncer::PgBouncer;
use farol::db::cancel::{CancelError, Sent};

const SERVER_CONNECTIONS: usize = 2;

/// The schema, applied straight to the database: migrations hold a session-level lock
/// that a pooler in transaction mode cannot keep (farol refuses to migrate through one).
pub(crate) async fn migrate(database_url: &str) {
    let (mut client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    farol::db::migrate::apply(&mut client, farol::db::migrate::LOCK_WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_route_works_through_pgbouncer_in_transaction_mode_with_unnamed_statements() {
    let direct = create_database(&shared_server_url()).await;
    migrate(&direct).await;
    let pooler = PgBouncer::start(&shared_server_url(), SERVER_CONNECTIONS);
    let app = start(
        &pooler.url(&direct),
        &[
            ("DB_PREPARED_STATEMENTS", "unnamed"),
            ("MIGRATE_ON_START", "false"),
            ("DB_POOL_MAX", "16"),
        ],
    )
    .await;
    app.wait_ready().await;
    assert_eq!(app.get("/health").await.status(), 200);
    for n in 0..3 {
        app.create_note(&format!("kept {n}"), "so that every page has a next one")
            .await;
    }

    // Far more concurrent clients than server connections, each using every route: the
    // pooler hands every transaction to whichever server connection is free, so a
    // statement prepared on one and run on another would fail here.
    let rounds = (0..32).map(|client| {
        let app = &app;
        async move {
            for round in 0..4 {
                let created = app
                    .create_note(&format!("client {client}"), &format!("round {round}"))
                    .await;
                let path = format!("/api/v1/notes/{}", created["id"].as_str().unwrap());
                let read: Value = app.get(&path).await.json().await.unwrap();
                assert_eq!(read, created);
                let replaced = app
                    .put_json(
                        &path,
                        &json!({"title": "replaced", "body": "through the pooler"}),
                    )
                    .await;
                assert_eq!(replaced.status(), 200);
                let page = app.get("/api/v1/notes?limit=2").await;
                assert_eq!(page.status(), 200);
                let cursor = page.json::<Value>().await.unwrap()["next_cursor"].clone();
                let next = app
                    .get(&format!(
                        "/api/v1/notes?limit=2&cursor={}",
                        cursor.as_str().unwrap()
                    ))
                    .await;
                assert_eq!(next.status(), 200, "the cursor's typed parameters");
                // a keyed create and its replay: two statements, each its own transaction
                let keyed = |key: String| {
                    app.client
                        .post(app.url("/api/v1/notes"))
                        .header("Idempotency-Key", key)
                        .json(&json!({"title": "keyed", "body": "through the pooler"}))
                        .send()
                };
                let key = format!("c{client}-r{round}");
                let first = keyed(key.clone()).await.unwrap();
                assert_eq!(first.status(), 201);
                let again = keyed(key).await.unwrap();
                assert_eq!(again.headers()["idempotent-replayed"], "true");
                assert_eq!(
                    again.json::<Value>().await.unwrap(),
                    first.json::<Value>().await.unwrap()
                );
                if round % 2 == 0 {
                    assert_eq!(app.delete(&path).await.status(), 204);
                    assert_eq!(app.get(&path).await.status(), 404);
                }
            }
        }
    });
    futures_util::future::join_all(rounds).await;

    let (client, connection) = tokio_postgres::connect(&direct, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let kept: i64 = client
        .query_one("SELECT count(*) FROM notes WHERE title = 'replaced'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept,
        32 * 2,
        "every note not deleted was replaced, none lost"
    );
    // What the server saw: never more sessions than the pooler's server connections
    // (PgBouncer keeps the ones it opened, so what is there now is the most there were).
    let database = direct
        .rsplit_once('/')
        .unwrap()
        .1
        .split('?')
        .next()
        .unwrap();
    let sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (1..=SERVER_CONNECTIONS as i64).contains(&sessions),
        "{sessions} server sessions for farol's pool of 16 behind a pooler of {SERVER_CONNECTIONS}"
    );
}

const CANCELLED: &str = r#"farol_db_abandoned_statements_total{outcome="cancelled"}"#;
const NOT_CANCELLED: &str = r#"farol_db_abandoned_statements_total{outcome="not_cancelled"}"#;
const STILL_RUNNING: &str = r#"farol_db_abandoned_statements_total{outcome="still_running"}"#;

/// A cancel request's first word after its length: PostgreSQL's cancel code.
const CANCEL_REQUEST_CODE: [u8; 4] = 80_877_102_u32.to_be_bytes();

/// Bounds every wait of the stand-in tests: a regression fails them instead of hanging.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within 10 s"))
}

/// A cancel for a real connection's statement, sent to a stand-in server on `port`.
async fn cancel_to(
    port: u16,
    bounds: farol::db::cancel::Bounds,
) -> tokio::task::JoinHandle<Result<Sent, CancelError>> {
    let (client, connection) = tokio_postgres::connect(&shared_server_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let token = client.cancel_token();
    let config = farol::config::DatabaseConfig::from_connection_string(&format!(
        "host=127.0.0.1 port={port} user=u sslmode=disable"
    ))
    .unwrap();
    tokio::spawn(async move { farol::db::cancel::send(&config, &token, bounds).await })
}

/// Accepts the cancel's connection and reads its request.
async fn accept_a_cancel(listener: &TcpListener) -> tokio::net::TcpStream {
    let (mut server_side, _) = within("a connection", listener.accept()).await.unwrap();
    let mut request = [0u8; 16];
    within("the request", server_side.read_exact(&mut request))
        .await
        .unwrap();
    assert_eq!(
        request[..4],
        16u32.to_be_bytes(),
        "a cancel request's length"
    );
    assert_eq!(request[4..8], CANCEL_REQUEST_CODE);
    server_side
}

/// farol, ready, behind a PgBouncer with one server connection, which a test's other
/// client can hold; with the direct URL of its database.
async fn behind_a_pooler_of_one() -> (TestApp, PgBouncer, String) {
    let direct = create_database(&shared_server_url()).await;
    migrate(&direct).await;
    let pooler = PgBouncer::start(&shared_server_url(), 1);
    let app = start(
        &pooler.url(&direct),
        &[
            ("DB_PREPARED_STATEMENTS", "unnamed"),
            ("MIGRATE_ON_START", "false"),
            ("DB_QUERY_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    app.wait_ready().await;
    (app, pooler, direct)
}

#[tokio::test]
async fn a_pooler_with_every_server_connection_taken_is_saturation_not_an_outage() {
    let (app, pooler, direct) = behind_a_pooler_of_one().await;
    // Several connections to the pooler in farol's pool, idle once these are answered. The
    // writes wait together behind another client's short hold of the pooler's one server
    // connection, so that farol opens one connection for each: answered at once, on a
    // busy machine, they could all take turns on one.
    let idle = r#"db_client_connection_count{state="idle"}"#;
    let short_holder = admin(&pooler.url(&direct)).await;
    let mut notes = Vec::new();
    let mut idle_before = 0.0;
    for _ in 0..3 {
        let burst = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            futures_util::future::join_all(
                (0..4).map(|n| app.create_note("kept", if n == 0 { "first" } else { "more" })),
            )
            .await
        };
        let (held, written) =
            tokio::join!(short_holder.batch_execute("SELECT pg_sleep(0.3)"), burst);
        held.unwrap();
        notes.extend(written);
        idle_before = app.metric(idle).await.unwrap();
        if idle_before >= 2.0 {
            break;
        }
    }
    assert!(idle_before >= 2.0, "{idle_before} idle connections");
    let note = notes[0].clone();
    // The pooler's one server connection, held by another client of the pooler.
    let holder = admin(&pooler.url(&direct)).await;
    let held = tokio::spawn(async move { holder.batch_execute("SELECT pg_sleep(3)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = app.get("/health").await;
    assert_eq!(health.status(), 503);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "error", "checks": {"database": "timeout"}})
    );
    let status: Value = app.get("/").await.json().await.unwrap();
    assert_eq!(
        status["database"], "up",
        "a full pooler is not a database down"
    );
    // The ping's own connection is given up on; the others stay.
    let idle_after = app.metric(idle).await.unwrap();
    assert!(
        idle_after >= idle_before - 1.0,
        "{idle_before} idle, then {idle_after}"
    );
    held.await.unwrap().unwrap();
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, note);
}

#[tokio::test]
async fn a_pooler_that_answers_no_ping_for_its_silence_is_a_database_down() {
    let (app, pooler, direct) = behind_a_pooler_of_one().await;
    // The pooler's one server connection, held past the silence (the background ping,
    // every 2 s, times out at each try meanwhile).
    let holder = admin(&pooler.url(&direct)).await;
    let silence = farol::db::POOLER_SILENCE;
    let held = tokio::spawn(async move {
        let sleep = format!("SELECT pg_sleep({})", silence.as_secs() + 8);
        holder.batch_execute(&sleep).await
    });
    let started = Instant::now();
    let down = loop {
        let status: Value = app.get("/").await.json().await.unwrap();
        if status["database"] == "down" {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < silence + Duration::from_secs(6),
            "still up after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(down >= silence, "down after {down:?}");
    held.await.unwrap().unwrap();
    app.wait_for_status("/health", 200, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_cancel_waits_for_the_server_to_close_its_connection_as_libpq_does() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let patient = farol::db::cancel::Bounds {
        send: Duration::from_secs(5),
        close: Duration::from_secs(60),
    };

    // The stand-in keeps the connection open after the request: the sender is still
    // there, and returns once the stand-in closes.
    let sending = cancel_to(port, patient).await;
    let mut server_side = accept_a_cancel(&listener).await;
    let mut more = [0u8; 1];
    let early_close =
        tokio::time::timeout(Duration::from_millis(300), server_side.read(&mut more)).await;
    assert!(
        early_close.is_err(),
        "the sender closed (or wrote more) before the server closed: {early_close:?}"
    );
    assert!(
        !sending.is_finished(),
        "the cancel returned before the close"
    );
    drop(server_side);
    let sent = within("the cancel", sending).await.unwrap();
    assert!(matches!(sent, Ok(Sent::Closed)), "{sent:?}");

    // A server that never closes: past the close's bound the request counts as sent,
    // not closed.
    let hasty = farol::db::cancel::Bounds {
        send: Duration::from_secs(1),
        close: Duration::from_millis(1500),
    };
    let sending = cancel_to(port, hasty).await;
    let mut server_side = accept_a_cancel(&listener).await;
    let sent = within("the cancel", sending).await.unwrap();
    assert!(matches!(sent, Ok(Sent::NotClosed)), "{sent:?}");
    let read = within("the sender's close", server_side.read(&mut more)).await;
    assert_eq!(
        read.unwrap(),
        0,
        "the sender closed its end once it gave up"
    );

    // Nobody listening: not sent, and the error says where it went. The port stays bound
    // (not listening), so that the kernel hands it to no other test meanwhile.
    let address = listener.local_addr().unwrap();
    drop(listener);
    let bound = tokio::net::TcpSocket::new_v4().unwrap();
    // the stand-in's connections, closed (TIME_WAIT) or not, still hold the port
    bound.set_reuseaddr(true).unwrap();
    bound.bind(address).unwrap();
    let refused = within("the cancel", cancel_to(port, patient).await)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&refused, CancelError::Connect { to, .. } if *to == address.to_string()),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
        "the message names where it went, and why: {refused}"
    );
    drop(bound);
}

/// Statements abandoned together, each at once: cancelled behind PgBouncer 1.18.0, which
/// exited in the first round of these, having cancelled almost none,
/// when farol's cancels closed their connections right after writing the request. Every
/// statement runs on a server connection of its own, so that PgBouncer forwards every
/// cancel. The creates carry idempotency keys: keyed creates each get a statement of
/// their own, where creates without one would share a few (`notes::batch`).
#[tokio::test]
async fn statements_abandoned_together_are_cancelled_behind_pgbouncer_which_stays_up() {
    const TOGETHER: usize = 32;
    const ROUNDS: usize = 3;
    let direct = create_database(&shared_server_url()).await;
    migrate(&direct).await;
    let mut pooler = PgBouncer::start(&shared_server_url(), TOGETHER + 2);
    let through_pooler = pooler.url(&direct);
    let app = start(
        &through_pooler,
        &[
            ("DB_PREPARED_STATEMENTS", "unnamed"),
            ("MIGRATE_ON_START", "false"),
            ("DB_POOL_MAX", "40"),
            // time for PgBouncer to log in a server connection for each insert, one at
            // a time, before farol gives up on them
            ("DB_QUERY_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    app.wait_ready().await;
    let observer = admin(&direct).await;
    let blocker = admin(&direct).await;
    // PgBouncer's server connections made before the first round: it logs them in one at
    // a time, and an insert still waiting for one when farol gives up is not on the server
    // to be cancelled. Each transaction holds its server connection until all have one.
    let all_in = std::sync::Arc::new(tokio::sync::Barrier::new(TOGETHER + 2));
    let warm = (0..TOGETHER + 2).map(|_| {
        let url = through_pooler.clone();
        let all_in = all_in.clone();
        async move {
            let client = admin(&url).await;
            client.batch_execute("BEGIN; SELECT 1").await.unwrap();
            all_in.wait().await;
            client.batch_execute("COMMIT").await.unwrap();
        }
    });
    within(
        "PgBouncer's server connections",
        futures_util::future::join_all(warm),
    )
    .await;

    for round in 1..=ROUNDS {
        blocker
            .batch_execute("BEGIN; LOCK TABLE notes IN EXCLUSIVE MODE")
            .await
            .unwrap();
        let posts = (0..TOGETHER).map(|n| {
            let app = &app;
            async move {
                let note = json!({"title": "held", "body": format!("round {round}, {n}")});
                app.client
                    .post(app.url("/api/v1/notes"))
                    .header("Idempotency-Key", format!("held-{round}-{n}"))
                    .json(&note)
                    .send()
                    .await
                    .unwrap()
            }
        });
        for answer in futures_util::future::join_all(posts).await {
            assert_eq!(answer.status(), 503, "the insert waited past its timeout");
        }
        // every abandoned insert cancelled and ended, while the lock is still held
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.metric(CANCELLED).await != Some((TOGETHER * round) as f64) {
            if Instant::now() > deadline {
                let mut outcomes = Vec::new();
                for outcome in [CANCELLED, NOT_CANCELLED, STILL_RUNNING] {
                    outcomes.push(format!("{outcome} {:?}", app.metric(outcome).await));
                }
                panic!(
                    "round {round}, {} abandoned in all: {outcomes:?} (PgBouncer alive: {}; {})",
                    TOGETHER * round,
                    pooler.is_running(),
                    pooler.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        blocker.batch_execute("COMMIT").await.unwrap();

        let (client, connection) = within(
            "a connection through PgBouncer",
            tokio_postgres::connect(&through_pooler, tokio_postgres::NoTls),
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "round {round}: PgBouncer is gone: {error}; {}",
                pooler.describe()
            )
        });
        tokio::spawn(connection);
        within(
            "SELECT 1 through PgBouncer",
            client.simple_query("SELECT 1"),
        )
        .await
        .unwrap();
        assert_eq!(app.get("/health").await.status(), 200);
    }
    let held: i64 = observer
        .query_one("SELECT count(*) FROM notes WHERE title = 'held'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "every cancelled insert was rolled back");
}
