//! Saying why the database cannot be reached, without drowning the logs.
//!
//! A database outage makes every request fail, each with a reason from the driver
//! (refused, TLS, password rejected, `pg_hba.conf`, a timeout). The first of each reason
//! is logged at once, and the same reason again at most once per [`REPEAT_AFTER`]: a new
//! cause shows within the second it appears, an hour-long outage costs a line per reason
//! every ten seconds. The number of reasons remembered is bounded.
//!
//! The edge into an outage ("database became unreachable") is logged at most once per
//! [`REPEAT_AFTER`] too, and the recovery ("database reachable") only after a line that
//! said the database was down: a database that fails and answers by turns (new
//! connections refused while the established ones still work) would otherwise write two
//! lines for every request that flips it. A recovery is never left unsaid, so the log
//! never ends on an outage that is over; an outage that begins within 10 s of the last
//! one's edge, for the same reason, may go unsaid that long.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const REPEAT_AFTER: Duration = Duration::from_secs(10);
/// Reasons remembered at most; the oldest is forgotten first.
const REMEMBERED: usize = 16;

#[derive(Default)]
pub struct ReasonLog {
    last_logged: Mutex<Vec<(String, Instant)>>,
}

impl ReasonLog {
    /// Whether `reason` should be logged now, and if so, notes that it was.
    pub fn should_log(&self, reason: &str) -> bool {
        self.should_log_at(reason, Instant::now())
    }

    fn should_log_at(&self, reason: &str, now: Instant) -> bool {
        let mut seen = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
        match seen.iter_mut().find(|(r, _)| r == reason) {
            Some((_, at)) if now.duration_since(*at) < REPEAT_AFTER => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                if seen.len() == REMEMBERED {
                    let oldest = seen
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, at))| *at)
                        .map_or(0, |(i, _)| i);
                    seen.swap_remove(oldest);
                }
                seen.push((reason.to_owned(), now));
                true
            }
        }
    }

    /// Forgets every reason: at the edge of an outage, its reasons show at once.
    pub fn clear(&self) {
        self.last_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What the database's reachability changing is worth a line of (see the module's
/// documentation).
#[derive(Default)]
pub struct OutageLog {
    reasons: ReasonLog,
    /// When "database became unreachable" was last written.
    edges: ReasonLog,
    /// Whether the last line about the database's reachability said it was reachable.
    said_up: AtomicBool,
}

/// The line a failure to reach the database is worth.
#[derive(Debug, PartialEq, Eq)]
pub enum DownLine {
    /// "database became unreachable": it was up, and no such line was written lately.
    BecameUnreachable,
    /// "database unreachable": a reason not logged lately.
    Unreachable,
    Nothing,
}

impl OutageLog {
    /// Whether the database coming back is worth "database reachable": when the last line
    /// said otherwise, or none was written yet (the first connection).
    pub fn on_up(&self) -> bool {
        !self.said_up.swap(true, Ordering::Relaxed)
    }

    /// The line a failure for `reason` is worth; `was_up`: the database was reachable
    /// until now.
    pub fn on_down(&self, reason: &str, was_up: bool) -> DownLine {
        self.on_down_at(reason, was_up, Instant::now())
    }

    fn on_down_at(&self, reason: &str, was_up: bool, now: Instant) -> DownLine {
        let line = if was_up && self.edges.should_log_at("down", now) {
            // a new outage: its reasons show at once, this one in the edge's line
            self.reasons.clear();
            self.reasons.should_log_at(reason, now);
            DownLine::BecameUnreachable
        } else if self.reasons.should_log_at(reason, now) {
            DownLine::Unreachable
        } else {
            return DownLine::Nothing;
        };
        self.said_up.store(false, Ordering::Relaxed);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines a run of reachability changes writes: `true` a success after a failure,
    /// `false` a failure after a success, each `ms` after the start.
    fn lines(log: &OutageLog, t0: Instant, changes: &[(u64, bool)]) -> Vec<&'static str> {
        let mut written = Vec::new();
        for &(ms, up) in changes {
            let now = t0 + Duration::from_millis(ms);
            if up {
                if log.on_up() {
                    written.push("reachable");
                }
            } else {
                match log.on_down_at("refused", true, now) {
                    DownLine::BecameUnreachable => written.push("became unreachable"),
                    DownLine::Unreachable => written.push("unreachable"),
                    DownLine::Nothing => {}
                }
            }
        }
        written
    }

    #[test]
    fn a_database_that_flips_on_every_request_writes_two_lines_each_interval_and_ends_up() {
        let log = OutageLog::default();
        let t0 = Instant::now();
        assert_eq!(
            lines(&log, t0, &[(0, true)]),
            ["reachable"],
            "the first connection"
        );
        let flips: Vec<(u64, bool)> = (1..=19_999).map(|ms| (ms, ms % 2 == 0)).collect();
        assert_eq!(
            lines(&log, t0, &flips),
            [
                "became unreachable",
                "reachable",
                "became unreachable",
                "reachable"
            ],
            "20 s of flips"
        );
    }

    #[test]
    fn a_recovery_soon_after_an_outage_is_written() {
        let log = OutageLog::default();
        let t0 = Instant::now();
        let written = lines(&log, t0, &[(0, true), (3_000, false), (5_000, true)]);
        assert_eq!(written, ["reachable", "became unreachable", "reachable"]);
    }

    #[test]
    fn a_new_reason_shows_at_once_and_the_recovery_after_it() {
        let log = OutageLog::default();
        let t0 = Instant::now();
        lines(&log, t0, &[(0, true), (1, false), (2, true), (3, false)]);
        assert_eq!(
            log.on_down_at("disk full", false, t0 + Duration::from_millis(4)),
            DownLine::Unreachable
        );
        assert!(log.on_up(), "the last line said unreachable");
    }

    #[test]
    fn a_long_outage_logs_its_edge_then_each_reason_once_per_interval() {
        let log = OutageLog::default();
        let t0 = Instant::now();
        assert!(log.on_up());
        assert_eq!(
            log.on_down_at("refused", true, t0),
            DownLine::BecameUnreachable
        );
        let later = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            log.on_down_at("refused", false, later(5)),
            DownLine::Nothing
        );
        assert_eq!(
            log.on_down_at("refused", false, later(10)),
            DownLine::Unreachable
        );
        assert!(log.on_up());
        assert_eq!(
            log.on_down_at("refused", true, later(120)),
            DownLine::BecameUnreachable,
            "the next outage's edge"
        );
    }

    #[test]
    fn each_reason_once_per_interval_and_a_new_one_at_once() {
        let log = ReasonLog::default();
        let t0 = Instant::now();
        assert!(log.should_log_at("refused", t0));
        assert!(!log.should_log_at("refused", t0 + Duration::from_secs(9)));
        assert!(log.should_log_at("password rejected", t0 + Duration::from_secs(9)));
        assert!(log.should_log_at("refused", t0 + REPEAT_AFTER));
        log.clear();
        assert!(log.should_log_at("refused", t0 + REPEAT_AFTER));
    }

    #[test]
    fn memory_is_bounded_whatever_the_reasons() {
        let log = ReasonLog::default();
        let t0 = Instant::now();
        for n in 0..1000 {
            assert!(log.should_log_at(&format!("reason {n}"), t0 + Duration::from_millis(n)));
        }
        assert_eq!(log.last_logged.lock().unwrap().len(), REMEMBERED);
    }
}
