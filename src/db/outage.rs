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

/// Whether the database is reachable, and what its changing is worth a line of (see the
/// module's documentation). The flag and the last line change together, one change at a
/// time: two requests that end at once, one failed and one answered, could otherwise
/// leave the flag saying up and the log's last line saying down.
#[derive(Default)]
pub struct OutageLog {
    /// The database answered the last operation (whatever it said).
    up: AtomicBool,
    /// Whether the last line about the database's reachability said it was reachable.
    said_up: AtomicBool,
    /// Held while the flag changes and its line is written; it holds when "database
    /// became unreachable" was last written.
    changing: Mutex<Option<Instant>>,
    reasons: ReasonLog,
}

/// The line a failure to reach the database is worth.
#[derive(Debug, PartialEq, Eq)]
pub enum DownLine {
    /// "database became unreachable": it was up, and no such line was written lately.
    BecameUnreachable,
    /// "database unreachable": a reason not logged lately.
    Unreachable,
}

impl OutageLog {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The database answered: `write` writes "database reachable", called when the last
    /// line said otherwise or none was written yet (the first connection).
    pub fn up(&self, write: impl FnOnce()) {
        // Plain loads first: every query reports here, and a lock or a read-modify-write
        // per query would bounce a cache line between cores for what rarely changes.
        if self.up.load(Ordering::Relaxed) && self.said_up.load(Ordering::Relaxed) {
            return;
        }
        let _one_change_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        self.up.store(true, Ordering::Relaxed);
        if !self.said_up.swap(true, Ordering::Relaxed) {
            write();
        }
    }

    /// The database could not be reached, for `reason`: `write` writes the line that is
    /// worth, if any.
    pub fn down(&self, reason: &str, write: impl FnOnce(DownLine)) {
        self.down_at(reason, Instant::now(), write);
    }

    fn down_at(&self, reason: &str, now: Instant, write: impl FnOnce(DownLine)) {
        let mut last_edge = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let was_up = self.up.swap(false, Ordering::Relaxed);
        let edge_due = last_edge.is_none_or(|at| now.duration_since(at) >= REPEAT_AFTER);
        let line = if was_up && edge_due {
            // a new outage: its reasons show at once, this one in the edge's line
            *last_edge = Some(now);
            self.reasons.clear();
            self.reasons.should_log_at(reason, now);
            DownLine::BecameUnreachable
        } else if self.reasons.should_log_at(reason, now) {
            DownLine::Unreachable
        } else {
            return;
        };
        self.said_up.store(false, Ordering::Relaxed);
        write(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines a run of reachability changes writes: `true` a success, `false` a
    /// failure, each `ms` after the start.
    fn lines(log: &OutageLog, t0: Instant, changes: &[(u64, bool)]) -> Vec<&'static str> {
        let mut written = Vec::new();
        for &(ms, up) in changes {
            if up {
                log.up(|| written.push("reachable"));
            } else {
                log.down_at("refused", t0 + Duration::from_millis(ms), |line| {
                    written.push(match line {
                        DownLine::BecameUnreachable => "became unreachable",
                        DownLine::Unreachable => "unreachable",
                    });
                });
            }
        }
        written
    }

    /// The line `down_at` writes for `reason`, if any.
    fn down_line(log: &OutageLog, reason: &str, now: Instant) -> Option<DownLine> {
        let mut written = None;
        log.down_at(reason, now, |line| written = Some(line));
        written
    }

    /// Whether `up` writes "database reachable".
    fn says_up(log: &OutageLog) -> bool {
        let mut said = false;
        log.up(|| said = true);
        said
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
            down_line(&log, "disk full", t0 + Duration::from_millis(4)),
            Some(DownLine::Unreachable)
        );
        assert!(says_up(&log), "the last line said unreachable");
    }

    #[test]
    fn a_long_outage_logs_its_edge_then_each_reason_once_per_interval() {
        let log = OutageLog::default();
        let t0 = Instant::now();
        assert!(says_up(&log));
        let later = |s| t0 + Duration::from_secs(s);
        let line = |s| down_line(&log, "refused", later(s));
        assert_eq!(line(0), Some(DownLine::BecameUnreachable));
        assert_eq!(line(5), None);
        assert_eq!(line(10), Some(DownLine::Unreachable));
        assert!(says_up(&log));
        assert!(log.is_up());
        assert_eq!(
            line(120),
            Some(DownLine::BecameUnreachable),
            "the next outage's edge"
        );
        assert!(!log.is_up());
    }

    /// Requests that fail and succeed at once, from several threads: however they
    /// interleave, once the database has answered, the last line says it is reachable.
    #[test]
    fn the_last_line_follows_the_flag_whatever_the_interleaving() {
        for _ in 0..50 {
            let log = OutageLog::default();
            let written = Mutex::new(Vec::new());
            std::thread::scope(|threads| {
                for thread in 0..4 {
                    let (log, written) = (&log, &written);
                    threads.spawn(move || {
                        for i in 0..200 {
                            if (i + thread) % 2 == 0 {
                                log.up(|| written.lock().unwrap().push("reachable"));
                            } else {
                                log.down(&format!("reason {}", i % 3), |_| {
                                    written.lock().unwrap().push("down");
                                });
                            }
                        }
                    });
                }
            });
            log.up(|| written.lock().unwrap().push("reachable"));
            assert!(log.is_up());
            assert_eq!(written.lock().unwrap().last(), Some(&"reachable"));
        }
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
