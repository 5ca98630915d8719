//! Subscriptions over real sockets: entities, collections, filters, feeds, ordering, resume,
//! snapshots, revocation, token refresh and expiry, slow consumers.

use gridsocket_e2e::{Fixture, TestServer, WsClient, refused, rest};
use gridsocket_server::Settings;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_collection_and_filtered_subscriptions() {
    let f = Fixture::new().await;
    let mut john = f.socket(&f.john).await;
    let all = john.subscribe(json!(1), "/books", None, None).await;
    assert_eq!(all["subscription"], "s1");
    assert_eq!(all["path"], "/books");
    assert!(all["seq"].is_u64());
    john.subscribe(json!(2), "/books/dune", None, None).await;
    john.subscribe(
        json!(3),
        "/books",
        Some(json!({"ql": "select * where price < 10"})),
        None,
    )
    .await;

    let mut jane = f.socket(&f.jane).await;
    let write = |id: i32, method: &str, path: &str, body: Value| {
        (json!(id), method.to_owned(), path.to_owned(), body)
    };
    let steps = [
        (
            write(1, "POST", "/books", json!({"name": "dune", "price": 5})),
            vec![("s1", "create"), ("s2", "create"), ("s3", "create")],
        ),
        (
            write(2, "PUT", "/books/dune", json!({"price": 20})),
            vec![("s1", "update"), ("s2", "update"), ("s3", "leave")],
        ),
        (
            write(3, "PUT", "/books/dune", json!({"price": 30})),
            vec![("s1", "update"), ("s2", "update")],
        ),
        (
            write(4, "PUT", "/books/dune", json!({"price": 3})),
            vec![("s1", "update"), ("s2", "update"), ("s3", "enter")],
        ),
        (
            write(5, "POST", "/books", json!({"name": "emma", "price": 50})),
            vec![("s1", "create")],
        ),
        (
            write(6, "DELETE", "/books/dune", Value::Null),
            vec![("s1", "delete"), ("s2", "delete"), ("s3", "delete")],
        ),
    ];
    let mut last_seq = 0;
    for ((id, method, path, body), expected) in steps {
        let body = (!body.is_null()).then_some(body);
        let r = jane.request(id, &method, &path, None, body).await;
        assert_eq!(r["status"], 200, "{r}");
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let e = john.next_event().await;
            let seq = e["seq"].as_u64().unwrap();
            assert!(
                seq > last_seq || got.iter().any(|(_, _, s)| *s == seq),
                "seq only grows"
            );
            got.push((
                e["subscription"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap().to_owned(),
                seq,
            ));
            assert!(e["entity"]["uuid"].is_string());
            assert!(
                e["entity"]["metadata"]["path"].is_string(),
                "the entity as REST returns it"
            );
        }
        last_seq = got.iter().map(|g| g.2).max().unwrap();
        let mut got: Vec<(String, String)> = got.into_iter().map(|(s, e, _)| (s, e)).collect();
        got.sort();
        let mut expected: Vec<(String, String)> = expected
            .iter()
            .map(|(s, e)| (s.to_string(), e.to_string()))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "{method} {path}");
        assert!(
            john.try_recv(Duration::from_millis(150)).await.is_none(),
            "nothing more after {method} {path}"
        );
    }
    // Unsubscribe by path ends both /books subscriptions; the entity one goes on.
    let r = john
        .request(json!("u"), "UNSUBSCRIBE", "/books", None, None)
        .await;
    assert_eq!(r["body"]["unsubscribed"], json!(["s1", "s3"]));
    jane.request(
        json!(7),
        "POST",
        "/books",
        None,
        Some(json!({"name": "dune", "price": 1})),
    )
    .await;
    let e = john.next_event().await;
    assert_eq!(
        (e["subscription"].clone(), e["event"].clone()),
        (json!("s2"), json!("create"))
    );
    assert!(john.try_recv(Duration::from_millis(150)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_checked_like_reads() {
    let f = Fixture::new().await;
    let mut jane = f.socket(&f.jane).await;
    for (path, params, status, error) in [
        ("/users/john/feed", None, 403, "forbidden"),
        ("/users/john/inbox", None, 403, "forbidden"),
        (
            "/books",
            Some(json!({"ql": "where price <"})),
            400,
            "query_parse",
        ),
        ("/users/john/following", None, 400, "illegal_argument"),
        ("/users/../feed", None, 400, "illegal_argument"),
    ] {
        let mut frame = json!({"id": path, "method": "SUBSCRIBE", "path": path});
        if let Some(p) = params {
            frame["params"] = p;
        }
        jane.send_json(&frame).await;
        let r = jane.response_to(&json!(path)).await;
        assert_eq!(
            (r["status"].clone(), r["body"]["error"].clone()),
            (json!(status), json!(error)),
            "{path}: {r}"
        );
    }
    // Her own feed is fine, by name or as me.
    jane.subscribe(json!(1), "/users/jane/feed", None, None)
        .await;
    jane.subscribe(json!(2), "/users/me/inbox", None, None)
        .await;
    // A guest socket may not subscribe to users.
    let mut guest = WsClient::connect(&f.ws_url("")).await.unwrap();
    guest
        .send_json(&json!({"id": 1, "method": "SUBSCRIBE", "path": "/users"}))
        .await;
    assert_eq!(guest.response_to(&json!(1)).await["status"], 401);
    // Connecting straight to someone else's inbox is refused at once.
    let mut ws =
        WsClient::connect(&f.ws_url(&format!("/users/john/inbox?access_token={}", f.jane)))
            .await
            .unwrap();
    let (frames, close) = ws.until_close().await;
    assert_eq!(frames[0]["status"], 403);
    assert_eq!(u16::from(close.unwrap().code), 4401);
    // So is connecting to the inbox of nobody: before, the 404 came and the socket stayed
    // open, with neither a greeting nor a close.
    let (frame, code) =
        refused(&f.ws_url(&format!("/users/nobody/inbox?access_token={}", f.jane))).await;
    assert_eq!(
        (
            frame["status"].clone(),
            frame["body"]["error"].clone(),
            code
        ),
        (json!(404), json!("entity_not_found"), 4404),
        "{frame}"
    );
}

/// A resume that replays nothing still brings the subscription up to the log's position:
/// before, it answered with the `since` it was given (0 for a first resume), so a client
/// read the whole log again on its next resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_with_nothing_to_replay_is_current() {
    let f = Fixture::new().await;
    for name in ["a", "b"] {
        rest(
            "POST",
            &f.app_url("/books"),
            Some(&f.jane),
            Some(json!({ "name": name })),
        )
        .await;
    }
    let mut ws = f.socket(&f.john).await;
    let fresh = ws.subscribe(json!(1), "/books", None, None).await;
    let position = fresh["seq"].as_u64().expect("seq");
    assert!(position > 0, "{fresh}");
    let resumed = ws.subscribe(json!(2), "/quiet", None, Some(0)).await;
    assert_eq!(
        (resumed["recovered"].clone(), resumed["seq"].clone()),
        (json!(true), json!(position)),
        "{resumed}"
    );
}

/// A resource URL's `since` resumes as a `SUBSCRIBE` frame's does: a client that reconnects
/// to its inbox URL gets what it missed. One that cannot be read refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_url_with_since_resumes() {
    let f = Fixture::new().await;
    let url = |query: &str| f.ws_url(&format!("/users/john/feed?access_token={}{query}", f.john));
    let activities = f.app_url("/users/john/activities");
    let post = |content: &'static str| {
        rest(
            "POST",
            &activities,
            Some(&f.john),
            Some(json!({ "content": content })),
        )
    };
    let mut feed = WsClient::connect(&url("")).await.unwrap();
    assert_eq!(feed.recv().await["status"], 200);
    assert_eq!(post("first").await.0, 200);
    let first = feed.next_event().await;
    assert_eq!(first["entity"]["content"], "first");
    let seen = first["seq"].as_u64().expect("seq");
    drop(feed);
    assert_eq!(post("missed").await.0, 200);
    let mut again = WsClient::connect(&url(&format!("&since={seen}")))
        .await
        .unwrap();
    let confirmed = again.recv().await;
    assert_eq!(
        (
            confirmed["status"].clone(),
            confirmed["body"]["recovered"].clone()
        ),
        (json!(200), json!(true)),
        "{confirmed}"
    );
    assert_eq!(again.next_event().await["entity"]["content"], "missed");
    for bad in ["-1", "abc", "1e400"] {
        let (frame, code) = refused(&url(&format!("&since={bad}"))).await;
        assert_eq!(
            (
                frame["status"].clone(),
                frame["body"]["error"].clone(),
                code
            ),
            (json!(400), json!("illegal_argument"), 4400),
            "{bad}: {frame}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inboxes_get_activities_of_followed_users_and_groups() {
    let f = Fixture::new().await;
    // Connecting to the inbox URL subscribes at once: the first frame is the confirmation.
    let mut inbox =
        WsClient::connect(&f.ws_url(&format!("/users/john/inbox?access_token={}", f.john)))
            .await
            .unwrap();
    let first = inbox.recv().await;
    assert_eq!(
        (first["id"].clone(), first["status"].clone()),
        (Value::Null, json!(200)),
        "{first}"
    );
    assert_eq!(first["body"]["path"], "/users/john/inbox");

    let (status, _) = rest(
        "POST",
        &f.app_url("/users/john/following/users/jane"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/jane/activities"),
        Some(&f.jane),
        Some(json!({"content": "hello followers"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let activity = &body["entities"][0];
    assert_eq!(activity["type"], "activity");
    assert_eq!(activity["verb"], "post");
    assert_eq!(activity["actor"]["username"], "jane");
    let e = inbox.next_event().await;
    assert_eq!(
        (e["event"].clone(), e["path"].clone()),
        (json!("create"), json!("/users/john/inbox"))
    );
    assert_eq!(e["entity"]["content"], "hello followers");

    // His own post lands in his own feed; a group post in every member's feed.
    rest(
        "POST",
        &f.app_url("/users/john/activities"),
        Some(&f.john),
        Some(json!({"content": "mine"})),
    )
    .await;
    assert_eq!(inbox.next_event().await["entity"]["content"], "mine");
    rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.admin_token),
        Some(json!({"path": "room"})),
    )
    .await;
    rest(
        "POST",
        &f.app_url("/groups/room/users/john"),
        Some(&f.admin_token),
        None,
    )
    .await;
    let mut room = f.socket(&f.jane).await;
    room.subscribe(json!(1), "/groups/room/feed", None, None)
        .await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/groups/room/activities"),
        Some(&f.jane),
        Some(json!({"content": "to the room"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["entities"][0]["actor"]["username"], "jane",
        "the poster is the actor"
    );
    assert_eq!(inbox.next_event().await["entity"]["content"], "to the room");
    assert_eq!(room.next_event().await["entity"]["content"], "to the room");
    // Jane does not follow John: his posts stay out of her feed; the feed reads newest first.
    let (_, feed) = rest("GET", &f.app_url("/users/john/feed"), Some(&f.john), None).await;
    let contents: Vec<&str> = feed["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["to the room", "mine", "hello followers"]);
    let (_, janes) = rest("GET", &f.app_url("/users/jane/feed"), Some(&f.jane), None).await;
    assert_eq!(janes["count"], 1);
    // App-wide activities are a collection like any other.
    let mut all = f.socket(&f.admin_token).await;
    all.subscribe(json!(1), "/activities", None, None).await;
    rest(
        "POST",
        &f.app_url("/users/jane/activities"),
        Some(&f.jane),
        Some(json!({"content": "again"})),
    )
    .await;
    assert_eq!(all.next_event().await["entity"]["content"], "again");
    assert_eq!(inbox.next_event().await["entity"]["content"], "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_disconnects_loses_and_repeats_nothing() {
    let f = Fixture::new().await;
    const TOTAL: usize = 300;
    let url = f.app_url("/notes");
    let token = f.jane.clone();
    let mut ws = f.socket(&f.john).await;
    let first = ws.subscribe(json!("sub"), "/notes", None, None).await;
    let mut last = first["seq"].as_u64().unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..TOTAL {
            let (status, _) = rest("POST", &url, Some(&token), Some(json!({"i": i}))).await;
            assert_eq!(status, 200);
        }
    });
    let mut seen = Vec::new();
    let mut drops = 0;
    while seen.len() < TOTAL {
        let e = ws.next_event().await;
        let seq = e["seq"].as_u64().unwrap();
        assert!(seq > last, "in order, once: {seq} after {last}");
        last = seq;
        seen.push(e["entity"]["i"].as_u64().unwrap());
        // Drop the connection every 50 events and resume where we were.
        if seen.len() % 50 == 0 && seen.len() < TOTAL {
            ws.close().await;
            drops += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            ws = f.socket(&f.john).await;
            let resumed = ws.subscribe(json!("sub"), "/notes", None, Some(last)).await;
            assert_eq!(resumed["recovered"], true);
        }
    }
    writer.await.unwrap();
    assert_eq!(drops, 5);
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), TOTAL, "every event once");
    assert_eq!(
        seen,
        (0..TOTAL as u64).collect::<Vec<_>>(),
        "in write order"
    );
    assert!(ws.try_recv(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_beyond_retention_says_so() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    let sub = ws.subscribe(json!(1), "/notes", None, None).await;
    let start = sub["seq"].as_u64().unwrap();
    for i in 0..3 {
        rest(
            "POST",
            &f.app_url("/notes"),
            Some(&f.jane),
            Some(json!({"i": i})),
        )
        .await;
    }
    for _ in 0..3 {
        ws.next_event().await;
    }
    let mut late = f.socket(&f.john).await;
    let ok = late.subscribe(json!(1), "/notes", None, Some(start)).await;
    assert_eq!(ok["recovered"], true);
    for i in 0..3 {
        assert_eq!(late.next_event().await["entity"]["i"], i);
    }
    f.server.service.prune_log(Duration::ZERO).await;
    let mut later = f.socket(&f.john).await;
    let gone = later.subscribe(json!(1), "/notes", None, Some(start)).await;
    assert_eq!(gone["recovered"], false, "{gone}");
    assert!(gone["seq"].as_u64().unwrap() >= start + 3);
    assert!(
        later.try_recv(Duration::from_millis(150)).await.is_none(),
        "nothing is replayed"
    );
    // Resuming from the newest position is still complete: nothing was missed.
    let current = gone["seq"].as_u64().unwrap();
    let mut fresh = f.socket(&f.john).await;
    assert_eq!(
        fresh
            .subscribe(json!(1), "/notes", None, Some(current))
            .await["recovered"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_subscribe_in_one_step() {
    let f = Fixture::new().await;
    for name in ["a", "b", "c"] {
        rest(
            "POST",
            &f.app_url("/books"),
            Some(&f.jane),
            Some(json!({"name": name, "price": 1})),
        )
        .await;
    }
    let mut ws = f.socket(&f.john).await;
    let reply = ws
        .subscribe(
            json!(1),
            "/books",
            Some(json!({"snapshot": true, "ql": "select * where price < 10", "limit": 2})),
            None,
        )
        .await;
    let snap = &reply["snapshot"];
    assert_eq!(snap["count"], 2);
    assert!(snap["cursor"].is_string());
    assert_eq!(snap["entities"][0]["name"], "a");
    let seq = reply["seq"].as_u64().unwrap();
    rest(
        "PUT",
        &f.app_url("/books/b"),
        Some(&f.jane),
        Some(json!({"price": 2})),
    )
    .await;
    let e = ws.next_event().await;
    assert_eq!(
        (e["event"].clone(), e["entity"]["name"].clone()),
        (json!("update"), json!("b"))
    );
    assert!(e["seq"].as_u64().unwrap() > seq);
    // A snapshot that cannot be read is refused as its GET is, and nothing is subscribed:
    // before, it came back inside a 200 with the subscription live.
    for (id, params) in [
        (2, json!({"snapshot": true, "limit": 0})),
        (3, json!({"snapshot": true, "cursor": "garbage"})),
    ] {
        ws.send_json(&json!({"id": id, "method": "SUBSCRIBE", "path": "/books", "params": params}))
            .await;
        let r = ws.response_to(&json!(id)).await;
        assert_eq!(
            (r["status"].clone(), r["body"]["error"].clone()),
            (json!(400), json!("illegal_argument")),
            "{r}"
        );
    }
    rest(
        "PUT",
        &f.app_url("/books/c"),
        Some(&f.jane),
        Some(json!({"price": 3})),
    )
    .await;
    let e = ws.next_event().await;
    assert_eq!(
        (e["subscription"].clone(), e["entity"]["name"].clone()),
        (json!("s1"), json!("c")),
        "only the first subscription gets it"
    );
    assert!(
        ws.try_recv(Duration::from_millis(300)).await.is_none(),
        "and only once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_access_revokes_the_subscription() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    ws.subscribe(json!(1), "/books", None, None).await;
    ws.subscribe(json!(2), "/users/me", None, None).await;
    f.remove_default_grant().await;
    let e = ws.next_event().await;
    assert_eq!(
        e,
        json!({"event": "revoked", "subscription": "s1", "path": "/books", "reason": "forbidden"})
    );
    rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.admin_token),
        Some(json!({"name": "secret"})),
    )
    .await;
    assert!(
        ws.try_recv(Duration::from_millis(300)).await.is_none(),
        "no events after revocation"
    );
    // Revoking the user's tokens ends the socket.
    let (status, _) = rest(
        "PUT",
        &f.app_url("/users/john/revoketokens"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (frames, close) = ws.until_close().await;
    assert!(
        frames
            .iter()
            .any(|f| f["event"] == "revoked" && f["reason"] == "token_revoked"),
        "{frames:?}"
    );
    assert_eq!(u16::from(close.unwrap().code), 4401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_refresh_in_band_and_expire_with_grace() {
    let temp = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.auth_grace_secs = 1;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let short = |f: &Fixture| {
        let url = f.app_url("/token");
        async move {
            let (_, body) = rest("POST", &url, None, Some(json!({"grant_type": "password", "username": "john", "password": "john-password", "ttl": 600}))).await;
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let t1 = short(&f).await;
    let mut ws = f.socket(&t1).await;
    ws.subscribe(json!(1), "/books", None, None).await;
    let expired = ws.recv().await;
    assert_eq!(
        (expired["id"].clone(), expired["status"].clone()),
        (Value::Null, json!(401))
    );
    assert_eq!(expired["body"]["error"], "expired_token");
    // Another user's token is refused; the right one renews.
    let r = ws
        .request(
            json!("a0"),
            "AUTH",
            "/",
            None,
            Some(json!({"access_token": f.jane})),
        )
        .await;
    assert_eq!(r["status"], 403);
    let r = ws
        .request(
            json!("a1"),
            "AUTH",
            "/",
            None,
            Some(json!({"access_token": f.john})),
        )
        .await;
    assert_eq!(r["status"], 200, "{r}");
    assert!(r["body"]["expires_in"].as_i64().unwrap() > 3600);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.jane),
        Some(json!({"name": "still"})),
    )
    .await;
    assert_eq!(
        ws.next_event().await["entity"]["name"],
        "still",
        "renewed in time: still open"
    );
    // Without AUTH the socket closes with 4401 after the grace period.
    let t2 = short(&f).await;
    let mut ws = f.socket(&t2).await;
    let (frames, close) = ws.until_close().await;
    assert_eq!(frames[0]["body"]["error"], "expired_token");
    assert_eq!(u16::from(close.unwrap().code), 4401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_nobody_else_waits() {
    let temp = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_queued_events = 32;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let mut slow = f.socket(&f.john).await;
    slow.subscribe(json!(1), "/notes", None, None).await;
    let mut good = f.socket(&f.jane).await;
    good.subscribe(json!(1), "/notes", None, None).await;
    // Big events fill the slow client's TCP buffers and then its queue; it reads nothing.
    // The writer stops once the slow socket is cut off (it leaves the hub), or at N.
    const N: usize = 400;
    let blob = "x".repeat(16 * 1024);
    let url = f.app_url("/notes");
    let token = f.admin_token.clone();
    let service = f.server.service.clone();
    let writer = tokio::spawn(async move {
        let mut posted = 0;
        while posted < N && service.hub().connections() == 2 {
            let (status, _) = rest(
                "POST",
                &url,
                Some(&token),
                Some(json!({"i": posted, "blob": blob})),
            )
            .await;
            assert_eq!(status, 200);
            posted += 1;
        }
        posted
    });
    // The good client reads all along.
    let mut read = 0;
    while !writer.is_finished() {
        if let Some(e) = good.try_recv(Duration::from_millis(50)).await {
            assert_eq!(e["entity"]["i"], read as u64);
            read += 1;
        }
    }
    let posted = writer.await.unwrap();
    assert!(
        posted < N,
        "the slow socket was cut off after {posted} events"
    );
    for i in read..posted {
        let e = tokio::time::timeout(Duration::from_secs(10), good.next_event())
            .await
            .expect("the good client is never held up");
        assert_eq!(e["entity"]["i"], i as u64);
    }
    // The slow client reads again, soon: after the events its connection held, it finds the
    // close that says why (4008: resume with `since`), not a connection cut without one.
    let (frames, close) = slow.until_close().await;
    assert!(frames.len() < posted, "{} of {posted} events", frames.len());
    let close = close.expect("a close frame, not a cut");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4008, "slow consumer: resume with since")
    );
    // Its memory is gone too: only the good socket is left in the hub.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.server.service.hub().connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_subscriber_may_not_read_are_never_sent() {
    let f = Fixture::new().await;
    let perms = f.app_url("/roles/default/permissions");
    rest(
        "DELETE",
        &format!("{perms}?permission=get,put,post,delete:/**"),
        Some(&f.admin_token),
        None,
    )
    .await;
    for p in ["get:/books", "get:/books/sf-*"] {
        let (status, _) = rest(
            "POST",
            &perms,
            Some(&f.admin_token),
            Some(json!({"permission": p})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut ws = f.socket(&f.john).await;
    ws.subscribe(json!(1), "/books", None, None).await;
    for name in ["sf-dune", "romance-emma", "sf-solaris"] {
        rest(
            "POST",
            &f.app_url("/books"),
            Some(&f.admin_token),
            Some(json!({"name": name})),
        )
        .await;
    }
    assert_eq!(ws.next_event().await["entity"]["name"], "sf-dune");
    assert_eq!(ws.next_event().await["entity"]["name"], "sf-solaris");
    assert!(ws.try_recv(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_pinged_and_kept_while_they_answer() {
    let temp = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.ping_interval_secs = 1;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let mut ws = f.socket(&f.john).await;
    let mut mute = f.socket(&f.jane).await;
    // John's client reads, and so answers pings; Jane's reads nothing, so her pongs never come.
    assert!(ws.try_recv(Duration::from_millis(3200)).await.is_none());
    assert_eq!(
        ws.request(json!(1), "GET", "/users/me", None, None).await["status"],
        200
    );
    let (_, close) = mute.until_close().await;
    if let Some(c) = close {
        assert_eq!(u16::from(c.code), 1001);
    }
    assert_eq!(
        f.server.service.hub().connections(),
        1,
        "only the answering socket is left"
    );
}
