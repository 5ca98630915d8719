//! The SQLite store's read connections, and the read transactions they keep open between
//! reads.
//!
//! In WAL mode every read transaction takes a shared lock on a slot of the WAL index when it
//! starts and drops it when it ends: two `fcntl` calls, a large share of a point read
//! (BENCHMARKS.md). Between two commits the database does not change, so a read
//! connection keeps its read transaction (its snapshot) open from one read to the next and
//! only starts a new one after a commit: the writer counts its commits and bumps the count
//! before it answers a write, so a read that starts after a write was answered always sees it.
//!
//! An open snapshot keeps a checkpoint from copying the frames written after it into the
//! database, so before each commit the writer ends the snapshots of the idle connections
//! ([`CommitObserver::before_commit`]); the ones in use end at their next read after it. The
//! embedded store belongs to one process (`SqliteStore` locks its data dir): the commits
//! counted are all the commits there are.

use super::error::backend;
use super::writer::CommitObserver;
use crate::store::StoreResult;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Read connections kept open between uses.
pub(super) const MAX_IDLE_READERS: usize = 16;

/// Idle read-only connections, opened on demand. At most [`MAX_IDLE_READERS`] are kept; a
/// burst beyond that opens extra ones that are closed after use.
pub(super) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Reader>>,
    /// Transactions the writer has committed.
    commits: AtomicU64,
}

/// A read connection and the commit count when its open read transaction began, if one is
/// open.
struct Reader {
    conn: Connection,
    snapshot: Option<u64>,
}

impl ReaderPool {
    /// A pool for the database at `path`; it opens nothing yet.
    pub(super) fn new(path: PathBuf) -> ReaderPool {
        ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
            commits: AtomicU64::new(0),
        }
    }

    /// Runs `f` on a read connection inside a read transaction that sees every write answered
    /// before this call; the statements of one call see one snapshot.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let idle = self.lock().pop();
        let mut reader = match idle {
            Some(r) => r,
            None => Reader {
                conn: open(&self.path)?,
                snapshot: None,
            },
        };
        // Read before the snapshot is taken (at the transaction's first read): the snapshot
        // is at least as new as this count says.
        let commits = self.commits.load(Ordering::Acquire);
        if reader.snapshot != Some(commits) {
            end(&mut reader);
            reader
                .conn
                .prepare_cached("BEGIN")
                .and_then(|mut st| st.execute([]))
                .map_err(backend)?;
            reader.snapshot = Some(commits);
        }
        let out = f(&mut reader.conn);
        if out.is_err() || reader.conn.is_autocommit() {
            // A failed read may have left the transaction in any state: start afresh.
            end(&mut reader);
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(reader);
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Reader>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CommitObserver for ReaderPool {
    fn before_commit(&self) {
        for reader in self.lock().iter_mut() {
            end(reader);
        }
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Release);
    }
}

/// Ends a reader's open read transaction, if it has one.
fn end(reader: &mut Reader) {
    if reader.snapshot.take().is_some() && !reader.conn.is_autocommit() {
        // A read-only transaction: nothing to lose if this fails (then it rolls back when the
        // connection is next used or closed).
        let _ = reader
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut st| st.execute([]));
    }
}

fn open(path: &std::path::Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags).map_err(backend)?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    // Every read query the store has, and BEGIN and COMMIT, stay prepared.
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, Connection, ReaderPool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).expect("writer");
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY)")
            .expect("schema");
        (dir, writer, ReaderPool::new(path))
    }

    fn count(pool: &ReaderPool) -> i64 {
        pool.with(|c| {
            c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .map_err(backend)
        })
        .expect("count")
    }

    /// A write as the writer thread makes it: observers told before and after the commit.
    fn insert(writer: &Connection, pool: &ReaderPool, k: i64) {
        pool.before_commit();
        writer
            .execute("INSERT INTO t VALUES (?1)", [k])
            .expect("insert");
        pool.committed();
    }

    #[test]
    fn a_read_after_a_commit_sees_it_and_reads_between_commits_share_a_snapshot() {
        let (_dir, writer, pool) = database();
        assert_eq!(count(&pool), 0);
        insert(&writer, &pool, 1);
        assert_eq!(count(&pool), 1);
        // The reader's transaction stays open between reads…
        let snapshot = pool.lock()[0].snapshot;
        assert_eq!(count(&pool), 1);
        assert_eq!(pool.lock()[0].snapshot, snapshot);
        assert!(!pool.lock()[0].conn.is_autocommit());
        // …so a write nobody counted (another process's) is not seen until the next commit.
        writer
            .execute("INSERT INTO t VALUES (2)", [])
            .expect("insert");
        assert_eq!(count(&pool), 1);
        insert(&writer, &pool, 3);
        assert_eq!(count(&pool), 3);
    }

    #[test]
    fn idle_snapshots_end_before_a_commit_so_checkpoints_finish() {
        let (_dir, writer, pool) = database();
        // Two connections in the pool, both with open snapshots.
        pool.with(|_| pool.with(|c| c.execute_batch("SELECT 1").map_err(backend)))
            .expect("nested reads");
        assert_eq!(pool.lock().len(), 2);
        count(&pool);
        insert(&writer, &pool, 1);
        assert!(pool.lock().iter().all(|r| r.snapshot.is_none()));
        // With no reader holding the old snapshot, a checkpoint copies the whole WAL.
        let (busy, log, done): (i64, i64, i64) = writer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("checkpoint");
        assert_eq!((busy, log), (0, done));
    }

    #[test]
    fn a_failed_read_ends_its_transaction_and_the_next_read_works() {
        let (_dir, _writer, pool) = database();
        let failed = pool.with(|c| c.execute_batch("SELECT * FROM missing").map_err(backend));
        assert!(failed.is_err());
        assert!(pool.lock()[0].snapshot.is_none());
        assert_eq!(count(&pool), 0);
    }
}
