//! A server that answers but takes no writes: a standby behind an address that moved, or
//! `default_transaction_read_only` on. For farol that is an outage (writes answer 503,
//! `/health` says down) that reads do not end: only a write that succeeds, or a ping (the
//! background one, or `/health`'s) that finds the server writable, does. Entered and left
//! once each, with a log line each way.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// While the server takes no writes, the pool is emptied at most this often: where no
/// writable server exists yet, emptying it on every failed write would only trade each
/// write's fast 503 for a new connection.
pub const EMPTY_POOL_AFTER: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct ReadOnlyState {
    /// A plain flag for the hot paths (every write, every `/`): most of the time it is
    /// false, and reading it costs no lock.
    set: AtomicBool,
    times: Mutex<Times>,
}

#[derive(Default)]
struct Times {
    /// When the pool was last emptied for this state.
    emptied: Option<Instant>,
    /// When the state last ended: a failure of an operation that began before that
    /// describes a state that is over, and must not start it again.
    left: Option<Instant>,
}

/// What `enter` did, for the caller to log and act on.
#[derive(Debug, PartialEq, Eq)]
pub struct Entered {
    /// The state began now (it was not set): log it.
    pub began: bool,
    /// Empty the pool of the connections opened before the failed operation began.
    pub empty_pool: bool,
}

impl ReadOnlyState {
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Relaxed)
    }

    /// An operation that began at `since` found the server read-only, at `now`.
    pub fn enter(&self, since: Instant, now: Instant) -> Entered {
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if times.left.is_some_and(|left| since < left) {
            return Entered {
                began: false,
                empty_pool: false,
            };
        }
        let began = !self.set.swap(true, Ordering::Relaxed);
        let empty_pool = times
            .emptied
            .is_none_or(|at| now.duration_since(at) >= EMPTY_POOL_AFTER);
        if empty_pool {
            times.emptied = Some(now);
        }
        Entered { began, empty_pool }
    }

    /// The server took a write, or a ping found it writable, at `now`. Whether the state
    /// ended now (it was set): log it.
    pub fn leave(&self, now: Instant) -> bool {
        if !self.is_set() {
            return false;
        }
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if !self.set.swap(false, Ordering::Relaxed) {
            return false;
        }
        times.left = Some(now);
        times.emptied = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entered_once_and_the_pool_emptied_at_most_once_per_interval() {
        let state = ReadOnlyState::default();
        let t0 = Instant::now();
        assert_eq!(
            state.enter(t0, t0),
            Entered {
                began: true,
                empty_pool: true
            }
        );
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            state.enter(soon, soon),
            Entered {
                began: false,
                empty_pool: false
            }
        );
        let later = t0 + EMPTY_POOL_AFTER;
        assert_eq!(
            state.enter(later, later),
            Entered {
                began: false,
                empty_pool: true
            }
        );
        assert!(state.is_set());
    }

    #[test]
    fn left_once_and_a_stale_failure_does_not_start_it_again() {
        let state = ReadOnlyState::default();
        let t0 = Instant::now();
        state.enter(t0, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(state.leave(t1));
        assert!(!state.leave(t1), "left once");
        // a write that began before the server was found writable, failing late
        let stale = state.enter(
            t0 + Duration::from_millis(500),
            t1 + Duration::from_millis(10),
        );
        assert!(!stale.began && !state.is_set());
        // a new failure starts it again, and may empty the pool at once
        let t2 = t1 + Duration::from_millis(20);
        assert_eq!(
            state.enter(t2, t2),
            Entered {
                began: true,
                empty_pool: true
            }
        );
    }
}
