//! New notes inserted together. Most of what PostgreSQL spends on a one-row `INSERT` is
//! the statement's (its round trip, the executor, the commit), not the row's: with eight
//! rows a statement it wrote about four times the notes per second of one row a statement
//! (docs/benchmarks.md). So the creates that arrive while [`MAX_STATEMENTS`] inserts are
//! already running wait in a queue, and the next statement takes all of them, up to
//! [`MAX_ROWS`]. At low load a statement finds one note queued and sends it as before; a
//! note is never held back to wait for others.
//!
//! Each create is answered only after the statement's commit, as before. A statement runs
//! in a task of its own, so that a client that goes away does not take its neighbours'
//! notes with it; once every client of a statement has gone, the statement is dropped,
//! which cancels it as any abandoned statement is (`db::abandon`). A failure is every
//! note's, but a query error may be one row's (two notes with one id): then each note is
//! inserted again on its own, and gets its own answer. Creates with an idempotency key
//! are not batched: their statement reads the key's note back when it exists.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use opentelemetry::Context;
use opentelemetry::context::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use super::store::{self, Created};
use super::{Note, NoteContent};
use crate::db::outage::ReasonLog;
use crate::db::{Database, DbError, describe};

/// Insert statements running at once, at most (and no more than the pool's connections).
/// A few keep the database's cores busy (on the benchmark's two cores, 4 clients wrote
/// more one-row inserts than 16); more would only make each statement smaller.
pub const MAX_STATEMENTS: usize = 4;
/// Notes in one statement at most: 64 bodies of 10,000 characters are well under a MiB.
pub const MAX_ROWS: usize = 64;

/// The queue of creates and the statements that drain it. Cheap to clone.
#[derive(Clone)]
pub struct Inserts(Arc<Shared>);

struct Shared {
    db: Database,
    queue: Mutex<Vec<Pending>>,
    statements: Arc<Semaphore>,
    /// Whether to carry each create's trace context to its statement.
    traced: bool,
    /// Why statements of several notes were refused, logged at most once per reason
    /// and interval: a statement that fails every time (a schema farol does not expect)
    /// must not go unseen behind the one-note inserts that then succeed.
    refusals: ReasonLog,
}

/// A create waiting for its statement.
struct Pending {
    id: Uuid,
    content: NoteContent,
    answer: oneshot::Sender<Result<Note, DbError>>,
    context: Option<Context>,
    queued_at: Instant,
}

impl Inserts {
    /// `pool_max`: the pool's connections (`DB_POOL_MAX`); `traced`: whether traces are
    /// exported.
    pub fn new(db: Database, pool_max: usize, traced: bool) -> Self {
        Self(Arc::new(Shared {
            db,
            queue: Mutex::new(Vec::new()),
            statements: Arc::new(Semaphore::new(MAX_STATEMENTS.min(pool_max).max(1))),
            traced,
            refusals: ReasonLog::default(),
        }))
    }

    /// Creates a note under `id` (see [`store::insert`]); with an idempotency `key`, on a
    /// statement of its own ([`store::create_keyed`]).
    pub async fn create(
        &self,
        id: Uuid,
        content: NoteContent,
        key: Option<&str>,
    ) -> Result<Created, DbError> {
        if let Some(key) = key {
            return store::create_keyed(&self.0.db, id, &content, key).await;
        }
        let (answer, answered) = oneshot::channel();
        let context = self.0.traced.then(Context::current);
        self.0.queue(Pending {
            id,
            content,
            answer,
            context,
            queued_at: Instant::now(),
        });
        self.0.clone().start_statement();
        match answered.await {
            Ok(result) => result.map(Created::New),
            // The statement's task ended without an answer (it panicked): the note may
            // have been made.
            Err(_) => Err(DbError::Unavailable {
                reason: "the insert's statement ended without an answer".into(),
                broke_established: false,
                unanswered: true,
            }),
        }
    }
}

impl Shared {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // nothing that holds the lock can panic half way: a poisoned queue is whole
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a create. A request that ends (its client gone, its time up) leaves its
    /// create queued until a statement takes the queue; so that a database that holds
    /// every statement does not let those pile up, a queue already longer than a
    /// statement takes is first rid of them.
    fn queue(&self, pending: Pending) {
        let mut queue = self.lock_queue();
        if queue.len() >= MAX_ROWS {
            queue.retain(|queued| !queued.answer.is_closed());
        }
        queue.push(pending);
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
            let batch = self.take();
            if batch.is_empty() {
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
            self.insert(batch).await;
        }
    }

    /// Up to [`MAX_ROWS`] creates from the queue, oldest first, leaving out those whose
    /// client has gone. A create queued for longer than the query timeout is answered
    /// `Busy` instead, as a wait for a pool slot that long would be: a statement that
    /// holds the database does not hold every create behind it to the request's own
    /// time limit.
    fn take(&self) -> Vec<Pending> {
        let waited_too_long =
            |pending: &Pending| pending.queued_at.elapsed() > self.db.query_timeout();
        let (taken, stale) = {
            let mut queue = self.lock_queue();
            queue.retain(|pending| !pending.answer.is_closed());
            let stale = queue
                .iter()
                .take_while(|pending| waited_too_long(pending))
                .count();
            let stale: Vec<Pending> = queue.drain(..stale).collect();
            let taken = queue.len().min(MAX_ROWS);
            let rest = queue.split_off(taken);
            (std::mem::replace(&mut *queue, rest), stale)
        };
        for pending in stale {
            let _ = pending.answer.send(Err(DbError::Busy));
        }
        taken
    }

    async fn insert(&self, batch: Vec<Pending>) {
        let context = batch.iter().find_map(|pending| pending.context.clone());
        let (notes, mut answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|pending| ((pending.id, pending.content), pending.answer))
            .unzip();
        let statement = async {
            match context {
                Some(context) => self.statement(&notes).with_context(context).await,
                None => self.statement(&notes).await,
            }
        };
        // Dropping the statement cancels it: done once no client waits for its answer.
        let outcome = {
            let everyone_gone = async {
                for answer in &mut answers {
                    answer.closed().await;
                }
            };
            tokio::select! {
                outcome = statement => Some(outcome),
                () = everyone_gone => None,
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
                // A query error, perhaps one note's: each on its own statement.
                None if notes.len() > 1 => {
                    if let DbError::Query(refusal) = &error {
                        let reason = describe(refusal);
                        if self.refusals.should_log(&reason) {
                            tracing::warn!(
                                error = %reason,
                                notes = notes.len(),
                                "a statement of several notes was refused; each is inserted on its own"
                            );
                        }
                    }
                    for ((id, content), answer) in notes.iter().zip(answers) {
                        if !answer.is_closed() {
                            let _ = answer.send(store::insert(&self.db, *id, content).await);
                        }
                    }
                }
                None => {
                    if let Some(answer) = answers.pop() {
                        let _ = answer.send(Err(error));
                    }
                }
            },
        }
    }

    /// One statement for `notes`: the one-note insert for one.
    async fn statement(&self, notes: &[(Uuid, NoteContent)]) -> Result<Vec<Note>, DbError> {
        if let [(id, content)] = notes {
            return store::insert(&self.db, *id, content)
                .await
                .map(|note| vec![note]);
        }
        let notes: Vec<(Uuid, &NoteContent)> =
            notes.iter().map(|(id, content)| (*id, content)).collect();
        store::insert_many(&self.db, &notes).await
    }
}

/// Each create gets its own note back; one the statement did not return, a `NoRow`.
fn answer_each(
    notes: &[(Uuid, NoteContent)],
    answers: Vec<oneshot::Sender<Result<Note, DbError>>>,
    mut made: Vec<Note>,
) {
    for ((id, _), answer) in notes.iter().zip(answers) {
        let result = match made.iter().position(|note| note.id == *id) {
            Some(index) => Ok(made.swap_remove(index)),
            None => Err(DbError::NoRow("insert_notes")),
        };
        let _ = answer.send(result);
    }
}
