//! Giving back the memory a burst took.
//!
//! The binary uses mimalloc (`main.rs`). After a burst (a thousand connections each with
//! a full request head, hundreds of large bodies) mimalloc keeps the freed pages: it
//! returns them to the OS only after a purge delay, and only when the thread that owns
//! them allocates or collects again, which an idle worker thread never does. Measured
//! here, a burst of 300 bodies of 1 MiB left 65 to 110 MiB resident for good. Two
//! settings fix it: no purge delay, and each worker thread collects its heap whenever it
//! goes idle (a tokio park hook: a busy worker rarely parks, an idle one parks once).
//! With both, the same burst was given back within a second, and the benchmark's
//! throughput did not move beyond its run-to-run noise (docs/security.md).
//!
//! No transparent huge pages. mimalloc reserves a 1 GiB arena and, left to itself, asks
//! the kernel to back it with 2 MiB pages (`madvise(MADV_HUGEPAGE)`), so each 2 MiB of
//! the arena that a few small blocks touch becomes 2 MiB resident. Measured here (THP in
//! `madvise` mode), an idle farol held 24 to 26 MiB instead of 10, and a traced one under
//! load swung between 27 and 35 MiB, peaking past 40. The huge pages bought a few percent
//! of throughput: in ten paired rounds by hand, without them `GET /` made a median 0.96
//! and `GET /health` 0.97 of the requests (docs/benchmarks.md).
//!
//! The crate's `no_thp` feature removes the `madvise`. On hosts whose THP mode is
//! `always`, where the kernel hands out huge pages unasked, [`configure`] turns THP off
//! for the process; the pages mimalloc touched before `main` may already be huge there,
//! which the image avoids by setting `MIMALLOC_ALLOW_THP=0` (mimalloc then turns THP off
//! itself, before it maps anything). A failure to turn them off is logged at start-up
//! ([`huge_pages_error`]).

#[cfg(target_os = "linux")]
use libc::c_ulong;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same place in its v2 and
/// v3), which libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Call once, first thing. An operator's own `MIMALLOC_PURGE_DELAY` wins.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    // No huge pages from here on, whatever the host's THP mode. A failure (a kernel
    // before 3.15, a seccomp profile that refuses it) leaves the host's mode, which costs
    // memory, not correctness: kept for the start-up log (`huge_pages_error`).
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl reads its arguments 2 to 5 as unsigned longs; for
        // PR_SET_THP_DISABLE they are the flag (1) and zeros, and no pointer: it touches no
        // memory of ours.
        let set = unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                1 as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
            )
        };
        if set != 0 {
            let _ = HUGE_PAGES_ERROR.set(std::io::Error::last_os_error());
        }
    }
}

/// Why [`configure`] could not turn transparent huge pages off, if it could not.
static HUGE_PAGES_ERROR: std::sync::OnceLock<std::io::Error> = std::sync::OnceLock::new();

/// The error that left transparent huge pages on, for the start-up log; `None` when they
/// were turned off (or, off Linux, when there are none to turn off).
pub fn huge_pages_error() -> Option<&'static std::io::Error> {
    HUGE_PAGES_ERROR.get()
}

/// The runtime's `on_thread_park` hook: collects this thread's heap as it goes idle.
/// A normal (not forced) collect: it frees the thread's empty pages and purges what is
/// due, a few microseconds beside the futex wait that parking is.
pub fn collect_when_idle() {
    // SAFETY: collects the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(false) };
}
