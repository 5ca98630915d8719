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

/// Writes an entity's index rows inside `tx`, replacing any it had: one statement per table,
/// whatever the number of rows.
pub(super) async fn index_entity(
    tx: &Transaction<'_>,
    app: &str,
    e: &Entity,
    fresh: bool,
) -> StoreResult<()> {
    if !fresh {
        unindex(tx, app, &e.uuid).await?;
    }
    let rows = index::index_rows(&e.data);
    if !rows.is_empty() {
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let kinds: Vec<i32> = rows.iter().map(|r| r.key.kind as i32).collect();
        let nums: Vec<f64> = rows.iter().map(|r| r.key.num).collect();
        let strs: Vec<&str> = rows.iter().map(|r| r.key.text.as_str()).collect();
        let direct: Vec<i32> = rows.iter().map(|r| i32::from(r.direct)).collect();
        let st = tx
            .prepare_cached(
                "INSERT INTO props SELECT $1, $2, n, k, v, s, $3, d
                 FROM unnest($4::text[], $5::int[], $6::float8[], $7::text[], $8::int[])
                      AS t(n, k, v, s, d)
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(backend)?;
        tx.execute(
            &st,
            &[
                &app,
                &e.collection,
                &e.uuid,
                &names,
                &kinds,
                &nums,
                &strs,
                &direct,
            ],
        )
        .await
        .map_err(backend)?;
    }
    let words = index::words(&e.data);
    if !words.is_empty() {
        let names: Vec<&str> = words.iter().map(|(n, _)| n.as_str()).collect();
        let list: Vec<&str> = words.iter().map(|(_, w)| w.as_str()).collect();
        let st = tx
            .prepare_cached(
                "INSERT INTO words SELECT $1, $2, n, w, $3
                 FROM unnest($4::text[], $5::text[]) AS t(n, w)
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(backend)?;
        tx.execute(&st, &[&app, &e.collection, &e.uuid, &names, &list])
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Removes an entity's index rows inside `tx`.
pub(super) async fn unindex(tx: &Transaction<'_>, app: &str, uuid: &str) -> StoreResult<()> {
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
            .prepare_cached(
                "SELECT e.uuid, e.collection, e.name, e.data FROM entities e
                 WHERE e.app = $1 AND e.collection = $2 AND e.uuid = ANY($3)",
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
    ) -> StoreResult<Vec<Entity>> {
        self.walk(Statement::missing(
            app, collection, name, after, desc, n, '$',
        ))
        .await
    }
}
