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
