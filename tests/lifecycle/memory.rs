//! The serving process's memory settings, read from the kernel's view of it.

use crate::support::pg::{create_database, shared_server_url};
use crate::support::process::FarolProcess;

/// One field of `/proc/PID/status`, e.g. `THP_enabled`.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
        .trim()
        .to_owned()
}

/// Transparent huge pages would make each 2 MiB of mimalloc's arena that a few blocks
/// touch 2 MiB resident (src/allocator.rs): the process turns them off for itself,
/// whatever the host's mode.
#[test]
fn the_service_runs_without_transparent_huge_pages() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url)]);
    assert_eq!(status_field(farol.child.id(), "THP_enabled"), "0");
    // the test process itself (which never calls `configure`) has them: the field reads
    // what the setting changes
    assert_eq!(status_field(std::process::id(), "THP_enabled"), "1");
}
