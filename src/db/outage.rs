//! Saying why the database cannot be reached, without drowning the logs.
//!
//! A database outage makes every request fail, each with a reason from the driver
//! (refused, TLS, password rejected, `pg_hba.conf`, a timeout). The first of each reason
//! is logged at once, and the same reason again at most once per [`REPEAT_AFTER`]: a new
//! cause shows within the second it appears, an hour-long outage costs a line per reason
//! every ten seconds. The number of reasons remembered is bounded.
//!
//! The edges (reachable, unreachable) are logged at most once per [`REPEAT_AFTER`] too:
//! a database that fails and answers by turns (new connections refused while the
//! established ones still work, a full disk failing the writes while the reads pass)
//! would otherwise write two lines for every request that flips it.

use std::sync::Mutex;
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

    /// Forgets every reason: after a recovery, the next outage's reasons show at once.
    pub fn clear(&self) {
        self.last_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What the database's reachability changing is worth a line of: its edges, each at most
/// once per [`REPEAT_AFTER`], and the reasons it cannot be reached, as [`ReasonLog`] says.
#[derive(Default)]
pub struct OutageLog {
    reasons: ReasonLog,
    edges: ReasonLog,
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
    /// Whether the database coming back is worth "database reachable".
    pub fn on_up(&self) -> bool {
        self.on_up_at(Instant::now())
    }

    /// The line a failure for `reason` is worth; `was_up`: the database was reachable
    /// until now.
    pub fn on_down(&self, reason: &str, was_up: bool) -> DownLine {
        self.on_down_at(reason, was_up, Instant::now())
    }

    fn on_up_at(&self, now: Instant) -> bool {
        self.edges.should_log_at("up", now)
    }

    fn on_down_at(&self, reason: &str, was_up: bool, now: Instant) -> DownLine {
        if was_up && self.edges.should_log_at("down", now) {
            // a new outage: its reasons show at once, this one in the edge's line
            self.reasons.clear();
            self.reasons.should_log_at(reason, now);
            DownLine::BecameUnreachable
        } else if self.reasons.should_log_at(reason, now) {
            DownLine::Unreachable
        } else {
            DownLine::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_that_flips_on_every_request_is_logged_once_per_interval() {
        let log = OutageLog::default();
        let t0 = Instant::now();
        assert_eq!(
            log.on_down_at("refused", true, t0),
            DownLine::BecameUnreachable
        );
        assert!(log.on_up_at(t0 + Duration::from_millis(1)));
        for ms in 2..9_000 {
            let now = t0 + Duration::from_millis(ms);
            assert_eq!(
                log.on_down_at("refused", true, now),
                DownLine::Nothing,
                "{ms} ms"
            );
            assert!(!log.on_up_at(now), "{ms} ms");
        }
        // a new reason shows at once, flipping or not
        let later = t0 + Duration::from_secs(9);
        assert_eq!(
            log.on_down_at("disk full", true, later),
            DownLine::Unreachable
        );
        // an interval on, the edges again, and the outage's reasons anew
        let next = t0 + REPEAT_AFTER;
        assert_eq!(
            log.on_down_at("disk full", true, next),
            DownLine::BecameUnreachable
        );
        assert_eq!(
            log.on_down_at("refused", false, next),
            DownLine::Unreachable
        );
        assert!(log.on_up_at(next + Duration::from_millis(1)));
    }

    #[test]
    fn a_long_outage_logs_its_edge_then_each_reason_once_per_interval() {
        let log = OutageLog::default();
        let t0 = Instant::now();
        assert_eq!(
            log.on_down_at("refused", true, t0),
            DownLine::BecameUnreachable
        );
        assert_eq!(
            log.on_down_at("refused", false, t0 + Duration::from_secs(5)),
            DownLine::Nothing
        );
        assert_eq!(
            log.on_down_at("refused", false, t0 + REPEAT_AFTER),
            DownLine::Unreachable
        );
        assert!(log.on_up_at(t0 + Duration::from_secs(60)));
        assert_eq!(
            log.on_down_at("refused", true, t0 + Duration::from_secs(120)),
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
