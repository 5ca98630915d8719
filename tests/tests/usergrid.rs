//! Usergrid's behaviour where an app written for Usergrid depends on it: each test checks one
//! behaviour the official Node.js SDK's suite found different (issue 16), against Usergrid's
//! source (`stack/rest`, `stack/services`), over REST and the socket where both carry it.

use gridsocket_e2e::{Fixture, WsClient, rest};
use serde_json::{Value, json};

/// The socket's answer to one request frame.
async fn ask(ws: &mut WsClient, method: &str, path: &str, body: Option<Value>) -> Value {
    ws.request(json!(path), method, path, None, body).await
}

/// A `nodejs` entity (the SDK suite's collection) made as the admin; its uuid.
async fn node(f: &Fixture, name: &str) -> String {
    let (status, body) = rest(
        "POST",
        &f.app_url("/nodejs"),
        Some(&f.admin_token),
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned()
}

/// The response's `path` is `/` and the canonical (plural) collection, whatever the request
/// named (`/users/me`, `/user`); a relation's is its owner's canonical path and the relation.
/// The SDK fills `response.user` only when `path` is `/users`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_path_is_the_canonical_collection() {
    let f = Fixture::new().await;
    let (_, me) = rest("GET", &f.app_url("/users/me"), Some(&f.john), None).await;
    let john = me["entities"][0]["uuid"].as_str().expect("uuid").to_owned();
    let mut ws = f.socket(&f.john).await;
    for (method, path, body) in [
        ("GET", "/users/me".to_owned(), None),
        ("GET", format!("/users/{john}"), None),
        ("GET", "/user/john".to_owned(), None),
        (
            "POST",
            "/user".to_owned(),
            Some(json!({"username": "newbie", "password": "pw-pw-pw"})),
        ),
    ] {
        let token = if method == "GET" {
            &f.john
        } else {
            &f.admin_token
        };
        let (status, rest_body) = rest(method, &f.app_url(&path), Some(token), body.clone()).await;
        assert_eq!(status, 200, "{method} {path}: {rest_body}");
        assert_eq!(rest_body["path"], "/users", "{method} {path}");
        let uuid = rest_body["entities"][0]["uuid"].as_str().expect("uuid");
        assert_eq!(
            rest_body["entities"][0]["metadata"]["path"],
            format!("/users/{uuid}")
        );
        assert!(
            rest_body["uri"]
                .as_str()
                .is_some_and(|u| u.ends_with("/acme/shop/users")),
            "{rest_body}"
        );
        if method == "GET" {
            let r = ask(&mut ws, method, &path, None).await;
            assert_eq!(r["body"]["path"], "/users", "socket {path}: {r}");
        }
    }
    // A relation: under its owner's uuid, in the canonical collection.
    let a = node(&f, "a").await;
    let (status, body) = rest(
        "POST",
        &f.app_url(&format!("/nodej/{a}/foos/nodejs/b")),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 404, "no b yet: {body}");
    let b = node(&f, "b").await;
    let (status, body) = rest(
        "POST",
        &f.app_url(&format!("/nodej/{a}/foos/nodej/{b}")),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], format!("/nodejs/{a}/foos"));
    assert_eq!(
        body["entities"][0]["metadata"]["path"],
        format!("/nodejs/{a}/foos/{b}")
    );
}

/// Connections as Usergrid shows them: `…/connections/{verb}` is `…/{verb}`, and every entity
/// carries `metadata.connections` and `metadata.connecting`: verb → the path listing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_read_as_usergrid_shows_them() {
    let f = Fixture::new().await;
    let (a, b) = (node(&f, "a").await, node(&f, "b").await);
    let (status, body) = rest(
        "POST",
        &f.app_url("/nodejs/a/likes/nodejs/b"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut ws = f.socket(&f.admin_token).await;
    for path in [
        format!("/nodejs/{a}/connections/likes"),
        "/nodejs/a/likes".to_owned(),
    ] {
        let (status, body) = rest("GET", &f.app_url(&path), Some(&f.admin_token), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let target = &body["entities"][0];
        assert_eq!(target["uuid"], json!(b), "{path}");
        assert_eq!(body["path"], format!("/nodejs/{a}/likes"));
        assert_eq!(
            target["metadata"]["connecting"]["likes"],
            format!("/nodejs/{a}/likes/{b}/connecting/likes"),
            "{body}"
        );
        let r = ask(&mut ws, "GET", &path, None).await;
        assert_eq!(
            r["body"]["entities"][0]["uuid"],
            json!(b),
            "socket {path}: {r}"
        );
    }
    // Inbound: under `connecting`, each pointing entity with its own outbound verbs.
    let (status, body) = rest(
        "GET",
        &f.app_url(&format!("/nodejs/{b}/connecting/likes")),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let source = &body["entities"][0];
    assert_eq!(
        source["metadata"]["path"],
        format!("/nodejs/{b}/connecting/{a}")
    );
    assert_eq!(
        source["metadata"]["connections"]["likes"],
        format!("/nodejs/{b}/connecting/{a}/likes")
    );
    // On the entity itself, both ways; a collection of its owner is not a connection.
    let (_, body) = rest("GET", &f.app_url("/nodejs/a"), Some(&f.admin_token), None).await;
    assert_eq!(
        body["entities"][0]["metadata"]["connections"],
        json!({"likes": format!("/nodejs/{a}/likes")})
    );
    assert_eq!(body["entities"][0]["metadata"].get("connecting"), None);
    let (_, body) = rest("GET", &f.app_url("/nodejs/b"), Some(&f.admin_token), None).await;
    assert_eq!(
        body["entities"][0]["metadata"]["connecting"],
        json!({"likes": format!("/nodejs/{b}/connecting/likes")})
    );
    let (_, body) = rest("GET", &f.app_url("/users/john"), Some(&f.admin_token), None).await;
    assert_eq!(
        body["entities"][0]["metadata"].get("connections"),
        None,
        "{body}"
    );
    // Unlinked, the listing is empty.
    let (status, _) = rest(
        "DELETE",
        &f.app_url(&format!("/nodejs/{a}/likes/{b}")),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = rest(
        "GET",
        &f.app_url(&format!("/nodejs/{a}/connections/likes")),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(body["entities"], json!([]));
}

/// A failed password or client-credentials grant is Usergrid's `400 invalid_grant`
/// "invalid username or password", on the application's and the management token endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_grants_are_invalid_grant() {
    let f = Fixture::new().await;
    let bad =
        json!({"error": "invalid_grant", "error_description": "invalid username or password"});
    for (url, body) in [
        (
            f.app_url("/token"),
            json!({"grant_type": "password", "username": "john", "password": "wrong"}),
        ),
        (
            f.app_url("/token"),
            json!({"grant_type": "password", "username": "nobody", "password": "x"}),
        ),
        (
            f.app_url("/token"),
            json!({"grant_type": "client_credentials", "client_id": "BADCLIENTID", "client_secret": "BAD"}),
        ),
        (
            f.app_url("/token"),
            json!({"grant_type": "client_credentials", "client_id": f.client.0, "client_secret": "BAD"}),
        ),
        (
            f.server.url("/management/token"),
            json!({"grant_type": "password", "username": "nobody", "password": "x"}),
        ),
        (
            f.server.url("/management/token"),
            json!({"grant_type": "client_credentials", "client_id": "BAD", "client_secret": "BAD"}),
        ),
    ] {
        let (status, answer) = rest("POST", &url, None, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(
            json!({"error": answer["error"], "error_description": answer["error_description"]}),
            bad,
            "{body}"
        );
    }
}

/// `PUT` on a collection: without an id it creates (`created == modified`); with a `ql` it
/// updates every match, up to `limit`, and answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_on_a_collection_creates_or_updates_matches() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    let (status, body) = rest(
        "PUT",
        &f.app_url("/nodejs"),
        Some(&f.john),
        Some(json!({"author": "Frank Mills"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let made = &body["entities"][0];
    assert_eq!(made["author"], "Frank Mills");
    assert_eq!(made["created"], made["modified"]);
    let r = ask(
        &mut ws,
        "PUT",
        "/nodejs",
        Some(json!({"author": "Over the socket"})),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    for i in 0..3 {
        let (status, _) = rest(
            "POST",
            &f.app_url("/nodejs"),
            Some(&f.john),
            Some(json!({"cuisine": "pizza", "i": i})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, body) = rest(
        "PUT",
        &f.app_url("/nodejs?ql=select%20*%20where%20cuisine%20%3D%20'pizza'&limit=2"),
        Some(&f.john),
        Some(json!({"testUuid": "t-1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let updated = body["entities"].as_array().expect("entities");
    assert_eq!(updated.len(), 2, "{body}");
    assert!(
        updated
            .iter()
            .all(|e| e["testUuid"] == "t-1" && e["cuisine"] == "pizza")
    );
    let (_, all) = rest(
        "GET",
        &f.app_url("/nodejs?ql=select%20*%20where%20testUuid%20%3D%20't-1'"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(all["count"], 2, "only the limit: {all}");
    // Users are changed in bulk only by admins, and a guest's PUT creates as its POST would.
    let (status, _) = rest(
        "PUT",
        &f.app_url("/users?ql=select%20*"),
        Some(&f.john),
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users"),
        None,
        Some(json!({"username": "putter", "password": "pw-pw-pw"})),
    )
    .await;
    assert_eq!(status, 200, "a sign-up: {body}");
}

/// A user's own endpoints, as Usergrid's `UserResource`: a password changes with the old one
/// and no token (an admin's without it), one token is revoked by whoever holds it, and a
/// `me` without a user names nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_self_service_needs_only_what_usergrid_asks() {
    let f = Fixture::new().await;
    let (_, me) = rest("GET", &f.app_url("/users/me"), Some(&f.john), None).await;
    let john = me["entities"][0]["uuid"].as_str().expect("uuid").to_owned();
    let other = f.login("john", "john-password").await;
    let mut other_socket = f.socket(&other).await;
    // One token, revoked by holding it: no Authorization at all.
    for (i, method) in ["PUT", "POST"].into_iter().enumerate() {
        let token = if i == 0 {
            f.john.clone()
        } else {
            f.login("john", "john-password").await
        };
        let (status, body) = rest(
            method,
            &f.app_url(&format!("/users/{john}/revoketoken?token={token}")),
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, body["action"].clone()),
            (200, json!("revoked user token")),
            "{body}"
        );
        let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&token), None).await;
        assert_eq!(status, 401, "{method}: the token is gone");
    }
    let r = ask(&mut other_socket, "GET", "/users/me", None).await;
    assert_eq!(r["status"], 200, "another token of john's lives: {r}");
    // Someone else's token, or none at all, revokes nothing.
    for token in [f.jane.as_str(), "not-a-token"] {
        let (status, _) = rest(
            "PUT",
            &f.app_url(&format!("/users/{john}/revoketoken?token={token}")),
            None,
            None,
        )
        .await;
        assert_eq!(status, 401, "{token}");
    }
    let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&f.jane), None).await;
    assert_eq!(status, 200);
    // The password, with the old one and no token.
    let pw = |old: &str, new: &str| json!({"oldpassword": old, "newpassword": new});
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/john/password"),
        None,
        Some(pw("wrong", "x")),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("auth_invalid_username_or_password")),
        "{body}"
    );
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/john/password"),
        None,
        Some(pw("john-password", "2cool4u")),
    )
    .await;
    assert_eq!(
        (status, body["action"].clone()),
        (200, json!("set user password")),
        "{body}"
    );
    assert_eq!(
        gridsocket_e2e::WsClient::connect(&f.ws_url(&format!("?access_token={other}")))
            .await
            .expect("connect")
            .recv()
            .await["status"],
        401,
        "a change with no token ends every token"
    );
    f.login("john", "2cool4u").await;
    // An admin sets it without the old one.
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/john/password"),
        Some(&f.admin_token),
        Some(json!({"newpassword": "john-password"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    f.login("john", "john-password").await;
    // `me` names nobody without a user's token.
    let (status, body) = rest("GET", &f.app_url("/users/me"), None, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("service_resource_not_found"))
    );
    let mut guest = WsClient::connect(&f.ws_url(""))
        .await
        .expect("guest socket");
    let _welcome = guest.recv().await;
    let r = ask(&mut guest, "GET", "/users/me", None).await;
    assert_eq!(r["status"], 404, "{r}");
}

/// Matrix parameters: `/horses;ql=…` is a query, and `/users;ql=…/devices` applies the rest of
/// the path to each user the query selects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_may_be_written_into_the_path() {
    let f = Fixture::new().await;
    for (name, legs) in [("ed", 4), ("tripod", 3)] {
        let (status, _) = rest(
            "POST",
            &f.app_url("/horses"),
            Some(&f.admin_token),
            Some(json!({"name": name, "legs": legs})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut ws = f.socket(&f.john).await;
    let path = "/horses;ql=select%20*%20where%20legs%20%3D%204";
    let (status, body) = rest("GET", &f.app_url(path), Some(&f.john), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["entities"][0]["name"], "ed");
    let r = ask(&mut ws, "GET", "/horses;ql=select * where legs = 3", None).await;
    assert_eq!(r["body"]["entities"][0]["name"], "tripod", "{r}");
    // The rest of the path, for each selected user.
    for user in ["john", "jane"] {
        let token = if user == "john" { &f.john } else { &f.jane };
        let (status, body) = rest(
            "POST",
            &f.app_url("/users/me/devices"),
            Some(token),
            Some(json!({"name": format!("{user}-phone")})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = rest(
        "GET",
        &f.app_url("/users;ql=select%20*%20where%20username%3D'jane'/devices"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&Value> = body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| &e["name"])
        .collect();
    assert_eq!(names, [&json!("jane-phone")], "{body}");
    // Each selected entity is its own request: john may not read jane's feed this way.
    let (status, _) = rest(
        "GET",
        &f.app_url("/users;ql=select%20*%20where%20username%3D'jane'/feed"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 403);
    // No name carries a `;`, so no collection can be mistaken for one.
    let (status, body) = rest(
        "POST",
        &f.app_url("/horses"),
        Some(&f.admin_token),
        Some(json!({"name": "a;ql=b"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("illegal_argument"))
    );
}

/// The built-in collections of a user name their entities by name: `POST
/// /users/{u}/devices/{name}` links an existing device, `PUT` creates one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_collections_name_their_entities() {
    let f = Fixture::new().await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/devices"),
        Some(&f.john),
        Some(json!({"name": "ipad"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/john/devices/ipad"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entities"][0]["name"], "ipad");
    let (status, _) = rest(
        "POST",
        &f.app_url("/users/john/devices/nothing"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 404, "POST links; it does not create");
    let mut ws = f.socket(&f.john).await;
    let r = ask(
        &mut ws,
        "PUT",
        "/users/me/devices/watch",
        Some(json!({"model": "w1"})),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"]["entities"][0]["model"], "w1");
    let (_, body) = rest(
        "GET",
        &f.app_url("/users/john/devices"),
        Some(&f.john),
        None,
    )
    .await;
    let mut names: Vec<String> = body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ipad", "watch"], "{body}");
}

/// One multipart body with a `file` part and, optionally, a text field.
fn multipart(file: &[u8], content_type: &str, field: Option<(&str, &str)>) -> (String, Vec<u8>) {
    let boundary = "gridsocket-test-boundary";
    let mut body = Vec::new();
    if let Some((name, value)) = field {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"old_man\"\r\ncontent-type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A file uploaded as a page (HTML, SVG) is served so that no browser runs it on the API's
/// origin: sandboxed by its CSP, its type not sniffed, and downloaded rather than shown. An
/// image keeps being shown, with the same sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_page_runs_no_script_on_the_apis_origin() {
    let f = Fixture::new().await;
    let client = reqwest::Client::new();
    let page = b"<script>alert(JSON.stringify(sessionStorage))</script>".to_vec();
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".to_vec();
    let jpeg: Vec<u8> = (0..2_000u32).map(|i| (i % 251) as u8).collect();
    for (bytes, kind, name, attachment) in [
        (&page, "text/html", "page", true),
        (&svg, "image/svg+xml", "drawing", true),
        (&jpeg, "image/jpeg", "photo", false),
    ] {
        let (ct, body) = multipart(bytes, kind, Some(("name", name)));
        let resp = client
            .post(f.app_url("/pages"))
            .bearer_auth(&f.john)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("upload");
        assert_eq!(resp.status(), 200, "{kind}");
        let resp = client
            .get(f.app_url(&format!("/pages/{name}")))
            .bearer_auth(&f.john)
            .header("accept", kind)
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status(), 200, "{kind}");
        let headers = resp.headers();
        assert_eq!(headers["content-type"], kind);
        assert_eq!(
            headers["content-security-policy"], "default-src 'none'; sandbox",
            "{kind}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{kind}");
        assert_eq!(
            headers
                .get("content-disposition")
                .map(|v| v.to_str().expect("ascii")),
            attachment.then_some("attachment"),
            "{kind}"
        );
        assert_eq!(
            resp.bytes().await.expect("bytes").to_vec(),
            *bytes,
            "{kind}"
        );
    }
}

/// Assets: a multipart upload stores the bytes with the entity and sets its `file-metadata`;
/// a `GET` preferring the bytes' type gets them (ranges, conditional requests); a `PUT`
/// replaces them; deleting the entity deletes them; access is the entity's; the socket sees
/// `file-metadata` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_carries_an_asset() {
    let f = Fixture::new().await;
    let client = reqwest::Client::new();
    let jpeg: Vec<u8> = (0..109_055u32).map(|i| (i % 251) as u8).collect();
    let (ct, body) = multipart(&jpeg, "image/jpeg", Some(("name", "old-man")));
    let resp = client
        .post(f.app_url("/nodejs"))
        .bearer_auth(&f.john)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("JSON");
    let entity = &answer["entities"][0];
    assert_eq!(entity["name"], "old-man");
    let meta = &entity["file-metadata"];
    assert_eq!(meta["content-type"], "image/jpeg");
    assert_eq!(meta["content-length"], 109_055);
    assert!(
        meta["checksum"].as_str().is_some_and(|c| c.len() == 32),
        "{meta}"
    );
    let uuid = entity["uuid"].as_str().expect("uuid").to_owned();
    let url = f.app_url(&format!("/nodejs/{uuid}"));
    // The bytes, whole.
    let resp = client
        .get(&url)
        .bearer_auth(&f.john)
        .header("accept", "image/jpeg")
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", meta["etag"].as_str().expect("etag"))
    );
    assert!(resp.headers().contains_key("last-modified"));
    assert_eq!(resp.bytes().await.expect("bytes").to_vec(), jpeg);
    // A range, and a copy that is still current.
    let resp = client
        .get(&url)
        .bearer_auth(&f.john)
        .header("accept", "image/jpeg")
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 100-199/109055");
    assert_eq!(
        resp.bytes().await.expect("bytes").to_vec(),
        jpeg[100..200].to_vec()
    );
    let resp = client
        .get(&url)
        .bearer_auth(&f.john)
        .header("accept", "image/jpeg")
        .header("range", "bytes=200000-")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status(), 416);
    let resp = client
        .get(&url)
        .bearer_auth(&f.john)
        .header("accept", "image/jpeg")
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional");
    assert_eq!(resp.status(), 304);
    // JSON when JSON is asked for (or nothing): the entity, with its file-metadata.
    let (status, body) = rest("GET", &url, Some(&f.john), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["entities"][0]["file-metadata"]["content-length"],
        109_055
    );
    let mut ws = f.socket(&f.john).await;
    let r = ask(&mut ws, "GET", &format!("/nodejs/{uuid}"), None).await;
    assert_eq!(
        r["body"]["entities"][0]["file-metadata"]["content-type"],
        "image/jpeg"
    );
    // A client cannot write file-metadata itself.
    let (_, body) = rest(
        "PUT",
        &url,
        Some(&f.john),
        Some(json!({"file-metadata": {"content-length": 1}})),
    )
    .await;
    assert_eq!(
        body["entities"][0]["file-metadata"]["content-length"],
        109_055
    );
    // A PUT replaces the bytes.
    let png = b"\x89PNG not really".to_vec();
    let (ct, body) = multipart(&png, "image/png", None);
    let resp = client
        .put(&url)
        .bearer_auth(&f.john)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("replace");
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(&url)
        .bearer_auth(&f.john)
        .header("accept", "image/png,*/*;q=0.8")
        .send()
        .await
        .expect("download");
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.expect("bytes").to_vec(), png);
    // Access is the entity's: a guest may not read it.
    let resp = client
        .get(&url)
        .header("accept", "image/png")
        .send()
        .await
        .expect("guest");
    assert_eq!(resp.status(), 401);
    // Too large is refused before anything is written.
    let big = vec![0u8; (10 << 20) + 1];
    let (ct, body) = multipart(&big, "application/octet-stream", None);
    let resp = client
        .post(f.app_url("/nodejs"))
        .bearer_auth(&f.john)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("too large");
    assert_eq!(resp.status(), 413);
    // Deleted with its entity.
    let (status, _) = rest("DELETE", &url, Some(&f.john), None).await;
    assert_eq!(status, 200);
    let resp = client
        .get(&url)
        .bearer_auth(&f.john)
        .header("accept", "image/png")
        .send()
        .await
        .expect("gone");
    assert_eq!(resp.status(), 404);
}
