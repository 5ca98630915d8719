//! Entity and collection CRUD over REST and over the socket, with identical results.

use gridsocket_e2e::{Fixture, rest, stable};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_rest_return_the_same_status_and_body() {
    let f = Fixture::new().await;
    let (status, created) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.john),
        Some(json!({"name": "dune", "price": 9.5, "tags": ["sf"]})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let uuid = created["entities"][0]["uuid"].as_str().unwrap().to_owned();
    let mut ws = f.socket(&f.john).await;
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("/books/dune", String::new(), None),
        (
            &*Box::leak(format!("/books/{uuid}").into_boxed_str()),
            String::new(),
            None,
        ),
        (
            "/books",
            "?ql=select%20*%20where%20price%20%3C%2010&limit=5".into(),
            Some(json!({"ql": "select * where price < 10", "limit": 5})),
        ),
        (
            "/books",
            "?ql=select%20name".into(),
            Some(json!({"ql": "select name"})),
        ),
        ("/books/missing", String::new(), None),
        (
            "/books",
            "?ql=where%20price%20%3C".into(),
            Some(json!({"ql": "where price <"})),
        ),
        ("/users/me", String::new(), None),
        ("/users/jane", String::new(), None),
        ("/users/a%2Fb", String::new(), None),
        ("/queues", String::new(), None),
    ];
    for (i, (path, query, params)) in cases.into_iter().enumerate() {
        let (status, rest_body) = rest(
            "GET",
            &format!("{}{query}", f.app_url(path)),
            Some(&f.john),
            None,
        )
        .await;
        let frame = ws.request(json!(i), "GET", path, params, None).await;
        assert_eq!(frame["status"], status, "status of GET {path}{query}");
        assert_eq!(
            stable(frame["body"].clone()),
            stable(rest_body),
            "body of GET {path}{query}"
        );
    }
    // A write over the socket and a write over REST look alike too.
    let frame = ws
        .request(
            json!("w1"),
            "PUT",
            "/books/dune",
            None,
            Some(json!({"price": 8})),
        )
        .await;
    let (status, rest_body) = rest(
        "PUT",
        &f.app_url("/books/dune"),
        Some(&f.john),
        Some(json!({"price": 8})),
    )
    .await;
    assert_eq!(
        (frame["status"].clone(), json!(status)),
        (json!(200), json!(200))
    );
    let strip_modified = |mut v: Value| {
        v = stable(v);
        v["entities"][0].as_object_mut().unwrap().remove("modified");
        v
    };
    assert_eq!(
        strip_modified(frame["body"].clone()),
        strip_modified(rest_body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_update_delete_over_the_socket() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    let post = ws
        .request(
            json!(1),
            "POST",
            "/books",
            None,
            Some(json!({"name": "emma", "author": {"name": "Austen"}, "price": 12})),
        )
        .await;
    assert_eq!(post["status"], 200, "{post}");
    let body = &post["body"];
    assert_eq!(body["action"], "post");
    assert_eq!(body["path"], "/books");
    assert_eq!(body["organization"], "acme");
    assert_eq!(body["applicationName"], "shop");
    assert!(body["uri"].as_str().unwrap().ends_with("/acme/shop/books"));
    let e = &body["entities"][0];
    assert_eq!(e["type"], "book");
    assert_eq!(e["name"], "emma");
    assert!(e["created"].is_number() && e["modified"].is_number());
    let uuid = e["uuid"].as_str().unwrap().to_owned();
    assert_eq!(e["metadata"]["path"], format!("/books/{uuid}"));

    let put = ws
        .request(
            json!(2),
            "PUT",
            &format!("/books/{uuid}"),
            None,
            Some(json!({"price": 10, "author": null, "uuid": "forged"})),
        )
        .await;
    assert_eq!(put["status"], 200, "{put}");
    let e = &put["body"]["entities"][0];
    assert_eq!(
        (e["price"].clone(), e["uuid"].clone()),
        (json!(10), json!(uuid))
    );
    assert!(e.get("author").is_none(), "null removes a property");

    let del = ws
        .request(json!(3), "DELETE", "/books/emma", None, None)
        .await;
    assert_eq!(
        (del["status"].clone(), del["body"]["action"].clone()),
        (json!(200), json!("delete"))
    );
    let gone = ws.request(json!(4), "GET", "/books/emma", None, None).await;
    assert_eq!(
        (gone["status"].clone(), gone["body"]["error"].clone()),
        (json!(404), json!("entity_not_found"))
    );

    // PUT to a free name creates the entity; a second POST of the same name is refused.
    let upsert = ws
        .request(
            json!(5),
            "PUT",
            "/books/persuasion",
            None,
            Some(json!({"price": 7})),
        )
        .await;
    assert_eq!(
        (
            upsert["status"].clone(),
            upsert["body"]["entities"][0]["name"].clone()
        ),
        (json!(200), json!("persuasion"))
    );
    let dup = ws
        .request(
            json!(6),
            "POST",
            "/books",
            None,
            Some(json!({"name": "persuasion"})),
        )
        .await;
    assert_eq!(
        (dup["status"].clone(), dup["body"]["error"].clone()),
        (json!(400), json!("duplicate_unique_property_exists"))
    );

    // Collection names are pluralised; batch POST creates many.
    let batch = ws
        .request(
            json!(7),
            "POST",
            "/Book",
            None,
            Some(json!([{"name": "a1"}, {"name": "a2"}])),
        )
        .await;
    // The path is the canonical collection, however the request spelled it (as Usergrid).
    assert_eq!(batch["body"]["path"], "/books");
    assert_eq!(batch["body"]["entities"].as_array().unwrap().len(), 2);
    let all = ws
        .request(json!(8), "GET", "/books", Some(json!({"limit": 50})), None)
        .await;
    assert_eq!(all["body"]["count"], 3);
    let bad = ws
        .request(
            json!(9),
            "POST",
            "/books",
            None,
            Some(json!("just a string")),
        )
        .await;
    assert_eq!(
        (bad["status"].clone(), bad["body"]["error"].clone()),
        (json!(400), json!("json_parse"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_requests_all_get_their_own_answer() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    const N: usize = 200;
    for i in 0..N {
        let frame = if i % 2 == 0 {
            json!({"id": i, "method": "POST", "path": "/notes", "body": {"name": format!("n{i}"), "i": i}})
        } else {
            json!({"id": format!("get-{i}"), "method": "GET", "path": "/users/me"})
        };
        ws.send_json(&frame).await;
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..N {
        let v = ws.recv().await;
        assert_eq!(v["status"], 200, "{v}");
        match &v["id"] {
            Value::Number(n) => {
                let i = n.as_u64().unwrap();
                assert_eq!(v["body"]["entities"][0]["i"], i);
            }
            Value::String(s) => assert!(s.starts_with("get-")),
            other => panic!("unexpected id {other}"),
        }
        assert!(seen.insert(v["id"].to_string()), "one answer per request");
    }
    let all = ws
        .request(
            json!("count"),
            "GET",
            "/notes",
            Some(json!({"limit": 1000})),
            None,
        )
        .await;
    assert_eq!(all["body"]["count"], N / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sent_right_after_a_write_on_the_same_socket_sees_it() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    for round in 0..20 {
        // Sent back to back, without waiting: the write, then reads of what it wrote.
        let name = format!("book{round}");
        ws.send_json(
            &json!({"id": format!("post-{round}"), "method": "POST", "path": "/books",
            "body": {"name": name, "round": round}}),
        )
        .await;
        ws.send_json(&json!({"id": format!("get-{round}"), "method": "GET",
            "path": format!("/books/{name}")}))
            .await;
        ws.send_json(
            &json!({"id": format!("count-{round}"), "method": "GET", "path": "/books",
            "params": {"limit": 1000}}),
        )
        .await;
        let got = ws.response_to(&json!(format!("get-{round}"))).await;
        assert_eq!(got["status"], 200, "{got}");
        assert_eq!(got["body"]["entities"][0]["round"], round);
        let all = ws.response_to(&json!(format!("count-{round}"))).await;
        assert_eq!(all["body"]["count"], round + 1, "{all}");
        let posted = ws.response_to(&json!(format!("post-{round}"))).await;
        assert_eq!(posted["status"], 200, "{posted}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_groups_and_connections() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.admin_token).await;
    let no_name = ws
        .request(
            json!(1),
            "POST",
            "/users",
            None,
            Some(json!({"email": "x@y"})),
        )
        .await;
    assert_eq!(no_name["body"]["error"], "required_property_not_found");
    let jane = ws.request(json!(2), "GET", "/users/jane", None, None).await;
    let text = jane.to_string();
    assert!(
        !text.contains("password") && !text.contains("argon2"),
        "{text}"
    );
    let by_email = ws
        .request(json!(3), "GET", "/users/jane@acme.test", None, None)
        .await;
    assert_eq!(by_email["body"]["entities"][0]["username"], "jane");

    let group = ws
        .request(
            json!(4),
            "POST",
            "/groups",
            None,
            Some(json!({"path": "team", "title": "Team"})),
        )
        .await;
    assert_eq!(group["status"], 200, "{group}");
    let join = ws
        .request(json!(5), "POST", "/groups/team/users/john", None, None)
        .await;
    assert_eq!(join["status"], 200, "{join}");
    let groups = ws
        .request(json!(6), "GET", "/users/john/groups", None, None)
        .await;
    assert_eq!(groups["body"]["entities"][0]["path"], "team");
    let members = ws
        .request(json!(7), "GET", "/groups/team/users", None, None)
        .await;
    assert_eq!(members["body"]["entities"][0]["username"], "john");

    let follow = ws
        .request(
            json!(8),
            "POST",
            "/users/john/following/users/jane",
            None,
            None,
        )
        .await;
    assert_eq!(follow["status"], 200, "{follow}");
    let followers = ws
        .request(json!(9), "GET", "/users/jane/followers", None, None)
        .await;
    assert_eq!(followers["body"]["entities"][0]["username"], "john");
    let following = ws
        .request(json!(10), "GET", "/users/john/following", None, None)
        .await;
    assert_eq!(following["body"]["entities"][0]["username"], "jane");
    let one = ws
        .request(
            json!(11),
            "GET",
            "/users/john/following/users/jane",
            None,
            None,
        )
        .await;
    assert_eq!(one["status"], 200);
    let unfollow = ws
        .request(
            json!(12),
            "DELETE",
            "/users/john/following/users/jane",
            None,
            None,
        )
        .await;
    assert_eq!(unfollow["status"], 200);
    let followers = ws
        .request(json!(13), "GET", "/users/jane/followers", None, None)
        .await;
    assert_eq!(followers["body"]["count"], 0);
    let again = ws
        .request(
            json!(14),
            "DELETE",
            "/users/john/following/users/jane",
            None,
            None,
        )
        .await;
    assert_eq!(again["status"], 404);

    // A generic connection between two custom entities, by uuid.
    let book = ws
        .request(
            json!(15),
            "POST",
            "/books",
            None,
            Some(json!({"name": "dune"})),
        )
        .await;
    let book_uuid = book["body"]["entities"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let like = ws
        .request(
            json!(16),
            "POST",
            &format!("/users/jane/likes/{book_uuid}"),
            None,
            None,
        )
        .await;
    assert_eq!(like["status"], 200, "{like}");
    let likers = ws
        .request(json!(17), "GET", "/books/dune/connecting/likes", None, None)
        .await;
    assert_eq!(likers["body"]["entities"][0]["username"], "jane");
    let bad_target = ws
        .request(json!(18), "POST", "/users/jane/likes/dune", None, None)
        .await;
    assert_eq!(
        bad_target["status"], 400,
        "a bare name needs its collection"
    );

    // Deleting a user removes their memberships.
    let del = ws
        .request(json!(19), "DELETE", "/users/john", None, None)
        .await;
    assert_eq!(del["status"], 200);
    let members = ws
        .request(json!(20), "GET", "/groups/team/users", None, None)
        .await;
    assert_eq!(members["body"]["count"], 0);
    let (status, body) = rest("GET", &f.app_url("/users/me"), Some(&f.john), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("auth_bad_access_token")),
        "a deleted user's tokens die with them"
    );
}
