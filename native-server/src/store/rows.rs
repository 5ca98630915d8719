//! What both SQL stores do the same way with rows: change kinds as stored text, change records
//! for entity writes, queue message bodies, and paging with a `ql` filter and order applied in
//! memory.

use super::{ChangeRecord, Entity, Page, PageQuery};
use gridsocket_core::subscription::ChangeKind;
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

/// Applies the query's filter and order to rows, then cuts the page.
pub(super) fn page_of(rows: Vec<Entity>, page: &PageQuery<'_>) -> Page {
    let mut rows = rows;
    if let Some(q) = page.query {
        rows.retain(|e| q.matches(&Value::Object(e.data.clone())));
        if !q.order.is_empty() {
            let mut values: Vec<(Value, Entity)> = rows
                .into_iter()
                .map(|e| (Value::Object(e.data.clone()), e))
                .collect();
            values.sort_by(|(a, _), (b, _)| {
                for key in &q.order {
                    let ord = gridsocket_core::query::compare_values(
                        gridsocket_core::query::lookup(a, &key.property),
                        gridsocket_core::query::lookup(b, &key.property),
                    );
                    let ord = if key.descending { ord.reverse() } else { ord };
                    if ord.is_ne() {
                        return ord;
                    }
                }
                std::cmp::Ordering::Equal
            });
            rows = values.into_iter().map(|(_, e)| e).collect();
        }
    }
    let total = rows.len();
    let entities: Vec<Entity> = rows
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    Page {
        more: page.offset.saturating_add(entities.len()) < total,
        entities,
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
