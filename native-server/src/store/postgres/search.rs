//! The PostgreSQL store's side of the property index: keeping it with every write, building
//! it for entities written before it existed, and the reads the search makes of it.

use super::{Param, PostgresStore, backend, to_entity};
use crate::store::index::{self, Arg, Leaf, Statement};
use crate::store::search::{From, IndexReads};
use crate::store::{Entity, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

/// The migration that creates the index tables: once it is applied, entities written before
/// get their rows.
pub(super) const INDEX_MIGRATION: i32 = 4;

/// The index rows of one or more entities, as the arrays that one statement per table takes.
#[derive(Default)]
pub(super) struct IndexArrays<'e> {
    collections: Vec<&'e str>,
    names: Vec<String>,
    kinds: Vec<i32>,
    nums: Vec<f64>,
    strs: Vec<String>,
    uuids: Vec<&'e str>,
    direct: Vec<i32>,
    word_collections: Vec<&'e str>,
    word_names: Vec<String>,
    words: Vec<String>,
    word_uuids: Vec<&'e str>,
}

impl<'e> IndexArrays<'e> {
    /// The rows of `entities`.
    pub(super) fn of(entities: impl IntoIterator<Item = &'e Entity>) -> IndexArrays<'e> {
        let mut a = IndexArrays::default();
        for e in entities {
            for r in index::index_rows(&e.data) {
                a.collections.push(&e.collection);
                a.names.push(r.name);
                a.kinds.push(r.key.kind as i32);
                a.nums.push(r.key.num);
                a.strs.push(r.key.text);
                a.uuids.push(&e.uuid);
                a.direct.push(i32::from(r.direct));
            }
            for (name, word) in index::words(&e.data) {
                a.word_collections.push(&e.collection);
                a.word_names.push(name);
                a.words.push(word);
                a.word_uuids.push(&e.uuid);
            }
        }
        a
    }

    /// Its parameters, `$2` to `$12` of [`INSERT_INDEX_ROWS`].
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.collections,
            &self.names,
            &self.kinds,
            &self.nums,
            &self.strs,
            &self.uuids,
            &self.direct,
            &self.word_collections,
            &self.word_names,
            &self.words,
            &self.word_uuids,
        ]
    }
}

/// The two inserts of index rows, as parts of a `WITH`: `$1` the application, `$2` to `$12`
/// [`IndexArrays::params`]. One statement per table, whatever the number of rows.
macro_rules! insert_index_rows {
    ($conflict:literal) => {
        concat!(
            "p AS (INSERT INTO props SELECT $1, c, n, k, v, s, u, d
                   FROM unnest($2::text[], $3::text[], $4::int[], $5::float8[], $6::text[],
                               $7::text[], $8::int[]) AS t(c, n, k, v, s, u, d) ",
            $conflict,
            "), w AS (INSERT INTO words SELECT $1, c, n, w, u
                      FROM unnest($9::text[], $10::text[], $11::text[], $12::text[])
                           AS t(c, n, w, u) ",
            $conflict,
            ")"
        )
    };
}

/// [`insert_index_rows`] for an entity that may have rows already, which stay.
pub(super) const INSERT_INDEX_ROWS: &str = insert_index_rows!("ON CONFLICT DO NOTHING");

/// [`insert_index_rows`] for new entities: a fresh uuid has no rows yet, and an entity's rows
/// are distinct ([`index::index_rows`]), so no row needs the check for an existing one, which
/// cost the database a second walk of each primary key (15 % of its time on a new entity).
pub(super) const INSERT_NEW_INDEX_ROWS: &str = insert_index_rows!("");

/// Writes an entity's index rows inside `tx`, replacing any it had, in one statement.
pub(super) async fn index_entity(
    tx: &impl GenericClient,
    app: &str,
    e: &Entity,
    fresh: bool,
) -> StoreResult<()> {
    if !fresh {
        unindex(tx, app, &e.uuid).await?;
    }
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = STATEMENT.get_or_init(|| format!("WITH {INSERT_INDEX_ROWS} SELECT 1"));
    let arrays = IndexArrays::of([e]);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&app];
    params.extend(arrays.params());
    let st = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.execute(&st, &params).await.map_err(backend)?;
    Ok(())
}

/// Removes an entity's index rows inside `tx`.
pub(super) async fn unindex(tx: &impl GenericClient, app: &str, uuid: &str) -> StoreResult<()> {
    for sql in [
        "DELETE FROM props WHERE app = $1 AND uuid = $2",
        "DELETE FROM words WHERE app = $1 AND uuid = $2",
    ] {
        let st = tx.prepare_cached(sql).await.map_err(backend)?;
        tx.execute(&st, &[&app, &uuid]).await.map_err(backend)?;
    }
    Ok(())
}

/// Gives every entity its index rows, in the migration's transaction, a thousand at a time.
pub(super) async fn build_index(tx: &Transaction<'_>) -> StoreResult<()> {
    let (mut app, mut uuid) = (String::new(), String::new());
    let mut count = 0u64;
    loop {
        let rows = tx
            .query(
                "SELECT app, uuid, collection, name, data FROM entities
                 WHERE (app, uuid) > ($1, $2) ORDER BY app, uuid LIMIT 1000",
                &[&app, &uuid],
            )
            .await
            .map_err(backend)?;
        let Some(last) = rows.last() else { break };
        (app, uuid) = (last.get(0), last.get(1));
        for r in &rows {
            let data: String = r.get(4);
            let e = Entity {
                uuid: r.get(1),
                collection: r.get(2),
                name: r.get(3),
                data: serde_json::from_str(&data).map_err(backend)?,
            };
            index_entity(tx, r.get(0), &e, true).await?;
            count += 1;
        }
    }
    if count > 0 {
        tracing::info!(entities = count, "built the property index");
    }
    Ok(())
}

/// A statement's parameters, boxed for the driver.
fn sql_args(args: Vec<Arg>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    args.into_iter()
        .map(|a| match a {
            Arg::Text(s) => Box::new(s) as Box<dyn ToSql + Sync + Send>,
            Arg::Real(f) => Box::new(f),
            Arg::Int(i) => Box::new(i),
        })
        .collect()
}

impl PostgresStore {
    /// The rows a statement selects.
    async fn rows(&self, st: Statement) -> StoreResult<Vec<tokio_postgres::Row>> {
        let args = sql_args(st.args);
        let client = self.client().await?;
        let prepared = client.prepare_cached(&st.sql).await.map_err(backend)?;
        let params: Vec<Param<'_>> = args.iter().map(|a| a.as_ref() as Param<'_>).collect();
        client.query(&prepared, &params).await.map_err(backend)
    }

    /// The entities a statement selects.
    async fn walk(&self, st: Statement) -> StoreResult<Vec<Entity>> {
        self.rows(st).await?.iter().map(to_entity).collect()
    }
}

#[async_trait]
impl IndexReads for PostgresStore {
    async fn leaf_uuids(
        &self,
        app: &str,
        collection: &str,
        leaf: &Leaf,
        cap: usize,
    ) -> StoreResult<Vec<String>> {
        let rows = self
            .rows(Statement::leaf_uuids(app, collection, leaf, cap, '$'))
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn entities_in(
        &self,
        app: &str,
        collection: &str,
        uuids: &[String],
    ) -> StoreResult<Vec<Entity>> {
        let client = self.client().await?;
        let st = client
            // One primary key lookup per uuid, whatever the planner thinks: a prepared
            // statement runs with a generic plan after its fifth run, and for
            // `uuid = ANY($3)` (or a join on the list) that plan read the collection's index
            // and every entity in it, then kept the few asked for (65 ms for 11 uuids at 100k
            // entities, 0.5 s at 1M). `OFFSET 0` keeps the lookup a subquery of its own.
            .prepare_cached(
                "SELECT e.uuid, e.collection, e.name, e.data
                 FROM unnest($3::text[]) AS u(uuid),
                 LATERAL (SELECT * FROM entities e
                          WHERE e.app = $1 AND e.uuid = u.uuid OFFSET 0) e
                 WHERE e.collection = $2",
            )
            .await
            .map_err(backend)?;
        let rows = client
            .query(&st, &[&app, &collection, &uuids])
            .await
            .map_err(backend)?;
        rows.iter().map(to_entity).collect()
    }

    async fn by_uuid(
        &self,
        app: &str,
        collection: &str,
        single: Option<&Leaf>,
        after: Option<&str>,
        desc: bool,
        n: usize,
    ) -> StoreResult<Vec<Entity>> {
        self.walk(Statement::by_uuid(
            app, collection, single, after, desc, n, '$',
        ))
        .await
    }

    async fn by_value(
        &self,
        app: &str,
        collection: &str,
        name: &str,
        from: Option<&From>,
        desc: bool,
        n: usize,
    ) -> StoreResult<Vec<Entity>> {
        self.walk(Statement::by_value(
            app, collection, name, from, desc, n, '$',
        ))
        .await
    }

    async fn missing(
        &self,
        app: &str,
        collection: &str,
        name: &str,
        after: Option<&str>,
        desc: bool,
        n: usize,
    ) -> StoreResult<(Vec<Entity>, Option<String>)> {
        let rows = self
            .rows(Statement::missing(
                app, collection, name, after, desc, n, '$',
            ))
            .await?;
        let last = match rows.last() {
            Some(r) if rows.len() == n => Some(r.try_get(0).map_err(backend)?),
            _ => None,
        };
        let mut without = Vec::new();
        for r in &rows {
            // Only an entity without the key comes with its data.
            if r.try_get::<_, Option<&str>>(3).map_err(backend)?.is_some() {
                without.push(to_entity(r)?);
            }
        }
        Ok((without, last))
    }
}
