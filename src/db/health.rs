//! `/health`'s check: one round trip for the checks that arrive while it is in flight.
//!
//! `/health` answers to anyone, and a round trip of its own per request would let any
//! rate of it take as many pool slots and statements from the API. So a check joins
//! the ping in flight, when there is one, and starts one otherwise: `/health` puts at
//! most one statement at a time on the database, whatever its rate, and each check is
//! answered by a round trip that was under way or started when its request came and
//! ended after. The ping runs in a task of its own and ends within its query timeout
//! even when every check waiting for it has gone.

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};

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
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<InFlight>> {
        // nothing that holds the lock can panic half way
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Database {
    /// The database's health as [`Database::ping`] finds it, one ping for the checks
    /// that wait together (see the module's documentation). The ping's span goes to the
    /// trace of the check that started it.
    pub async fn check(&self) -> Health {
        let mut in_flight = {
            let mut slot = self.inner.check.slot();
            match &*slot {
                Some(in_flight) => in_flight.clone(),
                None => {
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
            // the ping's task is gone without an answer: it cannot say the database is up
            Err(_) => Health::Down,
        }
    }

    async fn ping_for_checks(
        self,
        answer: watch::Sender<Option<Health>>,
        context: Option<Context>,
    ) {
        let health = match AssertUnwindSafe(in_context(context, self.ping()))
            .catch_unwind()
            .await
        {
            Ok(result) => Health::of(&result),
            Err(panic) => {
                let message = crate::telemetry::panic_message(&*panic);
                tracing::error!(panic = %message, "the health check's ping panicked");
                Health::Down
            }
        };
        // Before the answer: a check that comes after it starts a ping of its own.
        *self.inner.check.slot() = None;
        answer.send_replace(Some(health));
    }
}
