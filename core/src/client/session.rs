//! [`ClientSession`]: one client's protocol state across reconnects, sans IO.

use super::backoff::Backoff;
use super::frame::{
    BodyFields, ServerFrame, is_delivery, object_members, push_str, push_u64, start_frame,
};
use crate::time::Instant;
use std::time::Duration;

mod presence;

pub use presence::{PresenceChange, PresenceId, SyncReason};

/// Settings of a client session.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long a request may take, from the call to its answer, including any time spent
    /// waiting for the connection to come back; then it fails with [`ClientError::Timeout`].
    /// Also how long a subscription may wait for its first confirmation, and how long the
    /// very first connection may take before the session gives up.
    pub request_timeout: Duration,
    /// How long one connection attempt may take, from [`ClientEvent::Connect`] to the
    /// server's greeting; then the attempt counts as failed and the next one is scheduled.
    pub connect_timeout: Duration,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Most requests waiting for answers (in flight or queued); more fail with
    /// [`ClientError::TooManyPending`].
    pub max_pending: usize,
    /// Most requests out on a socket at once until the server's greeting says its own limit
    /// (`max_in_flight`); the others wait in the client, so the server never refuses one for
    /// being one too many.
    pub max_in_flight: usize,
    /// Largest frame sent until the server's greeting says its own (`max_frame_bytes`); a
    /// request over it fails at once with [`ClientError::FrameTooLarge`].
    pub max_frame_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_pending: 1024,
            max_in_flight: 64,
            max_frame_bytes: 1 << 20,
        }
    }
}

/// Names a request of this client (also an [`set_access_token`](ClientSession::set_access_token)
/// call, which is answered like one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Names a subscription of this client; it stays the same across reconnects (the server's id
/// changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubId(pub u64);

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// A socket is being opened, and the server's greeting awaited.
    Connecting,
    /// The server greeted the socket.
    Open,
    /// The socket dropped; a new one opens after a backoff delay.
    Reconnecting,
    /// Closed for good (by the app, or the server refused the client for good).
    Closed,
}

impl ConnectionState {
    /// The name apps see (`connecting`, `open`, `reconnecting`, `closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Open => "open",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        }
    }
}

/// Why something failed without an answer from the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No answer within the timeout (in ms), whether the connection was up or not. A write
    /// may or may not have been applied; sending it again with a new call applies it again.
    #[error("no answer within the timeout")]
    Timeout(u64),
    /// The client was closed; nothing more is sent or answered.
    #[error("the client is closed")]
    Closed,
    /// Too many requests are waiting for answers; wait for some.
    #[error("too many requests waiting for answers")]
    TooManyPending,
    /// The request's frame (in bytes) is larger than the server takes: it was never sent.
    #[error("the request is larger than the server takes")]
    FrameTooLarge(usize),
    /// The server greeted the socket as another user than the client's (a token of another
    /// user): that socket was dropped. Open a new client for another user.
    #[error("the token belongs to another user than the client's")]
    UserChanged,
    /// The server sent something that is not a protocol frame (a server bug; the frame is
    /// ignored).
    #[error("unreadable frame from the server")]
    BadServerFrame(String),
    /// A broadcast found the connection down, or the connection dropped before its answer
    /// (then it may have been delivered). Broadcasts are for whoever watches now, so they are
    /// never held or sent again: send a new one once the connection is back, if still useful.
    #[error("the connection is down: a broadcast is never held or sent again")]
    Disconnected,
    /// The presence was left (or ended) before this call reached the server.
    #[error("the presence was left")]
    NotPresent,
    /// This client is present on that path already (one socket has one state per path):
    /// change the state through the presence it has.
    #[error("this client is present on that path already")]
    AlreadyPresent,
}

impl ClientError {
    /// A short stable code for apps (`timeout`, `closed`, …).
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Timeout(_) => "timeout",
            ClientError::Closed => "closed",
            ClientError::TooManyPending => "too_many_pending",
            ClientError::FrameTooLarge(_) => "frame_too_large",
            ClientError::UserChanged => "user_changed",
            ClientError::BadServerFrame(_) => "bad_server_frame",
            ClientError::Disconnected => "disconnected",
            ClientError::NotPresent => "not_present",
            ClientError::AlreadyPresent => "already_present",
        }
    }
}

/// Why the session asks for a new access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthReason {
    /// The token expires soon (the server said when, in `expires_in`).
    Expiring,
    /// The server said the token has expired; it closes the socket after a grace period
    /// unless a new one comes.
    Expired,
    /// The server refused the token (a reconnect, or a request answered 401).
    Rejected,
}

impl AuthReason {
    /// The name apps see (`expiring`, `expired`, `rejected`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthReason::Expiring => "expiring",
            AuthReason::Expired => "expired",
            AuthReason::Rejected => "rejected",
        }
    }
}

/// What the host must do or tell the app. Bodies, snapshots and entities are JSON text, as
/// the server sent them.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum ClientEvent {
    /// Open a socket to this URL now (dropping any other); report
    /// [`ClientSession::handle_open`], [`ClientSession::handle_frame`] and
    /// [`ClientSession::handle_close`] for it.
    Connect {
        /// The URL, with the access token.
        url: String,
    },
    /// Close the current socket and report nothing more of it (an attempt that took too
    /// long, a socket greeted as another user, [`ClientSession::close`]).
    Disconnect,
    /// The connection state changed.
    StateChanged(ConnectionState),
    /// A request's answer (any status), or an access token's (200 once the server took it).
    Response {
        /// Which request.
        id: RequestId,
        /// HTTP status.
        status: u16,
        /// The REST body, JSON text.
        body: String,
    },
    /// A request failed without an answer.
    RequestFailed {
        /// Which request.
        id: RequestId,
        /// Why.
        error: ClientError,
    },
    /// A subscription was confirmed (also again after each reconnect).
    Subscribed {
        /// Which subscription.
        sub: SubId,
        /// The log position it starts after.
        seq: u64,
        /// The snapshot page (JSON text), when asked for.
        snapshot: Option<String>,
        /// True when this confirmation resumed after a reconnect.
        resumed: bool,
    },
    /// The server refused a subscription; it is gone.
    SubscribeFailed {
        /// Which subscription.
        sub: SubId,
        /// HTTP status.
        status: u16,
        /// The error body, JSON text.
        body: String,
    },
    /// A subscription ended without the server: the client closed, or its first
    /// confirmation did not come in time.
    SubscriptionEnded {
        /// Which subscription.
        sub: SubId,
        /// Why.
        error: ClientError,
    },
    /// A change.
    Event {
        /// Which subscription.
        sub: SubId,
        /// `create`, `update`, `delete`, `enter` or `leave`.
        kind: String,
        /// Its log position.
        seq: u64,
        /// The entity (or queue message), JSON text.
        entity: String,
    },
    /// A resume could not replay everything missed: the app must refetch (GET or snapshot).
    ResyncRequired {
        /// Which subscription.
        sub: SubId,
    },
    /// The subscription lost access and ended.
    Revoked {
        /// Which subscription.
        sub: SubId,
        /// Why.
        reason: String,
    },
    /// A frame about the connection rather than a request: a refused handshake, an expiring
    /// token.
    ServerError {
        /// HTTP-style status.
        status: u16,
        /// The Usergrid error body, JSON text.
        body: String,
    },
    /// A new access token is needed: get one and pass it to
    /// [`ClientSession::set_access_token`].
    AuthRequired {
        /// Why.
        reason: AuthReason,
    },
    /// The client gave up for good (it is closed now): the first connection did not open
    /// within the request timeout, or the server greeted it as another user.
    Failed {
        /// Why.
        error: ClientError,
    },
    /// A user of a presence joined, left or changed: from the server's event, or found by
    /// comparing a new snapshot with the copy. Replace the copy of that user with
    /// `connections` (none: remove it).
    PresenceChanged {
        /// Which presence.
        presence: PresenceId,
        /// What happened.
        change: PresenceChange,
        /// The user's uuid.
        uuid: String,
        /// The user's username.
        username: String,
        /// The user's connections after the change, JSON text: `[{"state":{…}}, …]`.
        connections: String,
    },
    /// A presence's copy is the server's snapshot now (each change it brought was reported
    /// first, as a [`ClientEvent::PresenceChanged`]).
    PresenceSynced {
        /// Which presence.
        presence: PresenceId,
        /// The first join, a join again after a reconnect, or a resync.
        reason: SyncReason,
        /// The presence's name (`/groups/lobby`).
        path: String,
        /// Who is present, JSON text: `[{"uuid","username","connections"}, …]`.
        users: String,
    },
    /// The server refused to join (or join again after a reconnect); the presence is gone.
    PresenceRefused {
        /// Which presence.
        presence: PresenceId,
        /// HTTP status.
        status: u16,
        /// The error body, JSON text.
        body: String,
    },
    /// The server took this client out of a presence: its caller lost read access to it.
    /// The presence is gone; joining it again is up to the app.
    PresenceRevoked {
        /// Which presence.
        presence: PresenceId,
        /// Why (`forbidden`).
        reason: String,
    },
    /// A presence ended without the server: the client closed, its first answer did not come
    /// in time, or the client is present on that path already.
    PresenceEnded {
        /// Which presence.
        presence: PresenceId,
        /// Why.
        error: ClientError,
    },
    /// A broadcast to a path this client watches (or its own, echoed).
    Broadcast {
        /// The path's presence name.
        path: String,
        /// The sender, JSON text: `{"uuid","username"}`.
        from: String,
        /// The message, JSON text.
        body: String,
        /// The subscriptions of that path.
        subs: Vec<SubId>,
        /// The presences of that path.
        presences: Vec<PresenceId>,
    },
}

enum Waiting {
    /// A REST call: its frame goes out (again) on every greeted socket until answered;
    /// `sent` while it is out on the current socket (at most the server's in-flight limit
    /// are: the rest wait their turn in the client).
    Request { frame: String, sent: bool },
    /// A `SUBSCRIBE` on the current socket.
    Subscribe(SubId),
    /// An `UNSUBSCRIBE` on the current socket; its answer changes nothing.
    Unsubscribe,
    /// An `AUTH` on the current socket.
    Auth { token: String },
    /// A presence's join on the current socket (answered with a snapshot).
    Join {
        presence: PresenceId,
        reason: SyncReason,
        /// The state it carries.
        state: String,
    },
    /// An app's state change of a presence: out on the current socket (`sent`), or waiting
    /// for the presence's next join, which carries it and whose answer answers it.
    PresenceState {
        presence: PresenceId,
        sent: bool,
        state: String,
    },
    /// A presence's leave on the current socket.
    Leave { name: String },
    /// A `BROADCAST` on the current socket: never sent again.
    Broadcast,
}

impl Waiting {
    /// An app's call, which the app awaits: it fails when it times out or the client closes.
    fn is_call(&self) -> bool {
        matches!(
            self,
            Waiting::Request { .. }
                | Waiting::Auth { .. }
                | Waiting::PresenceState { .. }
                | Waiting::Leave { .. }
                | Waiting::Broadcast
        )
    }
}

struct Pending {
    id: u64,
    /// When it fails with [`ClientError::Timeout`]; `None`: it waits as long as the socket.
    deadline: Option<Instant>,
    timeout_ms: u64,
    waiting: Waiting,
}

/// A token set while no socket was open: tried by the next connection, which must be
/// greeted as the same user.
struct Proposal {
    token: String,
    ids: Vec<u64>,
    deadline: Instant,
    timeout_ms: u64,
}

struct Sub {
    id: SubId,
    path: String,
    /// The `params` object's members (without braces), if any.
    params: Option<String>,
    snapshot: bool,
    server_id: Option<String>,
    /// The path's presence name, as the server's confirmation gives it: broadcasts to the
    /// path carry it.
    name: Option<String>,
    last_seq: Option<u64>,
    confirmed_once: bool,
    /// Until the first confirmation: when the subscription gives up.
    confirm_deadline: Option<Instant>,
}

/// One client's protocol state: requests waiting for answers (sent, or queued while the
/// connection is down), subscriptions with the last `seq` each saw, the user the client is,
/// its token's expiry, and the reconnect schedule.
///
/// Drive it like [`crate::ServerSession`]: feed what the socket does ([`handle_open`],
/// [`handle_frame`], [`handle_close`]) and time ([`handle_timeout`]); after every call send
/// each [`poll_transmit`] frame, act on each [`poll_event`], and arm one timer at
/// [`poll_timeout`]. [`ClientEvent::Connect`] asks the host to open a socket,
/// [`ClientEvent::Disconnect`] to drop it.
///
/// Guarantees the host can pass on to apps:
/// - a request made while the connection is down waits for it, up to its timeout;
/// - a request whose socket dropped before its answer is sent again on the next socket;
///   writes carry a `write_id` that stays the same, so the server applies each write once;
/// - subscriptions resume after a reconnect, each event delivered once and in order;
/// - the client stays one user: a token for another user is refused
///   ([`ClientError::UserChanged`]);
/// - after [`close`](Self::close), everything waiting ends with [`ClientError::Closed`].
///
/// [`handle_open`]: Self::handle_open
/// [`handle_frame`]: Self::handle_frame
/// [`handle_close`]: Self::handle_close
/// [`handle_timeout`]: Self::handle_timeout
/// [`poll_transmit`]: Self::poll_transmit
/// [`poll_event`]: Self::poll_event
/// [`poll_timeout`]: Self::poll_timeout
pub struct ClientSession {
    config: ClientConfig,
    base_url: String,
    access_token: Option<String>,
    state: ConnectionState,
    random: u64,
    /// The prefix of this session's write ids: random, from the host.
    write_prefix: String,
    next_id: u64,
    next_sub: u64,
    /// In id order.
    pending: Vec<Pending>,
    subs: Vec<Sub>,
    next_presence: u64,
    presences: Vec<presence::Presence>,
    proposal: Option<Proposal>,
    /// The connection attempt under way tries the proposed token.
    trying_proposal: bool,
    /// The user of the first greeting (`None` inside: a guest or a non-user principal).
    user: Option<Option<String>>,
    opened_once: bool,
    /// A token problem was reported for the current attempt already.
    auth_reported: bool,
    transmits: std::collections::VecDeque<String>,
    events: std::collections::VecDeque<ClientEvent>,
    reconnect_at: Option<Instant>,
    connect_deadline: Option<Instant>,
    first_open_deadline: Option<Instant>,
    refresh_at: Option<Instant>,
    attempt: u32,
    /// Requests out on a socket at once, and the largest frame: the config's until the
    /// server's greeting says.
    window: usize,
    max_frame: usize,
}

impl ClientSession {
    /// A session that connects at once to `base_url` (`ws://host:8088/org/app`). `seed` must
    /// be random (the host's best): it names this session's writes, so that the server can
    /// tell them from every other client's, and feeds the reconnect jitter.
    pub fn new(
        now: Instant,
        config: ClientConfig,
        base_url: &str,
        access_token: Option<String>,
        seed: u128,
    ) -> ClientSession {
        let mut write_prefix = String::with_capacity(27);
        let mut x = seed;
        for _ in 0..26 {
            // 26 base-32 digits: all 128 bits.
            write_prefix.push(b"0123456789abcdefghijklmnopqrstuv"[(x & 31) as usize] as char);
            x >>= 5;
        }
        write_prefix.push('.');
        let mut s = ClientSession {
            base_url: base_url.to_owned(),
            access_token,
            state: ConnectionState::Connecting,
            random: (seed as u64) | 1,
            write_prefix,
            next_id: 1,
            next_sub: 1,
            pending: Vec::new(),
            subs: Vec::new(),
            next_presence: 1,
            presences: Vec::new(),
            proposal: None,
            trying_proposal: false,
            user: None,
            opened_once: false,
            auth_reported: false,
            transmits: Default::default(),
            events: Default::default(),
            reconnect_at: None,
            connect_deadline: Some(now + config.connect_timeout),
            first_open_deadline: Some(now + config.request_timeout),
            refresh_at: None,
            attempt: 0,
            window: config.max_in_flight.max(1),
            max_frame: config.max_frame_bytes,
            config,
        };
        s.events
            .push_back(ClientEvent::StateChanged(ConnectionState::Connecting));
        s.events.push_back(ClientEvent::Connect {
            url: s.connect_url(),
        });
        s
    }

    /// The URL to open: the base URL with the token to try (a newly set one first).
    pub fn connect_url(&self) -> String {
        let token = match &self.proposal {
            Some(p) => Some(&p.token),
            None => self.access_token.as_ref(),
        };
        let Some(t) = token else {
            return self.base_url.clone();
        };
        let mut url = self.base_url.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("access_token=");
        url.extend(percent_encoding::utf8_percent_encode(
            t,
            percent_encoding::NON_ALPHANUMERIC,
        ));
        url
    }

    /// Where the connection stands.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Sends waiting requests, oldest first, while fewer than the window are out.
    fn send_waiting(&mut self) {
        if self.state != ConnectionState::Open {
            return;
        }
        let mut out = self
            .pending
            .iter()
            .filter(|p| matches!(p.waiting, Waiting::Request { sent: true, .. }))
            .count();
        for p in &mut self.pending {
            if out >= self.window {
                break;
            }
            if let Waiting::Request { frame, sent } = &mut p.waiting
                && !*sent
            {
                *sent = true;
                out += 1;
                self.transmits.push_back(frame.clone());
            }
        }
    }

    /// How many requests wait for an answer (sent, or queued until the connection is back).
    pub fn pending_requests(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| matches!(p.waiting, Waiting::Request { .. }))
            .count()
    }

    /// True once [`close`](Self::close)d, or given up.
    pub fn is_closed(&self) -> bool {
        self.state == ConnectionState::Closed
    }

    /// The last `seq` a subscription delivered.
    pub fn last_seq(&self, sub: SubId) -> Option<u64> {
        self.subs
            .iter()
            .find(|s| s.id == sub)
            .and_then(|s| s.last_seq)
    }

    /// Sends a request (`params`: a JSON object's text, `body`: JSON text). Its answer comes as
    /// [`ClientEvent::Response`], or [`ClientEvent::RequestFailed`] after `timeout` (default:
    /// the config's) or [`close`](Self::close). While the connection is down the request
    /// waits for it; if the socket drops before the answer, it is sent again on the next one,
    /// and a write carries the same `write_id` each time, so the server applies it once.
    pub fn request(
        &mut self,
        now: Instant,
        method: &str,
        path: &str,
        params: Option<&str>,
        body: Option<&str>,
        timeout: Option<Duration>,
    ) -> RequestId {
        let id = self.take_id();
        let failure = if self.state == ConnectionState::Closed {
            Some(ClientError::Closed)
        } else if self.pending_requests() >= self.config.max_pending {
            Some(ClientError::TooManyPending)
        } else {
            None
        };
        if let Some(error) = failure {
            self.events.push_back(ClientEvent::RequestFailed {
                id: RequestId(id),
                error,
            });
            return RequestId(id);
        }
        let mut frame = start_frame(id, method);
        frame.push_str(",\"path\":");
        push_str(&mut frame, path);
        if let Some(p) = params.and_then(object_members) {
            frame.push_str(",\"params\":{");
            frame.push_str(p);
            frame.push('}');
        }
        if let Some(b) = body {
            frame.push_str(",\"body\":");
            frame.push_str(b);
        }
        // Everything but a read is a write; a queue GET moves the consumer's position.
        let write = method != "GET" || path.trim_start_matches('/').starts_with("queues");
        if write {
            frame.push_str(",\"write_id\":\"");
            frame.push_str(&self.write_prefix);
            push_u64(&mut frame, id);
            frame.push('"');
        }
        frame.push('}');
        if frame.len() > self.max_frame {
            // The server would close the socket on it, and the client would send it again.
            self.events.push_back(ClientEvent::RequestFailed {
                id: RequestId(id),
                error: ClientError::FrameTooLarge(frame.len()),
            });
            return RequestId(id);
        }
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        self.pending.push(Pending {
            id,
            deadline: Some(now + timeout),
            timeout_ms: timeout.as_millis() as u64,
            waiting: Waiting::Request { frame, sent: false },
        });
        self.send_waiting();
        RequestId(id)
    }

    /// Subscribes to a path (`params`: a JSON object's text with `ql`, `consumer`, …;
    /// `snapshot`: the first confirmation carries the current page; `since`: resume after a
    /// known position). The subscription waits for the connection if it is down, up to the
    /// request timeout for its first confirmation; then it lives until unsubscribed, revoked
    /// or closed, resuming after every reconnect from the last `seq` it delivered.
    pub fn subscribe(
        &mut self,
        now: Instant,
        path: &str,
        params: Option<&str>,
        snapshot: bool,
        since: Option<u64>,
    ) -> SubId {
        let sub = SubId(self.next_sub);
        self.next_sub += 1;
        if self.state == ConnectionState::Closed {
            self.events.push_back(ClientEvent::SubscriptionEnded {
                sub,
                error: ClientError::Closed,
            });
            return sub;
        }
        self.subs.push(Sub {
            id: sub,
            path: path.to_owned(),
            params: params.and_then(object_members).map(str::to_owned),
            snapshot,
            server_id: None,
            name: None,
            last_seq: since,
            confirmed_once: false,
            confirm_deadline: Some(now + self.config.request_timeout),
        });
        if self.state == ConnectionState::Open {
            self.send_subscribe(now, sub);
        }
        sub
    }

    /// Ends a subscription; no more events come from it.
    pub fn unsubscribe(&mut self, _now: Instant, sub: SubId) {
        let Some(i) = self.subs.iter().position(|s| s.id == sub) else {
            return;
        };
        let s = self.subs.remove(i);
        if let Some(server_id) = s.server_id {
            self.send_unsubscribe(&server_id);
        }
    }

    /// Offers a new access token, answered like a request ([`ClientEvent::Response`] 200 once
    /// the server took it, or its refusal; [`ClientError::Timeout`] or
    /// [`ClientError::Closed`]). On an open socket it goes out at once with `AUTH`, which the
    /// server takes only for the same user. Otherwise the next connection tries it and must be
    /// greeted as the client's user, else that socket is dropped, the call fails with
    /// [`ClientError::UserChanged`] and the old token goes on. Only a token the server took
    /// is used for later reconnects.
    pub fn set_access_token(&mut self, now: Instant, token: String) -> RequestId {
        let id = self.take_id();
        let timeout = self.config.request_timeout;
        let timeout_ms = timeout.as_millis() as u64;
        match self.state {
            ConnectionState::Closed => self.events.push_back(ClientEvent::RequestFailed {
                id: RequestId(id),
                error: ClientError::Closed,
            }),
            ConnectionState::Open => {
                let mut frame = start_frame(id, "AUTH");
                frame.push_str(",\"body\":{\"access_token\":");
                push_str(&mut frame, &token);
                frame.push_str("}}");
                self.transmits.push_back(frame);
                self.pending.push(Pending {
                    id,
                    deadline: Some(now + timeout),
                    timeout_ms,
                    waiting: Waiting::Auth { token },
                });
            }
            ConnectionState::Connecting | ConnectionState::Reconnecting => {
                self.propose(token, vec![id], now + timeout, timeout_ms)
            }
        }
        RequestId(id)
    }

    /// Closes the client for good: the socket is dropped ([`ClientEvent::Disconnect`]), every
    /// request and token waiting fails with [`ClientError::Closed`], every subscription ends
    /// ([`ClientEvent::SubscriptionEnded`]).
    pub fn close(&mut self, _now: Instant) {
        if self.state == ConnectionState::Closed {
            return;
        }
        for p in std::mem::take(&mut self.pending) {
            if p.waiting.is_call() {
                self.fail(p.id, ClientError::Closed);
            }
        }
        if let Some(p) = self.proposal.take() {
            for id in p.ids {
                self.fail(id, ClientError::Closed);
            }
        }
        for s in std::mem::take(&mut self.subs) {
            self.events.push_back(ClientEvent::SubscriptionEnded {
                sub: s.id,
                error: ClientError::Closed,
            });
        }
        self.presences_closed();
        self.reconnect_at = None;
        self.connect_deadline = None;
        self.first_open_deadline = None;
        self.refresh_at = None;
        self.events.push_back(ClientEvent::Disconnect);
        self.set_state(ConnectionState::Closed);
    }

    /// The socket opened. The connection counts as open only once the server greets it (its
    /// first frame, `{"id":null,"status":200,…}`); a refused one gets an error frame instead.
    /// Reporting this is optional: the greeting is what counts.
    pub fn handle_open(&mut self, _now: Instant) {}

    /// The socket closed, or failed to open (`code` from the close frame, if any). Requests
    /// stay queued for the next socket; a reconnect is scheduled with backoff, except after
    /// 4404 (the application does not exist), which closes the client.
    pub fn handle_close(&mut self, now: Instant, code: Option<u16>) {
        if matches!(
            self.state,
            ConnectionState::Closed | ConnectionState::Reconnecting
        ) {
            return;
        }
        self.connect_deadline = None;
        let mut kept = Vec::with_capacity(self.pending.len());
        for mut p in std::mem::take(&mut self.pending) {
            match &mut p.waiting {
                Waiting::Request { sent, .. } => {
                    *sent = false;
                    kept.push(p);
                }
                // Subscriptions and presences are sent again on the next socket; an
                // unsubscribe is moot.
                Waiting::Subscribe(_) | Waiting::Unsubscribe | Waiting::Join { .. } => {}
                // The next join carries the state.
                Waiting::PresenceState { sent, .. } => {
                    *sent = false;
                    kept.push(p);
                }
                // The closed socket left every presence at once.
                Waiting::Leave { name } => self.events.push_back(ClientEvent::Response {
                    id: RequestId(p.id),
                    status: 200,
                    body: presence::left_body(name, true),
                }),
                Waiting::Broadcast => self.fail(p.id, ClientError::Disconnected),
                // Not taken yet: the next connection tries it.
                Waiting::Auth { token } => {
                    let token = std::mem::take(token);
                    self.propose(token, vec![p.id], p.deadline.unwrap_or(now), p.timeout_ms)
                }
            }
        }
        self.pending = kept;
        for s in &mut self.subs {
            s.server_id = None;
        }
        self.presences_dropped();
        if code == Some(crate::close_code::NOT_FOUND) {
            self.close(now);
            return;
        }
        if code == Some(crate::close_code::UNAUTHORIZED) && !self.auth_reported {
            self.events.push_back(ClientEvent::AuthRequired {
                reason: AuthReason::Rejected,
            });
        }
        self.auth_reported = false;
        let random = self.next_random();
        let delay = self.config.backoff.delay(self.attempt, random);
        self.attempt = self.attempt.saturating_add(1);
        self.reconnect_at = Some(now + delay);
        self.set_state(ConnectionState::Reconnecting);
    }

    /// A text frame from the server. A frame the client cannot read is reported as
    /// [`ClientError::BadServerFrame`] and otherwise ignored.
    pub fn handle_frame(&mut self, now: Instant, text: &str) -> Result<(), ClientError> {
        if self.state == ConnectionState::Closed {
            return Ok(());
        }
        let frame = ServerFrame::read(text)
            .ok_or_else(|| ClientError::BadServerFrame("not a JSON object".into()))?;
        if let Some(kind) = &frame.event {
            return self.handle_event(kind, &frame);
        }
        let Some(status) = frame.status else {
            return Err(ClientError::BadServerFrame(
                "neither an event nor a response".into(),
            ));
        };
        let body = frame.body.unwrap_or("null");
        let found = frame
            .id
            .and_then(|id| self.pending.iter().position(|p| p.id == id));
        let Some(i) = found else {
            self.connection_frame(now, status, frame.body);
            return Ok(());
        };
        let fields_429 = (status == 429).then(|| BodyFields::of(frame.body));
        if fields_429.is_some_and(|f| f.error.as_deref() == Some("too_many_requests"))
            && let Waiting::Request { sent, .. } = &mut self.pending[i].waiting
        {
            // More were out than the server takes (subscriptions count too): it waits its
            // turn again, and was not applied.
            *sent = false;
            self.window = self.window.saturating_sub(1).max(1);
            return Ok(());
        }
        let p = self.pending.remove(i);
        let id = RequestId(p.id);
        match p.waiting {
            Waiting::Request { .. } => {
                if status == 401 && is_token_error(&BodyFields::of(frame.body)) {
                    self.auth_required(AuthReason::Rejected);
                }
                self.events.push_back(ClientEvent::Response {
                    id,
                    status,
                    body: body.to_owned(),
                });
                self.send_waiting();
            }
            Waiting::Subscribe(sub) => self.subscribed(sub, status, frame.body),
            Waiting::Unsubscribe => {}
            Waiting::Join {
                presence,
                reason,
                state,
            } => self.joined(presence, reason, state, status, frame.body),
            Waiting::PresenceState {
                presence, state, ..
            } => {
                self.state_answered(presence, state, status, frame.body);
                self.events.push_back(ClientEvent::Response {
                    id,
                    status,
                    body: body.to_owned(),
                });
            }
            Waiting::Leave { .. } | Waiting::Broadcast => {
                self.events.push_back(ClientEvent::Response {
                    id,
                    status,
                    body: body.to_owned(),
                });
            }
            Waiting::Auth { token } => {
                if status == 200 {
                    self.access_token = Some(token);
                    self.auth_reported = false;
                    let expires_in = BodyFields::of(frame.body).expires_in;
                    self.schedule_refresh(now, expires_in);
                }
                self.events.push_back(ClientEvent::Response {
                    id,
                    status,
                    body: body.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Time passed: requests, tokens and first confirmations past their deadline fail with
    /// [`ClientError::Timeout`]; an attempt past the connect timeout is dropped and counts as
    /// failed; a token about to expire is announced; when the backoff is over, a
    /// [`ClientEvent::Connect`] asks for a new socket.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ConnectionState::Closed {
            return;
        }
        let due = |d: Option<Instant>| d.is_some_and(|t| t <= now);
        let mut i = 0;
        while i < self.pending.len() {
            if !due(self.pending[i].deadline) {
                i += 1;
                continue;
            }
            let p = self.pending.remove(i);
            if p.waiting.is_call() {
                self.fail(p.id, ClientError::Timeout(p.timeout_ms));
            }
        }
        if self.proposal.as_ref().is_some_and(|p| p.deadline <= now)
            && let Some(p) = self.proposal.take()
        {
            for id in p.ids {
                self.fail(id, ClientError::Timeout(p.timeout_ms));
            }
        }
        let ms = self.config.request_timeout.as_millis() as u64;
        let mut i = 0;
        while i < self.subs.len() {
            if due(self.subs[i].confirm_deadline) {
                let s = self.subs.remove(i);
                self.events.push_back(ClientEvent::SubscriptionEnded {
                    sub: s.id,
                    error: ClientError::Timeout(ms),
                });
            } else {
                i += 1;
            }
        }
        self.presence_timeouts(now);
        if due(self.first_open_deadline) {
            self.events.push_back(ClientEvent::Failed {
                error: ClientError::Timeout(ms),
            });
            self.close(now);
            return;
        }
        if due(self.connect_deadline) {
            // An attempt that neither opened nor failed (a silent network, a server that does
            // not speak the protocol): drop it and count it as failed.
            self.events.push_back(ClientEvent::Disconnect);
            self.handle_close(now, None);
        }
        if due(self.refresh_at) {
            self.refresh_at = None;
            self.auth_required(AuthReason::Expiring);
        }
        if self.state == ConnectionState::Reconnecting && due(self.reconnect_at) {
            self.reconnect_at = None;
            self.connect(now);
        }
    }

    /// The next frame to send. Changes after every command and input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmits.pop_front()
    }

    /// The next thing to do or report. Changes after every command and input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest of the request,
    /// token and confirmation deadlines, the connect timeout, the token refresh and the
    /// reconnect time. Changes after every command and input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == ConnectionState::Closed {
            return None;
        }
        let pending = self.pending.iter().filter_map(|p| p.deadline);
        let subs = self.subs.iter().filter_map(|s| s.confirm_deadline);
        let presences = self.presences.iter().filter_map(|p| p.confirm_deadline);
        let timers = [
            self.proposal.as_ref().map(|p| p.deadline),
            self.reconnect_at,
            self.connect_deadline,
            self.first_open_deadline,
            self.refresh_at,
        ];
        pending
            .chain(subs)
            .chain(presences)
            .chain(timers.into_iter().flatten())
            .min()
    }

    fn connect(&mut self, now: Instant) {
        self.trying_proposal = self.proposal.is_some();
        self.connect_deadline = Some(now + self.config.connect_timeout);
        self.set_state(ConnectionState::Connecting);
        self.events.push_back(ClientEvent::Connect {
            url: self.connect_url(),
        });
    }

    /// A frame that answers no request of ours: the greeting, a refusal, or news about the
    /// connection (an expiring token).
    fn connection_frame(&mut self, now: Instant, status: u16, body: Option<&str>) {
        let text = body.unwrap_or("null").to_owned();
        let fields = BodyFields::of(body);
        if self.state != ConnectionState::Connecting {
            // News about an open connection.
            if status == 401 {
                let reason = if fields.error.as_deref() == Some("expired_token") {
                    AuthReason::Expired
                } else {
                    AuthReason::Rejected
                };
                self.auth_required(reason);
            }
            self.events
                .push_back(ClientEvent::ServerError { status, body: text });
            return;
        }
        if status == 200 {
            self.greeted(now, &fields);
            return;
        }
        // A refused handshake; the server closes the socket next.
        if self.trying_proposal
            && let Some(p) = self.proposal.take()
        {
            // The token just set was refused: its call fails, the old token goes on.
            self.auth_reported = true;
            for id in p.ids {
                self.events.push_back(ClientEvent::Response {
                    id: RequestId(id),
                    status,
                    body: text.clone(),
                });
            }
            return;
        }
        self.events
            .push_back(ClientEvent::ServerError { status, body: text });
        if !self.opened_once && matches!(status, 401 | 403 | 404) {
            // The first connection is refused for good: bad credentials, no such app.
            self.close(now);
        } else if status == 401 {
            self.auth_required(AuthReason::Rejected);
        }
    }

    /// The server greeted the socket: it is open once it is the client's user.
    fn greeted(&mut self, now: Instant, fields: &BodyFields<'_>) {
        let user = fields.user.as_deref().map(str::to_owned);
        if self.user.as_ref().is_some_and(|known| *known != user) {
            self.events.push_back(ClientEvent::Disconnect);
            if self.trying_proposal
                && let Some(p) = self.proposal.take()
            {
                for id in p.ids {
                    self.fail(id, ClientError::UserChanged);
                }
                // Back to the client's own token, at once.
                self.trying_proposal = false;
                self.connect_deadline = None;
                self.reconnect_at = Some(now);
                self.set_state(ConnectionState::Reconnecting);
            } else {
                self.events.push_back(ClientEvent::Failed {
                    error: ClientError::UserChanged,
                });
                self.close(now);
            }
            return;
        }
        self.user = Some(user);
        if self.trying_proposal
            && let Some(p) = self.proposal.take()
        {
            self.access_token = Some(p.token);
            let mut body = String::from("{\"action\":\"auth\",\"expires_in\":");
            match fields.expires_in {
                Some(s) => push_u64(&mut body, s),
                None => body.push_str("null"),
            }
            body.push('}');
            for id in p.ids {
                self.events.push_back(ClientEvent::Response {
                    id: RequestId(id),
                    status: 200,
                    body: body.clone(),
                });
            }
        }
        self.trying_proposal = false;
        self.schedule_refresh(now, fields.expires_in);
        self.opened_once = true;
        self.first_open_deadline = None;
        self.connect_deadline = None;
        self.auth_reported = false;
        self.attempt = 0;
        self.set_state(ConnectionState::Open);
        let subs: Vec<SubId> = self.subs.iter().map(|s| s.id).collect();
        for sub in subs {
            self.send_subscribe(now, sub);
        }
        let presences: Vec<PresenceId> = self.presences.iter().map(|p| p.id).collect();
        for presence in presences {
            self.send_join(presence);
        }
        // The server's limits; a server that does not say keeps the config's.
        if let Some(n) = fields.max_in_flight {
            // Room for the subscriptions and AUTH that count too.
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            self.window = n.saturating_sub(n / 8).max(1);
        }
        if let Some(n) = fields.max_frame_bytes {
            self.max_frame = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let too_large: Vec<(u64, usize)> = self
            .pending
            .iter()
            .filter_map(|p| match &p.waiting {
                Waiting::Request { frame, .. } if frame.len() > self.max_frame => {
                    Some((p.id, frame.len()))
                }
                _ => None,
            })
            .collect();
        for (id, len) in too_large {
            self.pending.retain(|p| p.id != id);
            self.fail(id, ClientError::FrameTooLarge(len));
        }
        // Requests queued or unanswered, in the order they were made.
        self.send_waiting();
    }

    fn handle_event(&mut self, kind: &str, frame: &ServerFrame<'_>) -> Result<(), ClientError> {
        match kind {
            "presence" => return self.presence_event(frame),
            "broadcast" => return self.broadcast_event(frame),
            "revoked" if frame.presence.is_some() => {
                self.presence_revoked(frame);
                return Ok(());
            }
            _ => {}
        }
        let server_id = frame
            .subscription
            .as_deref()
            .ok_or_else(|| ClientError::BadServerFrame("an event without a subscription".into()))?;
        let Some(i) = self
            .subs
            .iter()
            .position(|s| s.server_id.as_deref() == Some(server_id))
        else {
            // An event of a subscription this client already ended: nothing to do.
            return Ok(());
        };
        if kind == "revoked" {
            let s = self.subs.remove(i);
            let reason = frame.reason.as_deref().unwrap_or("revoked").to_owned();
            self.events
                .push_back(ClientEvent::Revoked { sub: s.id, reason });
            return Ok(());
        }
        let seq = frame
            .seq
            .ok_or_else(|| ClientError::BadServerFrame("an event without a seq".into()))?;
        let entity = frame.entity.unwrap_or("null");
        let s = &mut self.subs[i];
        // Events come once and in order; a queue delivery may repeat a seq (a redelivery).
        if !frame.entity.is_some_and(is_delivery) {
            if s.last_seq.is_some_and(|last| seq <= last) {
                return Ok(());
            }
            s.last_seq = Some(seq);
        }
        self.events.push_back(ClientEvent::Event {
            sub: s.id,
            kind: kind.to_owned(),
            seq,
            entity: entity.to_owned(),
        });
        Ok(())
    }

    fn subscribed(&mut self, sub: SubId, status: u16, body: Option<&str>) {
        let fields = BodyFields::of(body);
        let Some(i) = self.subs.iter().position(|s| s.id == sub) else {
            // Given up or unsubscribed meanwhile: end it on the server too.
            if status == 200
                && let Some(server_id) = fields.subscription.as_deref()
            {
                let server_id = server_id.to_owned();
                self.send_unsubscribe(&server_id);
            }
            return;
        };
        if status != 200 {
            self.subs.remove(i);
            let body = body.unwrap_or("null").to_owned();
            self.events
                .push_back(ClientEvent::SubscribeFailed { sub, status, body });
            return;
        }
        let s = &mut self.subs[i];
        let seq = fields.seq.unwrap_or(0);
        s.server_id = fields.subscription.as_deref().map(str::to_owned);
        s.name = fields.name.as_deref().map(str::to_owned);
        let resumed = s.confirmed_once;
        s.confirmed_once = true;
        s.confirm_deadline = None;
        let lost = fields.recovered == Some(false);
        if lost || s.last_seq.is_none() {
            s.last_seq = Some(seq);
        }
        self.events.push_back(ClientEvent::Subscribed {
            sub,
            seq,
            snapshot: fields.snapshot.map(str::to_owned),
            resumed,
        });
        if lost {
            self.events.push_back(ClientEvent::ResyncRequired { sub });
        }
    }

    fn send_subscribe(&mut self, _now: Instant, sub: SubId) {
        let id = self.take_id();
        let Some(s) = self.subs.iter().find(|s| s.id == sub) else {
            return;
        };
        let mut frame = start_frame(id, "SUBSCRIBE");
        frame.push_str(",\"path\":");
        push_str(&mut frame, &s.path);
        // A snapshot is for the first confirmation; a resume replays instead.
        let snapshot = s.snapshot && !s.confirmed_once;
        if snapshot || s.params.is_some() {
            frame.push_str(",\"params\":{");
            if snapshot {
                frame.push_str("\"snapshot\":true");
            }
            if let Some(p) = &s.params {
                if snapshot {
                    frame.push(',');
                }
                frame.push_str(p);
            }
            frame.push('}');
        }
        if let Some(seq) = s.last_seq {
            frame.push_str(",\"since\":");
            push_u64(&mut frame, seq);
        }
        frame.push('}');
        self.transmits.push_back(frame);
        self.pending.push(Pending {
            id,
            deadline: None,
            timeout_ms: 0,
            waiting: Waiting::Subscribe(sub),
        });
    }

    fn send_unsubscribe(&mut self, server_id: &str) {
        if self.state != ConnectionState::Open {
            return;
        }
        let id = self.take_id();
        let mut frame = start_frame(id, "UNSUBSCRIBE");
        frame.push_str(",\"subscription\":");
        push_str(&mut frame, server_id);
        frame.push('}');
        self.transmits.push_back(frame);
        self.pending.push(Pending {
            id,
            deadline: None,
            timeout_ms: 0,
            waiting: Waiting::Unsubscribe,
        });
    }

    fn propose(&mut self, token: String, ids: Vec<u64>, deadline: Instant, timeout_ms: u64) {
        match &mut self.proposal {
            // The newest token is tried; every call waiting gets its answer.
            Some(p) => {
                p.token = token;
                p.ids.extend(ids);
                p.deadline = p.deadline.max(deadline);
            }
            None => {
                self.proposal = Some(Proposal {
                    token,
                    ids,
                    deadline,
                    timeout_ms,
                })
            }
        }
    }

    /// Asks for a token once per connection attempt (and once per expiry warning).
    fn auth_required(&mut self, reason: AuthReason) {
        if reason != AuthReason::Expiring {
            if self.auth_reported {
                return;
            }
            self.auth_reported = true;
        }
        self.events.push_back(ClientEvent::AuthRequired { reason });
    }

    /// Plans the next token request before the token expires: a fifth of its life before, at
    /// most a minute.
    fn schedule_refresh(&mut self, now: Instant, expires_in: Option<u64>) {
        self.refresh_at = expires_in.map(|secs| {
            let life = Duration::from_secs(secs);
            now + life - (life / 5).min(Duration::from_secs(60))
        });
    }

    fn fail(&mut self, id: u64, error: ClientError) {
        self.events.push_back(ClientEvent::RequestFailed {
            id: RequestId(id),
            error,
        });
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state;
            self.events.push_back(ClientEvent::StateChanged(state));
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// xorshift64*: a uniform number in [0, 1) for jitter.
    fn next_random(&mut self) -> f64 {
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A 401 about the token itself (not a missing permission).
fn is_token_error(fields: &BodyFields<'_>) -> bool {
    matches!(
        fields.error.as_deref(),
        Some("expired_token" | "auth_bad_access_token")
    )
}

#[cfg(test)]
mod tests;
