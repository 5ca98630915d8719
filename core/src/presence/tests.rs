//! Deterministic tests of presence: books as nodes, a simulated bus between them, simulated
//! time. One scenario per test.

use super::*;
use serde_json::json;

// Any origin will do: every later instant is derived from it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn config() -> PresenceConfig {
    PresenceConfig {
        max_state_bytes: 64,
        node_ttl: Duration::from_secs(15),
        heartbeat_interval: Duration::from_secs(5),
        history: 4,
        max_paths_per_connection: 3,
        max_dump_entries: 2,
    }
}

fn user(name: &str) -> PresenceUser {
    PresenceUser {
        uuid: format!("uuid-{name}"),
        username: name.to_owned(),
    }
}

const LOBBY: &str = "/groups/lobby";

/// A view of a path as a client keeps it: uuid → (username, connection states).
type View = BTreeMap<String, (String, Vec<Value>)>;

fn view(snapshot: &PresenceSnapshot) -> View {
    snapshot
        .users
        .iter()
        .map(|m| {
            let states = m.connections.iter().map(|c| c.state.clone()).collect();
            (m.uuid.clone(), (m.username.clone(), states))
        })
        .collect()
}

/// Applies an event the way a client does: replace the user, or remove it.
fn apply(view: &mut View, event: &PresenceEvent) {
    match event.kind {
        PresenceKind::Leave => {
            view.remove(&event.user.uuid);
        }
        PresenceKind::Join | PresenceKind::Update => {
            let states = event.connections.iter().map(|c| c.state.clone()).collect();
            view.insert(
                event.user.uuid.clone(),
                (event.user.username.clone(), states),
            );
        }
    }
}

/// Several books on one bus. Every published message goes, as JSON, to every book (the
/// sender included, as NATS echoes it unless told not to).
struct Cluster {
    books: Vec<PresenceBook>,
    events: Vec<Vec<PresenceEvent>>,
    now: Instant,
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let now = origin();
        Cluster {
            books: (1..=n)
                .map(|i| PresenceBook::new(config(), NodeId(i), now))
                .collect(),
            events: (0..n).map(|_| Vec::new()).collect(),
            now,
        }
    }

    /// Moves every book's events into its log.
    fn collect(&mut self) {
        for (book, log) in self.books.iter_mut().zip(&mut self.events) {
            while let Some(e) = book.poll_event() {
                log.push(e);
            }
        }
    }

    /// Takes the events book `i` queued since the last call.
    fn take_events(&mut self, i: usize) -> Vec<PresenceEvent> {
        self.collect();
        std::mem::take(&mut self.events[i])
    }

    /// Publishes everything queued until the bus is quiet; `lose` decides which messages never
    /// arrive at a book (`(message, receiver)`).
    fn deliver_with(&mut self, mut lose: impl FnMut(&PresenceMessage, usize) -> bool) {
        for _ in 0..100 {
            let mut sent = Vec::new();
            for book in &mut self.books {
                while let Some(m) = book.poll_transmit() {
                    sent.push(m);
                }
            }
            if sent.is_empty() {
                self.collect();
                return;
            }
            for m in sent {
                let text = serde_json::to_string(&m).unwrap();
                for (i, book) in self.books.iter_mut().enumerate() {
                    if !lose(&m, i) {
                        book.handle_message(self.now, serde_json::from_str(&text).unwrap());
                    }
                }
            }
        }
        panic!("the bus never went quiet");
    }

    fn deliver(&mut self) {
        self.deliver_with(|_, _| false);
    }

    /// Runs every book's timers up to `now + d`, delivering as it goes.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.books.iter().filter_map(|b| b.poll_timeout()).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for b in &mut self.books {
                        if b.poll_timeout().is_some_and(|t| t <= self.now) {
                            b.handle_timeout(self.now);
                        }
                    }
                    self.deliver();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn view(&self, i: usize, path: &str) -> View {
        view(&self.books[i].snapshot(path))
    }

    fn assert_converged(&self, paths: &[&str]) {
        for path in paths {
            let first = self.view(0, path);
            for i in 1..self.books.len() {
                assert_eq!(self.view(i, path), first, "book {i} disagrees on {path}");
            }
        }
    }
}

fn book() -> (PresenceBook, Instant) {
    let now = origin();
    let mut book = PresenceBook::new(config(), NodeId(1), now);
    // The greeting: a resync request to everybody.
    assert_matches_resync(book.poll_transmit(), None);
    (book, now)
}

fn assert_matches_resync(msg: Option<PresenceMessage>, want: Option<NodeId>) {
    match msg {
        Some(PresenceMessage::ResyncRequest { to, .. }) if to == want => {}
        other => panic!("expected a resync request to {want:?}, got {other:?}"),
    }
}

fn events(book: &mut PresenceBook) -> Vec<PresenceEvent> {
    std::iter::from_fn(|| book.poll_event()).collect()
}

fn transmits(book: &mut PresenceBook) -> Vec<PresenceMessage> {
    std::iter::from_fn(|| book.poll_transmit()).collect()
}

fn kinds(events: &[PresenceEvent]) -> Vec<(PresenceKind, &str, usize)> {
    events
        .iter()
        .map(|e| (e.kind, e.user.username.as_str(), e.connections.len()))
        .collect()
}

#[test]
fn a_join_answers_a_snapshot_with_the_joiner() {
    let (mut book, now) = book();
    let snap = book
        .join(
            now,
            LOBBY,
            ConnId(1),
            user("ann"),
            json!({"status": "here"}),
        )
        .unwrap();
    assert_eq!(snap.seq, 1);
    assert_eq!(snap.epoch, "0000000000000001.1");
    assert_eq!(
        serde_json::to_value(&snap).unwrap(),
        json!({"seq": 1, "epoch": "0000000000000001.1", "users": [
            {"uuid": "uuid-ann", "username": "ann", "connections": [{"state": {"status": "here"}}]}
        ]})
    );
    let evs = events(&mut book);
    assert_eq!(kinds(&evs), [(PresenceKind::Join, "ann", 1)]);
    assert_eq!(
        serde_json::to_value(&evs[0]).unwrap(),
        json!({"path": LOBBY, "epoch": "0000000000000001.1", "seq": 1, "kind": "join",
               "user": {"uuid": "uuid-ann", "username": "ann"},
               "connections": [{"state": {"status": "here"}}]})
    );
    let sent = transmits(&mut book);
    assert_eq!(
        serde_json::to_value(&sent).unwrap(),
        json!([{"type": "join", "node": 1, "counter": 2, "path": LOBBY, "conn": 1,
                "user": {"uuid": "uuid-ann", "username": "ann"}, "state": {"status": "here"}}])
    );
    // Nobody on another path: an empty snapshot, seq 0.
    let empty = book.snapshot("/groups/other");
    assert_eq!((empty.seq, empty.users.len()), (0, 0));
}

#[test]
fn two_connections_of_one_user_are_one_presence() {
    let (mut book, now) = book();
    book.join(now, LOBBY, ConnId(1), user("ann"), json!({"tab": 1}))
        .unwrap();
    let snap = book
        .join(now, LOBBY, ConnId(2), user("ann"), json!({"tab": 2}))
        .unwrap();
    assert_eq!(snap.users.len(), 1);
    assert_eq!(snap.users[0].connections.len(), 2);
    assert!(book.leave(now, LOBBY, ConnId(1)));
    assert!(!book.leave(now, LOBBY, ConnId(1)), "already gone");
    assert!(book.leave(now, LOBBY, ConnId(2)));
    let evs = events(&mut book);
    assert_eq!(
        kinds(&evs),
        [
            (PresenceKind::Join, "ann", 1),
            (PresenceKind::Update, "ann", 2),
            (PresenceKind::Update, "ann", 1),
            (PresenceKind::Leave, "ann", 0),
        ]
    );
    assert_eq!(evs[2].connections[0].state, json!({"tab": 2}));
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // Nobody left: the path is forgotten.
    assert_eq!(book.path_count(), 0);
}

#[test]
fn an_update_changes_the_state_once() {
    let (mut book, now) = book();
    book.join(
        now,
        LOBBY,
        ConnId(1),
        user("ann"),
        json!({"status": "here"}),
    )
    .unwrap();
    book.update(now, LOBBY, ConnId(1), json!({"status": "away"}))
        .unwrap();
    // The same state again, and the same join again, change nothing.
    book.update(now, LOBBY, ConnId(1), json!({"status": "away"}))
        .unwrap();
    book.join(
        now,
        LOBBY,
        ConnId(1),
        user("ann"),
        json!({"status": "away"}),
    )
    .unwrap();
    let evs = events(&mut book);
    assert_eq!(
        kinds(&evs),
        [
            (PresenceKind::Join, "ann", 1),
            (PresenceKind::Update, "ann", 1)
        ]
    );
    assert_eq!(evs[1].connections[0].state, json!({"status": "away"}));
    let sent = transmits(&mut book);
    assert_eq!(sent.len(), 2);
    assert!(matches!(&sent[1], PresenceMessage::Update { state, .. } if state["status"] == "away"));
    // Joining again with a new state is an update too.
    book.join(
        now,
        LOBBY,
        ConnId(1),
        user("ann"),
        json!({"status": "back"}),
    )
    .unwrap();
    assert_eq!(
        kinds(&events(&mut book)),
        [(PresenceKind::Update, "ann", 1)]
    );
}

#[test]
fn a_connection_joining_again_as_another_user_moves() {
    let (mut book, now) = book();
    book.join(now, LOBBY, ConnId(1), user("ann"), json!({}))
        .unwrap();
    book.join(now, LOBBY, ConnId(1), user("bob"), json!({}))
        .unwrap();
    assert_eq!(
        kinds(&events(&mut book)),
        [
            (PresenceKind::Join, "ann", 1),
            (PresenceKind::Leave, "ann", 0),
            (PresenceKind::Join, "bob", 1),
        ]
    );
    assert_eq!(view(&book.snapshot(LOBBY)).len(), 1);
}

#[test]
fn states_are_small_objects_and_paths_are_bounded() {
    let (mut book, now) = book();
    let big = json!({"text": "x".repeat(64)});
    assert_eq!(
        book.join(now, LOBBY, ConnId(1), user("ann"), big.clone()),
        Err(PresenceError::StateTooLarge { size: 75, max: 64 })
    );
    assert_eq!(
        book.join(now, LOBBY, ConnId(1), user("ann"), json!("away")),
        Err(PresenceError::NotAnObject)
    );
    assert_eq!(
        book.update(now, LOBBY, ConnId(1), json!({})),
        Err(PresenceError::NotJoined)
    );
    book.join(now, LOBBY, ConnId(1), user("ann"), json!({}))
        .unwrap();
    assert_eq!(
        book.update(now, LOBBY, ConnId(1), big).unwrap_err().code(),
        "state_too_large"
    );
    assert_eq!(
        book.update(now, LOBBY, ConnId(1), json!([1])),
        Err(PresenceError::NotAnObject)
    );
    book.join(now, "/groups/a", ConnId(1), user("ann"), json!({}))
        .unwrap();
    book.join(now, "/groups/b", ConnId(1), user("ann"), json!({}))
        .unwrap();
    assert_eq!(
        book.join(now, "/groups/c", ConnId(1), user("ann"), json!({})),
        Err(PresenceError::TooManyPaths { max: 3 })
    );
    // Joining a path it is on is still allowed at the limit, and another connection has its
    // own allowance.
    book.join(now, "/groups/b", ConnId(1), user("ann"), json!({"x": 1}))
        .unwrap();
    book.join(now, "/groups/c", ConnId(2), user("ann"), json!({}))
        .unwrap();
    // Refusals changed nothing.
    assert_eq!(
        book.snapshot(LOBBY).users[0].connections[0].state,
        json!({})
    );
    assert_eq!(book.path_count(), 4);
}

#[test]
fn closing_a_connection_leaves_every_path() {
    let (mut book, now) = book();
    for path in ["/groups/a", "/groups/b", "/users/ann/feed"] {
        book.join(now, path, ConnId(1), user("ann"), json!({}))
            .unwrap();
    }
    book.join(now, "/groups/a", ConnId(2), user("bob"), json!({}))
        .unwrap();
    transmits(&mut book);
    events(&mut book);
    book.leave_connection(now, ConnId(1));
    let evs = events(&mut book);
    assert_eq!(evs.len(), 3);
    assert!(
        evs.iter()
            .all(|e| e.kind == PresenceKind::Leave && e.user.username == "ann")
    );
    let sent = transmits(&mut book);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|m| matches!(
        m,
        PresenceMessage::Leave {
            conn: ConnId(1),
            ..
        }
    )));
    assert_eq!(book.path_count(), 1, "only bob's path is remembered");
    assert_eq!(
        book.join(now, "/groups/c", ConnId(1), user("ann"), json!({}))
            .map(|_| ()),
        Ok(())
    );
    // Closing an unknown connection is a no-op.
    transmits(&mut book);
    book.leave_connection(now, ConnId(99));
    assert!(transmits(&mut book).is_empty());
}

#[test]
fn two_nodes_converge() {
    let mut c = Cluster::new(2);
    c.deliver();
    let now = c.now;
    c.books[0]
        .join(now, LOBBY, ConnId(1), user("ann"), json!({"tab": 1}))
        .unwrap();
    c.books[1]
        .join(now, LOBBY, ConnId(1), user("ann"), json!({"tab": 2}))
        .unwrap();
    c.books[1]
        .join(now, LOBBY, ConnId(2), user("bob"), json!({}))
        .unwrap();
    c.deliver();
    c.assert_converged(&[LOBBY]);
    let v = c.view(0, LOBBY);
    // Ann's connections in node order, on both nodes.
    assert_eq!(v["uuid-ann"].1, [json!({"tab": 1}), json!({"tab": 2})]);
    // Each node saw ann join once, then her other connection as an update.
    let evs = c.take_events(0);
    assert_eq!(
        kinds(&evs),
        [
            (PresenceKind::Join, "ann", 1),
            (PresenceKind::Update, "ann", 2),
            (PresenceKind::Join, "bob", 1),
        ]
    );
    c.books[1].leave_connection(now, ConnId(1));
    c.deliver();
    assert_eq!(kinds(&c.take_events(0)), [(PresenceKind::Update, "ann", 1)]);
    c.assert_converged(&[LOBBY]);
}

#[test]
fn a_node_joining_late_gets_the_others_entries() {
    let now = origin();
    let mut a = PresenceBook::new(config(), NodeId(1), now);
    for i in 0..5 {
        a.join(now, LOBBY, ConnId(i), user(&format!("u{i}")), json!({}))
            .unwrap();
    }
    transmits(&mut a);
    let mut b = PresenceBook::new(config(), NodeId(2), now);
    let hello = b.poll_transmit().unwrap();
    a.handle_message(now, hello);
    // Five entries in parts of two.
    let dump = transmits(&mut a);
    assert_eq!(dump.len(), 3);
    assert!(matches!(
        dump[0],
        PresenceMessage::Dump {
            first: true,
            more: true,
            ..
        }
    ));
    assert!(matches!(
        dump[2],
        PresenceMessage::Dump {
            first: false,
            more: false,
            ..
        }
    ));
    for m in dump {
        b.handle_message(now, m);
    }
    assert_eq!(view(&b.snapshot(LOBBY)), view(&a.snapshot(LOBBY)));
    assert_eq!(events(&mut b).len(), 5);
    assert!(
        transmits(&mut b).is_empty(),
        "a dump with a gap before it needs no resync"
    );
}

#[test]
fn a_lost_dump_part_asks_for_another_dump() {
    let now = origin();
    let mut a = PresenceBook::new(config(), NodeId(1), now);
    for i in 0..5 {
        a.join(now, LOBBY, ConnId(i), user(&format!("u{i}")), json!({}))
            .unwrap();
    }
    transmits(&mut a);
    let mut b = PresenceBook::new(config(), NodeId(2), now);
    a.handle_message(now, b.poll_transmit().unwrap());
    let dump = transmits(&mut a);
    b.handle_message(now, dump[0].clone());
    b.handle_message(now, dump[2].clone());
    assert!(events(&mut b).is_empty(), "half a dump is never applied");
    let ask = transmits(&mut b);
    assert_matches_resync(ask.into_iter().next(), Some(NodeId(1)));
    a.handle_message(
        now,
        PresenceMessage::ResyncRequest {
            node: NodeId(2),
            counter: 2,
            to: Some(NodeId(1)),
        },
    );
    for m in transmits(&mut a) {
        b.handle_message(now, m);
    }
    assert_eq!(b.snapshot(LOBBY).users.len(), 5);
}

#[test]
fn a_silent_node_expires_after_its_ttl() {
    let mut c = Cluster::new(2);
    c.deliver();
    let now = c.now;
    c.books[1]
        .join(now, LOBBY, ConnId(1), user("bob"), json!({}))
        .unwrap();
    c.books[1]
        .join(now, "/groups/b", ConnId(1), user("bob"), json!({}))
        .unwrap();
    c.deliver();
    c.take_events(0);
    // Both alive: heartbeats keep node 2 present well past the ttl.
    c.run_for(Duration::from_secs(60));
    assert_eq!(c.books[0].snapshot(LOBBY).users.len(), 1);
    assert!(c.take_events(0).is_empty());
    // Node 2 dies: nothing more from it.
    let dead = c.books.pop().unwrap();
    c.events.pop();
    let died_at = c.now;
    c.run_for(Duration::from_secs(14));
    assert_eq!(c.books[0].snapshot(LOBBY).users.len(), 1, "not yet");
    c.run_for(Duration::from_secs(2));
    let evs = c.take_events(0);
    assert_eq!(
        kinds(&evs),
        [
            (PresenceKind::Leave, "bob", 0),
            (PresenceKind::Leave, "bob", 0)
        ]
    );
    assert!(c.now - died_at <= config().node_ttl + Duration::from_secs(1));
    assert_eq!(c.books[0].path_count(), 0);
    assert_eq!(c.books[0].remote_node_count(), 0);
    drop(dead);
}

#[test]
fn a_node_saying_bye_leaves_at_once() {
    let mut c = Cluster::new(2);
    c.deliver();
    let now = c.now;
    c.books[1]
        .join(now, LOBBY, ConnId(1), user("bob"), json!({}))
        .unwrap();
    c.deliver();
    c.take_events(0);
    c.books[1].shutdown(now);
    c.deliver();
    assert_eq!(kinds(&c.take_events(0)), [(PresenceKind::Leave, "bob", 0)]);
    assert_eq!(c.books[0].remote_node_count(), 0);
}

/// A node shutting down closes its sockets after its bye; their leaves, its heartbeats and an
/// answer to a resync request would make the others hold it again (a dump brings its entries
/// back until they expire), so nothing goes out after the bye.
#[test]
fn after_its_bye_a_node_sends_nothing() {
    let mut c = Cluster::new(2);
    c.deliver();
    let now = c.now;
    for (conn, name) in [(1, "bob"), (2, "cy")] {
        c.books[1]
            .join(now, LOBBY, ConnId(conn), user(name), json!({}))
            .unwrap();
    }
    c.deliver();
    c.take_events(0);
    c.books[1].shutdown(now);
    assert!(c.books[1].is_shut_down());
    // Its sockets close while the bye is still on its way, and node 1 asks everyone for
    // their entries.
    c.books[1].leave_connection(now, ConnId(1));
    c.books[0].handle_bus_restored(now);
    let sent = transmits(&mut c.books[1]);
    assert!(
        matches!(sent.as_slice(), [PresenceMessage::Bye { .. }]),
        "only the bye: {sent:?}"
    );
    for m in sent {
        c.books[0].handle_message(now, m);
    }
    c.deliver();
    assert_eq!(
        kinds(&c.take_events(0)),
        [
            (PresenceKind::Leave, "bob", 0),
            (PresenceKind::Leave, "cy", 0)
        ]
    );
    // Heartbeat after heartbeat, node 2 stays silent and node 1 never holds it again.
    c.books[1].shutdown(now);
    c.run_for(Duration::from_secs(20));
    assert!(transmits(&mut c.books[1]).is_empty());
    assert_eq!(c.books[0].remote_node_count(), 0);
    assert_eq!(c.books[0].path_count(), 0);
    // Its own sockets still leave its own book (its watchers get the events while closing).
    assert_eq!(c.books[1].snapshot(LOBBY).users.len(), 1);
}

#[test]
fn a_lost_message_is_noticed_at_the_next_heartbeat_and_resynced() {
    let mut c = Cluster::new(2);
    c.deliver();
    let now = c.now;
    c.books[0]
        .join(now, LOBBY, ConnId(1), user("ann"), json!({"n": 1}))
        .unwrap();
    c.deliver();
    c.books[0]
        .update(now, LOBBY, ConnId(1), json!({"n": 2}))
        .unwrap();
    c.books[0]
        .join(now, "/groups/b", ConnId(1), user("ann"), json!({}))
        .unwrap();
    // Both messages are lost on the way to node 2.
    c.deliver_with(|_, to| to == 1);
    assert_eq!(c.view(1, LOBBY)["uuid-ann"].1, [json!({"n": 1})]);
    // The next heartbeat shows the gap; node 2 asks node 1 for a dump.
    c.run_for(Duration::from_secs(5));
    c.assert_converged(&[LOBBY, "/groups/b"]);
    assert_eq!(c.view(1, LOBBY)["uuid-ann"].1, [json!({"n": 2})]);
}

#[test]
fn a_message_after_a_gap_is_applied_and_asks_for_a_resync() {
    let (mut book, now) = book();
    let join = |counter, conn| PresenceMessage::Join {
        node: NodeId(2),
        counter,
        path: LOBBY.into(),
        conn: ConnId(conn),
        user: user("bob"),
        state: json!({}),
    };
    book.handle_message(now, join(1, 1));
    assert!(
        transmits(&mut book).is_empty(),
        "counter 1 is a node's first"
    );
    book.handle_message(now, join(5, 2));
    assert_matches_resync(book.poll_transmit(), Some(NodeId(2)));
    assert_eq!(book.snapshot(LOBBY).users[0].connections.len(), 2);
    // A repeat is ignored; a counter going back is not applied and asks again.
    book.handle_message(now, join(5, 3));
    assert!(transmits(&mut book).is_empty());
    book.handle_message(now, join(4, 4));
    assert_matches_resync(book.poll_transmit(), Some(NodeId(2)));
    assert_eq!(book.snapshot(LOBBY).users[0].connections.len(), 2);
    // An update of an entry never joined cannot be applied: only a dump says whose it is.
    book.handle_message(
        now,
        PresenceMessage::Update {
            node: NodeId(2),
            counter: 5,
            path: LOBBY.into(),
            conn: ConnId(9),
            state: json!({}),
        },
    );
    assert_matches_resync(book.poll_transmit(), Some(NodeId(2)));
}

#[test]
fn the_bus_coming_back_resyncs_both_ways() {
    let mut c = Cluster::new(3);
    c.deliver();
    let now = c.now;
    c.books[0]
        .join(now, LOBBY, ConnId(1), user("ann"), json!({}))
        .unwrap();
    c.deliver();
    // Node 3's bus is down for a while: it hears nothing and what it says is lost.
    c.books[2]
        .join(now, LOBBY, ConnId(1), user("cid"), json!({}))
        .unwrap();
    c.books[0].leave(now, LOBBY, ConnId(1));
    c.books[1]
        .join(now, LOBBY, ConnId(1), user("bob"), json!({}))
        .unwrap();
    c.deliver_with(|m, to| to == 2 || m.node() == NodeId(3));
    assert_eq!(
        c.view(2, LOBBY).len(),
        2,
        "ann and cid, as node 3 last knew"
    );
    c.books[2].handle_bus_restored(c.now);
    c.deliver();
    c.assert_converged(&[LOBBY]);
    let v = c.view(0, LOBBY);
    assert_eq!(v.keys().collect::<Vec<_>>(), ["uuid-bob", "uuid-cid"]);
}

#[test]
fn resuming_inside_the_history_replays_the_missed_events() {
    let (mut book, now) = book();
    let snap = book
        .join(now, LOBBY, ConnId(1), user("ann"), json!({"n": 0}))
        .unwrap();
    book.update(now, LOBBY, ConnId(1), json!({"n": 1})).unwrap();
    book.join(now, LOBBY, ConnId(2), user("bob"), json!({}))
        .unwrap();
    let missed = book.since(LOBBY, &snap.epoch, snap.seq).unwrap();
    assert_eq!(missed.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    let mut v = view(&snap);
    for e in &missed {
        apply(&mut v, e);
    }
    assert_eq!(v, view(&book.snapshot(LOBBY)));
    // Up to date: nothing to replay.
    assert_eq!(book.since(LOBBY, &snap.epoch, 3), Ok(Vec::new()));
    // A seq this node never reached is not trusted.
    assert_eq!(book.since(LOBBY, &snap.epoch, 4), Err(SyncNeeded));
}

#[test]
fn resuming_past_the_history_or_elsewhere_needs_a_sync() {
    let (mut book, now) = book();
    let snap = book
        .join(now, LOBBY, ConnId(1), user("ann"), json!({"n": 0}))
        .unwrap();
    for n in 1..=4 {
        book.update(now, LOBBY, ConnId(1), json!({ "n": n }))
            .unwrap();
    }
    // Seq 5 now, four events kept: 2..=5; resuming after 1 works, after 0 would need 1.
    assert_eq!(book.since(LOBBY, &snap.epoch, 1).map(|e| e.len()), Ok(4));
    assert_eq!(book.since(LOBBY, &snap.epoch, 0), Err(SyncNeeded));
    // Another node's epoch, a former process's, or nonsense.
    assert_eq!(book.since(LOBBY, "0000000000000002.1", 5), Err(SyncNeeded));
    assert_eq!(book.since(LOBBY, "0000000000000001.7", 5), Err(SyncNeeded));
    assert_eq!(book.since(LOBBY, "lobby", 5), Err(SyncNeeded));
    assert_eq!(book.since(LOBBY, "", 5), Err(SyncNeeded));
    // The path empties and fills again: a new record, a new epoch, the old one is stale.
    book.leave(now, LOBBY, ConnId(1));
    assert_eq!(book.since(LOBBY, &snap.epoch, 6), Err(SyncNeeded));
    let again = book
        .join(now, LOBBY, ConnId(1), user("ann"), json!({}))
        .unwrap();
    assert_ne!(again.epoch, snap.epoch);
    assert_eq!(again.seq, 1);
    assert_eq!(book.since(LOBBY, &snap.epoch, 6), Err(SyncNeeded));
}

#[test]
fn an_empty_view_resumes_without_a_sync() {
    let (mut book, now) = book();
    let empty = book.snapshot(LOBBY);
    assert_eq!(book.since(LOBBY, &empty.epoch, 0), Ok(Vec::new()));
    // Somebody came and went on another path, then somebody joined this one.
    book.join(now, "/groups/b", ConnId(1), user("ann"), json!({}))
        .unwrap();
    book.join(now, LOBBY, ConnId(2), user("bob"), json!({}))
        .unwrap();
    let missed = book.since(LOBBY, &empty.epoch, 0).unwrap();
    assert_eq!(kinds(&missed), [(PresenceKind::Join, "bob", 1)]);
    book.leave(now, LOBBY, ConnId(2));
    assert_eq!(book.since(LOBBY, &empty.epoch, 0), Ok(Vec::new()));
}

#[test]
fn echoed_messages_of_this_node_are_ignored() {
    let (mut book, now) = book();
    book.join(now, LOBBY, ConnId(1), user("ann"), json!({}))
        .unwrap();
    events(&mut book);
    let sent = transmits(&mut book);
    for m in sent {
        book.handle_message(now, m);
    }
    // Even a forged leave or bye under this node's id.
    book.handle_message(
        now,
        PresenceMessage::Leave {
            node: NodeId(1),
            counter: 99,
            path: LOBBY.into(),
            conn: ConnId(1),
        },
    );
    book.handle_message(
        now,
        PresenceMessage::Bye {
            node: NodeId(1),
            counter: 100,
        },
    );
    assert!(events(&mut book).is_empty());
    assert!(transmits(&mut book).is_empty());
    assert_eq!(book.snapshot(LOBBY).users.len(), 1);
    assert_eq!(book.remote_node_count(), 0);
}

#[test]
fn hostile_messages_never_panic_or_corrupt() {
    let (mut book, now) = book();
    book.join(now, LOBBY, ConnId(1), user("ann"), json!({}))
        .unwrap();
    let before = book.snapshot(LOBBY);
    events(&mut book);
    transmits(&mut book);
    let n = NodeId(7);
    let hostile = [
        PresenceMessage::Leave {
            node: n,
            counter: 1,
            path: LOBBY.into(),
            conn: ConnId(1),
        },
        PresenceMessage::Leave {
            node: n,
            counter: 2,
            path: "/nowhere".into(),
            conn: ConnId(5),
        },
        PresenceMessage::Update {
            node: n,
            counter: 3,
            path: LOBBY.into(),
            conn: ConnId(1),
            state: json!({}),
        },
        PresenceMessage::Join {
            node: n,
            counter: u64::MAX,
            path: LOBBY.into(),
            conn: ConnId(1),
            user: user("eve"),
            state: json!("not an object"),
        },
        PresenceMessage::Join {
            node: n,
            counter: 0,
            path: LOBBY.into(),
            conn: ConnId(1),
            user: user("eve"),
            state: json!({"x": "y".repeat(100)}),
        },
        PresenceMessage::Heartbeat {
            node: n,
            counter: u64::MAX,
        },
        PresenceMessage::Dump {
            node: n,
            counter: 3,
            first: false,
            more: false,
            entries: Vec::new(),
        },
        PresenceMessage::Dump {
            node: NodeId(8),
            counter: u64::MAX,
            first: true,
            more: false,
            entries: vec![PresenceEntry {
                path: LOBBY.into(),
                conn: ConnId(1),
                user: user("eve"),
                state: json!(null),
            }],
        },
        PresenceMessage::Bye {
            node: NodeId(9),
            counter: 0,
        },
        PresenceMessage::ResyncRequest {
            node: NodeId(10),
            counter: u64::MAX,
            to: Some(NodeId(11)),
        },
    ];
    for m in hostile {
        book.handle_message(now, m);
    }
    assert!(events(&mut book).is_empty(), "nothing changed");
    assert_eq!(book.snapshot(LOBBY), before);
    assert_eq!(book.path_count(), 1);
    // The worst it does is ask for resyncs.
    assert!(
        transmits(&mut book)
            .iter()
            .all(|m| matches!(m, PresenceMessage::ResyncRequest { .. }))
    );
    // Unreadable JSON never reaches the book.
    for text in [
        "",
        "{}",
        r#"{"type":"join"}"#,
        r#"{"type":"nope","node":1,"counter":1}"#,
        r#"{"type":"heartbeat","node":-1,"counter":1}"#,
    ] {
        assert!(
            serde_json::from_str::<PresenceMessage>(text).is_err(),
            "{text}"
        );
    }
    // A node stuck at a huge counter recovers by its next dump.
    book.handle_message(
        now,
        PresenceMessage::Dump {
            node: n,
            counter: 4,
            first: true,
            more: false,
            entries: vec![PresenceEntry {
                path: LOBBY.into(),
                conn: ConnId(1),
                user: user("eve"),
                state: json!({}),
            }],
        },
    );
    book.handle_message(
        now,
        PresenceMessage::Heartbeat {
            node: n,
            counter: 5,
        },
    );
    assert!(transmits(&mut book).is_empty());
    assert_eq!(book.snapshot(LOBBY).users.len(), 2);
}

#[test]
fn heartbeats_go_out_on_time_and_silent_nodes_are_timed_out() {
    let (mut book, now) = book();
    let at = |s| now + Duration::from_secs(s);
    assert_eq!(book.poll_timeout(), Some(at(5)));
    book.handle_message(
        at(1),
        PresenceMessage::Heartbeat {
            node: NodeId(2),
            counter: 1,
        },
    );
    assert_eq!(book.poll_timeout(), Some(at(5)));
    book.handle_timeout(at(4));
    assert!(transmits(&mut book).is_empty());
    for s in [5, 10, 15] {
        book.handle_timeout(at(s));
        assert!(matches!(
            transmits(&mut book)[..],
            [PresenceMessage::Heartbeat { .. }]
        ));
    }
    // Node 2's expiry (heard at 1 s, ttl 15 s) comes before the next heartbeat.
    assert_eq!(book.poll_timeout(), Some(at(16)));
    book.handle_timeout(at(16));
    assert_eq!(book.remote_node_count(), 0);
    assert!(transmits(&mut book).is_empty());
    assert_eq!(book.poll_timeout(), Some(at(20)));
}

/// A small deterministic random source (xorshift64*), so failures replay by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_histories_with_losses_converge_after_a_resync() {
    const PATHS: [&str; 3] = ["/groups/a", "/groups/b", "/users/ann/feed"];
    const USERS: [&str; 3] = ["ann", "bob", "cid"];
    let (mut diverged, mut nonempty) = (0, 0);
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut c = Cluster::new(3);
        c.deliver();
        // Each book's events, applied as a client would, from its first (empty) snapshots.
        let mut client: Vec<BTreeMap<&str, View>> = vec![BTreeMap::new(); 3];
        for _ in 0..80 {
            let i = rng.below(3) as usize;
            let conn = ConnId(rng.below(4));
            let path = PATHS[rng.below(3) as usize];
            let now = c.now;
            let book = &mut c.books[i];
            match rng.below(10) {
                0..=3 => {
                    // A connection belongs to one user: its number picks it.
                    let u = user(USERS[conn.0 as usize % 3]);
                    let _ = book.join(now, path, conn, u, json!({ "n": rng.below(3) }));
                }
                4..=6 => {
                    let _ = book.update(now, path, conn, json!({ "n": rng.below(3) }));
                }
                7 | 8 => {
                    book.leave(now, path, conn);
                }
                _ => book.leave_connection(now, conn),
            }
            // A fifth of the messages are lost on the way to each receiver.
            let mut loss = Rng(rng.next() | 1);
            c.deliver_with(|_, _| loss.below(5) == 0);
            c.now += Duration::from_millis(rng.below(500));
        }
        let views = |c: &Cluster, i| PATHS.map(|p| c.view(i, p));
        if (1..3).any(|i| views(&c, i) != views(&c, 0)) {
            diverged += 1;
        }
        for b in &mut c.books {
            b.handle_bus_restored(c.now);
        }
        c.deliver();
        c.assert_converged(&PATHS);
        if PATHS.iter().any(|p| !c.view(0, p).is_empty()) {
            nonempty += 1;
        }
        c.collect();
        for (i, log) in c.events.iter().enumerate() {
            for e in log {
                let path: &str = PATHS.iter().find(|p| **p == e.path).copied().unwrap();
                apply(client[i].entry(path).or_default(), e);
            }
            for path in PATHS {
                assert_eq!(
                    client[i].get(path).cloned().unwrap_or_default(),
                    c.view(i, path),
                    "seed {seed}: book {i}'s events do not add up to its snapshot of {path}"
                );
            }
        }
        // Per path and epoch, seqs count up by one.
        for log in &c.events {
            let mut last: BTreeMap<(&str, &str), u64> = BTreeMap::new();
            for e in log {
                let prev = last.insert((e.path.as_str(), e.epoch.as_str()), e.seq);
                assert_eq!(e.seq, prev.unwrap_or(0) + 1, "seed {seed}");
            }
        }
    }
    // The losses mattered, and the histories were not trivial.
    assert!(
        diverged > 10 && nonempty > 10,
        "{diverged} diverged, {nonempty} non-empty"
    );
}

#[test]
fn a_path_has_one_presence_name_however_it_is_written() {
    let name = |path: &str, me: Option<&str>| presence_name(path, me).unwrap();
    assert_eq!(name("/Groups/Lobby/", None), "/groups/lobby");
    assert_eq!(name("groups//lobby", None), "/groups/lobby");
    // The canonical form access is decided on: singular collections, escapes and relation
    // aliases name one presence.
    for alias in [
        "/user/alice",
        "/users/%61lice",
        "/USER/Alice",
        "/users/alice/",
    ] {
        assert_eq!(name(alias, Some("u1")), "/users/alice", "{alias}");
    }
    assert_eq!(name("/group/lobby/inbox", None), "/groups/lobby/feed");
    assert_eq!(
        name("/users/a/followers", None),
        "/users/a/connecting/following"
    );
    assert_eq!(name("/users/a/Group", None), "/users/a/groups");
    assert_eq!(name("/Book", None), "/books");
    assert_eq!(name("/books;ql=select * where a=1", None), "/books");
    assert_eq!(name("/queues/Jobs/", None), "/queues/jobs");
    // A name reads back as itself.
    assert_eq!(name("/people/John%20Doe", None), "/people/john%20doe");
    assert_eq!(name("/people/john doe", None), "/people/john%20doe");
    assert_eq!(name("/people/john%20doe", None), "/people/john%20doe");
    // `me` is the caller's uuid, only as the user of `/users/me`.
    assert_eq!(name("/Users/me/Inbox", Some("U1")), "/users/u1/feed");
    assert_eq!(name("/users/me", None), "/users/me");
    assert_eq!(name("/groups/me", Some("u1")), "/groups/me");
    assert_eq!(name("/users/x/me", Some("u1")), "/users/x/me");
}

#[test]
fn paths_no_presence_can_be_of_are_refused() {
    for path in [
        "",
        "/",
        "//",
        "/token",
        "/credentials",
        "/users;ql=select */devices",
        "/users/a/following/b",
        "/users/a/following/users/b",
        "/queues/q/transactions/t1",
        "/queues/q/subscribers",
        "/queues/q/properties",
    ] {
        assert!(
            matches!(
                presence_name(path, None),
                Err(PresencePathError::NoResource(_))
            ),
            "{path}: {:?}",
            presence_name(path, None)
        );
    }
    for path in [
        "/groups/lobby/presence",
        "/groups/Presence",
        "/groups/lobby/PRESENCE/",
    ] {
        assert!(
            matches!(
                presence_name(path, None),
                Err(PresencePathError::Listing(_))
            ),
            "{path}"
        );
    }
    assert!(matches!(
        presence_name("/users/../x", None),
        Err(PresencePathError::Path(_))
    ));
}
