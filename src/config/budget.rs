//! Limits derived from the memory the service may use: how many connections it keeps
//! open at most (`MAX_CONNECTIONS`' default) and how many bytes of request bodies it
//! holds at once. Each takes a quarter of the budget; the rest is for everything else
//! (the runtime, the pool, the log buffer, responses).
//!
//! The budget is the memory limit of the process's cgroup (v2 `memory.max`, or v1's
//! `memory.limit_in_bytes`: a container's or a pod's limit) when there is one, else
//! [`UNLIMITED_BUDGET`]. A 256 MiB pod gets 819 connections and 64 MiB of bodies.

use std::path::{Path, PathBuf};

/// What one open connection can make the service hold at worst, besides a body being
/// read: hyper's read buffer at the head limit (32 KiB), its write buffer, the task and
/// the socket's bookkeeping. Measured at 60 to 67 KiB with every head at the limit, so
/// budgeted a fifth above the most measured: `docs/security.md`.
pub const CONNECTION_BYTES: u64 = 80 * 1024;
/// The budget assumed when no memory limit is set.
pub const UNLIMITED_BUDGET: u64 = 1024 * 1024 * 1024;
const MIN_CONNECTIONS: u64 = 64;
const MAX_CONNECTIONS: u64 = 16_384;
/// Open connections at most on `METRICS_PORT`: a few scrapers.
pub const METRICS_CONNECTIONS: usize = 64;
/// File descriptors kept for what is neither a client nor the database: the listeners,
/// the runtime's, the log's, the trace exporter's, `CONFIG_DIR`'s reads.
const OTHER_FDS: u64 = 32;

/// File descriptors kept for everything but client connections on the main port: each
/// pooled connection and, at worst, a cancel beside each, the metrics port's connections,
/// and the rest.
pub fn reserved_fds(pool_max: usize) -> u64 {
    2 * pool_max as u64 + METRICS_CONNECTIONS as u64 + OTHER_FDS
}

/// The memory the service may use, in bytes.
pub fn memory_budget() -> u64 {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limit_files(&own)
        .iter()
        .filter_map(|path| limit_from(path))
        .min()
        .unwrap_or(UNLIMITED_BUDGET)
}

/// Where a limit may be: the process's own cgroup as `/proc/self/cgroup` names it and
/// each of its ancestors (a limit set on a pod or a slice holds for everything below),
/// and the root of each mount (inside a container with its own cgroup namespace, or a
/// v1 mount of just its subtree, the root is the container's own). The smallest wins.
fn limit_files(proc_self_cgroup: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut with_ancestors = |root: &str, path: &str, file: &str| {
        let mut dir = Path::new(root).join(path.trim_start_matches('/'));
        loop {
            files.push(dir.join(file));
            if dir == Path::new(root) || !dir.pop() {
                break;
            }
        }
    };
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = match (fields.next(), fields.next(), fields.next()) {
            (Some(id), Some(controllers), Some(path)) => (id, controllers, path),
            _ => continue,
        };
        if controllers.is_empty() {
            with_ancestors("/sys/fs/cgroup", path, "memory.max");
        } else if controllers.split(',').any(|c| c == "memory") {
            with_ancestors("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes");
        }
    }
    files.push(PathBuf::from("/sys/fs/cgroup/memory.max"));
    files.push(PathBuf::from("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    files
}

/// A cgroup limit file's value; `max` (v2) and the huge number v1 uses for "none" are no
/// limit.
fn limit_from(path: &Path) -> Option<u64> {
    parse_limit(&std::fs::read_to_string(path).ok()?)
}

fn parse_limit(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|bytes| *bytes > 0 && *bytes < 1 << 60)
}

/// The default bound on open connections: a quarter of the budget at
/// [`CONNECTION_BYTES`] each, within 64..=16384, and never past the open-file limit less
/// what [`reserved_fds`] keeps for a pool of `pool_max`.
pub fn default_max_connections(budget: u64, open_files: Option<u64>, pool_max: usize) -> usize {
    let by_memory = (budget / 4 / CONNECTION_BYTES).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS);
    let by_files = open_files.map_or(u64::MAX, |n| {
        n.saturating_sub(reserved_fds(pool_max)).max(1)
    });
    by_memory.min(by_files) as usize
}

/// The largest request body read: past it, 413. A limit the memory budget is built
/// around, hence here.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// Bytes of request bodies and large responses held at once (`http::budget`): a quarter
/// of the budget, and never less than
/// four bodies at the size limit.
pub fn payload_budget(budget: u64, body_limit: usize) -> usize {
    ((budget / 4) as usize).max(body_limit * 4)
}

/// The soft limit on open files, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (read && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_are_read_and_no_limit_is_none() {
        assert_eq!(parse_limit("268435456\n"), Some(256 << 20));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(
            parse_limit("9223372036854771712\n"),
            None,
            "cgroup v1 without a limit"
        );
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn the_process_own_cgroup_and_its_ancestors_are_looked_at() {
        let files = limit_files("4:memory:/pods/farol\n1:cpu:/x\n0::/system.slice/farol.service\n");
        let expected: Vec<PathBuf> = [
            "/sys/fs/cgroup/memory/pods/farol/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/pods/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/system.slice/farol.service/memory.max",
            "/sys/fs/cgroup/system.slice/memory.max",
            "/sys/fs/cgroup/memory.max",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(files[..6], expected[..]);
        assert_eq!(
            limit_files("0::/\n")[0],
            PathBuf::from("/sys/fs/cgroup/memory.max"),
            "a container with its own cgroup namespace"
        );
    }

    #[test]
    fn a_256_mib_pod_gets_819_connections_and_64_mib_of_bodies() {
        assert_eq!(default_max_connections(256 << 20, None, 16), 819);
        assert_eq!(payload_budget(256 << 20, 1 << 20), 64 << 20);
    }

    #[test]
    fn the_bound_stays_sane_at_the_extremes() {
        assert_eq!(default_max_connections(16 << 20, None, 16), 64);
        assert_eq!(default_max_connections(1 << 40, None, 16), 16_384);
        assert_eq!(
            default_max_connections(1 << 30, Some(1024), 16),
            1024 - 32 - 64 - 32,
            "open files, less the pool's and its cancels', the metrics port's and the rest"
        );
        assert_eq!(
            default_max_connections(1 << 30, Some(1024), 64),
            1024 - 128 - 64 - 32,
            "a larger pool keeps more"
        );
        assert_eq!(payload_budget(16 << 20, 1 << 20), 4 << 20);
    }
}
