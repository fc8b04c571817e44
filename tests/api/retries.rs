//! Retrying a POST. Without an `Idempotency-Key`, a creation cut short after it may have
//! taken effect answers that its outcome is unknown, names where the note would be when
//! it can, and invites no blind retry; with one, a retry is safe and gets the first note.
//! In the cut-short tests the note is created after the answer (farol's commit waits for a
//! synchronous standby that does not answer; farol gives up and cancels it, which commits
//! it locally): what a blind retry would have duplicated. A statement farol stops waiting
//! for is cancelled, so that its connection serves again at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::{Value, json};

use crate::support::app::{TestApp, assert_problem, start};
use crate::support::pg::{
    PgCluster, admin, create_database, lock_waiter, shared_server_url, wait_until_gone,
};

/// farol on a database of its own, ready, and a session of the test's own there (`url`
/// for more).
struct Setup {
    app: TestApp,
    url: String,
    observer: tokio_postgres::Client,
}

async fn set_up(overrides: &[(&str, &str)]) -> Setup {
    let url = create_database(&shared_server_url()).await;
    let app = start(&url, overrides).await;
    app.wait_ready().await;
    let observer = admin(&url).await;
    Setup { app, url, observer }
}

/// How many notes with this title the database holds, seen from a session of its own.
pub(crate) async fn notes_titled(observer: &tokio_postgres::Client, title: &str) -> i64 {
    observer
        .query_one("SELECT count(*) FROM notes WHERE title = $1", &[&title])
        .await
        .unwrap()
        .get(0)
}

/// Takes the lock an INSERT waits for (reads go on), in a transaction left open.
async fn block_inserts(url: &str) -> tokio_postgres::Client {
    let blocker = admin(url).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE notes IN EXCLUSIVE MODE")
        .await
        .unwrap();
    blocker
}

async fn wait_for_notes_titled(observer: &tokio_postgres::Client, title: &str) {
    for _ in 0..100 {
        if notes_titled(observer, title).await == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the insert farol gave up on never committed");
}

/// farol on a server of the test's own whose synchronous standby is declared and never
/// answers: each commit of farol's waits for it, invisible, until farol gives up and
/// cancels it, which commits it on this server alone (as when production's standby
/// stops answering). The migrations ran before, and the test's own sessions commit at
/// once.
struct Stalled {
    app: TestApp,
    url: String,
    observer: tokio_postgres::Client,
    cluster: PgCluster,
}

async fn stalled(overrides: &[(&str, &str)]) -> Stalled {
    // synchronous_commit is off on the test servers: only farol's database turns it on
    let cluster = PgCluster::start();
    let url = create_database(&cluster.url("postgres")).await;
    let migrator = start(&url, &[]).await;
    migrator.wait_ready().await;
    migrator.stop().await.unwrap();
    let observer = admin(&url).await;
    observer
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', \
             current_database()); END $$",
        )
        .await
        .unwrap();
    declare_standby(&cluster, "absent_standby").await;
    let overrides = [overrides, &[("MIGRATE_ON_START", "false")]].concat();
    let app = start(&url, &overrides).await;
    app.wait_ready().await;
    Stalled {
        app,
        url,
        observer,
        cluster,
    }
}

/// The standby answers again: waiting commits complete, new ones do not wait.
async fn release_commits(cluster: &PgCluster) {
    declare_standby(cluster, "").await;
}

/// Sets synchronous_standby_names, and returns once commits wait for that standby, or no
/// longer do: the server applies the change in the background. Each probe commit has a
/// connection of its own, since one that waits is left waiting (a statement_timeout does
/// not end a commit's wait).
async fn declare_standby(cluster: &PgCluster, names: &str) {
    let url = cluster.url("postgres");
    let server = admin(&url).await;
    server
        .batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{names}'"
        ))
        .await
        .unwrap();
    server
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    server
        .batch_execute("CREATE TABLE IF NOT EXISTS probe (at timestamptz)")
        .await
        .unwrap();
    for _ in 0..100 {
        let probe = admin(&url).await;
        let commit = tokio::spawn(async move {
            probe
                .batch_execute("SET synchronous_commit = on; INSERT INTO probe VALUES (now())")
                .await
        });
        if names.is_empty() {
            // The change applied, a commit ends; not applied, it waits until it is.
            let ended = tokio::time::timeout(Duration::from_secs(10), commit).await;
            ended
                .expect("commits still wait for a standby")
                .unwrap()
                .expect("the probe commits");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting: i64 = server
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
    }
    panic!("commits never came to wait for {names:?}");
}

#[tokio::test]
async fn an_insert_without_an_answer_in_time_is_an_unknown_outcome_with_the_notes_location() {
    // the cluster bound, not dropped with `..`: it would stop
    let Stalled {
        app,
        observer,
        cluster: _cluster,
        ..
    } = stalled(&[("DB_QUERY_TIMEOUT_MS", "300"), ("DB_POOL_MAX", "1")]).await;

    let write = app
        .post_json("/api/v1/notes", &json!({"title": "maybe", "body": "made"}))
        .await;
    let retry_after = write.headers().contains_key("retry-after");
    let problem = assert_problem(write, 503, "outcome-unknown").await;
    assert!(!retry_after, "a retry could make a duplicate");
    let location = problem["location"].as_str().expect("a location").to_owned();
    assert!(
        problem["detail"].as_str().unwrap().contains(&location),
        "{problem}"
    );

    // The commit farol stopped waiting for is cut short as done, on this server alone.
    wait_for_notes_titled(&observer, "maybe").await;
    let found: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(found["title"], "maybe", "the location names the note made");
}

/// Behind a pooler in transaction mode farol sets no statement_timeout: without a cancel,
/// a statement it gave up on would run on for as long as it waits (here, on a lock), and
/// its connection would come back to the pool with it. The cancel ends it at once (closing
/// the connection alone would not: the server does not notice a closed connection while
/// a statement waits); the pool then serves the next request.
#[tokio::test]
async fn a_statement_farol_stops_waiting_for_is_cancelled_and_its_connection_closed() {
    let Setup { app, url, observer } = set_up(&[]).await;
    app.stop().await.unwrap();
    let behind_a_pooler = |query_timeout: &'static str, request_timeout: &'static str| {
        let url = url.clone();
        async move {
            let overrides = [
                ("DB_PREPARED_STATEMENTS", "unnamed"),
                ("MIGRATE_ON_START", "false"),
                ("DB_QUERY_TIMEOUT_MS", query_timeout),
                ("REQUEST_TIMEOUT_MS", request_timeout),
                ("DB_POOL_MAX", "1"),
            ];
            let app = start(&url, &overrides).await;
            app.wait_ready().await;
            app
        }
    };
    let blocker = block_inserts(&url).await;

    // The query timeout passes (2 s: time for the test to see the insert wait).
    let app = behind_a_pooler("2000", "10000").await;
    let post = {
        let (client, url) = (app.client.clone(), app.url("/api/v1/notes"));
        tokio::spawn(async move {
            let note = json!({"title": "cancelled", "body": ""});
            client.post(url).json(&note).send().await.unwrap()
        })
    };
    let waiting = lock_waiter(&observer).await;
    assert_problem(post.await.unwrap(), 503, "outcome-unknown").await;
    let answered = std::time::Instant::now();
    wait_until_gone(&observer, waiting).await;
    // Past its timeout a statement is cancelled at once: the 500 ms it might otherwise
    // have to end by itself would meet the server's own statement_timeout.
    assert!(
        answered.elapsed() < Duration::from_millis(450),
        "gone {:?} after the answer",
        answered.elapsed()
    );
    assert_eq!(app.get("/health").await.status(), 200, "the slot came back");
    assert_eq!(app.metric(CANCELLED).await, Some(1.0));

    // The client goes away, long before the query timeout (20 s) would pass.
    let app = behind_a_pooler("20000", "60000").await;
    let stream = app
        .post_on_a_stream(&json!({"title": "abandoned", "body": ""}))
        .await;
    let waiting = lock_waiter(&observer).await;
    drop(stream);
    wait_until_gone(&observer, waiting).await;

    blocker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.metric(CANCELLED).await, Some(1.0));
    assert_eq!(app.metric(NOT_CANCELLED).await, Some(0.0));
    for title in ["cancelled", "abandoned"] {
        assert_eq!(
            notes_titled(&observer, title).await,
            0,
            "{title}: cancelled"
        );
    }
}

/// A client that hangs up while its statement runs, most often a statement about to end:
/// one that ends by itself within the wait before a cancel leaves its connection in the
/// pool, in step (no cancel, no new connection: each would cost the server a connection,
/// TLS and authentication). One that does not end is cancelled and its connection
/// closed (above).
#[tokio::test]
async fn a_statement_that_ends_soon_after_its_client_hung_up_keeps_its_connection() {
    let Setup { app, observer, .. } = set_up(&[("DB_POOL_MAX", "1")]).await;
    app.create_note("first", "").await;
    observer
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION slow()",
        )
        .await
        .unwrap();
    let pooled = crate::database::farol_backends(&observer).await;
    assert_eq!(pooled.len(), 1, "the pool's one connection: {pooled:?}");

    let stream = app
        .post_on_a_stream(&json!({"title": "hung up", "body": ""}))
        .await;
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' \
                    AND datname = current_database()";
    while observer
        .query_one(sleeping, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);

    app.wait_for_metric(ENDED, 1.0).await;
    assert_eq!(app.metric(CANCELLED).await, Some(0.0));
    assert_eq!(
        notes_titled(&observer, "hung up").await,
        1,
        "it ended: made"
    );
    assert_eq!(
        crate::database::farol_backends(&observer).await,
        pooled,
        "the same connection, back in the pool"
    );
    app.create_note("next", "").await;
}

/// Dropped while its statement was still being prepared (named statements, the first
/// use on a connection), a connection is closed even when what it ran ends by itself:
/// the server keeps a prepared statement that the driver never learnt the name of.
#[tokio::test]
async fn a_connection_left_while_preparing_is_closed_even_when_it_ends_soon() {
    let Setup { app, url, observer } = set_up(&[("DB_POOL_MAX", "1")]).await;
    let pooled = crate::database::farol_backends(&observer).await;
    assert_eq!(pooled.len(), 1, "the pool's one connection: {pooled:?}");
    // the insert's first Parse waits for the table's lock
    let blocker = admin(&url).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE notes IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let stream = app
        .post_on_a_stream(&json!({"title": "prepared", "body": ""}))
        .await;
    lock_waiter(&observer).await;
    drop(stream);
    app.wait_for_metric("http_server_active_requests", 1.0)
        .await;
    // within the wait before a cancel (500 ms): the statement's drop has come meanwhile
    tokio::time::sleep(Duration::from_millis(100)).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    app.wait_for_metric(ENDED, 1.0).await;
    for _ in 0..100 {
        if !crate::database::farol_backends(&observer)
            .await
            .contains(&pooled[0])
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !crate::database::farol_backends(&observer)
            .await
            .contains(&pooled[0]),
        "the connection is closed"
    );
    assert_eq!(notes_titled(&observer, "prepared").await, 0, "never sent");
    app.create_note("next", "").await;
}

const ENDED: &str = r#"farol_db_abandoned_statements_total{outcome="ended"}"#;
const CANCELLED: &str = r#"farol_db_abandoned_statements_total{outcome="cancelled"}"#;
const NOT_CANCELLED: &str = r#"farol_db_abandoned_statements_total{outcome="not_cancelled"}"#;

/// Sends a POST whose body arrives `late`: its handler starts that much into the
/// request's time limit.
async fn post_with_a_late_body(
    app: &TestApp,
    body: &str,
    key: Option<&str>,
    late: Duration,
) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let key = key.map_or(String::new(), |key| format!("Idempotency-Key: {key}\r\n"));
    let head = format!(
        "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         {key}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(late).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_post_past_the_request_time_limit_after_its_handler_ran_is_an_unknown_outcome() {
    // The body takes 800 ms of the 1,000 ms limit; the insert's commit then waits, and
    // the request's limit passes before the query's own (450 ms) does.
    let Stalled {
        app,
        url,
        observer,
        cluster,
    } = stalled(&[
        ("REQUEST_TIMEOUT_MS", "1000"),
        ("DB_QUERY_TIMEOUT_MS", "450"),
        ("DB_POOL_MAX", "1"),
    ])
    .await;

    let body = json!({"title": "late", "body": "maybe made"}).to_string();
    let answer = post_with_a_late_body(&app, &body, None, Duration::from_millis(800)).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("outcome-unknown"), "{answer}");
    assert!(!answer.contains("retry-after"), "{answer}");
    wait_for_notes_titled(&observer, "late").await;
    // the id was chosen before the statement: the answer names where the note is
    let location = answer
        .split("\"location\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no location: {answer}"));
    let found: Value = app.get(location).await.json().await.unwrap();
    assert_eq!(found["title"], "late", "{location}");

    // With an idempotency key, the same cut is a plain timeout: a retry is safe.
    let body = json!({"title": "late, keyed", "body": "maybe made"}).to_string();
    let keyed =
        post_with_a_late_body(&app, &body, Some("late-1"), Duration::from_millis(800)).await;
    release_commits(&cluster).await;
    assert!(keyed.starts_with("HTTP/1.1 503 "), "{keyed}");
    assert!(keyed.contains("#timeout"), "{keyed}");
    assert!(keyed.contains("retry-after: 1"), "{keyed}");

    // A POST cut short before its handler ran (held by injected latency) changed
    // nothing: a plain timeout, and a retry is welcome.
    let app = start(
        &url,
        &[
            ("MIGRATE_ON_START", "false"),
            ("REQUEST_TIMEOUT_MS", "200"),
            ("DB_QUERY_TIMEOUT_MS", "50"),
            ("CHAOS_ENABLED", "true"),
            ("CHAOS_LATENCY_MS", "1000"),
        ],
    )
    .await;
    app.wait_ready().await;
    let held = app
        .post_json(
            "/api/v1/notes",
            &json!({"title": "held", "body": "never run"}),
        )
        .await;
    assert_eq!(held.headers()["retry-after"], "1");
    assert_problem(held, 503, "timeout").await;
    assert_eq!(notes_titled(&observer, "held").await, 0);
}

async fn post_keyed(app: &TestApp, key: &str, note: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/notes"))
        .header("Idempotency-Key", key)
        .json(note)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_note_never_a_second() {
    let Setup { app, observer, .. } = set_up(&[]).await;
    let note = json!({"title": "once", "body": "however often it is sent"});

    let first = post_keyed(&app, "k-1", &note).await;
    assert_eq!(first.status(), 201);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let made: Value = first.json().await.unwrap();

    // the draft's quoted form is the same key
    let again = post_keyed(&app, "\"k-1\"", &note).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    assert_eq!(again.json::<Value>().await.unwrap(), made);
    assert_eq!(notes_titled(&observer, "once").await, 1);

    // the same key for another note is a mistake, not a retry
    let other = post_keyed(&app, "k-1", &json!({"title": "once", "body": "changed"})).await;
    let problem = assert_problem(other, 422, "idempotency-key-reused").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(made["id"].as_str().unwrap())
    );

    // a replaced note still answers a retry of the request that made it, and only that
    assert_eq!(
        app.put_json(&location, &json!({"title": "once", "body": "replaced"}))
            .await
            .status(),
        200
    );
    let retry = post_keyed(&app, "k-1", &note).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap()["body"], "replaced");
    let as_now = post_keyed(&app, "k-1", &json!({"title": "once", "body": "replaced"})).await;
    assert_problem(as_now, 422, "idempotency-key-reused").await;

    // a key lives as long as its note: once that is deleted, the key makes a new one
    assert_eq!(app.delete(&location).await.status(), 204);
    let anew = post_keyed(&app, "k-1", &note).await;
    assert_eq!(anew.status(), 201);
    assert!(!anew.headers().contains_key("idempotent-replayed"));
    assert_ne!(anew.json::<Value>().await.unwrap()["id"], made["id"]);

    // keyless notes are never matched with each other
    app.create_note("keyless", "one").await;
    app.create_note("keyless", "one").await;
    assert_eq!(notes_titled(&observer, "keyless").await, 2);
}

#[tokio::test]
async fn malformed_or_repeated_keys_are_refused_before_anything_is_written() {
    let Setup { app, observer, .. } = set_up(&[]).await;
    let note = json!({"title": "refused", "body": ""});
    for bad in ["a b", "x\"y", &"k".repeat(129)] {
        let answer = post_keyed(&app, bad, &note).await;
        assert_problem(answer, 400, "invalid-parameter").await;
    }
    let twice = app
        .client
        .post(app.url("/api/v1/notes"))
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_problem(twice, 400, "invalid-parameter").await;
    assert_eq!(notes_titled(&observer, "refused").await, 0);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_note() {
    let Setup { app, observer, .. } = set_up(&[]).await;
    let note = json!({"title": "raced", "body": "by eight clients"});
    let answers =
        futures_util::future::join_all((0..8).map(|_| post_keyed(&app, "race", &note))).await;
    let mut ids = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 201);
        ids.push(answer.json::<Value>().await.unwrap()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(notes_titled(&observer, "raced").await, 1);
}

/// The whole point: an insert that got no answer in time, with a key, is a plain 503
/// with Retry-After; the insert then commits; the retry finds that note. While the note
/// is committed on the primary alone, a retry is not told it exists: a failover then
/// would lose a note answered 201.
#[tokio::test]
async fn a_keyed_insert_without_an_answer_in_time_is_retried_safely() {
    let Stalled {
        app,
        observer,
        cluster,
        ..
    } = stalled(&[("DB_QUERY_TIMEOUT_MS", "300"), ("DB_POOL_MAX", "1")]).await;
    let note = json!({"title": "keyed", "body": "made once"});

    let cut = post_keyed(&app, "k-cut", &note).await;
    assert_eq!(cut.headers()["retry-after"], "1");
    assert_problem(cut, 503, "timeout").await;
    wait_for_notes_titled(&observer, "keyed").await;

    let unreplicated = post_keyed(&app, "k-cut", &note).await;
    assert_eq!(unreplicated.headers()["retry-after"], "1");
    assert_problem(unreplicated, 503, "timeout").await;

    release_commits(&cluster).await;
    let retry = post_keyed(&app, "k-cut", &note).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(notes_titled(&observer, "keyed").await, 1, "no duplicate");
}

/// A request with a key another transaction is still inserting waits for it: a rollback
/// leaves the key free (the waiting request makes the note), a commit takes it.
#[tokio::test]
async fn a_request_waits_for_a_transaction_inserting_its_key_then_follows_its_outcome() {
    let Setup { app, url, observer } = set_up(&[]).await;
    let note = json!({"title": "awaited", "body": ""});
    for outcome in ["ROLLBACK", "COMMIT"] {
        let key = format!("held-{outcome}");
        let holder = admin(&url).await;
        holder
            .batch_execute(&format!(
                "BEGIN; INSERT INTO notes \
                 (id, title, body, idempotency_key, idempotency_digest) \
                 VALUES (gen_random_uuid(), 'held', '', '{key}', sha256('held'))"
            ))
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let (client, url) = (app.client.clone(), app.url("/api/v1/notes"));
            let note = note.clone();
            async move {
                let answer = client.post(url).header("Idempotency-Key", key).json(&note);
                answer.send().await.unwrap()
            }
        });
        // the keyed insert waits on the held row's key
        lock_waiter(&observer).await;
        assert!(
            !waiting.is_finished(),
            "{outcome}: it waits for the other insert"
        );
        holder.batch_execute(outcome).await.unwrap();
        let answer = waiting.await.unwrap();
        if outcome == "ROLLBACK" {
            assert_eq!(answer.status(), 201, "the key was free again");
            assert!(!answer.headers().contains_key("idempotent-replayed"));
        } else {
            // the other transaction's request was not this one
            assert_problem(answer, 422, "idempotency-key-reused").await;
        }
    }
    assert_eq!(notes_titled(&observer, "awaited").await, 1);
}
