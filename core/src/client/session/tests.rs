//! Client session tests in simulated time, against the real server session with a fake host.

use super::*;
use crate::server::{ServerConfig, ServerEvent, ServerSession, SubscriptionId};
use crate::subscription::{EventKind, encode_event};

// Any origin will do: every later instant is derived from it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// A client and a server session, a change log, and a host that moves frames between them.
struct Pair {
    now: Instant,
    client: ClientSession,
    server: Option<ServerSession>,
    server_subs: Vec<(SubscriptionId, String)>,
    log: Vec<Value>,
    events: Vec<ClientEvent>,
    /// Answer requests at once (false: leave them in flight).
    answer: bool,
}

impl Pair {
    fn new() -> Pair {
        let now = origin();
        let client = ClientSession::new(
            now,
            ClientConfig::default(),
            "ws://h/org/app",
            Some("t0".into()),
            7,
        );
        let mut p = Pair {
            now,
            client,
            server: None,
            server_subs: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            answer: true,
        };
        p.open();
        p
    }

    fn open(&mut self) {
        let mut server = ServerSession::accept(ServerConfig::default(), self.now);
        server.welcome(self.now, r#"{"connected":true}"#);
        self.server = Some(server);
        self.server_subs.clear();
        self.client.handle_open(self.now);
        assert_eq!(
            self.client.state(),
            ConnectionState::Connecting,
            "open only once greeted"
        );
        self.step();
        assert_eq!(self.client.state(), ConnectionState::Open);
    }

    fn step(&mut self) {
        for _ in 0..10 {
            let mut moved = false;
            while let Some(frame) = self.client.poll_transmit() {
                moved = true;
                if let Some(s) = self.server.as_mut() {
                    s.handle_text(self.now, &frame);
                }
            }
            if let Some(s) = self.server.as_mut() {
                while let Some(event) = s.poll_event() {
                    moved = true;
                    match event {
                        ServerEvent::Request { handle, request } => {
                            if self.answer {
                                let body = json!({"path": request.path}).to_string();
                                let _ = s.complete(self.now, handle, 200, &body);
                            }
                        }
                        ServerEvent::Subscribe {
                            handle,
                            subscription,
                            path,
                            since,
                            ..
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
                                    (
                                        seq,
                                        encode_event(
                                            EventKind::Create,
                                            &subscription.to_string(),
                                            &path,
                                            seq,
                                            &e.to_string(),
                                        )
                                        .into(),
                                    )
                                })
                                .collect();
                            let body = json!({"subscription": subscription.to_string(), "path": path, "seq": current, "recovered": since.map(|_| true)});
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
                        ServerEvent::Auth { handle, .. } => {
                            let _ = s.complete(self.now, handle, 200, "{}");
                        }
                    }
                }
                while let Some(frame) = s.poll_transmit() {
                    moved = true;
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

    /// Jumps to the reconnect time and opens the new socket the client asks for.
    fn reconnect(&mut self) {
        let at = self
            .client
            .poll_timeout()
            .expect("a reconnect is scheduled");
        self.now = at;
        self.client.handle_timeout(self.now);
        self.step();
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
}

#[test]
fn connects_with_the_token_in_the_url() {
    let now = origin();
    let mut c = ClientSession::new(
        now,
        ClientConfig::default(),
        "ws://h/org/app",
        Some("a b".into()),
        1,
    );
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::StateChanged(ConnectionState::Connecting))
    );
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Connect {
            url: "ws://h/org/app?access_token=a%20b".into()
        })
    );
    let id = c.request(now, "GET", "/users/me", None, None);
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::RequestFailed {
            id,
            error: ClientError::NotConnected
        })
    );
}

#[test]
fn responses_are_matched_to_requests() {
    let mut p = Pair::new();
    p.take();
    let a = p.client.request(p.now, "GET", "/a", None, None);
    let b = p.client.request(
        p.now,
        "POST",
        "/b",
        Some(json!({"limit": 1})),
        Some(json!({"x": 1})),
    );
    p.step();
    let got = p.take();
    assert!(got.contains(&ClientEvent::Response {
        id: a,
        status: 200,
        body: json!({"path": "/a"})
    }));
    assert!(got.contains(&ClientEvent::Response {
        id: b,
        status: 200,
        body: json!({"path": "/b"})
    }));
    assert_eq!(p.client.pending_requests(), 0);
}

#[test]
fn in_flight_requests_fail_on_disconnect_and_the_client_backs_off() {
    let mut p = Pair::new();
    p.answer = false;
    let id = p.client.request(p.now, "GET", "/slow", None, None);
    p.step();
    p.take();
    p.drop_connection();
    let got = p.take();
    assert!(got.contains(&ClientEvent::RequestFailed {
        id,
        error: ClientError::Disconnected
    }));
    assert!(got.contains(&ClientEvent::StateChanged(ConnectionState::Reconnecting)));
    // Full jitter: the first retry comes within the first backoff step.
    let wait = p.client.poll_timeout().unwrap() - p.now;
    assert!(wait <= Duration::from_millis(250), "{wait:?}");
    p.reconnect();
    assert!(
        p.take()
            .contains(&ClientEvent::StateChanged(ConnectionState::Open))
    );
    // Repeated failures wait longer, up to the cap.
    let mut longest = Duration::ZERO;
    for _ in 0..12 {
        p.client.handle_close(p.now, None);
        let wait = p.client.poll_timeout().unwrap() - p.now;
        longest = longest.max(wait);
        assert!(wait <= Duration::from_secs(30));
        p.now += wait;
        p.client.handle_timeout(p.now);
    }
    assert!(
        longest > Duration::from_secs(1),
        "backoff grows: {longest:?}"
    );
}

#[test]
fn requests_time_out_in_simulated_time() {
    let mut p = Pair::new();
    p.answer = false;
    let id = p.client.request(p.now, "GET", "/slow", None, None);
    p.step();
    p.take();
    let deadline = p.client.poll_timeout().unwrap();
    p.now = deadline;
    p.client.handle_timeout(p.now);
    p.step();
    assert!(p.take().contains(&ClientEvent::RequestFailed {
        id,
        error: ClientError::Timeout(30_000)
    }));
}

#[test]
fn resumes_after_drops_with_nothing_lost_or_repeated() {
    let mut p = Pair::new();
    p.take();
    let sub = p.client.subscribe(p.now, "/notes", None, None);
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
    let frame = encode_event(EventKind::Create, "s1", "/notes", 30, "{}");
    p.client.handle_frame(p.now, &frame).unwrap();
    assert!(p.seqs().is_empty());
}

#[test]
fn unrecoverable_resumes_and_revocations_reach_the_app() {
    let mut p = Pair::new();
    let sub = p.client.subscribe(p.now, "/notes", None, None);
    p.step();
    p.take();
    let id = p.server_subs[0].0.to_string();
    // The server could not replay: the app must refetch.
    let body = json!({"subscription": id, "path": "/notes", "seq": 99, "recovered": false});
    p.drop_connection();
    p.reconnect();
    p.take();
    p.client.subscribed(sub, 200, body);
    p.step();
    let got = p.take();
    assert!(
        got.iter()
            .any(|e| *e == ClientEvent::ResyncRequired { sub }),
        "{got:?}"
    );
    let server_id = p.server_subs.last().unwrap().0.to_string();
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
fn a_refused_handshake_never_counts_as_open() {
    let now = origin();
    let mut c = ClientSession::new(
        now,
        ClientConfig::default(),
        "ws://h/org/app",
        Some("bad".into()),
        5,
    );
    while c.poll_event().is_some() {}
    c.handle_open(now);
    c.handle_frame(
        now,
        r#"{"id":null,"status":401,"body":{"error":"auth_bad_access_token"}}"#,
    )
    .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::ServerError { status: 401, .. }))
    );
    assert!(events.contains(&ClientEvent::AuthRequired));
    assert!(!events.contains(&ClientEvent::StateChanged(ConnectionState::Open)));
    // A socket that never greets is given up after the request timeout.
    let mut c = ClientSession::new(now, ClientConfig::default(), "ws://h/org/app", None, 5);
    while c.poll_event().is_some() {}
    c.handle_open(now);
    let at = c.poll_timeout().unwrap();
    assert_eq!(at, now + Duration::from_secs(30));
    c.handle_timeout(at);
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events.contains(&ClientEvent::StateChanged(ConnectionState::Reconnecting)),
        "{events:?}"
    );
}

#[test]
fn auth_failures_and_missing_apps() {
    let mut p = Pair::new();
    p.take();
    // An expiring token is announced on the connection; a new one goes out with AUTH.
    p.client
        .handle_frame(
            p.now,
            r#"{"id":null,"status":401,"body":{"error":"expired_token"}}"#,
        )
        .unwrap();
    p.step();
    let got = p.take();
    assert!(got.contains(&ClientEvent::AuthRequired));
    p.client.set_access_token(p.now, Some("t1".into()));
    assert!(p.client.poll_transmit().unwrap().contains("\"AUTH\""));
    assert!(p.client.connect_url().ends_with("access_token=t1"));
    // 4401 reconnects (with the newest token); 4404 ends the client.
    p.client.handle_close(p.now, Some(4401));
    assert!(p.client.poll_event().is_some());
    assert_eq!(p.client.state(), ConnectionState::Reconnecting);
    let mut fresh = ClientSession::new(p.now, ClientConfig::default(), "ws://h/x", None, 3);
    fresh.handle_close(p.now, Some(4404));
    assert_eq!(fresh.state(), ConnectionState::Closed);
    assert_eq!(
        fresh.poll_timeout(),
        None,
        "no reconnect for an app that does not exist"
    );
    assert!(fresh.handle_frame(p.now, "nonsense").is_err());
    assert!(fresh.handle_frame(p.now, "[1]").is_err());
}
