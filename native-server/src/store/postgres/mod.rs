//! The PostgreSQL store, for running several gateway and API nodes on one database.
//!
//! It keeps the embedded store's behaviour, table for table: the same change log with a
//! gap-free `seq` per application, the same queue pointers and transactions. What SQLite gets
//! from having one writer, this store gets from row locks: an application's `app_seq` row
//! serializes its writers' log appends and commits, so the log becomes visible in `seq` order
//! on every node, and each node commits the writes waiting for that row together (`batch`); a
//! queue consumer's row serializes the reads of that consumer id, whichever node they come
//! from, so no message goes to two readers of one consumer at once.

mod batch;
mod search;

use super::plan::{self, Taken};
use super::rows::{entity_change, kind_name, kind_of, page_apart, queue_change, queue_message};
use super::{
    AdminRecord, AppRecord, Asset, ChangeBatch, ChangeRecord, Direction, Entity, EntityKey,
    OrgRecord, Page, PageQuery, QueueRead, QueuedMessage, Store, StoreError, StoreResult,
    TokenKind, TokenRecord, WriteRecord,
};
use async_trait::async_trait;
use batch::BatchTx;
use deadpool_postgres::{Client, Transaction};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use gridsocket_core::subscription::ChangeKind;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Schema migrations, applied in order at start, each once (recorded in
/// `gridsocket_migrations`). Text columns compare byte-wise (`COLLATE "C"`), as SQLite's do;
/// names that are unique regardless of case have unique indexes on `lower(name)`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001.sql"),
    include_str!("migrations/0002.sql"),
    include_str!("migrations/0003.sql"),
    include_str!("migrations/0004.sql"),
    include_str!("migrations/0005.sql"),
];

/// Any key; it names the lock that lets one node at a time migrate the schema.
const MIGRATION_LOCK: i64 = 0x6772_6964_736f_636b;

/// Connections per node. Writes hold one for their transaction; reads for one statement.
const POOL_SIZE: usize = 16;

/// The PostgreSQL store: a pool of connections, statements prepared once per connection.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Group commit of the writes that append to a change log.
    batcher: batch::Batcher,
}

/// A connection from the pool, or why there is none: one that did not come free in time is
/// the node being busy, and one that could not be made is the database out of reach (in
/// both, nothing was done), not a failure.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Timeout(_) => StoreError::Busy,
        deadpool_postgres::PoolError::Backend(e) => StoreError::Unavailable(e.to_string()),
        other => backend(other),
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    let code = (&e as &dyn std::any::Any)
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code);
    match code {
        Some(c) if *c == SqlState::DISK_FULL => StoreError::Full,
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => StoreError::ReadOnly,
        _ => StoreError::Backend(Box::new(e)),
    }
}

/// A unique-constraint violation is a taken name; anything else is a backend failure.
fn sql_err(e: tokio_postgres::Error, what: &str) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Duplicate(what.to_owned())
    } else {
        backend(e)
    }
}

type Param<'a> = &'a (dyn ToSql + Sync);

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`; `?options=-csearch_path%3Dname` picks
    /// a schema) and applies the migrations it has not seen yet.
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        let config: tokio_postgres::Config = url.parse().map_err(backend)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(backend)?;
        let store = PostgresStore {
            batcher: batch::Batcher::start(pool.clone()),
            pool,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies every migration not yet recorded, under a lock so that nodes starting together
    /// do not race.
    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS gridsocket_migrations(
                 version INTEGER PRIMARY KEY, applied BIGINT NOT NULL)",
        )
        .await
        .map_err(backend)?;
        let done: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM gridsocket_migrations",
                &[],
            )
            .await
            .map_err(backend)?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i32 + 1;
            if version <= done {
                continue;
            }
            tx.batch_execute(sql).await.map_err(backend)?;
            if version == search::INDEX_MIGRATION {
                search::build_index(&tx).await?;
            }
            tx.execute(
                "INSERT INTO gridsocket_migrations VALUES ($1, $2)",
                &[&version, &super::rows::wall_ms()],
            )
            .await
            .map_err(backend)?;
            tracing::info!(version, "applied schema migration");
        }
        tx.commit().await.map_err(backend)
    }

    /// The first row of a query, mapped.
    async fn one<T>(
        &self,
        sql: &str,
        args: &[Param<'_>],
        row: fn(&Row) -> Result<T, tokio_postgres::Error>,
    ) -> StoreResult<Option<T>> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(backend)?;
        let found = client.query_opt(&st, args).await.map_err(backend)?;
        found.as_ref().map(row).transpose().map_err(backend)
    }

    /// Every row of a query, mapped.
    async fn all<T>(
        &self,
        sql: &str,
        args: &[Param<'_>],
        row: fn(&Row) -> Result<T, tokio_postgres::Error>,
    ) -> StoreResult<Vec<T>> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(backend)?;
        let rows = client.query(&st, args).await.map_err(backend)?;
        rows.iter()
            .map(row)
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    /// Executes one statement; returns how many rows it changed.
    async fn exec(&self, sql: &str, args: &[Param<'_>]) -> StoreResult<u64> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(backend)?;
        client.execute(&st, args).await.map_err(backend)
    }

    async fn entities(&self, sql: &str, args: &[Param<'_>]) -> StoreResult<Vec<Entity>> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(backend)?;
        let rows = client.query(&st, args).await.map_err(backend)?;
        rows.iter().map(to_entity).collect()
    }
}

fn org_row(r: &Row) -> Result<OrgRecord, tokio_postgres::Error> {
    Ok(OrgRecord {
        uuid: r.try_get(0)?,
        name: r.try_get(1)?,
        client_id: r.try_get(2)?,
        client_secret: r.try_get(3)?,
        created: r.try_get(4)?,
    })
}

const ORG_COLS: &str = "uuid, name, client_id, client_secret, created";

fn admin_row(r: &Row) -> Result<AdminRecord, tokio_postgres::Error> {
    Ok(AdminRecord {
        uuid: r.try_get(0)?,
        username: r.try_get(1)?,
        email: r.try_get(2)?,
        name: r.try_get(3)?,
        password_hash: r.try_get(4)?,
        created: r.try_get(5)?,
    })
}

const ADMIN_COLS: &str = "uuid, username, email, name, password_hash, created";

const APP_COLS: &str =
    "a.uuid, a.org_uuid, o.name, a.name, a.client_id, a.client_secret, a.created";

fn app_row(r: &Row) -> Result<AppRecord, tokio_postgres::Error> {
    Ok(AppRecord {
        uuid: r.try_get(0)?,
        org_uuid: r.try_get(1)?,
        org_name: r.try_get(2)?,
        name: r.try_get(3)?,
        client_id: r.try_get(4)?,
        client_secret: r.try_get(5)?,
        created: r.try_get(6)?,
    })
}

fn string_row(r: &Row) -> Result<String, tokio_postgres::Error> {
    r.try_get(0)
}

/// Reads `(uuid, collection, name, data)` columns into an entity.
fn to_entity(r: &Row) -> StoreResult<Entity> {
    let data: String = r.try_get(3).map_err(backend)?;
    Ok(Entity {
        uuid: r.try_get(0).map_err(backend)?,
        collection: r.try_get(1).map_err(backend)?,
        name: r.try_get(2).map_err(backend)?,
        data: serde_json::from_str(&data).map_err(backend)?,
    })
}

/// Appends a change inside the batch's transaction and returns its position. The batch holds
/// the application's `app_seq` row until it ends, so positions are gap-free and become
/// visible in order.
async fn append_change(tx: &BatchTx<'_>, app: &str, rec: &ChangeRecord) -> StoreResult<u64> {
    let offset = tx.take_seqs(1);
    let entity = Value::Object(rec.entity.clone()).to_string();
    let previous = rec
        .previous
        .as_ref()
        .map(|p| Value::Object(p.clone()).to_string());
    let st = tx
        .prepare_cached(
            "INSERT INTO changes
             SELECT $1, s.seq + $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
             FROM app_seq s WHERE s.app = $1
             RETURNING seq",
        )
        .await
        .map_err(backend)?;
    let row = tx
        .query_one(
            &st,
            &[
                &app,
                &offset,
                &rec.created,
                &kind_name(rec.kind),
                &rec.collection,
                &rec.uuid,
                &rec.name,
                &entity,
                &previous,
                &rec.feed_owner,
                &rec.queue,
            ],
        )
        .await
        .map_err(backend)?;
    Ok(row.try_get::<_, i64>(0).map_err(backend)? as u64)
}

/// Replaces an entity's name and properties inside `tx` and logs the update; false if there is
/// no such entity.
async fn replace_in(tx: &BatchTx<'_>, app: &str, e: &Entity) -> StoreResult<bool> {
    let Some(before) = load_for_update(tx.client(), app, &e.uuid).await? else {
        return Ok(false);
    };
    let data = Value::Object(e.data.clone()).to_string();
    let st = tx
        .prepare_cached("UPDATE entities SET name = $3, data = $4 WHERE app = $1 AND uuid = $2")
        .await
        .map_err(backend)?;
    tx.execute(&st, &[&app, &e.uuid, &e.name, &data])
        .await
        .map_err(|err| {
            let name = e.name.clone().unwrap_or_default();
            sql_err(err, &format!("an entity named {name:?}"))
        })?;
    search::index_entity(tx.client(), app, e, false).await?;
    let change = entity_change(ChangeKind::Update, e, Some(before.data));
    append_change(tx, app, &change).await?;
    Ok(true)
}

/// A new entity, as an insert takes it.
pub(super) struct NewEntity {
    entity: Entity,
    /// A user's password hash.
    secret: Option<String>,
}

impl NewEntity {
    /// Whether it has a name, which another node's insert may take too.
    pub(super) fn is_named(&self) -> bool {
        self.entity.name.is_some()
    }
}

/// New entities as the columns their statements take, each an array of one value per entity.
pub(super) struct NewColumns<'a> {
    uuids: Vec<&'a str>,
    collections: Vec<&'a str>,
    names: Vec<Option<&'a str>>,
    data: Vec<String>,
    secrets: Vec<Option<&'a str>>,
    index: search::IndexArrays<'a>,
    created: i64,
    kind: &'static str,
}

impl<'a> NewColumns<'a> {
    pub(super) fn of(new: &[&'a NewEntity]) -> NewColumns<'a> {
        let entities = || new.iter().map(|n| &n.entity);
        NewColumns {
            uuids: entities().map(|e| e.uuid.as_str()).collect(),
            collections: entities().map(|e| e.collection.as_str()).collect(),
            names: entities().map(|e| e.name.as_deref()).collect(),
            data: entities()
                .map(|e| Value::Object(e.data.clone()).to_string())
                .collect(),
            secrets: new.iter().map(|n| n.secret.as_deref()).collect(),
            index: search::IndexArrays::of(entities()),
            created: super::rows::wall_ms(),
            kind: kind_name(ChangeKind::Create),
        }
    }

    /// How many entities.
    pub(super) fn len(&self) -> usize {
        self.uuids.len()
    }

    /// Whether any of them has a name: only a name can collide with another node's insert.
    pub(super) fn named(&self) -> bool {
        self.names.iter().any(Option::is_some)
    }

    /// The parameters of [`insert_sql`] and [`insert_rows_sql`] (`$1` to `$17`).
    fn row_params<'p>(&'p self, app: &'p &str) -> Vec<&'p (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![app];
        params.extend(self.index.params());
        params.extend([
            &self.uuids as &(dyn ToSql + Sync),
            &self.collections,
            &self.names,
            &self.data,
            &self.secrets,
        ]);
        params
    }

    /// The parameters of [`log_inserts_sql`].
    fn log_params<'p>(&'p self, app: &'p &str, n: &'p i64) -> [&'p (dyn ToSql + Sync); 8] {
        [
            app,
            n,
            &self.uuids,
            &self.collections,
            &self.names,
            &self.data,
            &self.created,
            &self.kind,
        ]
    }

    fn failed(&self, err: tokio_postgres::Error) -> StoreError {
        let named: Vec<&str> = self.names.iter().flatten().copied().collect();
        sql_err(err, &format!("an entity named {:?}", named.join(", ")))
    }
}

/// Inserts new entities inside `tx`, with their index rows, and logs their creation, in one
/// statement: a statement costs the database a round of its protocol and the opening of
/// every table and index it writes, more than a row does (and each entity's JSON is written
/// once for both the row and the log). Any refused fails them all. The batch holds the
/// application's `app_seq` row already.
async fn insert_in(tx: &BatchTx<'_>, app: &str, cols: &NewColumns<'_>) -> StoreResult<()> {
    let first = tx.take_seqs(cols.len());
    let mut params = cols.row_params(&app);
    params.extend([&first as &(dyn ToSql + Sync), &cols.created, &cols.kind]);
    let st = tx.prepare_cached(insert_sql()).await.map_err(backend)?;
    tx.execute(&st, &params).await.map_err(|e| cols.failed(e))?;
    Ok(())
}

/// Inserts new entities with their index rows but not their log entries, which
/// [`log_inserts`] appends: this part needs no lock, so two batches of one application do it
/// side by side. `st` is [`insert_rows_sql`], prepared.
pub(super) async fn insert_rows(
    client: &Client,
    st: &tokio_postgres::Statement,
    app: &str,
    cols: &NewColumns<'_>,
) -> StoreResult<()> {
    client
        .execute(st, &cols.row_params(&app))
        .await
        .map_err(|e| cols.failed(e))?;
    Ok(())
}

/// Takes the application's next positions in its log, making its `app_seq` row if this is its
/// first write and holding the row's lock until the commit, and logs the creation of the new
/// entities [`insert_rows`] inserted. `st` is [`log_inserts_sql`], prepared.
pub(super) async fn log_inserts(
    client: &Client,
    st: &tokio_postgres::Statement,
    app: &str,
    cols: &NewColumns<'_>,
) -> StoreResult<()> {
    let n = cols.len() as i64;
    client
        .execute(st, &cols.log_params(&app, &n))
        .await
        .map_err(backend)?;
    Ok(())
}

/// The statement of [`insert_in`].
fn insert_sql() -> &'static str {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STATEMENT.get_or_init(|| {
        format!(
            "WITH {INSERT_ENTITIES}, {}
             INSERT INTO changes
             SELECT $1, s.seq + $18 + o - 1, $19, $20, c, u, n, d, NULL, NULL, NULL
             FROM app_seq s,
                  unnest($13::text[], $14::text[], $15::text[], $16::text[])
                  WITH ORDINALITY AS t(u, c, n, d, o)
             WHERE s.app = $1",
            search::INSERT_NEW_INDEX_ROWS
        )
    })
}

/// The statement of [`insert_rows`].
pub(super) fn insert_rows_sql() -> &'static str {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STATEMENT.get_or_init(|| {
        format!(
            "WITH {INSERT_ENTITIES}, {} SELECT 1",
            search::INSERT_NEW_INDEX_ROWS
        )
    })
}

/// The statement of [`log_inserts`]: the row's update takes its lock (the insert its first
/// value), and the log's positions are the ones it moved past.
pub(super) const LOG_INSERTS_SQL: &str = "
    WITH s AS (INSERT INTO app_seq(app, seq) VALUES ($1, $2)
               ON CONFLICT (app) DO UPDATE SET seq = app_seq.seq + $2
               RETURNING seq - $2 AS base)
    INSERT INTO changes
    SELECT $1, s.base + o, $7, $8, c, u, n, d, NULL, NULL, NULL
    FROM s, unnest($3::text[], $4::text[], $5::text[], $6::text[])
            WITH ORDINALITY AS t(u, c, n, d, o)";

/// The entities' rows, as a part of a `WITH`: `$1` the application, `$13` to `$17` the
/// columns of [`NewColumns`].
const INSERT_ENTITIES: &str = "
    e AS (INSERT INTO entities SELECT $1, u, c, n, d, s
          FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::text[])
               AS t(u, c, n, d, s))";

/// Deletes an entity inside `tx` with what hangs on it, and logs it; false if there is none.
async fn delete_in(tx: &BatchTx<'_>, app: String, uuid: String) -> StoreResult<bool> {
    let Some(before) = load_for_update(tx.client(), &app, &uuid).await? else {
        return Ok(false);
    };
    let n = tx
        .execute(
            "DELETE FROM entities WHERE app = $1 AND uuid = $2",
            &[&app, &uuid],
        )
        .await
        .map_err(backend)?;
    append_change(tx, &app, &entity_change(ChangeKind::Delete, &before, None)).await?;
    search::unindex(tx.client(), &app, &uuid).await?;
    for sql in [
        "DELETE FROM relations WHERE app = $1 AND (source = $2 OR target = $2)",
        "DELETE FROM permissions WHERE app = $1 AND owner = $2",
        "DELETE FROM assets WHERE app = $1 AND uuid = $2",
    ] {
        tx.execute(sql, &[&app, &uuid]).await.map_err(backend)?;
    }
    Ok(n > 0)
}

/// Posts messages to a queue and its subscribers inside `tx`, each logged.
async fn queue_post_in(
    tx: &BatchTx<'_>,
    app: String,
    queue: String,
    messages: Vec<Map<String, Value>>,
    now: i64,
) -> StoreResult<Vec<Value>> {
    let (app, queue) = (app.as_str(), queue.as_str());
    let mut targets = vec![queue.to_owned()];
    for row in tx
        .query(
            "SELECT subscriber FROM queue_subs WHERE app = $1 AND queue = $2",
            &[&app, &queue],
        )
        .await
        .map_err(backend)?
    {
        let sub: String = row.get(0);
        if !targets.contains(&sub) {
            targets.push(sub);
        }
    }
    let mut posted = Vec::with_capacity(messages.len());
    for props in messages {
        let (uuid, data) = queue_message(props, now);
        let text = Value::Object(data.clone()).to_string();
        for target in &targets {
            let rec = queue_change(&uuid, &data, target, now);
            // The batch holds the application's lock from its start, so message ids grow
            // in commit order and a consumer's pointer never skips one.
            let seq = append_change(tx, app, &rec).await? as i64;
            tx.execute(
                "INSERT INTO queue_messages(app, queue, uuid, seq, created, data)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                &[&app, target, &uuid, &seq, &now, &text],
            )
            .await
            .map_err(backend)?;
        }
        posted.push(Value::Object(data));
    }
    Ok(posted)
}

async fn load_for_update(
    tx: &impl GenericClient,
    app: &str,
    uuid: &str,
) -> StoreResult<Option<Entity>> {
    let row = tx
        .query_opt(
            "SELECT uuid, collection, name, data FROM entities
             WHERE app = $1 AND uuid = $2 FOR UPDATE",
            &[&app, &uuid],
        )
        .await
        .map_err(backend)?;
    row.as_ref().map(to_entity).transpose()
}

/// A queue message by id: its log position and body.
async fn message_by_id(tx: &Transaction<'_>, id: i64) -> StoreResult<Option<(u64, Value)>> {
    let row = tx
        .query_opt("SELECT seq, data FROM queue_messages WHERE id = $1", &[&id])
        .await
        .map_err(backend)?;
    row.map(|r| {
        let (seq, data): (i64, String) = (r.get(0), r.get(1));
        Ok((seq as u64, serde_json::from_str(&data).map_err(backend)?))
    })
    .transpose()
}

fn change_row(r: &Row) -> StoreResult<ChangeRecord> {
    let kind: String = r.get(2);
    let kind = kind_of(&kind).ok_or_else(|| {
        backend(std::io::Error::other(format!(
            "unknown change kind {kind:?}"
        )))
    })?;
    let entity: String = r.get(6);
    let previous: Option<String> = r.get(7);
    Ok(ChangeRecord {
        seq: r.get::<_, i64>(0) as u64,
        created: r.get(1),
        kind,
        collection: r.get(3),
        uuid: r.get(4),
        name: r.get(5),
        entity: serde_json::from_str(&entity).map_err(backend)?,
        previous: previous
            .map(|p| serde_json::from_str::<Map<String, Value>>(&p))
            .transpose()
            .map_err(backend)?,
        feed_owner: r.get(8),
        queue: r.get(9),
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_org(&self, org: &OrgRecord, admin: &AdminRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO orgs VALUES ($1, $2, $3, $4, $5)",
            &[
                &org.uuid,
                &org.name,
                &org.client_id,
                &org.client_secret,
                &org.created,
            ],
        )
        .await
        .map_err(|e| sql_err(e, "organization"))?;
        tx.execute(
            "INSERT INTO admins VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &admin.uuid,
                &admin.username,
                &admin.email,
                &admin.name,
                &admin.password_hash,
                &admin.created,
            ],
        )
        .await
        .map_err(|e| sql_err(e, "admin username or email"))?;
        tx.execute(
            "INSERT INTO org_admins VALUES ($1, $2)",
            &[&org.uuid, &admin.uuid],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn org_by_name(&self, name: &str) -> StoreResult<Option<OrgRecord>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE lower(name) = lower($1)");
        self.one(&sql, &[&name], org_row).await
    }

    async fn org_by_uuid(&self, uuid: &str) -> StoreResult<Option<OrgRecord>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE uuid = $1");
        self.one(&sql, &[&uuid], org_row).await
    }

    async fn org_by_client_id(&self, client_id: &str) -> StoreResult<Option<OrgRecord>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE client_id = $1");
        self.one(&sql, &[&client_id], org_row).await
    }

    async fn admin_by_login(&self, login: &str) -> StoreResult<Option<AdminRecord>> {
        let sql = format!(
            "SELECT {ADMIN_COLS} FROM admins
             WHERE lower(username) = lower($1) OR lower(email) = lower($1)"
        );
        self.one(&sql, &[&login], admin_row).await
    }

    async fn admin_by_uuid(&self, uuid: &str) -> StoreResult<Option<AdminRecord>> {
        let sql = format!("SELECT {ADMIN_COLS} FROM admins WHERE uuid = $1");
        self.one(&sql, &[&uuid], admin_row).await
    }

    async fn admin_orgs(&self, admin_uuid: &str) -> StoreResult<Vec<OrgRecord>> {
        let sql = "SELECT o.uuid, o.name, o.client_id, o.client_secret, o.created
                   FROM orgs o JOIN org_admins m ON m.org_uuid = o.uuid
                   WHERE m.admin_uuid = $1 ORDER BY o.created";
        self.all(sql, &[&admin_uuid], org_row).await
    }

    async fn create_app(
        &self,
        app: &AppRecord,
        seed: &[Entity],
        permissions: &[(String, String)],
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO apps VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &app.uuid,
                &app.org_uuid,
                &app.name,
                &app.client_id,
                &app.client_secret,
                &app.created,
            ],
        )
        .await
        .map_err(|e| sql_err(e, "application"))?;
        for e in seed {
            let data = Value::Object(e.data.clone()).to_string();
            tx.execute(
                "INSERT INTO entities VALUES ($1, $2, $3, $4, $5, NULL)",
                &[&app.uuid, &e.uuid, &e.collection, &e.name, &data],
            )
            .await
            .map_err(|err| sql_err(err, "entity"))?;
            search::index_entity(&tx, &app.uuid, e, true).await?;
        }
        for (owner, perm) in permissions {
            tx.execute(
                "INSERT INTO permissions VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&app.uuid, owner, perm],
            )
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn app_by_name(&self, org_uuid: &str, name: &str) -> StoreResult<Option<AppRecord>> {
        let sql = format!(
            "SELECT {APP_COLS} FROM apps a JOIN orgs o ON o.uuid = a.org_uuid
             WHERE a.org_uuid = $1 AND lower(a.name) = lower($2)"
        );
        self.one(&sql, &[&org_uuid, &name], app_row).await
    }

    async fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<AppRecord>> {
        let sql = format!(
            "SELECT {APP_COLS} FROM apps a JOIN orgs o ON o.uuid = a.org_uuid
             WHERE a.client_id = $1"
        );
        self.one(&sql, &[&client_id], app_row).await
    }

    async fn apps_of_org(&self, org_uuid: &str) -> StoreResult<Vec<AppRecord>> {
        let sql = format!(
            "SELECT {APP_COLS} FROM apps a JOIN orgs o ON o.uuid = a.org_uuid
             WHERE a.org_uuid = $1 ORDER BY a.created"
        );
        self.all(&sql, &[&org_uuid], app_row).await
    }

    async fn put_token(&self, t: &TokenRecord) -> StoreResult<()> {
        let sql = "INSERT INTO tokens VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT(hash) DO UPDATE SET kind = $2, subject = $3, scope = $4,
                   created = $5, expires = $6";
        let hash = t.hash.as_slice();
        self.exec(
            sql,
            &[
                &hash,
                &t.kind.as_str(),
                &t.subject,
                &t.scope,
                &t.created,
                &t.expires,
            ],
        )
        .await?;
        Ok(())
    }

    async fn token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        let sql = "SELECT kind, subject, scope, created, expires FROM tokens WHERE hash = $1";
        let bytes = hash.as_slice();
        let row = self
            .one(sql, &[&bytes], |r| {
                Ok((
                    r.try_get::<_, String>(0)?,
                    r.try_get::<_, String>(1)?,
                    r.try_get::<_, String>(2)?,
                    r.try_get::<_, i64>(3)?,
                    r.try_get::<_, i64>(4)?,
                ))
            })
            .await?;
        Ok(row.and_then(|(kind, subject, scope, created, expires)| {
            Some(TokenRecord {
                hash: *hash,
                kind: TokenKind::parse(&kind)?,
                subject,
                scope,
                created,
                expires,
            })
        }))
    }

    async fn revoke_tokens(&self, subject: &str, except: Option<&[u8; 32]>) -> StoreResult<u64> {
        let keep: Option<&[u8]> = except.map(|h| h.as_slice());
        self.exec(
            "DELETE FROM tokens WHERE subject = $1 AND hash IS DISTINCT FROM $2",
            &[&subject, &keep],
        )
        .await
    }

    async fn revoke_token(&self, hash: &[u8; 32]) -> StoreResult<bool> {
        let hash: &[u8] = hash.as_slice();
        Ok(self
            .exec("DELETE FROM tokens WHERE hash = $1", &[&hash])
            .await?
            > 0)
    }

    async fn insert_entity(&self, app: &str, e: &Entity, secret: Option<&str>) -> StoreResult<()> {
        let new = NewEntity {
            entity: e.clone(),
            secret: secret.map(str::to_owned),
        };
        self.batcher.insert(app, new).await
    }

    async fn entity(
        &self,
        app: &str,
        collection: Option<&str>,
        key: EntityKey<'_>,
    ) -> StoreResult<Option<Entity>> {
        let cols = "SELECT uuid, collection, name, data FROM entities";
        let client = self.client().await?;
        let row = match (key, collection) {
            (EntityKey::Uuid(uuid), Some(c)) => {
                let sql = format!("{cols} WHERE app = $1 AND uuid = $2 AND collection = $3");
                let st = client.prepare_cached(&sql).await.map_err(backend)?;
                client.query_opt(&st, &[&app, &uuid, &c]).await
            }
            (EntityKey::Uuid(uuid), None) => {
                let sql = format!("{cols} WHERE app = $1 AND uuid = $2");
                let st = client.prepare_cached(&sql).await.map_err(backend)?;
                client.query_opt(&st, &[&app, &uuid]).await
            }
            (EntityKey::Name(name), c) => {
                let sql = format!(
                    "{cols} WHERE app = $1 AND lower(name) = lower($2) AND collection = $3"
                );
                let st = client.prepare_cached(&sql).await.map_err(backend)?;
                client.query_opt(&st, &[&app, &name, &c]).await
            }
        }
        .map_err(backend)?;
        row.as_ref().map(to_entity).transpose()
    }

    async fn user_by_email(&self, app: &str, email: &str) -> StoreResult<Option<Entity>> {
        let sql = "SELECT uuid, collection, name, data FROM entities
                   WHERE app = $1 AND collection = 'users'
                     AND lower(data::json->>'email') = lower($2) LIMIT 1";
        Ok(self
            .entities(sql, &[&app, &email])
            .await?
            .into_iter()
            .next())
    }

    async fn user_secret(&self, app: &str, uuid: &str) -> StoreResult<Option<String>> {
        let sql = "SELECT secret FROM entities WHERE app = $1 AND uuid = $2";
        let found = self
            .one(sql, &[&app, &uuid], |r| r.try_get::<_, Option<String>>(0))
            .await?;
        Ok(found.flatten())
    }

    async fn set_user_secret(&self, app: &str, uuid: &str, secret: &str) -> StoreResult<()> {
        let sql = "UPDATE entities SET secret = $3 WHERE app = $1 AND uuid = $2";
        self.exec(sql, &[&app, &uuid, &secret]).await?;
        Ok(())
    }

    async fn replace_entity(&self, app: &str, e: &Entity) -> StoreResult<()> {
        let (a, e) = (app.to_owned(), Arc::new(e.clone()));
        self.log_write(app, move |tx| {
            let (a, e) = (a.clone(), e.clone());
            Box::pin(async move { replace_in(tx, &a, &e).await.map(|_| ()) })
        })
        .await
    }

    async fn put_asset(&self, app: &str, e: &Entity, asset: &Asset) -> StoreResult<bool> {
        let (a, e, asset) = (app.to_owned(), Arc::new(e.clone()), Arc::new(asset.clone()));
        self.log_write(app, move |tx| {
            let (a, e, asset) = (a.clone(), e.clone(), asset.clone());
            Box::pin(async move {
                if !replace_in(tx, &a, &e).await? {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO assets VALUES ($1, $2, $3, $4)
                     ON CONFLICT (app, uuid) DO UPDATE SET content_type = $3, data = $4",
                    &[&a, &e.uuid, &asset.content_type, &asset.data],
                )
                .await
                .map_err(backend)?;
                Ok(true)
            })
        })
        .await
    }

    async fn asset(&self, app: &str, entity: &str) -> StoreResult<Option<Asset>> {
        let rows = self
            .all(
                "SELECT content_type, data FROM assets WHERE app = $1 AND uuid = $2",
                &[&app, &entity],
                |r| {
                    Ok(Asset {
                        content_type: r.try_get(0)?,
                        data: r.try_get(1)?,
                    })
                },
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn delete_entity(&self, app: &str, uuid: &str) -> StoreResult<bool> {
        let (a, uuid) = (app.to_owned(), uuid.to_owned());
        self.log_write(app, move |tx| {
            Box::pin(delete_in(tx, a.clone(), uuid.clone()))
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
        let (a, activity, owners) = (app.to_owned(), Arc::new(activity.clone()), owners.to_vec());
        self.log_write(app, move |tx| {
            let (a, activity, owners) = (a.clone(), activity.clone(), owners.clone());
            Box::pin(async move {
                for owner in &owners {
                    let added = tx
                        .execute(
                            "INSERT INTO relations(app, source, relation, target)
                             VALUES ($1, $2, 'feed', $3) ON CONFLICT DO NOTHING",
                            &[&a, owner, &activity.uuid],
                        )
                        .await
                        .map_err(backend)?;
                    if added > 0 {
                        let mut rec = entity_change(ChangeKind::FeedItem, &activity, None);
                        rec.feed_owner = Some(owner.clone());
                        append_change(tx, &a, &rec).await?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn log_position(&self, app: &str) -> StoreResult<u64> {
        let seq = self
            .one("SELECT seq FROM app_seq WHERE app = $1", &[&app], |r| {
                r.try_get::<_, i64>(0)
            })
            .await?;
        Ok(seq.unwrap_or(0) as u64)
    }

    async fn changes_since(&self, app: &str, after: u64, limit: usize) -> StoreResult<ChangeBatch> {
        let mut client = self.client().await?;
        // One snapshot: the batch, the retention floor and the position agree.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        let position: i64 = tx
            .query_opt("SELECT seq FROM app_seq WHERE app = $1", &[&app])
            .await
            .map_err(backend)?
            .map(|r| r.get(0))
            .unwrap_or(0);
        let oldest: Option<i64> = tx
            .query_one("SELECT MIN(seq) FROM changes WHERE app = $1", &[&app])
            .await
            .map_err(backend)?
            .get(0);
        let st = tx
            .prepare_cached(
                "SELECT seq, created, kind, collection, uuid, name, entity, previous,
                        feed_owner, queue
                 FROM changes WHERE app = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await
            .map_err(backend)?;
        let rows = tx
            .query(&st, &[&app, &(after as i64), &(limit as i64)])
            .await
            .map_err(backend)?;
        let changes = rows.iter().map(change_row).collect::<StoreResult<_>>()?;
        tx.commit().await.map_err(backend)?;
        Ok(ChangeBatch {
            changes,
            first_retained: oldest.map(|o| o as u64).unwrap_or(position as u64 + 1),
            position: position as u64,
        })
    }

    async fn prune_changes(&self, before_ms: i64) -> StoreResult<u64> {
        self.exec("DELETE FROM changes WHERE created < $1", &[&before_ms])
            .await
    }

    async fn queue_post(
        &self,
        app: &str,
        queue: &str,
        messages: &[Map<String, Value>],
        now: i64,
    ) -> StoreResult<Vec<Value>> {
        let (a, queue, messages) = (app.to_owned(), queue.to_owned(), messages.to_vec());
        self.log_write(app, move |tx| {
            Box::pin(queue_post_in(
                tx,
                a.clone(),
                queue.clone(),
                messages.clone(),
                now,
            ))
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let mut out = Vec::new();
        match read {
            QueueRead::Start => {
                let rows = tx
                    .query(
                        "SELECT seq, data FROM queue_messages WHERE app = $1 AND queue = $2
                         ORDER BY id LIMIT $3",
                        &[&app, &queue, &(limit as i64)],
                    )
                    .await
                    .map_err(backend)?;
                for r in rows {
                    let data: String = r.get(1);
                    out.push(QueuedMessage {
                        seq: r.get::<_, i64>(0) as u64,
                        message: serde_json::from_str(&data).map_err(backend)?,
                    });
                }
            }
            QueueRead::Consumer {
                consumer,
                timeout_ms,
            } => {
                // The consumer's row is the lock: reads of one consumer id take turns, on
                // whichever node they run.
                tx.execute(
                    "INSERT INTO queue_consumers VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
                    &[&app, &queue, consumer],
                )
                .await
                .map_err(backend)?;
                let position: i64 = tx
                    .query_one(
                        "SELECT position FROM queue_consumers
                         WHERE app = $1 AND queue = $2 AND consumer = $3 FOR UPDATE",
                        &[&app, &queue, consumer],
                    )
                    .await
                    .map_err(backend)?
                    .get(0);
                // Timed-out transactions of this consumer come again, in new transactions.
                let mut redelivered = Vec::new();
                if *timeout_ms > 0 {
                    let expired = tx
                        .query(
                            "DELETE FROM queue_tx WHERE id IN (
                                 SELECT id FROM queue_tx WHERE app = $1 AND queue = $2
                                 AND consumer = $3 AND expires <= $4
                                 ORDER BY message_id LIMIT $5)
                             RETURNING message_id",
                            &[&app, &queue, consumer, &now, &(limit as i64)],
                        )
                        .await
                        .map_err(backend)?;
                    for row in expired {
                        let message_id: i64 = row.get(0);
                        if let Some((seq, data)) = message_by_id(&tx, message_id).await? {
                            redelivered.push(Taken {
                                id: message_id,
                                seq,
                                data,
                            });
                        }
                    }
                }
                let rows = tx
                    .query(
                        "SELECT id, seq, data FROM queue_messages WHERE app = $1 AND queue = $2
                         AND id > $3 ORDER BY id LIMIT $4",
                        &[
                            &app,
                            &queue,
                            &position,
                            &(plan::fresh_limit(limit, redelivered.len()) as i64),
                        ],
                    )
                    .await
                    .map_err(backend)?;
                let mut fresh = Vec::with_capacity(rows.len());
                for r in rows {
                    let data: String = r.get(2);
                    fresh.push(Taken {
                        id: r.get(0),
                        seq: r.get::<_, i64>(1) as u64,
                        data: serde_json::from_str(&data).map_err(backend)?,
                    });
                }
                let read = plan::consumer_read(redelivered, fresh, position, *timeout_ms, now);
                for o in &read.opened {
                    tx.execute(
                        "INSERT INTO queue_tx VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&o.id, &app, &queue, consumer, &o.message, &o.expires],
                    )
                    .await
                    .map_err(backend)?;
                }
                tx.execute(
                    "UPDATE queue_consumers SET position = $4
                     WHERE app = $1 AND queue = $2 AND consumer = $3",
                    &[&app, &queue, consumer, &read.position],
                )
                .await
                .map_err(backend)?;
                out = read.messages;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    async fn queue_commit(&self, app: &str, queue: &str, transaction: &str) -> StoreResult<bool> {
        let sql = "DELETE FROM queue_tx WHERE app = $1 AND queue = $2 AND id = $3";
        Ok(self.exec(sql, &[&app, &queue, &transaction]).await? > 0)
    }

    async fn queue_next_expiry(
        &self,
        app: &str,
        queue: &str,
        consumer: &str,
    ) -> StoreResult<Option<i64>> {
        let sql =
            "SELECT MIN(expires) FROM queue_tx WHERE app = $1 AND queue = $2 AND consumer = $3";
        let found = self
            .one(sql, &[&app, &queue, &consumer], |r| {
                r.try_get::<_, Option<i64>>(0)
            })
            .await?;
        Ok(found.flatten())
    }

    async fn queue_subscribers(&self, app: &str, queue: &str) -> StoreResult<Vec<String>> {
        let sql =
            "SELECT subscriber FROM queue_subs WHERE app = $1 AND queue = $2 ORDER BY subscriber";
        self.all(sql, &[&app, &queue], string_row).await
    }

    async fn queue_subscribe(
        &self,
        app: &str,
        queue: &str,
        subscriber: &str,
        add: bool,
    ) -> StoreResult<bool> {
        let sql = if add {
            "INSERT INTO queue_subs VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM queue_subs WHERE app = $1 AND queue = $2 AND subscriber = $3"
        };
        Ok(self.exec(sql, &[&app, &queue, &subscriber]).await? > 0)
    }

    async fn queues(&self, app: &str) -> StoreResult<Vec<String>> {
        let sql = "SELECT DISTINCT queue FROM queue_messages WHERE app = $1 ORDER BY queue";
        self.all(sql, &[&app], string_row).await
    }

    async fn add_relation(
        &self,
        app: &str,
        source: &str,
        relation: &str,
        target: &str,
    ) -> StoreResult<bool> {
        let sql = "INSERT INTO relations(app, source, relation, target)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
        Ok(self.exec(sql, &[&app, &source, &relation, &target]).await? > 0)
    }

    async fn remove_relation(
        &self,
        app: &str,
        source: &str,
        relation: &str,
        target: &str,
    ) -> StoreResult<bool> {
        let sql = "DELETE FROM relations WHERE app = $1 AND source = $2 AND relation = $3
                   AND target = $4";
        Ok(self.exec(sql, &[&app, &source, &relation, &target]).await? > 0)
    }

    async fn related(
        &self,
        app: &str,
        owner: &str,
        relation: &str,
        direction: Direction,
        page: &PageQuery<'_>,
    ) -> StoreResult<Page> {
        let sql = match direction {
            Direction::Outbound => {
                "SELECT e.uuid, e.collection, e.name, e.data FROM relations r
                 JOIN entities e ON e.app = r.app AND e.uuid = r.target
                 WHERE r.app = $1 AND r.source = $2 AND r.relation = $3 ORDER BY r.id"
            }
            Direction::Inbound => {
                "SELECT e.uuid, e.collection, e.name, e.data FROM relations r
                 JOIN entities e ON e.app = r.app AND e.uuid = r.source
                 WHERE r.app = $1 AND r.target = $2 AND r.relation = $3 ORDER BY r.id"
            }
        };
        let rows = self.entities(sql, &[&app, &owner, &relation]).await?;
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
                "SELECT target FROM relations WHERE app = $1 AND source = $2 AND relation = $3
                 ORDER BY id"
            }
            Direction::Inbound => {
                "SELECT source FROM relations WHERE app = $1 AND target = $2 AND relation = $3
                 ORDER BY id"
            }
        };
        self.all(sql, &[&app, &owner, &relation], string_row).await
    }

    async fn relation_names(
        &self,
        app: &str,
        entities: &[String],
    ) -> StoreResult<Vec<(String, Direction, String)>> {
        if entities.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip for a whole page; each half reads an index by its prefix.
        let sql = "SELECT source, 0, relation FROM relations WHERE app = $1 AND source = ANY($2)
                   UNION
                   SELECT target, 1, relation FROM relations WHERE app = $1 AND target = ANY($2)";
        let rows = self
            .all(sql, &[&app, &entities], |r| {
                let inbound: i32 = r.try_get(1)?;
                Ok((
                    r.try_get::<_, String>(0)?,
                    inbound == 1,
                    r.try_get::<_, String>(2)?,
                ))
            })
            .await?;
        let mut out: Vec<(usize, bool, String, String)> = rows
            .into_iter()
            .filter_map(|(entity, inbound, relation)| {
                let at = entities.iter().position(|e| *e == entity)?;
                Some((at, inbound, relation, entity))
            })
            .collect();
        out.sort();
        Ok(out
            .into_iter()
            .map(|(_, inbound, relation, entity)| {
                let direction = if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                (entity, direction, relation)
            })
            .collect())
    }

    async fn permissions(&self, app: &str, owner: &str) -> StoreResult<Vec<String>> {
        let sql = "SELECT permission FROM permissions WHERE app = $1 AND owner = $2
                   ORDER BY permission";
        self.all(sql, &[&app, &owner], string_row).await
    }

    async fn add_permission(&self, app: &str, owner: &str, permission: &str) -> StoreResult<bool> {
        let sql = "INSERT INTO permissions VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        Ok(self.exec(sql, &[&app, &owner, &permission]).await? > 0)
    }

    async fn remove_permission(
        &self,
        app: &str,
        owner: &str,
        permission: &str,
    ) -> StoreResult<bool> {
        let sql = "DELETE FROM permissions WHERE app = $1 AND owner = $2 AND permission = $3";
        Ok(self.exec(sql, &[&app, &owner, &permission]).await? > 0)
    }

    // Writes sent again (crate::dedup): the claim is its own statement, committed before the
    // write it guards runs, so every node sees it.
    async fn claim_write(
        &self,
        app: &str,
        write_id: &str,
        owner: &str,
        fingerprint: &str,
        now: i64,
    ) -> StoreResult<Option<WriteRecord>> {
        // A record pruned between the two statements is claimed again.
        for _ in 0..3 {
            let added = self
                .exec(
                    "INSERT INTO write_ids(app, write_id, owner, fingerprint, created)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&app, &write_id, &owner, &fingerprint, &now],
                )
                .await?;
            if added == 1 {
                return Ok(None);
            }
            let found = self
                .one(
                    "SELECT owner, fingerprint, status, body FROM write_ids
                     WHERE app = $1 AND write_id = $2",
                    &[&app, &write_id],
                    |r| {
                        let status: Option<i32> = r.try_get(2)?;
                        let body: Option<String> = r.try_get(3)?;
                        Ok(WriteRecord {
                            owner: r.try_get(0)?,
                            fingerprint: r.try_get(1)?,
                            answer: status.map(|s| (s as u16, body.unwrap_or_default())),
                        })
                    },
                )
                .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Err(StoreError::Backend("a write id kept vanishing".into()))
    }

    async fn finish_write(
        &self,
        app: &str,
        write_id: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()> {
        let status = i32::from(status);
        self.exec(
            "UPDATE write_ids SET status = $3, body = $4 WHERE app = $1 AND write_id = $2",
            &[&app, &write_id, &status, &body],
        )
        .await
        .map(drop)
    }

    async fn release_write(&self, app: &str, write_id: &str) -> StoreResult<()> {
        self.exec(
            "DELETE FROM write_ids WHERE app = $1 AND write_id = $2 AND status IS NULL",
            &[&app, &write_id],
        )
        .await
        .map(drop)
    }

    async fn prune_writes(&self, before_ms: i64, keep: u64) -> StoreResult<u64> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let old = self
            .exec("DELETE FROM write_ids WHERE created < $1", &[&before_ms])
            .await?;
        let over = self
            .exec(
                "DELETE FROM write_ids WHERE (app, write_id) IN
                 (SELECT app, write_id FROM write_ids ORDER BY created DESC OFFSET $1)",
                &[&keep],
            )
            .await?;
        Ok(old + over)
    }
}

#[cfg(test)]
mod tests {
    use super::pool_error;
    use crate::api::ApiError;
    use crate::store::StoreError;
    use deadpool_postgres::{PoolError, TimeoutType};

    /// A node whose connections are all taken for the pool's wait answers `503 server_busy`
    /// with `Retry-After`, not `500 internal_error`: nothing was done, and a retry may pass.
    #[test]
    fn no_connection_in_time_is_busy_not_a_failure() {
        let err = pool_error(PoolError::Timeout(TimeoutType::Wait));
        assert!(matches!(err, StoreError::Busy), "{err}");
        let api = ApiError::from(err);
        assert_eq!(
            (api.status(), api.code(), api.retry_after()),
            (503, "server_busy", Some(1))
        );
        assert!(matches!(
            pool_error(PoolError::Closed),
            StoreError::Backend(_)
        ));
    }
}
