//! Creates that wait together share a statement. A lock held on the table keeps the first
//! inserts waiting (as many as run at once), so that the creates after them queue; then
//! the lock is let go and the queue goes to the database in one statement. Each client
//! must get its own note, and only its own fate.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::app::{TestApp, start};
use crate::support::pg::{admin, create_database, shared_server_url};

/// Insert statements farol runs at once (`notes::batch::MAX_STATEMENTS`).
const STATEMENTS_AT_ONCE: usize = 4;
const ONE_NOTE: &str =
    r#"db_client_operation_duration_seconds_count{db_operation_name="insert_note"}"#;
const SEVERAL_NOTES: &str =
    r#"db_client_operation_duration_seconds_count{db_operation_name="insert_notes"}"#;

struct Setup {
    app: TestApp,
    observer: tokio_postgres::Client,
    blocker: tokio_postgres::Client,
}

/// farol on a database of its own, with time to wait for the lock; `schema` run; then
/// inserts blocked.
async fn blocked(schema: &str) -> Setup {
    let url = create_database(&shared_server_url()).await;
    let app = start(
        &url,
        &[
            ("DB_QUERY_TIMEOUT_MS", "10000"),
            ("REQUEST_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    app.wait_ready().await;
    let observer = admin(&url).await;
    observer.batch_execute(schema).await.unwrap();
    let blocker = admin(&url).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE notes IN EXCLUSIVE MODE")
        .await
        .unwrap();
    Setup {
        app,
        observer,
        blocker,
    }
}

/// Waits (at most 10 s) until `count` sessions wait on the lock.
async fn lock_waiters(observer: &tokio_postgres::Client, count: i64) {
    for _ in 0..200 {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} sessions never came to wait on the lock");
}

/// Waits (at most 10 s) until farol is handling `count` requests (its `/metrics` one
/// of them).
async fn requests_in_flight(app: &TestApp, count: usize) {
    for _ in 0..200 {
        if app.metric("http_server_active_requests").await == Some(count as f64 + 1.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("farol never came to handle {count} requests");
}

/// The creates that take every statement farol runs at once, sent one after the other,
/// each once the one before waits on the lock: one note each.
async fn fill_statements(
    app: &TestApp,
    observer: &tokio_postgres::Client,
) -> (Vec<Value>, Vec<tokio::task::JoinHandle<reqwest::Response>>) {
    let inputs: Vec<Value> = (0..STATEMENTS_AT_ONCE).map(note_input).collect();
    let mut sent = Vec::new();
    for (waiting, input) in inputs.iter().enumerate() {
        sent.extend(send_all(app, std::slice::from_ref(input)));
        lock_waiters(observer, waiting as i64 + 1).await;
    }
    (inputs, sent)
}

fn note_input(i: usize) -> Value {
    json!({"title": format!("note {i}"), "body": format!("farol {i}: ç 灯台")})
}

/// Sends the creates of `inputs` at once, each on a task of its own.
fn send_all(app: &TestApp, inputs: &[Value]) -> Vec<tokio::task::JoinHandle<reqwest::Response>> {
    inputs
        .iter()
        .map(|input| {
            let (client, url, input) =
                (app.client.clone(), app.url("/api/v1/notes"), input.clone());
            tokio::spawn(async move { client.post(url).json(&input).send().await.unwrap() })
        })
        .collect()
}

async fn answers(sent: Vec<tokio::task::JoinHandle<reqwest::Response>>) -> Vec<reqwest::Response> {
    join_all(sent)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Each answer is a 201 with the note its request sent, readable at its location.
async fn assert_each_made(app: &TestApp, inputs: &[Value], answers: Vec<reqwest::Response>) {
    let mut ids = Vec::new();
    for (input, answer) in inputs.iter().zip(answers) {
        assert_eq!(answer.status(), 201, "{input}");
        let location = answer.headers()["location"].to_str().unwrap().to_owned();
        let note: Value = answer.json().await.unwrap();
        assert_eq!(note["title"], input["title"]);
        assert_eq!(note["body"], input["body"]);
        assert_eq!(note["created_at"], note["updated_at"]);
        let stored: Value = app.get(&location).await.json().await.unwrap();
        assert_eq!(stored, note, "the location names the note answered");
        ids.push(note["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), inputs.len(), "every note its own id");
}

#[tokio::test]
async fn creates_that_wait_together_share_a_statement_and_each_gets_its_own_note() {
    let Setup {
        app,
        observer,
        blocker,
    } = blocked("").await;
    let (fillers, first) = fill_statements(&app, &observer).await;
    let queued: Vec<Value> = (100..120).map(note_input).collect();
    let sent = send_all(&app, &queued);
    requests_in_flight(&app, fillers.len() + queued.len()).await;
    // no more statements than run at once: the rest wait in farol, not in the database
    lock_waiters(&observer, STATEMENTS_AT_ONCE as i64).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    assert_each_made(&app, &fillers, answers(first).await).await;
    assert_each_made(&app, &queued, answers(sent).await).await;
    let (one, several) = (
        app.metric(ONE_NOTE).await.unwrap_or(0.0),
        app.metric(SEVERAL_NOTES).await.unwrap_or(0.0),
    );
    assert_eq!(
        one, STATEMENTS_AT_ONCE as f64,
        "the first ones, one note each"
    );
    assert!(
        (1.0..=STATEMENTS_AT_ONCE as f64).contains(&several),
        "the 20 queued ones in at most one statement per running one: {several}"
    );
}

#[tokio::test]
async fn a_note_the_shared_statement_refuses_is_refused_alone() {
    let Setup {
        app,
        observer,
        blocker,
    } = blocked(
        // A row the database refuses whatever farol checked first: one row's failure
        // fails the whole statement.
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.title = 'poison' THEN RAISE EXCEPTION 'refused'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON notes \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .await;
    let (fillers, first) = fill_statements(&app, &observer).await;
    let mut queued: Vec<Value> = (10..15).map(note_input).collect();
    queued.insert(2, json!({"title": "poison", "body": ""}));
    let sent = send_all(&app, &queued);
    requests_in_flight(&app, fillers.len() + queued.len()).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    assert_each_made(&app, &fillers, answers(first).await).await;
    let mut got = answers(sent).await;
    let poisoned = got.remove(2);
    assert_eq!(poisoned.status(), 500);
    queued.remove(2);
    assert_each_made(&app, &queued, got).await;
    let poison: i64 = observer
        .query_one("SELECT count(*) FROM notes WHERE title = 'poison'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(poison, 0);
    assert_eq!(
        app.metric(SEVERAL_NOTES).await,
        Some(1.0),
        "the six in one statement, refused"
    );
    assert_eq!(
        app.metric(ONE_NOTE).await,
        Some((STATEMENTS_AT_ONCE + 6) as f64),
        "then each of the six on its own"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_takes_no_other_note_with_it() {
    let Setup {
        app,
        observer,
        blocker,
    } = blocked("").await;
    let (fillers, first) = fill_statements(&app, &observer).await;
    let queued: Vec<Value> = (10..15).map(note_input).collect();
    let sent = send_all(&app, &queued);

    // One more create, queued, whose client then goes away.
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let body = json!({"title": "gone", "body": ""}).to_string();
    let request = format!(
        "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    requests_in_flight(&app, fillers.len() + queued.len() + 1).await;
    drop(stream);
    requests_in_flight(&app, fillers.len() + queued.len()).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    assert_each_made(&app, &fillers, answers(first).await).await;
    assert_each_made(&app, &queued, answers(sent).await).await;
    let gone: i64 = observer
        .query_one("SELECT count(*) FROM notes WHERE title = 'gone'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        gone, 0,
        "a create whose client left before its statement is not sent"
    );
}
