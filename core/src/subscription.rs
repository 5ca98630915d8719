//! Subscriptions: what a client watches, which changes concern it, and an index that finds the
//! subscriptions a change concerns in time proportional to the matches.

use crate::query::Query;
use rustc_hash::FxBuildHasher;
use serde_json::Value;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::Arc;

/// The subscriptions of one entity, collection, feed or queue. Most have one (a user's
/// inbox, an entity one socket watches), held inline: a set of one costs an allocation of
/// ~100 bytes, a socket's worth at a million sockets. Keys are the host's own numbers (never
/// chosen by a client), so a set hashes them with a fast, unkeyed hash; names from clients
/// stay behind the standard keyed one.
#[derive(Debug)]
enum KeySet<K> {
    One(K),
    /// Boxed: most sets hold one key, and the entry of every set is the size of its largest
    /// form (16 bytes less for each).
    #[allow(clippy::box_collection)] // The box is what keeps the entry small.
    Many(Box<HashSet<K, FxBuildHasher>>),
}

impl<K: Hash + Eq> KeySet<K> {
    fn insert(&mut self, key: K) {
        match self {
            KeySet::One(one) if *one == key => {}
            KeySet::Many(set) => {
                set.insert(key);
            }
            KeySet::One(_) => {
                let one = std::mem::replace(self, KeySet::Many(Box::default()));
                if let (KeySet::One(one), KeySet::Many(set)) = (one, self) {
                    set.extend([one, key]);
                }
            }
        }
    }

    /// Removes `key`; true when none is left.
    fn remove(&mut self, key: &K) -> bool {
        match self {
            KeySet::One(one) => one == key,
            KeySet::Many(set) => {
                set.remove(key);
                set.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &K> {
        let (one, many) = match self {
            KeySet::One(one) => (Some(one), None),
            KeySet::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// What a subscription watches. Names are resolved by the host where it needs uuids (feed
/// owners); entities may be watched by name before they exist.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// One entity of a collection, by uuid or by name.
    Entity {
        /// Canonical collection name.
        collection: String,
        /// The entity's uuid, if known.
        uuid: Option<String>,
        /// The entity's name (lower case), if the path used one.
        name: Option<String>,
    },
    /// Every entity of a collection, or those matching a filter.
    Collection {
        /// Canonical collection name.
        collection: String,
        /// The `ql` filter; `None` watches everything.
        filter: Option<Arc<Query>>,
    },
    /// The activity feed (inbox) of a user or group.
    Feed {
        /// The owner's uuid. Shared: the index keys the feed's subscribers by the same text.
        owner: Arc<str>,
    },
    /// A message queue.
    Queue {
        /// Normalized queue path (`/a/b`).
        queue: String,
    },
}

/// What happened, as recorded in the change log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// An entity was created.
    Create,
    /// An entity was updated.
    Update,
    /// An entity was deleted.
    Delete,
    /// An activity was delivered to a feed.
    FeedItem,
    /// A message was posted to a queue.
    QueueMessage,
}

/// One entry of the change log, as the matcher sees it.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// Position in the application's log.
    pub seq: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// Collection of the entity (`activities` for feed items, empty for queue messages).
    pub collection: &'a str,
    /// The entity's (or message's) uuid.
    pub uuid: &'a str,
    /// The entity's name, if it has one.
    pub name: Option<&'a str>,
    /// The entity after the change (before it, for a delete).
    pub entity: &'a Value,
    /// The entity before an update.
    pub previous: Option<&'a Value>,
    /// The feed owner, for [`ChangeKind::FeedItem`].
    pub feed_owner: Option<&'a str>,
    /// The queue, for [`ChangeKind::QueueMessage`].
    pub queue: Option<&'a str>,
}

/// The event a subscriber receives for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Created (also: an activity arrived in a feed, a message in a queue).
    Create,
    /// Updated, and still matching.
    Update,
    /// Deleted.
    Delete,
    /// Updated so that it now matches the filter.
    Enter,
    /// Updated so that it no longer matches the filter.
    Leave,
}

impl EventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
            EventKind::Enter => "enter",
            EventKind::Leave => "leave",
        }
    }
}

impl Target {
    /// The event this change means for this subscription, if it concerns it.
    pub fn event_for(&self, change: &Change<'_>) -> Option<EventKind> {
        let entity_kind = |kind: ChangeKind| match kind {
            ChangeKind::Create => Some(EventKind::Create),
            ChangeKind::Update => Some(EventKind::Update),
            ChangeKind::Delete => Some(EventKind::Delete),
            ChangeKind::FeedItem | ChangeKind::QueueMessage => None,
        };
        match self {
            Target::Entity {
                collection,
                uuid,
                name,
            } => {
                if change.collection != collection {
                    return None;
                }
                let by_uuid = uuid.as_deref() == Some(change.uuid);
                let by_name = match (name, change.name) {
                    (Some(n), Some(c)) => n.eq_ignore_ascii_case(c),
                    _ => false,
                };
                if by_uuid || by_name {
                    entity_kind(change.kind)
                } else {
                    None
                }
            }
            Target::Collection { collection, filter } => {
                if change.collection != collection {
                    return None;
                }
                let Some(q) = filter else {
                    return entity_kind(change.kind);
                };
                match change.kind {
                    ChangeKind::Create => q.matches(change.entity).then_some(EventKind::Create),
                    ChangeKind::Delete => q.matches(change.entity).then_some(EventKind::Delete),
                    ChangeKind::Update => {
                        let now = q.matches(change.entity);
                        let before = change.previous.is_some_and(|p| q.matches(p));
                        match (before, now) {
                            (true, true) => Some(EventKind::Update),
                            (false, true) => Some(EventKind::Enter),
                            (true, false) => Some(EventKind::Leave),
                            (false, false) => None,
                        }
                    }
                    ChangeKind::FeedItem | ChangeKind::QueueMessage => None,
                }
            }
            Target::Feed { owner } => (change.kind == ChangeKind::FeedItem
                && change.feed_owner == Some(&**owner))
            .then_some(EventKind::Create),
            Target::Queue { queue } => (change.kind == ChangeKind::QueueMessage
                && change.queue == Some(queue.as_str()))
            .then_some(EventKind::Create),
        }
    }
}

/// Subscriptions of one application, indexed by what they watch.
///
/// `K` names a subscriber (the host uses connection and subscription ids). Matching a change
/// looks only at the subscriptions of its entity, collection, feed or queue: the cost grows
/// with the subscriptions that could match, never with the others.
#[derive(Debug)]
pub struct SubscriptionIndex<K> {
    targets: HashMap<K, Target, FxBuildHasher>,
    entity_uuid: HashMap<(String, String), KeySet<K>>,
    entity_name: HashMap<(String, String), KeySet<K>>,
    collections: HashMap<String, KeySet<K>>,
    feeds: HashMap<Arc<str>, KeySet<K>>,
    queues: HashMap<String, KeySet<K>>,
}

impl<K> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        SubscriptionIndex {
            targets: HashMap::default(),
            entity_uuid: HashMap::new(),
            entity_name: HashMap::new(),
            collections: HashMap::new(),
            feeds: HashMap::new(),
            queues: HashMap::new(),
        }
    }
}

fn add<Q: Hash + Eq, K: Hash + Eq>(map: &mut HashMap<Q, KeySet<K>>, q: Q, k: K) {
    match map.entry(q) {
        Entry::Occupied(set) => set.into_mut().insert(k),
        Entry::Vacant(place) => {
            place.insert(KeySet::One(k));
        }
    }
}

fn del<Q: Hash + Eq, K: Hash + Eq>(map: &mut HashMap<Q, KeySet<K>>, q: &Q, k: &K) {
    if map.get_mut(q).is_some_and(|set| set.remove(k)) {
        map.remove(q);
    }
}

impl<K: Clone + Eq + Hash> SubscriptionIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a subscription.
    pub fn insert(&mut self, key: K, target: Target) {
        self.remove(&key);
        match &target {
            Target::Entity {
                collection,
                uuid,
                name,
            } => {
                if let Some(u) = uuid {
                    add(
                        &mut self.entity_uuid,
                        (collection.clone(), u.clone()),
                        key.clone(),
                    );
                }
                if let Some(n) = name {
                    add(
                        &mut self.entity_name,
                        (collection.clone(), n.to_ascii_lowercase()),
                        key.clone(),
                    );
                }
            }
            Target::Collection { collection, .. } => {
                add(&mut self.collections, collection.clone(), key.clone())
            }
            Target::Feed { owner } => add(&mut self.feeds, owner.clone(), key.clone()),
            Target::Queue { queue } => add(&mut self.queues, queue.clone(), key.clone()),
        }
        self.targets.insert(key, target);
    }

    /// Removes a subscription; returns what it watched.
    pub fn remove(&mut self, key: &K) -> Option<Target> {
        let target = self.targets.remove(key)?;
        match &target {
            Target::Entity {
                collection,
                uuid,
                name,
            } => {
                if let Some(u) = uuid {
                    del(&mut self.entity_uuid, &(collection.clone(), u.clone()), key);
                }
                if let Some(n) = name {
                    del(
                        &mut self.entity_name,
                        &(collection.clone(), n.to_ascii_lowercase()),
                        key,
                    );
                }
            }
            Target::Collection { collection, .. } => del(&mut self.collections, collection, key),
            Target::Feed { owner } => del(&mut self.feeds, owner, key),
            Target::Queue { queue } => del(&mut self.queues, queue, key),
        }
        Some(target)
    }

    /// What a subscription watches.
    pub fn get(&self, key: &K) -> Option<&Target> {
        self.targets.get(key)
    }

    /// How many subscriptions there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Appends to `out` every subscription the change concerns, with its event.
    pub fn matches(&self, change: &Change<'_>, out: &mut Vec<(K, EventKind)>) {
        let check = |set: Option<&KeySet<K>>, out: &mut Vec<(K, EventKind)>| {
            for key in set.into_iter().flat_map(KeySet::iter) {
                if let Some(kind) = self.targets.get(key).and_then(|t| t.event_for(change)) {
                    out.push((key.clone(), kind));
                }
            }
        };
        match change.kind {
            ChangeKind::Create | ChangeKind::Update | ChangeKind::Delete => {
                let start = out.len();
                check(
                    self.entity_uuid
                        .get(&(change.collection.to_owned(), change.uuid.to_owned())),
                    out,
                );
                if let Some(name) = change.name {
                    let by_name = self
                        .entity_name
                        .get(&(change.collection.to_owned(), name.to_ascii_lowercase()));
                    // A subscription by uuid and name of the same entity is reported once.
                    for key in by_name.into_iter().flat_map(KeySet::iter) {
                        if out[start..].iter().any(|(k, _)| k == key) {
                            continue;
                        }
                        if let Some(kind) = self.targets.get(key).and_then(|t| t.event_for(change))
                        {
                            out.push((key.clone(), kind));
                        }
                    }
                }
                check(self.collections.get(change.collection), out);
            }
            ChangeKind::FeedItem => check(change.feed_owner.and_then(|o| self.feeds.get(o)), out),
            ChangeKind::QueueMessage => check(change.queue.and_then(|q| self.queues.get(q)), out),
        }
    }
}

/// Encodes an event frame around an entity that is already JSON text; the entity is
/// serialized once per change and shared by every subscriber.
pub fn encode_event(
    kind: EventKind,
    subscription: &str,
    path: &str,
    seq: u64,
    entity_json: &str,
) -> String {
    let mut out = String::with_capacity(entity_json.len() + path.len() + 80);
    let _ = write!(
        out,
        "{{\"event\":\"{}\",\"subscription\":{},\"path\":{},\"seq\":{seq},\"entity\":",
        kind.as_str(),
        json_string(subscription),
        json_string(path)
    );
    out.push_str(entity_json);
    out.push('}');
    out
}

/// Encodes the `revoked` event: the subscription ended because access was lost.
pub fn encode_revoked(subscription: &str, path: &str, reason: &str) -> String {
    format!(
        "{{\"event\":\"revoked\",\"subscription\":{},\"path\":{},\"reason\":{}}}",
        json_string(subscription),
        json_string(path),
        json_string(reason)
    )
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_set_of_one_key_is_no_larger_than_the_key_and_a_tag() {
        // Every path's entry in the index is this size, whatever its form: a set of many inline
        // would make a million one-subscriber entries 16 bytes larger each.
        type Key = (u64, u64);
        assert!(std::mem::size_of::<KeySet<Key>>() <= std::mem::size_of::<Key>() + 8);
    }

    fn change<'a>(
        kind: ChangeKind,
        collection: &'a str,
        uuid: &'a str,
        entity: &'a Value,
        previous: Option<&'a Value>,
    ) -> Change<'a> {
        Change {
            seq: 1,
            kind,
            collection,
            uuid,
            name: entity.get("name").and_then(Value::as_str),
            entity,
            previous,
            feed_owner: None,
            queue: None,
        }
    }

    fn filtered(ql: &str) -> Target {
        Target::Collection {
            collection: "books".into(),
            filter: Some(Arc::new(Query::parse(ql).unwrap())),
        }
    }

    #[test]
    fn filtered_collections_see_enter_and_leave() {
        let t = filtered("price < 10");
        let cheap = json!({"name": "a", "price": 5});
        let dear = json!({"name": "a", "price": 50});
        let ev = |kind, e, p| t.event_for(&change(kind, "books", "u1", e, p));
        assert_eq!(
            ev(ChangeKind::Create, &cheap, None),
            Some(EventKind::Create)
        );
        assert_eq!(ev(ChangeKind::Create, &dear, None), None);
        assert_eq!(
            ev(ChangeKind::Update, &dear, Some(&cheap)),
            Some(EventKind::Leave)
        );
        assert_eq!(
            ev(ChangeKind::Update, &cheap, Some(&dear)),
            Some(EventKind::Enter)
        );
        assert_eq!(
            ev(ChangeKind::Update, &cheap, Some(&cheap)),
            Some(EventKind::Update)
        );
        assert_eq!(ev(ChangeKind::Update, &dear, Some(&dear)), None);
        assert_eq!(
            ev(ChangeKind::Delete, &cheap, None),
            Some(EventKind::Delete)
        );
        assert_eq!(ev(ChangeKind::Delete, &dear, None), None);
        let other = t.event_for(&change(ChangeKind::Create, "cars", "u1", &cheap, None));
        assert_eq!(other, None);
    }

    #[test]
    fn index_finds_only_what_matches() {
        let mut idx = SubscriptionIndex::new();
        idx.insert(1, filtered("price < 10"));
        idx.insert(
            2,
            Target::Collection {
                collection: "books".into(),
                filter: None,
            },
        );
        idx.insert(
            3,
            Target::Entity {
                collection: "books".into(),
                uuid: Some("u1".into()),
                name: Some("dune".into()),
            },
        );
        idx.insert(
            4,
            Target::Entity {
                collection: "books".into(),
                uuid: None,
                name: Some("emma".into()),
            },
        );
        idx.insert(
            5,
            Target::Feed {
                owner: "john".into(),
            },
        );
        idx.insert(6, Target::Queue { queue: "/q".into() });
        for i in 100..10_100 {
            idx.insert(
                i,
                Target::Entity {
                    collection: "books".into(),
                    uuid: Some(format!("other-{i}")),
                    name: None,
                },
            );
        }
        let dune = json!({"name": "Dune", "price": 5});
        let mut out = Vec::new();
        idx.matches(
            &change(ChangeKind::Update, "books", "u1", &dune, Some(&dune)),
            &mut out,
        );
        out.sort_by_key(|(k, _)| *k);
        assert_eq!(
            out,
            [
                (1, EventKind::Update),
                (2, EventKind::Update),
                (3, EventKind::Update)
            ]
        );
        let emma = json!({"name": "emma", "price": 20});
        out.clear();
        idx.matches(
            &change(ChangeKind::Create, "books", "u9", &emma, None),
            &mut out,
        );
        out.sort_by_key(|(k, _)| *k);
        assert_eq!(out, [(2, EventKind::Create), (4, EventKind::Create)]);
        let activity = json!({"content": "hi"});
        let mut feed = change(ChangeKind::FeedItem, "activities", "a1", &activity, None);
        feed.feed_owner = Some("john");
        out.clear();
        idx.matches(&feed, &mut out);
        assert_eq!(out, [(5, EventKind::Create)]);
        let mut msg = change(ChangeKind::QueueMessage, "", "m1", &activity, None);
        msg.queue = Some("/q");
        out.clear();
        idx.matches(&msg, &mut out);
        assert_eq!(out, [(6, EventKind::Create)]);
        assert_eq!(idx.len(), 10_006);
        assert!(idx.remove(&3).is_some());
        assert!(idx.remove(&3).is_none());
        out.clear();
        idx.matches(
            &change(ChangeKind::Update, "books", "u1", &dune, Some(&dune)),
            &mut out,
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn one_path_goes_from_one_subscriber_to_many_and_back() {
        let mut idx = SubscriptionIndex::new();
        let feed = || Target::Feed {
            owner: "john".into(),
        };
        let activity = json!({"content": "hi"});
        let mut item = change(ChangeKind::FeedItem, "activities", "a1", &activity, None);
        item.feed_owner = Some("john");
        let subscribers = |idx: &SubscriptionIndex<u32>| {
            let mut out = Vec::new();
            idx.matches(&item, &mut out);
            let mut keys: Vec<u32> = out.into_iter().map(|(k, _)| k).collect();
            keys.sort();
            keys
        };
        idx.insert(1, feed());
        idx.insert(1, feed());
        assert_eq!(subscribers(&idx), [1]);
        idx.insert(2, feed());
        idx.insert(3, feed());
        assert_eq!(subscribers(&idx), [1, 2, 3]);
        idx.remove(&1);
        idx.remove(&3);
        assert_eq!(subscribers(&idx), [2]);
        idx.remove(&2);
        assert!(subscribers(&idx).is_empty());
        assert!(idx.feeds.is_empty(), "an empty path leaves no entry");
        idx.insert(4, feed());
        assert_eq!(subscribers(&idx), [4]);
    }

    #[test]
    fn event_frames() {
        let f = encode_event(EventKind::Enter, "s1", "/books", 7, r#"{"a":1}"#);
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(
            v,
            json!({"event": "enter", "subscription": "s1", "path": "/books", "seq": 7, "entity": {"a": 1}})
        );
        let r: Value = serde_json::from_str(&encode_revoked("s1", "/x", "forbidden")).unwrap();
        assert_eq!(r["event"], "revoked");
    }
}
