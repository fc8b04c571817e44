//! One policy for waiting on the database, wherever farol waits for it: getting ready
//! (`readiness`) and `farol migrate`. The caller bounds each attempt; between attempts
//! the wait starts at 50 ms and doubles up to 1 s, so a database that comes back is found
//! within a second and one that stays away costs a try a second; each reason is logged
//! when it first appears, then at most once per [`super::outage::REPEAT_AFTER`].

use std::time::Duration;

use super::outage::ReasonLog;

const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);

pub struct Retry {
    delay: Duration,
    failures: u32,
    reasons: ReasonLog,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            delay: FIRST_RETRY,
            failures: 0,
            reasons: ReasonLog::default(),
        }
    }
}

impl Retry {
    /// Attempts that failed so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Notes a failed attempt, logs `message` with its reason when due, and waits before
    /// the next one.
    pub async fn failed(&mut self, reason: String, message: &str) {
        self.failures += 1;
        if self.reasons.should_log(&reason) {
            tracing::warn!(
                attempts = self.failures,
                %reason,
                retry_in_ms = self.delay.as_millis() as u64,
                "{message}"
            );
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_double_from_50_ms_up_to_1_s() {
        let mut retry = Retry::default();
        let mut waits = Vec::new();
        for _ in 0..7 {
            let before = tokio::time::Instant::now();
            retry
                .failed("refused".to_owned(), "database not reachable yet")
                .await;
            waits.push(before.elapsed().as_millis());
        }
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(retry.failures(), 7);
    }
}
