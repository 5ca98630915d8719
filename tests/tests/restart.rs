//! Durability: data and tokens survive restarts, also `kill -9` of the real binary; SIGTERM
//! closes sockets with 1012.

use gridsocket_e2e::{Fixture, TestServer, WsClient, rest, server_binary};
use gridsocket_server::Settings;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_tokens_survive_a_restart() {
    let f = Fixture::new().await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.john),
        Some(json!({"name": "kept", "n": 1})),
    )
    .await;
    assert_eq!(status, 200);
    let john = f.john.clone();
    let temp = f.server.stop().await.expect("temp dir");
    let server = TestServer::start_with(Settings::ephemeral(temp.path().to_path_buf())).await;
    let url = server.url("/acme/shop/books/kept");
    let (status, body) = rest("GET", &url, Some(&john), None).await;
    assert_eq!(
        (status, body["entities"][0]["n"].clone()),
        (200, json!(1)),
        "{body}"
    );
    server.stop().await;
}

/// The real binary in a child process.
struct Proc {
    child: Child,
    http: String,
    ws: String,
}

fn spawn_server(dir: &std::path::Path, demo: bool) -> Proc {
    let mut cmd = Command::new(server_binary());
    cmd.args([
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--ws-addr",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if demo {
        cmd.arg("--demo");
    }
    let mut child = cmd.spawn().expect("spawn gridsocket");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut ws) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.expect("stdout line");
        if let Some(rest) = line.trim().strip_prefix("REST") {
            http = rest.trim().to_owned();
        }
        if let Some(rest) = line.trim().strip_prefix("WebSocket") {
            ws = rest.trim().to_owned();
            break;
        }
    }
    assert!(
        !http.is_empty() && !ws.is_empty(),
        "the server prints its addresses"
    );
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc { child, http, ws }
}

async fn demo_login(http: &str) -> String {
    let (status, body) = rest(
        "POST",
        &format!("{http}/demo/chatapp/token"),
        None,
        Some(json!({"grant_type": "password", "username": "johndoe", "password": "password"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    for round in 0..3 {
        let mut p = spawn_server(dir.path(), true);
        let token = demo_login(&p.http).await;
        // The app-only URL form works for the demo's default organization.
        let mut ws = WsClient::connect(&format!("{}/chatapp?access_token={token}", p.ws))
            .await
            .unwrap();
        let count = ws
            .request(
                json!("count"),
                "GET",
                "/notes",
                Some(json!({"limit": 1000})),
                None,
            )
            .await;
        assert_eq!(
            count["body"]["count"], total,
            "round {round}: every acknowledged write is there"
        );
        for i in 0..20 {
            let r = ws
                .request(
                    json!(i),
                    "POST",
                    "/notes",
                    None,
                    Some(json!({"round": round, "i": i})),
                )
                .await;
            assert_eq!(r["status"], 200);
            total += 1;
        }
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reaped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_with_1012_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_server(dir.path(), true);
    let token = demo_login(&p.http).await;
    let mut ws = WsClient::connect(&format!("{}/demo/chatapp?access_token={token}", p.ws))
        .await
        .unwrap();
    assert_eq!(
        ws.request(json!(1), "GET", "/users/me", None, None).await["status"],
        200
    );
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (_, close) = ws.until_close().await;
    assert_eq!(u16::from(close.expect("close frame").code), 1012);
    let exit = p.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_seeding_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let server = TestServer::start_with({
            let mut s = Settings::ephemeral(dir.path().to_path_buf());
            s.demo = true;
            s
        })
        .await;
        let token = demo_login(&format!("http://{}", server.http)).await;
        let (status, body) = rest(
            "GET",
            &server.url("/chatapp/groups/lobby/users"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!((status, body["count"].clone()), (200, json!(4)), "{body}");
        server.stop().await;
    }
}

/// `serve --demo` advertises the demo page only where it serves one. Started from a folder
/// without `web-demo/`, it finds the page of the source tree it was built from; pointed at a
/// folder without a page, it says so on stderr and prints no demo URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_is_advertised_only_where_it_is_served() {
    for (demo_dir, served) in [(None, true), (Some("/nonexistent/web-demo"), false)] {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(server_binary());
        cmd.args(["serve", "--demo", "--http-addr", "127.0.0.1:0"])
            .args(["--ws-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .current_dir(elsewhere.path())
            .env("RUST_LOG", "warn")
            .env_remove("GRIDSOCKET_DEMO_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = demo_dir {
            cmd.args(["--demo-dir", dir]);
        }
        let mut child = cmd.spawn().expect("spawn gridsocket");
        let stdout = child.stdout.take().expect("stdout");
        let mut banner = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("stdout line");
            let last = line.trim_start().starts_with("Admin:");
            banner.push(line);
            if last {
                break;
            }
        }
        let http = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("REST"))
            .map(|a| a.trim().to_owned())
            .expect("the REST address");
        let advertised = banner
            .iter()
            .any(|l| l.trim_start().starts_with("Demo ") && l.trim_end().ends_with("/demo/"));
        let page = reqwest::get(format!("{http}/demo/"))
            .await
            .expect("GET /demo/");
        let status = page.status().as_u16();
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        let banner = banner.join("\n");
        if served {
            assert!(advertised, "{banner}");
            assert_eq!(status, 200, "the advertised page is served");
        } else {
            assert!(!advertised, "{banner}");
            assert_eq!(status, 404);
            assert!(stderr.contains("the demo page is not served"), "{stderr}");
        }
    }
}

/// SIGTERM drains each socket: the writes it has in flight are answered before its 1012, and
/// their answers are remembered, so a client that sends them again to the restarted server
/// gets the same answers. An operator found the process gone 5 ms after SIGTERM, with 136 of
/// 200 pipelined writes unanswered, 56 of them applied, and every repeat `409
/// write_in_progress` for an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_writes_in_flight_before_1012_and_remembers_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_server(dir.path(), true);
    let token = demo_login(&p.http).await;
    let app = format!("{}/demo/chatapp?access_token={token}", p.ws);
    let mut ws = WsClient::connect(&app).await.unwrap();
    let _ = ws.request(json!(0), "GET", "/users/me", None, None).await;
    // Another writer holds the database for 1.5 s: the writes below are in flight when the
    // server is told to stop.
    let db = dir.path().join("gridsocket.db");
    let (locked, held) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).expect("open the database");
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("the write lock");
        locked.send(()).expect("say so");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        conn.execute_batch("COMMIT").expect("let go");
    });
    held.recv().expect("held");
    const N: u64 = 20;
    let frame = |i: u64| {
        json!({"id": i + 1, "method": "POST", "path": "/drained",
               "body": {"name": format!("d{i}")}, "write_id": format!("w{i}")})
    };
    for i in 0..N {
        ws.send_json(&frame(i)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (frames, close) = ws.until_close().await;
    holder.join().expect("the other writer");
    let answers: Vec<_> = frames.iter().filter(|f| f["id"] != json!(null)).collect();
    assert_eq!(answers.len() as u64, N, "every write answered: {frames:?}");
    assert!(answers.iter().all(|a| a["status"] == 200), "{answers:?}");
    assert_eq!(u16::from(close.expect("a close frame").code), 1012);
    assert!(p.child.wait().unwrap().success());

    // The restarted server answers each repeat with its first answer.
    let mut p = spawn_server(dir.path(), true);
    let token = demo_login(&p.http).await;
    let mut ws = WsClient::connect(&format!("{}/demo/chatapp?access_token={token}", p.ws))
        .await
        .unwrap();
    for i in 0..N {
        ws.send_json(&frame(i)).await;
        let again = ws.response_to(&json!(i + 1)).await;
        let first = answers
            .iter()
            .find(|a| a["id"] == json!(i + 1))
            .expect("first");
        assert_eq!(again["body"], first["body"], "w{i}: {again}");
    }
    let (status, body) = rest(
        "GET",
        &format!("{}/demo/chatapp/drained?limit=100", p.http),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entities"].as_array().map(Vec::len), Some(N as usize));
    p.child.kill().expect("SIGKILL");
    p.child.wait().expect("reaped");
}
