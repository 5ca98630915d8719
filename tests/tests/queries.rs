//! Queries (`ql`), ordering, projection and cursor paging.

use gridsocket_e2e::{Fixture, rest};
use serde_json::{Value, json};
use std::collections::HashSet;

async fn seeded() -> Fixture {
    let f = Fixture::new().await;
    let books: Vec<Value> = (0..25)
        .map(|i| json!({"name": format!("book-{i:02}"), "price": i, "genre": if i % 2 == 0 {"sf"} else {"crime"},
                        "title": format!("The Volume {i} of Things")}))
        .collect();
    let (status, body) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.john),
        Some(Value::Array(books)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    f
}

fn names(body: &Value) -> Vec<String> {
    body["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_order_and_projection() {
    let f = seeded().await;
    let mut ws = f.socket(&f.john).await;
    let q = |ql: &str, limit: u32| json!({"ql": ql, "limit": limit});
    let cheap = ws
        .request(
            json!(1),
            "GET",
            "/books",
            Some(q("select * where price < 5", 100)),
            None,
        )
        .await;
    assert_eq!(cheap["body"]["count"], 5);
    let both = ws
        .request(
            json!(2),
            "GET",
            "/books",
            Some(q(
                "genre = 'sf' and (price >= 20 or price eq 0) order by price desc",
                100,
            )),
            None,
        )
        .await;
    assert_eq!(
        names(&both["body"]),
        ["book-24", "book-22", "book-20", "book-00"]
    );
    let not = ws
        .request(
            json!(3),
            "GET",
            "/books",
            Some(q("not genre = 'sf' and price lte 3", 100)),
            None,
        )
        .await;
    assert_eq!(names(&not["body"]), ["book-01", "book-03"]);
    let words = ws
        .request(
            json!(4),
            "GET",
            "/books",
            Some(q(
                "title contains 'volume' and title contains 'thing*' and price < 2",
                100,
            )),
            None,
        )
        .await;
    assert_eq!(words["body"]["count"], 2);
    let prefix = ws
        .request(
            json!(5),
            "GET",
            "/books",
            Some(q("name = 'book-1*'", 100)),
            None,
        )
        .await;
    assert_eq!(prefix["body"]["count"], 10);
    let list = ws
        .request(
            json!(6),
            "GET",
            "/books",
            Some(q("select name, price where price = 3", 10)),
            None,
        )
        .await;
    assert_eq!(list["body"]["list"], json!([["book-03", 3]]));
    assert!(list["body"].get("entities").is_none());
    let renamed = ws
        .request(
            json!(7),
            "GET",
            "/books",
            Some(q("select {n: name} where price = 4", 10)),
            None,
        )
        .await;
    assert_eq!(renamed["body"]["list"], json!([{"n": "book-04"}]));
    let bad = ws
        .request(
            json!(8),
            "GET",
            "/books",
            Some(q("select * where price <", 10)),
            None,
        )
        .await;
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["body"]["error"], "query_parse");
    assert!(
        bad["body"]["error_description"]
            .as_str()
            .unwrap()
            .contains("position 22"),
        "{bad}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_paging_visits_everything_once() {
    let f = seeded().await;
    for ql in [None, Some("select * where price >= 0 order by price desc")] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = format!("{}?limit=10", f.app_url("/books"));
            if let Some(q) = ql {
                url.push_str(&format!(
                    "&ql={}",
                    q.replace(' ', "%20")
                        .replace('>', "%3E")
                        .replace('=', "%3D")
                ));
            }
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = rest("GET", &url, Some(&f.john), None).await;
            assert_eq!(status, 200, "{body}");
            pages += 1;
            seen.extend(names(&body));
            match body.get("cursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 25);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
        if ql.is_some() {
            assert_eq!(seen.first().map(String::as_str), Some("book-24"));
        } else {
            assert_eq!(
                seen.first().map(String::as_str),
                Some("book-00"),
                "default order is creation order"
            );
        }
    }
    let default = rest("GET", &f.app_url("/books"), Some(&f.john), None)
        .await
        .1;
    assert_eq!(default["count"], 10, "default limit is 10");
    for bad in [
        "limit=0",
        "limit=-1",
        "limit=ten",
        "cursor=bogus",
        "cursor=%00%ff",
    ] {
        let (status, body) = rest(
            "GET",
            &format!("{}?{bad}", f.app_url("/books")),
            Some(&f.john),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"].clone()),
            (400, json!("illegal_argument")),
            "{bad}: {body}"
        );
    }
    let (status, body) = rest(
        "GET",
        &format!("{}?limit=5000", f.app_url("/books")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(
        (status, body["count"].clone()),
        (200, json!(25)),
        "a limit over 1000 is cut, not refused"
    );
    // DELETE with a query removes what matches.
    let (status, body) = rest(
        "DELETE",
        &format!("{}?ql=price%20%3C%203&limit=100", f.app_url("/books")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(
        (status, body["entities"].as_array().unwrap().len()),
        (200, 3)
    );
    let (_, body) = rest(
        "GET",
        &format!("{}?limit=100", f.app_url("/books")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(body["count"], 22);
}

/// A walk with cursors over the socket while another socket inserts and deletes everywhere
/// in the order: every book that exists for the whole walk comes exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_hold_while_others_write() {
    let f = seeded().await;
    let mut reader = f.socket(&f.john).await;
    let mut writer = f.socket(&f.john).await;
    for ql in [
        "select * order by price",
        "select * order by price desc",
        "select * where genre = 'sf' order by title desc",
        "select *",
    ] {
        let (mut cursor, mut seen, mut id) = (None::<String>, Vec::<Value>::new(), 0u64);
        loop {
            id += 1;
            let mut params = json!({"ql": ql, "limit": 4});
            if let Some(c) = &cursor {
                params["cursor"] = json!(c);
            }
            let page = reader
                .request(json!(id), "GET", "/books", Some(params), None)
                .await;
            assert_eq!(page["status"], 200, "{page}");
            seen.extend(page["body"]["entities"].as_array().unwrap().iter().cloned());
            // Others write before and after the cursor.
            for price in [-1, 12, 99] {
                let made = writer
                    .request(
                        json!(format!("w{id}{price}")),
                        "POST",
                        "/books",
                        None,
                        Some(json!({"price": price, "genre": "sf", "title": "New", "new": true})),
                    )
                    .await;
                assert_eq!(made["status"], 200, "{made}");
                let uuid = made["body"]["entities"][0]["uuid"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                if price == 12 {
                    let gone = writer
                        .request(
                            json!(format!("d{id}")),
                            "DELETE",
                            &format!("/books/{uuid}"),
                            None,
                            None,
                        )
                        .await;
                    assert_eq!(gone["status"], 200, "{gone}");
                }
            }
            match page["body"]["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let old: Vec<&str> = seen
            .iter()
            .filter(|e| e.get("new").is_none())
            .filter_map(|e| e["name"].as_str())
            .collect();
        let expected = if ql.contains("genre") { 13 } else { 25 };
        assert_eq!(old.len(), expected, "{ql}: every old book once: {old:?}");
        assert_eq!(old.iter().collect::<HashSet<_>>().len(), expected, "{ql}");
        let uuids: Vec<&str> = seen.iter().filter_map(|e| e["uuid"].as_str()).collect();
        assert_eq!(
            uuids.iter().collect::<HashSet<_>>().len(),
            uuids.len(),
            "{ql}: no repeats"
        );
        if ql == "select * order by price" {
            let prices: Vec<i64> = seen.iter().filter_map(|e| e["price"].as_i64()).collect();
            assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{ql}: {prices:?}");
        }
    }
}

/// A filter the index cannot narrow is bounded (`--max-query-rows`): 400
/// `query_too_expensive`, over REST and the socket, while indexed filters on the same
/// collection answer; `order by` puts entities without the key last in either direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_the_index_cannot_narrow_are_bounded() {
    use gridsocket_e2e::TestServer;
    use gridsocket_server::config::Settings;
    let temp = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_query_rows = 20;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let books: Vec<Value> = (0..200).map(|i| json!({"price": i})).collect();
    let (status, body) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.john),
        Some(Value::Array(books)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.john),
        Some(json!({"title": "no price"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = |ql: &str| {
        format!(
            "{}?limit=5&ql={}",
            f.app_url("/books"),
            ql.replace(' ', "%20")
                .replace('=', "%3D")
                .replace('>', "%3E")
        )
    };
    let (status, body) = rest(
        "GET",
        &url("select * where not price >= 0"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("query_too_expensive")),
        "{body}"
    );
    let mut ws = f.socket(&f.john).await;
    let r = ws
        .request(
            json!(1),
            "GET",
            "/books",
            Some(json!({"ql": "select * where not price >= 0"})),
            None,
        )
        .await;
    assert_eq!(
        (r["status"].clone(), r["body"]["error"].clone()),
        (json!(400), json!("query_too_expensive")),
        "{r}"
    );
    for (ql, first) in [
        ("select * where price = 199", json!(199)),
        ("select * where price > 50 order by price desc", json!(199)),
        ("select * order by price desc", json!(199)),
        ("select * order by price", json!(0)),
    ] {
        let (status, body) = rest("GET", &url(ql), Some(&f.john), None).await;
        assert_eq!(status, 200, "{ql}: {body}");
        assert_eq!(body["entities"][0]["price"], first, "{ql}: {body}");
    }
    for dir in ["asc", "desc"] {
        let (_, body) = rest(
            "GET",
            &url(&format!("select * order by price {dir}")).replace("limit=5", "limit=1000"),
            Some(&f.john),
            None,
        )
        .await;
        let last = body["entities"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            last["title"], "no price",
            "{dir}: missing values come last: {last}"
        );
    }
}
