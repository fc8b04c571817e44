//! A creation cut short after it may have taken effect: the answer says the outcome is
//! unknown, names where the note would be when it can, and invites no blind retry. In
//! both tests the note is created after the answer: what a retry would have duplicated.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::json;

use crate::support::app::{TestApp, assert_problem, start};
use crate::support::pg::{admin, create_database, shared_server_url};

/// How many notes with this title the database holds, seen from a session of its own.
async fn notes_titled(observer: &tokio_postgres::Client, title: &str) -> i64 {
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

/// One note made first, on the pool's only connection: the insert is then prepared there,
/// and the next one waits on the lock in its execution, which the server carries on with
/// once farol stops waiting. (A first insert would wait in its preparation, which ends
/// when farol stops waiting: nothing is applied then, though farol cannot tell.)
async fn prepare_the_insert(app: &TestApp) {
    app.create_note("first", "prepares the insert").await;
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

#[tokio::test]
async fn an_insert_without_an_answer_in_time_is_an_unknown_outcome_with_the_notes_location() {
    let url = create_database(&shared_server_url()).await;
    let app = start(
        &url,
        &[("DB_QUERY_TIMEOUT_MS", "300"), ("DB_POOL_MAX", "1")],
    )
    .await;
    app.wait_ready().await;
    prepare_the_insert(&app).await;
    let observer = admin(&url).await;
    let blocker = block_inserts(&url).await;

    let write = app
        .post_json("/api/v1/notes", &json!({"title": "maybe", "body": "made"}))
        .await;
    assert!(
        !write.headers().contains_key("retry-after"),
        "a retry could make a duplicate"
    );
    let problem = assert_problem(write, 503, "outcome-unknown").await;
    let location = problem["location"].as_str().expect("a location").to_owned();
    assert!(
        problem["detail"].as_str().unwrap().contains(&location),
        "{problem}"
    );
    assert_eq!(notes_titled(&observer, "maybe").await, 0, "not yet");

    // The server still runs the statement farol stopped waiting for (until its own
    // statement_timeout, 500 ms after farol's): let it through.
    blocker.batch_execute("COMMIT").await.unwrap();
    wait_for_notes_titled(&observer, "maybe").await;
    let found: serde_json::Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(found["title"], "maybe", "the location names the note made");
}

/// Sends a POST whose body arrives `late`: its handler starts that much into the
/// request's time limit.
async fn post_with_a_late_body(app: &TestApp, body: &str, late: Duration) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
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
    let url = create_database(&shared_server_url()).await;
    // The body takes 600 ms of the 1,000 ms limit; the insert then waits on a lock, and
    // the request's limit passes before the query's own (900 ms) does.
    let app = start(
        &url,
        &[
            ("REQUEST_TIMEOUT_MS", "1000"),
            ("DB_QUERY_TIMEOUT_MS", "900"),
            ("DB_POOL_MAX", "1"),
        ],
    )
    .await;
    app.wait_ready().await;
    prepare_the_insert(&app).await;
    let observer = admin(&url).await;
    let blocker = block_inserts(&url).await;

    let body = json!({"title": "late", "body": "maybe made"}).to_string();
    let answer = post_with_a_late_body(&app, &body, Duration::from_millis(600)).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("outcome-unknown"), "{answer}");
    assert!(!answer.contains("retry-after"), "{answer}");
    assert_eq!(notes_titled(&observer, "late").await, 0, "not yet");

    blocker.batch_execute("COMMIT").await.unwrap();
    wait_for_notes_titled(&observer, "late").await;

    // A POST cut short before its handler ran (held by injected latency) changed
    // nothing: a plain timeout, and a retry is welcome.
    let app = start(
        &url,
        &[
            ("REQUEST_TIMEOUT_MS", "200"),
            ("DB_QUERY_TIMEOUT_MS", "100"),
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
