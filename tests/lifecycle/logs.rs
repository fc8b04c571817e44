//! What the logs say, and what they never say.

use std::time::Duration;

use serde_json::Value;

use crate::support::kubelet::ConfigMapVolume;
use crate::support::pg::{
    PasswordCluster, admin, create_database, create_owned_database, lock_waiter, shared_server_url,
};
use crate::support::process::FarolProcess;

fn database_with_password() -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    // Trust authentication ignores the password, so the service works and we can look
    // for it in everything it prints.
    let url = url.replacen(
        "postgres://postgres@",
        "postgres://postgres:Sup3r-S3cret-Pw@", // pragma: allowlist secret (a made-up password, to show it never appears in logs)
        1,
    );
    (rt, url)
}

#[test]
fn each_request_logs_one_json_line_and_no_secret_is_ever_logged() {
    let (rt, url) = database_with_password();
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url), ("LOG_FORMAT", "json")]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    rt.block_on(async {
        let client = reqwest::Client::new();
        let response = client
            .get(format!(
                "{}/api/v1/notes/{}",
                farol.address,
                uuid::Uuid::new_v4()
            ))
            .header("x-request-id", "trace-me-123")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let forged = client
            .get(format!("{}/version", farol.address))
            .header("x-request-id", "evil\" \"level\":\"ERROR")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 200);
        let probe = client
            .get(format!("{}/livez", farol.address))
            .header("x-request-id", "probe-quiet")
            .send()
            .await
            .unwrap();
        assert_eq!(probe.status(), 200);
    });
    let line = farol.wait_for_log("trace-me-123", Duration::from_secs(5));
    let entry: Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(entry["message"], "request");
    assert_eq!(entry["level"], "INFO");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["route"], "/api/v1/notes/{id}");
    assert_eq!(entry["status"], 404);
    assert_eq!(
        entry["problem"], "not-found",
        "which problem the answer was"
    );
    assert!(entry["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(entry["timestamp"].is_string());
    let answered = farol.wait_for_log("\"route\":\"/version\"", Duration::from_secs(5));
    let answered: Value = serde_json::from_str(&answered).unwrap();
    assert_eq!(answered["status"], 200);
    assert!(
        answered.get("problem").is_none(),
        "no problem field on an answer: {answered}"
    );

    // lines are written in order: once a later request's line is out, a probe's line
    // written before it would be too
    log_a_last_line(&rt, &farol);
    let logs = farol.all_logs();
    for line in logs.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    assert!(
        !logs.contains("Sup3r-S3cret-Pw"),
        "the password leaked into the logs"
    );
    assert!(
        !logs.contains("evil"),
        "a forged request id reached the logs"
    );
    assert!(
        !logs.contains("probe-quiet"),
        "a probe's access line is at debug, off at info"
    );
}

/// Text logs take the access line as a tracing event, not the JSON writer's direct path:
/// one readable line per request at info, with its fields; a probe's stays off.
#[test]
fn with_text_logs_each_request_logs_one_readable_line() {
    let (rt, url) = database_with_password();
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url), ("LOG_FORMAT", "text")]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    rt.block_on(async {
        let client = reqwest::Client::new();
        let missing = format!("{}/api/v1/notes/{}", farol.address, uuid::Uuid::new_v4());
        for (url, id, status) in [
            (missing, "text-me-456", 404),
            (format!("{}/livez", farol.address), "probe-quiet", 200),
        ] {
            let response = client
                .get(url)
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status);
        }
    });
    let line = farol.wait_for_log("text-me-456", Duration::from_secs(5));
    assert!(
        serde_json::from_str::<Value>(&line).is_err(),
        "text, not JSON: {line}"
    );
    for part in [
        " INFO ",
        "farol::access: request ",
        r#"method="GET""#,
        r#"route="/api/v1/notes/{id}""#,
        "status=404",
        r#"problem="not-found""#,
        "duration_ms=",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    log_a_last_line(&rt, &farol);
    let logs = farol.all_logs();
    assert_eq!(logs.matches("text-me-456").count(), 1, "one line: {logs}");
    assert!(
        !logs.contains("probe-quiet"),
        "a probe's line is off at info"
    );
    assert!(!logs.contains("Sup3r-S3cret-Pw"), "the password leaked");
}

#[test]
fn a_broken_live_value_is_logged_with_its_reason_and_the_last_good_one_kept() {
    let (rt, url) = database_with_password();
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::new(
        dir.path(),
        &[("APP_MODE", "production"), ("LOG_LEVEL", "info")],
    );
    let farol = FarolProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("CONFIG_DIR", dir.path().to_str().unwrap()),
    ]);
    volume.update(&[("APP_MODE", "staging"), ("LOG_LEVEL", "info")]);
    let line = farol.wait_for_log("invalid value in CONFIG_DIR", Duration::from_secs(5));
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["level"], "WARN");
    assert_eq!(entry["key"], "APP_MODE");
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains("development or production"),
        "{entry}"
    );
    let mode = rt.block_on(async {
        let body: Value = reqwest::get(format!("{}/", farol.address))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["mode"].clone()
    });
    assert_eq!(mode, "production", "the last good value stays");
}

#[test]
fn the_log_level_changes_live() {
    let (rt, url) = database_with_password();
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::new(dir.path(), &[("LOG_LEVEL", "info")]);
    let farol = FarolProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("CONFIG_DIR", dir.path().to_str().unwrap()),
    ]);
    let get = |path: &str, id: &str| {
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{}{path}", farol.address))
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
        })
    };
    get("/version", "before-change");
    farol.wait_for_log("before-change", Duration::from_secs(5));

    // at debug, a probe's access line too
    let changes = |farol: &FarolProcess| farol.all_logs().matches(CHANGED).count();
    let seen = changes(&farol);
    volume.update(&[("LOG_LEVEL", "debug")]);
    wait_for_lines(&farol, CHANGED, seen + 1);
    std::thread::sleep(Duration::from_millis(200));
    get("/livez", "probe-at-debug");
    let line = farol.wait_for_log("probe-at-debug", Duration::from_secs(5));
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["level"], "DEBUG", "{entry}");
    assert_eq!(entry["target"], "farol::access", "{entry}");
    assert_eq!(entry["route"], "/livez", "{entry}");

    let seen = changes(&farol);
    volume.update(&[("LOG_LEVEL", "warn")]);
    wait_for_lines(&farol, CHANGED, seen + 1);
    std::thread::sleep(Duration::from_millis(200));
    get("/version", "after-change");
    // Back at info (the change's own line is written while warn still holds), a line
    // that comes after it: "after-change", had it been written at warn, would be out
    // before it.
    volume.update(&[("LOG_LEVEL", "info")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut sent = 0;
    while !farol.all_logs().contains("back-at-info-") {
        assert!(std::time::Instant::now() < deadline, "info never came back");
        sent += 1;
        get("/version", &format!("back-at-info-{sent}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !farol.all_logs().contains("after-change"),
        "info lines are off at warn"
    );
}

/// Sends a request whose access line (at info) comes after every line of the requests
/// answered before it, and waits for that line.
fn log_a_last_line(rt: &tokio::runtime::Runtime, farol: &FarolProcess) {
    let id = format!("last-line-{}", uuid::Uuid::new_v4().simple());
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/version", farol.address))
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
    });
    farol.wait_for_log(&id, Duration::from_secs(5));
}

/// What farol logs when it applies a change of its live settings.
const CHANGED: &str = "live configuration changed";

/// Until `count` log lines contain `needle` (5 s at most).
fn wait_for_lines(farol: &FarolProcess, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while farol.all_logs().matches(needle).count() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {count} lines with {needle:?}: {}",
            farol.all_logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn why_the_database_is_unreachable_is_logged_once_per_reason_and_never_the_password() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = PasswordCluster::start();
    rt.block_on(db.create_role_and_database("logged", "Old-S3cret-Pw")); // pragma: allowlist secret (a made-up password, to show it never appears in logs)
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("password");
    std::fs::write(&file, "Old-S3cret-Pw\n").unwrap(); // pragma: allowlist secret (the same made-up password)
    let port = db.cluster.port.to_string();
    let farol = FarolProcess::spawn(&[
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", &port),
        ("PGUSER", "logged"),
        ("PGDATABASE", "logged"),
        ("PGPASSWORD_FILE", file.to_str().unwrap()),
        ("PGSSLMODE", "disable"),
    ]);
    farol.wait_for_log("ready", Duration::from_secs(10));

    // The password changes under the service, and its sessions are cut.
    let rotate = "ALTER ROLE logged PASSWORD 'New-S3cret-Pw'"; // pragma: allowlist secret (a made-up password, to show it never appears in logs)
    rt.block_on(db.admin(rotate));
    rt.block_on(
        db.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'logged'"),
    );
    let line = farol.wait_for_log("password authentication failed", Duration::from_secs(10));
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["level"], "WARN");
    assert!(
        entry["message"].as_str().unwrap().contains("unreachable"),
        "{entry}"
    );
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("for user \"logged\""),
        "the driver's reason, whole: {entry}"
    );
    // The readiness ping fails every 2 s: the same reason is not logged again within 10 s.
    std::thread::sleep(Duration::from_secs(5));
    let logs = farol.all_logs();
    assert_eq!(
        logs.matches("password authentication failed").count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains("S3cret-Pw"), "a password reached the logs");
}

#[test]
fn a_request_abandoned_by_its_client_is_logged_with_status_499() {
    let (_rt, url) = database_with_password();
    let farol = FarolProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("CHAOS_ENABLED", "true"),
        ("CHAOS_LATENCY_MS", "3000"),
    ]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(farol.address.trim_start_matches("http://")).unwrap();
        stream
            .write_all(b"GET /api/v1/notes HTTP/1.1\r\nHost: x\r\nX-Request-Id: gave-up\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    } // the client goes away before the answer
    let line = farol.wait_for_log("gave-up", Duration::from_secs(5));
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["message"], "request");
    assert_eq!(entry["status"], 499);
    assert_eq!(entry["route"], "/api/v1/notes");
    // measured until the client went away, not until the handler would have finished
    let took = entry["duration_ms"].as_f64().unwrap();
    assert!(took > 0.0 && took < 3000.0, "{entry}");
}

/// A client that leaves half way through its body: a 400 that says so, not a broken
/// body's `malformed-json` (a wave of aborted uploads must not read as bad input).
#[test]
fn a_body_cut_short_by_its_client_is_logged_as_incomplete() {
    let (_rt, url) = database_with_password();
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url)]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(farol.address.trim_start_matches("http://")).unwrap();
        stream
            .write_all(
                b"POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nX-Request-Id: cut-short\r\n\
                  Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"title\"",
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    } // the client goes away half way through its body
    let line = farol.wait_for_log("cut-short", Duration::from_secs(5));
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["status"], 400, "{entry}");
    assert_eq!(entry["problem"], "body-incomplete", "{entry}");
}

/// Creates sent while the one statement farol may run (a pool of one) waits on a lock:
/// they queue, and go in one statement once the lock is released. Each answer's status,
/// in the order of `titles`.
async fn creates_queued_behind_a_lock(
    farol: &FarolProcess,
    url: &str,
    titles: &[&str],
) -> Vec<u16> {
    let (blocker, observer) = (admin(url).await, admin(url).await);
    // bounded here too: a farol that hangs fails the test instead of holding it
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let create = |title: &str| {
        let request = client
            .post(format!("{}/api/v1/notes", farol.address))
            .json(&serde_json::json!({"title": title, "body": ""}));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    blocker
        .batch_execute("BEGIN; LOCK TABLE notes IN EXCLUSIVE MODE")
        .await
        .unwrap();
    // the first create takes the statement, which waits on the lock; the rest queue
    let first = create("holds the statement");
    lock_waiter(&observer).await;
    let sent: Vec<_> = titles.iter().map(|title| create(title)).collect();
    let wanted = format!("farol_note_inserts_queued {}", titles.len());
    let mut tries = 0;
    while !client
        .get(format!("{}/metrics", farol.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .any(|line| line == wanted)
    {
        tries += 1;
        assert!(tries < 200, "never read {wanted:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(first.await.unwrap(), 201);
    let mut statuses = Vec::new();
    for answer in sent {
        statuses.push(answer.await.unwrap());
    }
    statuses
}

#[test]
fn a_refused_statement_of_several_notes_is_logged_with_its_cause_once_per_interval() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let farol = FarolProcess::spawn(&[
        ("DATABASE_URL", &url),
        ("LOG_FORMAT", "json"),
        ("DB_POOL_MAX", "1"),
        // long past the test's own waits
        ("DB_QUERY_TIMEOUT_MS", "30000"),
        ("REQUEST_TIMEOUT_MS", "90000"),
    ]);
    farol.wait_for_log("ready", Duration::from_secs(10));
    let statuses = rt.block_on(async {
        // A row the database refuses whatever farol checked first, with a message that
        // names the row: a new message each time, one code (P0001)
        admin(&url)
            .await
            .batch_execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN IF NEW.title = 'poison' THEN \
                 RAISE EXCEPTION 'poisoned note % refused here', NEW.id; END IF; \
                 RETURN NEW; END $$; \
                 CREATE TRIGGER refuse_poison BEFORE INSERT ON notes \
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            )
            .await
            .unwrap();
        let titles = ["fine one", "poison", "fine two"];
        let first = creates_queued_behind_a_lock(&farol, &url, &titles).await;
        let started = std::time::Instant::now();
        let second = creates_queued_behind_a_lock(&farol, &url, &titles).await;
        // the second refusal must come within the interval (10 s) for the count below
        // to mean anything
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the second round took {:?}",
            started.elapsed()
        );
        // lines are written in order: once this request's line is out, so is every
        // line of the statements before it
        reqwest::get(format!("{}/version", farol.address))
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        [first, second]
    });
    // each note then on its own: only the poisoned one fails, in both rounds
    assert_eq!(statuses, [[201, 500, 201], [201, 500, 201]]);
    farol.wait_for_log("\"route\":\"/version\"", Duration::from_secs(5));

    let line = farol.wait_for_log("a statement of several notes was refused", Duration::ZERO);
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["level"], "WARN", "{entry}");
    assert_eq!(entry["notes"], 3, "{entry}");
    let cause = entry["error"].as_str().unwrap();
    assert!(
        cause.contains("P0001") && cause.contains("refused here"),
        "the database's code and message, not a placeholder: {entry}"
    );
    // the second refusal, within the interval (10 s) and with the same code but another
    // message, is not logged again
    let logs = farol.all_logs();
    assert_eq!(
        logs.matches("a statement of several notes was refused")
            .count(),
        1,
        "{logs}"
    );
}

/// farol's database role should own its database and be nothing more: a superuser, or a
/// role that may run programs on the server, is said at start-up, and a role that merely
/// owns the database is not.
#[test]
fn a_database_role_that_is_a_superuser_is_said_at_start_up() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin_url = shared_server_url();
    // the test server's own role is its superuser
    let url = rt.block_on(create_database(&admin_url));
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url)]);
    let line = farol.wait_for_log("has a superuser's powers", Duration::from_secs(10));
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["level"], "WARN", "{entry}");
    assert!(entry["role"].is_string(), "{entry}");
    drop(farol);

    let owner = rt.block_on(create_owned_database(&admin_url));
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &owner)]);
    farol.wait_for_log("ready:", Duration::from_secs(10));
    let logs = farol.all_logs();
    assert!(!logs.contains("superuser"), "{logs}");
    drop(farol);

    // the same role, once it may run programs on the server
    let role = owner
        .split_once("://")
        .unwrap()
        .1
        .split_once(':')
        .unwrap()
        .0;
    let superuser = rt.block_on(admin(&admin_url));
    let grant = format!("GRANT pg_execute_server_program TO {role}");
    rt.block_on(superuser.batch_execute(&grant)).unwrap();
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &owner)]);
    let line = farol.wait_for_log("has a superuser's powers", Duration::from_secs(10));
    assert!(line.contains(role), "{line}");
}

#[test]
fn when_no_host_connects_each_ones_reason_is_logged() {
    // Two hosts take the connection and never answer (nobody accepts from these
    // listeners; the kernel completes the handshake), one refuses; the last hangs, so
    // the reasons must be told before the callers' own bounds run out.
    let hung: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = hung
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let closed = crate::support::pg::free_port();
    let url = format!(
        "host=127.0.0.1,localhost,127.0.0.1 port={},{closed},{} user=postgres \
         dbname=postgres sslmode=disable",
        ports[0], ports[1]
    );
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url), ("DB_CONNECT_TIMEOUT_MS", "1000")]);
    let logged = farol.wait_for_log("no host connected", Duration::from_secs(10));
    for port in &ports {
        assert!(
            logged.contains(&format!("127.0.0.1:{port}: no connection within ")),
            "{logged}"
        );
    }
    assert!(
        logged.contains(&format!("localhost:{closed}: ")),
        "{logged}"
    );
    drop(hung);
}
