//! The embedded store's side of the property index: keeping it with every write, building it
//! for entities written before it existed, and the reads the search makes of it.

use super::error::backend;
use super::{SqliteStore, collect_entities};
use crate::store::index::{self, Arg, Leaf};
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

fn sql_args(fixed: &[&str], args: Vec<Arg>) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    let mut out: Vec<V> = fixed.iter().map(|s| V::Text((*s).to_owned())).collect();
    out.extend(args.into_iter().map(|a| match a {
        Arg::Text(s) => V::Text(s),
        Arg::Real(f) => V::Real(f),
        Arg::Int(i) => V::Integer(i.into()),
    }));
    out
}

const ENTITY: &str = "e.uuid, e.collection, e.name, e.data";

impl SqliteStore {
    /// Entities of a statement with the given parameters, on a read connection.
    async fn walk(
        &self,
        sql: String,
        args: Vec<rusqlite::types::Value>,
    ) -> StoreResult<Vec<Entity>> {
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
        let l = leaf.sql(3, '?');
        let sql = format!(
            "SELECT p.uuid FROM {} p WHERE p.app = ?1 AND p.collection = ?2 AND {} LIMIT {}",
            l.table,
            l.condition,
            cap + 1
        );
        let args = sql_args(&[app, collection], l.args);
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
        let sql = format!(
            "SELECT {ENTITY} FROM entities e WHERE e.app = ?1 AND e.collection = ?2
             AND e.uuid IN (SELECT value FROM json_each(?3))"
        );
        self.walk(sql, sql_args(&[app, collection, &list], Vec::new()))
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
        let (op, dir) = if desc { ("<", "DESC") } else { (">", "") };
        let sql = match single {
            None => {
                let from = after.map_or(String::new(), |_| format!("AND e.uuid {op} ?3"));
                format!(
                    "SELECT {ENTITY} FROM entities e WHERE e.app = ?1 AND e.collection = ?2 {from}
                     ORDER BY e.uuid {dir} LIMIT {n}"
                )
            }
            Some(leaf) => {
                let l = leaf.sql(4, '?');
                let from = after.map_or(String::new(), |_| format!("AND p.uuid {op} ?3"));
                let sql = format!(
                    "SELECT {ENTITY} FROM {} p JOIN entities e ON e.app = p.app AND e.uuid = p.uuid
                     WHERE p.app = ?1 AND p.collection = ?2 {from} AND {}
                     ORDER BY p.uuid {dir} LIMIT {n}",
                    l.table, l.condition
                );
                let fixed = [app, collection, after.unwrap_or_default()];
                return self.walk(sql, sql_args(&fixed, l.args)).await;
            }
        };
        let fixed = [app, collection, after.unwrap_or_default()];
        let used = if after.is_some() { 3 } else { 2 };
        self.walk(sql, sql_args(&fixed[..used], Vec::new())).await
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
        let (start, order, args) = index::walk_sql(from, desc, 4, '?');
        let sql = format!(
            "SELECT {ENTITY} FROM props p JOIN entities e ON e.app = p.app AND e.uuid = p.uuid
             WHERE p.app = ?1 AND p.collection = ?2 AND p.name = ?3 AND p.direct = 1 {start}
             ORDER BY {order} LIMIT {n}"
        );
        self.walk(sql, sql_args(&[app, collection, name], args))
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
        let (op, dir) = if desc { ("<", "DESC") } else { (">", "") };
        let from = after.map_or(String::new(), |_| format!("AND e.uuid {op} ?4"));
        let sql = format!(
            "SELECT {ENTITY} FROM entities e WHERE e.app = ?1 AND e.collection = ?2 {from}
             AND NOT EXISTS (SELECT 1 FROM props p WHERE p.app = e.app AND p.uuid = e.uuid
                             AND p.name = ?3 AND p.direct = 1)
             ORDER BY e.uuid {dir} LIMIT {n}"
        );
        let fixed = [app, collection, name, after.unwrap_or_default()];
        let used = if after.is_some() { 4 } else { 3 };
        self.walk(sql, sql_args(&fixed[..used], Vec::new())).await
    }
}
