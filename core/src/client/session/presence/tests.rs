//! Presence and broadcast in simulated time: several clients, each with a real server session,
//! around one real [`PresenceBook`], with a fake host that moves frames the way the server's
//! does (a join is answered before any later change reaches the joiner). Each client's copy,
//! built only from its events the way the JavaScript host builds it, is checked against the
//! book. One scenario per test.

use super::*;
use crate::client::{ClientConfig, ConnectionState};
use crate::presence::{ConnId, NodeId, PresenceBook, PresenceConfig, PresenceUser, presence_name};
use crate::server::{ServerConfig, ServerEvent, ServerSession};
use crate::wire::PresenceAction;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

// Any origin will do: every later instant is derived from it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// Who is present, as a client shows it: username and connection states by uuid.
type View = BTreeMap<String, (String, Value)>;

struct Peer {
    client: ClientSession,
    /// The socket, as the server sees it.
    server: Option<(ServerSession, ConnId)>,
    uuid: String,
    username: String,
    events: Vec<ClientEvent>,
    /// Frames the client sent, as JSON.
    sent: Vec<Value>,
    /// The copy of each presence, built from events only.
    views: BTreeMap<PresenceId, View>,
}

struct Room {
    now: Instant,
    book: PresenceBook,
    peers: Vec<Peer>,
    next_conn: u64,
    /// The sockets present on each presence name.
    present: BTreeMap<String, BTreeSet<ConnId>>,
    /// The sockets subscribed to each presence name.
    subscribed: BTreeMap<String, BTreeSet<ConnId>>,
    /// Presence events to drop on their way to this peer (a lost frame).
    lose_presence_events_to: Option<usize>,
}

impl Room {
    fn new(names: &[&str]) -> Room {
        let now = origin();
        let config = PresenceConfig {
            max_state_bytes: 64,
            ..PresenceConfig::default()
        };
        let mut room = Room {
            now,
            book: PresenceBook::new(config, NodeId(1), now),
            peers: Vec::new(),
            next_conn: 1,
            present: BTreeMap::new(),
            subscribed: BTreeMap::new(),
            lose_presence_events_to: None,
        };
        for (i, name) in names.iter().enumerate() {
            let client = ClientSession::new(
                now,
                ClientConfig::default(),
                "ws://h/org/app",
                Some(format!("t-{name}")),
                i as u128 + 1,
            );
            room.peers.push(Peer {
                client,
                server: None,
                uuid: format!("u-{name}"),
                username: (*name).to_owned(),
                events: Vec::new(),
                sent: Vec::new(),
                views: BTreeMap::new(),
            });
            room.open(i);
        }
        room
    }

    /// Opens the socket peer `i` asked for; the server greets it as its user.
    fn open(&mut self, i: usize) {
        let mut server = ServerSession::accept(ServerConfig::default(), self.now);
        let greeting = json!({"connected": true, "user": self.peers[i].uuid});
        server.welcome(self.now, &greeting.to_string());
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.peers[i].server = Some((server, conn));
        self.step();
        assert_eq!(self.peers[i].client.state(), ConnectionState::Open);
    }

    /// Moves frames until nothing moves.
    fn step(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.peers.len() {
                moved |= self.step_peer(i);
            }
            if !moved {
                return;
            }
        }
    }

    fn step_peer(&mut self, i: usize) -> bool {
        let mut moved = false;
        while let Some(frame) = self.peers[i].client.poll_transmit() {
            moved = true;
            self.peers[i]
                .sent
                .push(serde_json::from_str(&frame).expect("JSON"));
            if let Some((s, _)) = self.peers[i].server.as_mut() {
                s.handle_text(self.now, &frame);
            }
        }
        while let Some(event) = self.peers[i]
            .server
            .as_mut()
            .and_then(|(s, _)| s.poll_event())
        {
            moved = true;
            self.serve(i, event);
        }
        let peer = &mut self.peers[i];
        if let Some((s, _)) = peer.server.as_mut() {
            while let Some(frame) = s.poll_transmit() {
                moved = true;
                if let Some(t) = frame.text() {
                    peer.client
                        .handle_frame(self.now, t)
                        .expect("server frames are valid");
                }
            }
        }
        while let Some(e) = peer.client.poll_event() {
            moved = true;
            apply(&mut peer.views, &e);
            peer.events.push(e);
        }
        moved
    }

    /// The server's side of one request of peer `i`.
    fn serve(&mut self, i: usize, event: ServerEvent) {
        let now = self.now;
        let (uuid, username) = (self.peers[i].uuid.clone(), self.peers[i].username.clone());
        let conn = self.peers[i].server.as_ref().expect("a socket").1;
        match event {
            ServerEvent::Presence {
                handle,
                path,
                action,
            } => {
                let name = presence_name(&path, Some(&uuid)).expect("a path with a presence");
                let (status, body) = match action {
                    PresenceAction::Join { state } => {
                        let user = PresenceUser { uuid, username };
                        match self.book.join(now, &name, conn, user, state) {
                            Ok(snapshot) => {
                                self.present.entry(name.clone()).or_default().insert(conn);
                                let body = json!({"path": name, "seq": snapshot.seq,
                                    "epoch": snapshot.epoch, "users": snapshot.users});
                                (200, body)
                            }
                            Err(e) => (413, json!({"error": e.code()})),
                        }
                    }
                    PresenceAction::Leave => {
                        let left = self.book.leave(now, &name, conn);
                        if let Some(p) = self.present.get_mut(&name) {
                            p.remove(&conn);
                        }
                        (200, json!({"path": name, "left": left}))
                    }
                };
                let (s, _) = self.peers[i].server.as_mut().expect("a socket");
                let _ = s.complete(now, handle, status, &body.to_string());
                self.deliver(Some(conn));
            }
            ServerEvent::Broadcast {
                handle,
                path,
                body_json,
                echo,
            } => {
                let name = presence_name(&path, Some(&uuid)).expect("a path with a presence");
                let mut targets: BTreeSet<ConnId> = self
                    .present
                    .get(&name)
                    .into_iter()
                    .chain(self.subscribed.get(&name))
                    .flatten()
                    .copied()
                    .collect();
                if echo {
                    targets.insert(conn);
                } else {
                    targets.remove(&conn);
                }
                let frame = json!({"event": "broadcast", "path": name,
                    "from": {"uuid": uuid, "username": username},
                    "body": serde_json::from_str::<Value>(&body_json).expect("JSON")});
                self.push_to(&targets, &frame.to_string());
                let (s, _) = self.peers[i].server.as_mut().expect("a socket");
                let body = json!({"path": name, "delivered": targets.len()});
                let _ = s.complete(now, handle, 200, &body.to_string());
            }
            ServerEvent::Subscribe {
                handle,
                subscription,
                path,
                ..
            } => {
                let name = presence_name(&path, Some(&uuid)).expect("a path with a presence");
                self.subscribed
                    .entry(name.clone())
                    .or_default()
                    .insert(conn);
                let body = json!({"subscription": subscription.to_string(), "path": path,
                    "name": name, "seq": 0});
                let (s, _) = self.peers[i].server.as_mut().expect("a socket");
                let _ = s.confirm_subscription(now, handle, 0, &body.to_string(), Vec::new());
            }
            ServerEvent::Request { handle, .. } => {
                let (s, _) = self.peers[i].server.as_mut().expect("a socket");
                let _ = s.complete(now, handle, 200, "{}");
            }
            ServerEvent::Unsubscribed { .. } | ServerEvent::Auth { .. } => {}
        }
    }

    /// Hands the book's events to the sockets present on their paths, but `cause`.
    fn deliver(&mut self, cause: Option<ConnId>) {
        while self.book.poll_transmit().is_some() {}
        while let Some(e) = self.book.poll_event() {
            let frame = json!({"event": "presence", "path": e.path, "kind": e.kind, "seq": e.seq,
                "epoch": e.epoch, "user": e.user, "connections": e.connections});
            let mut targets = self.present.get(&e.path).cloned().unwrap_or_default();
            if let Some(c) = cause {
                targets.remove(&c);
            }
            if let Some(lost) = self.lose_presence_events_to
                && let Some((_, c)) = &self.peers[lost].server
            {
                targets.remove(c);
            }
            self.push_to(&targets, &frame.to_string());
        }
    }

    fn push_to(&mut self, conns: &BTreeSet<ConnId>, frame: &str) {
        let frame: Arc<str> = frame.into();
        for peer in &mut self.peers {
            if let Some((s, c)) = peer.server.as_mut()
                && conns.contains(c)
            {
                s.handle_ephemeral(self.now, frame.clone());
            }
        }
    }

    /// Peer `i`'s socket drops: the server sees it close (it leaves everything at once).
    fn drop_connection(&mut self, i: usize) {
        let (_, conn) = self.peers[i].server.take().expect("a socket");
        for set in self
            .present
            .values_mut()
            .chain(self.subscribed.values_mut())
        {
            set.remove(&conn);
        }
        self.book.leave_connection(self.now, conn);
        self.deliver(None);
        self.peers[i].client.handle_close(self.now, None);
        self.step();
    }

    /// Peer `i` loses read access to presence `name`, which it joined as `path`: the server
    /// takes its socket out and says so.
    fn revoke(&mut self, i: usize, path: &str, name: &str) {
        let conn = self.peers[i].server.as_ref().expect("a socket").1;
        self.book.leave(self.now, name, conn);
        if let Some(p) = self.present.get_mut(name) {
            p.remove(&conn);
        }
        let (s, _) = self.peers[i].server.as_mut().expect("a socket");
        s.revoke_presence(self.now, path, name, "forbidden");
        self.deliver(Some(conn));
        self.step();
    }

    /// Waits out peer `i`'s backoff and opens the socket it asks for.
    fn reconnect(&mut self, i: usize) {
        self.now = self.peers[i].client.poll_timeout().expect("a timer");
        self.peers[i].client.handle_timeout(self.now);
        self.step();
        assert!(
            matches!(
                self.peers[i].events.last(),
                Some(ClientEvent::Connect { .. })
            ),
            "{:?}",
            self.peers[i].events.last()
        );
        self.open(i);
    }

    fn join(&mut self, i: usize, path: &str, state: Value) -> PresenceId {
        let id = self.peers[i]
            .client
            .presence(self.now, path, &state.to_string());
        self.step();
        id
    }

    fn take(&mut self, i: usize) -> Vec<ClientEvent> {
        std::mem::take(&mut self.peers[i].events)
    }

    /// Peer `i`'s copy of `presence` is the book's.
    fn assert_agrees(&self, i: usize, presence: PresenceId, name: &str) {
        let book: View = self
            .book
            .snapshot(name)
            .users
            .into_iter()
            .map(|u| {
                let conns = serde_json::to_value(&u.connections).expect("JSON");
                (u.uuid, (u.username, conns))
            })
            .collect();
        let view = self.peers[i]
            .views
            .get(&presence)
            .cloned()
            .unwrap_or_default();
        assert_eq!(view, book, "{}'s copy of {name}", self.peers[i].username);
    }

    fn frames(&self, i: usize, method: &str) -> Vec<Value> {
        self.peers[i]
            .sent
            .iter()
            .filter(|f| f["method"] == method)
            .cloned()
            .collect()
    }
}

/// Applies an event to the copies, as the JavaScript host does.
fn apply(views: &mut BTreeMap<PresenceId, View>, e: &ClientEvent) {
    match e {
        ClientEvent::PresenceChanged {
            presence,
            change,
            uuid,
            username,
            connections,
        } => {
            let view = views.entry(*presence).or_default();
            if *change == PresenceChange::Leave {
                view.remove(uuid);
            } else {
                let conns = serde_json::from_str(connections).expect("JSON");
                view.insert(uuid.clone(), (username.clone(), conns));
            }
        }
        ClientEvent::PresenceSynced {
            presence, users, ..
        } => {
            let users: Vec<Value> = serde_json::from_str(users).expect("JSON");
            let view = users
                .into_iter()
                .map(|u| {
                    let uuid = u["uuid"].as_str().expect("uuid").to_owned();
                    let name = u["username"].as_str().expect("username").to_owned();
                    (uuid, (name, u["connections"].clone()))
                })
                .collect();
            views.insert(*presence, view);
        }
        ClientEvent::PresenceRefused { presence, .. }
        | ClientEvent::PresenceRevoked { presence, .. }
        | ClientEvent::PresenceEnded { presence, .. } => {
            views.remove(presence);
        }
        _ => {}
    }
}

/// The presence events of a peer, as `(change, username)`, and its syncs as `("sync:" reason)`.
fn changes(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::PresenceChanged {
                change, username, ..
            } => Some(format!("{}:{username}", change.as_str())),
            ClientEvent::PresenceSynced { reason, .. } => Some(format!("sync:{}", reason.as_str())),
            _ => None,
        })
        .collect()
}

fn responses(events: &[ClientEvent]) -> Vec<(RequestId, u16, Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Response { id, status, body } => {
                Some((*id, *status, serde_json::from_str(body).expect("JSON")))
            }
            _ => None,
        })
        .collect()
}

const LOBBY: &str = "/groups/lobby";

#[test]
fn two_clients_see_each_other_join_change_and_leave() {
    let mut r = Room::new(&["ann", "bob"]);
    r.take(0);
    r.take(1);
    let a = r.join(0, "/Groups/Lobby/", json!({"status": "here"}));
    assert_eq!(changes(&r.take(0)), ["join:ann", "sync:join"]);
    let b = r.join(1, LOBBY, json!({}));
    assert_eq!(changes(&r.take(1)), ["join:ann", "join:bob", "sync:join"]);
    assert_eq!(changes(&r.take(0)), ["join:bob"]);
    r.assert_agrees(0, a, LOBBY);
    r.assert_agrees(1, b, LOBBY);

    // bob's new state: ann hears an update; bob's own copy shows it once the server took it.
    let id = r.peers[1]
        .client
        .presence_update(r.now, b, r#"{"typing":true}"#, None);
    r.step();
    assert_eq!(changes(&r.take(0)), ["update:bob"]);
    let got = r.take(1);
    assert_eq!(changes(&got), ["update:bob"]);
    assert_eq!(responses(&got)[0].0, id);
    assert_eq!(responses(&got)[0].1, 200);
    r.assert_agrees(0, a, LOBBY);
    r.assert_agrees(1, b, LOBBY);

    // bob leaves: ann hears it, bob is answered and hears nothing more of the lobby.
    let id = r.peers[1].client.presence_leave(r.now, b, None);
    r.step();
    assert_eq!(changes(&r.take(0)), ["leave:bob"]);
    assert_eq!(
        responses(&r.take(1)),
        [(id, 200, json!({"path": LOBBY, "left": true}))]
    );
    r.peers[0]
        .client
        .presence_update(r.now, a, r#"{"status":"away"}"#, None);
    r.step();
    assert!(changes(&r.take(1)).is_empty());
    r.assert_agrees(0, a, LOBBY);
    // Left is left: a change of it fails.
    let late = r.peers[1].client.presence_update(r.now, b, "{}", None);
    r.step();
    assert!(r.take(1).contains(&ClientEvent::RequestFailed {
        id: late,
        error: ClientError::NotPresent
    }));
}

#[test]
fn a_reconnect_joins_again_with_the_last_state_and_reports_what_changed_meanwhile() {
    let mut r = Room::new(&["ann", "bob", "cat", "dan"]);
    let a = r.join(0, LOBBY, json!({"n": 0}));
    let b = r.join(1, LOBBY, json!({}));
    let c = r.join(2, LOBBY, json!({}));
    for i in 0..4 {
        r.take(i);
    }
    r.drop_connection(0);
    // bob and cat see ann leave: a dropped socket is gone at once.
    assert_eq!(changes(&r.take(1)), ["leave:ann"]);
    // Meanwhile bob changes, cat leaves, dan arrives, and ann changes her state offline.
    r.peers[1]
        .client
        .presence_update(r.now, b, r#"{"typing":true}"#, None);
    r.peers[2].client.presence_leave(r.now, c, None);
    let d = r.join(3, LOBBY, json!({"new": true}));
    let offline = r.peers[0]
        .client
        .presence_update(r.now, a, r#"{"n":1}"#, None);
    let offline_too = r.peers[0]
        .client
        .presence_update(r.now, a, r#"{"n":2}"#, None);
    r.step();
    assert!(responses(&r.peers[0].events).is_empty(), "the changes wait");
    r.take(0);
    r.take(1);
    r.reconnect(0);

    // One join, with the last state; both changes are answered by it.
    let joins = r.frames(0, "PRESENCE");
    assert_eq!(joins.len(), 2, "{joins:?}");
    assert_eq!(joins[1]["body"], json!({"state": {"n": 2}}));
    let got = r.take(0);
    let mut seen = changes(&got);
    let sync = seen.pop();
    seen.sort();
    assert_eq!(
        seen,
        ["join:dan", "leave:cat", "update:ann", "update:bob"],
        "what changed while away"
    );
    assert_eq!(sync.as_deref(), Some("sync:reconnect"));
    let answered: Vec<(RequestId, u16)> = responses(&got)
        .into_iter()
        .map(|(id, s, _)| (id, s))
        .collect();
    assert_eq!(answered, [(offline, 200), (offline_too, 200)]);
    r.assert_agrees(0, a, LOBBY);
    // The others see ann come back, with her new state.
    assert_eq!(changes(&r.take(1)), ["join:ann"]);
    r.assert_agrees(1, b, LOBBY);
    r.assert_agrees(3, d, LOBBY);
    // Events go on from the new snapshot.
    r.peers[3].client.presence_leave(r.now, d, None);
    r.step();
    assert_eq!(changes(&r.take(0)), ["leave:dan"]);
    r.assert_agrees(0, a, LOBBY);
}

#[test]
fn an_event_that_skips_a_number_makes_the_presence_ask_again() {
    let mut r = Room::new(&["ann", "bob"]);
    let a = r.join(0, LOBBY, json!({}));
    let b = r.join(1, LOBBY, json!({"n": 0}));
    r.take(0);
    r.take(1);
    // One change of bob's never reaches ann.
    r.lose_presence_events_to = Some(0);
    r.peers[1]
        .client
        .presence_update(r.now, b, r#"{"n":1}"#, None);
    r.step();
    r.lose_presence_events_to = None;
    assert!(changes(&r.take(0)).is_empty());
    // The next one shows the gap: ann asks again, and her copy is the book's.
    r.peers[1]
        .client
        .presence_update(r.now, b, r#"{"n":2}"#, None);
    r.step();
    assert_eq!(r.frames(0, "PRESENCE").len(), 2, "a second join, to resync");
    assert_eq!(changes(&r.take(0)), ["update:bob", "sync:resync"]);
    r.assert_agrees(0, a, LOBBY);
    // Its own state is unchanged, so nobody heard of the second join: bob saw only his own.
    assert_eq!(changes(&r.take(1)), ["update:bob", "update:bob"]);
}

#[test]
fn broadcasts_reach_the_subscriptions_and_presences_of_their_path_once() {
    let mut r = Room::new(&["ann", "bob"]);
    let sub = r.peers[0]
        .client
        .subscribe(r.now, "/Groups/LOBBY", None, false, None);
    let me = r.peers[0]
        .client
        .subscribe(r.now, "/users/me", None, false, None);
    r.peers[0]
        .client
        .subscribe(r.now, "/groups/lobby/feed", None, false, None);
    let a = r.join(0, LOBBY, json!({}));
    r.take(0);
    let id = r.peers[1]
        .client
        .broadcast(r.now, LOBBY, r#"{"typing":true}"#, false, None);
    r.step();
    let got = r.take(0);
    let broadcasts: Vec<&ClientEvent> = got
        .iter()
        .filter(|e| matches!(e, ClientEvent::Broadcast { .. }))
        .collect();
    assert_eq!(
        broadcasts,
        [&ClientEvent::Broadcast {
            path: LOBBY.into(),
            from: r#"{"uuid":"u-bob","username":"bob"}"#.into(),
            body: r#"{"typing":true}"#.into(),
            subs: vec![sub],
            presences: vec![a],
        }]
    );
    let answered = r.take(1);
    assert_eq!(
        responses(&answered),
        [(id, 200, json!({"path": LOBBY, "delivered": 1}))]
    );
    assert!(
        !answered
            .iter()
            .any(|e| matches!(e, ClientEvent::Broadcast { .. })),
        "no echo unless asked"
    );
    // `/users/me` is ann's uuid: a broadcast to it reaches that subscription.
    r.peers[1]
        .client
        .broadcast(r.now, "/users/u-ann", "1", true, None);
    r.step();
    assert!(r.take(0).iter().any(
        |e| matches!(e, ClientEvent::Broadcast { subs, presences, .. } if *subs == [me] && presences.is_empty())
    ));
    // Echoed to the sender, which watches nothing there.
    assert!(r.take(1).iter().any(
        |e| matches!(e, ClientEvent::Broadcast { body, subs, .. } if body == "1" && subs.is_empty())
    ));
}

#[test]
fn broadcasts_are_never_held_while_offline_nor_sent_again() {
    let mut r = Room::new(&["ann", "bob"]);
    r.join(1, LOBBY, json!({}));
    r.drop_connection(0);
    r.take(0);
    let offline = r.peers[0].client.broadcast(r.now, LOBBY, "1", false, None);
    r.reconnect(0);
    // In flight when the socket drops (the host took it, the server never read it): it may
    // have gone out, so it fails, and is not sent again.
    let in_flight = r.peers[0].client.broadcast(r.now, LOBBY, "2", false, None);
    let frame = r.peers[0].client.poll_transmit().expect("out at once");
    assert!(frame.contains("\"BROADCAST\""), "{frame}");
    r.drop_connection(0);
    r.reconnect(0);
    let got = r.take(0);
    assert!(got.contains(&ClientEvent::RequestFailed {
        id: offline,
        error: ClientError::Disconnected
    }));
    assert!(got.contains(&ClientEvent::RequestFailed {
        id: in_flight,
        error: ClientError::Disconnected
    }));
    assert!(
        r.frames(0, "BROADCAST").is_empty(),
        "the offline one never went out, the dropped one never again"
    );
    assert!(
        !r.take(1)
            .iter()
            .any(|e| matches!(e, ClientEvent::Broadcast { .. }))
    );
}

#[test]
fn a_state_over_the_frame_limit_is_never_sent() {
    let mut r = Room::new(&["ann"]);
    r.take(0);
    let limit = ClientConfig::default().max_frame_bytes;
    let huge = json!({"s": "x".repeat(limit)});
    // A join over the limit ends at once: sent, the server would close the socket, and the
    // join would go again after every reconnect.
    let too_big = r.join(0, LOBBY, huge.clone());
    let got = r.take(0);
    assert!(
        got.iter().any(|e| matches!(e, ClientEvent::PresenceEnded { presence, error: ClientError::FrameTooLarge(n) } if *presence == too_big && *n > limit)),
        "{got:?}"
    );
    // An update over it fails alone; the presence keeps the state the server has.
    let p = r.join(0, LOBBY, json!({"v": 1}));
    r.step();
    r.take(0);
    let update = r.peers[0]
        .client
        .presence_update(r.now, p, &huge.to_string(), None);
    r.step();
    let got = r.take(0);
    assert!(
        got.iter().any(|e| matches!(e, ClientEvent::RequestFailed { id, error: ClientError::FrameTooLarge(_) } if *id == update)),
        "{got:?}"
    );
    r.drop_connection(0);
    r.reconnect(0);
    r.take(0);
    let joins = r.frames(0, "PRESENCE");
    assert!(
        joins.iter().all(|f| f["body"]["state"]["s"].is_null()),
        "no join carried the huge state: {joins:?}"
    );
    assert_eq!(
        joins.last().map(|f| f["body"]["state"].clone()),
        Some(json!({"v": 1}))
    );
}

#[test]
fn refusals_timeouts_doubles_and_close_end_a_presence() {
    let mut r = Room::new(&["ann"]);
    r.take(0);
    // A state over the server's limit is refused; the presence is gone.
    let big = json!({"note": "x".repeat(100)});
    let refused = r.join(0, LOBBY, big);
    let got = r.take(0);
    assert!(
        matches!(got[..], [ClientEvent::PresenceRefused { presence, status: 413, .. }] if presence == refused),
        "{got:?}"
    );
    // One state per socket and path: a second presence on the same path ends, at once when
    // written alike, else once the server names it; then the first joins again with its own
    // state, which the second's join replaced on the server.
    let a = r.join(0, LOBBY, json!({}));
    let twin = r.join(0, LOBBY, json!({}));
    assert!(r.take(0).contains(&ClientEvent::PresenceEnded {
        presence: twin,
        error: ClientError::AlreadyPresent
    }));
    let twin = r.join(0, "/GROUPS/lobby", json!({"twin": true}));
    assert!(r.take(0).contains(&ClientEvent::PresenceEnded {
        presence: twin,
        error: ClientError::AlreadyPresent
    }));
    let sent = r.frames(0, "PRESENCE");
    assert_eq!(
        sent[sent.len() - 2..]
            .iter()
            .map(|f| (f["path"].clone(), f["body"]["state"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!("/GROUPS/lobby"), json!({"twin": true})),
            (json!(LOBBY), json!({}))
        ]
    );
    // Leaving while offline needs no server: answered at once, and a change still waiting
    // for the connection fails.
    r.drop_connection(0);
    r.take(0);
    let waiting = r.peers[0].client.presence_update(r.now, a, "{}", None);
    let left = r.peers[0].client.presence_leave(r.now, a, None);
    r.step();
    let got = r.take(0);
    assert!(got.contains(&ClientEvent::RequestFailed {
        id: waiting,
        error: ClientError::NotPresent
    }));
    assert_eq!(
        responses(&got),
        [(left, 200, json!({"path": LOBBY, "left": false}))]
    );
    // A first join that the connection never carries gives up after the request timeout.
    let never = r.peers[0].client.presence(r.now, "/groups/x", "{}");
    r.now += ClientConfig::default().request_timeout;
    r.peers[0].client.handle_timeout(r.now);
    r.step();
    assert!(r.take(0).contains(&ClientEvent::PresenceEnded {
        presence: never,
        error: ClientError::Timeout(30_000)
    }));
    // Closing ends the rest (the backoff is over: the client is connecting).
    r.open(0);
    let last = r.join(0, LOBBY, json!({}));
    r.peers[0].client.close(r.now);
    r.step();
    assert!(r.take(0).contains(&ClientEvent::PresenceEnded {
        presence: last,
        error: ClientError::Closed
    }));
    assert_eq!(
        r.frames(0, "PRESENCE").len(),
        5,
        "the refused one, the lobby, the twin written otherwise, the lobby's own state again, the last: none offline, none for the twin written alike"
    );
}

#[test]
fn a_revoked_presence_ends_the_others_see_a_leave_and_a_reconnect_does_not_join_it_again() {
    let mut r = Room::new(&["ann", "bob"]);
    let a = r.join(0, "/Groups/Lobby", json!({"n": 1}));
    let b = r.join(1, LOBBY, json!({}));
    let kept = r.join(0, "/groups/other", json!({}));
    r.take(0);
    r.take(1);
    r.revoke(0, "/Groups/Lobby", LOBBY);
    assert_eq!(
        r.take(0),
        [ClientEvent::PresenceRevoked {
            presence: a,
            reason: "forbidden".into()
        }]
    );
    assert_eq!(changes(&r.take(1)), ["leave:ann"]);
    r.assert_agrees(1, b, LOBBY);
    assert!(!r.peers[0].views.contains_key(&a), "ann's copy is gone");
    // Bob's later changes are not ann's business: nothing reaches her.
    r.peers[1]
        .client
        .presence_update(r.now, b, r#"{"v":2}"#, None);
    r.step();
    assert!(r.take(0).is_empty());
    // Her presence is over: updating it fails, and a reconnect joins only the other path.
    let id = r.peers[0].client.presence_update(r.now, a, "{}", None);
    r.step();
    assert!(r.take(0).contains(&ClientEvent::RequestFailed {
        id,
        error: ClientError::NotPresent
    }));
    let before = r.frames(0, "PRESENCE").len();
    r.drop_connection(0);
    r.reconnect(0);
    let rejoined: Vec<Value> = r.frames(0, "PRESENCE")[before..].to_vec();
    assert_eq!(rejoined.len(), 1, "{rejoined:?}");
    assert_eq!(rejoined[0]["path"], "/groups/other");
    r.assert_agrees(0, kept, "/groups/other");
}

#[test]
fn a_refused_state_fails_its_own_call_and_the_presence_goes_on_with_the_last_taken() {
    let mut r = Room::new(&["ann", "bob"]);
    let a = r.join(0, LOBBY, json!({"n": 1}));
    r.join(1, LOBBY, json!({}));
    r.take(0);
    let big = json!({"note": "x".repeat(100)}).to_string();
    // Refused on an open socket: the next join carries the state the server holds.
    let online = r.peers[0].client.presence_update(r.now, a, &big, None);
    r.step();
    assert!(matches!(responses(&r.take(0))[..], [(id, 413, _)] if id == online));
    r.drop_connection(0);
    r.reconnect(0);
    let joins = r.frames(0, "PRESENCE");
    assert_eq!(
        joins.last().expect("a join")["body"],
        json!({"state": {"n": 1}})
    );
    // Refused when carried by the join after a reconnect: that join is tried again with the
    // state the server took last, and the presence goes on.
    r.drop_connection(0);
    let offline = r.peers[0].client.presence_update(r.now, a, &big, None);
    r.take(0);
    r.reconnect(0);
    let got = r.take(0);
    assert!(
        matches!(responses(&got)[..], [(id, 413, _)] if id == offline),
        "{got:?}"
    );
    assert_eq!(
        changes(&got).last().map(String::as_str),
        Some("sync:reconnect")
    );
    r.assert_agrees(0, a, LOBBY);
    assert!(
        r.book
            .snapshot(LOBBY)
            .users
            .iter()
            .any(|u| u.username == "ann")
    );
}
