//! Group commit: the writes that append to an application's change log wait here and go
//! into one transaction per application, so that one failing write undoes only itself. Each
//! transaction takes the application's `app_seq` row, which numbers the log, and holds it
//! until its commit: batches of one application, from every node, take turns on that row, so
//! the log becomes visible in its order, without gaps. The row is held once per batch instead
//! of once per write, with one commit, and one WAL flush, for the lot. That is what the
//! SQLite writer does with its groups.
//!
//! When the row is taken depends on the batch:
//! - A batch of new entities without names, the commonest (a chat's messages), inserts them
//!   first and takes the row only to log them and commit, all in one round trip. Their rows
//!   are nobody else's (fresh uuids, no names), so the inserts of several batches, of this
//!   node and of others, run side by side and none waits for another; only the log's appends
//!   and the commits take turns. This node's next batch begins as soon as the last holds the
//!   row, and asks for it only then (`Turn`): one node's batches log in the order they began.
//!   Once it holds the row, the batch takes in the new entities without names of its
//!   application that came while it waited for it ([`take_in`]), and logs them with its own.
//!   The longer the row is contended (another node's batches, a busy database), the more
//!   writes a batch gathers, so the fewer transactions there are per write: with two nodes
//!   and 16 writes in flight, each node's batches would otherwise hold half as many, and the
//!   database does a transaction's work twice as often.
//! - A batch of new entities with names takes the row first, then inserts them, also in one
//!   round trip: two nodes' batches inserting the same name would otherwise each wait for
//!   the other's, while holding their own.
//! - Any other batch takes the row first and runs its writes after it, each in a savepoint of
//!   its own: they read what they change, and a queue's message ids must grow in the log's
//!   order. The batch counts the log's positions itself, from the row's value when it took
//!   it, and writes the row back once, before its commit: a row updated once per write keeps
//!   a chain of versions as long as the batch, which every later update walks (256 appends
//!   took longer than all their writes together). New entities that come one after another
//!   in it go in together, as one statement in one savepoint; if that fails, it is rolled
//!   back to its savepoint and its entities go in again one at a time, each in a savepoint of
//!   its own, so the refused one undoes only itself.
//!
//! A batch of new entities refused on its first try (a name taken) runs again the long way.

use super::{
    LOG_INSERTS_SQL, NewColumns, NewEntity, PostgresStore, backend, insert_in, insert_rows,
    insert_rows_sql, insert_sql, log_inserts, pool_error,
};
use crate::store::{StoreError, StoreResult};
use deadpool_postgres::{Client, Object, Pool};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_postgres::Statement;

/// Most writes one transaction takes.
const BATCH_MAX: usize = 256;
/// Writes waiting for a batch; more wait to be queued.
const QUEUE: usize = 4096;
/// Batches of one node running at once, each on a connection of its own. The next batch
/// begins once the one before it holds the application's `app_seq` row: while that one logs
/// and commits (its WAL flush took 0.43 ms here, a third of a small batch's time), the next
/// inserts its own, and the writes that came meanwhile make it as large as they can (the
/// more writes share a flush, the fewer flushes take turns on the row).
const RUNNING: usize = 4;

/// Runs a write inside its batch's transaction and keeps its outcome; true if it succeeded.
type Run = Box<dyn for<'t> Fn(&'t BatchTx<'t>) -> BoxFuture<'t, bool> + Send + Sync>;
/// Answers a write once its batch is done: its own outcome, unless the batch failed around it.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send + Sync>;

/// A batch's transaction (on the batcher's own connection, begun and ended by the batch),
/// and how many log positions its writes have taken. Positions are the application's
/// `app_seq` value as the batch found it plus an offset, so a write's statements need not
/// wait for the row's value to come back before they go out.
pub(super) struct BatchTx<'t> {
    client: &'t Client,
    taken: AtomicU64,
}

impl BatchTx<'_> {
    /// Takes the log's next `n` positions for the changes a write appends; answers the first's
    /// offset: its position is `app_seq.seq` (unchanged until the batch ends) plus it.
    pub(super) fn take_seqs(&self, n: usize) -> i64 {
        self.taken.fetch_add(n as u64, Ordering::Relaxed) as i64 + 1
    }

    /// The connection the batch's transaction runs on.
    pub(super) fn client(&self) -> &Client {
        self.client
    }

    fn position(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Gives back the positions taken since `position` (their writes were rolled back).
    fn rewind(&self, position: u64) {
        self.taken.store(position, Ordering::Relaxed);
    }
}

impl std::ops::Deref for BatchTx<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

struct Job {
    app: String,
    run: Run,
    finish: Finish,
    /// A new entity's insert, which may go in with its neighbours'.
    insert: Option<Insert>,
}

/// A new entity, and where its insert's outcome goes when it goes in with others.
struct Insert {
    new: Arc<NewEntity>,
    outcome: Outcome<()>,
}

/// A write's outcome, kept until its batch is done.
type Outcome<T> = Arc<Mutex<Option<StoreResult<T>>>>;

fn keep<T>(outcome: &Outcome<T>, result: StoreResult<T>) {
    *outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
}

/// The writes waiting for a batch. The batcher's loop takes them to begin a batch, and a batch
/// of new entities without names that holds its application's row takes in those of its
/// application that came meanwhile ([`take_in`]). Only the holder of the loop's turn to begin
/// a batch reads them, so the lock is never waited for long.
struct Waiting {
    queue: mpsc::Receiver<Job>,
    /// A write taken out by [`take_in`] that was not its batch's: the next to be taken.
    held: Option<Job>,
}

impl Waiting {
    /// The next waiting write, if one is there now.
    fn try_next(&mut self) -> Option<Job> {
        self.held.take().or_else(|| self.queue.try_recv().ok())
    }

    /// The next batch: once there is a write, it and every other waiting now, at most
    /// [`BATCH_MAX`]; `None` once the store is dropped. (Nothing waits after the first is
    /// taken, so a caller that drops this loses no write.)
    async fn next_batch(&mut self) -> Option<Vec<Job>> {
        let first = match self.held.take() {
            Some(job) => job,
            None => self.queue.recv().await?,
        };
        let mut batch = Vec::with_capacity(BATCH_MAX);
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match self.try_next() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        Some(batch)
    }
}

type Shared = Arc<tokio::sync::Mutex<Waiting>>;

/// Takes the new entities without names of `app` from the head of the waiting writes, at
/// most `room`; stops at the first write that is anything else (writes are logged in the
/// order they came, so none may pass another of its application).
async fn take_in(waiting: &Shared, app: &str, room: usize) -> Vec<Job> {
    let mut waiting = waiting.lock().await;
    let mut late = Vec::new();
    while late.len() < room {
        let Some(job) = waiting.try_next() else { break };
        let unnamed = job.insert.as_ref().is_some_and(|i| !i.new.is_named());
        if job.app != app || !unnamed {
            waiting.held = Some(job);
            break;
        }
        late.push(job);
    }
    late
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
        F: for<'t> Fn(&'t BatchTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + Sync + 'static,
    {
        let outcome: Outcome<T> = Arc::default();
        self.queue(app, write, outcome, None).await
    }

    /// Inserts a new entity in the next batch of `app`'s writes, with the new entities
    /// beside it in one statement where it can.
    pub(super) async fn insert(&self, app: &str, new: NewEntity) -> StoreResult<()> {
        let (new, outcome) = (Arc::new(new), Outcome::default());
        let (a, one) = (app.to_owned(), new.clone());
        let insert = Insert {
            new,
            outcome: outcome.clone(),
        };
        self.queue(
            app,
            move |tx| insert_one(tx, a.clone(), one.clone()),
            outcome,
            Some(insert),
        )
        .await
    }

    async fn queue<T, F>(
        &self,
        app: &str,
        write: F,
        outcome: Outcome<T>,
        insert: Option<Insert>,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t BatchTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + Sync + 'static,
    {
        let (answer, answered) = oneshot::channel::<StoreResult<T>>();
        let kept = outcome.clone();
        let run: Run = Box::new(move |tx| {
            let running = write(tx);
            let kept = kept.clone();
            Box::pin(async move {
                let result = running.await;
                let ok = result.is_ok();
                keep(&kept, result);
                ok
            })
        });
        let finish: Finish = Box::new(move |failed| {
            let own = outcome
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let result = match (own, failed) {
                // A refused write was undone alone: its own error is the answer.
                (Some(Err(e)), _) => Err(e),
                (_, Some(e)) => Err(e.again()),
                (Some(Ok(value)), None) => Ok(value),
                (None, None) => Err(stopped()),
            };
            let _ = answer.send(result);
        });
        let job = Job {
            app: app.to_owned(),
            run,
            finish,
            insert,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn insert_one<'t>(
    tx: &'t BatchTx<'t>,
    app: String,
    new: Arc<NewEntity>,
) -> BoxFuture<'t, StoreResult<()>> {
    Box::pin(async move { insert_in(tx, &app, &NewColumns::of(&[&new])).await })
}

fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL writer stopped".into())
}

async fn commit_batches(pool: Pool, queue: mpsc::Receiver<Job>) {
    let waiting: Shared = Arc::new(tokio::sync::Mutex::new(Waiting { queue, held: None }));
    // Connections of the batcher's own, kept between batches: a batch never waits behind the
    // pool's other users for one.
    let mut idle: Vec<Object> = Vec::with_capacity(RUNNING);
    let mut running: JoinSet<Option<Object>> = JoinSet::new();
    // The last batch begun of each application, whose turn the next one waits for.
    let mut turns: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
    // Held by the batch begun last until it holds the row (or ends); the next begins then.
    let next_waits = Arc::new(Semaphore::new(1));
    loop {
        while running.len() >= RUNNING {
            if let Some(done) = running.join_next().await {
                idle.extend(done.ok().flatten());
            }
        }
        let next = tokio::select! {
            permit = next_waits.clone().acquire_owned() => permit,
            Some(done) = running.join_next() => {
                idle.extend(done.ok().flatten());
                continue;
            }
        };
        let Ok(permit) = next else { break };
        let permit = Arc::new(permit);
        let batch = tokio::select! {
            batch = async { waiting.lock().await.next_batch().await } => batch,
            Some(done) = running.join_next() => {
                idle.extend(done.ok().flatten());
                continue;
            }
        };
        let Some(mut batch) = batch else { break };
        if running.is_empty() {
            turns.clear();
        }
        // One transaction per application, begun in the order the first of each came.
        while !batch.is_empty() {
            let app = batch[0].app.clone();
            let (mine, rest): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(|j| j.app == app);
            batch = rest;
            // A kept connection the database or the network closed meanwhile (an outage)
            // is dropped here, not found closed by the next batch's writes.
            idle.retain(|c| !c.is_closed());
            let conn = match idle.pop() {
                Some(c) => c,
                None => match pool.get().await {
                    Ok(c) => c,
                    Err(e) => {
                        fail_all(mine, &pool_error(e));
                        continue;
                    }
                },
            };
            let (mine_taken, taken) = oneshot::channel();
            let turn = Turn {
                before: turns.insert(app.clone(), taken),
                mine: Some(mine_taken),
            };
            // A failed connection is dropped; the next batch takes a fresh one.
            let late_writes = LateWrites {
                waiting: waiting.clone(),
                next_waits: permit.clone(),
            };
            running.spawn(commit_one_app(conn, app, mine, turn, late_writes));
        }
    }
    while running.join_next().await.is_some() {}
}

/// A batch's place among its application's batches on this node. A batch asks for the
/// application's `app_seq` row only once the batch begun before it holds it, so a node's
/// batches of one application take the row, and commit, in the order they were begun (a
/// socket's writes are logged in the order it sent them), while their inserts run side by
/// side.
struct Turn {
    before: Option<oneshot::Receiver<()>>,
    mine: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until the batch before this one holds the row, or has ended.
    async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = before.await;
        }
    }

    /// Lets the next batch ask for the row: this one holds it. Ending does too.
    fn pass(&mut self) {
        if let Some(mine) = self.mine.take() {
            let _ = mine.send(());
        }
    }
}

/// What a batch of new entities without names takes the writes that came meanwhile with.
struct LateWrites {
    waiting: Shared,
    /// Lets the next batch begin once dropped: as soon as this one holds the row and has taken
    /// in what came meanwhile, when it only inserts new entities without names, else when it
    /// ends.
    next_waits: Arc<OwnedSemaphorePermit>,
}

/// Runs one application's writes in a transaction and commits it; gives back the connection
/// unless it failed.
async fn commit_one_app(
    conn: Object,
    app: String,
    mut jobs: Vec<Job>,
    mut turn: Turn,
    late_writes: LateWrites,
) -> Option<Object> {
    let client: &Client = &conn;
    let tx = BatchTx {
        client,
        taken: AtomicU64::new(0),
    };
    // Statements go out when first polled, but one not yet prepared goes out as its Parse
    // alone and the rest of it after the answer: these are prepared (once per connection)
    // before anything is sent, so that each batch's statements reach the database in the
    // order they are written here.
    let statements = futures_util::try_join!(
        client.prepare_cached(
            "INSERT INTO app_seq(app, seq) VALUES ($1, 0) ON CONFLICT (app) DO NOTHING"
        ),
        client.prepare_cached("SELECT 1 FROM app_seq WHERE app = $1 FOR UPDATE"),
        client.prepare_cached("UPDATE app_seq SET seq = seq + $2 WHERE app = $1"),
        client.prepare_cached(insert_sql()),
        client.prepare_cached(insert_rows_sql()),
        client.prepare_cached(LOG_INSERTS_SQL),
    );
    let (make, lock, advance, _, rows, log) = match statements {
        Ok(s) => s,
        Err(e) => {
            fail_all(jobs, &backend(e));
            return None;
        }
    };
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&app];
    if jobs.iter().all(|j| j.insert.is_some()) {
        let new: Vec<&NewEntity> = jobs
            .iter()
            .filter_map(|j| j.insert.as_ref().map(|i| &*i.new))
            .collect();
        let cols = NewColumns::of(&new);
        let (trip, late) = if cols.named() {
            turn.wait().await;
            let trip = one_trip(&tx, &app, [&make, &lock, &advance], &cols, &mut turn).await;
            (trip, Vec::new())
        } else {
            let room = BATCH_MAX.saturating_sub(jobs.len());
            let statements = [&make, &lock, &rows, &log];
            inserts_then_log(&tx, &app, statements, &cols, &mut turn, late_writes, room).await
        };
        drop(cols);
        jobs.extend(late);
        match trip {
            Trip::Committed => {
                for job in jobs {
                    if let Some(insert) = &job.insert {
                        keep(&insert.outcome, Ok(()));
                    }
                    (job.finish)(None);
                }
                return Some(conn);
            }
            // Nothing of it stays: the writes go again, the long way, which finds the
            // refused one and undoes it alone.
            Trip::Refused => tx.rewind(0),
            Trip::Failed(e, alive) => {
                fail_all(jobs, &e);
                return alive.then_some(conn);
            }
        }
    }
    // The long way holds the row from the start: its writes read what they change, and a
    // queue's message ids must grow in the log's order.
    turn.wait().await;
    // The transaction, the application's row (made if this is its first write) and its lock
    // go out with the first writes' statements: the database runs them in order, so they wait
    // for the lock there, and the batch costs no round trip of its own before its writes.
    let lock = async {
        let begin = client.batch_execute("BEGIN");
        let made = client.execute(&make, &key);
        let locked = async {
            let locked = client.execute(&lock, &key).await;
            turn.pass();
            locked
        };
        futures_util::try_join!(begin, made, locked)
    };
    let writes = async {
        let mut savepoint = Savepoint::default();
        let mut rest = jobs.as_slice();
        while let Some(first) = rest.first() {
            let n = match first.insert {
                Some(_) => rest.iter().take_while(|j| j.insert.is_some()).count(),
                None => 1,
            };
            let (group, after) = rest.split_at(n);
            rest = after;
            if n > 1 && savepoint.insert_together(&tx, &app, group).await {
                continue;
            }
            // Alone, or again one by one after its group failed (rolled back to its savepoint).
            for job in group {
                savepoint.run_alone(&tx, job).await;
            }
        }
    };
    let (locked, ()) = futures_util::join!(lock, writes);
    let taken = tx.position() as i64;
    if let Err(e) = locked {
        let failed = backend(e);
        let alive = client.batch_execute("ROLLBACK").await.is_ok();
        fail_all(jobs, &failed);
        return alive.then_some(conn);
    }
    commit(conn, &app, advance, taken, jobs).await
}

/// How a batch sent in one round trip ended.
enum Trip {
    Committed,
    /// A write was refused: the transaction rolled back, and the connection is fine.
    Refused,
    /// The transaction failed around the writes; the connection is alive if true.
    Failed(StoreError, bool),
}

/// Sends a batch of new entities, the row's lock and update and the commit, all at once: the
/// database runs them in order, and a batch costs one round trip instead of two (at depth 1,
/// 16 writers waiting make batches of a few writes, where the round trips are most of the
/// time). A refused insert aborts the transaction, and its COMMIT then rolls back: the
/// caller runs the batch again the long way. This holds the row from the start: for new
/// entities with names, which another node's batch may be inserting too (the two must not
/// each wait for the other's name while holding their own).
async fn one_trip(
    tx: &BatchTx<'_>,
    app: &str,
    [make, lock, advance]: [&tokio_postgres::Statement; 3],
    cols: &NewColumns<'_>,
    turn: &mut Turn,
) -> Trip {
    let n = cols.len() as i64;
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&app];
    let moves: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&app, &n];
    let locked = async {
        let locked = tx.execute(lock, &key).await;
        turn.pass();
        locked
    };
    // Polled in this order, so sent in it: every statement is prepared already.
    let (begun, made, locked, inserted, moved, committed) = futures_util::join!(
        tx.batch_execute("BEGIN"),
        tx.execute(make, &key),
        locked,
        insert_in(tx, app, cols),
        tx.execute(advance, &moves),
        tx.batch_execute("COMMIT"),
    );
    let alive = committed.is_ok();
    match (begun.and(made).and(locked), inserted, moved.and(committed)) {
        (Ok(_), Ok(()), Ok(())) => Trip::Committed,
        (Ok(_), Err(_), _) if alive => Trip::Refused,
        (Err(e), _, _) | (_, _, Err(e)) => Trip::Failed(backend(e), alive),
        (_, Err(e), _) => Trip::Failed(e, alive),
    }
}

/// Sends a batch of new entities without names: their rows first, then, once the batch
/// before it holds the application's `app_seq` row, asks for the row itself. Holding it, the
/// batch takes in the new entities without names of its application that came meanwhile
/// (at most `room`; answered with the trip's outcome), and sends their rows, the log's
/// appends for all and the commit at once. The row is held for that round trip alone, so
/// the inserts of this node's next batch, and of other nodes' batches, run beside it. Fresh
/// uuids and no names: nothing these inserts write can be another batch's, so none waits
/// for another.
async fn inserts_then_log(
    tx: &BatchTx<'_>,
    app: &str,
    [make, lock, rows, log]: [&Statement; 4],
    cols: &NewColumns<'_>,
    turn: &mut Turn,
    late_writes: LateWrites,
    room: usize,
) -> (Trip, Vec<Job>) {
    let LateWrites {
        waiting,
        next_waits,
    } = late_writes;
    let inserted = insert_rows(tx, rows, app, cols);
    let logged = async {
        turn.wait().await;
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&app];
        // The row is made first if this is the application's first write: a lock on no row
        // would hold nothing, and this node's next batch could log before this one.
        let (made, locked) = futures_util::join!(tx.execute(make, &key), tx.execute(lock, &key));
        let locked = made.and(locked).map_err(backend);
        // A failed lock leaves the transaction aborted: nothing more joins it.
        let late = match locked {
            Ok(_) => take_in(&waiting, app, room).await,
            Err(_) => Vec::new(),
        };
        drop(next_waits);
        turn.pass();
        let late_new: Vec<&NewEntity> = late
            .iter()
            .filter_map(|j| j.insert.as_ref().map(|i| &*i.new))
            .collect();
        let late_cols = (!late_new.is_empty()).then(|| NewColumns::of(&late_new));
        let late_rows = async {
            match &late_cols {
                Some(late_cols) => insert_rows(tx, rows, app, late_cols).await,
                None => Ok(()),
            }
        };
        let late_logged = async {
            match &late_cols {
                Some(late_cols) => log_inserts(tx, log, app, late_cols).await,
                None => Ok(()),
            }
        };
        // Polled in this order, so sent in it: the log holds the batch's own first.
        let (late_rows, logged, late_logged, committed) = futures_util::join!(
            late_rows,
            log_inserts(tx, log, app, cols),
            late_logged,
            tx.batch_execute("COMMIT")
        );
        let logged = locked.map(drop).and(logged).and(late_logged);
        drop(late_cols);
        (late_rows, logged, committed, late)
    };
    // Polled in this order, so sent in it.
    let (begun, inserted, (late_rows, logged, committed, late)) =
        futures_util::join!(tx.batch_execute("BEGIN"), inserted, logged);
    let alive = committed.is_ok();
    let inserted = inserted.and(late_rows);
    let trip = match (begun, inserted, logged, committed) {
        (Ok(()), Ok(()), Ok(()), Ok(())) => Trip::Committed,
        (Ok(()), Err(_), _, _) if alive => Trip::Refused,
        (Err(e), ..) | (_, _, _, Err(e)) => Trip::Failed(backend(e), alive),
        (_, Err(e), ..) | (_, _, Err(e), _) => Trip::Failed(e, alive),
    };
    (trip, late)
}

/// Commits a batch's transaction and answers its writes; gives back the connection unless it
/// failed.
async fn commit(
    conn: Object,
    app: &str,
    advance: tokio_postgres::Statement,
    taken: i64,
    jobs: Vec<Job>,
) -> Option<Object> {
    let client: &Client = &conn;
    // The row moves on by the positions taken, with the commit (an update that fails leaves
    // the transaction aborted, and its COMMIT then rolls back without an error of its own).
    let moved = async {
        if taken > 0 {
            client.execute(&advance, &[&app, &taken]).await?;
        }
        Ok(())
    };
    let (moved, commit) = futures_util::join!(moved, client.batch_execute("COMMIT"));
    let alive = commit.is_ok();
    let committed = moved.and(commit).map_err(backend);
    if committed.is_err() && alive {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    for job in jobs {
        (job.finish)(committed.as_ref().err());
    }
    alive.then_some(conn)
}

/// The one savepoint name a batch reuses: each write, or pipelined group, starts a new
/// savepoint as the last one's ends, in one statement sent with the write's own (a failed
/// one was rolled back to it already). A failed savepoint statement leaves the transaction
/// aborted: its commit fails, and every write of the batch with it.
#[derive(Default)]
struct Savepoint {
    started: bool,
}

impl Savepoint {
    fn next(&mut self) -> &'static str {
        if std::mem::replace(&mut self.started, true) {
            "RELEASE SAVEPOINT w; SAVEPOINT w"
        } else {
            "SAVEPOINT w"
        }
    }

    /// Runs one write in a savepoint of its own; a failed one is undone.
    async fn run_alone(&mut self, tx: &BatchTx<'_>, job: &Job) {
        let position = tx.position();
        let (_, ok) = futures_util::join!(tx.batch_execute(self.next()), (job.run)(tx));
        if !ok {
            let _ = tx.batch_execute("ROLLBACK TO SAVEPOINT w").await;
            tx.rewind(position);
        }
    }

    /// Inserts new entities together, in one statement after one savepoint; false (and
    /// rolled back to it) if it failed.
    async fn insert_together(&mut self, tx: &BatchTx<'_>, app: &str, group: &[Job]) -> bool {
        let position = tx.position();
        let inserts: Vec<&Insert> = group.iter().filter_map(|j| j.insert.as_ref()).collect();
        let new: Vec<&NewEntity> = inserts.iter().map(|i| &*i.new).collect();
        let cols = NewColumns::of(&new);
        let (_, done) =
            futures_util::join!(tx.batch_execute(self.next()), insert_in(tx, app, &cols));
        if done.is_ok() {
            for insert in inserts {
                keep(&insert.outcome, Ok(()));
            }
            return true;
        }
        let _ = tx.batch_execute("ROLLBACK TO SAVEPOINT w").await;
        tx.rewind(position);
        false
    }
}

fn fail_all(jobs: Vec<Job>, error: &StoreError) {
    for job in jobs {
        (job.finish)(Some(error));
    }
}

impl PostgresStore {
    /// A write that appends to `app`'s change log, in the next batch of its writes.
    pub(super) async fn log_write<T, F>(&self, app: &str, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t BatchTx<'t>) -> BoxFuture<'t, StoreResult<T>> + Send + Sync + 'static,
    {
        self.batcher.write(app, write).await
    }
}
