//! Exit codes and messages of the command line.

use std::process::{Command, Stdio};

use crate::support::pg::{create_database, shared_server_url};
use crate::support::process::{FarolProcess, command};

fn run(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    output_of(command(env).args(args))
}

/// The exit code (-1 for a signal), stdout and stderr of `command`, run to its end.
fn output_of(command: &mut Command) -> (i32, String, String) {
    let output = command.stdin(Stdio::null()).output().expect("farol runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_prints_the_package_version() {
    let (code, stdout, _) = run(&[], &["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("farol {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it_and_exit_code_2() {
    for (name, value) in [
        ("PORT", "http"),
        ("DB_POOL_MAX", "0"),
        ("LOG_LEVEL", "chatty"),
        ("MAX_CONCURRENT_REQUESTS", "lots"),
        ("SHUTDOWN_TIMEOUT_MS", "-5"),
    ] {
        let (code, stdout, stderr) = run(
            &[
                ("DATABASE_URL", "postgres://u:pw@localhost/db"), // pragma: allowlist secret (a test URL, nothing listens there)
                (name, value),
            ],
            &["serve"],
        );
        assert_eq!(code, 2, "{name}={value}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("farol: invalid configuration: {name}: ")),
            "{stderr}"
        );
        assert!(stdout.is_empty());
    }
}

#[test]
fn migrate_refuses_a_pooler_in_transaction_mode() {
    let (code, _, stderr) = run(
        &[
            ("DATABASE_URL", "postgres://farol@127.0.0.1:1/farol"),
            ("DB_PREPARED_STATEMENTS", "unnamed"),
            ("MIGRATE_ON_START", "false"),
        ],
        &["migrate"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("DB_PREPARED_STATEMENTS"), "{stderr}");
    assert!(stderr.contains("session-level lock"), "{stderr}");
}

#[test]
fn a_missing_database_setting_is_named() {
    let (code, _, stderr) = run(&[], &["serve"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[test]
fn production_refuses_the_development_password_without_printing_it() {
    let (code, _, stderr) = run(
        &[
            ("APP_MODE", "production"),
            ("PGHOST", "db"),
            ("PGUSER", "farol"),
            ("PGPASSWORD", farol::config::DEVELOPMENT_DEFAULT_PASSWORD),
        ],
        &["serve"],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("APP_MODE: production refuses the development default database password"),
        "{stderr}"
    );
    assert!(!stderr.contains(farol::config::DEVELOPMENT_DEFAULT_PASSWORD));
}

#[test]
fn production_through_config_dir_refuses_the_development_password_at_start_up() {
    // Kubernetes sets APP_MODE through the mounted ConfigMap only.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("APP_MODE"), "production\n").unwrap();
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(
        secret.path().join("password"),
        format!("{}\n", farol::config::DEVELOPMENT_DEFAULT_PASSWORD),
    )
    .unwrap();
    let (code, _, stderr) = run(
        &[
            ("CONFIG_DIR", dir.path().to_str().unwrap()),
            ("PGHOST", "db"),
            ("PGUSER", "farol"),
            (
                "PGPASSWORD_FILE",
                secret.path().join("password").to_str().unwrap(),
            ),
        ],
        &["serve"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("APP_MODE: production (from CONFIG_DIR/APP_MODE) refuses the development default database password"),
        "{stderr}"
    );
    assert!(!stderr.contains(farol::config::DEVELOPMENT_DEFAULT_PASSWORD));
}

#[test]
fn a_database_url_error_never_shows_the_url() {
    let (code, _, stderr) = run(
        &[("DATABASE_URL", "postgres://u:hunter2@h:port/db")], // pragma: allowlist secret (a made-up URL, to show it never appears in errors)
        &["serve"],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("DATABASE_URL"));
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    std::fs::write(&file, "postgres://u:pw@h:notaport/db\n").unwrap();
    let (code, _, stderr) = run(&[("DATABASE_URL_FILE", file.to_str().unwrap())], &["serve"]);
    assert_eq!(code, 2, "the file was read and its content judged");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    let (code, _, stderr) = run(
        &[("PGPASSWORD_FILE", "/nonexistent"), ("PGUSER", "u")],
        &["serve"],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("PGPASSWORD_FILE: cannot read /nonexistent"),
        "{stderr}"
    );
}

#[test]
fn serve_reads_the_env_file_of_its_working_directory_and_no_other() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join(".env"),
        "DATABASE_URL=postgres://u@h:notaport/db\n",
    )
    .unwrap();
    let child = parent.path().join("child");
    std::fs::create_dir(&child).unwrap();
    let serve_in = |dir: &std::path::Path| output_of(command(&[]).current_dir(dir).arg("serve"));
    let (code, _, stderr) = serve_in(parent.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("DATABASE_URL: not a valid PostgreSQL connection string"),
        "the working directory's .env was read: {stderr}"
    );
    let (code, _, stderr) = serve_in(&child);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("DATABASE_URL: not set"),
        "a parent directory's .env was not: {stderr}"
    );
}

#[test]
fn healthcheck_exits_0_on_a_live_service_and_1_otherwise() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url)]);
    let port = farol.address.rsplit(':').next().unwrap().to_owned();

    let (code, _, stderr) = run(&[("PORT", &port)], &["healthcheck"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, _) = run(
        &[],
        &["healthcheck", "--url", &format!("{}/livez", farol.address)],
    );
    assert_eq!(code, 0);
    let (code, _, stderr) = run(
        &[],
        &["healthcheck", "--url", &format!("{}/nope", farol.address)],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("404"), "{stderr}");
    let closed = crate::support::pg::free_port();
    let (code, _, stderr) = run(&[("PORT", &closed.to_string())], &["healthcheck"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn migrate_applies_the_schema_and_is_idempotent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    for round in 0..2 {
        let (code, stdout, stderr) = run(&[("DATABASE_URL", &url)], &["migrate"]);
        assert_eq!(code, 0, "round {round}: {stderr}");
        assert!(stdout.contains("migrations done"), "{stdout}");
    }
    let applied = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    });
    assert_eq!(applied.unwrap(), 0, "the notes table exists");
}
