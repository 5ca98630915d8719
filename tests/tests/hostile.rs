//! Hostile input over real sockets and REST: every case gets its own clear error, the socket
//! or the server survives it, and a well-behaved client on another connection sees nothing
//! of it (it keeps getting its events, in order, and its answers).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gridsocket_e2e::{Fixture, TestServer, WsClient, rest};
use gridsocket_server::Settings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bystander: subscribed to `/notes` before the attack, it must get every note posted
/// during it, in order, and still answer afterwards.
struct Bystander {
    ws: WsClient,
    posted: u64,
}

impl Bystander {
    async fn new(f: &Fixture) -> Bystander {
        let mut ws = f.socket(&f.jane).await;
        ws.subscribe(json!("watch"), "/notes", None, None).await;
        Bystander { ws, posted: 0 }
    }

    /// Posts a note through REST and checks that the bystander gets it next.
    async fn still_fine(&mut self, f: &Fixture, after: &str) {
        self.posted += 1;
        let (status, body) = rest(
            "POST",
            &f.app_url("/notes"),
            Some(&f.admin_token),
            Some(json!({"k": self.posted})),
        )
        .await;
        assert_eq!(status, 200, "the server still writes after {after}: {body}");
        let e = self.ws.next_event().await;
        assert_eq!(
            e["entity"]["k"], self.posted,
            "the bystander's events are whole and in order after {after}: {e}"
        );
    }
}

/// Sends one frame and expects an error answer with this status and code; then checks that the
/// socket still works.
async fn expect_error(ws: &mut WsClient, frame: &str, status: u16, error: &str) {
    ws.send_text(frame).await;
    let reply = ws.recv().await;
    let shown: String = frame.chars().take(80).collect();
    assert_eq!(reply["status"], status, "{shown}: {reply}");
    assert_eq!(reply["body"]["error"], error, "{shown}: {reply}");
    let ok = ws
        .request(json!("alive"), "GET", "/users/me", None, None)
        .await;
    assert_eq!(ok["status"], 200, "the socket still works after {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_get_clear_errors_and_nobody_else_notices() {
    let f = Fixture::new().await;
    let mut bystander = Bystander::new(&f).await;
    let mut ws = f.socket(&f.john).await;

    // Deeply nested JSON: refused by the parser's depth limit, not by a stack overflow.
    let deep = format!(
        r#"{{"id":1,"method":"POST","path":"/notes","body":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    expect_error(&mut ws, &deep, 400, "invalid_frame").await;
    bystander.still_fine(&f, "deep nesting").await;

    // Numbers out of range.
    let huge = r#"{"id":2,"method":"POST","path":"/notes","body":{"n":1e999}}"#;
    expect_error(&mut ws, huge, 400, "invalid_frame").await;
    let big_id = r#"{"id":1e999,"method":"GET","path":"/users/me"}"#;
    ws.send_text(big_id).await;
    assert_eq!(ws.recv().await["status"], 400);

    // Wrong types everywhere.
    for frame in [
        r#"{"id":3,"method":"POST","path":"/notes","body":"a string"}"#,
        r#"{"id":3,"method":"POST","path":"/notes","body":[1,2]}"#,
        r#"{"id":3,"method":"PUT","path":"/notes/x","body":42}"#,
    ] {
        ws.send_text(frame).await;
        let r = ws.recv().await;
        assert_eq!(r["status"], 400, "{frame}: {r}");
    }

    // Paths that try to leave the application.
    for path in [
        "/../management/orgs",
        "/users/../../management",
        "/users/%2e%2e/x",
        "/users/a%2Fb",
        "/users/a%00b",
    ] {
        let r = ws.request(json!(path), "GET", path, None, None).await;
        assert_eq!(r["status"], 400, "{path}: {r}");
        assert_eq!(r["body"]["error"], "illegal_argument", "{path}: {r}");
    }

    // SQL in names and values is data; the query language is parsed, never spliced. A name
    // cannot hold `;` or white space at all (security rule: names are never patterns).
    let evil = "x'; DROP TABLE entities; --";
    let r = ws
        .request(
            json!("sql0"),
            "POST",
            "/notes",
            None,
            Some(json!({"name": evil, "k": 0})),
        )
        .await;
    assert_eq!(r["status"], 400, "{r}");
    assert_eq!(r["body"]["error"], "illegal_argument", "{r}");
    let evil_name = "x'--DROP-TABLE-entities";
    let r = ws
        .request(
            json!("sql1"),
            "POST",
            "/notes",
            None,
            Some(json!({"name": evil_name, "title": evil, "k": 0})),
        )
        .await;
    assert_eq!(r["status"], 200, "{r}");
    let seen = bystander.ws.next_event().await;
    assert_eq!(seen["entity"]["name"], evil_name);
    assert_eq!(seen["entity"]["title"], evil);
    let r = ws
        .request(
            json!("sql2"),
            "GET",
            &format!("/notes/{}", urlencode(evil_name)),
            None,
            None,
        )
        .await;
    assert_eq!(r["status"], 200, "the name is found as written: {r}");
    for (ql, status) in [
        ("select * where name = 'x'' OR 1=1 --'", 400),
        ("select * where name = 'a' or 1=1", 400),
        ("select * where k = 0; DROP TABLE entities", 400),
        ("select * where name = 'nothing' or k > -1", 200),
        (
            &format!("select * where name = '{}'", "(".repeat(5_000)),
            200,
        ),
        (&"(".repeat(10_000), 400),
        (
            &format!("select * where {}", "k = 1 and ".repeat(5_000) + "k = 1"),
            400,
        ),
    ] {
        let r = ws
            .request(json!("ql"), "GET", "/notes", Some(json!({"ql": ql})), None)
            .await;
        let shown: String = ql.chars().take(60).collect();
        assert_eq!(r["status"], status, "{shown}: {r}");
        if status == 400 {
            assert_eq!(r["body"]["error"], "query_parse", "{shown}: {r}");
        }
    }
    bystander.still_fine(&f, "injection attempts").await;

    // Cursors that were never handed out.
    let huge_offset = URL_SAFE_NO_PAD.encode(format!("o:{}", u64::MAX));
    for cursor in ["%%%", "bm90IGEgY3Vyc29y", "", huge_offset.as_str()] {
        let r = ws
            .request(
                json!("cursor"),
                "GET",
                "/notes",
                Some(json!({"cursor": cursor})),
                None,
            )
            .await;
        assert!(
            r["status"] == 400 || (r["status"] == 200 && cursor.is_empty()),
            "cursor {cursor:?}: {r}"
        );
        if r["status"] == 400 {
            assert_eq!(r["body"]["error"], "illegal_argument", "{r}");
        }
    }

    // A token of this app used on another app's URL.
    let (status, body) = rest(
        "POST",
        &f.server.url("/management/orgs/acme/apps"),
        Some(&f.admin_token),
        Some(json!({"name": "other"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        "GET",
        &f.server.url("/acme/other/users"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let stranger = WsClient::connect(
        &f.server
            .ws_url(&format!("/acme/other?access_token={}", f.john)),
    )
    .await;
    let (frames, close) = stranger.expect("handshake").until_close().await;
    assert_eq!(frames[0]["status"], 401, "{frames:?}");
    assert_eq!(u16::from(close.expect("close").code), 4401);

    // Tampered tokens.
    let mut tampered = f.john.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let (status, body) = rest("GET", &f.app_url("/users/me"), Some(&tampered), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("auth_bad_access_token"))
    );
    let r = ws
        .request(
            json!("auth"),
            "AUTH",
            "/",
            None,
            Some(json!({"access_token": tampered})),
        )
        .await;
    assert_eq!(r["status"], 401, "{r}");
    bystander
        .still_fine(&f, "cross-app and tampered tokens")
        .await;

    let ok = ws
        .request(json!("end"), "GET", "/users/me", None, None)
        .await;
    assert_eq!(ok["status"], 200);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rest_bodies_and_urls_get_clear_errors() {
    let f = Fixture::new().await;
    let mut bystander = Bystander::new(&f).await;
    let client = reqwest::Client::new();
    let raw = |path: &str, body: Vec<u8>| {
        client
            .post(f.app_url(path))
            .bearer_auth(&f.admin_token)
            .header("content-type", "application/json")
            .body(body)
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    for (what, body) in [
        ("malformed JSON", b"{\"a\": ".to_vec()),
        ("truncated JSON", b"{\"name\": \"abc".to_vec()),
        (
            "invalid UTF-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        ("deep nesting", deep),
        ("huge number", b"{\"n\": 1e999}".to_vec()),
        ("a bare string", b"\"hello\"".to_vec()),
    ] {
        let resp = raw("/notes", body).send().await.expect("request");
        let status = resp.status().as_u16();
        let json: Value = resp.json().await.expect("a JSON error body");
        assert_eq!(status, 400, "{what}: {json}");
        assert!(json["error"].is_string(), "{what}: {json}");
        bystander.still_fine(&f, what).await;
    }
    for path in [
        "/users/..%2F..%2Fmanagement",
        "/users/%2e%2e",
        "/users/a%2fb",
        "/users/%00",
    ] {
        let (status, body) = rest("GET", &f.app_url(path), Some(&f.admin_token), None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "illegal_argument", "{path}: {body}");
    }
    let huge_offset = URL_SAFE_NO_PAD.encode(format!("o:{}", u64::MAX));
    let (status, body) = rest(
        "GET",
        &f.app_url(&format!("/notes?cursor={huge_offset}")),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    bystander.still_fine(&f, "hostile URLs").await;
}

/// A raw client: the WebSocket handshake by hand, then frames as written here, including
/// ones a library would never send.
struct RawSocket {
    tcp: TcpStream,
}

impl RawSocket {
    async fn connect(f: &Fixture, token: &str) -> RawSocket {
        let mut tcp = TcpStream::connect(f.server.ws).await.expect("connect");
        let req = format!(
            "GET /acme/shop?access_token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            f.server.ws
        );
        tcp.write_all(req.as_bytes()).await.expect("handshake");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.expect("handshake response");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut s = RawSocket { tcp };
        let welcome = s.read_frame().await.expect("welcome");
        assert_eq!(welcome.0, 1, "text");
        s
    }

    /// Writes one frame: FIN flag, opcode, payload, masked unless `masked` is false.
    async fn write_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n < 65_536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        if masked {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        self.tcp.write_all(&out).await.expect("write frame");
    }

    /// Reads one frame: `(opcode, payload)`, or `None` once the server closed the connection.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let mut h = [0u8; 2];
            self.tcp.read_exact(&mut h).await.ok()?;
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                self.tcp.read_exact(&mut b).await.ok()?;
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.tcp.read_exact(&mut b).await.ok()?;
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            self.tcp.read_exact(&mut payload).await.ok()?;
            Some((h[0] & 0x0f, payload))
        };
        tokio::time::timeout(gridsocket_e2e::WAIT, read)
            .await
            .expect("a frame or the end within the wait")
    }

    /// The next text frame as JSON (skipping pings).
    async fn next_json(&mut self) -> Value {
        loop {
            let (op, payload) = self.read_frame().await.expect("a frame");
            match op {
                1 => return serde_json::from_slice(&payload).expect("JSON"),
                9 | 10 => continue,
                8 => panic!("closed: {payload:?}"),
                other => panic!("unexpected opcode {other}"),
            }
        }
    }

    /// Reads until the close frame and returns its code.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some((op, payload)) = self.read_frame().await {
            if op == 8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_websocket_framing_closes_only_that_socket_with_the_right_code() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_frame_bytes = 64 * 1024;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let mut bystander = Bystander::new(&f).await;

    // A request split over fragments is put back together and answered.
    let mut s = RawSocket::connect(&f, &f.john).await;
    s.write_frame(false, 1, br#"{"id":1,"method":"GE"#, true)
        .await;
    s.write_frame(false, 0, br#"T","path":"/use"#, true).await;
    s.write_frame(true, 0, br#"rs/me"}"#, true).await;
    let r = s.next_json().await;
    assert_eq!(
        (r["id"].clone(), r["status"].clone()),
        (json!(1), json!(200)),
        "{r}"
    );

    // Invalid UTF-8 in a text frame: 1007.
    s.write_frame(true, 1, &[b'{', 0xff, 0xfe, b'}'], true)
        .await;
    assert_eq!(s.close_code().await, Some(1007));
    bystander.still_fine(&f, "invalid UTF-8").await;

    // Fragments that add up to more than the limit: 1009, without buffering them all.
    let mut s = RawSocket::connect(&f, &f.john).await;
    s.write_frame(false, 1, &vec![b' '; 40_000], true).await;
    s.write_frame(false, 0, &vec![b' '; 40_000], true).await;
    assert_eq!(s.close_code().await, Some(1009));
    bystander.still_fine(&f, "oversize fragments").await;

    // Protocol violations: 1002.
    for (what, fin, opcode, masked) in [
        ("a continuation with nothing to continue", true, 0u8, true),
        ("an unmasked client frame", true, 1, false),
        ("a reserved opcode", true, 3, true),
        ("a fragmented control frame", false, 9, true),
    ] {
        let mut s = RawSocket::connect(&f, &f.john).await;
        s.write_frame(fin, opcode, b"{}", masked).await;
        assert_eq!(s.close_code().await, Some(1002), "{what}");
        bystander.still_fine(&f, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_flood_is_refused_past_the_limit() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_subscriptions = 5;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let mut bystander = Bystander::new(&f).await;
    let mut ws = f.socket(&f.john).await;
    for i in 0..5 {
        ws.subscribe(json!(i), &format!("/notes{i}"), None, None)
            .await;
    }
    for i in 5..50 {
        ws.send_json(&json!({"id": i, "method": "SUBSCRIBE", "path": format!("/notes{i}")}))
            .await;
    }
    for i in 5..50 {
        let r = ws.response_to(&json!(i)).await;
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["body"]["error"], "too_many_subscriptions", "{r}");
    }
    bystander.still_fine(&f, "a subscription flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_gets_its_own_error_and_spares_everyone_else() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_connections_per_ip = 4;
    settings.max_requests_per_sec = 20;
    settings.max_entity_bytes = 2048;
    settings.max_query_terms = 3;
    settings.allowed_origins = vec!["https://app.example".into()];
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let mut bystander = Bystander::new(&f).await;
    let mut ws = f.socket(&f.john).await;

    // Entity size, over the socket and REST.
    let big = json!({"text": "x".repeat(3000)});
    let r = ws
        .request(json!("big"), "POST", "/notes", None, Some(big.clone()))
        .await;
    assert_eq!(
        (r["status"].clone(), r["body"]["error"].clone()),
        (json!(413), json!("entity_too_large")),
        "{r}"
    );
    let (status, body) = rest(
        "POST",
        &f.app_url("/notes"),
        Some(&f.admin_token),
        Some(big),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (413, json!("entity_too_large")),
        "{body}"
    );
    bystander.still_fine(&f, "an entity too large").await;

    // Query complexity.
    let ql = json!({"ql": "select * where a = 1 and b = 2 and c = 3 and d = 4"});
    let r = ws
        .request(json!("ql"), "GET", "/notes", Some(ql), None)
        .await;
    assert_eq!(
        (r["status"].clone(), r["body"]["error"].clone()),
        (json!(400), json!("query_parse")),
        "{r}"
    );
    assert!(
        r["body"]["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("3 comparisons")),
        "{r}"
    );
    let ql = json!({"ql": "select * where a = 1 and b = 2 and c = 3"});
    let r = ws
        .request(json!("ql3"), "GET", "/notes", Some(ql), None)
        .await;
    assert_eq!(r["status"], 200, "{r}");

    // Request rate: a burst past one second's worth is refused, not queued; later ones pass.
    for i in 0..40 {
        ws.send_json(&json!({"id": i, "method": "GET", "path": "/users/me"}))
            .await;
    }
    let mut limited = 0;
    for i in 0..40 {
        let r = ws.response_to(&json!(i)).await;
        if r["status"] == 429 {
            assert_eq!(r["body"]["error"], "rate_limited", "{r}");
            limited += 1;
        } else {
            assert_eq!(r["status"], 200, "{r}");
        }
    }
    assert!(limited >= 15, "{limited} of 40 refused at 20/s");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = ws
        .request(json!("after"), "GET", "/users/me", None, None)
        .await;
    assert_eq!(r["status"], 200, "{r}");
    bystander.still_fine(&f, "a request burst").await;

    // Connections per address: the bystander and `ws` hold two of four.
    let _third = f.socket(&f.john).await;
    let _fourth = f.socket(&f.john).await;
    let mut fifth = WsClient::connect(&f.ws_url(&format!("?access_token={}", f.john)))
        .await
        .expect("handshake");
    let (frames, close) = fifth.until_close().await;
    assert_eq!(
        frames[0]["body"]["error"], "too_many_connections_from_address",
        "{frames:?}"
    );
    assert_eq!(u16::from(close.expect("close").code), 1013);
    bystander
        .still_fine(&f, "too many sockets from one address")
        .await;
    drop(_fourth);

    // Origins: a browser page from elsewhere is refused at the handshake and on REST.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = f
        .ws_url(&format!("?access_token={}", f.john))
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    match WsClient::from_request(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
        }
        Err(other) => panic!("expected 403, got {other}"),
        Ok(_) => panic!("a foreign origin was let in"),
    }
    let resp = reqwest::Client::new()
        .get(f.app_url("/users/me"))
        .bearer_auth(&f.john)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 403);
    let resp = reqwest::Client::new()
        .get(f.app_url("/users/me"))
        .bearer_auth(&f.john)
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    bystander.still_fine(&f, "foreign origins").await;
}
