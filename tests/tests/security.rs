//! The attack suite: each test guards one rule of `docs/SECURITY.md`, over real sockets and
//! REST, and each failed on the server before the rule was enforced (issue 14's audit).

use futures_util::{SinkExt, StreamExt};
use gridsocket_e2e::process::Node;
use gridsocket_e2e::{Fixture, TestServer, WsClient, rest, seed_acme};
use gridsocket_server::Settings;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A second loopback address: the server sees its connections as another client's.
const OTHER_ADDRESS: &str = "127.0.0.2";

/// Held by the tests that measure time or memory, and by those that load the machine most:
/// they run one at a time, so that none measures another.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The socket's answer to one request frame.
async fn ask(ws: &mut WsClient, id: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    ws.request(json!(id), method, path, None, body).await
}

/// Creates a user as the admin and returns `(token, uuid)`.
async fn user(f: &Fixture, name: &str) -> (String, String) {
    let token = f.create_user(name, &format!("{name}-password")).await;
    let (status, body) = rest("GET", &f.app_url("/users/me"), Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    let uuid = body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    (token, uuid)
}

/// The status and error code of a REST call.
async fn outcome(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, body) = rest(method, url, token, body).await;
    (status, body["error"].clone())
}

/// Opens a socket on `url`; returns its first frame and, if the server closed it, the code.
async fn connect_once(url: &str) -> (Value, Option<u16>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    let first = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("no first frame: {other:?}"),
    };
    let code = match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(c))))) => Some(u16::from(c.code)),
        _ => None,
    };
    (first, code)
}

/// Reads frames until the server closes; returns the close code.
async fn close_code_of(ws: &mut WsClient) -> Option<u16> {
    let (_, close) = ws.until_close().await;
    close.map(|c| u16::from(c.code))
}

/// A TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("address"))?;
    socket.connect(to).await
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Samples a process's memory every 20 ms until stopped; returns the highest.
fn watch_peak(
    pid: u32,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak.max(rss(pid))
    });
    (stop, handle)
}

/// The role set Usergrid apps use for per-user data, instead of the default role's `/**`.
async fn per_user_roles(f: &Fixture) {
    let perms = f.app_url("/roles/default/permissions");
    let (status, body) = rest(
        "DELETE",
        &format!("{perms}?permission=get,put,post,delete:/**"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for p in [
        "get,put,post,delete:/users/${user}/**",
        "get,put:/users/${user}",
        "get:/users",
        "get,post:/books/**",
    ] {
        let (status, body) = rest(
            "POST",
            &perms,
            Some(&f.admin_token),
            Some(json!({"permission": p})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Rule 1: a username is never a pattern. Names of users, groups, roles, entities,
/// organizations and applications reject `* / ? # ;`, white space and control characters, so
/// no one can sign up as `*` and match every user in `${user}` permissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_is_never_a_pattern() {
    let f = Fixture::new().await;
    per_user_roles(&f).await;
    let bad = [
        "*",
        "e*",
        "**",
        "j?hn",
        "a#b",
        "a;b",
        "a b",
        "tab\there",
        "new\nline",
        "a/b",
        "nul\u{0}",
    ];
    for name in bad {
        // Guests sign up over REST…
        let (status, error) = outcome(
            "POST",
            &f.app_url("/users"),
            None,
            Some(json!({"username": name, "password": "pw"})),
        )
        .await;
        assert_eq!(
            (status, error),
            (400, json!("illegal_argument")),
            "sign up as {name:?}"
        );
        // …and over a guest socket, and users cannot rename themselves to one.
        let mut guest = WsClient::connect(&f.ws_url(""))
            .await
            .expect("guest socket");
        let _welcome = guest.recv().await;
        let r = ask(
            &mut guest,
            "signup",
            "POST",
            "/users",
            Some(json!({"username": name, "password": "pw"})),
        )
        .await;
        assert_eq!(
            (r["status"].clone(), r["body"]["error"].clone()),
            (json!(400), json!("illegal_argument")),
            "{name:?}: {r}"
        );
        let (status, _) = outcome(
            "PUT",
            &f.app_url("/users/me"),
            Some(&f.john),
            Some(json!({"username": name})),
        )
        .await;
        assert_eq!(status, 400, "rename to {name:?}");
        for (path, prop) in [("/groups", "path"), ("/books", "name")] {
            let (status, _) = outcome(
                "POST",
                &f.app_url(path),
                Some(&f.admin_token),
                Some(json!({ prop: name })),
            )
            .await;
            assert_eq!(status, 400, "{path} named {name:?}");
        }
        let (status, _) = outcome(
            "POST",
            &f.app_url("/roles"),
            Some(&f.admin_token),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, 400, "role named {name:?}");
        let (status, _) = outcome(
            "POST",
            &f.server.url("/management/orgs/acme/apps"),
            Some(&f.admin_token),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, 400, "app named {name:?}");
        // Organizations and their admins, as the superuser makes them.
        let su = f.server.url("/management/token");
        let (_, token) = rest(
            "POST",
            &su,
            None,
            Some(
                json!({"grant_type": "password", "username": gridsocket_e2e::SUPERUSER.0,
                        "password": gridsocket_e2e::SUPERUSER.1}),
            ),
        )
        .await;
        let su_token = token["access_token"].as_str().expect("superuser token");
        for body in [
            json!({"organization": name, "username": "o-admin", "email": "o@x.test", "password": "pw-pw-pw"}),
            json!({"organization": "fine-org", "username": name, "email": "o@x.test", "password": "pw-pw-pw"}),
        ] {
            let (status, answer) = outcome(
                "POST",
                &f.server.url("/management/orgs"),
                Some(su_token),
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, 400, "{body}: {answer}");
        }
        // A rename over the socket, and a PUT that would create an entity by that name.
        let mut john = f.socket(&f.john).await;
        let r = ask(
            &mut john,
            "rename",
            "PUT",
            "/users/me",
            Some(json!({"username": name})),
        )
        .await;
        assert_eq!(r["status"], 400, "socket rename to {name:?}: {r}");
        if !name.contains('/') {
            let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
            let (status, answer) = outcome(
                "PUT",
                &f.app_url(&format!("/books/{encoded}")),
                Some(&f.admin_token),
                Some(json!({"price": 1})),
            )
            .await;
            assert_eq!(status, 400, "PUT /books/{encoded}: {answer}");
        }
    }
    // Whatever `${user}` stands for is literal: jane cannot act on john through a permission
    // written for herself.
    let (status, _) = outcome(
        "PUT",
        &f.app_url("/users/john"),
        Some(&f.jane),
        Some(json!({"age": 1})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = outcome(
        "POST",
        &f.app_url("/users/john/activities"),
        Some(&f.jane),
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = outcome(
        "POST",
        &f.app_url("/users/me/activities"),
        Some(&f.jane),
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(status, 200);
}

/// Rule 2: who a token speaks for is re-read when the user changes. A renamed user's old
/// token does not keep the old name; a disabled or deactivated user's tokens are refused and
/// sockets closed (4401); a password change revokes the user's other tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_a_token_speaks_for_is_reread_when_the_user_changes() {
    let f = Fixture::new().await;
    // Grants that name users by `${user}`: a token that kept the old name would match it.
    per_user_roles(&f).await;
    let (old_token, _) = user(&f, "carol").await;
    let mut socket = f.socket(&old_token).await;
    // carol becomes carla; someone else takes the name carol.
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/me"),
        Some(&old_token),
        Some(json!({"username": "carla"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        "POST",
        &f.app_url("/users"),
        Some(&f.admin_token),
        Some(json!({"username": "carol", "email": "the-new-carol@acme.test", "password": "pw"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let newcomer = body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    // The old token and the open socket speak for carla now: carol's inbox is not theirs.
    let (status, _) = rest(
        "GET",
        &f.app_url("/users/carol/feed"),
        Some(&old_token),
        None,
    )
    .await;
    assert_eq!(status, 403, "REST with the old token");
    let r = ask(&mut socket, "feed", "GET", "/users/carol/feed", None).await;
    assert_eq!(r["status"], 403, "{r}");
    let r = ask(&mut socket, "sub", "SUBSCRIBE", "/users/carol/feed", None).await;
    assert_eq!(r["status"], 403, "{r}");
    let r = ask(
        &mut socket,
        "post",
        "POST",
        &format!("/users/{newcomer}/activities"),
        Some(json!({"content": "as you"})),
    )
    .await;
    assert_eq!(r["status"], 403, "{r}");
    // Nor is carol herself, or her relations, whether by REST or the socket opened before.
    let (status, _) = rest("GET", &f.app_url("/users/carol"), Some(&old_token), None).await;
    assert_eq!(status, 403, "GET /users/carol with the old token");
    let (status, _) = rest(
        "POST",
        &f.app_url("/users/carol/likes/books/dune"),
        Some(&old_token),
        None,
    )
    .await;
    assert_eq!(status, 403, "POST /users/carol/likes with the old token");
    let r = ask(&mut socket, "get", "GET", "/users/carol", None).await;
    assert_eq!(r["status"], 403, "{r}");
    let r = ask(&mut socket, "sub-user", "SUBSCRIBE", "/users/carol", None).await;
    assert_eq!(r["status"], 403, "{r}");
    let r = ask(&mut socket, "me", "GET", "/users/me", None).await;
    assert_eq!(r["body"]["entities"][0]["username"], "carla", "{r}");
    let r = ask(&mut socket, "mine", "GET", "/users/carla/feed", None).await;
    assert_eq!(r["status"], 200, "{r}");

    // Disabled: tokens refused, sockets closed.
    for (flag, value, code) in [
        ("disabled", true, "auth_disabled_appuser"),
        ("activated", false, "auth_unactivated_appuser"),
    ] {
        let (token, _) = user(&f, &format!("dave-{flag}")).await;
        let mut ws = f.socket(&token).await;
        let (status, body) = rest(
            "PUT",
            &f.app_url(&format!("/users/dave-{flag}")),
            Some(&f.admin_token),
            Some(json!({ flag: value })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(close_code_of(&mut ws).await, Some(4401), "{flag}");
        let (status, error) = outcome("GET", &f.app_url("/users/me"), Some(&token), None).await;
        assert_eq!((status, error), (401, json!(code)));
        let (first, closed) = connect_once(&f.ws_url(&format!("?access_token={token}"))).await;
        assert_eq!(
            (first["status"].clone(), closed),
            (json!(401), Some(4401)),
            "{first}"
        );
        let (status, body) = rest(
            "POST",
            &f.app_url("/token"),
            None,
            Some(json!({"grant_type": "password", "username": format!("dave-{flag}"), "password": format!("dave-{flag}-password")})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }

    // A password change keeps the session that made it and ends every other.
    let first = f.login("jane", "jane-password").await;
    let second = f.login("jane", "jane-password").await;
    let mut other_socket = f.socket(&second).await;
    let mut own_socket = f.socket(&first).await;
    let r = ask(
        &mut own_socket,
        "pw",
        "PUT",
        "/users/me/password",
        Some(json!({"oldpassword": "jane-password", "newpassword": "jane-new"})),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(close_code_of(&mut other_socket).await, Some(4401));
    let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&second), None).await;
    assert_eq!(status, 401, "the other token is revoked");
    let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&first), None).await;
    assert_eq!(status, 200, "the token that changed it goes on");
    let r = ask(&mut own_socket, "after", "GET", "/users/me", None).await;
    assert_eq!(r["status"], 200, "{r}");
    // Deleted: gone everywhere.
    let (token, _) = user(&f, "erin").await;
    let mut ws = f.socket(&token).await;
    let (status, _) = rest(
        "DELETE",
        &f.app_url("/users/erin"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(close_code_of(&mut ws).await, Some(4401));
    let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&token), None).await;
    assert_eq!(status, 401);
}

/// Rule 2, across nodes: disabling a user on the API node closes their socket on a gateway
/// and refuses their token there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_is_refused_on_every_node() {
    let (Some(_), Some(nats)) = (
        gridsocket_e2e::require_postgres().await,
        gridsocket_e2e::require_nats().await,
    ) else {
        return;
    };
    let schema = format!("gs_sec_{}", std::process::id());
    let store = gridsocket_e2e::postgres_schema(&schema).await;
    let subject = format!("gridsocket-sec-{}", std::process::id());
    let common = [
        "--store",
        store.as_str(),
        "--bus",
        nats.as_str(),
        "--bus-subject",
        subject.as_str(),
        "--dispatch-poll-ms",
        "60000",
    ];
    let api = Node::start(&[&common[..], &["--role", "api"]].concat());
    let gateway = Node::start(&[&common[..], &["--role", "gateway"]].concat());
    let seeded = seed_acme(&api.http).await;
    let url = format!("{}/acme/shop?access_token={}", gateway.ws(), seeded.john);
    let mut ws = WsClient::connect(&url)
        .await
        .expect("socket on the gateway");
    let welcome = ws.recv().await;
    assert_eq!(welcome["status"], 200, "{welcome}");
    let r = ws.request(json!(1), "GET", "/users/me", None, None).await;
    assert_eq!(r["status"], 200, "{r}");
    let (status, body) = rest(
        "PUT",
        &format!("{}/acme/shop/users/john", api.http),
        Some(&seeded.admin_token),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(close_code_of(&mut ws).await, Some(4401));
    let (first, closed) = connect_once(&url).await;
    assert_eq!(
        (first["status"].clone(), closed),
        (json!(401), Some(4401)),
        "{first}"
    );
}

/// Rule 3: access checks use canonical paths. Every alias of a protected resource (singular
/// or plural collection, name or uuid or email, `feed` or `inbox`, any letter case) is
/// refused alike, over REST, socket requests, SUBSCRIBE and the connect URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_checks_use_canonical_paths() {
    let _alone = MEASURING.lock().await;
    let f = Fixture::new().await;
    let (status, body) = rest("GET", &f.app_url("/users/me"), Some(&f.jane), None).await;
    assert_eq!(status, 200);
    let jane = body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.admin_token),
        Some(json!({"path": "staff"})),
    )
    .await;
    assert_eq!(status, 200);
    let upper = jane.to_ascii_uppercase();
    let names = [
        "jane",
        "JANE",
        "Jane",
        jane.as_str(),
        upper.as_str(),
        "jane@acme.test",
        "JANE@ACME.TEST",
    ];
    let colls = ["users", "user", "Users", "USER"];
    let mut john_ws = f.socket(&f.john).await;
    let mut jane_ws = f.socket(&f.jane).await;
    let mut n = 0;
    for coll in colls {
        for name in names {
            for rel in ["feed", "inbox", "Feed", "INBOX"] {
                n += 1;
                let path = format!("/{coll}/{name}/{rel}");
                // The owner may, by any alias.
                let r = ask(&mut jane_ws, "own", "GET", &path, None).await;
                assert_eq!(r["status"], 200, "jane {path}: {r}");
                // Nobody else may, by any alias or means.
                let (status, error) = outcome("GET", &f.app_url(&path), Some(&f.john), None).await;
                assert_eq!((status, error), (403, json!("forbidden")), "REST {path}");
                let r = ask(&mut john_ws, &format!("g{n}"), "GET", &path, None).await;
                assert_eq!(r["status"], 403, "socket GET {path}: {r}");
                let r = ask(&mut john_ws, &format!("s{n}"), "SUBSCRIBE", &path, None).await;
                assert_eq!(r["status"], 403, "SUBSCRIBE {path}: {r}");
                let (first, closed) =
                    connect_once(&f.ws_url(&format!("{path}?access_token={}", f.john))).await;
                assert_eq!(
                    (first["status"].clone(), closed),
                    (json!(403), Some(4401)),
                    "connect {path}: {first}"
                );
                let (status, _) = outcome("GET", &f.app_url(&path), None, None).await;
                assert_eq!(status, 401, "guest {path}");
            }
            // Writes on another user by any alias.
            let path = format!("/{coll}/{name}");
            let (status, _) = outcome(
                "PUT",
                &f.app_url(&path),
                Some(&f.john),
                Some(json!({"x": 1})),
            )
            .await;
            assert_eq!(status, 403, "PUT {path}");
            let r = ask(
                &mut john_ws,
                "a",
                "POST",
                &format!("{path}/activities"),
                Some(json!({"content": "x"})),
            )
            .await;
            assert_eq!(r["status"], 403, "POST {path}/activities: {r}");
            let r = ask(
                &mut john_ws,
                "m",
                "POST",
                &format!("/groups/staff/{coll}/{name}"),
                None,
            )
            .await;
            assert_eq!(r["status"], 403, "membership {coll}/{name}: {r}");
        }
    }
}

/// Rule 4: group membership is not self-service. Joining or leaving a group needs an app
/// admin or an explicit grant on that group's membership path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_membership_is_not_self_service() {
    let f = Fixture::new().await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.admin_token),
        Some(json!({"path": "staff"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups/staff/permissions"),
        Some(&f.admin_token),
        Some(json!({"permission": "get,put,post,delete:/secrets/**"})),
    )
    .await;
    assert_eq!(status, 200);
    let mut ws = f.socket(&f.john).await;
    for (method, path) in [
        ("POST", "/users/me/groups/staff"),
        ("POST", "/users/john/groups/staff"),
        ("POST", "/groups/staff/users/john"),
        ("POST", "/groups/staff/users/me"),
        ("POST", "/group/STAFF/user/John"),
        ("POST", "/groups/staff/users"),
    ] {
        let (status, error) = outcome(method, &f.app_url(path), Some(&f.john), None).await;
        assert_eq!(
            (status, error),
            (403, json!("forbidden")),
            "REST {method} {path}"
        );
        let r = ask(&mut ws, "join", method, path, None).await;
        assert_eq!(r["status"], 403, "socket {method} {path}: {r}");
    }
    // The admin adds him; then he may leave only if a grant says so.
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups/staff/users/john"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "DELETE",
        &f.app_url("/users/me/groups/staff"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 403);
    // An explicit grant on the membership path makes a moderator.
    let (status, _) = rest(
        "POST",
        &f.app_url("/users/jane/permissions"),
        Some(&f.admin_token),
        Some(json!({"permission": "post,delete:/groups/staff/users/*"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest(
        "DELETE",
        &f.app_url("/groups/staff/users/john"),
        Some(&f.jane),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/me/groups/staff"),
        Some(&f.jane),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Roles stay for admins alone.
    for path in [
        "/users/me/roles/admin",
        "/roles/admin/users/john",
        "/users/me/permissions",
    ] {
        let (status, _) = outcome(
            "POST",
            &f.app_url(path),
            Some(&f.john),
            Some(json!({"permission": "get:/**"})),
        )
        .await;
        assert_eq!(status, 403, "{path}");
    }
}

/// Rule 5: users cannot edit or delete other users, whatever the roles grant; emails and
/// usernames are unique on update as on create; a login by email finds exactly that user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_edit_or_delete_other_users() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    for body in [
        json!({"disabled": true}),
        json!({"activated": false}),
        json!({"username": "stolen"}),
        json!({"email": "john-owns@acme.test"}),
        json!({"name": "x"}),
    ] {
        for method in ["PUT", "POST"] {
            let (status, error) = outcome(
                method,
                &f.app_url("/users/jane"),
                Some(&f.john),
                Some(body.clone()),
            )
            .await;
            assert_eq!(
                (status, error),
                (403, json!("forbidden")),
                "{method} {body}"
            );
            let r = ask(&mut ws, "edit", method, "/users/jane", Some(body.clone())).await;
            assert_eq!(r["status"], 403, "{r}");
        }
    }
    let (status, _) = outcome("DELETE", &f.app_url("/users/jane"), Some(&f.john), None).await;
    assert_eq!(status, 403);
    let (status, _) = rest(
        "DELETE",
        &format!("{}?ql=select%20*", f.app_url("/users")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let r = ask(&mut ws, "del", "DELETE", "/users", None).await;
    assert_eq!(r["status"], 403, "{r}");
    let (status, _) = rest(
        "DELETE",
        &format!("{}?ql=select%20*", f.app_url("/users")),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = rest("GET", &f.app_url("/users/jane"), Some(&f.admin_token), None).await;
    assert_eq!(
        (status, body["entities"][0]["disabled"].clone()),
        (200, Value::Null),
        "jane is untouched: {body}"
    );
    // Uniqueness on update.
    let (status, error) = outcome(
        "PUT",
        &f.app_url("/users/me"),
        Some(&f.john),
        Some(json!({"email": "JANE@acme.test"})),
    )
    .await;
    assert_eq!(
        (status, error),
        (400, json!("duplicate_unique_property_exists"))
    );
    let (status, error) = outcome(
        "PUT",
        &f.app_url("/users/me"),
        Some(&f.john),
        Some(json!({"username": "Jane"})),
    )
    .await;
    assert_eq!(
        (status, error),
        (400, json!("duplicate_unique_property_exists"))
    );
    let (status, _) = outcome(
        "PUT",
        &f.app_url("/users/me"),
        Some(&f.john),
        Some(json!({"email": "not an email"})),
    )
    .await;
    assert_eq!(status, 400);
    // A username that is someone's email is refused, and so is an email that is someone's
    // username: a login names either, and must find one user (the attacker's pass).
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/me"),
        Some(&f.john),
        Some(json!({"username": "jane@acme.test"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("duplicate_unique_property_exists")),
        "{body}"
    );
    let (status, body) = rest("POST", &f.app_url("/token"), None, Some(json!({"grant_type": "password", "username": "jane@acme.test", "password": "jane-password"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "jane");
    let (status, _) = rest("POST", &f.app_url("/token"), None, Some(json!({"grant_type": "password", "username": "jane@acme.test", "password": "john-password"}))).await;
    assert_eq!(status, 400);
    // Themselves, and the admin, may.
    let (status, _) = rest(
        "PUT",
        &f.app_url("/users/me"),
        Some(&f.jane),
        Some(json!({"city": "Oslo"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "PUT",
        &f.app_url("/users/jane"),
        Some(&f.admin_token),
        Some(json!({"city": "Rome"})),
    )
    .await;
    assert_eq!(status, 200);
}

/// Rule 6: the REST collection listing (like the socket's) shows only what the caller may
/// read; so do connection listings and snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_only_what_the_caller_may_read() {
    let f = Fixture::new().await;
    for name in ["sf-dune", "sf-solaris", "cookbook", "diary"] {
        let (status, _) = rest(
            "POST",
            &f.app_url("/books"),
            Some(&f.admin_token),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let perms = f.app_url("/roles/default/permissions");
    rest(
        "DELETE",
        &format!("{perms}?permission=get,put,post,delete:/**"),
        Some(&f.admin_token),
        None,
    )
    .await;
    for p in [
        "get:/books",
        "get:/books/sf-*",
        "get,post:/users/${user}/**",
    ] {
        let (status, _) = rest(
            "POST",
            &perms,
            Some(&f.admin_token),
            Some(json!({"permission": p})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let names = |body: &Value| -> Vec<String> {
        body["entities"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["name"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, body) = rest("GET", &f.app_url("/books"), Some(&f.john), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), ["sf-dune", "sf-solaris"], "REST listing");
    let (status, _) = rest("GET", &f.app_url("/books/diary"), Some(&f.john), None).await;
    assert_eq!(status, 403);
    let mut ws = f.socket(&f.john).await;
    let r = ask(&mut ws, "list", "GET", "/books", None).await;
    assert_eq!(
        names(&r["body"]),
        ["sf-dune", "sf-solaris"],
        "socket listing: {r}"
    );
    let sub = ws
        .subscribe(
            json!("snap"),
            "/books",
            Some(json!({"snapshot": "true"})),
            None,
        )
        .await;
    assert_eq!(
        names(&sub["snapshot"]),
        ["sf-dune", "sf-solaris"],
        "snapshot: {sub}"
    );
    // Connections list only readable targets.
    let (status, _) = rest(
        "POST",
        &f.app_url("/users/john/likes/books/diary"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "POST",
        &f.app_url("/users/john/likes/books/sf-dune"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest("GET", &f.app_url("/users/me/likes"), Some(&f.john), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), ["sf-dune"]);
}

/// Rule 7: the REST port survives idle and slow clients. One address holding more idle or
/// half-sent connections than its cap leaves the port answering everyone else at once, and
/// connections that never finish their headers are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_port_survives_idle_and_slow_clients() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    // Fewer places in all than one address tries to hold: without a per-address cap, that
    // address alone would fill them.
    settings.max_http_connections = 60;
    settings.max_http_connections_per_ip = 20;
    settings.http_header_timeout_secs = 2;
    settings.http_idle_timeout_secs = 3;
    let server = TestServer::start_with(settings).await;
    let mut held = Vec::new();
    for i in 0..120 {
        let Ok(mut c) = TcpStream::connect(server.http).await else {
            continue;
        };
        if i % 2 == 0 {
            // Half a request, never finished.
            let _ = c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").await;
        }
        held.push(c);
    }
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(1), async {
        reqwest::Client::builder()
            .local_address(OTHER_ADDRESS.parse::<std::net::IpAddr>().ok())
            .build()
            .expect("client")
            .get(format!("http://{}/healthz", server.http))
            .send()
            .await
            .map(|r| r.status().as_u16())
    })
    .await;
    assert!(
        matches!(status, Ok(Ok(200))),
        "another address waited {:?}: {status:?}",
        started.elapsed()
    );
    // The holder's own address is capped, not shut out for good: its half-sent requests and
    // idle connections are closed by the timeouts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut closed = 0;
    for c in &mut held {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(c, &mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    assert_eq!(
        closed,
        held.len(),
        "every idle or half-sent connection was closed"
    );
    let (status, _) = rest("GET", &server.url("/healthz"), None, None).await;
    assert_eq!(status, 200);
}

/// Rule 8: the socket port survives the same. Bare TCP connections time out of the handshake
/// and give their places back; a flood from one address never locks out another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_port_survives_bare_and_flooding_connections() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_connections = 30;
    settings.max_connections_per_ip = 10;
    settings.handshake_timeout_secs = 1;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let url = f.ws_url(&format!("?access_token={}", f.john));
    // Ten bare connections: the address's whole share.
    let mut bare = Vec::new();
    for _ in 0..10 {
        bare.push(TcpStream::connect(f.server.ws).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let mut ws = WsClient::connect(&url).await.expect("socket");
    let welcome = ws.recv().await;
    assert_eq!(
        welcome["status"], 200,
        "the address is not locked out: {welcome}"
    );
    drop(ws);
    drop(bare);
    // A flood from one address: refused past its share without taking the server's places.
    let mut flood = Vec::new();
    for _ in 0..200 {
        if let Ok(c) = TcpStream::connect(f.server.ws).await {
            flood.push(c);
        }
    }
    let stream = tcp_from(OTHER_ADDRESS, f.server.ws)
        .await
        .expect("connect from another address");
    let started = Instant::now();
    let (mut other, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("handshake");
    let first = match tokio::time::timeout(Duration::from_secs(2), other.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(t.as_str()).expect("JSON"),
        other => panic!("no welcome: {other:?}"),
    };
    assert_eq!(
        first["status"],
        200,
        "another address gets in ({:?}): {first}",
        started.elapsed()
    );
    let _ = other.close(None).await;
}

/// Rule 9: a socket's backlog is bounded in bytes, answers and events together. A client
/// that asks for many pages of large entities and never reads is cut off (4008) and the
/// server does not grow by more than 100 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_backlog_is_bounded_in_bytes() {
    let _alone = MEASURING.lock().await;
    let node = Node::start(&[]);
    let seeded = seed_acme(&node.http).await;
    let blob = "x".repeat(100 * 1024);
    for i in 0..50 {
        let (status, body) = rest(
            "POST",
            &format!("{}/acme/shop/bigs", node.http),
            Some(&seeded.admin_token),
            Some(json!({"name": format!("big-{i}"), "blob": blob})),
        )
        .await;
        assert_eq!(status, 200, "{}", body["error"]);
    }
    let url = format!("{}/acme/shop?access_token={}", node.ws(), seeded.john);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("socket");
    let _welcome = ws.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss(node.pid());
    let (stop, peak) = watch_peak(node.pid());
    for id in 0..150 {
        let frame = json!({"id": id, "method": "GET", "path": "/bigs", "params": {"limit": "50"}});
        if ws.send(Message::text(frame.to_string())).await.is_err() {
            break;
        }
    }
    // Never read; give the server time to answer into the void.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.join().expect("watcher");
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "a socket that never reads grew the server by {} MB at most",
        grown >> 20
    );
    assert!(grown < 100 << 20, "the server grew by {} MB", grown >> 20);
    // The socket was cut off as a slow consumer; reading now finds the end of it.
    let mut code = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match msg {
            Ok(Message::Close(c)) => {
                code = c.map(|c| u16::from(c.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(code.is_none() || code == Some(4008), "closed with {code:?}");
    let (status, _) = rest("GET", &format!("{}/healthz", node.http), None, None).await;
    assert_eq!(status, 200);
}

/// Rule 10: failed logins are throttled per username and per client address (429
/// `too_many_attempts` with `Retry-After`), and password checks run a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled() {
    let f = Fixture::new().await;
    let token = f.app_url("/token");
    let guess =
        |user: &str, pw: &str| json!({"grant_type": "password", "username": user, "password": pw});
    let client = reqwest::Client::new();
    let mut refused = 0;
    let mut retry_after = None;
    let started = Instant::now();
    for i in 0..200 {
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
        let resp = client
            .post(&token)
            .json(&guess("jane", &format!("guess-{i}")))
            .send()
            .await
            .expect("login");
        if resp.status().as_u16() == 429 {
            refused += 1;
            retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: Value = resp.json().await.expect("JSON");
            assert_eq!(body["error"], "too_many_attempts", "{body}");
        }
    }
    assert!(refused >= 190, "only {refused} guesses of 200 were refused");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After: {retry_after:?}"
    );
    // While throttled, even the right password is not checked.
    let (status, body) = rest("POST", &token, None, Some(guess("jane", "jane-password"))).await;
    assert_eq!(
        (status, body["error"].clone()),
        (429, json!("too_many_attempts"))
    );
    // The socket's token endpoint counts alike.
    let mut guest = WsClient::connect(&f.ws_url(""))
        .await
        .expect("guest socket");
    let _ = guest.recv().await;
    let r = ask(&mut guest, "t", "POST", "/token", Some(guess("jane", "x"))).await;
    assert_eq!(r["status"], 429, "{r}");
    // Per address: spraying many usernames from one address is throttled too.
    let mut codes = Vec::new();
    for i in 0..30 {
        let (status, _) = rest(
            "POST",
            &token,
            None,
            Some(guess(&format!("nobody-{i}"), "x")),
        )
        .await;
        codes.push(status);
    }
    assert!(codes.contains(&429), "{codes:?}");
    // Another user from another address is not affected.
    let other = reqwest::Client::builder()
        .local_address(OTHER_ADDRESS.parse::<std::net::IpAddr>().ok())
        .build()
        .expect("client");
    let resp = other
        .post(&token)
        .json(&guess("john", "john-password"))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200);
    // The management endpoint too, per username (from the other address, which is not
    // throttled yet).
    let mut codes = Vec::new();
    for i in 0..10 {
        let resp = other
            .post(f.server.url("/management/token"))
            .json(&json!({"grant_type": "password", "username": "boss", "password": format!("no-{i}")}))
            .send()
            .await
            .expect("admin login");
        codes.push(resp.status().as_u16());
    }
    assert_eq!(&codes[..5], [400; 5], "{codes:?}");
    assert_eq!(&codes[5..], [429; 5], "{codes:?}");
}

/// Rule 10: sixty-four logins at once cannot take the server's memory with them: Argon2id
/// (about 19 MiB each) runs a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_do_not_exhaust_memory() {
    let _alone = MEASURING.lock().await;
    let node = Node::start(&[
        "--login-failures-per-user",
        "0",
        "--login-failures-per-ip",
        "0",
    ]);
    let seeded = seed_acme(&node.http).await;
    let _ = seeded;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss(node.pid());
    let (stop, peak) = watch_peak(node.pid());
    let token = format!("{}/acme/shop/token", node.http);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            rest("POST", &token, None, Some(json!({"grant_type": "password", "username": "john", "password": format!("wrong-{i}")}))).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("login"), 400);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let grown = peak.join().expect("watcher").saturating_sub(baseline);
    eprintln!(
        "64 concurrent logins grew the server by {} MB at most",
        grown >> 20
    );
    assert!(
        grown < 200 << 20,
        "64 logins grew the server by {} MB",
        grown >> 20
    );
}

/// Rule 11: timing does not reveal which users exist: an unknown username costs what a wrong
/// password does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_does_not_reveal_which_users_exist() {
    let _alone = MEASURING.lock().await;
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.login_failures_per_user = 0;
    settings.login_failures_per_ip = 0;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let token = f.app_url("/token");
    let client = reqwest::Client::new();
    let timed = |user: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let started = Instant::now();
            let resp = client
                .post(&token)
                .json(&json!({"grant_type": "password", "username": user, "password": "wrong"}))
                .send()
                .await
                .expect("login");
            assert_eq!(resp.status().as_u16(), 400);
            started.elapsed()
        }
    };
    // Each pair is measured back to back, in alternating order, so that whatever else the
    // machine does weighs on both sides alike; the median of the pairs' ratios says how far
    // apart the two costs are. A real difference shows in every round; a machine busy with
    // other work (a build beside the tests) can tip one round, rarely three in a row.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let mut ratios = Vec::new();
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for i in 0..31 {
            let (k, u) = if i % 2 == 0 {
                let k = timed("jane".into()).await;
                (k, timed(format!("nobody-{i}")).await)
            } else {
                let u = timed(format!("nobody-{i}")).await;
                (timed("jane".into()).await, u)
            };
            ratios.push(k.as_secs_f64() / u.as_secs_f64());
            known.push(k);
            unknown.push(u);
        }
        ratios.sort_by(f64::total_cmp);
        known.sort();
        unknown.sort();
        let ratio = ratios[15];
        let (k, u) = (known[15].as_secs_f64(), unknown[15].as_secs_f64());
        eprintln!("median wrong password {k:.4} s, unknown user {u:.4} s, median ratio {ratio:.3}");
        if (0.8..1.25).contains(&ratio) {
            return;
        }
        rounds.push(format!("{ratio:.2} (medians {k:.4} s and {u:.4} s)"));
    }
    panic!(
        "a wrong password costs this many times an unknown user, in every round: {}",
        rounds.join(", ")
    );
}

/// Rule 12: every number a client sends into time or size arithmetic is checked: past the
/// documented maximum it is a 400, never an overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_from_clients_cannot_overflow() {
    let f = Fixture::new().await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/queues/jobs"),
        Some(&f.admin_token),
        Some(json!({"n": 1})),
    )
    .await;
    assert_eq!(status, 200);
    for timeout in [
        "9223372036854775807",
        "18446744073709551615",
        "99999999999999999999",
        "-1",
        "86400001",
    ] {
        let url = format!("{}?consumer=c&timeout={timeout}", f.app_url("/queues/jobs"));
        let (status, error) = outcome("GET", &url, Some(&f.admin_token), None).await;
        assert_eq!(
            (status, error),
            (400, json!("illegal_argument")),
            "timeout {timeout}"
        );
    }
    let mut ws = f.socket(&f.admin_token).await;
    let r = ws
        .request(
            json!("q"),
            "SUBSCRIBE",
            "/queues/jobs",
            Some(json!({"consumer": "c", "timeout": "9223372036854775807"})),
            None,
        )
        .await;
    assert_eq!(r["status"], 400, "{r}");
    // A resume from the end of time is not an overflow: it is simply not recovered.
    ws.send_json(&json!({"id": "s", "method": "SUBSCRIBE", "path": "/books", "since": u64::MAX}))
        .await;
    let r = ws.response_to(&json!("s")).await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"]["recovered"], false, "{r}");
    // Past any number or not, a limit over the maximum is cut to it, as Usergrid cuts it.
    for limit in ["18446744073709551616", "9223372036854775807", "1001"] {
        let (status, body) = rest(
            "GET",
            &format!("{}?limit={limit}", f.app_url("/books")),
            Some(&f.john),
            None,
        )
        .await;
        assert_eq!(status, 200, "limit {limit}: {body}");
        assert!(body["count"].as_u64().is_some_and(|n| n <= 1000), "{body}");
    }
    for limit in ["-1", "0", "1e3", "99999999999999999999999999999x"] {
        let (status, body) = rest(
            "GET",
            &format!("{}?limit={limit}", f.app_url("/books")),
            Some(&f.john),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"].clone()),
            (400, json!("illegal_argument")),
            "limit {limit}"
        );
    }
    let (status, body) = rest("POST", &f.app_url("/token"), None, Some(json!({"grant_type": "password", "username": "john", "password": "john-password", "ttl": u64::MAX}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&f.john), None).await;
    assert_eq!(status, 200, "the server is fine");
}

/// Rule 13: an organization's existence is not revealed to callers who may not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_are_not_revealed_to_strangers() {
    let f = Fixture::new().await;
    let (status, body) = rest("POST", &f.server.url("/management/token"), None, Some(json!({"grant_type": "password", "username": gridsocket_e2e::SUPERUSER.0, "password": gridsocket_e2e::SUPERUSER.1}))).await;
    assert_eq!(status, 200, "{body}");
    let su = body["access_token"].as_str().expect("token").to_owned();
    let (status, _) = rest("POST", &f.server.url("/management/orgs"), Some(&su), Some(json!({"organization": "rival", "username": "rival-boss", "email": "boss@rival.test", "password": "rival-password"}))).await;
    assert_eq!(status, 200);
    for who in [Some(f.admin_token.as_str()), Some(f.john.as_str()), None] {
        for suffix in ["", "/apps", "/credentials"] {
            let exists = outcome(
                "GET",
                &f.server.url(&format!("/management/orgs/rival{suffix}")),
                who,
                None,
            )
            .await;
            let missing = outcome(
                "GET",
                &f.server
                    .url(&format!("/management/orgs/no-such-org{suffix}")),
                who,
                None,
            )
            .await;
            assert_eq!(exists, missing, "{suffix} as {who:?}");
            assert!(exists.0 == 401 || exists.0 == 404, "{exists:?}");
        }
    }
    let (status, _) = rest(
        "GET",
        &f.server.url("/management/orgs/acme"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "its own admin sees it");
}

/// Found in the attacker's pass: a user's own endpoints are never collections. A POST to
/// `/users/{u}/password` changes the password (as a PUT does) and stores nothing; other
/// reserved names are refused, not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_endpoints_never_store_their_bodies() {
    let f = Fixture::new().await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/john/password"),
        Some(&f.john),
        Some(json!({"oldpassword": "john-password", "newpassword": "john-new"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entities"], Value::Null, "no entity was made: {body}");
    let token = f.login("john", "john-new").await;
    for path in [
        "/users/me/password",
        "/users/me/revoketoken",
        "/users/me/credentials",
    ] {
        let (status, body) = rest("GET", &f.app_url(path), Some(&token), None).await;
        assert!(status == 405 || status == 404, "{path}: {status} {body}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let (status, body) = rest(
            method,
            &f.app_url("/users/john/token"),
            Some(&f.admin_token),
            Some(json!({"ttl": 1})),
        )
        .await;
        assert_eq!(status, 405, "{method}: {body}");
    }
    let (status, body) = rest("GET", &f.app_url("/passwords"), Some(&f.admin_token), None).await;
    assert_eq!((status, body["count"].clone()), (200, json!(0)), "{body}");
}

/// Found in the attacker's pass: a user posts activities as themself. An `actor` in the body
/// cannot name someone else: its identity is the poster's, to every follower and member who
/// receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_cannot_be_posted_as_someone_else() {
    let f = Fixture::new().await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.admin_token),
        Some(json!({"path": "club"})),
    )
    .await;
    assert_eq!(status, 200);
    let spoof = json!({"content": "it was me", "actor": {"uuid": "00000000-0000-7000-8000-000000000001", "username": "jane", "email": "jane@acme.test", "displayName": "Jane!"}});
    for path in ["/users/me/activities", "/groups/club/activities"] {
        let (status, body) =
            rest("POST", &f.app_url(path), Some(&f.john), Some(spoof.clone())).await;
        assert_eq!(status, 200, "{path}: {body}");
        let actor = &body["entities"][0]["actor"];
        assert_eq!(
            (actor["username"].clone(), actor["email"].clone()),
            (json!("john"), json!("john@acme.test")),
            "{path}: {actor}"
        );
        assert_ne!(actor["uuid"], spoof["actor"]["uuid"], "{path}");
    }
    // An admin may post for someone (Usergrid's behaviour).
    let (status, body) = rest(
        "POST",
        &f.app_url("/groups/club/activities"),
        Some(&f.admin_token),
        Some(spoof.clone()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["entities"][0]["actor"]["username"], "jane");
}

/// Found in the attacker's pass: a relation shows and takes only what the caller may read on
/// its own. Linking a hidden entity to oneself opens nothing, and a refusal does not say
/// whether the entity exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_open_nothing_their_target_hides() {
    let f = Fixture::new().await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/secrets"),
        Some(&f.admin_token),
        Some(json!({"name": "s1", "code": 42})),
    )
    .await;
    assert_eq!(status, 200);
    let uuid = body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let perms = f.app_url("/roles/default/permissions");
    rest(
        "DELETE",
        &format!("{perms}?permission=get,put,post,delete:/**"),
        Some(&f.admin_token),
        None,
    )
    .await;
    for p in ["get,put,post,delete:/users/${user}/**", "get:/users/*"] {
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
    // Named with its collection, access is asked first: 403 whether it exists or not. Named
    // by uuid alone it is looked up first, so a hidden one is not found, like a missing one.
    let missing = "01a23f33-e21b-7173-aca1-000000000000";
    for (method, path, refusal) in [
        ("POST", "/users/me/likes/secrets/s1".to_owned(), 403),
        ("GET", "/users/me/likes/secrets/s1".to_owned(), 403),
        ("POST", format!("/users/me/likes/{uuid}"), 404),
        ("POST", format!("/users/me/likes/{missing}"), 404),
        ("POST", "/users/me/likes/secret/S1".to_owned(), 403),
        (
            "POST",
            "/users/me/likes/secrets/no-such-secret".to_owned(),
            403,
        ),
        ("POST", "/users/me/likes/roles/admin".to_owned(), 403),
    ] {
        let (status, body) = rest(method, &f.app_url(&path), Some(&f.john), None).await;
        assert_eq!(status, refusal, "REST {method} {path}: {body}");
        assert_eq!(body["entities"], Value::Null, "{body}");
        let r = ask(&mut ws, "rel", method, &path, None).await;
        assert_eq!(r["status"], refusal, "socket {method} {path}: {r}");
    }
}

/// Found in the attacker's pass: an activity belongs to its actor and a device to the user it
/// is registered to, by whatever path they are named. Nobody else edits, deletes or takes them
/// over, and an actor never names someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_and_devices_belong_to_their_user() {
    let f = Fixture::new().await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/me/activities"),
        Some(&f.jane),
        Some(json!({"content": "hello"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let activity = body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/me/devices"),
        Some(&f.jane),
        Some(json!({"name": "janephone", "pushToken": "jane's"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (method, path) in [
        ("PUT", format!("/activities/{activity}")),
        ("DELETE", format!("/activities/{activity}")),
        ("PUT", "/devices/janephone".to_owned()),
        ("DELETE", "/devices/janephone".to_owned()),
    ] {
        let (status, _) = rest(
            method,
            &f.app_url(&path),
            Some(&f.john),
            Some(json!({"content": "edited", "pushToken": "john's"})),
        )
        .await;
        assert_eq!(status, 403, "john {method} {path}");
        let (status, _) = rest(
            method,
            &f.app_url(&path),
            None,
            Some(json!({"pushToken": "guest's"})),
        )
        .await;
        assert_eq!(status, 401, "guest {method} {path}");
    }
    let (_, body) = rest(
        "GET",
        &f.app_url("/devices/janephone"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(body["entities"][0]["pushToken"], "jane's");
    let (status, _) = rest(
        "DELETE",
        &format!("{}?ql=select%20*", f.app_url("/activities")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "GET",
        &f.app_url(&format!("/activities/{activity}")),
        Some(&f.jane),
        None,
    )
    .await;
    assert_eq!(status, 200, "a bulk delete removes nothing of another's");
    // Her own, she edits; its actor she cannot change.
    let (status, _) = rest(
        "PUT",
        &f.app_url(&format!("/activities/{activity}")),
        Some(&f.jane),
        Some(json!({"content": "edited"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "PUT",
        &f.app_url(&format!("/activities/{activity}")),
        Some(&f.jane),
        Some(json!({"actor": {"username": "john"}})),
    )
    .await;
    assert_eq!(status, 400);
    // Straight into the collection, an activity is still the poster's.
    let (status, body) = rest(
        "POST",
        &f.app_url("/activities"),
        Some(&f.john),
        Some(json!({"content": "x", "actor": {"username": "jane", "uuid": "x"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["entities"][0]["actor"]["username"], "john");
}

/// Found in the attacker's pass: groups change only by admins or explicit grants (renaming or
/// deleting one changes what its members may do); copying into another queue needs the right
/// to post there, and a queue's fan-out is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_queue_fan_out_are_not_open_to_everyone() {
    let f = Fixture::new().await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.john),
        Some(json!({"path": "johns"})),
    )
    .await;
    assert_eq!(status, 200, "users may create groups");
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.admin_token),
        Some(json!({"path": "staff"})),
    )
    .await;
    assert_eq!(status, 200);
    for (method, body) in [("PUT", Some(json!({"path": "renamed"}))), ("DELETE", None)] {
        let (status, _) = rest(method, &f.app_url("/groups/staff"), Some(&f.john), body).await;
        assert_eq!(status, 403, "{method}");
    }
    let (status, _) = rest(
        "DELETE",
        &format!("{}?ql=select%20*", f.app_url("/groups")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest("GET", &f.app_url("/groups/staff"), Some(&f.john), None).await;
    assert_eq!(status, 200, "the bulk delete took nothing");
    // Queues: a narrowed role may post to its own queues only.
    let perms = f.app_url("/roles/default/permissions");
    rest(
        "DELETE",
        &format!("{perms}?permission=get,put,post,delete:/**"),
        Some(&f.admin_token),
        None,
    )
    .await;
    rest(
        "POST",
        &perms,
        Some(&f.admin_token),
        Some(json!({"permission": "get,put,post,delete:/queues/mine/**"})),
    )
    .await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/queues/secret"),
        Some(&f.john),
        Some(json!({"x": 1})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = rest(
        "POST",
        &f.app_url("/queues/mine/a/subscribers/secret"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(
        status, 403,
        "copying into a queue needs the right to post there"
    );
    for i in 0..100 {
        let (status, _) = rest(
            "POST",
            &f.app_url(&format!("/queues/amp/subscribers/copy{i}")),
            Some(&f.admin_token),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = rest(
        "POST",
        &f.app_url("/queues/amp/subscribers/one-too-many"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let many: Vec<Value> = (0..100).map(|i| json!({"n": i})).collect();
    let (status, body) = rest(
        "POST",
        &f.app_url("/queues/amp"),
        Some(&f.admin_token),
        Some(Value::Array(many)),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("illegal_argument")),
        "100 x 101 copies"
    );
}

/// Found in the attacker's pass: every answer and every wait is bounded. A page ends at a
/// byte budget (its cursor goes on from there); `order by` takes at most 8 keys; a request
/// body that never finishes arriving is cut off; guests sign up one at a time; a name cannot
/// hide invisible characters; failures count against the user however the login names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_waits_are_bounded() {
    let _alone = MEASURING.lock().await;
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.request_timeout_secs = 2;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let blob = "x".repeat(200 * 1024);
    for i in 0..50 {
        let (status, _) = rest(
            "POST",
            &f.app_url("/blobs"),
            Some(&f.admin_token),
            Some(json!({"name": format!("b{i}"), "blob": blob})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, body) = rest(
        "GET",
        &format!("{}?limit=50", f.app_url("/blobs")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let n = body["entities"].as_array().map_or(0, Vec::len);
    assert!((40..50).contains(&n), "a page of {n} entities of 200 KB");
    assert!(body["cursor"].is_string(), "the rest is a page away");
    let keys: Vec<String> = (0..9).map(|i| format!("f{i}")).collect();
    let (status, error) = outcome(
        "GET",
        &format!(
            "{}?ql=select%20*%20order%20by%20{}",
            f.app_url("/blobs"),
            keys.join(",")
        ),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!((status, error), (400, json!("query_parse")));
    // A body that never finishes.
    let mut slow = TcpStream::connect(f.server.http).await.expect("connect");
    let head = format!(
        "POST /acme/shop/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nAuthorization: Bearer {}\r\n\r\n{{",
        f.john
    );
    slow.write_all(head.as_bytes()).await.expect("send");
    let mut answer = vec![0u8; 256];
    let read = tokio::time::timeout(
        Duration::from_secs(6),
        tokio::io::AsyncReadExt::read(&mut slow, &mut answer),
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        matches!(read, Ok(Ok(n)) if n > 0) && text.contains("408"),
        "{text}"
    );
    // Sign-ups, one at a time for guests.
    let (status, _) = rest(
        "POST",
        &f.app_url("/users"),
        None,
        Some(json!([{"username": "a1", "password": "p"}, {"username": "a2", "password": "p"}])),
    )
    .await;
    assert_eq!(status, 400);
    for name in ["bo\u{200b}b", "\u{feff}jane", "jo\u{2060}hn"] {
        let (status, _) = rest(
            "POST",
            &f.app_url("/users"),
            None,
            Some(json!({"username": name, "password": "p"})),
        )
        .await;
        assert_eq!(status, 400, "{name:?}");
    }
    // By username, then by email: one count.
    for i in 0..5 {
        let (status, _) = rest(
            "POST",
            &f.app_url("/token"),
            None,
            Some(
                json!({"grant_type": "password", "username": "jane", "password": format!("x{i}")}),
            ),
        )
        .await;
        assert_eq!(status, 400);
    }
    let (status, _) = rest(
        "POST",
        &f.app_url("/token"),
        None,
        Some(json!({"grant_type": "password", "username": "jane@acme.test", "password": "y"})),
    )
    .await;
    assert_eq!(status, 429);
}

/// The second attacker's pass, rule 10: failed logins are counted when they start, so guesses
/// sent at once are throttled like guesses sent one by one (99 of 100 concurrent guesses got
/// through a check made before any of them had failed), over REST and over a guest socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_are_counted_at_once() {
    let _measuring = MEASURING.lock().await;
    let f = Fixture::new().await;
    let token = f.app_url("/token");
    let guess = |pw: &str| json!({"grant_type": "password", "username": "jane", "password": pw});
    let client = reqwest::Client::new();
    let attempts = (0..60).map(|i| {
        let (client, token, body) = (client.clone(), token.clone(), guess(&format!("g{i}")));
        async move {
            let resp = client.post(&token).json(&body).send().await.expect("login");
            resp.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let checked = statuses.iter().filter(|s| **s == 400).count();
    assert!(
        checked <= 5,
        "{checked} of 60 concurrent guesses were checked; jane allows 5 failures a minute"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 60 - checked);
    let (status, _) = rest("POST", &token, None, Some(guess("jane-password"))).await;
    assert_eq!(
        status, 429,
        "the right password, sent after the burst, is not checked"
    );
    // The same over one guest socket, its frames pipelined.
    let (_, bob) = user(&f, "bob").await;
    let _ = bob;
    let mut ws = WsClient::connect(&f.ws_url(""))
        .await
        .expect("guest socket");
    let _welcome = ws.recv().await;
    for i in 0..30 {
        ws.send_json(&json!({"id": i, "method": "POST", "path": "/token",
            "body": {"grant_type": "password", "username": "bob", "password": format!("g{i}")}}))
            .await;
    }
    let mut checked = 0;
    for i in 0..30 {
        let r = ws.response_to(&json!(i)).await;
        if r["status"] == 400 {
            checked += 1;
        }
    }
    assert!(
        checked <= 5,
        "{checked} of 30 pipelined guesses were checked"
    );
}

/// The second attacker's pass, rule 10: sign-ups are counted per client address, and hashing
/// new passwords never takes every password turn, so a sign-up flood cannot stop logins (a
/// guest's 3,072 pipelined sign-ups made a login time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_are_counted_and_never_starve_logins() {
    let _measuring = MEASURING.lock().await;
    let f = Fixture::new().await;
    let client = reqwest::Client::new();
    let users = f.app_url("/users");
    let signups = (0..40).map(|i| {
        let (client, users) = (client.clone(), users.clone());
        async move {
            let body = json!({"username": format!("walkin{i}"), "password": "pw-pw-pw"});
            let resp = client
                .post(&users)
                .json(&body)
                .send()
                .await
                .expect("sign up");
            resp.status().as_u16()
        }
    });
    let login = async {
        let started = Instant::now();
        let token = f.login("jane", "jane-password").await;
        (token, started.elapsed())
    };
    let (statuses, (token, took)) = tokio::join!(futures_util::future::join_all(signups), login);
    assert!(!token.is_empty());
    assert!(
        took < Duration::from_secs(10),
        "a login during a sign-up burst took {took:?}"
    );
    let made = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        made <= 20,
        "{made} sign-ups from one address in a minute; 20 are allowed"
    );
    assert_eq!(made + refused, 40, "{statuses:?}");
    // Admins are not counted.
    let (status, body) = rest(
        "POST",
        &users,
        Some(&f.admin_token),
        Some(json!({"username": "imported", "password": "pw-pw-pw"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// The second attacker's pass, rule 8: a connection refused for its address's limit is closed
/// at once once many are being refused, so one address cannot hold the process's file
/// descriptors (about 16,000 refused connections, each held through its handshake, starved
/// the REST port of descriptors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_hold_no_file_descriptors() {
    let _measuring = MEASURING.lock().await;
    let node = Node::start(&["--max-connections-per-ip", "5"]);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = fds();
    let addr: SocketAddr = node
        .ws()
        .trim_start_matches("ws://")
        .parse()
        .expect("ws address");
    let mut held = Vec::new();
    for _ in 0..500 {
        if let Ok(c) = TcpStream::connect(addr).await {
            held.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let during = fds();
    assert!(
        during < before + 5 + 64 + 40,
        "500 bare connections from one address: {before} -> {during} descriptors"
    );
    let http: SocketAddr = node
        .http
        .trim_start_matches("http://")
        .parse()
        .expect("http address");
    let mut other = tcp_from(OTHER_ADDRESS, http).await.expect("connect");
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read_to_end(&mut other, &mut answer),
    )
    .await;
    assert!(read.is_ok(), "another address gets /healthz answered");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(held);
}

/// The second attacker's pass, rule 2: superuser tokens end when the superuser's credentials
/// change or go (an old token still created organizations after a restart with a new
/// password, and with none at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superuser_tokens_end_with_their_credentials() {
    let start = |data, superuser| Node::start_with_superuser(data, superuser, &[]);
    let node = start(
        tempfile::tempdir().expect("temp dir"),
        Some("root:first-password"),
    );
    let token_of = |http: String, pw: &'static str| async move {
        let (status, body) = rest(
            "POST",
            &format!("{http}/management/token"),
            None,
            Some(json!({"grant_type": "password", "username": "root", "password": pw})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().expect("token").to_owned()
    };
    let token = token_of(node.http.clone(), "first-password").await;
    let orgs = |http: &str| format!("{http}/management/orgs");
    let org = |name: &str| {
        json!({"organization": name, "username": format!("{name}-admin"),
               "email": format!("{name}@example.com"), "password": "admin-pw"})
    };
    let (status, body) = rest("POST", &orgs(&node.http), Some(&token), Some(org("one"))).await;
    assert_eq!(status, 200, "{body}");
    let node = start(node.kill_keeping_data(), Some("root:second-password"));
    let (status, body) = rest("POST", &orgs(&node.http), Some(&token), Some(org("two"))).await;
    assert_eq!(status, 401, "a token of the old password: {body}");
    let fresh = token_of(node.http.clone(), "second-password").await;
    let (status, body) = rest("POST", &orgs(&node.http), Some(&fresh), Some(org("two"))).await;
    assert_eq!(status, 200, "a token of the new one: {body}");
    let node = start(node.kill_keeping_data(), None);
    let (status, body) = rest("POST", &orgs(&node.http), Some(&fresh), Some(org("three"))).await;
    assert_eq!(status, 401, "no superuser configured: {body}");
}

/// The second attacker's pass: an activity's actor is its poster by whatever path it is
/// created (`POST /books/b1/activities` named anyone), a device belongs to the first user it
/// is registered to (linking another's device made it one's own to change), and an email may
/// not be another user's username (it caught their logins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_belongs_to_a_user_stays_theirs_by_every_path() {
    let f = Fixture::new().await;
    let (_, jane) = user(&f, "janet").await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.john),
        Some(json!({"name": "b1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let forged = json!({"content": "hi", "actor": {"uuid": jane, "username": "janet", "displayName": "Janet"}});
    let mut ws = f.socket(&f.john).await;
    for (via, path) in [
        ("REST", "/books/b1/activities"),
        ("socket", "/books/b1/activity"),
    ] {
        let body = if via == "REST" {
            rest(
                "POST",
                &f.app_url(path),
                Some(&f.john),
                Some(forged.clone()),
            )
            .await
            .1
        } else {
            ask(&mut ws, "act", "POST", path, Some(forged.clone())).await["body"].clone()
        };
        let actor = &body["entities"][0]["actor"];
        assert_eq!(actor["username"], "john", "{via} {path}: {body}");
        assert_ne!(actor["uuid"], json!(jane), "{via} {path}");
        assert_ne!(actor["displayName"], "Janet", "{via} {path}");
    }
    // Janet's device is hers.
    let janet = f.login("janet", "janet-password").await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/me/devices"),
        Some(&janet),
        Some(json!({"name": "janephone"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for path in [
        "/users/me/devices/devices/janephone",
        "/users/john/devices/devices/janephone",
    ] {
        let (status, body) = rest("POST", &f.app_url(path), Some(&f.john), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        let r = ask(&mut ws, "dev", "POST", path, None).await;
        assert_eq!(r["status"], 403, "socket {path}: {r}");
    }
    let (status, _) = rest(
        "PUT",
        &f.app_url("/devices/janephone"),
        Some(&f.john),
        Some(json!({"pushToken": "john"})),
    )
    .await;
    assert_eq!(status, 403, "not his to change");
    // A username with an @ is nobody's email, and an email nobody's username.
    let (status, body) = rest(
        "POST",
        &f.app_url("/users"),
        None,
        Some(json!({"username": "bob@x.test", "password": "pw-pw-pw"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/me"),
        Some(&f.john),
        Some(json!({"email": "BOB@x.test"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("duplicate_unique_property_exists")),
        "{body}"
    );
    let (status, body) = rest(
        "POST",
        &f.app_url("/token"),
        None,
        Some(json!({"grant_type": "password", "username": "bob@x.test", "password": "pw-pw-pw"})),
    )
    .await;
    assert_eq!(
        (status, body["user"]["username"].clone()),
        (200, json!("bob@x.test"))
    );
}

/// The second attacker's pass, rules 3 and 6: every way of reading a feed is private. The
/// feeds an activity is in (`/activities/{a}/connecting/feed`) are others' inboxes; a feed
/// lists only the activities a GET of each would show, as its events do; a group's activities
/// are not anyone's to take out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_show_only_what_their_reader_may_read() {
    let f = Fixture::new().await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/jane/activities"),
        Some(&f.jane),
        Some(json!({"content": "for my followers"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let activity = body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let mut ws = f.socket(&f.john).await;
    for path in [
        format!("/activities/{activity}/connecting/feed"),
        format!("/activities/{activity}/connecting/feed/users/jane"),
    ] {
        let (status, body) = rest("GET", &f.app_url(&path), Some(&f.john), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        let r = ask(&mut ws, "feeds", "GET", &path, None).await;
        assert_eq!(r["status"], 403, "socket {path}: {r}");
    }
    // A group whose activities its members may list, but not read one by one.
    for (method, path, body) in [
        ("POST", "/groups", Some(json!({"path": "club"}))),
        ("POST", "/groups/club/users/john", None),
    ] {
        let (status, b) = rest(method, &f.app_url(path), Some(&f.admin_token), body).await;
        assert_eq!(status, 200, "{path}: {b}");
    }
    let (status, body) = rest(
        "POST",
        &f.app_url("/groups/club/activities"),
        Some(&f.admin_token),
        Some(json!({"content": "secret minutes", "actor": {"username": "admin"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let minutes = body["entities"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    // Members may take nothing out of the group's activities or its feed.
    for path in [
        format!("/groups/club/activities/{minutes}"),
        format!("/groups/club/feed/{minutes}"),
    ] {
        let (status, body) = rest("DELETE", &f.app_url(&path), Some(&f.john), None).await;
        assert_eq!(status, 403, "DELETE {path}: {body}");
    }
    let perms = f.app_url("/roles/default/permissions");
    let (status, _) = rest(
        "DELETE",
        &format!("{perms}?permission=get,put,post,delete:/**"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "POST",
        &perms,
        Some(&f.admin_token),
        Some(json!({"permission": "get:/groups/**"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "GET",
        &f.app_url(&format!("/activities/{minutes}")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 403, "the activity itself is hidden");
    for relation in ["activities", "feed"] {
        let path = format!("/groups/club/{relation}");
        let (status, body) = rest("GET", &f.app_url(&path), Some(&f.john), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["entities"],
            json!([]),
            "{path} lists nothing hidden: {body}"
        );
        let r = ask(&mut ws, "list", "GET", &path, None).await;
        assert_eq!(r["body"]["entities"], json!([]), "socket {path}: {r}");
    }
    // Nor does a feed's subscription push it.
    let r = ask(&mut ws, "sub", "SUBSCRIBE", "/groups/club/feed", None).await;
    assert_eq!(r["status"], 200, "{r}");
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups/club/activities"),
        Some(&f.admin_token),
        Some(json!({"content": "more minutes", "actor": {"username": "admin"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        ws.try_recv(Duration::from_millis(800)).await.is_none(),
        "no event for an activity its reader may not GET"
    );
}

/// The second attacker's pass, rule 4 of queues: subscribing a queue to another copies its
/// messages there, so it needs the right to read it (copying `orders` into one's own queue
/// showed messages its reader could not read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_a_queue_needs_the_right_to_read_it() {
    let f = Fixture::new().await;
    let perms = f.app_url("/roles/default/permissions");
    let (status, _) = rest(
        "DELETE",
        &format!("{perms}?permission=get,put,post,delete:/**"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for p in ["post:/queues/orders/**", "get,post,delete:/queues/mine/**"] {
        let (status, _) = rest(
            "POST",
            &perms,
            Some(&f.admin_token),
            Some(json!({"permission": p})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = rest(
        "GET",
        &f.app_url("/queues/orders?pos=start"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 403, "orders is not john's to read");
    let path = "/queues/orders/subscribers/mine";
    let (status, body) = rest("POST", &f.app_url(path), Some(&f.john), None).await;
    assert_eq!(status, 403, "{body}");
    let mut ws = f.socket(&f.john).await;
    let r = ask(&mut ws, "copy", "POST", path, None).await;
    assert_eq!(r["status"], 403, "{r}");
}

/// The second attacker's pass, rule 13 for users: a guest's refusal reads the same whether
/// the user it names exists or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_tell_guests_who_exists() {
    let f = Fixture::new().await;
    for (method, existing, missing) in [
        ("PUT", "/users/jane@acme.test", "/users/nobody@acme.test"),
        ("POST", "/users/jane/activities", "/users/nobody/activities"),
        ("DELETE", "/users/jane", "/users/nobody"),
    ] {
        let body = Some(json!({"content": "x"}));
        let (s1, b1) = rest(method, &f.app_url(existing), None, body.clone()).await;
        let (s2, b2) = rest(method, &f.app_url(missing), None, body).await;
        assert_eq!((s1, s2), (401, 401), "{b1} / {b2}");
        let desc = |b: &Value, path: &str| {
            b["error_description"].as_str().unwrap_or_default().replace(
                path.rsplit('/')
                    .nth(usize::from(method == "POST"))
                    .unwrap_or(""),
                "…",
            )
        };
        assert_eq!(
            desc(&b1, existing),
            desc(&b2, missing),
            "{method}: {b1} / {b2}"
        );
    }
}

/// Rule 3, for every protected resource, not only feeds: a group's name and existence, roles
/// and their members, activities, devices, a feed's items, a user's relations and the user
/// itself are refused by every alias (singular or plural, any case, uuid or name or email,
/// percent-encoded), over REST and socket requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alias_of_every_protected_resource_is_one_resource() {
    let f = Fixture::new().await;
    let uuid_of = |body: &Value| {
        body["entities"][0]["uuid"]
            .as_str()
            .expect("uuid")
            .to_owned()
    };
    let (_, me) = rest("GET", &f.app_url("/users/me"), Some(&f.jane), None).await;
    let jane = uuid_of(&me);
    let (_, group) = rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.admin_token),
        Some(json!({"path": "staff"})),
    )
    .await;
    let staff = uuid_of(&group);
    let (_, roles) = rest(
        "GET",
        &f.app_url("/roles/admin"),
        Some(&f.admin_token),
        None,
    )
    .await;
    let admin_role = uuid_of(&roles);
    let (_, activity) = rest(
        "POST",
        &f.app_url("/users/me/activities"),
        Some(&f.jane),
        Some(json!({"content": "mine"})),
    )
    .await;
    let post = uuid_of(&activity);
    let (_, device) = rest(
        "POST",
        &f.app_url("/users/me/devices"),
        Some(&f.jane),
        Some(json!({"name": "janephone"})),
    )
    .await;
    let phone = uuid_of(&device);
    let (up_jane, up_post, up_phone) = (
        jane.to_ascii_uppercase(),
        post.to_ascii_uppercase(),
        phone.to_ascii_uppercase(),
    );
    let users = [
        "jane",
        "JANE",
        jane.as_str(),
        up_jane.as_str(),
        "jane@acme.test",
        "jan%65",
    ];
    let mut cases: Vec<(&str, String, Option<Value>)> = Vec::new();
    for coll in ["group", "groups", "Groups", "GROUP", "gr%6Fups"] {
        for name in ["staff", "STAFF", staff.as_str(), "st%61ff"] {
            cases.push((
                "PUT",
                format!("/{coll}/{name}"),
                Some(json!({"path": "mine"})),
            ));
            cases.push(("DELETE", format!("/{coll}/{name}"), None));
        }
    }
    for coll in ["role", "roles", "Roles"] {
        for name in ["admin", "Admin", admin_role.as_str()] {
            cases.push((
                "POST",
                format!("/{coll}/{name}/permissions"),
                Some(json!({"permission": "get:/**"})),
            ));
            cases.push(("POST", format!("/{coll}/{name}/users/john"), None));
            cases.push(("DELETE", format!("/{coll}/{name}"), None));
        }
    }
    for coll in ["activity", "activities", "Activities"] {
        for id in [post.as_str(), up_post.as_str()] {
            cases.push((
                "PUT",
                format!("/{coll}/{id}"),
                Some(json!({"content": "hijacked"})),
            ));
            cases.push(("DELETE", format!("/{coll}/{id}"), None));
        }
    }
    for coll in ["device", "devices", "Devices"] {
        for id in ["janephone", "JANEPHONE", phone.as_str(), up_phone.as_str()] {
            cases.push((
                "PUT",
                format!("/{coll}/{id}"),
                Some(json!({"pushToken": "mine"})),
            ));
            cases.push(("DELETE", format!("/{coll}/{id}"), None));
        }
    }
    for coll in ["users", "user", "USERS", "us%65rs"] {
        for name in users {
            cases.push(("GET", format!("/{coll}/{name}/feed/{post}"), None));
            cases.push((
                "GET",
                format!("/{coll}/{name}/inbox/activities/{post}"),
                None,
            ));
            cases.push((
                "POST",
                format!("/{coll}/{name}/devices"),
                Some(json!({"name": "x"})),
            ));
            cases.push(("POST", format!("/{coll}/{name}/following/users/john"), None));
            cases.push(("DELETE", format!("/{coll}/{name}/devices/{phone}"), None));
            cases.push(("DELETE", format!("/{coll}/{name}"), None));
        }
    }
    let mut ws = f.socket(&f.john).await;
    for (i, (method, path, body)) in cases.iter().enumerate() {
        let (status, answer) = rest(method, &f.app_url(path), Some(&f.john), body.clone()).await;
        assert_eq!(status, 403, "REST {method} {path}: {answer}");
        // The socket takes decoded paths: the same alias, as a client would write it.
        let decoded = path
            .replace("%65", "e")
            .replace("%6F", "o")
            .replace("%61", "a");
        let r = ws
            .request(json!(i), method, &decoded, None, body.clone())
            .await;
        assert_eq!(r["status"], 403, "socket {method} {decoded}: {r}");
    }
    // Nothing moved.
    let (_, after) = rest(
        "GET",
        &f.app_url(&format!("/activities/{post}")),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(after["entities"][0]["content"], "mine");
    let (status, _) = rest(
        "GET",
        &f.app_url("/groups/staff"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest("GET", &f.app_url("/users/jane"), Some(&f.admin_token), None).await;
    assert_eq!(status, 200);
}

/// The second attacker's pass, rule 7 for bodies: the REST port holds at most
/// `--max-body-bytes-total` of request bodies at once, each reserving its length before it is
/// read, so many connections each sending a large upload slowly cannot exhaust memory; a GET
/// (no body) is never held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_held_at_once_are_bounded() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_body_bytes_total = 2 << 20;
    settings.max_asset_bytes = 1 << 20;
    settings.request_timeout_secs = 2;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let head = |n: usize| {
        format!(
            "POST /acme/shop/photos HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
             content-type: multipart/form-data; boundary=b\r\ncontent-length: {n}\r\n\r\n",
            f.john
        )
    };
    // Two uploads that never finish take the whole budget ...
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(f.server.http).await.expect("connect");
        c.write_all(head(1 << 20).as_bytes()).await.expect("head");
        c.write_all(b"--b\r\n").await.expect("a little");
        stalled.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... so a third is told to come back, at once.
    let started = Instant::now();
    let mut third = TcpStream::connect(f.server.http).await.expect("connect");
    third
        .write_all(head(1 << 20).as_bytes())
        .await
        .expect("head");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(
        Duration::from_secs(6),
        tokio::io::AsyncReadExt::read(&mut third, &mut answer),
    )
    .await
    .expect("an answer")
    .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("server_busy"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Requests without a body go on meanwhile, and a declared body over the limit is refused
    // before it is read.
    let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&f.john), None).await;
    assert_eq!(status, 200);
    let mut big = TcpStream::connect(f.server.http).await.expect("connect");
    big.write_all(head(2 << 20).as_bytes()).await.expect("head");
    let n = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut big, &mut answer),
    )
    .await
    .expect("an answer at once")
    .expect("read");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"));
    drop(stalled);
}

/// The fixture on a server whose budget of request bytes (each port's) is `bytes`, and the
/// server's data folder (keep it while the server runs).
async fn fixture_with_body_budget(bytes: usize) -> (Fixture, tempfile::TempDir) {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_body_bytes_total = bytes;
    (
        Fixture::on(TestServer::start_with(settings).await).await,
        temp,
    )
}

/// Waits (up to 10 s) until the server's sockets hold no request bytes and no unfinished
/// message (`gridsocket_socket_request_bytes` and `…_unfinished_bytes` on `/metrics`).
async fn no_request_bytes_held(server: &TestServer) {
    let metrics = server.url("/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(&metrics)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .expect("the gauge")
        };
        let held =
            gauge("gridsocket_socket_request_bytes") + gauge("gridsocket_socket_unfinished_bytes");
        if held == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{held} request bytes still held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same bound for sockets: the requests every socket holds (reads running or held behind
/// a write, writes running, also those whose socket is gone) count in one budget of
/// `--max-body-bytes-total` bytes. One socket pipelining large writes gets `503 server_busy`
/// for what would pass it, at once, and loses nothing: every request is answered once, and
/// exactly the answered 200s are stored. Writes left running by a socket that closed are
/// counted until they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_sockets_hold_at_once_are_bounded() {
    let (f, _data) = fixture_with_body_budget(64 << 10).await;
    let note = |id: usize| json!({"id": id, "method": "POST", "path": "/notes", "body": {"text": "n".repeat(20_000)}});
    let mut ws = f.socket(&f.john).await;
    let sent = 100;
    for id in 1..=sent {
        ws.send_json(&note(id)).await;
    }
    let (mut stored, mut busy) = (0, 0);
    for _ in 1..=sent {
        let answer = ws.recv().await;
        match answer["status"].as_u64() {
            Some(200) => stored += 1,
            Some(503) => {
                assert_eq!(answer["body"]["error"], json!("server_busy"), "{answer}");
                busy += 1;
            }
            _ => panic!("unexpected answer {answer}"),
        }
    }
    assert_eq!(stored + busy, sent);
    assert!(
        busy > 0,
        "100 writes of 20 KB never passed a budget of 64 KiB"
    );
    let (status, body) = rest("GET", &f.app_url("/notes?limit=1000"), Some(&f.john), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entities"].as_array().map(Vec::len), Some(stored));

    // Writes whose socket closes before their answers are counted until they end.
    let mut gone = f.socket(&f.john).await;
    for id in 1..=10 {
        gone.send_json(&note(id)).await;
    }
    gone.close().await;
    no_request_bytes_held(&f.server).await;
    // Nothing is held now: a write goes through.
    let answer = ws
        .request(
            json!(1),
            "POST",
            "/notes",
            None,
            Some(json!({"text": "again"})),
        )
        .await;
    assert_eq!(answer["status"], json!(200), "{answer}");
}

/// Messages sockets are still receiving count in a budget of the same size, apart: a client
/// that starts large messages and never ends them (answering pings meanwhile) cannot make the
/// server hold a frame's limit on every socket, nor take the requests' room. Past 64 KiB of
/// an unfinished message, while that budget is spent, the socket closes with 1013; a large
/// message that fits goes through, and the other sockets' requests go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_messages_count_in_the_budget_of_request_bytes() {
    let (f, _data) = fixture_with_body_budget(256 << 10).await;

    // 200 KB in one frame, under the budget: stored.
    let mut ws = f.socket(&f.john).await;
    let answer = ws
        .request(
            json!(1),
            "POST",
            "/notes",
            None,
            Some(json!({"text": "n".repeat(200_000)})),
        )
        .await;
    assert_eq!(answer["status"], json!(200), "{}", answer["body"]);

    // A frame that says 600,000 bytes, of which 300,000 come and the rest never do.
    let (mut raw, _) =
        tokio_tungstenite::connect_async(f.ws_url(&format!("?access_token={}", f.john)))
            .await
            .expect("handshake");
    assert!(matches!(raw.next().await, Some(Ok(Message::Text(_)))));
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = raw.get_mut() else {
        panic!("plain TCP expected");
    };
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&600_000u64.to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    tcp.write_all(&head).await.expect("frame head");
    tcp.write_all(&vec![b'x'; 300_000])
        .await
        .expect("half its payload");
    let close = tokio::time::timeout(Duration::from_secs(10), raw.next())
        .await
        .expect("the server answers");
    match close {
        Some(Ok(Message::Close(Some(c)))) => assert_eq!(u16::from(c.code), 1013),
        other => panic!("expected a close with 1013, got {other:?}"),
    }

    // Its bytes are given back, and the other socket goes on.
    no_request_bytes_held(&f.server).await;
    let answer = ws.request(json!(2), "GET", "/notes", None, None).await;
    assert_eq!(answer["status"], json!(200), "{}", answer["body"]);
}

/// `GET /users/{u}/token` hands out a user's token without the password (Usergrid's
/// `UserResource.getAccessToken`): only to the application's admins, never to a user (not even
/// for themself: a token is not traded for a longer one) nor a guest, over REST or a socket,
/// and a guest learns nothing about which users exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_application_admin_takes_a_users_token() {
    let f = Fixture::new().await;
    let me = f.app_url("/users/me");
    let whoami = |token: String| {
        let me = me.clone();
        async move {
            let (status, body) = rest("GET", &me, Some(&token), None).await;
            assert_eq!(status, 200, "{body}");
            body["entities"][0]["username"].clone()
        }
    };

    // The admin, and the app's client by its credentials, get a token that is the user's.
    let (status, body) = rest(
        "GET",
        &f.app_url("/users/jane/token?ttl=60000"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], json!(60), "{body}");
    assert_eq!(body["user"]["username"], json!("jane"), "{body}");
    let by_admin = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(whoami(by_admin).await, json!("jane"));
    let (id, secret) = &f.client;
    let (status, body) = rest(
        "GET",
        &f.app_url(&format!(
            "/users/jane/token?client_id={id}&client_secret={secret}"
        )),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let by_client = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(whoami(by_client).await, json!("jane"));
    let (status, body) = outcome(
        "GET",
        &f.app_url("/users/ghost/token"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = outcome(
        "GET",
        &f.app_url("/users/jane/token?ttl=soon"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!((status, body), (400, json!("illegal_argument")));

    // A user may not, for another or for themself; a guest may not, and is told nothing of
    // whether the user exists.
    for path in ["/users/jane/token", "/users/john/token", "/users/me/token"] {
        let (status, body) = rest("GET", &f.app_url(path), Some(&f.john), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["access_token"], Value::Null, "{path}: {body}");
    }
    for path in ["/users/jane/token", "/users/ghost/token"] {
        let (status, body) = rest("GET", &f.app_url(path), None, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["access_token"], Value::Null, "{path}: {body}");
    }

    // Over a socket, the same: the socket's caller is asked, not the frame.
    let mut ws = f.socket(&f.john).await;
    let answer = ask(&mut ws, "1", "GET", "/users/jane/token", None).await;
    assert_eq!(answer["status"], json!(403), "{answer}");
    assert_eq!(answer["body"]["access_token"], Value::Null, "{answer}");
    let mut ws = f.socket(&f.admin_token).await;
    let answer = ask(&mut ws, "2", "GET", "/users/jane/token", None).await;
    assert_eq!(answer["status"], json!(200), "{answer}");
    let by_socket = answer["body"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(whoami(by_socket).await, json!("jane"));

    // A disabled user gets no token this way either.
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/jane"),
        Some(&f.admin_token),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = outcome(
        "GET",
        &f.app_url("/users/jane/token"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!((status, body), (400, json!("invalid_grant")));
}
