//! Saying why the database cannot be reached, without drowning the logs.
//!
//! A database outage makes every request fail, each with a reason from the driver
//! (refused, TLS, password rejected, `pg_hba.conf`, a timeout). The first of each reason
//! is logged at once, and the same reason again at most once per [`REPEAT_AFTER`]: a new
//! cause shows within the second it appears, an hour-long outage costs a line per reason
//! every ten seconds. The number of reasons remembered is bounded.

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

#[cfg(test)]
mod tests {
    use super::*;

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
