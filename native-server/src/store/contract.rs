//! The store contract: what every [`Store`] does, as checks any backend must pass.
//!
//! `run_all(make)` runs every check against a fresh store from `make`; `tests/tests/store.rs`
//! runs it on SQLite and PostgreSQL. A third backend implements the trait and passes this.
//! Times are the callers' (`now` arguments), so the checks are deterministic.

use super::{
    AdminRecord, AppRecord, Asset, Direction, Entity, EntityKey, OrgRecord, PageQuery, QueueRead,
    Store, StoreError, TokenKind, TokenRecord,
};
use gridsocket_core::Query;
use gridsocket_core::subscription::ChangeKind;
use serde_json::{Map, Value, json};
use std::future::Future;
use std::sync::Arc;

const APP: &str = "00000000-0000-7000-8000-00000000a991";

/// Runs every check, each on a fresh store.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    orgs_admins_and_apps(&*make().await).await;
    tokens_are_stored_hashed_and_revoked(&*make().await).await;
    entities_are_unique_by_name_in_any_case(&*make().await).await;
    entity_changes_are_logged_in_order(&*make().await).await;
    pages_follow_limit_offset_query_bytes_and_deadline(&*make().await).await;
    queries_answer_as_the_query_language_does(&*make().await).await;
    cursors_hold_while_others_write(&*make().await).await;
    queries_the_index_cannot_narrow_are_bounded(&*make().await).await;
    entities_without_the_order_key_come_last_in_bounded_pages(&*make().await).await;
    relations_and_feeds(&*make().await).await;
    permissions_are_a_set(&*make().await).await;
    queues_deliver_each_message_once_per_consumer(&*make().await).await;
    queue_subscribers_get_copies(&*make().await).await;
    writes_are_claimed_once(&*make().await).await;
    assets_live_and_die_with_their_entity(&*make().await).await;
}

/// A fresh uuid in time order.
fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An entity of `collection` with a name and properties.
pub fn entity(collection: &str, name: Option<&str>, props: Value) -> Entity {
    let uuid = uuid();
    let mut data = match props {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    data.insert("uuid".into(), json!(uuid));
    data.insert("type".into(), json!(collection.trim_end_matches('s')));
    // As the API sets them: every entity has both.
    let now = super::rows::wall_ms();
    data.insert("created".into(), json!(now));
    data.insert("modified".into(), json!(now));
    if let Some(n) = name {
        data.insert("name".into(), json!(n));
    }
    Entity {
        uuid,
        collection: collection.into(),
        name: name.map(str::to_owned),
        data,
    }
}

fn page(query: Option<&Query>, limit: usize, offset: usize) -> PageQuery<'_> {
    PageQuery {
        offset,
        ..PageQuery::first(query, limit)
    }
}

fn names(entities: &[Entity]) -> Vec<String> {
    entities
        .iter()
        .map(|e| e.name.clone().unwrap_or_default())
        .collect()
}

/// Organizations, their admins and applications: unique names in any case, found by name,
/// uuid, client id and login.
pub async fn orgs_admins_and_apps(store: &dyn Store) {
    let org = OrgRecord {
        uuid: uuid(),
        name: "Acme".into(),
        client_id: "org-client".into(),
        client_secret: "org-secret".into(),
        created: 1,
    };
    let admin = AdminRecord {
        uuid: uuid(),
        username: "Boss".into(),
        email: "Boss@Acme.test".into(),
        name: "The Boss".into(),
        password_hash: "$argon2id$x".into(),
        created: 1,
    };
    store.create_org(&org, &admin).await.expect("create org");
    let again = OrgRecord {
        uuid: uuid(),
        client_id: "other".into(),
        name: "ACME".into(),
        ..org.clone()
    };
    let other_admin = AdminRecord {
        uuid: uuid(),
        username: "other".into(),
        email: "other@acme.test".into(),
        ..admin.clone()
    };
    assert!(matches!(
        store.create_org(&again, &other_admin).await,
        Err(StoreError::Duplicate(_))
    ));
    let found = store.org_by_name("acme").await.expect("read").expect("org");
    assert_eq!(found.uuid, org.uuid);
    assert_eq!(
        store
            .org_by_uuid(&org.uuid)
            .await
            .expect("read")
            .map(|o| o.name),
        Some("Acme".into())
    );
    assert_eq!(
        store
            .org_by_client_id("org-client")
            .await
            .expect("read")
            .map(|o| o.uuid),
        Some(org.uuid.clone())
    );
    assert!(
        store
            .org_by_client_id("nope")
            .await
            .expect("read")
            .is_none()
    );
    for login in ["boss", "BOSS", "boss@acme.test"] {
        let a = store
            .admin_by_login(login)
            .await
            .expect("read")
            .expect(login);
        assert_eq!(a.uuid, admin.uuid);
    }
    assert_eq!(
        store
            .admin_by_uuid(&admin.uuid)
            .await
            .expect("read")
            .map(|a| a.username),
        Some("Boss".into())
    );
    let orgs = store.admin_orgs(&admin.uuid).await.expect("read");
    assert_eq!(
        orgs.iter().map(|o| &o.uuid).collect::<Vec<_>>(),
        [&org.uuid]
    );

    let app = AppRecord {
        uuid: APP.into(),
        org_uuid: org.uuid.clone(),
        org_name: org.name.clone(),
        name: "Shop".into(),
        client_id: "app-client".into(),
        client_secret: "app-secret".into(),
        created: 2,
    };
    let role = entity("roles", Some("default"), json!({}));
    store
        .create_app(
            &app,
            std::slice::from_ref(&role),
            &[(role.uuid.clone(), "get:/**".into())],
        )
        .await
        .expect("create app");
    let twin = AppRecord {
        uuid: uuid(),
        name: "SHOP".into(),
        client_id: "twin".into(),
        ..app.clone()
    };
    assert!(matches!(
        store.create_app(&twin, &[], &[]).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        store
            .app_by_name(&org.uuid, "shop")
            .await
            .expect("read")
            .map(|a| a.uuid),
        Some(APP.into())
    );
    assert_eq!(
        store
            .app_by_client_id("app-client")
            .await
            .expect("read")
            .map(|a| a.name),
        Some("Shop".into())
    );
    assert_eq!(store.apps_of_org(&org.uuid).await.expect("read").len(), 1);
    let seeded = store
        .entity(APP, Some("roles"), EntityKey::Name("DEFAULT"))
        .await
        .expect("read")
        .expect("seeded role");
    assert_eq!(
        store.permissions(APP, &seeded.uuid).await.expect("read"),
        ["get:/**"]
    );
}

/// Tokens are found by hash and revoked by subject, but the one kept.
pub async fn tokens_are_stored_hashed_and_revoked(store: &dyn Store) {
    let token = |n: u8, subject: &str| TokenRecord {
        hash: [n; 32],
        kind: TokenKind::AppUser,
        subject: subject.into(),
        scope: APP.into(),
        created: 1,
        expires: 1_000,
    };
    for (n, who) in [(1, "u1"), (2, "u1"), (3, "u1"), (4, "u2")] {
        store.put_token(&token(n, who)).await.expect("put token");
    }
    let found = store.token(&[1; 32]).await.expect("read").expect("token");
    assert_eq!(
        (found.kind, found.subject.as_str(), found.expires),
        (TokenKind::AppUser, "u1", 1_000)
    );
    assert_eq!(
        store
            .revoke_tokens("u1", Some(&[2; 32]))
            .await
            .expect("revoke"),
        2
    );
    assert!(store.token(&[1; 32]).await.expect("read").is_none());
    assert!(
        store.token(&[2; 32]).await.expect("read").is_some(),
        "the kept one"
    );
    assert!(
        store.token(&[4; 32]).await.expect("read").is_some(),
        "another subject's"
    );
    assert_eq!(store.revoke_tokens("u1", None).await.expect("revoke"), 1);
    assert!(store.revoke_token(&[4; 32]).await.expect("revoke one"));
    assert!(store.token(&[4; 32]).await.expect("read").is_none());
    assert!(!store.revoke_token(&[4; 32]).await.expect("revoke again"));
}

/// Entities: unique by name in their collection whatever the case, found by uuid (in any
/// collection) or name, users by email; replaced and deleted with their relations.
pub async fn entities_are_unique_by_name_in_any_case(store: &dyn Store) {
    let rex = entity("dogs", Some("Rex"), json!({"age": 3}));
    store.insert_entity(APP, &rex, None).await.expect("insert");
    let twin = entity("dogs", Some("REX"), json!({}));
    assert!(matches!(
        store.insert_entity(APP, &twin, None).await,
        Err(StoreError::Duplicate(_))
    ));
    let cat = entity("cats", Some("rex"), json!({}));
    store
        .insert_entity(APP, &cat, None)
        .await
        .expect("the same name in another collection");
    assert_eq!(
        store
            .entity(APP, Some("dogs"), EntityKey::Name("rEx"))
            .await
            .expect("read")
            .map(|e| e.uuid),
        Some(rex.uuid.clone())
    );
    assert_eq!(
        store
            .entity(APP, None, EntityKey::Uuid(&cat.uuid))
            .await
            .expect("read")
            .map(|e| e.collection),
        Some("cats".into())
    );
    assert!(
        store
            .entity(APP, Some("dogs"), EntityKey::Uuid(&cat.uuid))
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .entity("another-app", Some("dogs"), EntityKey::Name("rex"))
            .await
            .expect("read")
            .is_none()
    );

    let ann = entity("users", Some("ann"), json!({"email": "Ann@Example.com"}));
    store
        .insert_entity(APP, &ann, Some("$argon2id$ann"))
        .await
        .expect("insert user");
    assert_eq!(
        store
            .user_by_email(APP, "ann@example.COM")
            .await
            .expect("read")
            .map(|u| u.uuid),
        Some(ann.uuid.clone())
    );
    assert_eq!(
        store
            .user_secret(APP, &ann.uuid)
            .await
            .expect("read")
            .as_deref(),
        Some("$argon2id$ann")
    );
    store
        .set_user_secret(APP, &ann.uuid, "$argon2id$new")
        .await
        .expect("set secret");
    assert_eq!(
        store
            .user_secret(APP, &ann.uuid)
            .await
            .expect("read")
            .as_deref(),
        Some("$argon2id$new")
    );

    let mut renamed = rex.clone();
    renamed.name = Some("Max".into());
    renamed.data.insert("age".into(), json!(4));
    store.replace_entity(APP, &renamed).await.expect("replace");
    assert!(
        store
            .entity(APP, Some("dogs"), EntityKey::Name("rex"))
            .await
            .expect("read")
            .is_none()
    );
    let max = store
        .entity(APP, Some("dogs"), EntityKey::Name("max"))
        .await
        .expect("read")
        .expect("renamed");
    assert_eq!(max.data["age"], 4);
    let fido = entity("dogs", Some("fido"), json!({}));
    store.insert_entity(APP, &fido, None).await.expect("insert");
    let mut clash = fido.clone();
    clash.name = Some("MAX".into());
    assert!(matches!(
        store.replace_entity(APP, &clash).await,
        Err(StoreError::Duplicate(_))
    ));

    store
        .add_relation(APP, &ann.uuid, "likes", &max.uuid)
        .await
        .expect("relate");
    store
        .add_permission(APP, &max.uuid, "get:/x")
        .await
        .expect("grant");
    assert!(store.delete_entity(APP, &max.uuid).await.expect("delete"));
    assert!(
        !store
            .delete_entity(APP, &max.uuid)
            .await
            .expect("delete again")
    );
    assert!(
        store
            .related_uuids(APP, &ann.uuid, "likes", Direction::Outbound)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        store
            .permissions(APP, &max.uuid)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Every entity change is logged in the same write, gap-free, with what subscriptions match
/// on; old changes are pruned by age.
pub async fn entity_changes_are_logged_in_order(store: &dyn Store) {
    assert_eq!(store.log_position(APP).await.expect("position"), 0);
    let mut e = entity("notes", Some("n"), json!({"v": 1}));
    store.insert_entity(APP, &e, None).await.expect("insert");
    e.data.insert("v".into(), json!(2));
    store.replace_entity(APP, &e).await.expect("replace");
    store.delete_entity(APP, &e.uuid).await.expect("delete");
    let batch = store.changes_since(APP, 0, 10).await.expect("changes");
    let kinds: Vec<ChangeKind> = batch.changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ChangeKind::Create, ChangeKind::Update, ChangeKind::Delete]
    );
    let seqs: Vec<u64> = batch.changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(batch.position, 3);
    assert_eq!(store.log_position(APP).await.expect("position"), 3);
    let update = &batch.changes[1];
    assert_eq!(
        (update.collection.as_str(), update.uuid.as_str()),
        ("notes", e.uuid.as_str())
    );
    assert_eq!(update.entity["v"], 2);
    assert_eq!(
        update.previous.as_ref().map(|p| p["v"].clone()),
        Some(json!(1))
    );
    let after = store.changes_since(APP, 2, 10).await.expect("changes");
    assert_eq!(after.changes.len(), 1);
    let limited = store.changes_since(APP, 0, 2).await.expect("changes");
    assert_eq!(limited.changes.len(), 2);
    assert_eq!(store.prune_changes(i64::MAX).await.expect("prune"), 3);
    let pruned = store.changes_since(APP, 0, 10).await.expect("changes");
    assert!(pruned.changes.is_empty());
    assert!(pruned.first_retained > 1, "{}", pruned.first_retained);
    assert_eq!(pruned.position, 3, "positions go on after pruning");
}

/// Pages: oldest first by default, `limit`, a cursor and `more`; a query filters and orders;
/// a byte budget ends a page early; a query past its deadline gives up.
pub async fn pages_follow_limit_offset_query_bytes_and_deadline(store: &dyn Store) {
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let e = entity(
            "books",
            Some(name),
            json!({"n": i, "big": "x".repeat(1000)}),
        );
        store.insert_entity(APP, &e, None).await.expect("insert");
    }
    let first = store
        .query(APP, "books", &page(None, 2, 0))
        .await
        .expect("page");
    assert_eq!(
        (names(&first.entities), first.more),
        (vec!["a".into(), "b".into()], true)
    );
    let fourth = super::search::position(None, &first.entities[1]);
    let second = store
        .query(
            APP,
            "books",
            &PageQuery {
                after: Some(&fourth),
                ..page(None, 2, 0)
            },
        )
        .await
        .expect("page");
    assert_eq!(names(&second.entities), ["c", "d"]);
    let after_d = super::search::position(None, &second.entities[1]);
    let last = store
        .query(
            APP,
            "books",
            &PageQuery {
                after: Some(&after_d),
                ..page(None, 2, 0)
            },
        )
        .await
        .expect("page");
    assert_eq!(
        (names(&last.entities), last.more),
        (vec!["e".into()], false)
    );
    let q = Query::parse("select * where n >= 1 order by n desc").expect("ql");
    let ordered = store
        .query(APP, "books", &page(Some(&q), 10, 0))
        .await
        .expect("page");
    assert_eq!(names(&ordered.entities), ["e", "d", "c", "b"]);
    let small = PageQuery {
        max_bytes: Some(1500),
        ..page(None, 10, 0)
    };
    let cut = store.query(APP, "books", &small).await.expect("page");
    assert!(
        cut.entities.len() < 5 && cut.more,
        "{} entities",
        cut.entities.len()
    );
    let late = PageQuery {
        deadline: Some(std::time::Instant::now() - std::time::Duration::from_secs(1)),
        ..page(Some(&q), 10, 0)
    };
    let many: Vec<Entity> = (0..300)
        .map(|i| entity("books", None, json!({"n": i})))
        .collect();
    for e in &many {
        store.insert_entity(APP, e, None).await.expect("insert");
    }
    assert!(matches!(
        store.query(APP, "books", &late).await,
        Err(StoreError::Timeout)
    ));
}

/// A small random generator (xorshift), seeded: the same entities and queries every run.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "alpha", "Beta", "gamma", "delta", "Alpha", "beta-max", "Zeta", "alphabet",
];

/// An entity of random shape: numbers, strings, booleans, arrays and objects where a query
/// expects them, other kinds or nothing where it may not.
fn random_entity(dice: &mut Dice) -> Entity {
    let mut props = Map::new();
    let n = match dice.below(10) {
        0 => None,
        1 => Some(json!(format!("{}", dice.below(50)))),
        2 => Some(json!(dice.below(50) as f64 + 0.5)),
        3 => Some(json!([dice.below(50), dice.below(50)])),
        4 => Some(json!(dice.below(2) == 0)),
        _ => Some(json!(dice.below(50))),
    };
    if let Some(n) = n {
        props.insert("n".into(), n);
    }
    if dice.below(8) > 0 {
        let words: Vec<&str> = (0..1 + dice.below(3)).map(|_| *dice.pick(WORDS)).collect();
        props.insert("s".into(), json!(words.join(" ")));
    }
    if dice.below(3) > 0 {
        props.insert("b".into(), json!(dice.below(2) == 0));
    }
    if dice.below(2) == 0 {
        props.insert("tags".into(), json!([dice.pick(WORDS), dice.below(5)]));
    }
    if dice.below(2) == 0 {
        let lat = dice.below(180) as f64 - 90.0 + dice.below(100) as f64 / 100.0;
        props.insert(
            "loc".into(),
            json!({"latitude": lat, "longitude": dice.below(360) as f64 - 180.0}),
        );
    }
    if dice.below(2) == 0 {
        props.insert(
            "a".into(),
            json!({"b": dice.below(20), "c": *dice.pick(WORDS)}),
        );
    }
    entity("things", None, Value::Object(props))
}

fn random_leaf(dice: &mut Dice) -> String {
    let op = *dice.pick(&["=", "<", "<=", ">", ">="]);
    match dice.below(12) {
        0 => format!("n {op} {}", dice.below(50)),
        1 => format!("n {op} {}.5", dice.below(50)),
        2 => format!("n = {}", dice.below(50)),
        3 => format!("s {op} '{}'", dice.pick(WORDS)),
        4 => format!("s = '{}*'", &dice.pick(WORDS)[..2]),
        5 => format!("s contains '{}'", dice.pick(WORDS)),
        6 => format!("s contains '{}*'", &dice.pick(WORDS)[..3]),
        7 => format!("b = {}", dice.below(2) == 0),
        8 => format!("tags = '{}'", dice.pick(WORDS)),
        9 => format!("a.b {op} {}", dice.below(20)),
        10 => format!(
            "loc within {} of {}, 10",
            1 + dice.below(3_000_000),
            dice.below(180) as i64 - 90
        ),
        _ => format!("n = '{}'", dice.below(50)),
    }
}

fn random_filter(dice: &mut Dice, depth: usize) -> String {
    match if depth > 2 { 0 } else { dice.below(6) } {
        0..=2 => random_leaf(dice),
        3 => format!(
            "{} and {}",
            random_filter(dice, depth + 1),
            random_filter(dice, depth + 1)
        ),
        4 => format!(
            "({} or {})",
            random_filter(dice, depth + 1),
            random_filter(dice, depth + 1)
        ),
        _ => format!("not ({})", random_filter(dice, depth + 1)),
    }
}

fn random_ql(dice: &mut Dice) -> String {
    let filter = match dice.below(5) {
        0 => String::new(),
        _ => format!(" where {}", random_filter(dice, 0)),
    };
    let keys = ["n", "s", "b", "a.b", "created", "uuid", "tags", "loc"];
    let order = match dice.below(4) {
        0 => String::new(),
        1 | 2 => format!(
            " order by {} {}",
            dice.pick(&keys),
            dice.pick(&["asc", "desc"])
        ),
        _ => format!(
            " order by {} {}, {} {}",
            dice.pick(&keys),
            dice.pick(&["asc", "desc"]),
            dice.pick(&keys),
            dice.pick(&["asc", "desc"])
        ),
    };
    format!("select *{filter}{order}")
}

/// Every page of a query, walked with cursors; at most `max_pages`.
async fn walk(
    store: &dyn Store,
    collection: &str,
    q: &Query,
    limit: usize,
    max_pages: usize,
) -> (Vec<String>, bool) {
    let (mut seen, mut after): (Vec<String>, Option<Map<String, Value>>) = (Vec::new(), None);
    for _ in 0..max_pages {
        let p = PageQuery {
            after: after.as_ref(),
            ..page(Some(q), limit, 0)
        };
        let got = store.query(APP, collection, &p).await.expect("query");
        seen.extend(got.entities.iter().map(|e| e.uuid.clone()));
        match next_after(q, &got) {
            Some(next) => after = Some(next),
            None => return (seen, true),
        }
    }
    (seen, false)
}

/// Where the page after `got` starts, as the API's cursor says; `None` after the last.
fn next_after(q: &Query, got: &super::Page) -> Option<Map<String, Value>> {
    if !got.more {
        return None;
    }
    match (&got.resume_after, got.entities.last()) {
        (Some(uuid), _) => Some(Map::from_iter([("uuid".to_owned(), json!(uuid))])),
        (None, Some(last)) => Some(super::search::position(Some(q), last)),
        (None, None) => None,
    }
}

/// The index answers every query form exactly as the query language does over the same
/// entities: random entities, random `ql`, each walked to its end with cursors and compared
/// with `Query::matches` and `Query::compare` over all of them. Enough entities that both the
/// few-candidates path and the walks run.
pub async fn queries_answer_as_the_query_language_does(store: &dyn Store) {
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15);
    let mut all = Vec::new();
    for _ in 0..1400 {
        let e = random_entity(&mut dice);
        store.insert_entity(APP, &e, None).await.expect("insert");
        all.push(e);
    }
    // Updates and deletes keep the index in step.
    for i in (0..all.len()).step_by(7) {
        let replacement = random_entity(&mut dice);
        let e = &mut all[i];
        let mut data = replacement.data;
        data.insert("uuid".into(), json!(e.uuid));
        e.data = data;
        store.replace_entity(APP, e).await.expect("replace");
    }
    for i in (3..all.len()).step_by(11).rev() {
        let e = all.remove(i);
        store.delete_entity(APP, &e.uuid).await.expect("delete");
    }
    let values: Vec<Value> = all.iter().map(|e| Value::Object(e.data.clone())).collect();
    for round in 0..120 {
        let ql = random_ql(&mut dice);
        let q = Query::parse(&ql).expect("ql");
        let mut expected: Vec<&Value> = values.iter().filter(|v| q.matches(v)).collect();
        expected.sort_by(|a, b| q.compare(a, b));
        let expected: Vec<String> = expected
            .iter()
            .map(|v| v["uuid"].as_str().unwrap_or_default().to_owned())
            .collect();
        let limit = *dice.pick(&[1, 7, 100, 1000]);
        let (seen, done) = walk(store, "things", &q, limit, 25).await;
        if done {
            assert_eq!(
                seen.len(),
                expected.len(),
                "round {round}: {ql} limit {limit}"
            );
            assert!(
                seen == expected,
                "round {round}: {ql} limit {limit}: a different order"
            );
        } else {
            assert_eq!(
                seen[..],
                expected[..seen.len()],
                "round {round}: {ql} limit {limit}"
            );
        }
    }
}

/// A walk with cursors while others insert and delete: every entity that exists for the
/// whole walk comes exactly once, in order, wherever the others write.
pub async fn cursors_hold_while_others_write(store: &dyn Store) {
    let mut dice = Dice(7);
    let mut stay = Vec::new();
    for i in 0..60 {
        let e = entity("walks", None, json!({"k": dice.below(20), "i": i}));
        store.insert_entity(APP, &e, None).await.expect("insert");
        stay.push(e);
    }
    for ql in [
        "select * order by k",
        "select * order by k desc",
        "select *",
        "select * where k >= 3 order by k",
    ] {
        let q = Query::parse(ql).expect("ql");
        let mut after: Option<Map<String, Value>> = None;
        let mut seen: Vec<Value> = Vec::new();
        let mut doomed: Vec<String> = Vec::new();
        loop {
            let p = PageQuery {
                after: after.as_ref(),
                ..page(Some(&q), 4, 0)
            };
            let got = store.query(APP, "walks", &p).await.expect("page");
            seen.extend(got.entities.iter().map(|e| Value::Object(e.data.clone())));
            // Others write everywhere, before and after the cursor.
            for _ in 0..3 {
                let e = entity("walks", None, json!({"k": dice.below(20), "new": true}));
                store.insert_entity(APP, &e, None).await.expect("insert");
                doomed.push(e.uuid);
            }
            if dice.below(2) == 0
                && let Some(victim) = doomed.pop()
            {
                store.delete_entity(APP, &victim).await.expect("delete");
            }
            match next_after(&q, &got) {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        for pair in seen.windows(2) {
            assert_eq!(
                q.compare(&pair[0], &pair[1]),
                std::cmp::Ordering::Less,
                "{ql}: in order, once"
            );
        }
        let seen: std::collections::HashSet<&str> =
            seen.iter().filter_map(|v| v["uuid"].as_str()).collect();
        for e in stay
            .iter()
            .filter(|e| q.matches(&Value::Object(e.data.clone())))
        {
            assert!(
                seen.contains(e.uuid.as_str()),
                "{ql}: {} was skipped",
                e.uuid
            );
        }
        for uuid in doomed {
            store.delete_entity(APP, &uuid).await.expect("delete");
        }
    }
}

/// A query the index cannot narrow reads at most `max_rows` entities for a page, then gives
/// up; one it can narrow answers whatever the collection's size.
pub async fn queries_the_index_cannot_narrow_are_bounded(store: &dyn Store) {
    for i in 0..300 {
        let e = entity("logs", None, json!({"n": i, "even": i % 2 == 0}));
        store.insert_entity(APP, &e, None).await.expect("insert");
    }
    fn bounded(q: &Query) -> PageQuery<'_> {
        PageQuery {
            max_rows: Some(100),
            ..page(Some(q), 10, 0)
        }
    }
    let none = Query::parse("select * where not n >= 0").expect("ql");
    assert!(matches!(
        store.query(APP, "logs", &bounded(&none)).await,
        Err(StoreError::TooExpensive(100))
    ));
    for ql in [
        "select * where n = 299",
        "select * where n > 290 order by n desc",
        "select * order by n desc",
        "select * where not even = true",
    ] {
        let q = Query::parse(ql).expect("ql");
        let got = store.query(APP, "logs", &bounded(&q)).await.expect(ql);
        assert!(!got.entities.is_empty(), "{ql}");
    }
}

/// The last pages of an `order by` walk pass over the collection for the entities without
/// the key, at most `max_rows` of it a page: pages that stop there (some empty) carry a
/// cursor that goes on where the pass stopped, and the walk still gets every entity once,
/// in order, in both directions.
pub async fn entities_without_the_order_key_come_last_in_bounded_pages(store: &dyn Store) {
    let mut all = Vec::new();
    for i in 0..240 {
        let props = if i % 40 == 7 {
            json!({"other": i})
        } else {
            json!({"n": i})
        };
        let e = entity("sparse", None, props);
        store.insert_entity(APP, &e, None).await.expect("insert");
        all.push(Value::Object(e.data));
    }
    for ql in ["select * order by n", "select * order by n desc"] {
        let q = Query::parse(ql).expect("ql");
        let mut expected: Vec<&Value> = all.iter().collect();
        expected.sort_by(|a, b| q.compare(a, b));
        let expected: Vec<&str> = expected.iter().filter_map(|v| v["uuid"].as_str()).collect();
        let (mut seen, mut after, mut pages, mut short) = (Vec::new(), None, 0, 0);
        loop {
            let p = PageQuery {
                after: after.as_ref(),
                max_rows: Some(30),
                ..page(Some(&q), 5, 0)
            };
            let got = store.query(APP, "sparse", &p).await.expect(ql);
            pages += 1;
            assert!(pages < 200, "{ql}: the walk ends");
            if got.resume_after.is_some() {
                short += 1;
                assert!(
                    got.entities.len() <= 5,
                    "{ql}: a page resumes within its limit"
                );
            }
            seen.extend(got.entities.iter().map(|e| e.uuid.clone()));
            match next_after(&q, &got) {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{ql}: every entity once, in order");
        assert!(short > 0, "{ql}: the pass for the missing key was bounded");
    }
}

/// Relations are a set of (source, relation, target), read from either end; feeds get
/// activities once per owner, each logged as a feed item.
pub async fn relations_and_feeds(store: &dyn Store) {
    let ann = entity("users", Some("ann"), json!({}));
    let bob = entity("users", Some("bob"), json!({}));
    for u in [&ann, &bob] {
        store.insert_entity(APP, u, None).await.expect("insert");
    }
    assert!(
        store
            .add_relation(APP, &ann.uuid, "following", &bob.uuid)
            .await
            .expect("add")
    );
    assert!(
        !store
            .add_relation(APP, &ann.uuid, "following", &bob.uuid)
            .await
            .expect("add again")
    );
    let out = store
        .related(
            APP,
            &ann.uuid,
            "following",
            Direction::Outbound,
            &page(None, 10, 0),
        )
        .await
        .expect("read");
    assert_eq!(names(&out.entities), ["bob"]);
    let inbound = store
        .related_uuids(APP, &bob.uuid, "following", Direction::Inbound)
        .await
        .expect("read");
    assert_eq!(inbound, std::slice::from_ref(&ann.uuid));
    // The names of an entity's relations, each once, outbound first.
    store
        .add_relation(APP, &ann.uuid, "likes", &bob.uuid)
        .await
        .expect("add");
    store
        .add_relation(APP, &bob.uuid, "likes", &ann.uuid)
        .await
        .expect("add");
    let names = store
        .relation_names(APP, &[bob.uuid.clone(), ann.uuid.clone()])
        .await
        .expect("names");
    let row = |e: &Entity, d, r: &str| (e.uuid.clone(), d, r.to_owned());
    assert_eq!(
        names,
        [
            row(&bob, Direction::Outbound, "likes"),
            row(&bob, Direction::Inbound, "following"),
            row(&bob, Direction::Inbound, "likes"),
            row(&ann, Direction::Outbound, "following"),
            row(&ann, Direction::Outbound, "likes"),
            row(&ann, Direction::Inbound, "likes"),
        ]
    );
    for (from, to) in [(&ann, &bob), (&bob, &ann)] {
        store
            .remove_relation(APP, &from.uuid, "likes", &to.uuid)
            .await
            .expect("remove");
    }
    assert!(
        store
            .remove_relation(APP, &ann.uuid, "following", &bob.uuid)
            .await
            .expect("remove")
    );
    assert!(
        !store
            .remove_relation(APP, &ann.uuid, "following", &bob.uuid)
            .await
            .expect("remove again")
    );

    let post = entity("activities", None, json!({"content": "hi"}));
    store.insert_entity(APP, &post, None).await.expect("insert");
    let before = store.log_position(APP).await.expect("position");
    let owners = [ann.uuid.clone(), bob.uuid.clone()];
    store
        .deliver_to_feeds(APP, &post, &owners)
        .await
        .expect("deliver");
    store
        .deliver_to_feeds(APP, &post, &owners)
        .await
        .expect("deliver again");
    for owner in &owners {
        let feed = store
            .related(APP, owner, "feed", Direction::Outbound, &page(None, 10, 0))
            .await
            .expect("feed");
        assert_eq!(feed.entities.len(), 1);
    }
    let items = store.changes_since(APP, before, 10).await.expect("changes");
    let fed: Vec<Option<String>> = items.changes.iter().map(|c| c.feed_owner.clone()).collect();
    assert_eq!(
        fed,
        owners.iter().cloned().map(Some).collect::<Vec<_>>(),
        "once per owner"
    );
    assert!(items.changes.iter().all(|c| c.kind == ChangeKind::FeedItem));
}

/// Permissions of an owner are a set of strings.
pub async fn permissions_are_a_set(store: &dyn Store) {
    assert!(
        store
            .add_permission(APP, "r1", "get:/a")
            .await
            .expect("add")
    );
    assert!(
        !store
            .add_permission(APP, "r1", "get:/a")
            .await
            .expect("add again")
    );
    assert!(
        store
            .add_permission(APP, "r1", "post:/b")
            .await
            .expect("add")
    );
    let mut perms = store.permissions(APP, "r1").await.expect("read");
    perms.sort();
    assert_eq!(perms, ["get:/a", "post:/b"]);
    assert!(
        store
            .remove_permission(APP, "r1", "get:/a")
            .await
            .expect("remove")
    );
    assert!(
        !store
            .remove_permission(APP, "r1", "get:/a")
            .await
            .expect("remove again")
    );
    assert!(store.permissions(APP, "r2").await.expect("read").is_empty());
}

/// A queue: read from the start without moving anything, by consumer in order and once, and
/// with a timeout in transactions that hide messages until committed or timed out (then they
/// come again, first).
pub async fn queues_deliver_each_message_once_per_consumer(store: &dyn Store) {
    let msgs: Vec<Map<String, Value>> = (0..5)
        .map(|i| match json!({"i": i}) {
            Value::Object(m) => m,
            _ => Map::new(),
        })
        .collect();
    let posted = store
        .queue_post(APP, "/jobs", &msgs, 100)
        .await
        .expect("post");
    assert_eq!(posted.len(), 5);
    assert!(posted.iter().all(|m| m["uuid"].is_string()), "{posted:?}");
    let index = |read: &[super::QueuedMessage]| -> Vec<i64> {
        read.iter()
            .map(|m| m.message["i"].as_i64().unwrap_or(-1))
            .collect()
    };
    let start = store
        .queue_read(APP, "/jobs", &QueueRead::Start, 3, 100)
        .await
        .expect("read");
    assert_eq!(index(&start), [0, 1, 2]);
    let plain = QueueRead::Consumer {
        consumer: "c1".into(),
        timeout_ms: 0,
    };
    assert_eq!(
        index(
            &store
                .queue_read(APP, "/jobs", &plain, 2, 100)
                .await
                .expect("read")
        ),
        [0, 1]
    );
    assert_eq!(
        index(
            &store
                .queue_read(APP, "/jobs", &plain, 10, 100)
                .await
                .expect("read")
        ),
        [2, 3, 4]
    );
    assert!(
        store
            .queue_read(APP, "/jobs", &plain, 10, 100)
            .await
            .expect("read")
            .is_empty()
    );

    let held = QueueRead::Consumer {
        consumer: "c2".into(),
        timeout_ms: 1_000,
    };
    let first = store
        .queue_read(APP, "/jobs", &held, 2, 100)
        .await
        .expect("read");
    assert_eq!(index(&first), [0, 1]);
    let txs: Vec<String> = first
        .iter()
        .map(|m| {
            m.message["transaction"]
                .as_str()
                .expect("transaction")
                .to_owned()
        })
        .collect();
    assert_eq!(
        store
            .queue_next_expiry(APP, "/jobs", "c2")
            .await
            .expect("expiry"),
        Some(1_100)
    );
    assert!(
        store
            .queue_commit(APP, "/jobs", &txs[0])
            .await
            .expect("commit")
    );
    assert!(
        !store
            .queue_commit(APP, "/jobs", &txs[0])
            .await
            .expect("commit again")
    );
    let next = store
        .queue_read(APP, "/jobs", &held, 2, 500)
        .await
        .expect("read");
    assert_eq!(
        index(&next),
        [2, 3],
        "hidden ones wait for their transaction"
    );
    let later = store
        .queue_read(APP, "/jobs", &held, 10, 1_200)
        .await
        .expect("read");
    assert_eq!(
        index(&later),
        [1, 4],
        "the timed-out one comes again, first"
    );
    assert!(
        later[0].message["transaction"].as_str() != Some(txs[1].as_str()),
        "in a new transaction"
    );
    assert_eq!(store.queues(APP).await.expect("queues"), ["/jobs"]);
}

/// Subscriber queues get a copy of every message posted after they subscribe.
pub async fn queue_subscribers_get_copies(store: &dyn Store) {
    assert!(
        store
            .queue_subscribe(APP, "/news", "/inbox/ann", true)
            .await
            .expect("subscribe")
    );
    assert!(
        !store
            .queue_subscribe(APP, "/news", "/inbox/ann", true)
            .await
            .expect("again")
    );
    assert_eq!(
        store.queue_subscribers(APP, "/news").await.expect("read"),
        ["/inbox/ann"]
    );
    let msg = match json!({"headline": "x"}) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    store
        .queue_post(APP, "/news", std::slice::from_ref(&msg), 1)
        .await
        .expect("post");
    let copy = store
        .queue_read(APP, "/inbox/ann", &QueueRead::Start, 10, 1)
        .await
        .expect("read");
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0].message["headline"], "x");
    assert!(
        store
            .queue_subscribe(APP, "/news", "/inbox/ann", false)
            .await
            .expect("unsubscribe")
    );
    store
        .queue_post(APP, "/news", &[msg], 2)
        .await
        .expect("post");
    assert_eq!(
        store
            .queue_read(APP, "/inbox/ann", &QueueRead::Start, 10, 2)
            .await
            .expect("read")
            .len(),
        1
    );
}

/// A write id is claimed once per application; its answer is remembered, released after a
/// failure, and forgotten with age.
pub async fn writes_are_claimed_once(store: &dyn Store) {
    assert!(
        store
            .claim_write(APP, "w1", "user:a", "POST /x", 10)
            .await
            .expect("claim")
            .is_none()
    );
    let again = store
        .claim_write(APP, "w1", "user:a", "POST /x", 11)
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(
        (
            again.owner.as_str(),
            again.fingerprint.as_str(),
            again.answer
        ),
        ("user:a", "POST /x", None)
    );
    store
        .finish_write(APP, "w1", 200, "{\"ok\":true}")
        .await
        .expect("finish");
    let done = store
        .claim_write(APP, "w1", "user:a", "POST /x", 12)
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(done.answer, Some((200, "{\"ok\":true}".into())));
    assert!(
        store
            .claim_write("another-app", "w1", "user:a", "POST /x", 12)
            .await
            .expect("claim")
            .is_none()
    );
    assert!(
        store
            .claim_write(APP, "w2", "user:a", "POST /y", 13)
            .await
            .expect("claim")
            .is_none()
    );
    store.release_write(APP, "w2").await.expect("release");
    assert!(
        store
            .claim_write(APP, "w2", "user:a", "POST /y", 14)
            .await
            .expect("claim")
            .is_none(),
        "released"
    );
    assert!(store.prune_writes(1_000, 100_000).await.expect("prune") >= 3);
    assert!(
        store
            .claim_write(APP, "w1", "user:a", "POST /x", 15)
            .await
            .expect("claim")
            .is_none(),
        "forgotten"
    );
}

/// An entity's binary data: stored in the same write as the entity's update (which is
/// logged), replaced by the next, read back whole, and deleted with the entity.
pub async fn assets_live_and_die_with_their_entity(store: &dyn Store) {
    let mut photo = entity("photos", Some("cat"), json!({}));
    store
        .insert_entity(APP, &photo, None)
        .await
        .expect("insert");
    assert_eq!(store.asset(APP, &photo.uuid).await.expect("read"), None);
    let jpeg = Asset {
        content_type: "image/jpeg".into(),
        data: (0..=255u8).cycle().take(100_000).collect(),
    };
    photo
        .data
        .insert("file-metadata".into(), json!({"content-length": 100_000}));
    assert!(store.put_asset(APP, &photo, &jpeg).await.expect("put"));
    assert_eq!(
        store.asset(APP, &photo.uuid).await.expect("read"),
        Some(jpeg)
    );
    let batch = store.changes_since(APP, 0, 10).await.expect("changes");
    let last = batch.changes.last().expect("a change");
    assert_eq!(last.kind, ChangeKind::Update);
    assert_eq!(last.entity["file-metadata"]["content-length"], 100_000);
    let png = Asset {
        content_type: "image/png".into(),
        data: vec![1, 2, 3],
    };
    assert!(store.put_asset(APP, &photo, &png).await.expect("replace"));
    assert_eq!(
        store.asset(APP, &photo.uuid).await.expect("read"),
        Some(png.clone())
    );
    let ghost = entity("photos", None, json!({}));
    assert!(!store.put_asset(APP, &ghost, &png).await.expect("no entity"));
    assert_eq!(store.asset(APP, &ghost.uuid).await.expect("read"), None);
    assert!(store.delete_entity(APP, &photo.uuid).await.expect("delete"));
    assert_eq!(store.asset(APP, &photo.uuid).await.expect("read"), None);
}
