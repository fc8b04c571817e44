//! `/health`'s check: one round trip for the checks that arrive while it is in flight.
//!
//! `/health` answers to anyone, and a round trip of its own per request would let any
//! rate of it take as many pool slots and statements from the API. So a check joins
//! the ping in flight, when there is one, and starts one otherwise: `/health` sends one
//! statement at a time to the database, whatever its rate (a ping that timed out keeps
//! its connection until its cancel settles, while the next may take another). Each check
//! is answered by a round trip that was under way or started when its request came, and
//! that is at most as old as a ping's time bound (a pool slot, then the round trip:
//! twice `DB_QUERY_TIMEOUT_MS`). The ping runs in a task of its own, named
//! `health_check` in the metrics and traces, and runs on to its end (within that bound)
//! when every check waiting for it has gone.

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_util::FutureExt as _;
use opentelemetry::Context;
use tokio::sync::watch;

use super::{Database, DbError};
use crate::telemetry::traces::in_context;

/// What a check found, in `/health`'s fixed vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The database answered and takes writes.
    Up,
    /// No answer within `DB_QUERY_TIMEOUT_MS`.
    Timeout,
    /// No pooled connection free in time: the service is saturated, which is not an
    /// outage.
    Busy,
    /// Unreachable, read-only, or refused the query.
    Down,
}

impl Health {
    fn of(result: &Result<(), DbError>) -> Self {
        match result {
            Ok(()) => Self::Up,
            Err(DbError::Timeout) => Self::Timeout,
            Err(DbError::Busy) => Self::Busy,
            Err(_) => Self::Down,
        }
    }
}

/// The ping in flight, as the checks waiting for it see it: `None` until it ends.
type InFlight = watch::Receiver<Option<Health>>;

/// The check in flight, shared by [`Database::check`]'s callers.
#[derive(Default)]
pub(super) struct SharedCheck(Mutex<Option<InFlight>>);

impl SharedCheck {
    fn slot(&self) -> MutexGuard<'_, Option<InFlight>> {
        // no code that holds the lock leaves the slot half changed: a poisoned one is whole
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Empties the slot when the ping's task ends, however it ends once it has run (answered,
/// panicked, or dropped at shutdown), so that no check can join a ping that will never
/// answer: only while the slot still holds this ping, since a later one may be there by
/// then. (A task dropped before it first runs leaves a closed channel there, which
/// [`Database::check`] takes for an empty slot.)
struct ClearWhenDone<'a> {
    check: &'a SharedCheck,
    answer: watch::Sender<Option<Health>>,
}

impl ClearWhenDone<'_> {
    fn answer(self, health: Health) {
        // Emptied before the answer: a check that comes after it starts a ping of its own.
        self.clear();
        self.answer.send_replace(Some(health));
    }

    fn clear(&self) {
        let mut slot = self.check.slot();
        if slot
            .as_ref()
            .is_some_and(|in_flight| in_flight.same_channel(&self.answer.subscribe()))
        {
            *slot = None;
        }
    }
}

impl Drop for ClearWhenDone<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Database {
    /// The database's health as [`Database::ping`] finds it, one ping for the checks
    /// that wait together (see the module's documentation). The ping's span goes to the
    /// trace of the check that started it; the others' traces have none.
    pub async fn check(&self) -> Health {
        let mut in_flight = {
            let mut slot = self.inner.check.slot();
            match &*slot {
                // its sender gone: a ping that never ran (the slot is emptied before each
                // answer, so a ping that did run is never found closed here)
                Some(in_flight) if in_flight.has_changed().is_ok() => in_flight.clone(),
                _ => {
                    let (answer, in_flight) = watch::channel(None);
                    *slot = Some(in_flight.clone());
                    let context = self.inner.tracer.is_some().then(Context::current);
                    tokio::spawn(self.clone().ping_for_checks(answer, context));
                    in_flight
                }
            }
        };
        match in_flight.wait_for(Option::is_some).await {
            Ok(health) => (*health).unwrap_or(Health::Down),
            Err(_) => {
                // Its task was dropped without an answer (the runtime shutting down; a
                // panic is caught and answered there): it cannot say the database is up.
                tracing::warn!("the health check's ping ended without an answer");
                Health::Down
            }
        }
    }

    async fn ping_for_checks(
        self,
        answer: watch::Sender<Option<Health>>,
        context: Option<Context>,
    ) {
        let done = ClearWhenDone {
            check: &self.inner.check,
            answer,
        };
        let ping = in_context(context, self.ping_as("health_check"));
        let health = match AssertUnwindSafe(ping).catch_unwind().await {
            Ok(result) => Health::of(&result),
            Err(panic) => {
                let message = crate::telemetry::panic_message(&*panic);
                tracing::error!(panic = %message, "the health check's ping panicked");
                Health::Down
            }
        };
        done.answer(health);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(check: &SharedCheck) -> ClearWhenDone<'_> {
        let (answer, in_flight) = watch::channel(None);
        *check.slot() = Some(in_flight);
        ClearWhenDone { check, answer }
    }

    #[test]
    fn a_ping_that_ends_without_answering_leaves_no_check_to_join_it() {
        let check = SharedCheck::default();
        let ping = in_flight(&check);
        let joined = check.slot().clone().unwrap();
        drop(ping); // a panic past the catch, or the runtime shutting down
        assert!(
            check.slot().is_none(),
            "the next check starts a ping of its own"
        );
        assert!(
            joined.has_changed().is_err(),
            "the waiting checks see it gone"
        );
    }

    #[test]
    fn an_answer_reaches_the_checks_that_joined_and_empties_the_slot() {
        let check = SharedCheck::default();
        let ping = in_flight(&check);
        let joined = check.slot().clone().unwrap();
        ping.answer(Health::Busy);
        assert!(check.slot().is_none());
        assert_eq!(*joined.borrow(), Some(Health::Busy));
    }

    #[test]
    fn a_ping_that_ends_leaves_the_next_ones_in_place() {
        let check = SharedCheck::default();
        let (answer, _) = watch::channel(None);
        let ended = ClearWhenDone {
            check: &check,
            answer,
        };
        let next = in_flight(&check);
        let next_in_flight = check.slot().clone().unwrap();
        ended.answer(Health::Up);
        let slot = check.slot().clone().unwrap();
        assert!(
            slot.same_channel(&next_in_flight),
            "not the ended ping's to empty"
        );
        drop(next);
    }
}
