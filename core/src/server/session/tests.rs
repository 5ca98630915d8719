//! Deterministic tests of the server session: frames in, frames and work out, simulated time.

use super::*;
use crate::wire::{Method, PresenceAction};
use serde_json::{Value, json};

// Any origin will do: every later instant is derived from it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn config() -> ServerConfig {
    ServerConfig {
        max_frame_len: 200,
        max_in_flight: 2,
        request_timeout: Duration::from_secs(5),
        max_subscriptions: 3,
        max_subscription_bytes: 100,
        max_queued_events: 4,
        ping_interval: Some(Duration::from_secs(20)),
        auth_grace: Duration::from_secs(10),
        max_requests_per_sec: None,
        max_broadcast_bytes: 64,
        max_broadcasts_per_sec: Some(2),
    }
}

fn session() -> (ServerSession, Instant) {
    let now = origin();
    (ServerSession::accept(config(), now), now)
}

fn text(s: &mut ServerSession) -> Value {
    match s.poll_transmit() {
        Some(f) if f.text().is_some() => serde_json::from_str(f.text().unwrap()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

fn request(s: &mut ServerSession) -> (RequestHandle, ApiRequest) {
    match s.poll_event() {
        Some(ServerEvent::Request {
            handle, request, ..
        }) => (handle, request),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn subscribe(
    s: &mut ServerSession,
    now: Instant,
    id: u32,
    path: &str,
) -> (RequestHandle, SubscriptionId) {
    s.handle_text(
        now,
        &format!(r#"{{"id":{id},"method":"SUBSCRIBE","path":"{path}"}}"#),
    );
    match s.poll_event() {
        Some(ServerEvent::Subscribe {
            handle,
            subscription,
            ..
        }) => (handle, subscription),
        other => panic!("expected a subscribe, got {other:?}"),
    }
}

fn event(seq: u64) -> Arc<str> {
    json!({"event": "create", "subscription": "s1", "seq": seq})
        .to_string()
        .into()
}

fn drain(s: &mut ServerSession) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(f) = s.poll_transmit() {
        if let Some(t) = f.text() {
            out.push(serde_json::from_str(t).unwrap());
        }
    }
    out
}

#[test]
fn correlates_out_of_order_responses() {
    let (mut s, now) = session();
    s.handle_text(now, r#"{"id":1,"method":"GET","path":"/a"}"#);
    s.handle_text(
        now,
        r#"{"id":"two","method":"POST","path":"/b","body":{"x":1}}"#,
    );
    let (h1, r1) = request(&mut s);
    let (h2, r2) = request(&mut s);
    assert_eq!(r1.method, Method::Get);
    assert_eq!(r2.body, Some(json!({"x":1})));
    assert!(s.poll_transmit().is_none());
    assert!(s.complete(now, h2, 201, r#"{"ok":2}"#));
    assert!(s.complete(now, h1, 200, r#"{"ok":1}"#));
    let a = text(&mut s);
    assert_eq!(
        (a["id"].clone(), a["status"].clone()),
        ("two".into(), 201.into())
    );
    let b = text(&mut s);
    assert_eq!(
        (b["id"].clone(), b["body"]["ok"].clone()),
        (1.into(), 1.into())
    );
    assert!(!s.complete(now, h1, 200, "{}"), "a handle completes once");
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn bad_frames_are_answered_and_the_session_survives() {
    let (mut s, now) = session();
    for bad in [
        "nope",
        "[]",
        r#"{"id":3}"#,
        r#"{"id":4,"method":"FLY","path":"/"}"#,
    ] {
        s.handle_text(now, bad);
        let v = text(&mut s);
        assert_eq!(v["status"], 400, "{bad}");
        assert_eq!(v["body"]["error"], "invalid_frame");
    }
    s.handle_binary(now, 3);
    assert_eq!(text(&mut s)["body"]["error"], "invalid_frame");
    assert!(!s.is_closed());
    s.handle_text(now, r#"{"id":5,"method":"GET","path":"/a"}"#);
    let _ = request(&mut s);
}

#[test]
fn limits_in_flight_requests() {
    let (mut s, now) = session();
    for id in 0..3 {
        s.handle_text(now, &format!(r#"{{"id":{id},"method":"GET","path":"/a"}}"#));
    }
    let (h0, _) = request(&mut s);
    let _ = request(&mut s);
    assert!(s.poll_event().is_none());
    let v = text(&mut s);
    assert_eq!(
        (v["id"].clone(), v["status"].clone()),
        (2.into(), 429.into())
    );
    assert!(s.complete(now, h0, 200, "{}"));
    s.handle_text(now, r#"{"id":9,"method":"GET","path":"/a"}"#);
    let _ = request(&mut s);
}

#[test]
fn oversize_frames_close_with_1009() {
    let (mut s, now) = session();
    s.handle_text(now, &"x".repeat(201));
    assert!(matches!(
        s.poll_transmit(),
        Some(OutFrame::Close { code: 1009, .. })
    ));
    assert!(s.is_closed());
    s.handle_text(now, r#"{"id":1,"method":"GET","path":"/a"}"#);
    assert!(s.poll_event().is_none());
}

#[test]
fn requests_time_out_in_simulated_time() {
    let (mut s, now) = session();
    s.handle_text(now, r#"{"id":1,"method":"GET","path":"/a"}"#);
    let (h, _) = request(&mut s);
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(5));
    s.handle_timeout(deadline - Duration::from_millis(1));
    assert!(s.poll_transmit().is_none());
    s.handle_timeout(deadline);
    let v = text(&mut s);
    assert_eq!(v["status"], 504);
    assert_eq!(v["body"]["error"], "request_timeout");
    assert!(!s.complete(deadline, h, 200, "{}"));
}

#[test]
fn rejected_handshake_sends_one_error_then_closes() {
    let now = origin();
    let mut s = ServerSession::reject(
        ServerConfig::default(),
        now,
        401,
        r#"{"error":"auth_bad_access_token"}"#,
        close_code::UNAUTHORIZED,
    );
    let v = text(&mut s);
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["status"], 401);
    assert!(matches!(
        s.poll_transmit(),
        Some(OutFrame::Close { code: 4401, .. })
    ));
    assert!(s.is_closed());
}

#[test]
fn events_wait_for_the_confirmation_and_arrive_once_in_order() {
    let (mut s, now) = session();
    let (h, sub) = subscribe(&mut s, now, 7, "/books");
    assert_eq!(sub.to_string(), "s1");
    // Live events race ahead of the confirmation: they wait.
    s.handle_push(now, sub, 12, event(12));
    s.handle_push(now, sub, 13, event(13));
    assert!(s.poll_transmit().is_none());
    // Resume from 9: the replay covers 10..=12; 12 is also live, and is sent once.
    let replay = vec![(10, event(10)), (11, event(11)), (12, event(12))];
    assert!(s.confirm_subscription(now, h, 9, r#"{"subscription":"s1","seq":12}"#, replay));
    let frames = drain(&mut s);
    assert_eq!(frames[0]["id"], 7);
    assert_eq!(frames[0]["body"]["subscription"], "s1");
    let seqs: Vec<u64> = frames[1..]
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [10, 11, 12, 13]);
    // Old and repeated events are dropped; new ones pass.
    s.handle_push(now, sub, 13, event(13));
    s.handle_push(now, sub, 5, event(5));
    s.handle_push(now, sub, 14, event(14));
    let seqs: Vec<u64> = drain(&mut s)
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [14]);
}

#[test]
fn unsubscribe_by_id_or_path_and_limits() {
    let (mut s, now) = session();
    let (h1, s1) = subscribe(&mut s, now, 1, "/books");
    let (h2, s2) = subscribe(&mut s, now, 2, "/users/me");
    assert!(s.confirm_subscription(now, h1, 0, "{}", vec![]));
    assert!(s.confirm_subscription(now, h2, 0, "{}", vec![]));
    drain(&mut s);
    s.handle_text(now, r#"{"id":3,"method":"UNSUBSCRIBE","path":"/Books/"}"#);
    assert_eq!(
        s.poll_event(),
        Some(ServerEvent::Unsubscribed { subscription: s1 })
    );
    let v = text(&mut s);
    assert_eq!(
        (v["status"].clone(), v["body"]["unsubscribed"].clone()),
        (json!(200), json!(["s1"]))
    );
    s.handle_push(now, s1, 1, event(1));
    assert!(s.poll_transmit().is_none(), "no events after unsubscribing");
    s.handle_text(
        now,
        r#"{"id":4,"method":"UNSUBSCRIBE","subscription":"s9"}"#,
    );
    assert_eq!(text(&mut s)["status"], 404);
    s.handle_text(
        now,
        &format!(r#"{{"id":5,"method":"UNSUBSCRIBE","subscription":"{s2}"}}"#),
    );
    assert_eq!(
        s.poll_event(),
        Some(ServerEvent::Unsubscribed { subscription: s2 })
    );
    assert_eq!(text(&mut s)["status"], 200);
    assert_eq!(s.subscriptions(), 0);
    for i in 0..3 {
        let (h, _) = subscribe(&mut s, now, 10 + i, "/a");
        assert!(s.confirm_subscription(now, h, 0, "{}", vec![]));
    }
    drain(&mut s);
    s.handle_text(now, r#"{"id":20,"method":"SUBSCRIBE","path":"/b"}"#);
    let v = text(&mut s);
    assert_eq!(
        (v["status"].clone(), v["body"]["error"].clone()),
        (json!(429), json!("too_many_subscriptions"))
    );
}

/// The filters a socket's subscriptions keep are bounded in bytes, not only in number: what
/// one subscription holds is its path and parameters, and past the socket's budget (100
/// bytes here) a subscription is refused until others end.
#[test]
fn subscriptions_hold_at_most_their_budget_of_path_and_parameter_bytes() {
    let (mut s, now) = session();
    let ql = format!("select * where a = '{}'", "x".repeat(40));
    let with_ql = |id: u32, path: &str| {
        format!(r#"{{"id":{id},"method":"SUBSCRIBE","path":"{path}","params":{{"ql":"{ql}"}}}}"#)
    };
    // "/a", and "ql" with its 61 bytes: 65 of the 100.
    s.handle_text(now, &with_ql(1, "/a"));
    let Some(ServerEvent::Subscribe {
        handle,
        subscription: first,
        ..
    }) = s.poll_event()
    else {
        panic!("the first subscription did not start");
    };
    assert!(s.confirm_subscription(now, handle, 0, "{}", vec![]));
    drain(&mut s);
    // As much again would pass it, and is refused; nothing reaches the host.
    s.handle_text(now, &with_ql(2, "/b"));
    let v = text(&mut s);
    assert_eq!(
        (
            v["id"].clone(),
            v["status"].clone(),
            v["body"]["error"].clone()
        ),
        (json!(2), json!(429), json!("too_many_subscriptions"))
    );
    assert!(s.poll_event().is_none());
    assert_eq!(s.subscriptions(), 1);
    // A small one still fits beside it.
    let (h, _) = subscribe(&mut s, now, 3, "/users/jane/feed");
    assert!(s.confirm_subscription(now, h, 0, "{}", vec![]));
    drain(&mut s);
    // Once the first ends, its bytes are free again.
    s.handle_text(
        now,
        &format!(r#"{{"id":4,"method":"UNSUBSCRIBE","subscription":"{first}"}}"#),
    );
    assert_eq!(
        s.poll_event(),
        Some(ServerEvent::Unsubscribed {
            subscription: first
        })
    );
    drain(&mut s);
    s.handle_text(now, &with_ql(5, "/b"));
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Subscribe { .. })
    ));
}

#[test]
fn a_refused_subscription_ends_and_the_host_is_told() {
    let (mut s, now) = session();
    let (h, sub) = subscribe(&mut s, now, 1, "/users/jane/feed");
    s.handle_push(now, sub, 3, event(3));
    assert!(s.complete(now, h, 403, r#"{"error":"forbidden"}"#));
    assert_eq!(
        s.poll_event(),
        Some(ServerEvent::Unsubscribed { subscription: sub })
    );
    assert_eq!(text(&mut s)["status"], 403);
    assert!(
        s.poll_transmit().is_none(),
        "buffered events of a refused subscription are dropped"
    );
}

#[test]
fn a_pending_subscription_that_buffers_too_much_closes_with_4008() {
    let (mut s, now) = session();
    let (_, sub) = subscribe(&mut s, now, 1, "/books");
    for seq in 1..=4 {
        s.handle_push(now, sub, seq, event(seq));
    }
    assert!(!s.is_closed());
    s.handle_push(now, sub, 5, event(5));
    assert!(s.is_closed());
    assert!(matches!(
        s.poll_transmit(),
        Some(OutFrame::Close { code: 4008, .. })
    ));
}

#[test]
fn revoked_subscriptions_say_why_and_go_quiet() {
    let (mut s, now) = session();
    let (h, sub) = subscribe(&mut s, now, 1, "/books");
    assert!(s.confirm_subscription(now, h, 0, "{}", vec![]));
    drain(&mut s);
    s.revoke(now, sub, "forbidden");
    let v = text(&mut s);
    assert_eq!(
        v,
        json!({"event": "revoked", "subscription": "s1", "path": "/books", "reason": "forbidden"})
    );
    assert_eq!(
        s.poll_event(),
        Some(ServerEvent::Unsubscribed { subscription: sub })
    );
    s.handle_push(now, sub, 1, event(1));
    assert!(s.poll_transmit().is_none());
}

#[test]
fn connecting_to_a_resource_subscribes_with_a_null_id() {
    let (mut s, now) = session();
    s.subscribe_on_connect(now, "/users/john/inbox".into(), Params::new());
    let Some(ServerEvent::Subscribe { handle, path, .. }) = s.poll_event() else {
        panic!("a subscribe")
    };
    assert_eq!(path, "/users/john/inbox");
    assert!(s.confirm_subscription(now, handle, 4, r#"{"subscription":"s1"}"#, vec![]));
    let v = text(&mut s);
    assert_eq!(
        (v["id"].clone(), v["status"].clone()),
        (Value::Null, json!(200))
    );
}

#[test]
fn a_resource_urls_since_resumes_and_one_that_cannot_be_read_refuses_the_connection() {
    let (mut s, now) = session();
    let mut params = Params::new();
    params.push("since", "41");
    params.push("ql", "select *");
    s.subscribe_on_connect(now, "/users/john/inbox".into(), params);
    let Some(ServerEvent::Subscribe { since, params, .. }) = s.poll_event() else {
        panic!("a subscribe")
    };
    assert_eq!(since, Some(41));
    assert_eq!(params.get("since"), None, "taken out of the parameters");
    assert_eq!(params.get("ql"), Some("select *"));
    for bad in [
        &["-1"][..],
        &["abc"],
        &["1e400"],
        &[""],
        &["99999999999999999999"],
        &["1", "2"],
    ] {
        let (mut s, now) = session();
        let mut params = Params::new();
        for v in bad {
            params.push("since", *v);
        }
        s.subscribe_on_connect(now, "/users/john/inbox".into(), params);
        assert!(s.poll_event().is_none(), "nothing starts for {bad:?}");
        let v = text(&mut s);
        assert_eq!(
            (
                v["id"].clone(),
                v["status"].clone(),
                v["body"]["error"].clone()
            ),
            (Value::Null, json!(400), json!("illegal_argument")),
            "{bad:?}"
        );
        match s.poll_transmit() {
            Some(OutFrame::Close { code, .. }) => assert_eq!(code, 4400, "{bad:?}"),
            other => panic!("a close for {bad:?}, not {other:?}"),
        }
    }
}

#[test]
fn a_resource_url_whose_subscription_cannot_start_refuses_the_connection() {
    for (status, code) in [(404, 4404), (403, 4401), (400, 4400), (503, 1013)] {
        let (mut s, now) = session();
        s.subscribe_on_connect(now, "/users/nobody/inbox".into(), Params::new());
        let Some(ServerEvent::Subscribe { handle, .. }) = s.poll_event() else {
            panic!("a subscribe")
        };
        assert!(s.complete(now, handle, status, r#"{"error":"x"}"#));
        let v = text(&mut s);
        assert_eq!(
            (v["id"].clone(), v["status"].clone()),
            (Value::Null, json!(status))
        );
        match s.poll_transmit() {
            Some(OutFrame::Close { code: c, .. }) => assert_eq!(c, code, "after {status}"),
            other => panic!("a close after {status}, not {other:?}"),
        }
        assert!(s.is_closed());
    }
    // A SUBSCRIBE sent later that fails leaves the socket open.
    let (mut s, now) = session();
    s.handle_text(
        now,
        r#"{"id":1,"method":"SUBSCRIBE","path":"/users/nobody/inbox"}"#,
    );
    let Some(ServerEvent::Subscribe { handle, .. }) = s.poll_event() else {
        panic!("a subscribe")
    };
    assert!(s.complete(now, handle, 404, r#"{"error":"x"}"#));
    assert_eq!(text(&mut s)["status"], 404);
    assert!(s.poll_transmit().is_none());
    assert!(!s.is_closed());
}

#[test]
fn expired_tokens_get_a_grace_period_and_auth_renews() {
    let (mut s, now) = session();
    let expiry = now + Duration::from_secs(60);
    s.set_token_expiry(now, Some(expiry));
    s.handle_pong(expiry - Duration::from_secs(1));
    assert_eq!(s.poll_timeout(), Some(expiry));
    s.handle_timeout(expiry);
    let v = text(&mut s);
    assert_eq!(
        (v["status"].clone(), v["body"]["error"].clone()),
        (json!(401), json!("expired_token"))
    );
    assert_eq!(s.poll_timeout(), Some(expiry + Duration::from_secs(10)));
    // AUTH arrives in time: the host validates it and sets the new expiry.
    s.handle_text(
        expiry + Duration::from_secs(5),
        r#"{"id":"a","method":"AUTH","body":{"access_token":"new"}}"#,
    );
    let Some(ServerEvent::Auth {
        handle,
        access_token,
    }) = s.poll_event()
    else {
        panic!("an AUTH")
    };
    assert_eq!(access_token, "new");
    s.set_token_expiry(expiry, Some(expiry + Duration::from_secs(3600)));
    assert!(s.complete(expiry, handle, 200, "{}"));
    drain(&mut s);
    s.handle_timeout(expiry + Duration::from_secs(11));
    assert!(!s.is_closed());
    // Without AUTH the socket closes with 4401 after the grace period.
    let (mut s, now) = session();
    s.set_token_expiry(now, Some(now));
    s.handle_timeout(now);
    drain(&mut s);
    s.handle_timeout(now + Duration::from_secs(10));
    assert!(s.is_closed());
    assert!(matches!(
        s.poll_transmit(),
        Some(OutFrame::Close { code: 4401, .. })
    ));
}

#[test]
fn idle_sockets_are_pinged_then_closed_when_silent() {
    let (mut s, now) = session();
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(20)));
    s.handle_timeout(now + Duration::from_secs(20));
    assert_eq!(s.poll_transmit(), Some(OutFrame::Ping));
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(40)));
    // A pong resets the clock.
    s.handle_pong(now + Duration::from_secs(21));
    s.handle_timeout(now + Duration::from_secs(40));
    assert!(!s.is_closed());
    assert_eq!(s.poll_transmit(), None);
    s.handle_timeout(now + Duration::from_secs(41));
    assert_eq!(s.poll_transmit(), Some(OutFrame::Ping));
    s.handle_timeout(now + Duration::from_secs(61));
    assert!(s.is_closed());
    assert!(matches!(
        s.poll_transmit(),
        Some(OutFrame::Close { code: 1001, .. })
    ));
}

fn roomy() -> (ServerSession, Instant) {
    let now = origin();
    let config = ServerConfig {
        max_in_flight: 8,
        ..config()
    };
    (ServerSession::accept(config, now), now)
}

fn send(s: &mut ServerSession, now: Instant, id: u32, method: &str, path: &str) {
    s.handle_text(
        now,
        &format!(r#"{{"id":{id},"method":"{method}","path":"{path}"}}"#),
    );
}

#[test]
fn a_read_waits_for_the_writes_sent_before_it() {
    let (mut s, now) = roomy();
    send(&mut s, now, 1, "POST", "/books");
    send(&mut s, now, 2, "GET", "/books");
    send(&mut s, now, 3, "PUT", "/books/dune");
    let (post, _) = request(&mut s);
    let (put, req) = request(&mut s);
    assert_eq!(req.method, Method::Put);
    // The GET is held: the POST before it is still running.
    assert!(s.poll_event().is_none());
    // The PUT came after the GET: finishing it releases nothing.
    assert!(s.complete(now, put, 200, "{}"));
    assert!(s.poll_event().is_none());
    assert!(s.complete(now, post, 200, "{}"));
    let (_, read) = request(&mut s);
    assert_eq!((read.method, read.path.as_str()), (Method::Get, "/books"));
    assert!(s.poll_event().is_none());
}

#[test]
fn reads_with_no_write_before_them_run_at_once_and_together() {
    let (mut s, now) = roomy();
    send(&mut s, now, 1, "GET", "/books");
    send(&mut s, now, 2, "GET", "/users/me");
    send(&mut s, now, 3, "POST", "/books");
    let paths: Vec<String> = (0..3).map(|_| request(&mut s).1.path).collect();
    assert_eq!(paths, ["/books", "/users/me", "/books"]);
}

#[test]
fn a_queue_read_counts_as_a_write() {
    let (mut s, now) = roomy();
    send(&mut s, now, 1, "GET", "/queues/jobs");
    send(&mut s, now, 2, "GET", "/books");
    let (queue_read, _) = request(&mut s);
    assert!(s.poll_event().is_none());
    assert!(s.complete(now, queue_read, 200, "{}"));
    assert_eq!(request(&mut s).1.path, "/books");
}

#[test]
fn a_held_read_that_times_out_is_answered_504_and_never_started() {
    let (mut s, now) = roomy();
    send(&mut s, now, 1, "POST", "/books");
    let (post, _) = request(&mut s);
    let later = now + Duration::from_secs(1);
    send(&mut s, later, 2, "GET", "/books");
    // The POST times out first (it is older); the read is still held behind nothing, so it
    // is released then and answered 504 when its own deadline passes.
    s.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(text(&mut s)["id"], json!(1));
    assert!(!s.complete(now, post, 200, "{}"));
    let (read, _) = request(&mut s);
    s.handle_timeout(later + Duration::from_secs(5));
    let answer = text(&mut s);
    assert_eq!(
        (answer["id"].clone(), answer["status"].clone()),
        (json!(2), json!(504))
    );
    assert!(!s.complete(later, read, 200, "{}"));
}

#[test]
fn a_write_and_the_read_held_behind_it_timing_out_together_hand_the_host_nothing() {
    let (mut s, now) = roomy();
    send(&mut s, now, 1, "POST", "/books");
    let (post, _) = request(&mut s);
    send(&mut s, now + Duration::from_millis(1), 2, "GET", "/books");
    // Both pass their deadlines together: the POST's 504, then the GET's.
    s.handle_timeout(now + Duration::from_secs(6));
    let ids: Vec<Value> = drain(&mut s).into_iter().map(|v| v["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2)]);
    // The GET was answered already: nothing is handed to the host for it.
    assert!(s.poll_event().is_none());
    assert!(!s.complete(now, post, 200, "{}"));
    assert!(s.poll_event().is_none());
}

#[test]
fn a_read_counts_its_frame_until_it_is_answered_and_a_write_hands_its_to_the_host() {
    let (mut s, now) = roomy();
    let post = r#"{"id":1,"method":"POST","path":"/books","body":{"title":"Dune"}}"#;
    let get = r#"{"id":2,"method":"GET","path":"/books"}"#;
    let get_too = r#"{"id":3,"method":"GET","path":"/books/dune"}"#;
    s.handle_text(now, post);
    s.handle_text(now, get);
    s.handle_text(now, get_too);
    // The write's bytes go to the host with it; the reads' stay counted here, held or not.
    let Some(ServerEvent::Request { handle, bytes, .. }) = s.poll_event() else {
        panic!("expected the write");
    };
    assert_eq!(bytes, post.len());
    assert_eq!(s.read_bytes(), get.len() + get_too.len());
    assert!(s.complete(now, handle, 200, "{}"));
    let Some(ServerEvent::Request {
        handle: read,
        bytes,
        ..
    }) = s.poll_event()
    else {
        panic!("expected the first read, released");
    };
    assert_eq!(bytes, get.len());
    assert!(s.complete(now, read, 200, "{}"));
    assert_eq!(s.read_bytes(), get_too.len());
    // A read that times out is no longer counted; nor is anything once the peer is gone.
    s.handle_timeout(now + Duration::from_secs(6));
    assert_eq!(s.read_bytes(), 0);
    s.handle_text(now + Duration::from_secs(6), get);
    assert_eq!(s.read_bytes(), get.len());
    s.handle_disconnect(now + Duration::from_secs(6));
    assert_eq!(s.read_bytes(), 0);
}

#[test]
fn a_request_that_comes_while_the_server_is_busy_is_answered_503_and_not_started() {
    let (mut s, now) = roomy();
    s.handle_text_when_busy(now, r#"{"id":1,"method":"POST","path":"/books","body":{}}"#);
    s.handle_text_when_busy(now, r#"{"id":2,"method":"GET","path":"/books"}"#);
    for id in [1, 2] {
        let answer = text(&mut s);
        assert_eq!(
            (&answer["id"], &answer["status"], &answer["body"]["error"]),
            (&json!(id), &json!(503), &json!("server_busy"))
        );
    }
    assert!(s.poll_event().is_none());
    assert_eq!((s.in_flight(), s.read_bytes()), (0, 0));
    // Other frames hold no request's body, and are taken as usual.
    s.handle_text_when_busy(now, r#"{"id":3,"method":"SUBSCRIBE","path":"/books"}"#);
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Subscribe { .. })
    ));
}

#[test]
fn requests_over_the_rate_are_answered_429_and_not_executed() {
    let now = origin();
    let mut s = ServerSession::accept(
        ServerConfig {
            max_requests_per_sec: Some(2),
            max_in_flight: 100,
            ..config()
        },
        now,
    );
    for id in 1..=3 {
        s.handle_text(
            now,
            &format!(r#"{{"id":{id},"method":"GET","path":"/users/me"}}"#),
        );
    }
    let (a, _) = request(&mut s);
    let (b, _) = request(&mut s);
    assert!(s.poll_event().is_none(), "the third is not executed");
    let refused = text(&mut s);
    assert_eq!(refused["id"], 3);
    assert_eq!(refused["status"], 429);
    assert_eq!(refused["body"]["error"], "rate_limited");
    s.complete(now, a, 200, "{}");
    s.complete(now, b, 200, "{}");
    // Half a second later there is room for one more.
    let later = now + Duration::from_millis(500);
    s.handle_text(later, r#"{"id":4,"method":"GET","path":"/users/me"}"#);
    let _ = request(&mut s);
}

#[test]
fn presence_is_handed_to_the_host_and_answered_through_complete() {
    let (mut s, now) = roomy();
    s.handle_text(
        now,
        r#"{"id":1,"method":"PRESENCE","path":"/groups/lobby","body":{"state":{"a":1}}}"#,
    );
    let handle = match s.poll_event() {
        Some(ServerEvent::Presence {
            handle,
            path,
            action: PresenceAction::Join { state },
        }) => {
            assert_eq!(path, "/groups/lobby");
            assert_eq!(state, json!({"a": 1}));
            handle
        }
        other => panic!("expected a presence join, got {other:?}"),
    };
    assert_eq!(s.in_flight(), 1);
    assert!(s.complete(now, handle, 200, r#"{"users":[]}"#));
    let answer = text(&mut s);
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["body"]["users"], json!([]));
    s.handle_text(
        now,
        r#"{"id":2,"method":"PRESENCE","path":"/groups/lobby","body":{"leave":true}}"#,
    );
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Presence {
            action: PresenceAction::Leave,
            ..
        })
    ));
    // A bad body is answered at once and the socket carries on.
    s.handle_text(
        now,
        r#"{"id":3,"method":"PRESENCE","path":"/a","body":{"state":"x"}}"#,
    );
    let refused = text(&mut s);
    assert_eq!(
        (refused["id"].clone(), refused["status"].clone()),
        (json!(3), json!(400))
    );
    assert!(s.poll_event().is_none());
    assert!(!s.is_closed());
}

#[test]
fn broadcasts_are_bounded_in_size_and_rate() {
    let (mut s, now) = roomy();
    s.handle_text(
        now,
        r#"{"id":1,"method":"BROADCAST","path":"/groups/lobby","params":{"echo":true},"body":{"x":1}}"#,
    );
    let handle = match s.poll_event() {
        Some(ServerEvent::Broadcast {
            handle,
            path,
            body_json,
            echo,
        }) => {
            assert_eq!(
                (path.as_str(), body_json.as_str(), echo),
                ("/groups/lobby", r#"{"x":1}"#, true)
            );
            handle
        }
        other => panic!("expected a broadcast, got {other:?}"),
    };
    assert!(s.complete(now, handle, 200, "{}"));
    assert_eq!(text(&mut s)["status"], 200);
    // Larger than 64 bytes: refused before the host sees it, and it costs no rate.
    let big = format!(
        r#"{{"id":2,"method":"BROADCAST","path":"/a","body":"{}"}}"#,
        "x".repeat(70)
    );
    s.handle_text(now, &big);
    let refused = text(&mut s);
    assert_eq!(refused["status"], 413);
    assert_eq!(refused["body"]["error"], "broadcast_too_large");
    assert!(s.poll_event().is_none());
    // Two a second: the second passes, the third is refused, half a second later one more.
    s.handle_text(now, r#"{"id":3,"method":"BROADCAST","path":"/a","body":1}"#);
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Broadcast { echo: false, .. })
    ));
    s.handle_text(now, r#"{"id":4,"method":"BROADCAST","path":"/a","body":1}"#);
    assert!(s.poll_event().is_none());
    let refused = text(&mut s);
    assert_eq!(
        (refused["id"].clone(), refused["status"].clone()),
        (json!(4), json!(429))
    );
    assert_eq!(refused["body"]["error"], "rate_limited");
    let later = now + Duration::from_millis(500);
    s.handle_text(
        later,
        r#"{"id":5,"method":"BROADCAST","path":"/a","body":1}"#,
    );
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Broadcast { .. })
    ));
    // Other requests are not limited by the broadcast rate.
    send(&mut s, later, 6, "GET", "/users/me");
    let _ = request(&mut s);
}

#[test]
fn presence_state_changes_count_against_the_broadcast_rate_first_joins_and_leaves_do_not() {
    let (mut s, now) = roomy();
    let presence = |s: &mut ServerSession, id: u32, path: &str, body: &str| {
        s.handle_text(
            now,
            &format!(r#"{{"id":{id},"method":"PRESENCE","path":"{path}","body":{body}}}"#),
        );
        match s.poll_event() {
            Some(ServerEvent::Presence { .. }) => None,
            None => Some(text(s)),
            other => panic!("{other:?}"),
        }
    };
    // First joins of three paths: none limited (a client rejoins all of them at once).
    for (id, path) in [(1, "/a"), (2, "/b"), (3, "/c")] {
        assert_eq!(presence(&mut s, id, path, r#"{"state":{}}"#), None);
    }
    // State changes of one of them (however the path is spelled): two a second.
    assert_eq!(presence(&mut s, 4, "/A/", r#"{"state":{"v":1}}"#), None);
    assert_eq!(presence(&mut s, 5, "/a", r#"{"state":{"v":2}}"#), None);
    let refused = presence(&mut s, 6, "/a", r#"{"state":{"v":3}}"#).expect("refused");
    assert_eq!(
        (
            refused["id"].clone(),
            refused["status"].clone(),
            refused["body"]["error"].clone()
        ),
        (json!(6), json!(429), json!("rate_limited"))
    );
    // Leaving is always allowed, and a join after it is a first join again.
    assert_eq!(presence(&mut s, 7, "/a", r#"{"leave":true}"#), None);
    assert_eq!(presence(&mut s, 8, "/a", r#"{"state":{}}"#), None);
}

#[test]
fn a_revoked_presence_says_which_and_why_and_joining_it_again_is_a_first_join() {
    let (mut s, now) = roomy();
    let presence = |s: &mut ServerSession, id: u32, body: &str| {
        s.handle_text(
            now,
            &format!(r#"{{"id":{id},"method":"PRESENCE","path":"/Groups/Lobby","body":{body}}}"#),
        );
        matches!(s.poll_event(), Some(ServerEvent::Presence { .. }))
    };
    assert!(presence(&mut s, 1, r#"{"state":{}}"#));
    assert!(presence(&mut s, 2, r#"{"state":{"v":1}}"#));
    s.revoke_presence(now, "/Groups/Lobby", "/groups/lobby", "forbidden");
    assert_eq!(
        text(&mut s),
        json!({"event": "revoked", "presence": "/groups/lobby", "path": "/groups/lobby",
               "reason": "forbidden"})
    );
    // Two state changes a second are allowed: a third would be refused, but this join is
    // a first join again (the socket is no longer present there).
    assert!(presence(&mut s, 3, r#"{"state":{}}"#));
    assert!(presence(&mut s, 4, r#"{"state":{"v":2}}"#));
    // A closed socket sends nothing.
    s.handle_disconnect(now);
    s.revoke_presence(now, "/Groups/Lobby", "/groups/lobby", "forbidden");
    assert!(s.poll_transmit().is_none());
}

#[test]
fn ephemeral_events_go_out_as_is_until_the_socket_closes() {
    let (mut s, now) = session();
    let frame: Arc<str> = r#"{"event":"broadcast","path":"/a","body":1}"#.into();
    assert!(s.handle_ephemeral(now, frame.clone()));
    assert_eq!(s.poll_transmit(), Some(OutFrame::Event(frame.clone())));
    s.handle_disconnect(now);
    assert!(!s.handle_ephemeral(now, frame));
    assert!(s.poll_transmit().is_none());
}

#[test]
fn a_draining_socket_answers_what_it_has_in_flight_then_closes_with_1012() {
    let close_code = |s: &mut ServerSession| match s.poll_transmit() {
        Some(OutFrame::Close { code, .. }) => code,
        other => panic!("a close, not {other:?}"),
    };
    // Nothing in flight: it closes at once.
    let (mut s, now) = session();
    drain(&mut s);
    s.drain(now);
    assert_eq!(close_code(&mut s), 1012);
    assert!(s.is_closed());

    // A subscription in flight: confirmed, then the close.
    let (mut s, now) = session();
    drain(&mut s);
    let (sub, _) = subscribe(&mut s, now, 3, "/books");
    s.drain(now);
    assert!(
        s.poll_transmit().is_none(),
        "no close while answers are owed"
    );
    // A frame read now is not taken: the client sends it again on its next connection.
    s.handle_text(now, r#"{"id":9,"method":"GET","path":"/books"}"#);
    assert!(s.poll_event().is_none() && s.poll_transmit().is_none());
    assert!(s.confirm_subscription(now, sub, 0, r#"{"subscription":"s1"}"#, vec![]));
    assert_eq!(text(&mut s)["status"], 200);
    assert_eq!(close_code(&mut s), 1012);

    // Two writes in flight: the first answered, the last past its deadline (its 504), then
    // the close.
    let (mut s, now) = session();
    drain(&mut s);
    s.handle_text(now, r#"{"id":1,"method":"POST","path":"/notes","body":{}}"#);
    s.handle_text(now, r#"{"id":2,"method":"POST","path":"/notes","body":{}}"#);
    let (first, _) = request(&mut s);
    let (second, _) = request(&mut s);
    s.drain(now);
    assert!(s.complete(now, first, 200, "{}"));
    assert_eq!(text(&mut s)["status"], 200);
    assert!(s.poll_transmit().is_none() && !s.is_closed());
    let late = now + Duration::from_secs(6);
    s.handle_timeout(late);
    assert_eq!(text(&mut s)["status"], 504);
    assert_eq!(close_code(&mut s), 1012);
    assert!(!s.complete(late, second, 200, "{}"), "too late: dropped");
}
