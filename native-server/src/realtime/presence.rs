//! Presence on this node: one [`PresenceBook`] for the process, the sockets present on each
//! path, and the delivery of every change to them.
//!
//! Paths in the book are `{app uuid}{presence path}` (see [`presence_path`]), so that one
//! book serves every application. Everything happens under one lock: a join's answer (its
//! snapshot) is pushed under it, and every change is queued for its sockets under it (on the
//! [`EphemeralQueue`], which writes events out in the order queued), so a joiner gets its
//! snapshot before any later change of that presence, and changes reach every socket in the
//! book's order. Lock order: this lock, then the hub's, then a socket's; nothing takes this
//! lock while holding a socket's.
//!
//! [`presence_path`]: crate::api::presence_path

use super::hub::{ConnId, Hub};
use super::push::{EphemeralQueue, Push, SharedEvent, Sink};
use crate::api::PresenceSource;
use gridsocket_core::presence::{
    ConnId as BookConn, NodeId, PresenceBook, PresenceConfig, PresenceError, PresenceEvent,
    PresenceMessage, PresenceSnapshot, PresenceUser,
};
use gridsocket_core::wire::error_body_json;
use gridsocket_core::{Instant, RequestHandle};
use rustc_hash::FxHashMap;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Where the book's messages go: the bus, when there is one.
pub type PresenceBus = Box<dyn Fn(PresenceMessage) + Send + Sync>;

/// This node's presence: the book and the local sockets present on each path.
pub struct Presence {
    inner: Mutex<Inner>,
    bus: OnceLock<PresenceBus>,
    /// Where events go out to their sockets, in the book's order.
    out: Arc<EphemeralQueue>,
}

struct Inner {
    book: PresenceBook,
    /// The local sockets present on each book path.
    present: FxHashMap<String, BTreeMap<ConnId, Arc<dyn Sink>>>,
    /// The book paths each local socket is present on (what its close leaves), each with
    /// the path as the socket asked for it (what its permission is checked on again).
    paths: FxHashMap<ConnId, BTreeMap<String, String>>,
}

impl Presence {
    /// An empty presence for a node whose id is drawn at random now, never reused; its events
    /// go out through `out`.
    pub fn new(config: PresenceConfig, out: Arc<EphemeralQueue>) -> Presence {
        let mut id = [0u8; 8];
        // Without the OS's randomness a node id still differs from the last start's.
        if getrandom::fill(&mut id).is_err() {
            id = crate::api::now_ms().to_le_bytes();
        }
        let book = PresenceBook::new(config, NodeId(u64::from_le_bytes(id)), Instant::now());
        Presence {
            inner: Mutex::new(Inner {
                book,
                present: FxHashMap::default(),
                paths: FxHashMap::default(),
            }),
            bus: OnceLock::new(),
            out,
        }
    }

    /// The presence uuid of socket `conn` of this node when its caller is nobody in
    /// particular: unique in the cluster, the same for every path the socket joins.
    pub fn anonymous_id(&self, conn: ConnId) -> String {
        format!("anonymous-{:016x}-{conn}", self.inner().book.node().0)
    }

    /// Publishes the book's messages through `bus` from now on (set once, when the node is
    /// put together; without it they are dropped: there is nobody to tell).
    pub fn send_to_bus(&self, bus: PresenceBus) {
        let _ = self.bus.set(bus);
    }

    /// A message from the bus (from any node: the book skips its own).
    pub fn handle_message(&self, msg: PresenceMessage) {
        let now = Instant::now();
        let mut inner = self.inner();
        inner.book.handle_message(now, msg);
        self.deliver(&mut inner, None);
    }

    /// The bus came back after an outage: dumps are asked for and sent.
    pub fn handle_bus_restored(&self) {
        let now = Instant::now();
        let mut inner = self.inner();
        inner.book.handle_bus_restored(now);
        self.deliver(&mut inner, None);
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Socket `conn` of `user` joins `path` (a book path; `asked` as the socket spelled it)
    /// with `state`, or changes its state there, and request `handle` is answered with the
    /// snapshot (or why not). The others present get the change; the joiner does not (its
    /// snapshot shows it). Nothing happens for a socket the hub no longer has: it closed
    /// while its join was checked.
    pub fn join(
        &self,
        hub: &Hub,
        (path, asked): (&str, &str),
        conn: ConnId,
        user: PresenceUser,
        state: Value,
        handle: RequestHandle,
    ) {
        let now = Instant::now();
        let mut inner = self.inner();
        let Some(sink) = hub.socket(conn) else {
            return;
        };
        let (status, body) = match inner.book.join(now, path, BookConn(conn), user, state) {
            Ok(snapshot) => {
                inner
                    .present
                    .entry(path.to_owned())
                    .or_default()
                    .insert(conn, sink.clone());
                inner
                    .paths
                    .entry(conn)
                    .or_default()
                    .insert(path.to_owned(), asked.to_owned());
                (200, snapshot_json(path, &snapshot).to_string())
            }
            Err(e) => refusal(&e),
        };
        sink.push(
            now,
            Push::Complete {
                handle,
                status,
                body,
            },
        );
        self.deliver(&mut inner, Some(conn));
    }

    /// Socket `conn` leaves `path` (a book path); request `handle` is answered
    /// `{"path","left"}`, `left` false when it was not present there.
    pub fn leave(&self, hub: &Hub, path: &str, conn: ConnId, handle: RequestHandle) {
        let now = Instant::now();
        let mut inner = self.inner();
        let left = inner.book.leave(now, path, BookConn(conn));
        inner.forget(conn, path);
        if let Some(sink) = hub.socket(conn) {
            let body = json!({"path": shown(path), "left": left}).to_string();
            sink.push(
                now,
                Push::Complete {
                    handle,
                    status: 200,
                    body,
                },
            );
        }
        self.deliver(&mut inner, Some(conn));
    }

    /// The node shuts down: the book says bye on the bus, so the other nodes drop its
    /// sockets' entries now (with leave events) instead of when they expire, and publishes
    /// nothing after it (see [`PresenceBook::shutdown`]). Call it before the bus stops.
    pub fn shutdown(&self) {
        let now = Instant::now();
        let mut inner = self.inner();
        inner.book.shutdown(now);
        self.deliver(&mut inner, None);
    }

    /// Socket `conn` closed: it leaves every path it was present on, at once.
    pub fn leave_connection(&self, conn: ConnId) {
        let now = Instant::now();
        let mut inner = self.inner();
        let Some(paths) = inner.paths.remove(&conn) else {
            return;
        };
        for path in paths.keys() {
            if let Some(present) = inner.present.get_mut(path) {
                present.remove(&conn);
                if present.is_empty() {
                    inner.present.remove(path);
                }
            }
        }
        inner.book.leave_connection(now, BookConn(conn));
        self.deliver(&mut inner, None);
    }

    /// Every local socket's presences: its id, the book path and the path as it asked for it.
    pub fn joined(&self) -> Vec<(ConnId, String, String)> {
        self.inner()
            .paths
            .iter()
            .flat_map(|(conn, paths)| {
                paths
                    .iter()
                    .map(|(path, asked)| (*conn, path.clone(), asked.clone()))
            })
            .collect()
    }

    /// Socket `conn` lost read access to `path` (a book path): it leaves it (the others see
    /// it go) and is told with a `revoked` event. Nothing happens if it left meanwhile.
    pub fn revoke(&self, path: &str, conn: ConnId, reason: &'static str) {
        let now = Instant::now();
        let mut inner = self.inner();
        let Some(asked) = inner.paths.get(&conn).and_then(|p| p.get(path)).cloned() else {
            return;
        };
        let sink = inner.present.get(path).and_then(|p| p.get(&conn)).cloned();
        inner.book.leave(now, path, BookConn(conn));
        inner.forget(conn, path);
        if let Some(sink) = sink {
            let name = shown(path).to_owned();
            sink.push(
                now,
                Push::RevokePresence {
                    path: asked,
                    name,
                    reason,
                },
            );
        }
        self.deliver(&mut inner, Some(conn));
    }

    /// The local sockets present on `path` (a book path).
    pub fn present_sockets(&self, path: &str) -> Vec<(ConnId, Arc<dyn Sink>)> {
        self.inner()
            .present
            .get(path)
            .map(|p| p.iter().map(|(c, s)| (*c, s.clone())).collect())
            .unwrap_or_default()
    }

    /// Time passed: the book's heartbeats and expiries. Returns when to call again.
    pub fn handle_timeout(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut inner = self.inner();
        inner.book.handle_timeout(now);
        self.deliver(&mut inner, None);
        inner.book.poll_timeout()
    }
}

/// The book's name for presence path `path` (a [`presence_path`]) of application `app`: one
/// book serves every application.
pub fn book_path(app: &str, path: &str) -> String {
    format!("{app}{path}")
}

impl PresenceSource for Presence {
    fn presence_of(&self, app: &str, path: &str) -> Value {
        let key = book_path(app, path);
        snapshot_json(&key, &self.inner().book.snapshot(&key))
    }
}

impl Inner {
    fn forget(&mut self, conn: ConnId, path: &str) {
        if let Some(present) = self.present.get_mut(path) {
            present.remove(&conn);
            if present.is_empty() {
                self.present.remove(path);
            }
        }
        if let Some(paths) = self.paths.get_mut(&conn) {
            paths.remove(path);
            if paths.is_empty() {
                self.paths.remove(&conn);
            }
        }
    }
}

impl Presence {
    /// Publishes the book's messages and delivers its events to the sockets present on
    /// their paths, except `cause` (the socket whose own command made them, answered
    /// already).
    fn deliver(&self, inner: &mut Inner, cause: Option<ConnId>) {
        while let Some(msg) = inner.book.poll_transmit() {
            // Without a bus there is nobody to tell: the queue is emptied all the same.
            if let Some(bus) = self.bus.get() {
                bus(msg);
            }
        }
        while let Some(event) = inner.book.poll_event() {
            let Some(present) = inner.present.get(&event.path) else {
                continue;
            };
            let frame = SharedEvent::new(event_json(&event).to_string());
            let others = present
                .iter()
                .filter(|(conn, _)| Some(**conn) != cause)
                .map(|(_, sink)| sink.clone())
                .collect();
            // Queued under this lock: the queue's order is the book's. A full queue drops
            // it: its watchers see a gap in the presence's seq and take a fresh snapshot.
            if !self.out.send(others, frame) {
                tracing::debug!("a presence event was dropped: the queue is full");
            }
        }
    }
}

/// A book path as clients see it: without its application.
fn shown(path: &str) -> &str {
    path.find('/').map_or(path, |i| &path[i..])
}

fn snapshot_json(path: &str, snapshot: &PresenceSnapshot) -> Value {
    json!({
        "path": shown(path),
        "seq": snapshot.seq,
        "epoch": snapshot.epoch,
        "users": snapshot.users,
    })
}

fn event_json(event: &PresenceEvent) -> Value {
    json!({
        "event": "presence",
        "path": shown(&event.path),
        "kind": event.kind,
        "seq": event.seq,
        "epoch": event.epoch,
        "user": event.user,
        "connections": event.connections,
    })
}

/// The status and body a refused presence command is answered with.
fn refusal(e: &PresenceError) -> (u16, String) {
    let status = match e {
        PresenceError::StateTooLarge { .. } => 413,
        PresenceError::TooManyPaths { .. } => 429,
        PresenceError::NotJoined => 404,
        _ => 400,
    };
    (status, error_body_json(e.code(), &e.to_string()))
}
