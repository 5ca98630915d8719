//! What both SQL stores do the same way with rows: change kinds as stored text, change records
//! for entity writes, queue message bodies, and paging with a `ql` filter and order applied in
//! memory.

use super::{ChangeRecord, Entity, Page, PageQuery, StoreError, StoreResult};
use gridsocket_core::subscription::ChangeKind;
use gridsocket_core::wire::json_size;
use serde_json::{Map, Value};

/// The stored name of a change kind.
pub(super) fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Create => "create",
        ChangeKind::Update => "update",
        ChangeKind::Delete => "delete",
        ChangeKind::FeedItem => "feed_item",
        ChangeKind::QueueMessage => "queue_message",
    }
}

/// Reads a stored change kind.
pub(super) fn kind_of(name: &str) -> Option<ChangeKind> {
    Some(match name {
        "create" => ChangeKind::Create,
        "update" => ChangeKind::Update,
        "delete" => ChangeKind::Delete,
        "feed_item" => ChangeKind::FeedItem,
        "queue_message" => ChangeKind::QueueMessage,
        _ => return None,
    })
}

/// Milliseconds since the Unix epoch, now.
pub(super) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The log record of a write to an entity (its position is set when it is appended).
pub(super) fn entity_change(
    kind: ChangeKind,
    e: &Entity,
    previous: Option<Map<String, Value>>,
) -> ChangeRecord {
    ChangeRecord {
        seq: 0,
        created: wall_ms(),
        kind,
        collection: e.collection.clone(),
        uuid: e.uuid.clone(),
        name: e.name.clone(),
        entity: e.data.clone(),
        previous,
        feed_owner: None,
        queue: None,
    }
}

/// Applies the query's filter and order to rows, then cuts the page; gives up with
/// [`StoreError::Timeout`] past the page's deadline. CPU-bound: callers run it on a blocking
/// thread, never on the runtime's.
pub(super) fn page_of(rows: Vec<Entity>, page: &PageQuery<'_>) -> StoreResult<Page> {
    let mut rows = rows;
    let late = || page.deadline.is_some_and(|d| std::time::Instant::now() > d);
    if let Some(q) = page.query {
        let mut kept = Vec::with_capacity(rows.len());
        for (i, mut e) in rows.into_iter().enumerate() {
            if i % 256 == 255 && late() {
                return Err(StoreError::Timeout);
            }
            // Matched as a JSON value without copying the entity.
            let value = Value::Object(std::mem::take(&mut e.data));
            let keep = q.matches(&value);
            if let Value::Object(data) = value {
                e.data = data;
            }
            if keep {
                kept.push(e);
            }
        }
        rows = kept;
        if !q.order.is_empty() {
            if late() {
                return Err(StoreError::Timeout);
            }
            // Sorted as JSON values without copying the entities.
            let mut values: Vec<(Value, Entity)> = rows
                .into_iter()
                .map(|mut e| (Value::Object(std::mem::take(&mut e.data)), e))
                .collect();
            values.sort_by(|a, b| q.compare(&a.0, &b.0));
            rows = values
                .into_iter()
                .map(|(v, mut e)| {
                    if let Value::Object(data) = v {
                        e.data = data;
                    }
                    e
                })
                .collect();
        }
    }
    let total = rows.len();
    let max_bytes = page.max_bytes.unwrap_or(usize::MAX);
    let mut bytes = 0usize;
    let entities: Vec<Entity> = rows
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .take_while(|e| {
            let fits = bytes < max_bytes;
            bytes = bytes.saturating_add(json_size(&e.data));
            fits
        })
        .collect();
    Ok(Page {
        more: page.offset.saturating_add(entities.len()) < total,
        entities,
        resume_after: None,
    })
}

/// [`page_of`] on a blocking thread when the query filters or orders (its cost grows with the
/// rows, and the runtime's threads serve every socket); inline otherwise.
pub(super) async fn page_apart(rows: Vec<Entity>, page: &PageQuery<'_>) -> StoreResult<Page> {
    let Some(query) = page
        .query
        .filter(|q| q.filter.is_some() || !q.order.is_empty())
    else {
        return page_of(rows, page);
    };
    let (query, limit, offset, deadline, max_bytes) = (
        query.clone(),
        page.limit,
        page.offset,
        page.deadline,
        page.max_bytes,
    );
    tokio::task::spawn_blocking(move || {
        page_of(
            rows,
            &PageQuery {
                query: Some(&query),
                limit,
                offset,
                after: None,
                deadline,
                max_bytes,
                max_rows: None,
            },
        )
    })
    .await
    .map_err(|e| StoreError::Backend(Box::new(e)))?
}

/// A property of an entity's data by dotted path (`address.city`), as the query language reads
/// it.
pub(super) fn field<'a>(data: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let (first, rest) = path.split_once('.').unwrap_or((path, ""));
    let value = data.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        gridsocket_core::query::lookup(value, rest)
    }
}

/// A new queue message: its uuid and its body (the poster's properties, with `uuid`, `type`
/// and `timestamp` set by the server and `transaction` never taken from the poster).
pub(super) fn queue_message(props: Map<String, Value>, now: i64) -> (String, Map<String, Value>) {
    let uuid = uuid::Uuid::now_v7().to_string();
    let mut data = Map::new();
    data.insert("uuid".into(), Value::String(uuid.clone()));
    data.insert("type".into(), Value::String("message".into()));
    data.insert("timestamp".into(), now.into());
    for (k, v) in props {
        if !matches!(k.as_str(), "uuid" | "timestamp" | "transaction" | "type") {
            data.insert(k, v);
        }
    }
    (uuid, data)
}

/// The log entry of a queue message posted to `queue` (the queue itself or a subscriber).
pub(super) fn queue_change(
    uuid: &str,
    message: &Map<String, Value>,
    queue: &str,
    now: i64,
) -> ChangeRecord {
    ChangeRecord {
        seq: 0,
        created: now,
        kind: ChangeKind::QueueMessage,
        collection: String::new(),
        uuid: uuid.to_owned(),
        name: None,
        entity: message.clone(),
        previous: None,
        feed_owner: None,
        queue: Some(queue.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridsocket_core::Query;

    fn entities(n: usize) -> Vec<Entity> {
        (0..n)
            .map(|i| {
                let mut data = Map::new();
                data.insert("k".into(), Value::from(i % 7));
                data.insert("blob".into(), Value::from("x".repeat(100)));
                Entity {
                    uuid: format!("u{i:05}"),
                    collection: "things".into(),
                    name: None,
                    data,
                }
            })
            .collect()
    }

    fn page(query: &Query) -> PageQuery<'_> {
        PageQuery::first(Some(query), 10)
    }

    #[test]
    fn a_query_past_its_deadline_gives_up() {
        let q = Query::parse("select * where k = 3 order by k desc").expect("ql");
        let late = PageQuery {
            deadline: Some(std::time::Instant::now() - std::time::Duration::from_millis(1)),
            ..page(&q)
        };
        assert!(matches!(
            page_of(entities(1000), &late),
            Err(StoreError::Timeout)
        ));
        let on_time = page_of(entities(1000), &page(&q)).expect("page");
        assert_eq!(on_time.entities.len(), 10);
        assert!(on_time.more);
    }

    #[test]
    fn a_page_ends_at_its_byte_budget() {
        let q = Query::parse("select * order by k").expect("ql");
        let small = PageQuery {
            max_bytes: Some(500),
            ..page(&q)
        };
        let cut = page_of(entities(50), &small).expect("page");
        assert!(cut.entities.len() < 10 && !cut.entities.is_empty());
        assert!(cut.more, "the rest is a page away");
    }
}
