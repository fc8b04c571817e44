//! The accept loop's bounds, as the log tells them. Out of file descriptors:
//! `MAX_CONNECTIONS` set above what the open-file limit allows is said at start-up;
//! accepting that then fails is said at a pace the log can bear; and new connections are
//! served again once descriptors are free. At `MAX_CONNECTIONS`: said, not silent.

use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::pg::{create_database, shared_server_url};
use crate::support::process::{FarolProcess, command};

const OPEN_FILES: libc::rlim_t = 128;

#[test]
fn accepting_past_the_open_file_limit_is_said_once_per_interval_and_recovers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let mut limited = command(&[("DATABASE_URL", &url), ("MAX_CONNECTIONS", "1000")]);
    // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
    unsafe {
        limited.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: OPEN_FILES,
                rlim_max: OPEN_FILES,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let farol = FarolProcess::spawn_command(limited);
    let warning = farol.wait_for_log("above what the open-file limit allows", Duration::ZERO);
    assert!(warning.contains("\"open_files_limit\":128"), "{warning}");

    // More connections than descriptors: the kernel completes them all (the backlog),
    // farol cannot accept them all.
    let address = farol.address.trim_start_matches("http://").to_owned();
    let clients: Vec<TcpStream> = (0..OPEN_FILES + 32)
        .map(|_| TcpStream::connect(&address).expect("the backlog takes it"))
        .collect();
    let first = farol.wait_for_log("accept failed", Duration::from_secs(10));
    assert!(first.contains("\"failures_unsaid\":0"), "{first}");
    // It fails every 50 ms meanwhile, and says so once per ten seconds: lines at least
    // that far apart, each after the first counting the failures it stands for.
    std::thread::sleep(Duration::from_secs(2));
    let lines: Vec<String> = farol
        .all_logs()
        .lines()
        .filter(|line| line.contains("accept failed"))
        .map(str::to_owned)
        .collect();
    for pair in lines.windows(2) {
        let apart = timestamp(&pair[1]) - timestamp(&pair[0]);
        assert!(apart >= time::Duration::seconds(10), "{pair:#?}");
        assert!(!pair[1].contains("\"failures_unsaid\":0"), "{pair:#?}");
    }
    drop(clients);
    let body = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match reqwest::get(format!("{}/livez", farol.address)).await {
                Ok(response) if response.status() == 200 => break response.text().await,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("not served again once descriptors are free: {other:?}"),
            }
        }
    });
    assert!(body.is_ok());
}

/// The bound itself is invisible from outside (new connections wait in the kernel's
/// backlog until an open one is idle or closes, as `tests/api/bounds.rs` shows): the
/// log must name it.
#[test]
fn reaching_max_connections_is_said_in_the_log() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url), ("MAX_CONNECTIONS", "2")]);
    let address = farol.address.trim_start_matches("http://").to_owned();
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&address).expect("the backlog takes it"))
        .collect();
    let line = farol.wait_for_log("connection limit reached", Duration::from_secs(10));
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    assert!(line.contains("MAX_CONNECTIONS"), "{line}");
    drop(clients);
}

fn timestamp(line: &str) -> OffsetDateTime {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    OffsetDateTime::parse(value["timestamp"].as_str().unwrap(), &Rfc3339).unwrap()
}
