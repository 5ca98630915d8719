//! Client session tests in simulated time, against the real server session with a fake host.
//! One scenario per test; faults are injected by dropping the server or its answers.

use super::*;
use crate::server::{ServerConfig, ServerEvent, ServerSession, SubscriptionId};
use crate::subscription::{EventKind, encode_event};
use serde_json::{Value, json};

// Any origin will do: every later instant is derived from it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

const JOHN: &str = r#"{"connected":true,"user":"u-john","expires_in":86400}"#;

/// A client and a server session, a change log, and a host that moves frames between them.
struct Pair {
    now: Instant,
    client: ClientSession,
    server: Option<ServerSession>,
    server_subs: Vec<(SubscriptionId, String)>,
    log: Vec<Value>,
    events: Vec<ClientEvent>,
    /// Frames the client sent, as the server read them.
    sent: Vec<Value>,
    /// Writes the fake store applied, by write id (a repeat is answered, not applied).
    applied: Vec<String>,
    /// Answer requests at once (false: leave them in flight).
    answer: bool,
    /// Drop every frame the server sends (answers lost on the way).
    lose_answers: bool,
    /// The greeting the next socket gets.
    greeting: String,
}

impl Pair {
    fn new() -> Pair {
        let mut p = Pair::unopened(ClientConfig::default());
        p.open();
        p
    }

    fn unopened(config: ClientConfig) -> Pair {
        let now = origin();
        let client = ClientSession::new(now, config, "ws://h/org/app", Some("t0".into()), 7);
        Pair {
            now,
            client,
            server: None,
            server_subs: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
            applied: Vec::new(),
            answer: true,
            lose_answers: false,
            greeting: JOHN.into(),
        }
    }

    fn open(&mut self) {
        let mut server = ServerSession::accept(ServerConfig::default(), self.now);
        server.welcome(self.now, &self.greeting);
        self.server = Some(server);
        self.server_subs.clear();
        self.client.handle_open(self.now);
        assert_eq!(
            self.client.state(),
            ConnectionState::Connecting,
            "open only once greeted"
        );
        self.step();
    }

    fn step(&mut self) {
        for _ in 0..10 {
            let mut moved = false;
            while let Some(frame) = self.client.poll_transmit() {
                moved = true;
                self.sent.push(serde_json::from_str(&frame).expect("JSON"));
                if let Some(s) = self.server.as_mut() {
                    s.handle_text(self.now, &frame);
                }
            }
            if let Some(s) = self.server.as_mut() {
                while let Some(event) = s.poll_event() {
                    moved = true;
                    match event {
                        ServerEvent::Request {
                            handle,
                            request,
                            write_id,
                            ..
                        } => {
                            if self.answer {
                                let repeat =
                                    write_id.as_ref().is_some_and(|w| self.applied.contains(w));
                                if let Some(w) = write_id.filter(|_| !repeat) {
                                    self.applied.push(w);
                                }
                                let body = json!({"path": request.path, "repeat": repeat});
                                let _ = s.complete(self.now, handle, 200, &body.to_string());
                            }
                        }
                        ServerEvent::Subscribe {
                            handle,
                            subscription,
                            path,
                            since,
                            params,
                        } => {
                            let current = self.log.len() as u64;
                            let position = since.unwrap_or(current);
                            let replay: Vec<(u64, std::sync::Arc<str>)> = self
                                .log
                                .iter()
                                .enumerate()
                                .map(|(i, e)| (i as u64 + 1, e))
                                .filter(|(seq, _)| *seq > position)
                                .map(|(seq, e)| {
                                    let frame = encode_event(
                                        EventKind::Create,
                                        &subscription.to_string(),
                                        &path,
                                        seq,
                                        &e.to_string(),
                                    );
                                    (seq, frame.into())
                                })
                                .collect();
                            let mut body = json!({"subscription": subscription.to_string(), "path": path, "seq": current, "recovered": since.map(|_| true)});
                            if params.get("snapshot") == Some("true") {
                                body["snapshot"] = json!({"count": current});
                            }
                            let _ = s.confirm_subscription(
                                self.now,
                                handle,
                                position,
                                &body.to_string(),
                                replay,
                            );
                            self.server_subs.push((subscription, path));
                        }
                        ServerEvent::Unsubscribed { subscription } => {
                            self.server_subs.retain(|(s, _)| *s != subscription);
                        }
                        ServerEvent::Auth {
                            handle,
                            access_token,
                        } => {
                            if access_token.starts_with("other") {
                                let _ =
                                    s.complete(self.now, handle, 403, r#"{"error":"forbidden"}"#);
                            } else {
                                let body = r#"{"action":"auth","expires_in":3600}"#;
                                let _ = s.complete(self.now, handle, 200, body);
                            }
                        }
                        // The client sends neither; an answer keeps the pair moving if one appears.
                        ServerEvent::Presence { handle, .. }
                        | ServerEvent::Broadcast { handle, .. } => {
                            let _ = s.complete(self.now, handle, 200, "{}");
                        }
                    }
                }
                while let Some(frame) = s.poll_transmit() {
                    moved = true;
                    if self.lose_answers {
                        continue;
                    }
                    if let Some(t) = frame.text() {
                        self.client
                            .handle_frame(self.now, t)
                            .expect("server frames are valid");
                    }
                }
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn publish(&mut self, entity: Value) {
        self.log.push(entity.clone());
        let seq = self.log.len() as u64;
        if let Some(s) = self.server.as_mut() {
            for (sub, path) in &self.server_subs {
                let frame = encode_event(
                    EventKind::Create,
                    &sub.to_string(),
                    path,
                    seq,
                    &entity.to_string(),
                );
                s.handle_push(self.now, *sub, seq, frame.into());
            }
        }
        self.step();
    }

    fn drop_connection(&mut self) {
        self.server = None;
        self.client.handle_close(self.now, None);
        self.step();
    }

    /// Jumps to the next timer and runs it.
    fn advance(&mut self) {
        self.now = self.client.poll_timeout().expect("a timer is armed");
        self.client.handle_timeout(self.now);
        self.step();
    }

    /// Jumps to the reconnect time and opens the new socket the client asks for.
    fn reconnect(&mut self) {
        self.advance();
        assert!(
            matches!(self.events.last(), Some(ClientEvent::Connect { .. })),
            "{:?}",
            self.events.last()
        );
        self.open();
    }

    fn take(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }

    fn seqs(&mut self) -> Vec<u64> {
        self.take()
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Event { seq, .. } => Some(seq),
                _ => None,
            })
            .collect()
    }

    fn last_connect_url(&self) -> String {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                ClientEvent::Connect { url } => Some(url.clone()),
                _ => None,
            })
            .expect("a connect")
    }
}

fn response(id: RequestId, status: u16, body: Value) -> ClientEvent {
    ClientEvent::Response {
        id,
        status,
        body: body.to_string(),
    }
}

#[test]
fn connects_with_the_token_and_queues_requests_until_greeted() {
    let mut p = Pair::unopened(ClientConfig::default());
    p.client.access_token = Some("a b".into());
    assert_eq!(p.client.connect_url(), "ws://h/org/app?access_token=a%20b");
    p.step();
    assert_eq!(
        p.take()[..2],
        [
            ClientEvent::StateChanged(ConnectionState::Connecting),
            ClientEvent::Connect {
                url: "ws://h/org/app?access_token=t0".into()
            }
        ]
    );
    let id = p
        .client
        .request(p.now, "GET", "/users/me", None, None, None);
    p.step();
    assert!(p.take().is_empty(), "the request waits");
    p.open();
    let got = p.take();
    assert_eq!(
        got,
        [
            ClientEvent::StateChanged(ConnectionState::Open),
            response(id, 200, json!({"path": "/users/me", "repeat": false}))
        ]
    );
}

#[test]
fn responses_are_matched_to_requests_and_writes_carry_write_ids() {
    let mut p = Pair::new();
    p.take();
    let a = p.client.request(p.now, "GET", "/a", None, None, None);
    let b = p.client.request(
        p.now,
        "POST",
        "/b",
        Some(r#"{"limit": 1}"#),
        Some(r#"{"x":[1,"é"]}"#),
        None,
    );
    let q = p
        .client
        .request(p.now, "GET", "/queues/jobs", None, None, None);
    p.step();
    let got = p.take();
    assert!(got.contains(&response(a, 200, json!({"path": "/a", "repeat": false}))));
    assert!(got.contains(&response(b, 200, json!({"path": "/b", "repeat": false}))));
    assert!(got.contains(&response(
        q,
        200,
        json!({"path": "/queues/jobs", "repeat": false})
    )));
    assert_eq!(p.client.pending_requests(), 0);
    let frames: Vec<&Value> = p
        .sent
        .iter()
        .filter(|f| f["method"] != "SUBSCRIBE")
        .collect();
    assert_eq!(frames[0].get("write_id"), None, "a read has none");
    assert_eq!(frames[1]["params"], json!({"limit": 1}));
    assert_eq!(frames[1]["body"], json!({"x": [1, "é"]}));
    let w = frames[1]["write_id"].as_str().unwrap();
    assert!(w.len() > 27 && w.ends_with(&format!(".{}", b.0)), "{w}");
    assert!(
        frames[2]["write_id"].is_string(),
        "a queue read moves a position"
    );
}

#[test]
fn requests_made_while_reconnecting_wait_and_go_out_once_back() {
    let mut p = Pair::new();
    p.drop_connection();
    p.take();
    let read = p.client.request(p.now, "GET", "/a", None, None, None);
    let write = p
        .client
        .request(p.now, "POST", "/b", None, Some("{}"), None);
    p.step();
    assert!(
        p.take().is_empty(),
        "nothing fails while the connection is down"
    );
    p.reconnect();
    let got = p.take();
    assert!(got.contains(&response(read, 200, json!({"path": "/a", "repeat": false}))));
    assert!(got.contains(&response(
        write,
        200,
        json!({"path": "/b", "repeat": false})
    )));
    assert_eq!(p.applied.len(), 1);
    let posts = p.sent.iter().filter(|f| f["method"] == "POST").count();
    assert_eq!(posts, 1, "sent exactly once");
}

#[test]
fn a_write_whose_answer_was_lost_is_sent_again_with_the_same_write_id() {
    let mut p = Pair::new();
    p.take();
    // The server applies the write, but its answer is lost with the socket.
    p.lose_answers = true;
    let id = p
        .client
        .request(p.now, "POST", "/notes", None, Some(r#"{"n":1}"#), None);
    p.step();
    assert_eq!(p.applied.len(), 1);
    assert!(p.take().is_empty());
    p.lose_answers = false;
    p.drop_connection();
    p.reconnect();
    let sends: Vec<&Value> = p.sent.iter().filter(|f| f["method"] == "POST").collect();
    assert_eq!(sends.len(), 2);
    assert_eq!(
        sends[0]["write_id"], sends[1]["write_id"],
        "the same write id"
    );
    assert_eq!(p.applied.len(), 1, "applied once");
    assert!(p.take().contains(&response(
        id,
        200,
        json!({"path": "/notes", "repeat": true})
    )));
}

#[test]
fn in_flight_requests_survive_a_drop_and_the_client_backs_off() {
    let mut p = Pair::new();
    p.answer = false;
    let id = p.client.request(p.now, "GET", "/slow", None, None, None);
    p.step();
    p.take();
    p.drop_connection();
    let got = p.take();
    assert_eq!(
        got,
        [ClientEvent::StateChanged(ConnectionState::Reconnecting)]
    );
    // Full jitter: the first retry comes within the first backoff step.
    let wait = p.client.poll_timeout().unwrap() - p.now;
    assert!(wait <= Duration::from_millis(250), "{wait:?}");
    p.answer = true;
    p.reconnect();
    assert!(p.take().contains(&response(
        id,
        200,
        json!({"path": "/slow", "repeat": false})
    )));
    // Repeated failures wait longer, up to the cap.
    let mut longest = Duration::ZERO;
    for _ in 0..12 {
        p.client.handle_close(p.now, None);
        let wait = p.client.poll_timeout().unwrap() - p.now;
        longest = longest.max(wait);
        assert!(wait <= Duration::from_secs(30));
        p.now += wait;
        p.client.handle_timeout(p.now);
        assert_eq!(p.client.state(), ConnectionState::Connecting);
    }
    assert!(
        longest > Duration::from_secs(1),
        "backoff grows: {longest:?}"
    );
}

#[test]
fn requests_time_out_online_and_offline() {
    let mut p = Pair::new();
    p.answer = false;
    let online = p.client.request(p.now, "GET", "/slow", None, None, None);
    p.step();
    p.take();
    p.advance();
    assert_eq!(
        p.take(),
        [ClientEvent::RequestFailed {
            id: online,
            error: ClientError::Timeout(30_000)
        }]
    );
    p.drop_connection();
    p.take();
    let started = p.now;
    let offline = p.client.request(
        p.now,
        "POST",
        "/x",
        None,
        Some("1"),
        Some(Duration::from_millis(50)),
    );
    // The reconnect may come first; keep the server away.
    while p.client.pending_requests() > 0 {
        p.now = p.client.poll_timeout().unwrap();
        p.client.handle_timeout(p.now);
        p.client.handle_close(p.now, None);
        p.step();
    }
    assert_eq!(p.now - started, Duration::from_millis(50));
    assert!(p.take().contains(&ClientEvent::RequestFailed {
        id: offline,
        error: ClientError::Timeout(50)
    }));
}

#[test]
fn an_attempt_that_never_completes_is_dropped_and_retried() {
    let mut p = Pair::new();
    p.drop_connection();
    p.advance();
    assert!(matches!(p.take().last(), Some(ClientEvent::Connect { .. })));
    // The socket opens but the server never greets it (or never even answers).
    p.client.handle_open(p.now);
    let at = p.client.poll_timeout().unwrap();
    assert_eq!(at - p.now, Duration::from_secs(10), "the connect timeout");
    p.advance();
    assert_eq!(
        p.take(),
        [
            ClientEvent::Disconnect,
            ClientEvent::StateChanged(ConnectionState::Reconnecting)
        ]
    );
    p.reconnect();
    assert_eq!(p.client.state(), ConnectionState::Open);
}

#[test]
fn a_first_connection_that_never_opens_gives_up_after_the_request_timeout() {
    let mut p = Pair::unopened(ClientConfig::default());
    // Every attempt fails: an unreachable server (an `error` event, or a close).
    while p.client.state() != ConnectionState::Closed {
        p.advance();
        if p.client.state() == ConnectionState::Connecting {
            p.client.handle_close(p.now, None);
        }
    }
    let got = p.take();
    assert!(got.contains(&ClientEvent::Failed {
        error: ClientError::Timeout(30_000)
    }));
    assert!(p.now - origin() <= Duration::from_secs(31));
}

#[test]
fn a_refused_first_handshake_closes_the_client() {
    let mut p = Pair::unopened(ClientConfig::default());
    p.step();
    p.take();
    p.client
        .handle_frame(
            p.now,
            r#"{"id":null,"status":401,"body":{"error":"auth_bad_access_token"}}"#,
        )
        .unwrap();
    p.step();
    let got = p.take();
    assert!(got.contains(&ClientEvent::ServerError {
        status: 401,
        body: r#"{"error":"auth_bad_access_token"}"#.into()
    }));
    assert!(!got.contains(&ClientEvent::StateChanged(ConnectionState::Open)));
    assert_eq!(p.client.state(), ConnectionState::Closed);
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn a_refused_reconnect_asks_for_a_token_once_and_goes_on() {
    let mut p = Pair::new();
    p.drop_connection();
    p.advance();
    p.take();
    p.client
        .handle_frame(
            p.now,
            r#"{"id":null,"status":401,"body":{"error":"expired_token"}}"#,
        )
        .unwrap();
    p.client.handle_close(p.now, Some(4401));
    p.step();
    let got = p.take();
    let asks = got
        .iter()
        .filter(|e| matches!(e, ClientEvent::AuthRequired { .. }))
        .count();
    assert_eq!(asks, 1, "{got:?}");
    assert_eq!(p.client.state(), ConnectionState::Reconnecting);
    // 4404 ends the client.
    p.advance();
    p.client.handle_close(p.now, Some(4404));
    assert_eq!(p.client.state(), ConnectionState::Closed);
}

#[test]
fn close_ends_everything_waiting_at_once() {
    let mut p = Pair::new();
    p.answer = false;
    let confirmed = p.client.subscribe(p.now, "/a", None, false, None);
    p.step();
    let in_flight = p.client.request(p.now, "GET", "/slow", None, None, None);
    p.step();
    p.drop_connection();
    let queued = p
        .client
        .request(p.now, "POST", "/b", None, Some("{}"), None);
    let unconfirmed = p.client.subscribe(p.now, "/c", None, false, None);
    let token = p.client.set_access_token(p.now, "t1".into());
    p.take();
    p.client.close(p.now);
    p.step();
    let got = p.take();
    for id in [in_flight, queued, token] {
        assert!(
            got.contains(&ClientEvent::RequestFailed {
                id,
                error: ClientError::Closed
            }),
            "{id:?}: {got:?}"
        );
    }
    for sub in [confirmed, unconfirmed] {
        assert!(got.contains(&ClientEvent::SubscriptionEnded {
            sub,
            error: ClientError::Closed
        }));
    }
    assert!(got.contains(&ClientEvent::Disconnect));
    assert_eq!(p.client.poll_timeout(), None);
    let late = p.client.request(p.now, "GET", "/a", None, None, None);
    let sub = p.client.subscribe(p.now, "/a", None, false, None);
    p.step();
    assert_eq!(
        p.take(),
        [
            ClientEvent::RequestFailed {
                id: late,
                error: ClientError::Closed
            },
            ClientEvent::SubscriptionEnded {
                sub,
                error: ClientError::Closed
            }
        ]
    );
}

#[test]
fn tokens_are_refreshed_before_they_expire_and_in_band() {
    let mut p = Pair::unopened(ClientConfig::default());
    p.greeting = r#"{"connected":true,"user":"u-john","expires_in":100}"#.into();
    p.open();
    p.take();
    // A fifth of its life before expiry.
    assert_eq!(
        p.client.poll_timeout().unwrap() - p.now,
        Duration::from_secs(80)
    );
    p.advance();
    assert_eq!(
        p.take(),
        [ClientEvent::AuthRequired {
            reason: AuthReason::Expiring
        }]
    );
    let ok = p.client.set_access_token(p.now, "t1".into());
    p.step();
    assert_eq!(
        p.take(),
        [response(
            ok,
            200,
            json!({"action": "auth", "expires_in": 3600})
        )]
    );
    assert!(p.client.connect_url().ends_with("access_token=t1"));
    assert_eq!(
        p.client.poll_timeout().unwrap() - p.now,
        Duration::from_secs(3540),
        "a minute before"
    );
    // A token of another user is refused, and not used later.
    let refused = p.client.set_access_token(p.now, "other-user".into());
    p.step();
    assert_eq!(
        p.take(),
        [response(refused, 403, json!({"error": "forbidden"}))]
    );
    assert!(p.client.connect_url().ends_with("access_token=t1"));
    // The server says the token expired: asked once.
    p.client
        .handle_frame(
            p.now,
            r#"{"id":null,"status":401,"body":{"error":"expired_token"}}"#,
        )
        .unwrap();
    p.step();
    assert!(p.take().contains(&ClientEvent::AuthRequired {
        reason: AuthReason::Expired
    }));
}

#[test]
fn a_token_set_while_offline_is_tried_by_the_next_connection() {
    let mut p = Pair::new();
    p.drop_connection();
    let id = p.client.set_access_token(p.now, "t1".into());
    p.reconnect();
    assert!(p.last_connect_url().ends_with("access_token=t1"));
    let got = p.take();
    assert!(got.contains(&response(
        id,
        200,
        json!({"action": "auth", "expires_in": 86400})
    )));
    assert!(p.client.connect_url().ends_with("access_token=t1"));
}

#[test]
fn a_socket_never_changes_user() {
    let mut p = Pair::new();
    p.drop_connection();
    // A token of another user, offered while offline: that socket is dropped, the call
    // fails, and the client goes back to its own token at once.
    let id = p.client.set_access_token(p.now, "t-jane".into());
    p.greeting = r#"{"connected":true,"user":"u-jane"}"#.into();
    p.reconnect();
    let got = p.take();
    assert!(got.contains(&ClientEvent::RequestFailed {
        id,
        error: ClientError::UserChanged
    }));
    assert!(got.contains(&ClientEvent::Disconnect));
    assert_eq!(p.client.state(), ConnectionState::Reconnecting);
    assert_eq!(p.client.poll_timeout(), Some(p.now), "at once");
    p.greeting = JOHN.into();
    p.reconnect();
    assert!(p.last_connect_url().ends_with("access_token=t0"));
    assert_eq!(p.client.state(), ConnectionState::Open);
    // Greeted as someone else with the client's own token: give up for good.
    p.drop_connection();
    p.greeting = r#"{"connected":true,"user":null}"#.into();
    p.reconnect();
    let got = p.take();
    assert!(got.contains(&ClientEvent::Failed {
        error: ClientError::UserChanged
    }));
    assert_eq!(p.client.state(), ConnectionState::Closed);
}

#[test]
fn resumes_after_drops_with_nothing_lost_or_repeated() {
    let mut p = Pair::new();
    p.take();
    let sub = p.client.subscribe(p.now, "/notes", None, false, None);
    p.step();
    let first = p.take();
    assert!(
        matches!(
            first[..],
            [ClientEvent::Subscribed {
                seq: 0,
                resumed: false,
                ..
            }]
        ),
        "{first:?}"
    );
    let mut seen = Vec::new();
    for round in 0..5u64 {
        for i in 0..4 {
            p.publish(json!({"round": round, "i": i}));
        }
        seen.extend(p.seqs());
        // Changes land while the client is away.
        p.drop_connection();
        p.publish(json!({"away": round}));
        p.publish(json!({"away": round}));
        p.take();
        p.reconnect();
        let got = p.take();
        assert!(got.iter().any(
            |e| matches!(e, ClientEvent::Subscribed { sub: s, resumed: true, .. } if *s == sub)
        ));
        seen.extend(got.iter().filter_map(|e| match e {
            ClientEvent::Event { seq, .. } => Some(*seq),
            _ => None,
        }));
    }
    assert_eq!(
        seen,
        (1..=30).collect::<Vec<u64>>(),
        "every event once, in order"
    );
    assert_eq!(p.client.last_seq(sub), Some(30));
    // A repeated event (a server replaying too much) is dropped.
    let frame = encode_event(EventKind::Create, "s6", "/notes", 30, "{}");
    p.client.handle_frame(p.now, &frame).unwrap();
    assert!(p.seqs().is_empty());
}

#[test]
fn snapshot_and_params_go_with_the_first_subscribe_only() {
    let mut p = Pair::new();
    p.publish(json!({"n": 1}));
    let sub = p
        .client
        .subscribe(p.now, "/notes", Some(r#"{"ql":"select *"}"#), true, None);
    p.step();
    assert!(p.take().contains(&ClientEvent::Subscribed {
        sub,
        seq: 1,
        snapshot: Some(r#"{"count":1}"#.into()),
        resumed: false
    }));
    p.drop_connection();
    p.reconnect();
    let subs: Vec<&Value> = p
        .sent
        .iter()
        .filter(|f| f["method"] == "SUBSCRIBE")
        .collect();
    assert_eq!(
        subs[0]["params"],
        json!({"snapshot": true, "ql": "select *"})
    );
    assert_eq!(subs[1]["params"], json!({"ql": "select *"}));
    assert_eq!(subs[1]["since"], 1);
}

#[test]
fn a_subscription_waits_for_the_connection_up_to_the_timeout() {
    let mut p = Pair::new();
    p.drop_connection();
    let sub = p.client.subscribe(p.now, "/notes", None, false, None);
    // The server stays away past the request timeout.
    let started = p.now;
    while p.client.last_seq(sub).is_none()
        && !p
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::SubscriptionEnded { .. }))
    {
        p.advance();
        if p.client.state() == ConnectionState::Connecting {
            p.client.handle_close(p.now, None);
            p.step();
        }
    }
    assert!(p.take().contains(&ClientEvent::SubscriptionEnded {
        sub,
        error: ClientError::Timeout(30_000)
    }));
    assert_eq!(p.now - started, Duration::from_secs(30));
}

#[test]
fn a_confirmation_for_a_subscription_given_up_is_undone_on_the_server() {
    let mut p = Pair::new();
    p.answer = false;
    let sub = p.client.subscribe(p.now, "/notes", None, false, None);
    p.client.unsubscribe(p.now, sub);
    p.step();
    assert!(p.server_subs.is_empty(), "{:?}", p.server_subs);
    assert_eq!(
        p.sent.last().unwrap()["method"],
        "UNSUBSCRIBE",
        "{:?}",
        p.sent
    );
}

#[test]
fn unrecoverable_resumes_and_revocations_reach_the_app() {
    let mut p = Pair::new();
    let sub = p.client.subscribe(p.now, "/notes", None, false, None);
    p.step();
    p.take();
    p.drop_connection();
    p.reconnect();
    p.take();
    // The server could not replay: the app must refetch.
    let server_id = p.server_subs.last().unwrap().0.to_string();
    let body = json!({"subscription": server_id, "path": "/notes", "seq": 99, "recovered": false})
        .to_string();
    p.client.subscribed(sub, 200, Some(&body));
    p.step();
    let got = p.take();
    assert!(
        got.contains(&ClientEvent::ResyncRequired { sub }),
        "{got:?}"
    );
    assert_eq!(p.client.last_seq(sub), Some(99));
    p.client
        .handle_frame(p.now, &json!({"event": "revoked", "subscription": server_id, "path": "/notes", "reason": "forbidden"}).to_string())
        .unwrap();
    p.step();
    assert_eq!(
        p.take(),
        vec![ClientEvent::Revoked {
            sub,
            reason: "forbidden".into()
        }]
    );
    p.publish(json!({"after": true}));
    assert!(p.seqs().is_empty());
}

#[test]
fn bad_frames_are_reported_and_ignored() {
    let mut p = Pair::new();
    assert!(p.client.handle_frame(p.now, "nonsense").is_err());
    assert!(p.client.handle_frame(p.now, "[1]").is_err());
    assert!(p.client.handle_frame(p.now, r#"{"id":1}"#).is_err());
    assert_eq!(p.client.state(), ConnectionState::Open);
}

#[test]
fn at_most_the_servers_in_flight_limit_is_out_and_the_rest_wait_their_turn() {
    let mut p = Pair::unopened(ClientConfig::default());
    p.greeting =
        r#"{"connected":true,"user":"u-john","max_in_flight":16,"max_frame_bytes":4096}"#.into();
    p.answer = false;
    p.open();
    p.take();
    let ids: Vec<RequestId> = (0..100)
        .map(|i| {
            let body = format!(r#"{{"i":{i}}}"#);
            p.client
                .request(p.now, "POST", "/floods", None, Some(&body), None)
        })
        .collect();
    p.step();
    let posts = |p: &Pair| p.sent.iter().filter(|f| f["method"] == "POST").count();
    assert_eq!(posts(&p), 14, "16 less room for subscriptions");
    assert_eq!(p.client.pending_requests(), 100);
    // A new socket that answers: every one is sent in order and answered once.
    p.answer = true;
    p.drop_connection();
    p.reconnect();
    let answered: Vec<RequestId> = p
        .take()
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Response {
                id, status: 200, ..
            } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(answered, ids);
    assert_eq!(p.applied.len(), 100, "each write applied once");
}

#[test]
fn a_request_larger_than_the_server_takes_fails_at_once_and_the_others_go_on() {
    let mut p = Pair::unopened(ClientConfig::default());
    p.greeting =
        r#"{"connected":true,"user":"u-john","max_in_flight":256,"max_frame_bytes":200}"#.into();
    p.open();
    p.take();
    let big = format!(r#"{{"s":"{}"}}"#, "x".repeat(300));
    let id = p
        .client
        .request(p.now, "POST", "/things", None, Some(&big), None);
    let small = p
        .client
        .request(p.now, "GET", "/users/me", None, None, None);
    p.step();
    let got = p.take();
    assert!(
        got.iter().any(|e| matches!(e, ClientEvent::RequestFailed { id: i, error: ClientError::FrameTooLarge(n) } if *i == id && *n > 300)),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|e| matches!(e, ClientEvent::Response { id: i, status: 200, .. } if *i == small)),
        "{got:?}"
    );
    assert!(!p.sent.iter().any(|f| f["method"] == "POST"), "never sent");
    assert_eq!(p.client.state(), ConnectionState::Open);
}
