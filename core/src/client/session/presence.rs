//! Presence and broadcast on the client side: who is on a path, kept equal to the server's
//! snapshot across reconnects, and ephemeral messages routed to what the app watches.
//!
//! The server never replays presence: a socket that drops is gone from every presence at
//! once, and a new socket must join again. So after every reconnect each presence joins again
//! with its last state, and the answer (a snapshot of who is present) replaces the client's
//! copy. The users that came, went or changed meanwhile are reported as the changes they are
//! (`join`, `leave`, `update`), computed from the two copies, then a
//! [`ClientEvent::PresenceSynced`] says the copy is the server's. Between snapshots, events
//! are applied in `seq` order; one that skips a number (a change this socket never got) makes
//! the presence join again, which answers with a fresh snapshot.

use super::{ClientError, ClientEvent, ClientSession, Pending, RequestId, SubId, Waiting};
use crate::client::frame::{BodyFields, ServerFrame, push_str, start_frame};
use crate::json::{as_str, elements, get, members};
use crate::time::Instant;
use std::time::Duration;

/// Names a presence of this client; it stays the same across reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PresenceId(pub u64);

/// What happened to one user of a presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first connection arrived.
    Join,
    /// The user's last connection went.
    Leave,
    /// A connection of the user arrived, went or changed its state.
    Update,
}

impl PresenceChange {
    /// The name apps see (`join`, `leave`, `update`).
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceChange::Join => "join",
            PresenceChange::Leave => "leave",
            PresenceChange::Update => "update",
        }
    }
}

/// Why a presence's copy was replaced by a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncReason {
    /// The first join was answered.
    Join,
    /// The presence joined again on a new socket after a reconnect.
    Reconnect,
    /// An event skipped a number (or changed numbering), so the presence asked again.
    Resync,
}

impl SyncReason {
    /// The name apps see (`join`, `reconnect`, `resync`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncReason::Join => "join",
            SyncReason::Reconnect => "reconnect",
            SyncReason::Resync => "resync",
        }
    }
}

/// One present user, as the client keeps it: the connections are the server's JSON text.
#[derive(Clone, Debug, PartialEq)]
struct Member {
    uuid: String,
    username: String,
    connections: String,
}

pub(super) struct Presence {
    pub(super) id: PresenceId,
    /// The path as the app gave it.
    path: String,
    /// The presence's name: the server's, from its first answer on; until then the path as
    /// given (the server names paths, so the browser package carries no path parser).
    name: String,
    /// The state to join with, JSON object text: the app's last.
    state: String,
    /// The last state the server took (what it holds for this client while joined).
    accepted: Option<String>,
    /// A snapshot was taken on the current socket: its events apply.
    joined: bool,
    /// A join to resync is out: events wait for its snapshot, which holds them.
    resyncing: bool,
    confirmed_once: bool,
    /// Until the first answer: when the presence gives up.
    pub(super) confirm_deadline: Option<Instant>,
    epoch: String,
    seq: u64,
    members: Vec<Member>,
}

impl ClientSession {
    /// Joins the presence of `path` with `state` (a JSON object's text) and keeps a copy of
    /// who is present, equal to the server's. The first answer comes as
    /// [`ClientEvent::PresenceSynced`] (reason `join`), after a
    /// [`ClientEvent::PresenceChanged`] for each user present; then every change comes as a
    /// `PresenceChanged`. It waits for the connection if it is down, up to the request timeout
    /// for its first answer ([`ClientEvent::PresenceEnded`] with
    /// [`ClientError::Timeout`]); a refusal is [`ClientEvent::PresenceRefused`]. After every
    /// reconnect it joins again with its last state and syncs (reason `reconnect`). If the
    /// caller later loses read access, the server ends it: [`ClientEvent::PresenceRevoked`].
    /// A second presence on the same path ends with [`ClientError::AlreadyPresent`]: one
    /// socket has one state per path. At once when written alike; when written otherwise
    /// (`/user/Ann`, `/users/ann`), once the server names it, and then the first presence
    /// joins again with its own state, which the second's join replaced on the server.
    pub fn presence(&mut self, now: Instant, path: &str, state: &str) -> PresenceId {
        let id = PresenceId(self.next_presence);
        self.next_presence += 1;
        // A join the server would refuse for its size would be sent again after every
        // reconnect its refusal causes (the server closes a socket on a frame over its limit).
        let size = join_frame(u64::MAX, path, state).len();
        let error = if self.state == super::ConnectionState::Closed {
            Some(ClientError::Closed)
        } else if self
            .presences
            .iter()
            .any(|p| p.path == path || p.name == path)
        {
            Some(ClientError::AlreadyPresent)
        } else if size > self.max_frame {
            Some(ClientError::FrameTooLarge(size))
        } else {
            None
        };
        if let Some(error) = error {
            self.events.push_back(ClientEvent::PresenceEnded {
                presence: id,
                error,
            });
            return id;
        }
        self.presences.push(Presence {
            id,
            path: path.to_owned(),
            name: path.to_owned(),
            state: state.to_owned(),
            accepted: None,
            joined: false,
            resyncing: false,
            confirmed_once: false,
            confirm_deadline: Some(now + self.config.request_timeout),
            epoch: String::new(),
            seq: 0,
            members: Vec::new(),
        });
        if self.state == super::ConnectionState::Open {
            self.send_join(id);
        }
        id
    }

    /// Changes this client's state on a presence (a JSON object's text). Answered like a
    /// request: [`ClientEvent::Response`] with the server's snapshot once it took the state
    /// (the change shows as a [`ClientEvent::PresenceChanged`] of this user first). While the
    /// connection is down the state waits: the presence joins again with it, and that answer
    /// answers this call. Fails with [`ClientError::NotPresent`] once the presence was left,
    /// or [`ClientError::Timeout`].
    pub fn presence_update(
        &mut self,
        now: Instant,
        presence: PresenceId,
        state: &str,
        timeout: Option<Duration>,
    ) -> RequestId {
        let id = self.take_id();
        let size = self
            .presences
            .iter()
            .find(|p| p.id == presence)
            .map_or(0, |p| join_frame(id, &p.path, state).len());
        let error = if self.state == super::ConnectionState::Closed {
            Some(ClientError::Closed)
        } else if !self.presences.iter().any(|p| p.id == presence) {
            Some(ClientError::NotPresent)
        } else if size > self.max_frame {
            // Kept out of the presence's state: it would be sent with every rejoin.
            Some(ClientError::FrameTooLarge(size))
        } else {
            None
        };
        if let Some(error) = error {
            self.fail(id, error);
            return RequestId(id);
        }
        let open = self.state == super::ConnectionState::Open;
        let Some(p) = self.presences.iter_mut().find(|p| p.id == presence) else {
            return RequestId(id);
        };
        p.state = state.to_owned();
        if open {
            let frame = join_frame(id, &p.path, &p.state);
            self.transmits.push_back(frame);
        }
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        self.pending.push(Pending {
            id,
            deadline: Some(now + timeout),
            timeout_ms: timeout.as_millis() as u64,
            waiting: Waiting::PresenceState {
                presence,
                sent: open,
                state: state.to_owned(),
            },
        });
        RequestId(id)
    }

    /// Leaves a presence: its copy is dropped and nothing more is reported of it. Answered
    /// like a request with the server's `{"path","left"}`. While the connection is down there
    /// is nothing to leave (a closed socket is gone from every presence at once): it is
    /// answered at once, `left` false. A state change of it still waiting for the connection
    /// fails with [`ClientError::NotPresent`].
    pub fn presence_leave(
        &mut self,
        now: Instant,
        presence: PresenceId,
        timeout: Option<Duration>,
    ) -> RequestId {
        let id = self.take_id();
        if self.state == super::ConnectionState::Closed {
            self.fail(id, ClientError::Closed);
            return RequestId(id);
        }
        let Some(i) = self.presences.iter().position(|p| p.id == presence) else {
            self.fail(id, ClientError::NotPresent);
            return RequestId(id);
        };
        let p = self.presences.remove(i);
        for w in self.take_unsent_states(presence) {
            self.fail(w, ClientError::NotPresent);
        }
        if self.state != super::ConnectionState::Open {
            self.events.push_back(ClientEvent::Response {
                id: RequestId(id),
                status: 200,
                body: left_body(&p.name, false),
            });
            return RequestId(id);
        }
        let mut frame = start_frame(id, "PRESENCE");
        frame.push_str(",\"path\":");
        push_str(&mut frame, &p.path);
        frame.push_str(",\"body\":{\"leave\":true}}");
        self.transmits.push_back(frame);
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        self.pending.push(Pending {
            id,
            deadline: Some(now + timeout),
            timeout_ms: timeout.as_millis() as u64,
            waiting: Waiting::Leave { name: p.name },
        });
        RequestId(id)
    }

    /// Sends `body` (JSON text, not `null`) to whoever watches `path` now: its subscribers
    /// and those present on it, and this client too with `echo`. Answered like a request with
    /// the server's `{"path","delivered"}`. A broadcast is meant for whoever watches *now*:
    /// it is never held while the connection is down nor sent again after a drop, and fails
    /// with [`ClientError::Disconnected`] instead (after a drop it may have been delivered).
    pub fn broadcast(
        &mut self,
        now: Instant,
        path: &str,
        body: &str,
        echo: bool,
        timeout: Option<Duration>,
    ) -> RequestId {
        let id = self.take_id();
        let error = match self.state {
            super::ConnectionState::Closed => Some(ClientError::Closed),
            super::ConnectionState::Open => None,
            _ => Some(ClientError::Disconnected),
        };
        if let Some(error) = error {
            self.fail(id, error);
            return RequestId(id);
        }
        let mut frame = start_frame(id, "BROADCAST");
        frame.push_str(",\"path\":");
        push_str(&mut frame, path);
        if echo {
            frame.push_str(",\"params\":{\"echo\":true}");
        }
        frame.push_str(",\"body\":");
        frame.push_str(body);
        frame.push('}');
        if frame.len() > self.max_frame {
            self.fail(id, ClientError::FrameTooLarge(frame.len()));
            return RequestId(id);
        }
        self.transmits.push_back(frame);
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        self.pending.push(Pending {
            id,
            deadline: Some(now + timeout),
            timeout_ms: timeout.as_millis() as u64,
            waiting: Waiting::Broadcast,
        });
        RequestId(id)
    }

    /// The uuid of the client's user, once greeted as one.
    /// Takes out of the pending requests the state updates of `presence` not sent yet (they
    /// wait for its join); answers their ids.
    fn take_unsent_states(&mut self, presence: PresenceId) -> Vec<u64> {
        let unsent: Vec<u64> = self
            .pending
            .iter()
            .filter(|q| {
                matches!(q.waiting, Waiting::PresenceState { presence: of, sent: false, .. } if of == presence)
            })
            .map(|q| q.id)
            .collect();
        self.pending.retain(|q| !unsent.contains(&q.id));
        unsent
    }

    /// Another presence of this client by the name the server's first answer `body` gives
    /// presence `i` (written otherwise than it, so not refused at once).
    fn twin_of(&self, i: usize, body: Option<&str>) -> Option<PresenceId> {
        let p = &self.presences[i];
        if p.confirmed_once {
            return None;
        }
        let name = BodyFields::of(body).path?;
        self.presences
            .iter()
            .find(|q| q.id != p.id && q.confirmed_once && q.name == name)
            .map(|q| q.id)
    }

    /// Sends a presence's join (its first, again on a new socket, or to resync).
    pub(super) fn send_join(&mut self, presence: PresenceId) {
        let id = self.take_id();
        let Some(p) = self.presences.iter().find(|p| p.id == presence) else {
            return;
        };
        let reason = if !p.confirmed_once {
            SyncReason::Join
        } else if p.joined {
            SyncReason::Resync
        } else {
            SyncReason::Reconnect
        };
        self.transmits.push_back(join_frame(id, &p.path, &p.state));
        let state = p.state.clone();
        self.pending.push(Pending {
            id,
            deadline: None,
            timeout_ms: 0,
            waiting: Waiting::Join {
                presence,
                reason,
                state,
            },
        });
    }

    /// The socket closed: every presence must join again on the next one.
    pub(super) fn presences_dropped(&mut self) {
        for p in &mut self.presences {
            p.joined = false;
            p.resyncing = false;
        }
    }

    /// The answer to a join: the snapshot replaces the copy (or the presence is refused and
    /// gone). State changes made while the connection was down went with this join and are
    /// answered by it too. A join again whose new state the server refused (too large) is
    /// tried once more with the state the server last took, so that a bad state fails its
    /// own call rather than ending the presence.
    pub(super) fn joined(
        &mut self,
        presence: PresenceId,
        reason: SyncReason,
        state: String,
        status: u16,
        body: Option<&str>,
    ) {
        let Some(i) = self.presences.iter().position(|p| p.id == presence) else {
            // Left meanwhile: its leave follows this answer on the same socket.
            return;
        };
        let raw = body.unwrap_or("null");
        let carried = self.take_unsent_states(presence);
        let twin = (status == 200).then(|| self.twin_of(i, body)).flatten();
        let p = &mut self.presences[i];
        let fallback = p.accepted.clone().filter(|a| *a != state);
        if status == 413
            && let Some(accepted) = fallback
        {
            p.state = accepted;
            self.send_join(presence);
        } else if status != 200 {
            self.presences.remove(i);
            self.events.push_back(ClientEvent::PresenceRefused {
                presence,
                status,
                body: raw.to_owned(),
            });
        } else if let Some(twin) = twin {
            // The server names this path as a presence the client has already: its join
            // replaced that presence's state there, so the first one joins again with its own.
            self.presences.remove(i);
            self.events.push_back(ClientEvent::PresenceEnded {
                presence,
                error: ClientError::AlreadyPresent,
            });
            if let Some(first) = self.presences.iter_mut().find(|p| p.id == twin) {
                first.resyncing = true;
            }
            self.send_join(twin);
        } else {
            p.accepted = Some(state);
            p.confirmed_once = true;
            p.confirm_deadline = None;
            p.joined = true;
            p.resyncing = false;
            let users = apply_snapshot(p, body, &mut self.events, true);
            self.events.push_back(ClientEvent::PresenceSynced {
                presence,
                reason,
                path: p.name.clone(),
                users,
            });
        }
        for id in carried {
            self.events.push_back(ClientEvent::Response {
                id: RequestId(id),
                status,
                body: raw.to_owned(),
            });
        }
    }

    /// The answer to a state change sent on the current socket: the snapshot holds it. A
    /// refused state is forgotten: the next join carries the one the server holds, unless a
    /// newer one was set meanwhile.
    pub(super) fn state_answered(
        &mut self,
        presence: PresenceId,
        state: String,
        status: u16,
        body: Option<&str>,
    ) {
        let Some(p) = self.presences.iter_mut().find(|p| p.id == presence) else {
            return;
        };
        if status != 200 {
            if p.state == state
                && let Some(accepted) = &p.accepted
            {
                p.state = accepted.clone();
            }
            return;
        }
        p.accepted = Some(state);
        if p.joined && !p.resyncing {
            apply_snapshot(p, body, &mut self.events, false);
        }
    }

    /// A `presence` event: applied in `seq` order to the presence of that name.
    pub(super) fn presence_event(&mut self, frame: &ServerFrame<'_>) -> Result<(), ClientError> {
        // Whole messages, not format!ed: formatting would add its machinery to the wasm.
        let bad = |what: &str| ClientError::BadServerFrame(what.to_owned());
        let name = frame
            .path
            .as_deref()
            .ok_or_else(|| bad("a presence event without a path"))?;
        let seq = frame
            .seq
            .ok_or_else(|| bad("a presence event without a seq"))?;
        let user = frame
            .user
            .and_then(members)
            .ok_or_else(|| bad("a presence event without a user"))?;
        let uuid = get(&user, "uuid").and_then(as_str).unwrap_or_default();
        let username = get(&user, "username").and_then(as_str).unwrap_or_default();
        let connections = frame
            .connections
            .filter(|c| elements(c).is_some())
            .ok_or_else(|| bad("a presence event without connections"))?;
        let change = match frame.kind.as_deref() {
            Some("join") => PresenceChange::Join,
            Some("leave") => PresenceChange::Leave,
            Some("update") => PresenceChange::Update,
            _ => return Err(bad("a presence event of an unknown kind")),
        };
        let epoch = frame.epoch.as_deref().unwrap_or_default();
        let Some(p) = self
            .presences
            .iter_mut()
            .find(|p| p.name == name && p.joined)
        else {
            // Of a presence this client left, or one whose snapshot is still to come.
            return Ok(());
        };
        if p.resyncing || (p.epoch == epoch && seq <= p.seq) {
            // The snapshot under way, or the one taken, holds it.
            return Ok(());
        }
        if p.epoch != epoch || seq != p.seq + 1 {
            // A change this socket never got: ask for the whole presence again.
            p.resyncing = true;
            let id = p.id;
            self.send_join(id);
            return Ok(());
        }
        p.seq = seq;
        let member = Member {
            uuid: uuid.into_owned(),
            username: username.into_owned(),
            connections: connections.to_owned(),
        };
        let presence = p.id;
        match p.members.iter().position(|m| m.uuid == member.uuid) {
            Some(i) if change == PresenceChange::Leave => {
                p.members.remove(i);
            }
            Some(i) => p.members[i] = member.clone(),
            None if change != PresenceChange::Leave => p.members.push(member.clone()),
            None => {}
        }
        self.events.push_back(ClientEvent::PresenceChanged {
            presence,
            change,
            uuid: member.uuid,
            username: member.username,
            connections: member.connections,
        });
        Ok(())
    }

    /// A `revoked` event of a presence: the server took this socket out of it. Every
    /// presence of that name this client holds is over (one per name, unless a join of it
    /// is still unanswered: that one is judged by its own answer).
    pub(super) fn presence_revoked(&mut self, frame: &ServerFrame<'_>) {
        let Some(name) = frame.presence.as_deref() else {
            return;
        };
        let reason = frame.reason.as_deref().unwrap_or("revoked");
        let mut i = 0;
        while i < self.presences.len() {
            if self.presences[i].name == name && self.presences[i].joined {
                let p = self.presences.remove(i);
                self.events.push_back(ClientEvent::PresenceRevoked {
                    presence: p.id,
                    reason: reason.to_owned(),
                });
            } else {
                i += 1;
            }
        }
    }

    /// A `broadcast` event: reported once, with the subscriptions and presences of its path.
    pub(super) fn broadcast_event(&mut self, frame: &ServerFrame<'_>) -> Result<(), ClientError> {
        let path = frame.path.as_deref().ok_or_else(|| {
            ClientError::BadServerFrame("a broadcast event without a path".into())
        })?;
        let subs: Vec<SubId> = self
            .subs
            .iter()
            .filter(|s| s.name.as_deref() == Some(path))
            .map(|s| s.id)
            .collect();
        let presences: Vec<PresenceId> = self
            .presences
            .iter()
            .filter(|p| p.name == path)
            .map(|p| p.id)
            .collect();
        self.events.push_back(ClientEvent::Broadcast {
            path: path.to_owned(),
            from: frame.from.unwrap_or("null").to_owned(),
            body: frame.body.unwrap_or("null").to_owned(),
            subs,
            presences,
        });
        Ok(())
    }

    /// Time passed: presences still without a first answer give up.
    pub(super) fn presence_timeouts(&mut self, now: Instant) {
        let ms = self.config.request_timeout.as_millis() as u64;
        let mut i = 0;
        while i < self.presences.len() {
            if self.presences[i].confirm_deadline.is_some_and(|t| t <= now) {
                let p = self.presences.remove(i);
                self.events.push_back(ClientEvent::PresenceEnded {
                    presence: p.id,
                    error: ClientError::Timeout(ms),
                });
            } else {
                i += 1;
            }
        }
    }

    /// The client closed: every presence ends.
    pub(super) fn presences_closed(&mut self) {
        for p in std::mem::take(&mut self.presences) {
            self.events.push_back(ClientEvent::PresenceEnded {
                presence: p.id,
                error: ClientError::Closed,
            });
        }
    }
}

/// `{"id":N,"method":"PRESENCE","path":…,"body":{"state":…}}`.
fn join_frame(id: u64, path: &str, state: &str) -> String {
    let mut frame = start_frame(id, "PRESENCE");
    frame.push_str(",\"path\":");
    push_str(&mut frame, path);
    frame.push_str(",\"body\":{\"state\":");
    frame.push_str(state);
    frame.push_str("}}");
    frame
}

/// The answer to a leave the server never got: `{"path":…,"left":…}`.
pub(super) fn left_body(name: &str, left: bool) -> String {
    let mut body = String::from("{\"path\":");
    push_str(&mut body, name);
    body.push_str(if left {
        ",\"left\":true}"
    } else {
        ",\"left\":false}"
    });
    body
}

/// Replaces `p`'s copy with the snapshot `body` and reports what changed, user by user.
/// A snapshot older than the copy (same numbering, lower `seq`) changes nothing, unless
/// `always` (a join's, which is the truth for the new socket). Returns the snapshot's users,
/// JSON text.
fn apply_snapshot(
    p: &mut Presence,
    body: Option<&str>,
    events: &mut std::collections::VecDeque<ClientEvent>,
    always: bool,
) -> String {
    let fields = BodyFields::of(body);
    let users_raw = fields.users.unwrap_or("[]");
    let seq = fields.seq.unwrap_or(0);
    let epoch = fields.epoch.as_deref().unwrap_or_default();
    if !always && p.epoch == epoch && seq < p.seq {
        return users_raw.to_owned();
    }
    if let Some(name) = fields.path.as_deref() {
        p.name = name.to_owned();
    }
    p.seq = seq;
    p.epoch = epoch.to_owned();
    let fresh: Vec<Member> = elements(users_raw)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| {
            let m = members(u)?;
            Some(Member {
                uuid: get(&m, "uuid").and_then(as_str)?.into_owned(),
                username: get(&m, "username")
                    .and_then(as_str)
                    .unwrap_or_default()
                    .into_owned(),
                connections: get(&m, "connections")
                    .filter(|c| elements(c).is_some())?
                    .to_owned(),
            })
        })
        .collect();
    let old = std::mem::take(&mut p.members);
    for m in &old {
        if !fresh.iter().any(|f| f.uuid == m.uuid) {
            events.push_back(ClientEvent::PresenceChanged {
                presence: p.id,
                change: PresenceChange::Leave,
                uuid: m.uuid.clone(),
                username: m.username.clone(),
                connections: "[]".into(),
            });
        }
    }
    for f in &fresh {
        let change = match old.iter().find(|m| m.uuid == f.uuid) {
            None => PresenceChange::Join,
            Some(m) if *m != *f => PresenceChange::Update,
            Some(_) => continue,
        };
        events.push_back(ClientEvent::PresenceChanged {
            presence: p.id,
            change,
            uuid: f.uuid.clone(),
            username: f.username.clone(),
            connections: f.connections.clone(),
        });
    }
    p.members = fresh;
    users_raw.to_owned()
}

#[cfg(test)]
mod tests;
