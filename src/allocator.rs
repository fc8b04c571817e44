//! Giving back the memory a burst took.
//!
//! The binary uses mimalloc (`main.rs`). After a burst (a thousand connections each with
//! a full request head, hundreds of large bodies) mimalloc keeps the freed pages: it
//! returns them to the OS only after a purge delay, and only when the thread that owns
//! them allocates or collects again, which an idle worker thread never does. Measured
//! here, a burst of 300 bodies of 1 MiB left 65 to 110 MiB resident for good. Three
//! parts fix it. Each worker thread collects its heap when it goes idle (a tokio park
//! hook) if it has freed at least [`COLLECT_AFTER_FREED`], or has not collected for
//! [`COLLECT_AT_LEAST_EVERY`]; mimalloc gives what a collection freed back to the kernel
//! no sooner than a short [`PURGE_DELAY`] later, and only when some thread purges then;
//! so a thread of ours does, the purger ([`start_purger`]): each collection wakes it, it
//! waits out the delay and purges, and it purges at least every
//! [`PURGE_AT_LEAST_EVERY`] besides, for what went back to mimalloc without a collection.
//! The memory drill (scripts/reliability memory) holds each burst to 8 MiB over the
//! level before it within 1.5 s of its end; after the large pages, whose pool
//! connections stay, to more, and once the workers have run if a parked one holds it
//! (below; docs/reliability.md).
//!
//! Why a delay: with none, mimalloc gives back every page the moment its last block is
//! freed, and under load pages empty and fill again between two requests (hyper's 8 KiB
//! read buffer is a new block for each request): on `GET /health`, by `perf`, 0.09 to
//! 0.15 page faults a request with no delay, 0.025 to 0.046 with 10 ms, each a page the
//! kernel zeroed and mapped again (docs/benchmarks.md). Why the purger: mimalloc purges
//! only in the course of an allocation, a free or a collection, and a service gone idle
//! makes none; in one run of the memory drill with the delay and no purger, the heads
//! held under 32 KiB came back after 1.8 s and the bodies after 2.9 s, against 0.1 s
//! with no delay, or with the purger.
//!
//! Why not at every park: a worker under load parks between bursts of ready connections,
//! many times a second, and a collection walks the heap's pages and gives back those it
//! finds free, which the next requests may have to take again. Collecting at every park
//! cost `GET /` 4 to 9 % of its throughput at 32 connections, in four runs by hand
//! (docs/benchmarks.md). What a worker that goes idle may keep uncollected: what under
//! [`COLLECT_AFTER_FREED`] of its own frees left free (counted in pages, not bytes: a
//! small freed block can leave a whole page empty), and, if it collected less than
//! [`COLLECT_AT_LEAST_EVERY`] ago, what other threads freed into its heap (a task moves
//! between workers; a block goes back to the heap it came from). A parked worker
//! collects nothing, so that stays until it next wakes and parks again, which on a quiet
//! service may be much later; so does what other threads free into its heap while it
//! sleeps, with or without the threshold, as before it. That is per worker thread: one
//! in the shipped containers, whose CPU limit is 1; as many as the cores where there is
//! no limit. The count is kept by [`Allocator`]: mimalloc, with each thread's freed
//! bytes added up on the side.
//!
//! No transparent huge pages. mimalloc reserves a 1 GiB arena and, left to itself, asks
//! the kernel to back it with 2 MiB pages (`madvise(MADV_HUGEPAGE)`), so each 2 MiB of
//! the arena that a few small blocks touch becomes 2 MiB resident. Measured here (THP in
//! `madvise` mode), an idle farol held 24 to 26 MiB instead of 10, and a traced one under
//! load swung between 27 and 35 MiB, peaking past 40. The huge pages bought a few percent
//! of throughput: in ten paired rounds by hand, without them `GET /` made a median 0.96
//! and `GET /health` 0.97 of the requests (docs/benchmarks.md).
//!
//! libmimalloc-sys's `no_thp` feature removes the `madvise`. On hosts whose THP mode is
//! `always`, where the kernel hands out huge pages unasked, [`configure`] turns THP off
//! for the process; the pages mimalloc touched before `main` may already be huge there,
//! which the image avoids by setting `MIMALLOC_ALLOW_THP=0` (mimalloc then turns THP off
//! itself, before it maps anything). A failure to turn them off is logged at start-up
//! ([`huge_pages_error`]).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_long;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use libc::c_ulong;

/// What a worker thread frees between two collections of its heap before the next park
/// collects: 1 MiB, about 70 `GET /` requests' worth (one collection per 72 requests,
/// counted by callgrind). By hand, 4 MiB was no clear gain (2 % better in one run, 1 %
/// worse in another, within the rounds' spread).
pub const COLLECT_AFTER_FREED: usize = 1024 * 1024;

/// However little a worker freed, its next park collects once this long has passed since
/// its last collection, for what other threads freed into its heap, which its own count
/// does not see. It acts only at a park: a worker that stays parked collects nothing. A
/// clock read per park, and a collection a second, measured no different by hand.
pub const COLLECT_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// Bytes this thread has freed since it last collected its heap. `const` and free of
    /// a destructor: on Linux a plain load and store, readable from the allocator at any
    /// point of a thread's life, its teardown included, and allocating nothing.
    static FREED: Cell<usize> = const { Cell::new(0) };
    /// When this thread last collected its heap (never: `None`).
    static COLLECTED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// mimalloc, asked for a block as a C program asks it when no more than a word's
/// alignment is needed, which is nearly every Rust allocation: `mi_malloc`, whose every
/// block is at least word-aligned. The `mimalloc` crate's adapter asks `mi_malloc_aligned`
/// for every block, and mimalloc v3 serves that at `mi_malloc`'s cost only for a block of
/// up to 1 KiB whose page's free list is not empty; otherwise its generic aligned path
/// runs, and unless the size class is a power of two of at most 4 KiB, it asks for the
/// size plus the alignment less one, a larger class where that crosses a boundary (48
/// bytes on 8 became 64, 8 KiB 10 KiB). Counted by callgrind, that was 3 to 4 % of farol's
/// instructions a request, and as much of the baseline's (docs/benchmarks.md, "mimalloc
/// called directly"). A wider alignment goes to the aligned calls: mimalloc gives 16
/// bytes to every block of 16 bytes or more, but only 8 to a smaller one, which a layout
/// may ask on 16, and that rule is its design rather than its interface.
pub struct Mimalloc;

/// The alignment every mimalloc block has (not in a guarded debug build of mimalloc
/// run with `MIMALLOC_GUARDED_PRECISE`, which places a block against its guard page; the
/// shipped build is not one).
const WORD: usize = size_of::<usize>();

// SAFETY: each call goes to the mimalloc function that gives what the layout asks
// (`mi_malloc` for at most a word's alignment, which every mimalloc block has).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a size of at least 1 (the caller's contract); the alignment as asked.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: a block of this allocator's (the caller's contract), which mimalloc
        // frees whichever call made it.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, and a new size of at least 1.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// The process's allocator: [`Mimalloc`], and a count of the bytes each thread frees.
pub struct Allocator;

// SAFETY: every call is passed to [`Mimalloc`] unchanged; the count beside it is a
// thread-local cell, which neither allocates nor touches the blocks.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { Mimalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { Mimalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_freed(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { Mimalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A block that moves frees the old one; one resized in place frees at most the
        // difference. Counting the old size overcounts, which only collects sooner.
        count_freed(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { Mimalloc.realloc(ptr, layout, new_size) }
    }
}

fn count_freed(bytes: usize) {
    // `try_with`: an allocator must not panic. Where the cell cannot be reached (on a
    // platform without native thread locals, late in a thread's exit) the count is
    // simply not kept.
    let _ = FREED.try_with(|freed| freed.set(freed.get().saturating_add(bytes)));
}

/// `mi_option_purge_delay` and `mi_option_arena_purge_mult` in mimalloc.h's
/// `mi_option_e` (the same places in its v2 and v3), which libmimalloc-sys does not name.
/// Their product, in milliseconds, is how long mimalloc's arena waits, from the first
/// page freed to it since it last purged, before its next purge may give back every page
/// freed to it by then.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ARENA_PURGE_MULT: libmimalloc_sys::mi_option_t = 24;

/// mimalloc's purge delay, unless the operator's `MIMALLOC_PURGE_DELAY` (or its old
/// name, `MIMALLOC_RESET_DELAY`) says otherwise: its arena purges no sooner than this
/// after the first page freed to it since its last purge, and then gives back every page
/// freed by then. Long enough for most pages that empty between two requests to be
/// taken again first, short next to the drill's 1.5 s.
pub const PURGE_DELAY: Duration = Duration::from_millis(10);

/// What the purger waits past the delay: mimalloc's clock counts whole milliseconds.
const PURGE_MARGIN: Duration = Duration::from_millis(5);

/// However quiet the service, the purger purges at least this often: for the pages that
/// went back to mimalloc without a collection to wake it (a page emptied by an ordinary
/// free, a block of a thread that is not a worker's).
pub const PURGE_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Call once, first thing. An operator's own `MIMALLOC_PURGE_DELAY` (or
/// `MIMALLOC_RESET_DELAY`, its old name) wins over [`PURGE_DELAY`].
pub fn configure() {
    // Whether the binary's global allocator is [`Allocator`]: a block freed here must be
    // counted. If it is not, idle workers collect at most once a second (the start-up log
    // says so: `allocator_not_counting`).
    let before = FREED.with(Cell::get);
    let mut probe = Box::new(0_u64);
    // SAFETY: a write through a valid, exclusive pointer. Volatile: an allocation whose
    // block is never used may be optimised away, and the check would then see no free.
    unsafe { std::ptr::write_volatile(&mut *probe, 1) };
    drop(probe);
    COUNTING.store(FREED.with(Cell::get) != before, Ordering::Relaxed);
    if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .all(|name| std::env::var_os(name).is_none())
    {
        let delay_ms = PURGE_DELAY.as_millis().try_into().unwrap_or(c_long::MAX);
        // SAFETY: sets one of mimalloc's options, which it reads when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms) };
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

static COUNTING: AtomicBool = AtomicBool::new(false);

/// The start-up warning when freed blocks are not counted (tests look for it).
pub const NOT_COUNTING_WARNING: &str = "the global allocator does not count what threads free: \
     idle workers collect their heaps at most once a second (src/allocator.rs)";

/// True when [`configure`] found that freed blocks are not counted (the binary's global
/// allocator is not [`Allocator`], and idle workers collect at most once a second), or
/// has not run.
pub fn allocator_not_counting() -> bool {
    !COUNTING.load(Ordering::Relaxed)
}

/// Why [`configure`] could not turn transparent huge pages off, if it could not.
static HUGE_PAGES_ERROR: OnceLock<std::io::Error> = OnceLock::new();

/// The error that left transparent huge pages on, for the start-up log; `None` when they
/// were turned off (or, off Linux, when there are none to turn off).
pub fn huge_pages_error() -> Option<&'static std::io::Error> {
    HUGE_PAGES_ERROR.get()
}

/// The thread that gives back what the workers' collections freed once the purge delay
/// is past; `None` until [`start_purger`] has started it, or where none is needed.
static PURGER: OnceLock<std::thread::Thread> = OnceLock::new();

/// Starts the purger, where mimalloc purges after a delay (not at once, and not never):
/// a thread that sleeps until a collection wakes it (or [`PURGE_AT_LEAST_EVERY`] has
/// passed), waits out the delay, and purges every page freed to mimalloc's arenas by
/// then, whichever thread freed it. Call before the runtime's workers park; a second
/// call does nothing.
pub fn start_purger() -> std::io::Result<()> {
    if PURGER.get().is_some() {
        return Ok(());
    }
    // SAFETY: reads two of mimalloc's options.
    let delay_ms = unsafe {
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)
            .saturating_mul(libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_PURGE_MULT))
    };
    let Ok(delay_ms @ 1..) = u64::try_from(delay_ms) else {
        return Ok(());
    };
    let wait = Duration::from_millis(delay_ms) + PURGE_MARGIN;
    let purger = std::thread::Builder::new()
        .name("farol-purger".into())
        .spawn(move || {
            // SAFETY: gives this thread its heap now: a collection on a thread that has
            // never allocated returns before it purges anything.
            unsafe { libmimalloc_sys::mi_thread_init() };
            loop {
                // a wake that came while the last round slept is kept, not lost
                std::thread::park_timeout(PURGE_AT_LEAST_EVERY);
                std::thread::sleep(wait);
                // SAFETY: collects this thread's own heap (empty) and purges. Forced: it
                // purges every page freed to an arena, its delay past or not (the delay
                // was waited out just now for those the wake was for), and does not
                // depend on mimalloc's process-wide purge deadline, which a race between
                // two threads can leave unset while pages wait (arena.c, v3).
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        })?;
    let _ = PURGER.set(purger.thread().clone());
    Ok(())
}

/// The runtime's `on_thread_park` hook: collects this thread's heap as it goes idle, if
/// it has freed enough since its last collection, or that was long enough ago. A normal
/// (not forced) collect: it frees the thread's empty pages to mimalloc's arena, and wakes
/// the purger to give them back once [`PURGE_DELAY`] is past.
pub fn collect_when_idle() {
    at_park(Instant::now(), || {
        // SAFETY: collects the calling thread's own heap.
        unsafe { libmimalloc_sys::mi_collect(false) };
        if let Some(purger) = PURGER.get() {
            purger.unpark();
        }
    });
}

/// The park hook's decision and action, apart from the clock and the allocator.
fn at_park(now: Instant, collect: impl FnOnce()) {
    let due = FREED
        .with(|freed| COLLECTED_AT.with(|collected_at| collection_due(freed, collected_at, now)));
    if due {
        collect();
    }
}

/// Whether a thread that has freed `freed` bytes since it collected at `collected_at`
/// should collect `now`; if so, both start again from now.
fn collection_due(freed: &Cell<usize>, collected_at: &Cell<Option<Instant>>, now: Instant) -> bool {
    let due = freed.get() >= COLLECT_AFTER_FREED
        || collected_at
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_AT_LEAST_EVERY);
    if due {
        freed.set(0);
        collected_at.set(Some(now));
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alignments from 1 byte to 128 KiB (past which mimalloc goes to the OS), on sizes
    /// around its size classes, its 1 KiB small-block limit and its huge blocks, several
    /// blocks of each: the 8-byte class puts every other block off 16 bytes, so a
    /// 16-byte alignment passed to `mi_malloc` fails on blocks of 1 to 8 bytes.
    #[test]
    fn mimalloc_gives_each_block_its_alignment_contents_and_zeroes() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096, 1 << 17] {
            for size in [
                1,
                7,
                8,
                24,
                40,
                100,
                1000,
                1025,
                1536,
                3000,
                8192,
                70_000,
                600_000,
                3 << 20,
            ] {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                let count = if size > 100_000 || align > 4096 {
                    4
                } else {
                    64
                };
                let blocks: Vec<*mut u8> = (0..count)
                    .map(|i| {
                        // SAFETY: a layout of a nonzero size.
                        let block = unsafe {
                            if i % 2 == 0 {
                                Mimalloc.alloc(layout)
                            } else {
                                Mimalloc.alloc_zeroed(layout)
                            }
                        };
                        assert!(!block.is_null(), "{layout:?}");
                        assert_eq!(block.addr() % align, 0, "{layout:?}, block {i}");
                        if i % 2 == 1 {
                            // SAFETY: `size` bytes of a live block.
                            let bytes = unsafe { std::slice::from_raw_parts(block, size) };
                            assert!(bytes.iter().all(|&b| b == 0), "{layout:?}: zeroed");
                        }
                        // SAFETY: as above, written.
                        unsafe { block.write_bytes(0xA5, size) };
                        block
                    })
                    .collect();
                for block in blocks {
                    let grown = size * 3 + 5;
                    // SAFETY: a live block of `layout`, to a nonzero size.
                    let moved = unsafe { Mimalloc.realloc(block, layout, grown) };
                    assert!(!moved.is_null(), "{layout:?}");
                    assert_eq!(moved.addr() % align, 0, "{layout:?}: realloc");
                    // SAFETY: the first `size` bytes were kept.
                    let kept = unsafe { std::slice::from_raw_parts(moved, size) };
                    assert!(kept.iter().all(|&b| b == 0xA5), "{layout:?}: realloc kept");
                    let grown = Layout::from_size_align(grown, align).expect("a valid layout");
                    let shrunk = size / 2 + 1;
                    // SAFETY: the live block, with its layout, to a nonzero size.
                    let kept = unsafe { Mimalloc.realloc(moved, grown, shrunk) };
                    assert!(!kept.is_null(), "{layout:?}");
                    assert_eq!(kept.addr() % align, 0, "{layout:?}: shrunk");
                    // SAFETY: the first `shrunk` bytes, written before, were kept.
                    let bytes = unsafe { std::slice::from_raw_parts(kept, shrunk) };
                    assert!(bytes.iter().all(|&b| b == 0xA5), "{layout:?}: shrink kept");
                    let shrunk = Layout::from_size_align(shrunk, align).expect("a valid layout");
                    // SAFETY: the live block, with its layout.
                    unsafe { Mimalloc.dealloc(kept, shrunk) };
                }
            }
        }
    }

    #[test]
    fn a_collection_is_due_once_enough_is_freed_and_then_counts_again() {
        let now = Instant::now();
        let freed = Cell::new(COLLECT_AFTER_FREED - 1);
        let collected_at = Cell::new(Some(now));
        assert!(
            !collection_due(&freed, &collected_at, now),
            "just under the threshold"
        );
        assert_eq!(
            freed.get(),
            COLLECT_AFTER_FREED - 1,
            "a skip keeps the count"
        );
        freed.set(COLLECT_AFTER_FREED);
        let later = now + Duration::from_millis(1);
        assert!(
            collection_due(&freed, &collected_at, later),
            "at the threshold"
        );
        assert_eq!(freed.get(), 0, "a collection starts the count again");
        assert_eq!(collected_at.get(), Some(later), "and the clock");
        assert!(!collection_due(&freed, &collected_at, later));
    }

    #[test]
    fn a_collection_is_due_once_long_enough_has_passed_however_little_was_freed() {
        let now = Instant::now();
        let freed = Cell::new(0);
        assert!(
            collection_due(&freed, &Cell::new(None), now),
            "a thread that never collected"
        );
        let collected_at = Cell::new(Some(now));
        let almost = now + COLLECT_AT_LEAST_EVERY - Duration::from_millis(1);
        assert!(!collection_due(&freed, &collected_at, almost));
        let then = now + COLLECT_AT_LEAST_EVERY;
        assert!(collection_due(&freed, &collected_at, then));
        assert_eq!(collected_at.get(), Some(then));
    }

    #[test]
    fn the_park_hook_collects_when_due_and_only_then() {
        std::thread::spawn(|| {
            let collections = Cell::new(0);
            let collect = || collections.set(collections.get() + 1);
            let start = Instant::now();
            at_park(start, collect);
            assert_eq!(collections.get(), 1, "a first park collects");
            FREED.set(10);
            at_park(start + Duration::from_millis(1), collect);
            assert_eq!(collections.get(), 1, "10 bytes a moment after a collection");
            assert_eq!(FREED.get(), 10);
            FREED.set(COLLECT_AFTER_FREED);
            at_park(start + Duration::from_millis(2), collect);
            assert_eq!(collections.get(), 2, "the threshold reached");
            assert_eq!(FREED.get(), 0);
            at_park(
                start + Duration::from_millis(2) + COLLECT_AT_LEAST_EVERY,
                collect,
            );
            assert_eq!(collections.get(), 3, "nothing freed, but a second since");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_start_up_check_sees_an_allocator_that_does_not_count() {
        // The unit tests' global allocator is the system's, not `Allocator`: `configure`
        // must find that out, whatever the flag said before.
        COUNTING.store(true, Ordering::Relaxed);
        configure();
        assert!(allocator_not_counting());
    }

    #[test]
    fn the_allocator_counts_what_this_thread_frees() {
        // A thread of its own: the count is per thread, and the test harness's own
        // allocations on this one would not go through `Allocator` anyway.
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(4096, 8).unwrap();
            let before = FREED.get();
            // SAFETY: a block allocated with `layout` is freed with it, once.
            unsafe {
                let block = Allocator.alloc(layout);
                assert!(!block.is_null());
                let grown = Allocator.realloc(block, layout, 8192);
                assert!(!grown.is_null());
                Allocator.dealloc(grown, Layout::from_size_align(8192, 8).unwrap());
            }
            assert_eq!(
                FREED.get() - before,
                4096 + 8192,
                "the realloc's old size and the free"
            );
        })
        .join()
        .unwrap();
    }
}
