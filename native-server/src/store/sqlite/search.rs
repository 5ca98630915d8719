//! The embedded store's side of the property index: keeping it with every write, building it
//! for entities written before it existed, and the reads the search makes of it.

use super::error::backend;
use super::{SqliteStore, collect_entities, to_entity};
use crate::store::index::{self, Arg, Leaf, Statement};
use crate::store::search::{From, IndexReads};
use crate::store::{Entity, StoreResult};
use async_trait::async_trait;
use rusqlite::{Connection, params, params_from_iter};

/// The version of the index `PRAGMA user_version` records once it is built.
const INDEX_VERSION: i64 = 1;

/// Writes an entity's index rows inside `tx`, replacing any it had.
pub(super) fn index_entity(tx: &Connection, app: &str, e: &Entity, fresh: bool) -> StoreResult<()> {
    if !fresh {
        unindex(tx, app, &e.uuid)?;
    }
    // One statement per table, whatever the number of rows: the rows go in as a JSON array.
    let rows: Vec<serde_json::Value> = index::index_rows(&e.data)
        .into_iter()
        .map(|r| serde_json::json!([r.name, r.key.kind as i32, r.key.num, r.key.text, r.direct]))
        .collect();
    if !rows.is_empty() {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO props
             SELECT ?1, ?2, value->>0, value->>1, value->>2, value->>3, ?3, value->>4
             FROM json_each(?4)",
        )
        .and_then(|mut s| {
            s.execute(params![
                app,
                e.collection,
                e.uuid,
                serde_json::Value::Array(rows).to_string()
            ])
        })
        .map_err(backend)?;
    }
    let words: Vec<(String, String)> = index::words(&e.data);
    if !words.is_empty() {
        let words = serde_json::to_string(&words).map_err(backend)?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO words SELECT ?1, ?2, value->>0, value->>1, ?3 FROM json_each(?4)",
        )
        .and_then(|mut s| {
            s.execute(params![
                app,
                e.collection,
                e.uuid,
                words
            ])
        })
        .map_err(backend)?;
    }
    Ok(())
}

/// Removes an entity's index rows inside `tx`.
pub(super) fn unindex(tx: &Connection, app: &str, uuid: &str) -> StoreResult<()> {
    tx.prepare_cached("DELETE FROM props WHERE app = ?1 AND uuid = ?2")
        .and_then(|mut s| s.execute([app, uuid]))
        .map_err(backend)?;
    tx.prepare_cached("DELETE FROM words WHERE app = ?1 AND uuid = ?2")
        .and_then(|mut s| s.execute([app, uuid]))
        .map_err(backend)?;
    Ok(())
}

/// Builds the index of a database written before it existed, once, in one transaction.
pub(super) fn build_index(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend)?;
    if version >= INDEX_VERSION {
        return Ok(());
    }
    let tx = conn.transaction().map_err(backend)?;
    tx.execute_batch("DELETE FROM props; DELETE FROM words;")
        .map_err(backend)?;
    let mut count = 0u64;
    {
        let mut stmt = tx
            .prepare("SELECT app, uuid, collection, name, data FROM entities")
            .map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            let app: String = r.get(0).map_err(backend)?;
            let data: String = r.get(4).map_err(backend)?;
            let e = Entity {
                uuid: r.get(1).map_err(backend)?,
                collection: r.get(2).map_err(backend)?,
                name: r.get(3).map_err(backend)?,
                data: serde_json::from_str(&data).map_err(backend)?,
            };
            index_entity(&tx, &app, &e, true)?;
            count += 1;
        }
    }
    tx.pragma_update(None, "user_version", INDEX_VERSION)
        .map_err(backend)?;
    tx.commit().map_err(backend)?;
    if count > 0 {
        tracing::info!(entities = count, "built the property index");
    }
    Ok(())
}

fn sql_args(args: Vec<Arg>) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    args.into_iter()
        .map(|a| match a {
            Arg::Text(s) => V::Text(s),
            Arg::Real(f) => V::Real(f),
            Arg::Int(i) => V::Integer(i.into()),
        })
        .collect()
}

impl SqliteStore {
    /// The entities a statement selects, on a read connection.
    async fn walk(&self, st: Statement) -> StoreResult<Vec<Entity>> {
        let (sql, args) = (st.sql, sql_args(st.args));
        self.scan(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(backend)?;
            collect_entities(&mut stmt, params_from_iter(args))
        })
        .await
    }
}

#[async_trait]
impl IndexReads for SqliteStore {
    async fn leaf_uuids(
        &self,
        app: &str,
        collection: &str,
        leaf: &Leaf,
        cap: usize,
    ) -> StoreResult<Vec<String>> {
        let st = Statement::leaf_uuids(app, collection, leaf, cap, '?');
        let (sql, args) = (st.sql, sql_args(st.args));
        self.scan(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn entities_in(
        &self,
        app: &str,
        collection: &str,
        uuids: &[String],
    ) -> StoreResult<Vec<Entity>> {
        let list = serde_json::to_string(uuids).map_err(backend)?;
        self.walk(Statement {
            sql: "SELECT e.uuid, e.collection, e.name, e.data FROM entities e
                  WHERE e.app = ?1 AND e.collection = ?2
                  AND e.uuid IN (SELECT value FROM json_each(?3))"
                .into(),
            args: vec![
                Arg::Text(app.into()),
                Arg::Text(collection.into()),
                Arg::Text(list),
            ],
        })
        .await
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
            app, collection, single, after, desc, n, '?',
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
            app, collection, name, from, desc, n, '?',
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
        let st = Statement::missing(app, collection, name, after, desc, n, '?');
        let (sql, args) = (st.sql, sql_args(st.args));
        self.scan(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    let passed: (String, String, Option<String>, Option<String>) =
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                    Ok(passed)
                })
                .map_err(backend)?;
            let (mut without, mut last, mut passed) = (Vec::new(), None, 0usize);
            for row in rows {
                let (uuid, collection, name, data) = row.map_err(backend)?;
                passed += 1;
                // Only an entity without the key comes with its data.
                if let Some(data) = data {
                    without.push(to_entity((uuid.clone(), collection, name, data))?);
                }
                last = Some(uuid);
            }
            Ok((without, last.filter(|_| passed == n)))
        })
        .await
    }
}
