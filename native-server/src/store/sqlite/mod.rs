//! The embedded default store: one SQLite file in the data dir, WAL mode, `synchronous=FULL`
//! so that an answered write survives `kill -9` and power loss.

use super::plan::{self, Taken};
use super::rows::{entity_change, kind_name, kind_of, page_apart, queue_change, queue_message};
mod error;
mod readers;
mod search;
mod writer;

use super::{
    AdminRecord, AppRecord, Asset, ChangeBatch, ChangeRecord, Direction, Entity, EntityKey,
    OrgRecord, Page, PageQuery, QueueRead, QueuedMessage, Store, StoreError, StoreResult,
    TokenKind, TokenRecord, WriteRecord,
};
use async_trait::async_trait;
use error::backend;
use gridsocket_core::subscription::ChangeKind;
use readers::{MAX_IDLE_READERS, ReaderPool};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;
use writer::Writer;

/// The schema, applied at every start (every statement is `IF NOT EXISTS`).
const SCHEMA: &str = include_str!("schema.sql");

/// The SQLite store: one writer connection on a thread of its own that commits queued writes
/// in groups (`writer`), and a pool of read-only connections whose snapshots last from
/// one commit to the next (`readers`). In WAL mode readers never wait for the writer.
/// Point reads (a row by key, short lists) run on the caller's thread: from SQLite's page
/// cache they take microseconds, less than handing them to another thread would. Scans run on
/// blocking threads. The data dir belongs to one process: it is locked while a store is open.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<ReaderPool>,
    /// Scans on blocking threads at once; more wait here.
    scans: Arc<Semaphore>,
    /// The data dir's lock, held while any clone of the store lives.
    _lock: Arc<std::fs::File>,
}

/// Locks `dir` for this process: the readers' snapshots assume that every commit to the
/// database is this process's (`readers`). A server still letting go of the dir (a
/// restart that overlaps the old process's exit) is waited for, up to [`LOCK_WAIT`]; then a
/// second server on the same dir is refused.
fn lock_dir(dir: &Path) -> StoreResult<std::fs::File> {
    let path = dir.join("gridsocket.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(backend)?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Backend(
                    format!(
                        "the data dir {} is in use by another gridsocket server",
                        dir.display()
                    )
                    .into(),
                ));
            }
            // A file system without locks: nothing to hold, go on.
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                return Ok(file);
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(backend(e)),
        }
    }
}

/// How long opening waits for another holder of the data dir to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn sql_err(e: rusqlite::Error, what: &str) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Duplicate(what.to_owned()),
        _ => backend(e),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `gridsocket.db` in `dir` and applies the schema.
    pub fn open(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let lock = lock_dir(dir)?;
        let path = dir.join("gridsocket.db");
        let conn = Connection::open(&path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        // Each write of a group runs in a savepoint, whose journal of changed pages goes to a
        // temporary file by default: a write syscall per page a write touches first (a
        // quarter of the writer's time once the index made writes touch many pages).
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let mut conn = conn;
        search::build_index(&mut conn)?;
        let readers = Arc::new(ReaderPool::new(path));
        Ok(SqliteStore {
            writer: Writer::start(conn, readers.clone())?,
            readers,
            scans: Arc::new(Semaphore::new(MAX_IDLE_READERS)),
            _lock: Arc::new(lock),
        })
    }

    /// A write, on the writer thread; answered once it is committed.
    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// A point read on a pooled read connection, on this thread (see [`SqliteStore`]).
    fn read<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        self.readers.with(f)
    }

    /// A scan on a pooled read connection, on a blocking thread.
    async fn scan<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let _turn = self.scans.acquire().await.map_err(backend)?;
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(backend)?
    }

    /// The first row of a keyed query with text parameters, if any.
    async fn one<T>(
        &self,
        sql: &str,
        args: Vec<String>,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        self.read(|c| {
            c.prepare_cached(sql)
                .and_then(|mut st| {
                    st.query_row(rusqlite::params_from_iter(args), row)
                        .optional()
                })
                .map_err(backend)
        })
    }

    /// Every row of a keyed query with text parameters (a short list: permissions, roles).
    async fn all<T>(
        &self,
        sql: &str,
        args: Vec<String>,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        self.read(|c| {
            let mut st = c.prepare_cached(sql).map_err(backend)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), row)
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
    }

    /// Executes a statement with text parameters; returns how many rows it changed.
    async fn exec(&self, sql: &'static str, args: Vec<String>) -> StoreResult<usize> {
        self.call(move |c| {
            c.prepare_cached(sql)
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(args)))
                .map_err(backend)
        })
        .await
    }
}

fn strs_vec(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn org_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrgRecord> {
    Ok(OrgRecord {
        uuid: r.get(0)?,
        name: r.get(1)?,
        client_id: r.get(2)?,
        client_secret: r.get(3)?,
        created: r.get(4)?,
    })
}

fn admin_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminRecord> {
    Ok(AdminRecord {
        uuid: r.get(0)?,
        username: r.get(1)?,
        email: r.get(2)?,
        name: r.get(3)?,
        password_hash: r.get(4)?,
        created: r.get(5)?,
    })
}

const APP_COLS: &str =
    "a.uuid, a.org_uuid, o.name, a.name, a.client_id, a.client_secret, a.created";

fn app_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        uuid: r.get(0)?,
        org_uuid: r.get(1)?,
        org_name: r.get(2)?,
        name: r.get(3)?,
        client_id: r.get(4)?,
        client_secret: r.get(5)?,
        created: r.get(6)?,
    })
}

/// Appends a change inside the writer's transaction and returns its position: the entity write
/// and its log entry commit together or not at all.
fn append_change(tx: &Connection, app: &str, rec: &ChangeRecord) -> StoreResult<u64> {
    tx.execute(
        "INSERT INTO app_seq(app, seq) VALUES (?1, 1) ON CONFLICT(app) DO UPDATE SET seq = seq + 1",
        [app],
    )
    .map_err(backend)?;
    let seq: i64 = tx
        .query_row("SELECT seq FROM app_seq WHERE app = ?1", [app], |r| {
            r.get(0)
        })
        .map_err(backend)?;
    tx.prepare_cached("INSERT INTO changes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")
        .and_then(|mut st| {
            st.execute(params![
                app,
                seq,
                rec.created,
                kind_name(rec.kind),
                rec.collection,
                rec.uuid,
                rec.name,
                Value::Object(rec.entity.clone()).to_string(),
                rec.previous
                    .as_ref()
                    .map(|p| Value::Object(p.clone()).to_string()),
                rec.feed_owner,
                rec.queue,
            ])
        })
        .map_err(backend)?;
    Ok(seq as u64)
}

/// Replaces an entity's name and properties inside `tx` and logs the update; false if there is
/// no such entity.
fn replace_in(tx: &Connection, app: &str, e: &Entity) -> StoreResult<bool> {
    let Some(before) = load_for_update(tx, app, &e.uuid)? else {
        return Ok(false);
    };
    let data = Value::Object(e.data.clone()).to_string();
    tx.prepare_cached("UPDATE entities SET name = ?3, data = ?4 WHERE app = ?1 AND uuid = ?2")
        .and_then(|mut s| s.execute(params![app, e.uuid, e.name, data]))
        .map_err(|err| {
            sql_err(
                err,
                &format!("an entity named {:?}", e.name.clone().unwrap_or_default()),
            )
        })?;
    search::index_entity(tx, app, e, false)?;
    append_change(
        tx,
        app,
        &entity_change(ChangeKind::Update, e, Some(before.data)),
    )?;
    Ok(true)
}

fn load_for_update(tx: &Connection, app: &str, uuid: &str) -> StoreResult<Option<Entity>> {
    let row = tx
        .query_row(
            "SELECT uuid, collection, name, data FROM entities WHERE app = ?1 AND uuid = ?2",
            [app, uuid],
            entity_row,
        )
        .optional()
        .map_err(backend)?;
    row.map(to_entity).transpose()
}

/// Reads `(uuid, collection, name, data)` columns into an entity.
fn entity_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, Option<String>, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_entity(row: (String, String, Option<String>, String)) -> StoreResult<Entity> {
    let (uuid, collection, name, data) = row;
    let data: Map<String, Value> = serde_json::from_str(&data).map_err(backend)?;
    Ok(Entity {
        uuid,
        collection,
        name,
        data,
    })
}

fn collect_entities(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Entity>> {
    Ok(collect_within(stmt, params, usize::MAX)?.0)
}

/// The rows' entities until they hold `max_bytes` of JSON; true if rows were left unread.
fn collect_within(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    max_bytes: usize,
) -> StoreResult<(Vec<Entity>, bool)> {
    let rows = stmt.query_map(params, entity_row).map_err(backend)?;
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    for row in rows {
        if bytes >= max_bytes {
            return Ok((out, true));
        }
        let row = row.map_err(backend)?;
        bytes = bytes.saturating_add(row.3.len());
        out.push(to_entity(row)?);
    }
    Ok((out, false))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_org(&self, org: &OrgRecord, admin: &AdminRecord) -> StoreResult<()> {
        let (org, admin) = (org.clone(), admin.clone());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            tx.execute(
                "INSERT INTO orgs VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    org.uuid,
                    org.name,
                    org.client_id,
                    org.client_secret,
                    org.created
                ],
            )
            .map_err(|e| sql_err(e, "organization"))?;
            tx.execute(
                "INSERT INTO admins VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    admin.uuid,
                    admin.username,
                    admin.email,
                    admin.name,
                    admin.password_hash,
                    admin.created
                ],
            )
            .map_err(|e| sql_err(e, "admin username or email"))?;
            tx.execute(
                "INSERT INTO org_admins VALUES (?1, ?2)",
                params![org.uuid, admin.uuid],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn org_by_name(&self, name: &str) -> StoreResult<Option<OrgRecord>> {
        self.one(
            "SELECT * FROM orgs WHERE name = ?1",
            vec![name.to_owned()],
            org_row,
        )
        .await
    }

    async fn org_by_uuid(&self, uuid: &str) -> StoreResult<Option<OrgRecord>> {
        self.one(
            "SELECT * FROM orgs WHERE uuid = ?1",
            vec![uuid.to_owned()],
            org_row,
        )
        .await
    }

    async fn org_by_client_id(&self, client_id: &str) -> StoreResult<Option<OrgRecord>> {
        let args = vec![client_id.to_owned()];
        self.one("SELECT * FROM orgs WHERE client_id = ?1", args, org_row)
            .await
    }

    async fn admin_by_login(&self, login: &str) -> StoreResult<Option<AdminRecord>> {
        let sql = "SELECT * FROM admins WHERE username = ?1 OR email = ?1";
        self.one(sql, vec![login.to_owned()], admin_row).await
    }

    async fn admin_by_uuid(&self, uuid: &str) -> StoreResult<Option<AdminRecord>> {
        self.one(
            "SELECT * FROM admins WHERE uuid = ?1",
            vec![uuid.to_owned()],
            admin_row,
        )
        .await
    }

    async fn admin_orgs(&self, admin_uuid: &str) -> StoreResult<Vec<OrgRecord>> {
        let sql = "SELECT o.* FROM orgs o JOIN org_admins m ON m.org_uuid = o.uuid
                   WHERE m.admin_uuid = ?1 ORDER BY o.created";
        self.all(sql, vec![admin_uuid.to_owned()], org_row).await
    }

    async fn create_app(
        &self,
        app: &AppRecord,
        seed: &[Entity],
        permissions: &[(String, String)],
    ) -> StoreResult<()> {
        let (app, seed, permissions) = (app.clone(), seed.to_vec(), permissions.to_vec());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            tx.execute(
                "INSERT INTO apps VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    app.uuid,
                    app.org_uuid,
                    app.name,
                    app.client_id,
                    app.client_secret,
                    app.created
                ],
            )
            .map_err(|e| sql_err(e, "application"))?;
            for e in &seed {
                let data = Value::Object(e.data.clone()).to_string();
                tx.execute(
                    "INSERT INTO entities VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
                    params![app.uuid, e.uuid, e.collection, e.name, data],
                )
                .map_err(|err| sql_err(err, "entity"))?;
                search::index_entity(&tx, &app.uuid, e, true)?;
            }
            for (owner, perm) in &permissions {
                tx.execute(
                    "INSERT OR IGNORE INTO permissions VALUES (?1, ?2, ?3)",
                    params![app.uuid, owner, perm],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn app_by_name(&self, org_uuid: &str, name: &str) -> StoreResult<Option<AppRecord>> {
        let sql = format!(
            "SELECT {APP_COLS} FROM apps a JOIN orgs o ON o.uuid = a.org_uuid
             WHERE a.org_uuid = ?1 AND a.name = ?2"
        );
        self.one(&sql, strs_vec(&[org_uuid, name]), app_row).await
    }

    async fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<AppRecord>> {
        let sql = format!(
            "SELECT {APP_COLS} FROM apps a JOIN orgs o ON o.uuid = a.org_uuid WHERE a.client_id = ?1"
        );
        self.one(&sql, vec![client_id.to_owned()], app_row).await
    }

    async fn apps_of_org(&self, org_uuid: &str) -> StoreResult<Vec<AppRecord>> {
        let sql = format!(
            "SELECT {APP_COLS} FROM apps a JOIN orgs o ON o.uuid = a.org_uuid
             WHERE a.org_uuid = ?1 ORDER BY a.created"
        );
        self.all(&sql, vec![org_uuid.to_owned()], app_row).await
    }

    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let t = token.clone();
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO tokens VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    t.hash.as_slice(),
                    t.kind.as_str(),
                    t.subject,
                    t.scope,
                    t.created,
                    t.expires
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        let hash = *hash;
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT kind, subject, scope, created, expires FROM tokens WHERE hash = ?1",
                    [hash.as_slice()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            Ok(row.and_then(|(kind, subject, scope, created, expires)| {
                Some(TokenRecord {
                    hash,
                    kind: TokenKind::parse(&kind)?,
                    subject,
                    scope,
                    created,
                    expires,
                })
            }))
        })
    }

    async fn revoke_tokens(&self, subject: &str, except: Option<&[u8; 32]>) -> StoreResult<u64> {
        let (subject, keep) = (subject.to_owned(), except.map(|h| h.to_vec()));
        let n = self
            .call(move |c| {
                c.prepare_cached("DELETE FROM tokens WHERE subject = ?1 AND hash IS NOT ?2")
                    .and_then(|mut st| st.execute(params![subject, keep]))
                    .map_err(backend)
            })
            .await?;
        Ok(n as u64)
    }

    async fn revoke_token(&self, hash: &[u8; 32]) -> StoreResult<bool> {
        let hash = hash.to_vec();
        let n = self
            .call(move |c| {
                c.prepare_cached("DELETE FROM tokens WHERE hash = ?1")
                    .and_then(|mut st| st.execute(params![hash]))
                    .map_err(backend)
            })
            .await?;
        Ok(n > 0)
    }

    async fn insert_entity(
        &self,
        app: &str,
        entity: &Entity,
        secret: Option<&str>,
    ) -> StoreResult<()> {
        let (app, e, secret) = (app.to_owned(), entity.clone(), secret.map(str::to_owned));
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let data = Value::Object(e.data.clone()).to_string();
            tx.prepare_cached("INSERT INTO entities VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .and_then(|mut s| {
                    s.execute(params![app, e.uuid, e.collection, e.name, data, secret])
                })
                .map_err(|err| {
                    let name = e.name.clone().unwrap_or_default();
                    sql_err(err, &format!("an entity named {name:?}"))
                })?;
            search::index_entity(&tx, &app, &e, true)?;
            append_change(&tx, &app, &entity_change(ChangeKind::Create, &e, None))?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn entity(
        &self,
        app: &str,
        collection: Option<&str>,
        key: EntityKey<'_>,
    ) -> StoreResult<Option<Entity>> {
        let app = app.to_owned();
        let collection = collection.map(str::to_owned);
        let (by_uuid, value) = match key {
            EntityKey::Uuid(u) => (true, u.to_owned()),
            EntityKey::Name(n) => (false, n.to_owned()),
        };
        self.read(move |c| {
            let sql = match (by_uuid, collection.is_some()) {
                (true, true) => "SELECT uuid, collection, name, data FROM entities WHERE app = ?1 AND uuid = ?2 AND collection = ?3",
                (true, false) => "SELECT uuid, collection, name, data FROM entities WHERE app = ?1 AND uuid = ?2 AND ?3 IS NULL",
                (false, _) => "SELECT uuid, collection, name, data FROM entities WHERE app = ?1 AND name = ?2 AND collection = ?3",
            };
            let mut stmt = c.prepare_cached(sql).map_err(backend)?;
            let row = stmt
                .query_row(params![app, value, collection], entity_row)
                .optional()
                .map_err(backend)?;
            row.map(to_entity).transpose()
        })
    }

    async fn user_by_email(&self, app: &str, email: &str) -> StoreResult<Option<Entity>> {
        let (app, email) = (app.to_owned(), email.to_owned());
        self.scan(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT uuid, collection, name, data FROM entities
                     WHERE app = ?1 AND collection = 'users'
                       AND lower(json_extract(data, '$.email')) = lower(?2)",
                )
                .map_err(backend)?;
            let row = stmt
                .query_row(params![app, email], entity_row)
                .optional()
                .map_err(backend)?;
            row.map(to_entity).transpose()
        })
        .await
    }

    async fn user_secret(&self, app: &str, uuid: &str) -> StoreResult<Option<String>> {
        let sql = "SELECT secret FROM entities WHERE app = ?1 AND uuid = ?2";
        let found = self
            .one(sql, strs_vec(&[app, uuid]), |r| {
                r.get::<_, Option<String>>(0)
            })
            .await?;
        Ok(found.flatten())
    }

    async fn set_user_secret(&self, app: &str, uuid: &str, secret: &str) -> StoreResult<()> {
        let sql = "UPDATE entities SET secret = ?3 WHERE app = ?1 AND uuid = ?2";
        self.exec(sql, strs_vec(&[app, uuid, secret])).await?;
        Ok(())
    }

    async fn replace_entity(&self, app: &str, entity: &Entity) -> StoreResult<()> {
        let (app, e) = (app.to_owned(), entity.clone());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            if replace_in(&tx, &app, &e)? {
                tx.commit().map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn put_asset(&self, app: &str, entity: &Entity, asset: &Asset) -> StoreResult<bool> {
        let (app, e, asset) = (app.to_owned(), entity.clone(), asset.clone());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            if !replace_in(&tx, &app, &e)? {
                return Ok(false);
            }
            tx.prepare_cached("INSERT OR REPLACE INTO assets VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut s| s.execute(params![app, e.uuid, asset.content_type, asset.data]))
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn asset(&self, app: &str, entity: &str) -> StoreResult<Option<Asset>> {
        let sql = "SELECT content_type, data FROM assets WHERE app = ?1 AND uuid = ?2";
        let rows = self
            .all(sql, strs_vec(&[app, entity]), |r| {
                Ok(Asset {
                    content_type: r.get(0)?,
                    data: r.get(1)?,
                })
            })
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn delete_entity(&self, app: &str, uuid: &str) -> StoreResult<bool> {
        let (app, uuid) = (app.to_owned(), uuid.to_owned());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let Some(before) = load_for_update(&tx, &app, &uuid)? else {
                return Ok(false);
            };
            let n = tx
                .execute(
                    "DELETE FROM entities WHERE app = ?1 AND uuid = ?2",
                    [&app, &uuid],
                )
                .map_err(backend)?;
            append_change(&tx, &app, &entity_change(ChangeKind::Delete, &before, None))?;
            search::unindex(&tx, &app, &uuid)?;
            tx.execute(
                "DELETE FROM relations WHERE app = ?1 AND (source = ?2 OR target = ?2)",
                [&app, &uuid],
            )
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM permissions WHERE app = ?1 AND owner = ?2",
                [&app, &uuid],
            )
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM assets WHERE app = ?1 AND uuid = ?2",
                [&app, &uuid],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn query(&self, app: &str, collection: &str, page: &PageQuery<'_>) -> StoreResult<Page> {
        crate::store::search::query(self, app, collection, page).await
    }

    async fn deliver_to_feeds(
        &self,
        app: &str,
        activity: &Entity,
        owners: &[String],
    ) -> StoreResult<()> {
        let (app, activity, owners) = (app.to_owned(), activity.clone(), owners.to_vec());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            for owner in &owners {
                let added = tx
                    .execute(
                        "INSERT OR IGNORE INTO relations(app, source, relation, target)
                         VALUES (?1, ?2, 'feed', ?3)",
                        params![app, owner, activity.uuid],
                    )
                    .map_err(backend)?;
                if added > 0 {
                    let mut rec = entity_change(ChangeKind::FeedItem, &activity, None);
                    rec.feed_owner = Some(owner.clone());
                    append_change(&tx, &app, &rec)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn log_position(&self, app: &str) -> StoreResult<u64> {
        let app = app.to_owned();
        self.read(move |c| {
            let seq: Option<i64> = c
                .query_row("SELECT seq FROM app_seq WHERE app = ?1", [app], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)?;
            Ok(seq.unwrap_or(0) as u64)
        })
    }

    async fn changes_since(&self, app: &str, after: u64, limit: usize) -> StoreResult<ChangeBatch> {
        let app = app.to_owned();
        self.scan(move |c| {
            // One read (one snapshot): the batch, the retention floor and the position agree.
            let position: i64 = c
                .query_row("SELECT seq FROM app_seq WHERE app = ?1", [&app], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)?
                .unwrap_or(0);
            let oldest: Option<i64> = c
                .query_row("SELECT MIN(seq) FROM changes WHERE app = ?1", [&app], |r| {
                    r.get(0)
                })
                .map_err(backend)?;
            let mut changes = Vec::new();
            {
                let mut st = c
                    .prepare_cached(
                        "SELECT seq, created, kind, collection, uuid, name, entity, previous,
                                feed_owner, queue
                         FROM changes WHERE app = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    )
                    .map_err(backend)?;
                let rows = st
                    .query_map(params![app, after as i64, limit as i64], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, Option<String>>(7)?,
                            r.get::<_, Option<String>>(8)?,
                            r.get::<_, Option<String>>(9)?,
                        ))
                    })
                    .map_err(backend)?;
                for row in rows {
                    let (
                        seq,
                        created,
                        kind,
                        collection,
                        uuid,
                        name,
                        entity,
                        previous,
                        feed_owner,
                        queue,
                    ) = row.map_err(backend)?;
                    let kind = kind_of(&kind).ok_or_else(|| {
                        backend(std::io::Error::other(format!(
                            "unknown change kind {kind:?}"
                        )))
                    })?;
                    let entity: Map<String, Value> =
                        serde_json::from_str(&entity).map_err(backend)?;
                    let previous = previous
                        .map(|p| serde_json::from_str::<Map<String, Value>>(&p))
                        .transpose()
                        .map_err(backend)?;
                    changes.push(ChangeRecord {
                        seq: seq as u64,
                        created,
                        kind,
                        collection,
                        uuid,
                        name,
                        entity,
                        previous,
                        feed_owner,
                        queue,
                    });
                }
            }
            Ok(ChangeBatch {
                changes,
                first_retained: oldest.map(|o| o as u64).unwrap_or(position as u64 + 1),
                position: position as u64,
            })
        })
        .await
    }

    async fn prune_changes(&self, before_ms: i64) -> StoreResult<u64> {
        self.call(move |c| {
            let n = c
                .execute("DELETE FROM changes WHERE created < ?1", [before_ms])
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn queue_post(
        &self,
        app: &str,
        queue: &str,
        messages: &[Map<String, Value>],
        now: i64,
    ) -> StoreResult<Vec<Value>> {
        let (app, queue, messages) = (app.to_owned(), queue.to_owned(), messages.to_vec());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let mut targets = vec![queue.clone()];
            {
                let mut st = tx
                    .prepare_cached(
                        "SELECT subscriber FROM queue_subs WHERE app = ?1 AND queue = ?2",
                    )
                    .map_err(backend)?;
                let rows = st
                    .query_map([&app, &queue], |r| r.get::<_, String>(0))
                    .map_err(backend)?;
                for r in rows {
                    let sub = r.map_err(backend)?;
                    if !targets.contains(&sub) {
                        targets.push(sub);
                    }
                }
            }
            let mut posted = Vec::with_capacity(messages.len());
            for props in messages {
                let (uuid, data) = queue_message(props, now);
                for target in &targets {
                    let rec = queue_change(&uuid, &data, target, now);
                    let seq = append_change(&tx, &app, &rec)?;
                    tx.execute(
                        "INSERT INTO queue_messages(app, queue, uuid, seq, created, data)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            app,
                            target,
                            uuid,
                            seq as i64,
                            now,
                            Value::Object(data.clone()).to_string()
                        ],
                    )
                    .map_err(backend)?;
                }
                posted.push(Value::Object(data));
            }
            tx.commit().map_err(backend)?;
            Ok(posted)
        })
        .await
    }

    async fn queue_read(
        &self,
        app: &str,
        queue: &str,
        read: &QueueRead,
        limit: usize,
        now: i64,
    ) -> StoreResult<Vec<QueuedMessage>> {
        let (app, queue, read) = (app.to_owned(), queue.to_owned(), read.clone());
        self.call(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let mut out = Vec::new();
            let message = |id: i64, tx: &Connection| -> StoreResult<Option<(u64, Value)>> {
                let row = tx
                    .query_row(
                        "SELECT seq, data FROM queue_messages WHERE id = ?1",
                        [id],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                    )
                    .optional()
                    .map_err(backend)?;
                row.map(|(seq, data)| Ok((seq as u64, serde_json::from_str(&data).map_err(backend)?)))
                    .transpose()
            };
            match &read {
                QueueRead::Start => {
                    let mut st = tx
                        .prepare_cached(
                            "SELECT seq, data FROM queue_messages WHERE app = ?1 AND queue = ?2
                             ORDER BY id LIMIT ?3",
                        )
                        .map_err(backend)?;
                    let rows = st
                        .query_map(params![app, queue, limit as i64], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                        })
                        .map_err(backend)?;
                    for r in rows {
                        let (seq, data) = r.map_err(backend)?;
                        out.push(QueuedMessage {
                            seq: seq as u64,
                            message: serde_json::from_str(&data).map_err(backend)?,
                        });
                    }
                }
                QueueRead::Consumer { consumer, timeout_ms } => {
                    // Timed-out transactions of this consumer come again, in new transactions.
                    let mut redelivered = Vec::new();
                    if *timeout_ms > 0 {
                        let expired: Vec<(String, i64)> = {
                            let mut st = tx
                                .prepare_cached(
                                    "SELECT id, message_id FROM queue_tx WHERE app = ?1 AND queue = ?2
                                     AND consumer = ?3 AND expires <= ?4 ORDER BY message_id LIMIT ?5",
                                )
                                .map_err(backend)?;
                            let rows = st
                                .query_map(params![app, queue, consumer, now, limit as i64], |r| {
                                    Ok((r.get(0)?, r.get(1)?))
                                })
                                .map_err(backend)?;
                            rows.collect::<Result<_, _>>().map_err(backend)?
                        };
                        for (old, message_id) in expired {
                            tx.execute("DELETE FROM queue_tx WHERE id = ?1", [&old]).map_err(backend)?;
                            if let Some((seq, data)) = message(message_id, &tx)? {
                                redelivered.push(Taken { id: message_id, seq, data });
                            }
                        }
                    }
                    let position: i64 = tx
                        .query_row(
                            "SELECT position FROM queue_consumers WHERE app = ?1 AND queue = ?2 AND consumer = ?3",
                            params![app, queue, consumer],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(backend)?
                        .unwrap_or(0);
                    let fresh: Vec<Taken> = {
                        let mut st = tx
                            .prepare_cached(
                                "SELECT id, seq, data FROM queue_messages WHERE app = ?1 AND queue = ?2
                                 AND id > ?3 ORDER BY id LIMIT ?4",
                            )
                            .map_err(backend)?;
                        let rows = st
                            .query_map(
                                params![app, queue, position, plan::fresh_limit(limit, redelivered.len()) as i64],
                                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)),
                            )
                            .map_err(backend)?;
                        let mut fresh = Vec::new();
                        for row in rows {
                            let (id, seq, data) = row.map_err(backend)?;
                            let data = serde_json::from_str(&data).map_err(backend)?;
                            fresh.push(Taken { id, seq: seq as u64, data });
                        }
                        fresh
                    };
                    let read = plan::consumer_read(redelivered, fresh, position, *timeout_ms, now);
                    for o in &read.opened {
                        tx.execute(
                            "INSERT INTO queue_tx VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![o.id, app, queue, consumer, o.message, o.expires],
                        )
                        .map_err(backend)?;
                    }
                    tx.execute(
                        "INSERT INTO queue_consumers VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(app, queue, consumer) DO UPDATE SET position = ?4",
                        params![app, queue, consumer, read.position],
                    )
                    .map_err(backend)?;
                    out = read.messages;
                }
            }
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn queue_commit(&self, app: &str, queue: &str, transaction: &str) -> StoreResult<bool> {
        let sql = "DELETE FROM queue_tx WHERE app = ?1 AND queue = ?2 AND id = ?3";
        Ok(self.exec(sql, strs_vec(&[app, queue, transaction])).await? > 0)
    }

    async fn queue_next_expiry(
        &self,
        app: &str,
        queue: &str,
        consumer: &str,
    ) -> StoreResult<Option<i64>> {
        let sql =
            "SELECT MIN(expires) FROM queue_tx WHERE app = ?1 AND queue = ?2 AND consumer = ?3";
        let found = self
            .one(sql, strs_vec(&[app, queue, consumer]), |r| {
                r.get::<_, Option<i64>>(0)
            })
            .await?;
        Ok(found.flatten())
    }

    async fn queue_subscribers(&self, app: &str, queue: &str) -> StoreResult<Vec<String>> {
        let sql =
            "SELECT subscriber FROM queue_subs WHERE app = ?1 AND queue = ?2 ORDER BY subscriber";
        self.all(sql, strs_vec(&[app, queue]), |r| r.get(0)).await
    }

    async fn queue_subscribe(
        &self,
        app: &str,
        queue: &str,
        subscriber: &str,
        add: bool,
    ) -> StoreResult<bool> {
        let sql = if add {
            "INSERT OR IGNORE INTO queue_subs VALUES (?1, ?2, ?3)"
        } else {
            "DELETE FROM queue_subs WHERE app = ?1 AND queue = ?2 AND subscriber = ?3"
        };
        Ok(self.exec(sql, strs_vec(&[app, queue, subscriber])).await? > 0)
    }

    async fn queues(&self, app: &str) -> StoreResult<Vec<String>> {
        let sql = "SELECT DISTINCT queue FROM queue_messages WHERE app = ?1 ORDER BY queue";
        self.all(sql, vec![app.to_owned()], |r| r.get(0)).await
    }

    async fn add_relation(
        &self,
        app: &str,
        source: &str,
        relation: &str,
        target: &str,
    ) -> StoreResult<bool> {
        let sql = "INSERT OR IGNORE INTO relations(app, source, relation, target)
                   VALUES (?1, ?2, ?3, ?4)";
        Ok(self
            .exec(sql, strs_vec(&[app, source, relation, target]))
            .await?
            > 0)
    }

    async fn remove_relation(
        &self,
        app: &str,
        source: &str,
        relation: &str,
        target: &str,
    ) -> StoreResult<bool> {
        let sql = "DELETE FROM relations WHERE app = ?1 AND source = ?2 AND relation = ?3
                   AND target = ?4";
        Ok(self
            .exec(sql, strs_vec(&[app, source, relation, target]))
            .await?
            > 0)
    }

    async fn related(
        &self,
        app: &str,
        owner: &str,
        relation: &str,
        direction: Direction,
        page: &PageQuery<'_>,
    ) -> StoreResult<Page> {
        let args = [app, owner, relation].map(str::to_owned);
        let rows = self
            .scan(move |c| {
                let sql = match direction {
                    Direction::Outbound => {
                        "SELECT e.uuid, e.collection, e.name, e.data FROM relations r
                         JOIN entities e ON e.app = r.app AND e.uuid = r.target
                         WHERE r.app = ?1 AND r.source = ?2 AND r.relation = ?3 ORDER BY r.id"
                    }
                    Direction::Inbound => {
                        "SELECT e.uuid, e.collection, e.name, e.data FROM relations r
                         JOIN entities e ON e.app = r.app AND e.uuid = r.source
                         WHERE r.app = ?1 AND r.target = ?2 AND r.relation = ?3 ORDER BY r.id"
                    }
                };
                let mut stmt = c.prepare_cached(sql).map_err(backend)?;
                collect_entities(&mut stmt, args)
            })
            .await?;
        page_apart(rows, page).await
    }

    async fn related_uuids(
        &self,
        app: &str,
        owner: &str,
        relation: &str,
        direction: Direction,
    ) -> StoreResult<Vec<String>> {
        let sql = match direction {
            Direction::Outbound => {
                "SELECT target FROM relations WHERE app = ?1 AND source = ?2 AND relation = ?3 ORDER BY id"
            }
            Direction::Inbound => {
                "SELECT source FROM relations WHERE app = ?1 AND target = ?2 AND relation = ?3 ORDER BY id"
            }
        };
        self.all(sql, strs_vec(&[app, owner, relation]), |r| r.get(0))
            .await
    }

    async fn relation_names(
        &self,
        app: &str,
        entities: &[String],
    ) -> StoreResult<Vec<(String, Direction, String)>> {
        // One statement of two index range scans, (app, source, relation, …) and (app, target,
        // relation), each in relation order: no sort and no temporary table (a UNION or a
        // DISTINCT would make one), and nothing to read for an entity without relations, the
        // common case. Repeats (one verb to many targets) are dropped here.
        let sql = "SELECT 0, relation FROM relations WHERE app = ?1 AND source = ?2
                   UNION ALL
                   SELECT 1, relation FROM relations WHERE app = ?1 AND target = ?2";
        self.read(|c| {
            let mut st = c.prepare_cached(sql).map_err(backend)?;
            let mut out: Vec<(String, Direction, String)> = Vec::new();
            for entity in entities {
                let rows = st
                    .query_map(rusqlite::params![app, entity], |r| {
                        Ok((r.get::<_, i64>(0)? == 1, r.get::<_, String>(1)?))
                    })
                    .map_err(backend)?;
                for row in rows {
                    let (inbound, relation) = row.map_err(backend)?;
                    let direction = if inbound {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    };
                    let repeat = out
                        .last()
                        .is_some_and(|(e, d, r)| e == entity && *d == direction && *r == relation);
                    if !repeat {
                        out.push((entity.clone(), direction, relation));
                    }
                }
            }
            Ok(out)
        })
    }

    async fn permissions(&self, app: &str, owner: &str) -> StoreResult<Vec<String>> {
        let sql = "SELECT permission FROM permissions WHERE app = ?1 AND owner = ?2
                   ORDER BY permission";
        self.all(sql, strs_vec(&[app, owner]), |r| r.get(0)).await
    }

    async fn add_permission(&self, app: &str, owner: &str, permission: &str) -> StoreResult<bool> {
        let sql = "INSERT OR IGNORE INTO permissions VALUES (?1, ?2, ?3)";
        Ok(self.exec(sql, strs_vec(&[app, owner, permission])).await? > 0)
    }

    async fn remove_permission(
        &self,
        app: &str,
        owner: &str,
        permission: &str,
    ) -> StoreResult<bool> {
        let sql = "DELETE FROM permissions WHERE app = ?1 AND owner = ?2 AND permission = ?3";
        Ok(self.exec(sql, strs_vec(&[app, owner, permission])).await? > 0)
    }

    // Writes sent again (crate::dedup): claims and answers go through the writer, so a claim
    // is committed before the write it guards.
    async fn claim_write(
        &self,
        app: &str,
        write_id: &str,
        owner: &str,
        fingerprint: &str,
        now: i64,
    ) -> StoreResult<Option<WriteRecord>> {
        let args = strs_vec(&[app, write_id, owner, fingerprint]);
        self.call(move |c| {
            let added = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO write_ids(app, write_id, owner, fingerprint, created)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut st| st.execute(params![args[0], args[1], args[2], args[3], now]))
                .map_err(backend)?;
            if added == 1 {
                return Ok(None);
            }
            c.prepare_cached(
                "SELECT owner, fingerprint, status, body FROM write_ids
                 WHERE app = ?1 AND write_id = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![args[0], args[1]], |r| {
                    let status: Option<u16> = r.get(2)?;
                    let body: Option<String> = r.get(3)?;
                    Ok(WriteRecord {
                        owner: r.get(0)?,
                        fingerprint: r.get(1)?,
                        answer: status.map(|s| (s, body.unwrap_or_default())),
                    })
                })
            })
            .map(Some)
            .map_err(backend)
        })
        .await
    }

    async fn finish_write(
        &self,
        app: &str,
        write_id: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()> {
        let args = strs_vec(&[app, write_id, body]);
        self.call(move |c| {
            c.prepare_cached(
                "UPDATE write_ids SET status = ?3, body = ?4 WHERE app = ?1 AND write_id = ?2",
            )
            .and_then(|mut st| st.execute(params![args[0], args[1], status, args[2]]))
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn release_write(&self, app: &str, write_id: &str) -> StoreResult<()> {
        self.exec(
            "DELETE FROM write_ids WHERE app = ?1 AND write_id = ?2 AND status IS NULL",
            strs_vec(&[app, write_id]),
        )
        .await
        .map(drop)
    }

    async fn prune_writes(&self, before_ms: i64, keep: u64) -> StoreResult<u64> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.call(move |c| {
            let old = c
                .execute("DELETE FROM write_ids WHERE created < ?1", [before_ms])
                .map_err(backend)?;
            let over = c
                .execute(
                    "DELETE FROM write_ids WHERE rowid IN
                     (SELECT rowid FROM write_ids ORDER BY created DESC LIMIT -1 OFFSET ?1)",
                    [keep],
                )
                .map_err(backend)?;
            Ok((old + over) as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_embedded_store_keeps_the_contract() {
        let dirs = std::sync::Mutex::new(Vec::new());
        crate::store::contract::run_all(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = SqliteStore::open(dir.path()).expect("store opens");
            dirs.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
            async move { std::sync::Arc::new(store) as std::sync::Arc<dyn crate::store::Store> }
        })
        .await;
    }
    use super::*;

    #[test]
    fn a_second_store_on_the_same_dir_waits_for_the_first_then_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The first lets go while the second waits: the second opens.
        let first = SqliteStore::open(dir.path()).expect("first store");
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = SqliteStore::open(dir.path()).expect("opens once the first is gone");
        letting_go.join().expect("thread");
        // The second stays: a third is refused after the wait.
        let started = std::time::Instant::now();
        let third = SqliteStore::open(dir.path()).err().expect("refused");
        assert!(third.to_string().contains("in use"), "{third}");
        assert!(started.elapsed() >= LOCK_WAIT);
        drop(second);
    }

    /// A database written before the index existed gets it on start: its entities answer
    /// indexed queries at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_database_gets_its_index_on_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("store opens");
        let books: Vec<Entity> = (0..30)
            .map(|i| {
                crate::store::contract::entity(
                    "books",
                    None,
                    serde_json::json!({"n": i, "t": "a word"}),
                )
            })
            .collect();
        for b in &books {
            store.insert_entity("app", b, None).await.expect("insert");
        }
        drop(store);
        let old = Connection::open(dir.path().join("gridsocket.db")).expect("db");
        old.execute_batch("DELETE FROM props; DELETE FROM words; PRAGMA user_version = 0;")
            .expect("as before the index");
        drop(old);
        let store = SqliteStore::open(dir.path()).expect("store reopens");
        for (ql, count) in [
            ("select * where n = 7", 1),
            ("select * where t contains 'word' order by n desc", 10),
        ] {
            let q = gridsocket_core::Query::parse(ql).expect("ql");
            let page = PageQuery {
                max_rows: Some(0),
                ..PageQuery::first(Some(&q), 10)
            };
            let got = store.query("app", "books", &page).await.expect(ql);
            assert_eq!(got.entities.len(), count, "{ql}");
        }
    }
}
