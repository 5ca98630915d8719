//! The store contract, checked on both stores: the embedded SQLite store and PostgreSQL.
//!
//! Each test runs once per store. With PostgreSQL, "two nodes" are two separate
//! `PostgresStore`s (two connection pools) on one schema; SQLite has one writer, so there they
//! are two handles on one store.

use gridsocket_e2e::{postgres_schema, require_postgres};
use gridsocket_server::store::{
    Entity, PageQuery, PostgresStore, QueueRead, SqliteStore, Store, StoreError,
};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;

const APP: &str = "app-1";

/// Two handles on one fresh store of each kind (PostgreSQL only where it runs; on CI it must).
async fn stores(
    test: &str,
) -> Vec<(
    &'static str,
    Arc<dyn Store>,
    Arc<dyn Store>,
    Option<tempfile::TempDir>,
)> {
    let temp = tempfile::tempdir().expect("temp dir");
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(temp.path()).expect("sqlite opens"));
    let mut out = vec![("sqlite", sqlite.clone(), sqlite, Some(temp))];
    if require_postgres().await.is_some() {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let url = postgres_schema(&format!("gs_test_store_{test}_{nonce:x}")).await;
        let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.expect("pg opens"));
        let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.expect("pg opens"));
        out.push(("postgres", a, b, None));
    }
    out
}

fn entity(collection: &str, name: Option<&str>) -> Entity {
    let uuid = uuid_v7();
    let mut data = Map::new();
    data.insert("uuid".into(), json!(uuid));
    data.insert("type".into(), json!(collection));
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

fn uuid_v7() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    // Time-ordered and unique within the process is all these tests need.
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{t:012x}-0000-7000-8000-{n:012x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_two_nodes_get_a_gap_free_log_in_order() {
    for (kind, a, b, _temp) in stores("log").await {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    store
                        .insert_entity(APP, &entity("things", None), None)
                        .await
                        .expect("insert");
                }
            }));
        }
        // A reader while they write: each read goes on from the last position it saw with
        // the next one, never past a gap (a later batch must not become visible before an
        // earlier one commits).
        let reader = {
            let b = b.clone();
            tokio::spawn(async move {
                let mut after = 0;
                while after < 200 {
                    let batch = b.changes_since(APP, after, 64).await.expect("changes");
                    for c in &batch.changes {
                        assert_eq!(c.seq, after + 1, "{kind}: read while written, in order");
                        after = c.seq;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        for t in tasks {
            t.await.expect("writer");
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("the reader sees all 200")
            .expect("reader");
        assert_eq!(a.log_position(APP).await.expect("position"), 200, "{kind}");
        let mut seqs = Vec::new();
        let mut after = 0;
        loop {
            let batch = b.changes_since(APP, after, 64).await.expect("changes");
            if batch.changes.is_empty() {
                break;
            }
            after = batch.changes.last().map(|c| c.seq).unwrap_or(after);
            seqs.extend(batch.changes.iter().map(|c| c.seq));
        }
        assert_eq!(
            seqs,
            (1..=200).collect::<Vec<u64>>(),
            "{kind}: gap-free, in order"
        );
    }
}

/// Writers on two nodes, each writing as soon as its last write is answered, as sockets do:
/// PostgreSQL's batches take in the writes that came while they waited for the log's row,
/// and stop at one that cannot join them (an entity with a name). Every write lands and is
/// logged once, in a gap-free log, and each writer's in the order it wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_that_come_while_a_batch_waits_are_each_logged_once_in_order() {
    for (kind, a, b, _temp) in stores("late").await {
        let mut writers = Vec::new();
        for w in 0..16 {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            writers.push(tokio::spawn(async move {
                for n in 0..25 {
                    let name = (n % 10 == 9).then(|| format!("w{w}-{n}"));
                    let mut e = entity("things", name.as_deref());
                    e.data.insert("writer".into(), json!(w));
                    e.data.insert("n".into(), json!(n));
                    store.insert_entity(APP, &e, None).await.expect("insert");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        let batch = a.changes_since(APP, 0, 1000).await.expect("changes");
        let seqs: Vec<u64> = batch.changes.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>(), "{kind}: gap-free");
        for w in 0..16 {
            let logged: Vec<u64> = batch
                .changes
                .iter()
                .filter(|c| c.entity.get("writer") == Some(&json!(w)))
                .filter_map(|c| c.entity.get("n").and_then(Value::as_u64))
                .collect();
            assert_eq!(
                logged,
                (0..25).collect::<Vec<u64>>(),
                "{kind}: writer {w}'s"
            );
        }
        let named = batch.changes.iter().filter(|c| c.name.is_some()).count();
        assert_eq!(named, 16 * 2, "{kind}: the named ones");
    }
}

/// Writes committed together (PostgreSQL's group commit, SQLite's writer groups) stay each
/// its own: among many at once on two nodes, the ones refused (a taken name) change nothing
/// and take no `seq`, and every other lands, with the log gap-free, on two apps at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_write_among_many_at_once_undoes_only_itself() {
    for (kind, a, b, _temp) in stores("batch").await {
        let mut tasks = Vec::new();
        for w in 0..16 {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let app = if w % 4 < 2 { APP } else { "app-2" };
                let mut refused = 0;
                for i in 0..20 {
                    // Every writer tries the same names: one of each lands.
                    let name = (i % 5 == 0).then(|| format!("taken-{i}"));
                    match store
                        .insert_entity(app, &entity("things", name.as_deref()), None)
                        .await
                    {
                        Ok(()) => {}
                        Err(StoreError::Duplicate(_)) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (app, refused)
            }));
        }
        let mut refused = std::collections::HashMap::new();
        for t in tasks {
            let (app, n) = t.await.expect("writer");
            *refused.entry(app).or_insert(0u64) += n;
        }
        for app in [APP, "app-2"] {
            // 8 writers of 20 each; 4 names taken once, refused for the other 7.
            assert_eq!(refused[app], 4 * 7, "{kind} {app}");
            let landed = 8 * 20 - 4 * 7;
            assert_eq!(
                a.log_position(app).await.expect("position"),
                landed,
                "{kind} {app}"
            );
            let batch = b.changes_since(app, 0, 1000).await.expect("changes");
            let seqs: Vec<u64> = batch.changes.iter().map(|c| c.seq).collect();
            assert_eq!(
                seqs,
                (1..=landed).collect::<Vec<u64>>(),
                "{kind} {app}: gap-free"
            );
            // The index holds what landed, whether it went in with others or again alone.
            for ql in [
                "select * where name = 'taken-5'".to_owned(),
                "select * where type = 'things'".to_owned(),
            ] {
                let q = gridsocket_core::Query::parse(&ql).expect("ql");
                let page = PageQuery::first(Some(&q), 1000);
                let found = b.query(app, "things", &page).await.expect("query");
                let want = if ql.contains("taken") { 1 } else { landed };
                assert_eq!(found.entities.len() as u64, want, "{kind} {app}: {ql}");
            }
        }
    }
}

/// A new entity's index rows go in without a check for existing ones: values the databases
/// hold as one (`0` and `-0.0`) must make one row, or the entity would be refused.
#[tokio::test]
async fn a_new_entity_with_zero_and_minus_zero_goes_in_and_is_found() {
    for (kind, a, b, _temp) in stores("zeros").await {
        let mut e = entity("things", None);
        let zeros: Value = serde_json::from_str("[0, 0.0, -0.0]").expect("json");
        e.data.insert("zs".into(), zeros);
        e.data.insert("z".into(), json!(-0.0));
        a.insert_entity(APP, &e, None).await.expect("insert");
        for ql in ["select * where zs = 0", "select * where z = 0"] {
            let q = gridsocket_core::Query::parse(ql).expect("ql");
            let page = PageQuery::first(Some(&q), 10);
            let found = b.query(APP, "things", &page).await.expect("query");
            assert_eq!(found.entities.len(), 1, "{kind}: {ql}");
        }
    }
}

#[tokio::test]
async fn names_are_unique_regardless_of_case_and_found_regardless_of_case() {
    for (kind, a, b, _temp) in stores("names").await {
        a.insert_entity(APP, &entity("dogs", Some("Rex")), None)
            .await
            .expect("first");
        let second = b
            .insert_entity(APP, &entity("dogs", Some("rEX")), None)
            .await;
        assert!(
            matches!(second, Err(StoreError::Duplicate(_))),
            "{kind}: {second:?}"
        );
        let found = b
            .entity(
                APP,
                Some("dogs"),
                gridsocket_server::store::EntityKey::Name("REX"),
            )
            .await
            .expect("lookup");
        assert_eq!(found.and_then(|e| e.name).as_deref(), Some("Rex"), "{kind}");
    }
}

/// Posts `n` messages to `queue`, each with its index in `n`.
async fn post(store: &Arc<dyn Store>, queue: &str, n: usize) {
    let messages: Vec<Map<String, Value>> = (0..n)
        .map(|i| {
            let mut m = Map::new();
            m.insert("n".into(), json!(i));
            m
        })
        .collect();
    store
        .queue_post(APP, queue, &messages, 1_000)
        .await
        .expect("post");
}

fn indexes(read: &[gridsocket_server::store::QueuedMessage]) -> Vec<u64> {
    read.iter()
        .map(|m| m.message["n"].as_u64().expect("n"))
        .collect()
}

#[tokio::test]
async fn one_consumer_id_read_from_two_nodes_gets_each_message_once() {
    for (kind, a, b, _temp) in stores("consumer").await {
        post(&a, "/jobs", 300).await;
        let reader = |store: Arc<dyn Store>| async move {
            let mut got = Vec::new();
            loop {
                let read = QueueRead::Consumer {
                    consumer: "workers".into(),
                    timeout_ms: 0,
                };
                let batch = store
                    .queue_read(APP, "/jobs", &read, 7, 2_000)
                    .await
                    .expect("read");
                if batch.is_empty() {
                    return got;
                }
                got.extend(indexes(&batch));
            }
        };
        let (x, y) = tokio::join!(
            tokio::spawn(reader(a.clone())),
            tokio::spawn(reader(b.clone()))
        );
        let (x, y) = (x.expect("reader"), y.expect("reader"));
        let mut all: Vec<u64> = x.iter().chain(y.iter()).copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..300).collect::<Vec<u64>>(),
            "{kind}: every message exactly once"
        );
        // Each node saw its share in order.
        assert!(x.windows(2).all(|w| w[0] < w[1]), "{kind}");
        assert!(y.windows(2).all(|w| w[0] < w[1]), "{kind}");
    }
}

#[tokio::test]
async fn queue_transactions_hide_messages_until_they_time_out_then_come_back_once() {
    for (kind, a, b, _temp) in stores("tx").await {
        post(&a, "/mail", 10).await;
        let read = QueueRead::Consumer {
            consumer: "c".into(),
            timeout_ms: 5_000,
        };
        // Two nodes read concurrently in transactions: disjoint halves.
        let (x, y) = tokio::join!(
            a.queue_read(APP, "/mail", &read, 5, 10_000),
            b.queue_read(APP, "/mail", &read, 5, 10_000)
        );
        let (x, y) = (x.expect("read"), y.expect("read"));
        let seen: HashSet<u64> = indexes(&x).into_iter().chain(indexes(&y)).collect();
        assert_eq!(
            seen.len(),
            10,
            "{kind}: {:?} {:?}",
            indexes(&x),
            indexes(&y)
        );
        // Commit the first; the rest time out.
        let committed_n = x[0].message["n"].as_u64();
        let committed = x[0].message["transaction"]
            .as_str()
            .expect("transaction id")
            .to_owned();
        assert!(
            a.queue_commit(APP, "/mail", &committed)
                .await
                .expect("commit"),
            "{kind}"
        );
        assert!(
            b.queue_read(APP, "/mail", &read, 20, 12_000)
                .await
                .expect("read")
                .is_empty(),
            "{kind}: nothing new, nothing timed out yet"
        );
        assert_eq!(
            a.queue_next_expiry(APP, "/mail", "c")
                .await
                .expect("expiry"),
            Some(15_000),
            "{kind}"
        );
        // After the timeout, from both nodes at once: the 9 uncommitted come back, once each.
        let (x, y) = tokio::join!(
            a.queue_read(APP, "/mail", &read, 20, 16_000),
            b.queue_read(APP, "/mail", &read, 20, 16_000)
        );
        let mut again: Vec<u64> = indexes(&x.expect("read"))
            .into_iter()
            .chain(indexes(&y.expect("read")))
            .collect();
        again.sort_unstable();
        let expected: Vec<u64> = (0..10).filter(|n| Some(*n) != committed_n).collect();
        assert_eq!(again, expected, "{kind}");
    }
}

/// Every method of the store contract (`store::contract`), on both stores.
#[tokio::test]
async fn both_stores_keep_the_whole_contract() {
    let temp = std::sync::Mutex::new(Vec::new());
    gridsocket_server::store::contract::run_all(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("sqlite opens");
        temp.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
        async move { Arc::new(store) as Arc<dyn Store> }
    })
    .await;
    if require_postgres().await.is_none() {
        return;
    }
    let n = std::sync::atomic::AtomicU64::new(0);
    gridsocket_server::store::contract::run_all(|| {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let url = postgres_schema(&format!("gs_test_contract_{nonce:x}_{i}")).await;
            Arc::new(PostgresStore::connect(&url).await.expect("pg opens")) as Arc<dyn Store>
        }
    })
    .await;
}

/// The first write after PostgreSQL's link came back is not refused. An operator found it
/// answered `500 internal_error` ("connection closed"): the writer kept its connections
/// between batches and took a closed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_write_after_the_database_link_came_back_works() {
    let Some((proxy, f, _data)) = behind_a_proxy("relink").await else {
        return;
    };
    let url = f.app_url("/relinks");
    let post = |n: u32| {
        gridsocket_e2e::rest(
            "POST",
            &url,
            Some(&f.admin_token),
            Some(serde_json::json!({"n": n})),
        )
    };
    assert_eq!(post(1).await.0, 200);
    proxy.cut();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.restore();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = post(2).await;
    assert_eq!(
        status, 200,
        "the first write after the link came back: {body}"
    );
}

/// A server whose PostgreSQL (a schema of its own, `gs_test_{name}_…`) is reached through a
/// proxy that can cut it off; its data dir goes with the last value. `None` (skip) without
/// PostgreSQL, which fails on CI.
async fn behind_a_proxy(
    name: &str,
) -> Option<(
    gridsocket_e2e::cluster::NatsProxy,
    gridsocket_e2e::Fixture,
    tempfile::TempDir,
)> {
    let pg = gridsocket_e2e::require_postgres().await?;
    // `host:port` of the URL.
    let rest = pg.split('@').next_back().unwrap_or(&pg);
    let host_port = rest.split('/').next().unwrap_or(rest).to_owned();
    let proxy = gridsocket_e2e::cluster::NatsProxy::start(&host_port).await;
    let through = postgres_schema(&format!("gs_test_{name}_{}", std::process::id()))
        .await
        .replace(&host_port, proxy.addr.trim_start_matches("nats://"));
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = gridsocket_server::Settings::ephemeral(temp.path().to_path_buf());
    settings.store = Some(through);
    let f =
        gridsocket_e2e::Fixture::on(gridsocket_e2e::TestServer::start_with(settings).await).await;
    Some((proxy, f, temp))
}

/// While the database cannot be reached, a request is told so, with when to retry: `503
/// store_unavailable`, `Retry-After: 1`, nothing done (it was `500 internal_error`, which a
/// client cannot tell from a bug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_out_of_reach_is_503_with_retry_after() {
    let Some((proxy, f, _data)) = behind_a_proxy("unreachable").await else {
        return;
    };
    proxy.cut();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    // The first may find a connection that broke under it (500); those after it cannot make
    // one.
    for n in 0..3 {
        let resp = client
            .post(f.app_url("/unreachables"))
            .bearer_auth(&f.admin_token)
            .json(&serde_json::json!({"n": n}))
            .send()
            .await
            .expect("an answer");
        let retry = resp.headers().get("retry-after").cloned();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON");
        seen.push((status, body["error"].clone(), retry.is_some()));
    }
    // (`server_busy` if making a connection outlasted the pool's wait, as on a busy machine.)
    assert!(
        seen.last()
            .is_some_and(|(status, error, retry)| *status == 503
                && (error == "store_unavailable" || error == "server_busy")
                && *retry),
        "{seen:?}"
    );
    // The balancer's health check takes the node out meanwhile; /status says it runs.
    let (status, body) = gridsocket_e2e::rest("GET", &f.server.url("/healthz"), None, None).await;
    assert_eq!(
        (status, body["status"].clone()),
        (503, json!("unavailable")),
        "{body}"
    );
    let (status, _) = gridsocket_e2e::rest("GET", &f.server.url("/status"), None, None).await;
    assert_eq!(status, 200);
    // And the metrics count the failures as they happen.
    let metrics = client
        .get(f.server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gridsocket_responses_total{") && l.contains("status=\"503\"")),
        "{metrics}"
    );
    proxy.restore();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = gridsocket_e2e::rest("GET", &f.server.url("/healthz"), None, None).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthy again once the link is back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
