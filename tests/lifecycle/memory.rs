//! The serving process's memory settings, read from the kernel's view of it.

use crate::support::pg::{create_database, shared_server_url};
use crate::support::process::FarolProcess;

/// One field of a `/proc/PID/` file in the `Name: value` form, e.g. `THP_enabled` of
/// `status`.
fn proc_field(pid: u32, file: &str, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/{file}:\n{text}"))
        .trim()
        .to_owned()
}

/// Transparent huge pages would make each 2 MiB of mimalloc's arena that a few blocks
/// touch 2 MiB resident (src/allocator.rs): the process turns them off for itself, and
/// its allocator asks for none.
#[test]
fn the_service_runs_without_transparent_huge_pages() {
    // `THP_enabled` is the process's own setting (prctl's, inherited across exec), not
    // the host's mode. Allowed here first, whatever this process inherited, so that
    // farol starts with it allowed and must turn it off itself.
    // SAFETY: PR_SET_THP_DISABLE with a zero flag and zero arguments; no pointer.
    let allowed = unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    assert_eq!(allowed, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(
        proc_field(std::process::id(), "status", "THP_enabled"),
        "1",
        "a kernel without transparent huge pages: this test cannot tell"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url)]);
    let pid = farol.child.id();
    assert_eq!(proc_field(pid, "status", "THP_enabled"), "0");
    // Some allocation first; then none of its memory is in huge pages. Where the host's
    // mode is `always`, the pages touched before `main` may be (src/allocator.rs), so
    // this part holds only elsewhere.
    rt.block_on(async {
        for _ in 0..50 {
            let answer = reqwest::get(format!("{}/health", farol.address)).await;
            assert_eq!(answer.unwrap().status(), 200);
        }
    });
    let always = [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled",
    ]
    .iter()
    .any(|mode| std::fs::read_to_string(mode).is_ok_and(|mode| mode.contains("[always]")));
    if always {
        eprintln!("this host hands out huge pages unasked: AnonHugePages not checked");
    } else {
        assert_eq!(proc_field(pid, "smaps_rollup", "AnonHugePages"), "0 kB");
    }
}

/// The binary's allocator counts what each thread frees, which decides when an idle
/// worker collects its heap (src/allocator.rs): the start-up check that would say
/// otherwise stays silent.
#[test]
fn the_binarys_allocator_counts_what_threads_free() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(create_database(&shared_server_url()));
    let farol = FarolProcess::spawn(&[("DATABASE_URL", &url)]);
    farol.wait_for_log("ready", std::time::Duration::from_secs(10));
    let logs = farol.all_logs();
    assert!(
        !logs.contains(farol::allocator::NOT_COUNTING_WARNING),
        "{logs}"
    );
}
