//! The timer behind hyper's header read timeout: one per connection, holding one tokio
//! sleep for every request head the connection waits for.
//!
//! hyper asks its timer for a new sleep each time it waits for a request head and drops
//! it once the head is in. With hyper-util's `TokioTimer` each is a boxed tokio sleep,
//! put into the runtime's timer wheel and taken out again (a lock each way): on a
//! keep-alive connection, once per request, for a deadline that almost never comes.
//! Here hyper gets a small handle holding only its deadline, and the connection keeps
//! one tokio sleep. A later deadline does not move it: when the armed sleep fires
//! before the deadline of the head now awaited, it is moved then, at most once per
//! timeout on a busy connection (the wake is spurious if no head is awaited, and
//! harmless). A head is still given exactly its timeout, as with `TokioTimer`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The tokio sleep of one connection, armed at some deadline once a head was awaited.
type Armed = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// A [`Timer`] for one connection's header read timeouts: give each connection its own.
#[derive(Clone, Default)]
pub struct HeadTimer {
    armed: Armed,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadDeadline {
            deadline,
            armed: self.armed.clone(),
        })
    }

    /// tokio's clock, as `TokioTimer`'s: a test with a paused clock moves it.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadDeadline>() {
            Some(mut head) => head.deadline = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// One head's deadline: ready once it has passed.
struct HeadDeadline {
    deadline: Instant,
    armed: Armed,
}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = armed.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // fired for an earlier head: wait on for this one
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }
}

impl Sleep for HeadDeadline {}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Polls `sleep` once, with a waker that does nothing.
    fn is_ready(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        sleep.as_mut().poll(&mut cx).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn each_head_gets_its_own_deadline_from_the_one_sleep() {
        let timer = HeadTimer::default();
        let mut first = timer.sleep(TIMEOUT);
        assert!(!is_ready(&mut first));
        drop(first);
        // the next head, awaited later: the armed sleep fires early for it, and waits on
        tokio::time::advance(TIMEOUT / 2).await;
        let mut second = timer.sleep(TIMEOUT);
        assert!(!is_ready(&mut second));
        tokio::time::advance(TIMEOUT / 2).await;
        assert!(
            !is_ready(&mut second),
            "the first head's deadline is not its own"
        );
        tokio::time::advance(TIMEOUT / 2 - Duration::from_millis(1)).await;
        assert!(!is_ready(&mut second));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(is_ready(&mut second));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_before_the_armed_one_moves_it_and_reset_moves_a_deadline() {
        let timer = HeadTimer::default();
        let mut late = timer.sleep(TIMEOUT * 3);
        assert!(!is_ready(&mut late));
        let mut early = timer.sleep(TIMEOUT);
        assert!(!is_ready(&mut early));
        tokio::time::advance(TIMEOUT).await;
        assert!(is_ready(&mut early));
        timer.reset(&mut early, timer.now() + TIMEOUT);
        assert!(!is_ready(&mut early), "reset to a later deadline");
        tokio::time::advance(TIMEOUT).await;
        assert!(is_ready(&mut early));
        assert!(!is_ready(&mut late));
        tokio::time::advance(TIMEOUT).await;
        assert!(is_ready(&mut late));
    }
}
