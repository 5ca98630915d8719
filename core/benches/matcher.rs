//! How fast the subscription index matches changes, and that its cost does not grow with
//! subscriptions a change does not concern.
//!
//! Each index holds `N` subscriptions (10k, 100k, 1M) of which the same few concern the change
//! under test; the rest watch other entities, feeds and queues, as a busy app's would. The
//! figure is changes matched per second: it should stay flat as `N` grows.
//!
//! Run with `cargo bench -p gridsocket-core --bench matcher`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gridsocket_core::query::Query;
use gridsocket_core::subscription::{Change, ChangeKind, EventKind, SubscriptionIndex, Target};
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;

/// Subscriptions that every index has and that the changes below concern.
const MATCHING_COLLECTION: u64 = 100;
const MATCHING_FILTERED: u64 = 20;
const MATCHING_ENTITY: u64 = 5;
const MATCHING_FEED: u64 = 10;

/// An index of `total` subscriptions: the matching ones above, the rest spread over
/// one-entity subscriptions in other collections, other users' feeds and other queues.
fn index(total: u64) -> SubscriptionIndex<u64> {
    let mut index = SubscriptionIndex::new();
    let cheap = Arc::new(Query::parse("select * where price < 10").expect("constant query"));
    let mut key = 0u64;
    let mut next = || {
        key += 1;
        key
    };
    for _ in 0..MATCHING_COLLECTION {
        let target = Target::Collection {
            collection: "messages".into(),
            filter: None,
        };
        index.insert(next(), target);
    }
    for _ in 0..MATCHING_FILTERED {
        let target = Target::Collection {
            collection: "books".into(),
            filter: Some(cheap.clone()),
        };
        index.insert(next(), target);
    }
    for _ in 0..MATCHING_ENTITY {
        let target = Target::Entity {
            collection: "messages".into(),
            uuid: Some("m-hot".into()),
            name: None,
        };
        index.insert(next(), target);
    }
    for _ in 0..MATCHING_FEED {
        index.insert(
            next(),
            Target::Feed {
                owner: "user-hot".into(),
            },
        );
    }
    let fixed = MATCHING_COLLECTION + MATCHING_FILTERED + MATCHING_ENTITY + MATCHING_FEED;
    for i in 0..total.saturating_sub(fixed) {
        let target = match i % 4 {
            0 => Target::Entity {
                collection: "messages".into(),
                uuid: Some(format!("m-{i}")),
                name: None,
            },
            1 => Target::Entity {
                collection: "users".into(),
                uuid: None,
                name: Some(format!("user{i}")),
            },
            2 => Target::Feed {
                owner: format!("user-{i}").into(),
            },
            _ => Target::Queue {
                queue: format!("/jobs/{i}"),
            },
        };
        index.insert(next(), target);
    }
    assert_eq!(index.len() as u64, total.max(fixed));
    index
}

fn change<'a>(
    kind: ChangeKind,
    collection: &'a str,
    uuid: &'a str,
    entity: &'a Value,
) -> Change<'a> {
    Change {
        seq: 1,
        kind,
        collection,
        uuid,
        name: None,
        entity,
        previous: None,
        feed_owner: None,
        queue: None,
    }
}

fn matcher(c: &mut Criterion) {
    let message = json!({"uuid": "m-hot", "type": "message", "text": "hello"});
    let book = json!({"uuid": "b-1", "type": "book", "price": 5});
    let activity = json!({"uuid": "a-1", "type": "activity", "verb": "post"});
    let unwatched = json!({"uuid": "x-1", "type": "thing"});
    let cases: [(&str, Change<'_>, u64); 4] = [
        (
            // 100 collection subscribers and 5 of the entity itself.
            "message_create",
            change(ChangeKind::Create, "messages", "m-hot", &message),
            MATCHING_COLLECTION + MATCHING_ENTITY,
        ),
        (
            // 20 filtered subscribers, each evaluating its `ql`.
            "filtered_create",
            change(ChangeKind::Create, "books", "b-1", &book),
            MATCHING_FILTERED,
        ),
        (
            "feed_item",
            Change {
                feed_owner: Some("user-hot"),
                ..change(ChangeKind::FeedItem, "activities", "a-1", &activity)
            },
            MATCHING_FEED,
        ),
        (
            // A change nobody watches: the cost of the lookup alone.
            "unwatched",
            change(ChangeKind::Update, "things", "x-1", &unwatched),
            0,
        ),
    ];

    let mut group = c.benchmark_group("matcher");
    group.throughput(Throughput::Elements(1));
    for total in [10_000u64, 100_000, 1_000_000] {
        let index = index(total);
        let mut out: Vec<(u64, EventKind)> = Vec::with_capacity(256);
        for (name, change, expected) in &cases {
            out.clear();
            index.matches(change, &mut out);
            assert_eq!(out.len() as u64, *expected, "{name} at {total}");
            group.bench_with_input(BenchmarkId::new(*name, total), change, |b, change| {
                b.iter(|| {
                    out.clear();
                    index.matches(black_box(change), &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matcher);
criterion_main!(benches);
