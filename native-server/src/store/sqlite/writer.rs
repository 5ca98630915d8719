//! The SQLite store's writer: one thread that owns the write connection and commits the
//! writes queued for it in groups.
//!
//! SQLite has one writer at a time. Handing each write to a blocking thread of its own made a
//! burst of writes start hundreds of threads that all waited on one lock, and rationing those
//! threads made every write wait for a turn of the async scheduler, which, with thousands of
//! sockets to serve, let one or two writes through per turn. Here writes wait in a bounded
//! queue instead; the thread takes everything queued (up to [`GROUP_MAX`]) and runs it in one
//! transaction, each write inside its own savepoint, so a failing write undoes only itself.
//! One commit (one `fsync`) then covers the group, and each caller is answered only after it.

use crate::store::{StoreError, StoreResult};
use rusqlite::Connection;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the writer. When it is full, a write waits to be queued: writers slow
/// down, readers go on.
const WRITE_QUEUE: usize = 1024;

/// Most writes committed in one transaction.
const GROUP_MAX: usize = 64;

/// A write's work on the connection, and how to answer its caller once its transaction has
/// ended.
type Job = Box<dyn FnOnce(&mut Connection) -> Written + Send>;

/// Answers a write's caller: given the error that ended its transaction, if it was not
/// committed.
type OnCommit = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What a write left behind.
struct Written {
    /// Answers the caller.
    reply: OnCommit,
    /// The write's own failure, to tell the others in its group why their transaction was
    /// lost if this failure ended it (SQLite rolls the whole transaction back on a full disk).
    failure: Option<StoreError>,
}

/// What the writer tells the read connections about its commits (`readers`).
pub(super) trait CommitObserver: Send + Sync + 'static {
    /// A transaction is about to commit: read transactions left open now would keep its
    /// checkpoint from copying it into the database.
    fn before_commit(&self);
    /// A transaction has committed; called before any of its writes is answered.
    fn committed(&self);
}

/// The handle through which writes reach the writer thread.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`, telling `observer` of its commits. It ends when
    /// every handle is dropped.
    pub(super) fn start(
        conn: Connection,
        observer: Arc<dyn CommitObserver>,
    ) -> StoreResult<Writer> {
        let (jobs, queue) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, &*observer, queue))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Writer { jobs })
    }

    /// Runs `f` on the write connection; answers once what it wrote is committed.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = f(conn);
            Written {
                failure: out.as_ref().err().map(StoreError::again),
                reply: Box::new(move |lost| {
                    let _ = tx.send(match lost {
                        Some(e) => Err(e.again()),
                        None => out,
                    });
                }),
            }
        });
        self.jobs.send(job).await.map_err(|_| stopped())?;
        // The sender is dropped unanswered only if the write panicked.
        rx.await.map_err(|_| stopped())?
    }
}

/// The error for a write whose answer never came.
fn stopped() -> StoreError {
    StoreError::Backend("the SQLite writer stopped".into())
}

fn run(mut conn: Connection, observer: &dyn CommitObserver, mut queue: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while let Some(first) = queue.blocking_recv() {
        group.push(first);
        while group.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, observer, &mut group);
    }
}

/// Runs a job; a panic in it loses only its own answer (its caller sees an error).
fn run_job(conn: &mut Connection, job: Job) -> Option<Written> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))).ok()
}

/// Runs every job of `group` in one transaction and answers each after its end.
fn commit_group(conn: &mut Connection, observer: &dyn CommitObserver, group: &mut Vec<Job>) {
    if group.len() == 1 || conn.execute_batch("BEGIN IMMEDIATE").is_err() {
        run_alone(conn, observer, group.drain(..));
        return;
    }
    let mut jobs = group.drain(..);
    let mut ran = Vec::with_capacity(jobs.len());
    let mut lost = None;
    for job in jobs.by_ref() {
        let Some(w) = run_job(conn, job) else {
            continue;
        };
        ran.push(w.reply);
        if conn.is_autocommit() {
            // The job's error rolled back the whole transaction, the others' writes with it.
            lost = Some(
                w.failure
                    .unwrap_or_else(|| StoreError::Backend("the transaction was lost".into())),
            );
            break;
        }
    }
    let ended = match lost {
        Some(e) => Err(e),
        None => {
            observer.before_commit();
            conn.execute_batch("COMMIT").map_err(super::error::backend)
        }
    };
    if ended.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    if ended.is_ok() {
        observer.committed();
    }
    for reply in ran {
        reply(ended.as_ref().err());
    }
    // What is left after a lost transaction runs one job at a time.
    run_alone(conn, observer, jobs);
}

/// Runs jobs one at a time, each job's savepoint a transaction of its own (which commits
/// inside the job, so the observer hears of it around the whole job).
fn run_alone(
    conn: &mut Connection,
    observer: &dyn CommitObserver,
    jobs: impl Iterator<Item = Job>,
) {
    for job in jobs {
        observer.before_commit();
        let written = run_job(conn, job);
        observer.committed();
        if let Some(w) = written {
            (w.reply)(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::join_all;

    /// Counts what it is told.
    #[derive(Default)]
    struct Counts {
        before: std::sync::atomic::AtomicUsize,
        committed: std::sync::atomic::AtomicUsize,
    }

    impl CommitObserver for Counts {
        fn before_commit(&self) {
            self.before
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn committed(&self) {
            self.committed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn writer() -> Writer {
        writer_observed().0
    }

    fn writer_observed() -> (Writer, Arc<Counts>) {
        let conn = Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY)")
            .expect("schema");
        let counts = Arc::new(Counts::default());
        (
            Writer::start(conn, counts.clone()).expect("writer thread"),
            counts,
        )
    }

    /// Inserts `k` inside a savepoint, as the store's writes do.
    async fn insert(w: &Writer, k: i64) -> StoreResult<usize> {
        w.write(move |c| {
            let sp = c.savepoint().map_err(super::super::error::backend)?;
            let n = sp
                .execute("INSERT INTO t VALUES (?1)", [k])
                .map_err(|_| StoreError::Duplicate(format!("k={k}")))?;
            sp.commit().map_err(super::super::error::backend)?;
            Ok(n)
        })
        .await
    }

    async fn keys(w: &Writer) -> Vec<i64> {
        w.write(|c| {
            let mut st = c
                .prepare("SELECT k FROM t ORDER BY k")
                .map_err(super::super::error::backend)?;
            let rows = st
                .query_map([], |r| r.get(0))
                .map_err(super::super::error::backend)?;
            rows.collect::<Result<Vec<i64>, _>>()
                .map_err(super::super::error::backend)
        })
        .await
        .expect("read back")
    }

    #[tokio::test]
    async fn a_burst_of_writes_all_commit_and_each_is_answered() {
        let w = writer();
        let results = join_all((0..500).map(|k| insert(&w, k))).await;
        assert!(results.iter().all(|r| matches!(r, Ok(1))));
        assert_eq!(keys(&w).await, (0..500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_observer_hears_of_each_commit_before_its_writes_are_answered() {
        let (w, counts) = writer_observed();
        let load =
            |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
        insert(&w, 1).await.expect("insert");
        assert!(load(&counts.committed) >= 1);
        let before = load(&counts.committed);
        let results = join_all((2..100).map(|k| insert(&w, k))).await;
        assert!(results.iter().all(|r| matches!(r, Ok(1))));
        // Each commit (of a group or of one write) announced before it happened.
        let after = load(&counts.committed);
        assert!(
            after > before && after - before <= 98,
            "{before} -> {after}"
        );
        assert_eq!(load(&counts.before), after);
    }

    #[tokio::test]
    async fn a_failing_write_undoes_only_itself_in_its_group() {
        let w = writer();
        insert(&w, 7).await.expect("first insert");
        // Queued together, so committed as one group: the duplicate fails, the rest land.
        let results = join_all((0..200).map(|k| insert(&w, k))).await;
        for (k, r) in results.iter().enumerate() {
            if k == 7 {
                assert!(matches!(r, Err(StoreError::Duplicate(_))), "{r:?}");
            } else {
                assert!(matches!(r, Ok(1)), "k={k}: {r:?}");
            }
        }
        assert_eq!(keys(&w).await, (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let w = writer();
        let panicking = w.write(|c| -> StoreResult<()> {
            let sp = c.savepoint().map_err(super::super::error::backend)?;
            sp.execute("INSERT INTO t VALUES (1000)", [])
                .map_err(super::super::error::backend)?;
            panic!("a bug in a write");
        });
        let (panicked, others) = tokio::join!(panicking, join_all((0..50).map(|k| insert(&w, k))));
        assert!(matches!(panicked, Err(StoreError::Backend(_))));
        assert!(others.iter().all(|r| matches!(r, Ok(1))));
        assert_eq!(keys(&w).await, (0..50).collect::<Vec<_>>());
    }
}
