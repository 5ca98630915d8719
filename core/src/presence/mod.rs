//! Presence: who is on a path right now, replicated between gateway nodes over a message bus,
//! sans IO.
//!
//! A client joins the presence of a path it may read (`/groups/lobby`, an entity, a
//! collection, a user's feed) with a small JSON object as its state (`{"status":"away"}`). The
//! host answers with a [`PresenceSnapshot`] of who is present and then delivers every
//! [`PresenceEvent`] of that path: `join` when a user's first connection arrives, `leave` when
//! its last one goes, `update` for anything in between (a second tab, a tab closed, a state
//! changed). Every event carries the user's connections *after* the change, so a client
//! replaces its copy of that user and never has to merge.
//!
//! Presence is never stored. Each gateway node owns the entries of its own connections and
//! tells the others on the bus ([`PresenceMessage`]); every node keeps a replica of everybody's
//! entries in its [`PresenceBook`]. A node that stops heartbeating has its entries removed
//! after [`PresenceConfig::node_ttl`]; a node that starts, sees a gap in another node's
//! messages, or gets its bus back asks for full dumps (a resync).
//!
//! ## Driving a book
//! One book per process (or per application, with its own bus subject), driven like a
//! session: after every input drain the outputs, then arm one timer.
//!
//! ```no_run
//! use gridsocket_core::presence::{ConnId, NodeId, PresenceBook, PresenceConfig, PresenceUser};
//! use gridsocket_core::Instant;
//! use serde_json::json;
//! // A node id drawn at random when the process starts, never reused.
//! let mut book = PresenceBook::new(PresenceConfig::default(), NodeId(0x5eed), Instant::now());
//! // 1. Local commands and bus messages go in, with the current time.
//! let user = PresenceUser { uuid: "u1".into(), username: "ann".into() };
//! let _snapshot = book.join(Instant::now(), "/groups/lobby", ConnId(7), user, json!({"status":"here"}));
//! # let bus_text = "";
//! if let Ok(msg) = serde_json::from_str(bus_text) { book.handle_message(Instant::now(), msg); }
//! // 2. Publish every message on the bus.
//! while let Some(msg) = book.poll_transmit() { let _json = serde_json::to_string(&msg); }
//! // 3. Deliver every event to the local watchers of its path that may read it.
//! while let Some(event) = book.poll_event() { let _ = (&event.path, &event.kind); }
//! // 4. Arm one timer at `poll_timeout()`; call `handle_timeout(now)` when it fires.
//! let _deadline = book.poll_timeout();
//! ```
//!
//! ## Sequence numbers and epochs
//! There is no cluster-wide sequence of presence changes: that would need a central sequencer,
//! and presence never touches the store. Each book numbers the changes of each path as *it*
//! sees them (`seq`: 1, 2, 3, … per path), and names that numbering with an `epoch`: this
//! book's node id plus the generation of the path's record (a counter of the book, bumped
//! each time a path gets its first present user after being empty). Two nodes may order
//! concurrent changes differently, so a `seq` means something only with its epoch: a client
//! that resumes on another node, after a restart, past the kept history, or after the path was
//! empty and forgotten gets [`SyncNeeded`] from [`PresenceBook::since`] and a fresh snapshot.
//!
//! ## Bounds
//! - A state is a JSON object of at most [`PresenceConfig::max_state_bytes`] bytes (as
//!   compact JSON), local or remote (a remote entry that breaks this is ignored).
//! - A local connection is present on at most [`PresenceConfig::max_paths_per_connection`]
//!   paths.
//! - Each path keeps its last [`PresenceConfig::history`] events for [`PresenceBook::since`];
//!   an event holds the states of one user's connections on that path.
//! - A path nobody is present on is forgotten entirely (entries, seq and history).
//! - A remote node not heard from for [`PresenceConfig::node_ttl`] is forgotten with all its
//!   entries; a dump travels in parts of at most [`PresenceConfig::max_dump_entries`] entries
//!   so each bus message stays small.
//!
//! Remote entries are as many as the remote nodes' own bounds allow: the bus is trusted to
//! carry messages from gridsocket nodes only, but nothing a remote message says can panic the
//! book or leave it inconsistent: an unknown entry, node or counter is a no-op or a resync.

use crate::path::{EntityRef, PathError, QueuePart, Resource, ResourcePath, join_segments};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

#[cfg(test)]
mod tests;

/// The name a path's presence goes by, whoever writes it, or why the path can have none.
/// Broadcasts go by the same name, and so do the subscriptions they reach.
///
/// The path is read as every request, subscription and access check reads it
/// ([`ResourcePath::parse`]), and named in the canonical form access is decided on: segments
/// percent-decoded and in lower case, collections by their plural (`/user/Alice` is
/// `/users/alice`), each relation by one name (`inbox` is `feed`, `followers` is
/// `connecting/following`), `/users/me` as the caller's own uuid `me` (each user's `me` is
/// somebody else; `me` stays `me` when the caller is unknown). A collection's query in the
/// path (`/books;ql=…`) is a parameter, and presence takes none: it names the collection.
/// An entity named by name and by uuid is two presences (telling them apart would need a
/// lookup): a client picks one form and keeps to it.
///
/// A presence is of a collection, an entity, an entity's relation (a feed, who it follows)
/// or a queue: something `GET {name}/presence` reads back. Not of `/`, `/token`,
/// `/credentials`, a query's matches (`/users;ql=…/devices`), one related entity
/// (`/users/a/following/b`: join `/users/b`), a queue's transactions, subscribers or
/// properties, nor a presence's own listing (`/groups/lobby/presence`).
pub fn presence_name(path: &str, me: Option<&str>) -> Result<String, PresencePathError> {
    let parsed = ResourcePath::parse(path).map_err(|e| match e {
        PathError::Empty => PresencePathError::NoResource(path.to_owned()),
        other => PresencePathError::Path(other),
    })?;
    if parsed
        .segments
        .last()
        .is_some_and(|s| s.eq_ignore_ascii_case("presence"))
    {
        return Err(PresencePathError::Listing(path.to_owned()));
    }
    let entity = |entity: &EntityRef| match (entity, me) {
        (EntityRef::Me, Some(me)) => me.to_ascii_lowercase(),
        (entity, _) => entity.to_string().to_ascii_lowercase(),
    };
    let mut name: Vec<String> = Vec::with_capacity(parsed.segments.len() + 1);
    match &parsed.resource {
        Resource::Collection { collection } => name.push(collection.clone()),
        Resource::Entity {
            collection,
            entity: e,
        } => name.extend([collection.clone(), entity(e)]),
        Resource::Related {
            collection,
            entity: e,
            relation,
            inbound,
            target: None,
        } => {
            name.extend([collection.clone(), entity(e)]);
            if *inbound {
                name.push("connecting".into());
            }
            name.push(relation.clone());
        }
        Resource::Queue {
            queue,
            part: QueuePart::Messages,
        } => {
            name.push("queues".into());
            name.extend(
                queue
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_ascii_lowercase),
            );
        }
        _ => return Err(PresencePathError::NoResource(path.to_owned())),
    }
    Ok(join_segments(&name))
}

/// Why a path can have no presence, nor broadcasts ([`presence_name`]). The client's mistake:
/// answer it 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresencePathError {
    /// The path cannot be read at all (a `..`, an encoded `/`, too deep, …).
    #[error(transparent)]
    Path(#[from] PathError),
    /// The path names nothing a presence can be of: `/`, `/token`, a query's matches, one
    /// related entity, a part of a queue.
    #[error(
        "{0:?} can have no presence or broadcasts: use a collection, an entity, an entity's relation (/users/{{u}}/feed) or a queue"
    )]
    NoResource(String),
    /// The path is a presence's listing (`GET {path}`), not something present on.
    #[error(
        "{0:?} is the listing of a presence, which can have none of its own: use the path before /presence"
    )]
    Listing(String),
}

/// Encodes the `revoked` event of a presence: the socket lost read access to presence `name`
/// and is no longer in it (a subscription's says `subscription` where this says `presence`).
pub fn encode_revoked(name: &str, reason: &str) -> String {
    serde_json::json!({"event": "revoked", "presence": name, "path": name, "reason": reason})
        .to_string()
}

/// Limits and timers of a [`PresenceBook`].
#[derive(Clone, Debug)]
pub struct PresenceConfig {
    /// Largest state of one connection, in bytes of compact JSON; a larger one is refused with
    /// [`PresenceError::StateTooLarge`].
    pub max_state_bytes: usize,
    /// How long a remote node may stay silent before all its entries leave. Several
    /// [`heartbeat_interval`](Self::heartbeat_interval)s, so one lost heartbeat is no outage.
    pub node_ttl: Duration,
    /// How often this node says it is alive on the bus (also the longest a lost message goes
    /// unnoticed by the others: the next heartbeat shows the gap).
    pub heartbeat_interval: Duration,
    /// Events kept per path for clients resuming with [`PresenceBook::since`]; older ones need
    /// a fresh snapshot.
    pub history: usize,
    /// Most paths one local connection may be present on; one more is refused with
    /// [`PresenceError::TooManyPaths`].
    pub max_paths_per_connection: usize,
    /// Most entries in one [`PresenceMessage::Dump`] part (at least 1); with the default state
    /// bound a part stays well under NATS's default 1 MiB payload.
    pub max_dump_entries: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            max_state_bytes: 1024,
            node_ttl: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(5),
            history: 256,
            max_paths_per_connection: 32,
            max_dump_entries: 256,
        }
    }
}

/// Names one gateway node (one [`PresenceBook`]) on the bus. The host draws it at random when
/// the process starts and never reuses it: a node that restarts with its old id would be taken
/// for its former self, whose entries and epochs it does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Names one connection of the node that owns it (the host's own number for the socket).
/// Connections of different nodes may share numbers; an entry is named by both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

/// Who a connection belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PresenceUser {
    /// The user's uuid: one presence per uuid and path, however many connections it has.
    pub uuid: String,
    /// The user's username, as shown to the others.
    pub username: String,
}

/// One connection of a present user, as clients see it. Connection ids stay inside the
/// cluster: they name sockets of other nodes and mean nothing to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceConnection {
    /// The state the connection joined or last updated with (a JSON object).
    pub state: Value,
}

/// One present user in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceMember {
    /// The user's uuid.
    pub uuid: String,
    /// The user's username.
    pub username: String,
    /// Its connections on the path, in a stable order (by node, then connection).
    pub connections: Vec<PresenceConnection>,
}

/// Who is present on a path, as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceSnapshot {
    /// The last change of the path included; resume after it with [`PresenceBook::since`].
    pub seq: u64,
    /// What `seq` counts in: this node's numbering of this path (see the module docs).
    pub epoch: String,
    /// Present users, by uuid.
    pub users: Vec<PresenceMember>,
}

/// What a presence event says happened to a user on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    /// The user's first connection arrived.
    Join,
    /// The user's last connection went.
    Leave,
    /// A connection of an already present user arrived, went or changed its state.
    Update,
}

/// A change of a path's presence, for the host to deliver to that path's local watchers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// The path whose presence changed.
    pub path: String,
    /// The epoch of `seq` (see [`PresenceSnapshot::epoch`]).
    pub epoch: String,
    /// This change's number in the path's presence, one more than the previous one.
    pub seq: u64,
    /// Join, leave or update.
    pub kind: PresenceKind,
    /// Whose presence changed.
    pub user: PresenceUser,
    /// The user's connections after the change (empty for a leave): a client replaces its
    /// copy of the user with them.
    pub connections: Vec<PresenceConnection>,
}

/// One connection entry of a node, as carried in a [`PresenceMessage::Dump`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The path the connection is present on.
    pub path: String,
    /// The connection, numbered by its node.
    pub conn: ConnId,
    /// Its user.
    pub user: PresenceUser,
    /// Its state.
    pub state: Value,
}

/// What nodes tell each other on the bus, as JSON (`{"type":"join","node":…,"counter":…,…}`).
///
/// Every message carries its sender and the sender's message counter (1, 2, 3, … per
/// process), so a receiver notices lost messages. Receivers follow this rule:
/// - a message from this node itself (echoed by the bus) is ignored;
/// - the next counter (or the first message heard from a node, counter 1) is applied;
/// - a repeated counter is ignored (a duplicate);
/// - a counter that skips ahead means messages were lost: the message is applied where it
///   stands on its own (a join or leave states one entry's whole truth; an update of an
///   unknown entry cannot be applied) and a [`ResyncRequest`](Self::ResyncRequest) goes to the
///   sender, whose [`Dump`](Self::Dump) then replaces everything the lost messages could have
///   changed;
/// - a counter that goes back (a corrupt counter, or a node restarted under its old id) is not
///   applied, becomes the new baseline, and asks the sender for a resync;
/// - a dump's first part is applied whatever its counter (it replaces all the sender knows)
///   and becomes the new baseline, so a resync always recovers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PresenceMessage {
    /// A connection of `node` is present on `path` (or changed its user or state).
    Join {
        /// Sender.
        node: NodeId,
        /// Sender's message counter.
        counter: u64,
        /// The path.
        path: String,
        /// The connection.
        conn: ConnId,
        /// Its user.
        user: PresenceUser,
        /// Its state.
        state: Value,
    },
    /// A present connection changed its state.
    Update {
        /// Sender.
        node: NodeId,
        /// Sender's message counter.
        counter: u64,
        /// The path.
        path: String,
        /// The connection.
        conn: ConnId,
        /// Its new state.
        state: Value,
    },
    /// A connection left the path (or closed).
    Leave {
        /// Sender.
        node: NodeId,
        /// Sender's message counter.
        counter: u64,
        /// The path.
        path: String,
        /// The connection.
        conn: ConnId,
    },
    /// The sender is alive (every [`PresenceConfig::heartbeat_interval`]).
    Heartbeat {
        /// Sender.
        node: NodeId,
        /// Sender's message counter.
        counter: u64,
    },
    /// One part of all the sender's entries, the answer to a resync: once the last part
    /// arrives, they replace every entry the receiver holds for the sender. Parts have
    /// consecutive counters; a part lost drops the dump and asks for another.
    Dump {
        /// Sender.
        node: NodeId,
        /// Sender's message counter.
        counter: u64,
        /// The dump's first part: whatever the receiver collected of an earlier dump is
        /// dropped.
        first: bool,
        /// More parts follow.
        more: bool,
        /// Entries of this part.
        entries: Vec<PresenceEntry>,
    },
    /// Asks for dumps: from every node (`to: None`) when the sender starts or its bus comes
    /// back, or from one node whose messages the sender lost.
    ResyncRequest {
        /// Sender.
        node: NodeId,
        /// Sender's message counter.
        counter: u64,
        /// The node asked, or `None` for all.
        to: Option<NodeId>,
    },
    /// The sender shuts down: all its entries leave now rather than at its expiry.
    Bye {
        /// Sender.
        node: NodeId,
        /// Sender's message counter.
        counter: u64,
    },
}

impl PresenceMessage {
    /// The sender.
    pub fn node(&self) -> NodeId {
        self.header().0
    }

    /// The sender's message counter.
    pub fn counter(&self) -> u64 {
        self.header().1
    }

    fn header(&self) -> (NodeId, u64) {
        match *self {
            PresenceMessage::Join { node, counter, .. }
            | PresenceMessage::Update { node, counter, .. }
            | PresenceMessage::Leave { node, counter, .. }
            | PresenceMessage::Heartbeat { node, counter }
            | PresenceMessage::Dump { node, counter, .. }
            | PresenceMessage::ResyncRequest { node, counter, .. }
            | PresenceMessage::Bye { node, counter } => (node, counter),
        }
    }
}

/// Why a local presence command was refused. Each is the caller's to fix or report to the
/// client; the book is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The state (in bytes of compact JSON) is larger than
    /// [`PresenceConfig::max_state_bytes`]; answer the client 413 and let it send less.
    #[error("presence state of {size} bytes is larger than {max}")]
    StateTooLarge {
        /// The state's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The state is not a JSON object; answer the client 400.
    #[error("presence state must be a JSON object")]
    NotAnObject,
    /// The connection is already present on
    /// [`PresenceConfig::max_paths_per_connection`] paths; it must leave one first (429).
    #[error("the connection is present on too many paths (at most {max})")]
    TooManyPaths {
        /// The limit.
        max: usize,
    },
    /// The connection is not present on the path; it must join first (400 or 404).
    #[error("the connection has not joined this path's presence")]
    NotJoined,
}

impl PresenceError {
    /// A short stable code for the wire (`state_too_large`, …).
    pub fn code(&self) -> &'static str {
        match self {
            PresenceError::StateTooLarge { .. } => "state_too_large",
            PresenceError::NotAnObject => "not_an_object",
            PresenceError::TooManyPaths { .. } => "too_many_paths",
            PresenceError::NotJoined => "not_joined",
        }
    }
}

/// [`PresenceBook::since`] cannot bring the client up to date from where it was: send it a
/// fresh [`PresenceBook::snapshot`] (a `sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("presence history does not reach back that far: a fresh snapshot is needed")]
pub struct SyncNeeded;

/// Names an entry: its node, then its connection (also the order of a user's connections).
type Key = (NodeId, ConnId);

#[derive(Clone, Debug, PartialEq)]
struct Conn {
    username: String,
    state: Value,
}

/// The connections of one user on one path.
type Conns = BTreeMap<Key, Conn>;

/// One path's presence. It exists only while somebody is present.
struct PathRecord {
    /// `{node}.{generation}`: names this record's numbering.
    epoch: String,
    generation: u64,
    seq: u64,
    users: BTreeMap<String, Conns>,
    /// Each entry's user uuid.
    owners: BTreeMap<Key, String>,
    /// The last `config.history` events, oldest first.
    history: VecDeque<PresenceEvent>,
}

/// What this node knows of another node.
struct RemoteNode {
    /// The last counter heard from it.
    last_counter: u64,
    last_heard: Instant,
    /// Its entries, by path and connection.
    entries: BTreeSet<(String, ConnId)>,
    /// Parts of a dump under way.
    dump: Option<Vec<PresenceEntry>>,
}

/// One change to apply: an entry of `path` gets this user and state, or goes.
type Change = (String, Key, Option<(PresenceUser, Value)>);

/// This node's replica of every path's presence: its own connections' entries, which it
/// publishes, and every other node's, learned from the bus.
///
/// Drive it like a session: local commands ([`join`](Self::join), [`update`](Self::update),
/// [`leave`](Self::leave), [`leave_connection`](Self::leave_connection)) and bus input
/// ([`handle_message`](Self::handle_message), [`handle_bus_restored`](Self::handle_bus_restored))
/// go in with `now`; after each, drain [`poll_transmit`](Self::poll_transmit) (publish on the
/// bus) and [`poll_event`](Self::poll_event) (deliver to local watchers) until `None`, and arm
/// one timer at [`poll_timeout`](Self::poll_timeout) for [`handle_timeout`](Self::handle_timeout).
pub struct PresenceBook {
    config: PresenceConfig,
    node: NodeId,
    /// Last message counter used.
    counter: u64,
    /// Last path generation used.
    generation: u64,
    paths: BTreeMap<String, PathRecord>,
    /// Paths of each local connection.
    local: BTreeMap<ConnId, BTreeSet<String>>,
    remotes: BTreeMap<NodeId, RemoteNode>,
    next_heartbeat: Instant,
    /// [`shutdown`](Self::shutdown) was called: nothing more goes out.
    said_bye: bool,
    transmits: VecDeque<PresenceMessage>,
    events: VecDeque<PresenceEvent>,
}

impl PresenceBook {
    /// An empty book for node `node` (unique to this book, see [`NodeId`]). Its first message
    /// asks every other node for its entries.
    pub fn new(config: PresenceConfig, node: NodeId, now: Instant) -> Self {
        let mut book = PresenceBook {
            next_heartbeat: now + config.heartbeat_interval,
            config,
            node,
            counter: 0,
            generation: 0,
            paths: BTreeMap::new(),
            local: BTreeMap::new(),
            remotes: BTreeMap::new(),
            said_bye: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        book.request_resync(None);
        book
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Makes connection `conn` of `user` present on `path` with `state`, and answers who is
    /// present now (the connection included). Joining again changes the state (or the user).
    /// The host checks first that the connection may read `path`. Refused, changing nothing,
    /// with [`PresenceError::NotAnObject`], [`PresenceError::StateTooLarge`] or
    /// [`PresenceError::TooManyPaths`].
    pub fn join(
        &mut self,
        _now: Instant,
        path: &str,
        conn: ConnId,
        user: PresenceUser,
        state: Value,
    ) -> Result<PresenceSnapshot, PresenceError> {
        self.check_state(&state)?;
        let paths = self.local.get(&conn);
        let joined = paths.is_some_and(|p| p.contains(path));
        if !joined && paths.map_or(0, BTreeSet::len) >= self.config.max_paths_per_connection {
            return Err(PresenceError::TooManyPaths {
                max: self.config.max_paths_per_connection,
            });
        }
        let key = (self.node, conn);
        let unchanged = self.entry(path, key).is_some_and(|(uuid, c)| {
            uuid == user.uuid && c.username == user.username && c.state == state
        });
        if !unchanged {
            self.mutate(vec![(
                path.to_owned(),
                key,
                Some((user.clone(), state.clone())),
            )]);
            self.transmit(|node, counter| PresenceMessage::Join {
                node,
                counter,
                path: path.to_owned(),
                conn,
                user,
                state,
            });
        }
        Ok(self.snapshot(path))
    }

    /// Changes the state of connection `conn` on `path`: [`PresenceError::NotJoined`] if it is
    /// not present there, and the state errors of [`join`](Self::join). The same state again
    /// changes nothing (no event, no message).
    pub fn update(
        &mut self,
        _now: Instant,
        path: &str,
        conn: ConnId,
        state: Value,
    ) -> Result<(), PresenceError> {
        self.check_state(&state)?;
        let key = (self.node, conn);
        let Some((uuid, c)) = self.entry(path, key) else {
            return Err(PresenceError::NotJoined);
        };
        if c.state == state {
            return Ok(());
        }
        let user = PresenceUser {
            uuid: uuid.to_owned(),
            username: c.username.clone(),
        };
        self.mutate(vec![(path.to_owned(), key, Some((user, state.clone())))]);
        self.transmit(|node, counter| PresenceMessage::Update {
            node,
            counter,
            path: path.to_owned(),
            conn,
            state,
        });
        Ok(())
    }

    /// Connection `conn` leaves `path`; false if it was not present there.
    pub fn leave(&mut self, _now: Instant, path: &str, conn: ConnId) -> bool {
        let joined = self.local.get(&conn).is_some_and(|p| p.contains(path));
        if joined {
            self.leave_paths(conn, vec![path.to_owned()]);
        }
        joined
    }

    /// Connection `conn` closed: it leaves every path it was present on, at once.
    pub fn leave_connection(&mut self, _now: Instant, conn: ConnId) {
        let paths: Vec<String> = self
            .local
            .get(&conn)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default();
        self.leave_paths(conn, paths);
    }

    /// The process shuts down: every other node drops this node's entries now (one
    /// [`PresenceMessage::Bye`]) instead of when they expire. Local entries stay in the book,
    /// but the book sends nothing after its bye: a leave, heartbeat or dump sent later would
    /// bring this node back to the others (a dump with its entries), to expire only after
    /// [`PresenceConfig::node_ttl`]. Calling it again does nothing.
    pub fn shutdown(&mut self, _now: Instant) {
        self.transmit(|node, counter| PresenceMessage::Bye { node, counter });
        self.said_bye = true;
    }

    /// True once [`shutdown`](Self::shutdown) was called: the book sends nothing more.
    pub fn is_shut_down(&self) -> bool {
        self.said_bye
    }

    /// A message arrived on the bus (from any node, this one included). See
    /// [`PresenceMessage`] for how counters are checked.
    pub fn handle_message(&mut self, now: Instant, msg: PresenceMessage) {
        let (node, counter) = msg.header();
        if node == self.node {
            return;
        }
        let remote = self.remotes.entry(node).or_insert_with(|| RemoteNode {
            last_counter: 0,
            last_heard: now,
            entries: BTreeSet::new(),
            dump: None,
        });
        remote.last_heard = now;
        let last = remote.last_counter;
        if let PresenceMessage::Dump {
            first,
            more,
            entries,
            ..
        } = msg
        {
            self.handle_dump(node, counter, first, more, entries);
            return;
        }
        if counter == last {
            return;
        }
        remote.last_counter = counter;
        if remote.dump.take().is_some() || counter < last {
            // A dump cut short, or a counter going back: nothing here can be trusted in
            // order; a fresh dump replaces it all.
            self.request_resync(Some(node));
            return;
        }
        if counter - last > 1 {
            self.request_resync(Some(node));
        }
        match msg {
            PresenceMessage::Join {
                path,
                conn,
                user,
                state,
                ..
            } => {
                if self.check_state(&state).is_ok() {
                    self.mutate(vec![(path, (node, conn), Some((user, state)))]);
                }
            }
            PresenceMessage::Update {
                path, conn, state, ..
            } => {
                if self.check_state(&state).is_err() {
                    return;
                }
                match self.entry(&path, (node, conn)) {
                    Some((uuid, c)) => {
                        let user = PresenceUser {
                            uuid: uuid.to_owned(),
                            username: c.username.clone(),
                        };
                        self.mutate(vec![(path, (node, conn), Some((user, state)))]);
                    }
                    // The join was lost: only the sender can say whose connection this is.
                    None => self.request_resync(Some(node)),
                }
            }
            PresenceMessage::Leave { path, conn, .. } => {
                self.mutate(vec![(path, (node, conn), None)]);
            }
            PresenceMessage::Heartbeat { .. } => {}
            PresenceMessage::ResyncRequest { to, .. } => {
                if to.is_none_or(|to| to == self.node) {
                    self.queue_dump();
                }
            }
            PresenceMessage::Bye { .. } => self.forget_node(node),
            PresenceMessage::Dump { .. } => {}
        }
    }

    /// The bus came back after an outage: messages both ways may have been lost, so this node
    /// asks every node for a dump and sends its own.
    pub fn handle_bus_restored(&mut self, _now: Instant) {
        self.request_resync(None);
        self.queue_dump();
    }

    /// Sends heartbeats and forgets remote nodes silent for
    /// [`PresenceConfig::node_ttl`] (their entries leave, with events).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_heartbeat {
            self.transmit(|node, counter| PresenceMessage::Heartbeat { node, counter });
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        let ttl = self.config.node_ttl;
        let expired: Vec<NodeId> = self
            .remotes
            .iter()
            .filter(|(_, r)| now >= r.last_heard + ttl)
            .map(|(n, _)| *n)
            .collect();
        for node in expired {
            self.forget_node(node);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next: the next heartbeat or the
    /// earliest remote expiry. Changes after `handle_timeout` and after any message from a
    /// remote node.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ttl = self.config.node_ttl;
        let expiry = self.remotes.values().map(|r| r.last_heard + ttl).min();
        Some(expiry.map_or(self.next_heartbeat, |e| e.min(self.next_heartbeat)))
    }

    /// The next message to publish on the bus, in order. Local commands, resync requests,
    /// dumps and heartbeats queue them.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<PresenceMessage> {
        self.transmits.pop_front()
    }

    /// The next change for the local watchers of its path (the host checks they may read it).
    /// Every change, local or remote, queues one.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PresenceEvent> {
        self.events.pop_front()
    }

    /// Who is present on `path` now, by user uuid.
    pub fn snapshot(&self, path: &str) -> PresenceSnapshot {
        match self.paths.get(path) {
            Some(r) => PresenceSnapshot {
                seq: r.seq,
                epoch: r.epoch.clone(),
                users: r
                    .users
                    .iter()
                    .map(|(uuid, conns)| PresenceMember {
                        uuid: uuid.clone(),
                        username: username(conns),
                        connections: connections(conns),
                    })
                    .collect(),
            },
            // Nobody, as of the current generation: a path created later gets a higher one.
            None => PresenceSnapshot {
                seq: 0,
                epoch: epoch(self.node, self.generation),
                users: Vec::new(),
            },
        }
    }

    /// The events of `path` after `seq` of `epoch` (from a snapshot or the last event a
    /// client saw), for a client that reconnects. [`SyncNeeded`] when this node cannot tell:
    /// another node's or a former process's epoch, a seq past the kept history, or a path
    /// that was emptied (and forgotten) since.
    pub fn since(
        &self,
        path: &str,
        epoch: &str,
        seq: u64,
    ) -> Result<Vec<PresenceEvent>, SyncNeeded> {
        let (node, generation) = parse_epoch(epoch).ok_or(SyncNeeded)?;
        if node != self.node || generation > self.generation {
            return Err(SyncNeeded);
        }
        let Some(r) = self.paths.get(path) else {
            // Seq 0 is an empty view (records start at 1), and the path is empty again.
            return if seq == 0 {
                Ok(Vec::new())
            } else {
                Err(SyncNeeded)
            };
        };
        // History holds the events after `kept_from`.
        let kept_from = r.seq.saturating_sub(r.history.len() as u64);
        let from = if generation == r.generation {
            seq
        } else if seq == 0 && generation < r.generation {
            // An empty view from before this record: its whole history brings it up to date.
            0
        } else {
            return Err(SyncNeeded);
        };
        if from > r.seq || from < kept_from {
            return Err(SyncNeeded);
        }
        Ok(r.history.iter().filter(|e| e.seq > from).cloned().collect())
    }

    /// Paths somebody is present on (for tests and metrics: empty paths are forgotten).
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// Remote nodes this book holds (heard from within [`PresenceConfig::node_ttl`]).
    pub fn remote_node_count(&self) -> usize {
        self.remotes.len()
    }

    /// Queues the message `make` builds with this node's id and its next counter, unless the
    /// book said bye already.
    fn transmit(&mut self, make: impl FnOnce(NodeId, u64) -> PresenceMessage) {
        if self.said_bye {
            return;
        }
        self.counter = self.counter.wrapping_add(1);
        self.transmits.push_back(make(self.node, self.counter));
    }

    fn check_state(&self, state: &Value) -> Result<(), PresenceError> {
        if !state.is_object() {
            return Err(PresenceError::NotAnObject);
        }
        let size = crate::wire::json_size(state);
        if size > self.config.max_state_bytes {
            return Err(PresenceError::StateTooLarge {
                size,
                max: self.config.max_state_bytes,
            });
        }
        Ok(())
    }

    /// An entry's user uuid and connection.
    fn entry(&self, path: &str, key: Key) -> Option<(&str, &Conn)> {
        let r = self.paths.get(path)?;
        let uuid = r.owners.get(&key)?;
        Some((uuid, r.users.get(uuid)?.get(&key)?))
    }

    fn leave_paths(&mut self, conn: ConnId, paths: Vec<String>) {
        let changes = paths
            .iter()
            .map(|p| (p.clone(), (self.node, conn), None))
            .collect();
        self.mutate(changes);
        for path in paths {
            self.transmit(|node, counter| PresenceMessage::Leave {
                node,
                counter,
                path,
                conn,
            });
        }
    }

    fn request_resync(&mut self, to: Option<NodeId>) {
        // One unsent request covers another.
        let queued = self.transmits.iter().any(|m| {
            matches!(m, PresenceMessage::ResyncRequest { to: t, .. } if t.is_none() || *t == to)
        });
        if !queued {
            self.transmit(|node, counter| PresenceMessage::ResyncRequest { node, counter, to });
        }
    }

    /// Queues this node's entries, in parts; an unsent dump is still current (later changes
    /// queue after it), so it answers any number of requests.
    fn queue_dump(&mut self) {
        if self
            .transmits
            .iter()
            .any(|m| matches!(m, PresenceMessage::Dump { first: true, .. }))
        {
            return;
        }
        let mut entries = Vec::new();
        for (conn, paths) in &self.local {
            for path in paths {
                if let Some((uuid, c)) = self.entry(path, (self.node, *conn)) {
                    entries.push(PresenceEntry {
                        path: path.clone(),
                        conn: *conn,
                        user: PresenceUser {
                            uuid: uuid.to_owned(),
                            username: c.username.clone(),
                        },
                        state: c.state.clone(),
                    });
                }
            }
        }
        let size = self.config.max_dump_entries.max(1);
        let mut parts: Vec<Vec<PresenceEntry>> = Vec::new();
        let mut rest = entries.into_iter().peekable();
        while rest.peek().is_some() || parts.is_empty() {
            parts.push(rest.by_ref().take(size).collect());
        }
        let n = parts.len();
        for (i, entries) in parts.into_iter().enumerate() {
            self.transmit(|node, counter| PresenceMessage::Dump {
                node,
                counter,
                first: i == 0,
                more: i + 1 < n,
                entries,
            });
        }
    }

    fn handle_dump(
        &mut self,
        node: NodeId,
        counter: u64,
        first: bool,
        more: bool,
        entries: Vec<PresenceEntry>,
    ) {
        let Some(remote) = self.remotes.get_mut(&node) else {
            return;
        };
        let in_order = remote.last_counter.checked_add(1) == Some(counter);
        remote.last_counter = counter;
        let mut collected = if first {
            Vec::new()
        } else {
            match remote.dump.take() {
                Some(c) if in_order => c,
                _ => {
                    // A part went missing: this dump is useless, ask for another.
                    self.request_resync(Some(node));
                    return;
                }
            }
        };
        collected.extend(entries);
        if more {
            remote.dump = Some(collected);
            return;
        }
        let old: Vec<(String, ConnId)> = remote.entries.iter().cloned().collect();
        let mut changes: BTreeMap<(String, ConnId), Option<(PresenceUser, Value)>> = old
            .into_iter()
            .map(|(path, conn)| ((path, conn), None))
            .collect();
        for e in collected {
            let change = self
                .check_state(&e.state)
                .is_ok()
                .then_some((e.user, e.state));
            changes.insert((e.path, e.conn), change);
        }
        self.mutate(
            changes
                .into_iter()
                .map(|((path, conn), change)| (path, (node, conn), change))
                .collect(),
        );
    }

    /// A remote node is gone (expired or said bye): its entries leave.
    fn forget_node(&mut self, node: NodeId) {
        let Some(remote) = self.remotes.remove(&node) else {
            return;
        };
        self.mutate(
            remote
                .entries
                .into_iter()
                .map(|(path, conn)| (path, (node, conn), None))
                .collect(),
        );
    }

    /// Applies changes to entries, then queues one event per user whose connections on a path
    /// differ from before, in path and uuid order. Doing all changes first makes a batch (a
    /// dump, a node leaving) yield exactly the events its net difference implies.
    fn mutate(&mut self, changes: Vec<Change>) {
        // Each touched user's connections before the batch.
        let mut before: BTreeMap<(String, String), Option<Conns>> = BTreeMap::new();
        let mut touched_paths = BTreeSet::new();
        for (path, key, change) in changes {
            if change.is_none() && !self.paths.contains_key(&path) {
                continue;
            }
            let (node, generation) = (self.node, &mut self.generation);
            let r = self.paths.entry(path.clone()).or_insert_with(|| {
                *generation += 1;
                PathRecord {
                    epoch: epoch(node, *generation),
                    generation: *generation,
                    seq: 0,
                    users: BTreeMap::new(),
                    owners: BTreeMap::new(),
                    history: VecDeque::new(),
                }
            });
            let touched = r
                .owners
                .get(&key)
                .cloned()
                .into_iter()
                .chain(change.as_ref().map(|(u, _)| u.uuid.clone()));
            for uuid in touched {
                before
                    .entry((path.clone(), uuid))
                    .or_insert_with_key(|(_, uuid)| r.users.get(uuid).cloned());
            }
            if let Some(uuid) = r.owners.remove(&key)
                && let Some(conns) = r.users.get_mut(&uuid)
            {
                conns.remove(&key);
                if conns.is_empty() {
                    r.users.remove(&uuid);
                }
            }
            let present = change.is_some();
            if let Some((user, state)) = change {
                r.owners.insert(key, user.uuid.clone());
                r.users.entry(user.uuid).or_default().insert(
                    key,
                    Conn {
                        username: user.username,
                        state,
                    },
                );
            }
            self.index(&path, key, present);
            touched_paths.insert(path);
        }
        for ((path, uuid), was) in before {
            let Some(r) = self.paths.get_mut(&path) else {
                continue;
            };
            let (kind, conns) = match (&was, r.users.get(&uuid)) {
                (None, None) => continue,
                (None, Some(c)) => (PresenceKind::Join, c),
                (Some(c), None) => (PresenceKind::Leave, c),
                (Some(w), Some(c)) if w == c => continue,
                (Some(_), Some(c)) => (PresenceKind::Update, c),
            };
            let event = PresenceEvent {
                path,
                epoch: r.epoch.clone(),
                seq: r.seq + 1,
                kind,
                user: PresenceUser {
                    uuid,
                    username: username(conns),
                },
                connections: if kind == PresenceKind::Leave {
                    Vec::new()
                } else {
                    connections(conns)
                },
            };
            r.seq += 1;
            if self.config.history > 0 {
                if r.history.len() >= self.config.history {
                    r.history.pop_front();
                }
                r.history.push_back(event.clone());
            }
            self.events.push_back(event);
        }
        // Forgets paths nobody is present on any more (their seq and history with them).
        for path in touched_paths {
            if self.paths.get(&path).is_some_and(|r| r.users.is_empty()) {
                self.paths.remove(&path);
            }
        }
    }

    /// Keeps the per-connection and per-node indexes in step with one entry.
    fn index(&mut self, path: &str, (node, conn): Key, present: bool) {
        if node == self.node {
            if present {
                self.local.entry(conn).or_default().insert(path.to_owned());
            } else if let Some(paths) = self.local.get_mut(&conn) {
                paths.remove(path);
                if paths.is_empty() {
                    self.local.remove(&conn);
                }
            }
        } else if let Some(remote) = self.remotes.get_mut(&node) {
            if present {
                remote.entries.insert((path.to_owned(), conn));
            } else {
                remote.entries.remove(&(path.to_owned(), conn));
            }
        }
    }
}

fn epoch(node: NodeId, generation: u64) -> String {
    format!("{node}.{generation}")
}

fn parse_epoch(epoch: &str) -> Option<(NodeId, u64)> {
    let (node, generation) = epoch.split_once('.')?;
    Some((
        NodeId(u64::from_str_radix(node, 16).ok()?),
        generation.parse().ok()?,
    ))
}

/// A user's username: its first connection's (they agree unless the user was renamed between
/// joins), so every node shows the same one.
fn username(conns: &Conns) -> String {
    conns
        .values()
        .next()
        .map(|c| c.username.clone())
        .unwrap_or_default()
}

fn connections(conns: &Conns) -> Vec<PresenceConnection> {
    conns
        .values()
        .map(|c| PresenceConnection {
            state: c.state.clone(),
        })
        .collect()
}
