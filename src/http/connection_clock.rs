//! One connection's clock: one tokio sleep for every deadline the connection's task
//! waits on, its request heads' (hyper's header read timeout, as its [`Timer`]) and its
//! requests' ([`timeout_at`]).
//!
//! A deadline of its own per wait is dear on a keep-alive connection: hyper asks its
//! timer for a new sleep each time it waits for a request head and drops it once the
//! head is in, and a request's timeout lives as long as the request. With tokio's
//! sleeps each that is polled (the head's always, the request's when its handler has to
//! wait) is put into the runtime's timer wheel and taken out again (a lock each way),
//! once per request, for a deadline that almost never comes. Here each wait holds
//! only its deadline, and the connection keeps one tokio sleep. A later deadline does
//! not move it: when the armed sleep fires before the deadline of a wait still pending,
//! it is moved then, about once per timeout on a busy connection (the wake is
//! spurious if nothing waits, and harmless). An earlier deadline moves it at once. So
//! each wait ends exactly at its deadline, as with its own sleep.
//!
//! A tokio sleep wakes the waker it was last polled with: every wait on one clock must
//! be polled by the connection's own task, as hyper polls the head and the request's
//! future. A future shared with other tasks must not wait on it. And its polls are always
//! kept out of tokio's cooperative budget (tokio's own timeout does so when the future it
//! wraps has spent the budget): a poll refused for want of budget would register nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use tokio::task::coop::unconstrained;

/// One connection's clock: give each connection its own (see the module's header).
#[derive(Clone, Default)]
pub struct ConnectionClock {
    armed: Arc<Mutex<Armed>>,
}

impl ConnectionClock {
    fn armed(&self) -> MutexGuard<'_, Armed> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connection's one sleep, and the waker it was last polled with.
#[derive(Default)]
struct Armed {
    /// Armed at some deadline once something waited.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Polled again with the same waker, a sleep armed in time needs no poll: it will
    /// wake that task.
    waker: Option<Waker>,
}

impl Armed {
    /// Ready once `deadline` has passed; else the sleep is armed at or before it, to
    /// wake `cx`'s task.
    fn poll_until(&mut self, deadline: tokio::time::Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        } else if !sleep.is_elapsed()
            && self
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        loop {
            // Out of tokio's budget for this turn of the task, a sleep's poll would be
            // refused before it registers anything: the waker kept below would then
            // skip a sleep that wakes no one, and its deadlines would never come (a
            // slow client kept for good). tokio's own timeout polls its sleep outside
            // the budget too, once the future it wraps has spent it.
            match Pin::new(&mut unconstrained(sleep.as_mut())).poll(cx) {
                Poll::Pending => {
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // fired for an earlier deadline: wait on for this one
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }
}

/// A [`timeout_at`] whose deadline passed first.
#[derive(Debug)]
pub struct Elapsed;

/// `future`'s output, or [`Elapsed`] once `deadline` has passed and it is not done:
/// `tokio::time::timeout_at`, on `clock` if given. A request served outside
/// `server::serve` (a test's own server) has no connection clock: its own sleep then.
pub fn timeout_at<F: Future>(
    clock: Option<&ConnectionClock>,
    deadline: tokio::time::Instant,
    future: F,
) -> Timeout<'_, F> {
    let limit = match clock {
        Some(clock) => Limit::Clock(clock, deadline),
        None => Limit::Own(Box::pin(tokio::time::sleep_until(deadline))),
    };
    Timeout { future, limit }
}

enum Limit<'a> {
    Clock(&'a ConnectionClock, tokio::time::Instant),
    Own(Pin<Box<tokio::time::Sleep>>),
}

pin_project_lite::pin_project! {
    /// [`timeout_at`]'s future. A struct that holds `future` in place, not an `async
    /// fn`: a request's future is large, and each `async fn` around it would copy it.
    pub struct Timeout<'a, F> {
        #[pin]
        future: F,
        limit: Limit<'a>,
    }
}

impl<F: Future> Future for Timeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // the future first, as tokio's timeout: done in time is done
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let elapsed = match this.limit {
            Limit::Clock(clock, deadline) => clock.armed().poll_until(*deadline, cx),
            Limit::Own(sleep) => Pin::new(&mut unconstrained(sleep.as_mut())).poll(cx),
        };
        elapsed.map(|()| Err(Elapsed))
    }
}

impl Timer for ConnectionClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadDeadline {
            deadline,
            clock: self.clone(),
        })
    }

    /// tokio's clock, as `TokioTimer`'s: a test with a paused clock moves it.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A request head's deadline, as hyper holds it: ready once it has passed.
struct HeadDeadline {
    deadline: Instant,
    clock: ConnectionClock,
}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        self.clock.armed().poll_until(deadline, cx)
    }
}

impl Sleep for HeadDeadline {}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Polls `sleep` once, with a waker that does nothing.
    fn is_ready(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        sleep.as_mut().poll(&mut cx).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn each_head_gets_its_own_deadline_from_the_one_sleep() {
        let timer = ConnectionClock::default();
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
        let timer = ConnectionClock::default();
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

    #[tokio::test(start_paused = true)]
    async fn a_timeout_ends_at_its_deadline_beside_a_head_wait_and_a_finished_future_is_kept() {
        let clock = ConnectionClock::default();
        let started = tokio::time::Instant::now();
        let done = timeout_at(Some(&clock), started + TIMEOUT, async { 7 }).await;
        assert_eq!(done.unwrap(), 7);
        // a head wait armed first, with a later deadline, in the same task
        let mut head = clock.sleep(TIMEOUT * 2);
        assert!(!is_ready(&mut head));
        let never = timeout_at(
            Some(&clock),
            started + TIMEOUT,
            std::future::pending::<()>(),
        );
        assert!(never.await.is_err());
        assert_eq!(started.elapsed(), TIMEOUT);
        assert!(!is_ready(&mut head));
        let slow = timeout_at(
            Some(&clock),
            started + TIMEOUT * 2,
            tokio::time::sleep(TIMEOUT / 2),
        );
        assert!(slow.await.is_ok(), "done before its deadline");
        assert_eq!(started.elapsed(), TIMEOUT * 3 / 2);
        tokio::time::advance(TIMEOUT / 2).await;
        assert!(is_ready(&mut head));
    }

    /// An inner future that spends the task's whole cooperative budget on its first poll
    /// (as many socket reads in one turn would), then waits for good.
    fn spends_the_budget_once() -> impl Future<Output = ()> {
        let mut first = true;
        std::future::poll_fn(move |cx| {
            if std::mem::take(&mut first) {
                while let Poll::Ready(spent) = tokio::task::coop::poll_proceed(cx) {
                    spent.made_progress();
                }
            }
            Poll::Pending
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_comes_even_when_the_budget_ran_out_before_its_first_poll() {
        let clock = ConnectionClock::default();
        let started = tokio::time::Instant::now();
        let wait = timeout_at(Some(&clock), started + TIMEOUT, spends_the_budget_once());
        let ended = tokio::time::timeout(TIMEOUT * 3, wait).await;
        assert!(ended.expect("woken at its deadline").is_err());
        assert_eq!(started.elapsed(), TIMEOUT);
        // and the next wait on the clock too
        let next = timeout_at(
            Some(&clock),
            started + TIMEOUT * 2,
            std::future::pending::<()>(),
        );
        let ended = tokio::time::timeout(TIMEOUT * 3, next).await;
        assert!(ended.expect("woken at its deadline").is_err());
        assert_eq!(started.elapsed(), TIMEOUT * 2);
    }

    /// The sleep wakes only the waker it was polled with last: a wait from another
    /// waker, even with a later deadline, must poll it again.
    #[tokio::test(start_paused = true)]
    async fn a_wait_with_a_new_waker_is_woken_with_it() {
        let clock = ConnectionClock::default();
        let started = tokio::time::Instant::now();
        let mut other = clock.sleep(TIMEOUT);
        assert!(
            !is_ready(&mut other),
            "armed, to wake a waker that does nothing"
        );
        let wait = timeout_at(
            Some(&clock),
            started + TIMEOUT * 2,
            std::future::pending::<()>(),
        );
        let ended = tokio::time::timeout(TIMEOUT * 3, wait).await;
        assert!(ended.expect("woken at its deadline").is_err());
        assert_eq!(started.elapsed(), TIMEOUT * 2);
    }
}
