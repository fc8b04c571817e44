//! Creates that wait together share a statement. A lock held on the table keeps the first
//! inserts waiting (as many as run at once), so that the creates after them queue; then
//! the lock is let go and the queue goes to the database in one statement. Each client
//! must get its own note, and only its own fate.

use std::time::Duration;

use farol::config::Settings;
use farol::notes::batch::{MAX_ROWS, MAX_STATEMENTS};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::pooler::migrate;
use crate::retries::notes_titled;
use crate::support::app::{TestApp, start, start_with_settings, test_env};
use crate::support::pg::{admin, create_database, lock_waiter, shared_server_url, wait_until_gone};

/// Insert statements farol runs at once (with the default pool).
const STATEMENTS_AT_ONCE: usize = MAX_STATEMENTS;
const ONE_NOTE: &str =
    r#"db_client_operation_duration_seconds_count{db_operation_name="insert_note"}"#;
const SEVERAL_NOTES: &str =
    r#"db_client_operation_duration_seconds_count{db_operation_name="insert_notes"}"#;
const CANCELLED: &str = r#"farol_db_abandoned_statements_total{outcome="cancelled"}"#;

struct Setup {
    app: TestApp,
    observer: tokio_postgres::Client,
    blocker: tokio_postgres::Client,
}

/// farol on a database of its own, with time to wait for the lock and `settings`;
/// `schema` run; then inserts blocked.
async fn blocked(schema: &str, settings: &[(&str, &str)]) -> Setup {
    blocked_with(schema, settings, |_| {}).await
}

/// [`blocked`], with `adjust` made to the settings the environment gives.
async fn blocked_with(
    schema: &str,
    settings: &[(&str, &str)],
    adjust: impl FnOnce(&mut Settings),
) -> Setup {
    let url = create_database(&shared_server_url()).await;
    // applied here: farol migrates only with named statements
    migrate(&url).await;
    let mut overrides = vec![
        ("MIGRATE_ON_START", "false"),
        // long past the test's own waits, which must all end before a statement's time
        ("DB_QUERY_TIMEOUT_MS", "30000"),
        ("REQUEST_TIMEOUT_MS", "90000"),
    ];
    overrides.extend_from_slice(settings);
    let mut settings = Settings::from_env(&test_env(&url, &overrides)).unwrap();
    adjust(&mut settings);
    let app = start_with_settings(settings).await;
    app.wait_ready().await;
    let observer = admin(&url).await;
    observer.batch_execute(schema).await.unwrap();
    let blocker = admin(&url).await;
    block(&blocker).await;
    Setup {
        app,
        observer,
        blocker,
    }
}

async fn block(blocker: &tokio_postgres::Client) {
    blocker
        .batch_execute("BEGIN; LOCK TABLE notes IN EXCLUSIVE MODE")
        .await
        .unwrap();
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

/// Waits until `count` creates wait in farol's queue.
async fn queued(app: &TestApp, count: usize) {
    app.wait_for_metric("farol_note_inserts_queued", count as f64)
        .await;
}

/// Waits until farol handles `count` requests (its `/metrics` one of them).
async fn requests_in_flight(app: &TestApp, count: usize) {
    app.wait_for_metric("http_server_active_requests", count as f64 + 1.0)
        .await;
}

/// A create sent on a connection of its own: dropping the stream is its client going
/// away.
async fn create_on_a_stream(app: &TestApp, title: &str) -> TcpStream {
    app.post_on_a_stream(&json!({"title": title, "body": ""}))
        .await
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

async fn each_gets_its_own_note(settings: &[(&str, &str)]) {
    let Setup {
        app,
        observer,
        blocker,
    } = blocked("", settings).await;
    let (fillers, first) = fill_statements(&app, &observer).await;
    let inputs: Vec<Value> = (100..120).map(note_input).collect();
    let sent = send_all(&app, &inputs);
    queued(&app, inputs.len()).await;
    // no more statements than run at once: the rest wait in farol, not in the database
    lock_waiters(&observer, STATEMENTS_AT_ONCE as i64).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    assert_each_made(&app, &fillers, answers(first).await).await;
    assert_each_made(&app, &inputs, answers(sent).await).await;
    let (one, several) = (
        app.metric(ONE_NOTE).await.unwrap_or(0.0),
        app.metric(SEVERAL_NOTES).await.unwrap_or(0.0),
    );
    assert_eq!(
        one, STATEMENTS_AT_ONCE as f64,
        "the first ones, one note each"
    );
    assert_eq!(
        several, 1.0,
        "the 20 queued ones, in the first statement to start"
    );
}

#[tokio::test]
async fn creates_that_wait_together_share_a_statement_and_each_gets_its_own_note() {
    each_gets_its_own_note(&[]).await;
}

/// Behind a pooler in transaction mode, where statements are sent unnamed.
#[tokio::test]
async fn creates_share_a_statement_sent_unnamed_too() {
    each_gets_its_own_note(&[("DB_PREPARED_STATEMENTS", "unnamed")]).await;
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
        &[],
    )
    .await;
    let (fillers, first) = fill_statements(&app, &observer).await;
    let mut inputs: Vec<Value> = (10..15).map(note_input).collect();
    inputs.insert(2, json!({"title": "poison", "body": ""}));
    let sent = send_all(&app, &inputs);
    queued(&app, inputs.len()).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    assert_each_made(&app, &fillers, answers(first).await).await;
    let mut got = answers(sent).await;
    let poisoned = got.remove(2);
    assert_eq!(poisoned.status(), 500);
    inputs.remove(2);
    assert_each_made(&app, &inputs, got).await;
    assert_eq!(notes_titled(&observer, "poison").await, 0);
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
async fn a_client_that_goes_away_before_its_statement_takes_no_other_note_with_it() {
    let Setup {
        app,
        observer,
        blocker,
    } = blocked("", &[]).await;
    let (fillers, first) = fill_statements(&app, &observer).await;
    let inputs: Vec<Value> = (10..15).map(note_input).collect();
    let sent = send_all(&app, &inputs);
    let gone = create_on_a_stream(&app, "gone").await;
    queued(&app, inputs.len() + 1).await;
    drop(gone);
    requests_in_flight(&app, fillers.len() + inputs.len()).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    assert_each_made(&app, &fillers, answers(first).await).await;
    assert_each_made(&app, &inputs, answers(sent).await).await;
    assert_eq!(
        notes_titled(&observer, "gone").await,
        0,
        "a create whose client left before its statement is not sent"
    );
}

/// One statement at a time (a pool of one). A statement of one note whose client goes
/// away is cancelled, and the next takes the queue. A statement of several runs on for
/// the clients still waiting (a gone one's note made too); one whose clients have all
/// gone is cancelled.
#[tokio::test]
async fn a_shared_statement_runs_on_for_its_clients_and_is_cancelled_once_all_have_gone() {
    let Setup {
        app,
        observer,
        blocker,
    } = blocked("", &[("DB_POOL_MAX", "1")]).await;
    let alone = create_on_a_stream(&app, "alone, gone").await;
    let alone_waiting = lock_waiter(&observer).await;
    let left = create_on_a_stream(&app, "left").await;
    let stayed = send_all(&app, &[json!({"title": "stayed", "body": ""})]);
    queued(&app, 2).await;
    drop(alone);
    wait_until_gone(&observer, alone_waiting).await;
    queued(&app, 0).await;
    lock_waiters(&observer, 1).await; // "left" and "stayed", in one statement
    drop(left);
    requests_in_flight(&app, 1).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let stayed = answers(stayed).await.remove(0);
    assert_eq!(stayed.status(), 201);
    assert_eq!(notes_titled(&observer, "stayed").await, 1);
    assert_eq!(
        notes_titled(&observer, "left").await,
        1,
        "made for the one that stayed"
    );
    assert_eq!(notes_titled(&observer, "alone, gone").await, 0, "cancelled");
    app.wait_for_metric(CANCELLED, 1.0).await;
    assert_eq!(app.metric(SEVERAL_NOTES).await, Some(1.0));

    block(&blocker).await;
    let first = create_on_a_stream(&app, "first, gone").await;
    let first_waiting = lock_waiter(&observer).await;
    let together = [
        create_on_a_stream(&app, "together, gone").await,
        create_on_a_stream(&app, "together, gone").await,
    ];
    queued(&app, 2).await;
    drop(first);
    wait_until_gone(&observer, first_waiting).await;
    queued(&app, 0).await;
    let together_waiting = lock_waiter(&observer).await;
    drop(together);
    wait_until_gone(&observer, together_waiting).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    app.wait_for_metric(CANCELLED, 3.0).await;
    assert_eq!(notes_titled(&observer, "first, gone").await, 0);
    assert_eq!(notes_titled(&observer, "together, gone").await, 0);
}

/// A create that waits for a connection past the query timeout, in the queue and then for
/// a pool slot, is answered busy and never sent. One statement at a time (a pool of one):
/// a keyed create holds the pool's one connection on the lock, a create taken by the
/// statement waits for that connection, and one more waits in the queue. (Whether the
/// queue's own timer or the statement's slot wait answers it, this does not tell.) The
/// keyed create's own query times out too, and its pool slot (a new connection: the
/// cancelled one is closed) then goes to the waiting statement: so the statement starts
/// its wait half a query timeout after the keyed create, and the slot comes free within
/// that wait while the queued create's timer runs on. (Started at once, a cancel that
/// took longer to settle than the gap between the two would free the slot after the
/// statement gave up, and the queued create would be taken and sent instead.)
#[tokio::test]
async fn a_create_that_finds_no_connection_in_time_is_answered_busy_and_never_sent() {
    let url = create_database(&shared_server_url()).await;
    migrate(&url).await;
    let app = start(
        &url,
        &[
            ("MIGRATE_ON_START", "false"),
            ("DB_POOL_MAX", "1"),
            ("DB_QUERY_TIMEOUT_MS", "4000"),
            ("REQUEST_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    app.wait_ready().await;
    let observer = admin(&url).await;
    let blocker = admin(&url).await;
    block(&blocker).await;
    let keyed_sent = tokio::time::Instant::now();
    let keyed = {
        let (client, url) = (app.client.clone(), app.url("/api/v1/notes"));
        tokio::spawn(async move {
            let note = json!({"title": "keyed", "body": ""});
            client
                .post(url)
                .header("Idempotency-Key", "holds-the-connection")
                .json(&note)
                .send()
                .await
                .unwrap()
        })
    };
    lock_waiters(&observer, 1).await;
    tokio::time::sleep_until(keyed_sent + Duration::from_secs(2)).await;
    let taken = send_all(&app, &[json!({"title": "taken", "body": ""})]);
    requests_in_flight(&app, 2).await;
    queued(&app, 0).await;
    let started = std::time::Instant::now();
    let waiting = send_all(&app, &[json!({"title": "never sent", "body": ""})]);
    let waiting = answers(waiting).await.remove(0);
    let waited = started.elapsed();
    assert_eq!(waiting.headers()["retry-after"], "1");
    crate::support::app::assert_problem(waiting, 503, "database-busy").await;
    assert!(
        waited >= Duration::from_millis(3900),
        "answered once the query timeout passed in the queue, not at once: {waited:?}"
    );
    queued(&app, 0).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    answers(taken).await;
    keyed.await.unwrap();
    assert_eq!(notes_titled(&observer, "never sent").await, 0);
}

/// More creates queued than one statement takes (`notes::batch::MAX_ROWS`): split over
/// two statements, and each still gets its own note.
#[tokio::test]
async fn a_queue_longer_than_a_statement_takes_goes_in_two() {
    let Setup {
        app,
        observer,
        blocker,
    } = blocked("", &[]).await;
    let (fillers, first) = fill_statements(&app, &observer).await;
    let inputs: Vec<Value> = (1000..1000 + MAX_ROWS + 6).map(note_input).collect();
    let sent = send_all(&app, &inputs);
    queued(&app, inputs.len()).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    assert_each_made(&app, &fillers, answers(first).await).await;
    assert_each_made(&app, &inputs, answers(sent).await).await;
    assert_eq!(
        app.metric(SEVERAL_NOTES).await,
        Some(2.0),
        "64 notes in one statement, the other 6 in the next"
    );
    assert_eq!(
        app.metric(ONE_NOTE).await,
        Some(STATEMENTS_AT_ONCE as f64),
        "the first ones, one note each"
    );
}

/// A note can outlive its request: a create whose client has gone stays in the queue
/// until a statement takes it, and in a statement that runs on for other clients until
/// it ends. The text it holds stays charged on the payload budget until then, so that
/// clients that send full notes and leave, while the database is stalled, cannot pile up
/// memory the budget does not see.
#[tokio::test]
async fn a_note_whose_client_has_gone_stays_charged_while_queued_or_in_its_statement() {
    const BUDGET_KIB: usize = 300;
    let Setup {
        app,
        observer,
        blocker,
    } = blocked_with("", &[("DB_POOL_MAX", "1")], |settings| {
        settings.http.payload_budget_bytes = BUDGET_KIB * 1024;
    })
    .await;
    let _first = create_on_a_stream(&app, "first").await;
    lock_waiter(&observer).await;
    // 10,000 characters of 4 bytes: each note is charged 40 KiB once parsed (80 KiB
    // while its body is read, twice its size), 6 of them 240 KiB of the 300.
    let full = json!({"title": "gone", "body": "𝄞".repeat(10_000)});
    let mut gone = Vec::new();
    for _ in 0..6 {
        gone.push(app.post_on_a_stream(&full).await);
    }
    queued(&app, 6).await;
    drop(gone);
    requests_in_flight(&app, 1).await;

    // Another such body needs 80 KiB while it is read: under 60 are left.
    let probe = || {
        app.client
            .post(app.url("/api/v1/notes"))
            .json(&json!({"title": "probe", "body": "𝄞".repeat(10_000)}))
            .timeout(Duration::from_secs(10))
            .send()
    };
    let shed = probe()
        .await
        .expect("shed at once, not queued behind the lock");
    let problem = crate::support::app::assert_problem(shed, 503, "overloaded").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("memory"),
        "{problem}"
    );

    // The statement ends, the next takes the queue and leaves out the gone clients' notes,
    // and their charge comes back.
    blocker.batch_execute("COMMIT").await.unwrap();
    queued(&app, 0).await;
    assert_eq!(probe().await.unwrap().status(), 201);
    assert_eq!(notes_titled(&observer, "gone").await, 0);

    // Taken into a statement that runs on for a client that stayed, the gone clients'
    // notes stay charged until it ends. Their rows wait on an advisory lock the test
    // holds (a trigger); the statement before them, on the table's lock.
    observer
        .batch_execute(
            "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.title = 'gone' THEN PERFORM pg_advisory_xact_lock_shared(42); END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER hold BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION hold(); \
             SELECT pg_advisory_lock(42)",
        )
        .await
        .unwrap();
    block(&blocker).await;
    let _first = create_on_a_stream(&app, "first").await;
    lock_waiter(&observer).await;
    let mut gone = Vec::new();
    for _ in 0..6 {
        gone.push(app.post_on_a_stream(&full).await);
    }
    let stayed = send_all(&app, &[json!({"title": "stayed", "body": ""})]);
    queued(&app, 7).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    queued(&app, 0).await;
    lock_waiters(&observer, 1).await; // the seven, in one statement, on the advisory lock
    drop(gone);
    requests_in_flight(&app, 1).await;
    let shed = probe()
        .await
        .expect("shed at once, not queued behind the statement");
    crate::support::app::assert_problem(shed, 503, "overloaded").await;

    observer
        .batch_execute("SELECT pg_advisory_unlock(42)")
        .await
        .unwrap();
    assert_eq!(answers(stayed).await.remove(0).status(), 201);
    assert_eq!(
        notes_titled(&observer, "gone").await,
        6,
        "made for the one that stayed"
    );
    assert_eq!(probe().await.unwrap().status(), 201, "the charge came back");
}
