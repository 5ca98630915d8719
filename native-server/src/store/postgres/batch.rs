//! Group commit: the writes that append to an application's change log wait here and go
//! into one transaction per application, each in a savepoint of its own, so that one failing
//! write undoes only itself. The transaction takes the application's `app_seq` row first:
//! every node's batches of one application queue on that row before touching anything else
//! (so two nodes' batches never deadlock), and the row is held once per batch instead of
//! once per write, with one commit, and one WAL flush, for the lot. That is what the SQLite
//! writer does with its groups, and what lets PostgreSQL keep up with it.

use super::{PostgresStore, backend};
use crate::store::{StoreError, StoreResult};
use deadpool_postgres::{Pool, Transaction};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

/// Most writes one transaction takes.
const BATCH_MAX: usize = 256;
/// Writes waiting for a batch; more wait to be queued.
const QUEUE: usize = 4096;

/// What a write tells once its batch is done: its value, or the batch's failure to commit.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A write run inside its batch's transaction: whether it succeeded, and how to answer it.
type Run = Box<dyn for<'t> FnOnce(&'t Transaction<'t>) -> BoxFuture<'t, (bool, Finish)> + Send>;

struct Job {
    app: String,
    run: Run,
    /// Answers a write that never ran (its batch could not start).
    fail: Box<dyn FnOnce(StoreError) + Send>,
}

/// The queue of one store's log writes, and the task that commits them.
#[derive(Clone)]
pub(super) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the committing task on the runtime; it ends when every handle is dropped.
    pub(super) fn start(pool: Pool) -> Batcher {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(commit_batches(pool, queue));
        Batcher { jobs }
    }

    /// Runs `write` in the next batch of `app`'s writes; answers once that batch is
    /// committed (or failed).
    pub(super) async fn write<T, F>(&self, app: &str, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Transaction<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<StoreResult<T>>();
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(answer)));
        let send = |slot: &std::sync::Mutex<Option<oneshot::Sender<StoreResult<T>>>>, r| {
            let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(a) = taken {
                let _ = a.send(r);
            }
        };
        let fail_slot = slot.clone();
        let fail = Box::new(move |e| send(&fail_slot, Err(e)));
        let run: Run = Box::new(move |tx| {
            Box::pin(async move {
                match write(tx).await {
                    Ok(value) => {
                        let finish: Finish = Box::new(move |failed| {
                            send(&slot, failed.map_or(Ok(value), |e| Err(e.again())));
                        });
                        (true, finish)
                    }
                    Err(e) => {
                        let finish: Finish = Box::new(move |_| send(&slot, Err(e)));
                        (false, finish)
                    }
                }
            })
        });
        let job = Job {
            app: app.to_owned(),
            run,
            fail,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL writer stopped".into())
}

async fn commit_batches(pool: Pool, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    // A connection of its own, kept between batches: a batch never waits behind the pool's
    // other users for one.
    let mut conn: Option<deadpool_postgres::Object> = None;
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // One transaction per application, in the order the first of each came.
        while !batch.is_empty() {
            let app = batch[0].app.clone();
            let (mine, rest): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(|j| j.app == app);
            batch = rest;
            if conn.is_none() {
                match pool.get().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        fail_all(mine, &backend(e)).await;
                        continue;
                    }
                }
            }
            if let Some(c) = conn.as_mut()
                && !commit_one_app(c, &app, mine).await
            {
                // A failed connection is dropped; the next batch takes a fresh one.
                conn = None;
            }
        }
    }
}

/// Commits one application's writes; false when the connection failed.
async fn commit_one_app(client: &mut deadpool_postgres::Object, app: &str, jobs: Vec<Job>) -> bool {
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(jobs, &backend(e)).await;
            return false;
        }
    };
    // The application's row first (made if it is the application's first write).
    let locked = async {
        tx.execute(
            "INSERT INTO app_seq(app, seq) VALUES ($1, 0) ON CONFLICT (app) DO NOTHING",
            &[&app],
        )
        .await?;
        tx.execute("SELECT seq FROM app_seq WHERE app = $1 FOR UPDATE", &[&app])
            .await
    }
    .await;
    if let Err(e) = locked {
        fail_all(jobs, &backend(e)).await;
        return false;
    }
    let mut finishes = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.into_iter().enumerate() {
        // One round trip between writes: the last one's savepoint ends (a failed one was
        // rolled back to it already) as the next one's starts; the commit ends the last.
        // A failed savepoint statement leaves the transaction aborted: its commit fails, and
        // every write of the batch with it.
        let start = if i == 0 {
            "SAVEPOINT w"
        } else {
            "RELEASE SAVEPOINT w; SAVEPOINT w"
        };
        // The savepoint goes out with the write's first statements (pipelined).
        let (_, (ok, finish)) = futures_util::join!(tx.batch_execute(start), (job.run)(&tx));
        if !ok {
            let _ = tx.batch_execute("ROLLBACK TO SAVEPOINT w").await;
        }
        finishes.push((ok, finish));
    }
    let committed = tx.commit().await.map_err(backend);
    for (ok, finish) in finishes {
        finish(if ok { committed.as_ref().err() } else { None });
    }
    committed.is_ok()
}

async fn fail_all(jobs: Vec<Job>, error: &StoreError) {
    for job in jobs {
        (job.fail)(error.again());
    }
}

impl PostgresStore {
    /// A write that appends to `app`'s change log, in the next batch of its writes.
    pub(super) async fn log_write<T, F>(&self, app: &str, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Transaction<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + 'static,
    {
        self.batcher.write(app, write).await
    }
}
