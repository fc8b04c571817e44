//! SIGTERM: unready at once, serving through the delay, in-flight requests finished,
//! exit 0; and a drain that runs out of time still exits.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::pg::{
    PgCluster, admin, create_database, lock_waiter, shared_server_url, wait_until_gone,
};
use crate::support::process::FarolProcess;

#[test]
fn sigterm_turns_unready_at_once_finishes_in_flight_requests_and_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let mut farol = FarolProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("CHAOS_ENABLED", "true"),
        ("CHAOS_LATENCY_MS", "1500"),
        ("SHUTDOWN_DELAY_MS", "800"),
        ("SHUTDOWN_TIMEOUT_MS", "5000"),
    ]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    let client = reqwest::Client::new();
    let address = farol.address.clone();

    let in_flight = rt.spawn({
        let (client, url) = (client.clone(), format!("{address}/api/v1/notes"));
        async move { client.get(url).send().await }
    });
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    farol.signal(libc::SIGTERM);

    let (readyz, livez) = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let readyz = client
            .get(format!("{address}/readyz"))
            .send()
            .await
            .unwrap();
        let status = readyz.status();
        let body: Value = readyz.json().await.unwrap();
        let livez = client
            .get(format!("{address}/livez"))
            .send()
            .await
            .unwrap()
            .status();
        ((status, body), livez)
    });
    assert_eq!(readyz.0, 503, "unready at once");
    assert_eq!(readyz.1["status"], "draining");
    assert_eq!(livez, 200, "still serving during the delay");

    let response = rt
        .block_on(in_flight)
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), 200, "with its normal answer");
    let code = farol.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 0);
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "served through the delay: {took:?}"
    );
    assert!(farol.all_logs().contains("\"stopped\""));
}

#[test]
fn a_drain_that_outlives_its_timeout_is_cut_and_the_process_still_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let mut farol = FarolProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("CHAOS_ENABLED", "true"),
        ("CHAOS_LATENCY_MS", "30000"),
        ("REQUEST_TIMEOUT_MS", "60000"),
        ("SHUTDOWN_TIMEOUT_MS", "500"),
    ]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    let in_flight = rt.spawn({
        let url = format!("{}/api/v1/notes", farol.address);
        async move { reqwest::get(url).await }
    });
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    farol.signal(libc::SIGTERM);
    assert_eq!(farol.wait_exit(Duration::from_secs(5)), 0);
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
    assert!(farol.all_logs().contains("drain timed out"));
    assert!(
        rt.block_on(in_flight).unwrap().is_err(),
        "the abandoned request was cut"
    );
}

/// A request cut at the drain deadline leaves no statement behind: what it was waiting
/// for on the database is cancelled before the process exits. Here an insert waits on a
/// lock, with a query timeout long enough that the server's own statement_timeout would
/// let it wait for 20 s; the server does not notice a closed connection meanwhile.
#[test]
fn a_statement_left_running_at_the_drain_deadline_is_cancelled_before_exit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let mut farol = ready_with_a_short_drain(&url);
    let (observer, blocker) = rt.block_on(async {
        let blocker = admin(&url).await;
        blocker
            .batch_execute("BEGIN; LOCK TABLE notes IN EXCLUSIVE MODE")
            .await
            .unwrap();
        (admin(&url).await, blocker)
    });
    let in_flight = rt.spawn({
        let url = format!("{}/api/v1/notes", farol.address);
        async move {
            let note = serde_json::json!({"title": "cut", "body": ""});
            reqwest::Client::new().post(url).json(&note).send().await
        }
    });
    let waiting = rt.block_on(lock_waiter(&observer));

    let signalled = Instant::now();
    farol.signal(libc::SIGTERM);
    assert_eq!(farol.wait_exit(Duration::from_secs(5)), 0);
    // At exit the cancel goes at once, without the half second a statement is otherwise
    // given to end by itself: the 300 ms drain, then little more.
    assert!(
        signalled.elapsed() < Duration::from_millis(300 + 450),
        "exited {:?} after the signal",
        signalled.elapsed()
    );
    assert!(farol.all_logs().contains("drain timed out"));
    assert!(
        rt.block_on(in_flight).unwrap().is_err(),
        "the request was cut"
    );
    // while the lock is still held
    rt.block_on(wait_until_gone(&observer, waiting));
    rt.block_on(blocker.batch_execute("COMMIT")).unwrap();
}

/// What farol waits for after the drain is bounded whatever the database does. Here the
/// database freezes (a hung host, a partition) under a request's statement: the request
/// is cut at the drain deadline, and the cancel farol then sends for its statement gets
/// no answer. The exit still comes within the drain, the cancels' second and the last
/// log lines' second (with slack for a loaded machine), not when the database wakes.
#[test]
fn a_frozen_database_does_not_hold_the_exit_past_its_bounds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = PgCluster::start();
    let url = rt.block_on(create_database(&cluster.url("postgres")));
    let mut farol = ready_with_a_short_drain(&url);
    let client = reqwest::Client::new();
    let notes = format!("{}/api/v1/notes", farol.address);
    let note = serde_json::json!({"title": "frozen", "body": ""});
    // a pooled connection, established: the next insert goes out on it
    let made = rt.block_on(client.post(&notes).json(&note).send()).unwrap();
    assert_eq!(made.status(), 201);

    cluster.freeze();
    // thawed however the test ends: a frozen cluster cannot be stopped
    struct Thaw<'a>(&'a PgCluster);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            self.0.thaw();
        }
    }
    let _thaw = Thaw(&cluster);
    let in_flight = rt.spawn({
        let (client, notes, note) = (client.clone(), notes.clone(), note.clone());
        async move { client.post(notes).json(&note).send().await }
    });
    let metrics = format!("{}/metrics", farol.address);
    rt.block_on(async {
        // the insert is in flight (the scrape itself is the other request)
        for _ in 0..200 {
            let text = client
                .get(&metrics)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text
                .lines()
                .any(|line| line == "http_server_active_requests 2")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the insert never arrived");
    });

    let signalled = Instant::now();
    farol.signal(libc::SIGTERM);
    let status = farol.wait_exit(Duration::from_secs(6));
    let took = signalled.elapsed();
    assert_eq!(status, 0);
    assert!(
        rt.block_on(in_flight).unwrap().is_err(),
        "the request was cut"
    );
    assert!(farol.all_logs().contains("drain timed out"));
    // 0.3 s of drain, then the cancels' second, which the frozen server makes farol wait
    // out whole (less would mean nothing was left to cancel), and a little for a loaded
    // machine: a longer wait for the cancels fails here
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_millis(3000),
        "exit took {took:?}"
    );
}

/// farol on `url`, ready, whose requests and queries may wait far longer than its drain
/// (0.3 s): what is in flight at SIGTERM is still there at the drain deadline.
fn ready_with_a_short_drain(url: &str) -> FarolProcess {
    let farol = FarolProcess::spawn(&[
        ("DATABASE_URL", url),
        ("DB_QUERY_TIMEOUT_MS", "20000"),
        ("REQUEST_TIMEOUT_MS", "60000"),
        ("SHUTDOWN_TIMEOUT_MS", "300"),
    ]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    farol
}
