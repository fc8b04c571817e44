//! A server that answers but takes no writes (a standby behind a moved address, or
//! default_transaction_read_only): one state, entered and left once, with the pool's
//! connections dropped at a bounded rate rather than on every failed write.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::pg::{PgCluster, admin, create_database, set_read_only};
use crate::support::process::FarolProcess;

const POOL_MAX: usize = 4;

/// Sessions ever opened to `database`. The server publishes its counters at most once
/// a second, and at once when a session ends: the wait lets both land.
async fn sessions_opened(admin: &tokio_postgres::Client, database: &str) -> i64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    admin
        .query_one(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1",
            &[&database],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_health(client: &reqwest::Client, address: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = client
            .get(format!("{address}/health"))
            .send()
            .await
            .unwrap()
            .status();
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(logs: &str, message: &str) -> usize {
    logs.lines()
        .filter(|line| line.contains(&format!("\"message\":\"{message}\"")))
        .count()
}

#[test]
fn a_read_only_server_is_one_state_logged_once_each_way_without_churning_connections() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = PgCluster::start();
    let url = rt.block_on(create_database(&cluster.url("postgres")));
    let database = url
        .rsplit_once('/')
        .and_then(|(_, rest)| rest.split('?').next())
        .unwrap()
        .to_owned();
    let farol = FarolProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("DB_POOL_MAX", &POOL_MAX.to_string()),
    ]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    let reachable_at_start = count(&farol.all_logs(), "database reachable");

    let (opened_while_read_only, answers) = rt.block_on(async {
        let client = reqwest::Client::new();
        let admin = admin(&cluster.url("postgres")).await;
        set_read_only(&admin, true).await;
        wait_for_health(&client, &farol.address, 503).await;
        let before = sessions_opened(&admin, &database).await;
        // Reads succeed and writes fail, interleaved: what a service sees behind a standby.
        let mut answers = Vec::new();
        for i in 0..40 {
            let status = if i % 2 == 0 {
                client
                    .post(format!("{}/api/v1/notes", farol.address))
                    .json(&json!({"title": "t", "body": "b"}))
                    .send()
                    .await
            } else {
                client
                    .get(format!("{}/api/v1/notes", farol.address))
                    .send()
                    .await
            };
            answers.push(status.unwrap().status().as_u16());
        }
        let opened = sessions_opened(&admin, &database).await - before;
        set_read_only(&admin, false).await;
        wait_for_health(&client, &farol.address, 200).await;
        (opened, answers)
    });

    assert!(
        answers.iter().step_by(2).all(|&status| status == 503),
        "every write answers 503: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .skip(1)
            .step_by(2)
            .all(|&status| status == 200),
        "every read still works: {answers:?}"
    );
    assert!(
        opened_while_read_only <= POOL_MAX as i64,
        "{opened_while_read_only} connections opened for 40 requests: the pool is \
         emptied at most once per interval, not on every failed write"
    );
    // The log writer is asynchronous: the line may land just after /health answered.
    farol.wait_for_log("database takes writes again", Duration::from_secs(5));
    let logs = farol.all_logs();
    assert_eq!(count(&logs, "database takes no writes"), 1, "{logs}");
    assert_eq!(count(&logs, "database takes writes again"), 1, "{logs}");
    assert_eq!(
        count(&logs, "database reachable"),
        reachable_at_start,
        "successful reads do not flap the state: {logs}"
    );
    assert_eq!(count(&logs, "database became unreachable"), 0, "{logs}");
}
