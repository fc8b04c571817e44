//! New notes inserted together. Most of what PostgreSQL spends on a one-row `INSERT` is
//! the statement's (its round trip, the executor, the commit), not the row's: with eight
//! rows a statement pgbench wrote about four times the notes per second of one row a
//! statement (docs/benchmarks.md). So the creates that arrive while [`MAX_STATEMENTS`]
//! inserts are already running wait in a queue, and the next statement takes all of
//! them, up to [`MAX_ROWS`]. At low load a statement finds one create queued and sends
//! it as before; a create is never held back to wait for others.
//!
//! Each create is answered only after the statement's commit, as before. A statement runs
//! in a task of its own, so that a client that goes away does not take its neighbours'
//! notes with it; once every client of a statement has gone, the statement is dropped,
//! and settled as any abandoned statement is (`db::abandon`: cancelled unless it ends
//! soon by itself). A failure is every
//! note's, but a query error may be one row's (a trigger, a constraint): then each note
//! is inserted again on its own, and gets its own answer. A create waits in the queue at
//! most `DB_QUERY_TIMEOUT_MS`, as it would wait for a pool slot, and is then answered
//! busy (or unavailable, while the database is): it was never sent. Creates with an
//! idempotency key are not batched: their statement reads the key's note back.
//!
//! A note can outlive its request (a client gone while it waits in the queue, or while
//! its statement runs for others): what accounts for its memory ([`Held`], the request
//! body's charge on the payload budget) goes with it, and is given back when the note
//! is dropped, not when its request ends.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::join_all;
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt as _;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
// tokio's clock, which the queue's own time bound (`tokio::time::timeout`) is on
use tokio::time::Instant;
use uuid::Uuid;

use super::store::{self, Created};
use super::{Note, NoteContent};
use crate::db::outage::ReasonLog;
use crate::db::{Database, DbError, describe};
use crate::telemetry::traces::in_context;

/// Insert statements running at once, at most (and no more than the pool's connections).
/// Each more makes every statement smaller, and a statement costs the database about
/// what six rows do (pgbench, docs/benchmarks.md): on the benchmark's two cores, farol
/// with 2 made 1.26 times the creates of farol with 4, and 1 no fewer than 2 at 32
/// connections (docs/benchmarks.md). Not 1: a statement held on a stalled connection
/// would then hold every create until its query timeout.
pub const MAX_STATEMENTS: usize = 2;
/// Notes in one statement at most: 64 bodies of 10,000 characters are 2.6 MB at most in
/// UTF-8, bounded like the requests that carry them.
pub const MAX_ROWS: usize = 64;

/// The queue of creates and the statements that drain it. Cheap to clone.
#[derive(Clone)]
pub struct Inserts(Arc<Shared>);

struct Shared {
    db: Database,
    queue: Mutex<Vec<Pending>>,
    /// `farol_note_inserts_queued`: the queue's length.
    queued: IntGauge,
    statements: Arc<Semaphore>,
    /// Whether to carry each create's trace context to its statement.
    traced: bool,
    /// Why statements of several notes were refused, logged at most once per reason and
    /// interval: a statement that fails every time (a schema farol does not expect) must
    /// not go unseen behind the one-note inserts that then succeed.
    refusals: ReasonLog,
}

type Answer = oneshot::Sender<Result<Note, DbError>>;

/// What accounts for a note's memory, kept as long as the note is: the caller keeps its
/// own share until it answers.
pub type Held = Arc<dyn Send + Sync>;

/// A create waiting for its statement.
struct Pending {
    id: Uuid,
    content: NoteContent,
    answer: Answer,
    context: Option<Context>,
    queued_at: Instant,
    held: Held,
}

/// A create taken into a statement.
struct Taken {
    id: Uuid,
    content: NoteContent,
    context: Option<Context>,
    queued_at: Instant,
    _held: Held,
}

impl Inserts {
    /// `pool_max`: the pool's connections (`DB_POOL_MAX`); `queued`: the gauge of the
    /// queue's length; `traced`: whether traces are exported.
    pub fn new(db: Database, pool_max: usize, queued: IntGauge, traced: bool) -> Self {
        Self(Arc::new(Shared {
            db,
            queue: Mutex::new(Vec::new()),
            queued,
            statements: Arc::new(Semaphore::new(MAX_STATEMENTS.min(pool_max).max(1))),
            traced,
            refusals: ReasonLog::default(),
        }))
    }

    /// Creates a note under `id` (see [`store::insert`]); with an idempotency `key`, on a
    /// statement of its own ([`store::create_keyed`]). `held` is kept as long as the note
    /// is, even past this call (a client gone).
    pub async fn create(
        &self,
        id: Uuid,
        content: NoteContent,
        key: Option<&str>,
        held: Held,
    ) -> Result<Created, DbError> {
        if let Some(key) = key {
            return store::create_keyed(&self.0.db, id, &content, key).await;
        }
        let (answer, mut answered) = oneshot::channel();
        let context = self.0.traced.then(Context::current);
        self.0.queue(Pending {
            id,
            content,
            answer,
            context,
            queued_at: Instant::now(),
            held,
        });
        self.0.clone().start_statement();
        let answer = match tokio::time::timeout(self.0.db.query_timeout(), &mut answered).await {
            Ok(answer) => answer,
            Err(_) if self.0.withdraw(id) => return Err(self.0.no_statement_in_time()),
            // taken meanwhile: its statement has a time bound of its own
            Err(_) => answered.await,
        };
        match answer {
            Ok(result) => result.map(Created::New),
            // The statement's task panicked (logged there): the note may have been made.
            Err(_) => Err(DbError::Unavailable {
                reason: "the statement inserting the note failed without an answer".into(),
                broke_established: false,
                unanswered: true,
            }),
        }
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Vec<Pending>> {
        // nothing that holds the lock can panic half way: a poisoned queue is whole
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a create. A request that ends (its client gone) leaves its create queued
    /// until a statement takes the queue or its wait ends; so that a database that holds
    /// every statement does not let those pile up, a queue longer than a statement
    /// takes is first rid of them.
    fn queue(&self, pending: Pending) {
        let mut queue = self.lock_queue();
        if queue.len() >= MAX_ROWS {
            queue.retain(|queued| !queued.answer.is_closed());
        }
        queue.push(pending);
        self.queued.set(queue.len() as i64);
    }

    /// Takes the create `id` out of the queue: whether it was still there.
    fn withdraw(&self, id: Uuid) -> bool {
        let mut queue = self.lock_queue();
        let Some(place) = queue.iter().position(|pending| pending.id == id) else {
            return false;
        };
        queue.remove(place);
        self.queued.set(queue.len() as i64);
        true
    }

    /// Why a create waited its whole time in the queue: every statement busy, as a pool
    /// slot that never came free is; or, while the database is unreachable, that.
    fn no_statement_in_time(&self) -> DbError {
        if self.db.is_reachable() {
            DbError::Busy
        } else {
            DbError::Unavailable {
                reason: "no insert statement could start while the database is unreachable".into(),
                broke_established: false,
                unanswered: false,
            }
        }
    }

    /// Starts a statement's task unless [`MAX_STATEMENTS`] run: a running one takes what
    /// is queued when it ends.
    fn start_statement(self: Arc<Self>) {
        if let Ok(permit) = self.statements.clone().try_acquire_owned() {
            tokio::spawn(self.drain(permit));
        }
    }

    /// Inserts what is queued, statement after statement, until the queue is empty.
    async fn drain(self: Arc<Self>, mut permit: OwnedSemaphorePermit) {
        loop {
            let (notes, answers) = self.take();
            if notes.is_empty() {
                drop(permit);
                // A create queued after `take`, whose own start found every permit
                // taken, is this task's to insert: it pushed before trying, and the
                // permit is given back before this look.
                if self.lock_queue().is_empty() {
                    return;
                }
                match self.statements.clone().try_acquire_owned() {
                    Ok(again) => permit = again,
                    Err(_) => return, // another task holds the permit and will see it
                }
                continue;
            }
            let count = notes.len();
            // A panic answers this statement's creates "unknown" (their answers are
            // dropped); the task goes on with the queue.
            if let Err(panic) = AssertUnwindSafe(self.insert(notes, answers))
                .catch_unwind()
                .await
            {
                let message = crate::telemetry::panic_message(&*panic);
                tracing::error!(
                    notes = count,
                    panic = %message,
                    "the statement inserting notes panicked: their creates are answered as unknown"
                );
            }
        }
    }

    /// Up to [`MAX_ROWS`] creates from the queue, oldest first, leaving out those whose
    /// client has gone.
    fn take(&self) -> (Vec<Taken>, Vec<Answer>) {
        let taken = {
            let mut queue = self.lock_queue();
            queue.retain(|pending| !pending.answer.is_closed());
            let taken = queue.len().min(MAX_ROWS);
            let rest = queue.split_off(taken);
            let taken = std::mem::replace(&mut *queue, rest);
            self.queued.set(queue.len() as i64);
            taken
        };
        taken
            .into_iter()
            .map(|pending| {
                let note = Taken {
                    id: pending.id,
                    content: pending.content,
                    context: pending.context,
                    queued_at: pending.queued_at,
                    _held: pending.held,
                };
                (note, pending.answer)
            })
            .unzip()
    }

    async fn insert(&self, notes: Vec<Taken>, mut answers: Vec<Answer>) {
        // The statement's span goes to the first sampled create's trace.
        let context = notes
            .iter()
            .filter_map(|note| note.context.as_ref())
            .find(|context| context.span().span_context().is_sampled())
            .cloned();
        // Dropping the statement cancels it: done once no client waits for its answer.
        let outcome = {
            let everyone_gone = async {
                for answer in &mut answers {
                    answer.closed().await;
                }
            };
            tokio::select! {
                biased;
                () = everyone_gone => None,
                outcome = in_context(context, self.statement(&notes)) => Some(outcome),
            }
        };
        match outcome {
            None => {}
            Some(Ok(made)) => answer_each(&notes, answers, made),
            Some(Err(error)) => match error.for_another_caller() {
                Some(_) => {
                    for answer in answers {
                        let copy = error.for_another_caller().expect("copied above");
                        let _ = answer.send(Err(copy));
                    }
                }
                // A query error, perhaps one note's: each on its own statement, all at
                // once (one after the other, the last would wait for every other).
                None if notes.len() > 1 => {
                    self.log_refusal(&error, notes.len());
                    let alone = notes
                        .iter()
                        .zip(answers)
                        .map(|(note, answer)| self.insert_alone(note, answer));
                    join_all(alone).await;
                }
                None => {
                    if let Some(answer) = answers.pop() {
                        let _ = answer.send(Err(error));
                    }
                }
            },
        }
    }

    /// One statement for `notes`: the one-note insert for one. Its wait for a pool slot
    /// is what is left of the query timeout after the oldest note's wait in the queue:
    /// the two are one wait for a connection, which the request's time limit counts once.
    async fn statement(&self, notes: &[Taken]) -> Result<Vec<Note>, DbError> {
        let oldest = notes.iter().map(|note| note.queued_at).min();
        let slot_wait = oldest.map_or(Duration::ZERO, |oldest| self.left_of_wait(oldest));
        if let [note] = notes {
            return store::insert(&self.db, note.id, &note.content, slot_wait)
                .await
                .map(|note| vec![note]);
        }
        let notes: Vec<(Uuid, &NoteContent)> =
            notes.iter().map(|note| (note.id, &note.content)).collect();
        store::insert_many(&self.db, &notes, slot_wait).await
    }

    /// What is left of the query timeout for a create queued at `queued_at` to wait for a
    /// pool slot (nothing: only a free one will do).
    fn left_of_wait(&self, queued_at: Instant) -> Duration {
        self.db.query_timeout().saturating_sub(queued_at.elapsed())
    }

    /// A note of a refused statement, on its own, in its own trace, cancelled if its
    /// client goes away meanwhile.
    async fn insert_alone(&self, note: &Taken, mut answer: Answer) {
        if answer.is_closed() {
            return;
        }
        let slot_wait = self.left_of_wait(note.queued_at);
        let alone = in_context(
            note.context.clone(),
            store::insert(&self.db, note.id, &note.content, slot_wait),
        );
        tokio::select! {
            biased;
            () = answer.closed() => {}
            result = alone => {
                let _ = answer.send(result);
            }
        }
    }

    fn log_refusal(&self, error: &DbError, notes: usize) {
        if let DbError::Query(refusal) = error {
            // by SQLSTATE: a message may carry the row's values, a new one each time
            let code = refusal.code().map_or("none", |code| code.code());
            if self.refusals.should_log(code) {
                tracing::warn!(
                    error = %describe(refusal),
                    notes,
                    "a statement of several notes was refused; each is inserted on its own"
                );
            }
        }
    }
}

/// Each create gets its own note back; one the statement did not return, a `NoRow`.
fn answer_each(notes: &[Taken], answers: Vec<Answer>, mut made: Vec<Note>) {
    for (note, answer) in notes.iter().zip(answers) {
        let result = match made.iter().position(|made| made.id == note.id) {
            Some(index) => Ok(made.swap_remove(index)),
            None => Err(DbError::NoRow("insert_notes")),
        };
        let _ = answer.send(result);
    }
}
