//! The exported `Session` under a wasm runtime (Node by default, through wasm-bindgen-test):
//! what crosses the boundary is what the package's JavaScript host expects. The host itself,
//! sockets included, is tested against the real server by `tests/node` and `tests/bundlers`.
#![cfg(target_arch = "wasm32")]

use gridsocket_core::Instant;
use gridsocket_wasm::Session;
use serde_json::{Value, json};
use std::time::Duration;
use wasm_bindgen_test::*;

fn events(s: &mut Session) -> Vec<Value> {
    std::iter::from_fn(|| s.event())
        .map(|e| serde_json::from_str(&e).expect("every event is JSON"))
        .collect()
}

fn frames(s: &mut Session) -> Vec<Value> {
    std::iter::from_fn(|| s.transmit())
        .map(|f| serde_json::from_str(&f).expect("every frame is JSON"))
        .collect()
}

#[wasm_bindgen_test]
fn a_request_waits_for_the_greeting_and_its_answer_comes_back_raw() {
    let mut s = Session::new(
        "ws://h/org/app",
        Some("t 1".into()),
        0.0,
        0.0,
        &[1, 2, 3, 4],
    );
    let got = events(&mut s);
    assert_eq!(got[0], json!({"t": "state", "state": "connecting"}));
    assert_eq!(
        got[1],
        json!({"t": "connect", "url": "ws://h/org/app?access_token=t%201"})
    );
    let id = s.request(
        "POST",
        "/books",
        None,
        Some(r#"{"name":"dune"}"#.into()),
        0.0,
    ) as u64;
    assert!(
        frames(&mut s).is_empty(),
        "queued until the socket is greeted"
    );
    s.opened();
    assert!(s.frame(
        r#"{"id":null,"status":200,"body":{"connected":true,"user":"u1","expires_in":60}}"#
    ));
    assert_eq!(s.state(), "open");
    let sent = frames(&mut s);
    assert_eq!(sent[0]["id"], id);
    assert_eq!(sent[0]["body"], json!({"name": "dune"}));
    assert!(
        sent[0]["write_id"]
            .as_str()
            .unwrap()
            .ends_with(&format!(".{id}"))
    );
    let reply = format!(r#"{{"id":{id},"status":200,"body":{{"entities":[{{"price":9.5}}]}}}}"#);
    assert!(s.frame(&reply));
    let got = events(&mut s);
    assert_eq!(got[0], json!({"t": "state", "state": "open"}));
    assert_eq!(
        got[1],
        json!({"t": "response", "id": id, "status": 200, "body": {"entities": [{"price": 9.5}]}})
    );
    // The token refresh is armed: a fifth of 60 s before expiry.
    assert!((47_000.0..=48_000.0).contains(&s.wait()), "{}", s.wait());
}

#[wasm_bindgen_test]
fn subscriptions_deliver_events_and_close_ends_everything() {
    let mut s = Session::new("ws://h/org/app", None, 5000.0, 1000.0, &[9]);
    events(&mut s);
    assert!(s.frame(r#"{"id":null,"status":200,"body":{"connected":true,"user":null}}"#));
    let sub = s.subscribe("/books", Some(r#"{"ql":"select *"}"#.into()), true, -1.0) as u64;
    let sent = frames(&mut s);
    assert_eq!(
        sent[0]["params"],
        json!({"snapshot": true, "ql": "select *"})
    );
    let confirm = format!(
        r#"{{"id":{},"status":200,"body":{{"subscription":"s1","seq":4,"snapshot":{{"count":0}}}}}}"#,
        sent[0]["id"]
    );
    assert!(s.frame(&confirm));
    assert!(s.frame(
        r#"{"event":"create","subscription":"s1","path":"/books","seq":5,"entity":{"name":"a\"b"}}"#
    ));
    let got = events(&mut s);
    assert!(got.contains(&json!({"t": "subscribed", "sub": sub, "seq": 4, "resumed": false, "snapshot": {"count": 0}})));
    assert!(got.contains(
        &json!({"t": "event", "sub": sub, "type": "create", "seq": 5, "entity": {"name": "a\"b"}})
    ));
    assert_eq!(s.last_seq(sub as f64), 5.0);
    assert!(!s.frame("not json"));
    let pending = s.request("GET", "/slow", None, None, 0.0) as u64;
    s.close();
    let got = events(&mut s);
    assert!(got.contains(&json!({"t": "failed", "id": pending, "code": "closed"})));
    assert!(got.contains(&json!({"t": "ended", "sub": sub, "code": "closed"})));
    assert!(got.contains(&json!({"t": "disconnect"})));
    assert_eq!(s.state(), "closed");
    assert!(s.wait() < 0.0);
}

#[wasm_bindgen_test]
fn a_failed_attempt_reconnects_and_timeouts_say_how_long() {
    let mut s = Session::new("ws://h/org/app", None, 0.0, 0.0, &[5, 6]);
    events(&mut s);
    assert!(s.frame(r#"{"id":null,"status":200,"body":{"connected":true}}"#));
    s.closed(-1.0);
    let got = events(&mut s);
    assert!(got.contains(&json!({"t": "state", "state": "reconnecting"})));
    let id = s.request("GET", "/a", None, None, 1.0) as u64;
    assert!(s.wait() <= 250.0);
    // A timeout of 1 ms has passed by the time the timer is checked again.
    let until = Instant::now() + Duration::from_millis(5);
    while Instant::now() < until {}
    s.timeout();
    let got = events(&mut s);
    assert!(
        got.contains(&json!({"t": "failed", "id": id, "code": "timeout", "ms": 1})),
        "{got:?}"
    );
}

#[wasm_bindgen_test]
fn presence_changes_syncs_and_broadcasts_cross_as_the_host_expects() {
    let mut s = Session::new("ws://h/org/app", None, 0.0, 0.0, &[3]);
    events(&mut s);
    assert!(s.frame(r#"{"id":null,"status":200,"body":{"connected":true,"user":"u1"}}"#));
    let sub = s.subscribe("/Groups/Lobby", None, false, -1.0) as u64;
    let p = s.presence("/groups/lobby", r#"{"status":"here"}"#) as u64;
    let sent = frames(&mut s);
    assert_eq!(sent[1]["method"], "PRESENCE");
    assert_eq!(sent[1]["body"], json!({"state": {"status": "here"}}));
    let confirm = format!(
        r#"{{"id":{},"status":200,"body":{{"subscription":"s1","path":"/Groups/Lobby","name":"/groups/lobby","seq":0}}}}"#,
        sent[0]["id"]
    );
    assert!(s.frame(&confirm));
    let snapshot = format!(
        r#"{{"id":{},"status":200,"body":{{"path":"/groups/lobby","seq":3,"epoch":"e","users":[{{"uuid":"u1","username":"ann","connections":[{{"state":{{"status":"here"}}}}]}}]}}}}"#,
        sent[1]["id"]
    );
    assert!(s.frame(&snapshot));
    let got = events(&mut s);
    let users =
        json!([{"uuid": "u1", "username": "ann", "connections": [{"state": {"status": "here"}}]}]);
    assert!(got.contains(
        &json!({"t": "presence", "p": p, "type": "join", "uuid": "u1",
        "username": "ann", "connections": [{"state": {"status": "here"}}]})
    ));
    assert!(got.contains(
        &json!({"t": "sync", "p": p, "reason": "join", "path": "/groups/lobby",
        "users": users})
    ));
    assert!(s.frame(
        r#"{"event":"presence","path":"/groups/lobby","kind":"join","seq":4,"epoch":"e","user":{"uuid":"u2","username":"bo\"b"},"connections":[{"state":{}}]}"#
    ));
    assert!(s.frame(
        r#"{"event":"broadcast","path":"/groups/lobby","from":{"uuid":"u2","username":"bob"},"body":{"typing":true}}"#
    ));
    let got = events(&mut s);
    assert_eq!(
        got,
        [
            json!({"t": "presence", "p": p, "type": "join", "uuid": "u2", "username": "bo\"b",
                "connections": [{"state": {}}]}),
            json!({"t": "broadcast", "path": "/groups/lobby", "from": {"uuid": "u2", "username": "bob"},
                "body": {"typing": true}, "subs": [sub], "presences": [p]}),
        ]
    );
    let id = s.broadcast("/groups/lobby", "1", true, 0.0) as u64;
    assert_eq!(frames(&mut s)[0]["params"], json!({"echo": true}));
    let leave = s.presence_leave(p as f64, 0.0) as u64;
    assert_eq!(frames(&mut s)[0]["body"], json!({"leave": true}));
    s.closed(-1.0);
    let got = events(&mut s);
    assert!(got.contains(&json!({"t": "failed", "id": id, "code": "disconnected"})));
    assert!(
        got.contains(&json!({"t": "response", "id": leave, "status": 200,
        "body": {"path": "/groups/lobby", "left": true}}))
    );
    let late = s.presence_update(p as f64, "{}", 0.0) as u64;
    assert!(events(&mut s).contains(&json!({"t": "failed", "id": late, "code": "not_present"})));
}
