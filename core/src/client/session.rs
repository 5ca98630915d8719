//! [`ClientSession`]: one client's protocol state across reconnects, sans IO.

use super::backoff::Backoff;
use crate::time::Instant;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// Settings of a client session.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long a request may wait for its response before it fails with
    /// [`ClientError::Timeout`].
    pub request_timeout: Duration,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Most requests waiting for a response; more fail with [`ClientError::TooManyPending`].
    pub max_pending: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            max_pending: 1024,
        }
    }
}

/// Names a request of this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Names a subscription of this client; it stays the same across reconnects (the server's id
/// changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubId(pub u64);

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// A socket is being opened.
    Connecting,
    /// The socket is open.
    Open,
    /// The socket dropped; a new one opens after a backoff delay.
    Reconnecting,
    /// Closed for good (by the app, or the app does not exist).
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

/// Why a request failed without a response from the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket dropped while the request was in flight; it may or may not have run. Retry
    /// when the connection is open again (writes by name are idempotent with PUT).
    #[error("the connection dropped before the response arrived")]
    Disconnected,
    /// No response within the request timeout.
    #[error("no response within {0} ms")]
    Timeout(u64),
    /// The socket is not open; wait for the `open` state.
    #[error("not connected: wait until the connection is open")]
    NotConnected,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// Too many requests are waiting for responses.
    #[error("too many requests waiting for responses")]
    TooManyPending,
    /// The server sent something that is not a protocol frame (a server bug; the frame is
    /// ignored).
    #[error("unreadable frame from the server: {0}")]
    BadServerFrame(String),
}

impl ClientError {
    /// A short stable code for apps (`disconnected`, `timeout`, …).
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Disconnected => "disconnected",
            ClientError::Timeout(_) => "timeout",
            ClientError::NotConnected => "not_connected",
            ClientError::Closed => "closed",
            ClientError::TooManyPending => "too_many_pending",
            ClientError::BadServerFrame(_) => "bad_server_frame",
        }
    }
}

/// What the host must do or tell the app.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum ClientEvent {
    /// Open a socket to this URL now; report [`ClientSession::handle_open`] or
    /// [`ClientSession::handle_close`].
    Connect {
        /// The URL, with the current access token.
        url: String,
    },
    /// The connection state changed.
    StateChanged(ConnectionState),
    /// A request's response.
    Response {
        /// Which request.
        id: RequestId,
        /// HTTP status.
        status: u16,
        /// The REST body.
        body: Value,
    },
    /// A request failed without a response.
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
        /// The snapshot page, when asked for.
        snapshot: Option<Value>,
        /// True when this confirmation resumed after a reconnect.
        resumed: bool,
    },
    /// The server refused a subscription; it is gone.
    SubscribeFailed {
        /// Which subscription.
        sub: SubId,
        /// HTTP status.
        status: u16,
        /// The error body.
        body: Value,
    },
    /// A change.
    Event {
        /// Which subscription.
        sub: SubId,
        /// `create`, `update`, `delete`, `enter` or `leave`.
        kind: String,
        /// Its log position.
        seq: u64,
        /// The entity (or queue message).
        entity: Value,
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
    /// A frame about the connection rather than a request (a refused handshake, an expiring
    /// token).
    ServerError {
        /// HTTP-style status.
        status: u16,
        /// The Usergrid error body.
        body: Value,
    },
    /// The server said the token is missing, bad or expired: set a new one with
    /// [`ClientSession::set_access_token`].
    AuthRequired,
}

enum PendingKind {
    Request,
    Subscribe(SubId),
    Internal,
}

struct Pending {
    deadline: Instant,
    kind: PendingKind,
}

struct Sub {
    path: String,
    params: Option<Value>,
    server_id: Option<String>,
    last_seq: Option<u64>,
    confirmed_once: bool,
}

/// One client's protocol state: requests in flight, subscriptions with the last `seq` each
/// saw, and the reconnect schedule.
///
/// Drive it like [`crate::ServerSession`]: feed what the socket does ([`handle_open`],
/// [`handle_frame`], [`handle_close`]) and time ([`handle_timeout`]); after every call send
/// each [`poll_transmit`] frame, act on each [`poll_event`], and arm one timer at
/// [`poll_timeout`]. A [`ClientEvent::Connect`] asks the host to open a socket.
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
    next_id: u64,
    next_sub: u64,
    pending: BTreeMap<u64, Pending>,
    subs: BTreeMap<SubId, Sub>,
    by_server: HashMap<String, SubId>,
    transmits: VecDeque<String>,
    events: VecDeque<ClientEvent>,
    reconnect_at: Option<Instant>,
    attempt: u32,
    /// The socket is open and the server's greeting is awaited until then.
    ready_deadline: Option<Instant>,
}

impl ClientSession {
    /// A session that connects at once to `base_url` (`ws://host:8088/org/app`); `seed` feeds
    /// the reconnect jitter (any value; hosts pass something random).
    pub fn new(
        _now: Instant,
        config: ClientConfig,
        base_url: &str,
        access_token: Option<String>,
        seed: u64,
    ) -> ClientSession {
        let mut s = ClientSession {
            config,
            base_url: base_url.to_owned(),
            access_token,
            state: ConnectionState::Connecting,
            random: seed | 1,
            next_id: 1,
            next_sub: 1,
            pending: BTreeMap::new(),
            subs: BTreeMap::new(),
            by_server: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            reconnect_at: None,
            attempt: 0,
            ready_deadline: None,
        };
        s.events
            .push_back(ClientEvent::StateChanged(ConnectionState::Connecting));
        s.events.push_back(ClientEvent::Connect {
            url: s.connect_url(),
        });
        s
    }

    /// The URL to open: the base URL with the current access token.
    pub fn connect_url(&self) -> String {
        match &self.access_token {
            None => self.base_url.clone(),
            Some(t) => {
                let sep = if self.base_url.contains('?') {
                    '&'
                } else {
                    '?'
                };
                let token: String =
                    percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
                        .collect();
                format!("{}{sep}access_token={token}", self.base_url)
            }
        }
    }

    /// Where the connection stands.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// How many requests wait for a response.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// The last `seq` a subscription delivered.
    pub fn last_seq(&self, sub: SubId) -> Option<u64> {
        self.subs.get(&sub).and_then(|s| s.last_seq)
    }

    /// Sends a request. Its answer comes as [`ClientEvent::Response`] or
    /// [`ClientEvent::RequestFailed`]; when the socket is not open it fails at once.
    pub fn request(
        &mut self,
        now: Instant,
        method: &str,
        path: &str,
        params: Option<Value>,
        body: Option<Value>,
    ) -> RequestId {
        let id = self.take_id();
        let failure = match self.state {
            ConnectionState::Open if self.pending.len() >= self.config.max_pending => {
                Some(ClientError::TooManyPending)
            }
            ConnectionState::Open => None,
            ConnectionState::Closed => Some(ClientError::Closed),
            _ => Some(ClientError::NotConnected),
        };
        if let Some(error) = failure {
            self.events.push_back(ClientEvent::RequestFailed {
                id: RequestId(id),
                error,
            });
            return RequestId(id);
        }
        let mut frame = json!({"id": id, "method": method, "path": path});
        if let Some(p) = params {
            frame["params"] = p;
        }
        if let Some(b) = body {
            frame["body"] = b;
        }
        self.send(now, id, frame, PendingKind::Request);
        RequestId(id)
    }

    /// Subscribes to a path (`params`: `ql`, `snapshot`, `consumer`, …; `since`: resume after
    /// a known position). Kept across reconnects: each reconnect resumes it from the last
    /// `seq` it delivered.
    pub fn subscribe(
        &mut self,
        now: Instant,
        path: &str,
        params: Option<Value>,
        since: Option<u64>,
    ) -> SubId {
        let sub = SubId(self.next_sub);
        self.next_sub += 1;
        self.subs.insert(
            sub,
            Sub {
                path: path.to_owned(),
                params,
                server_id: None,
                last_seq: since,
                confirmed_once: false,
            },
        );
        if self.state == ConnectionState::Open {
            self.send_subscribe(now, sub);
        }
        sub
    }

    /// Ends a subscription; no more events come from it.
    pub fn unsubscribe(&mut self, now: Instant, sub: SubId) {
        let Some(s) = self.subs.remove(&sub) else {
            return;
        };
        if let Some(server_id) = s.server_id {
            self.by_server.remove(&server_id);
            if self.state == ConnectionState::Open {
                let id = self.take_id();
                let frame = json!({"id": id, "method": "UNSUBSCRIBE", "subscription": server_id});
                self.send(now, id, frame, PendingKind::Internal);
            }
        }
    }

    /// Replaces the access token: sent with `AUTH` now if connected, and used by every
    /// reconnect.
    pub fn set_access_token(&mut self, now: Instant, token: Option<String>) {
        self.access_token = token;
        if self.state == ConnectionState::Open
            && let Some(t) = self.access_token.clone()
        {
            let id = self.take_id();
            let frame = json!({"id": id, "method": "AUTH", "body": {"access_token": t}});
            self.send(now, id, frame, PendingKind::Internal);
        }
    }

    /// Closes the client for good: requests in flight fail with [`ClientError::Closed`].
    pub fn close(&mut self, _now: Instant) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.fail_pending(ClientError::Closed);
        self.reconnect_at = None;
        self.ready_deadline = None;
        self.set_state(ConnectionState::Closed);
    }

    /// The socket opened. The connection counts as open once the server greets it (its
    /// first frame, `{"id":null,"status":200,…}`); a refused one gets an error frame instead.
    pub fn handle_open(&mut self, now: Instant) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.reconnect_at = None;
        self.ready_deadline = Some(now + self.config.request_timeout);
    }

    /// The server greeted the socket: every subscription is (re)sent, resuming from its last
    /// `seq`.
    fn handle_ready(&mut self, now: Instant) {
        self.ready_deadline = None;
        self.attempt = 0;
        self.set_state(ConnectionState::Open);
        let subs: Vec<SubId> = self.subs.keys().copied().collect();
        for sub in subs {
            self.send_subscribe(now, sub);
        }
    }

    /// The socket closed or failed (`code` from the close frame, if any). Requests in flight
    /// fail with [`ClientError::Disconnected`]; a reconnect is scheduled, except after 4404
    /// (the application does not exist).
    pub fn handle_close(&mut self, now: Instant, code: Option<u16>) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.ready_deadline = None;
        self.fail_pending(ClientError::Disconnected);
        self.by_server.clear();
        for s in self.subs.values_mut() {
            s.server_id = None;
        }
        if code == Some(crate::close_code::NOT_FOUND) {
            self.set_state(ConnectionState::Closed);
            return;
        }
        if code == Some(crate::close_code::UNAUTHORIZED) {
            self.events.push_back(ClientEvent::AuthRequired);
        }
        let random = self.next_random();
        let delay = self.config.backoff.delay(self.attempt, random);
        self.attempt = self.attempt.saturating_add(1);
        self.reconnect_at = Some(now + delay);
        self.set_state(ConnectionState::Reconnecting);
    }

    /// A text frame from the server.
    pub fn handle_frame(&mut self, now: Instant, text: &str) -> Result<(), ClientError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ClientError::BadServerFrame(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(ClientError::BadServerFrame("not a JSON object".into()));
        };
        if let Some(kind) = obj.get("event").and_then(Value::as_str).map(str::to_owned) {
            return self.handle_event(kind, obj);
        }
        let Some(status) = obj.get("status").and_then(Value::as_u64) else {
            return Err(ClientError::BadServerFrame(
                "neither an event nor a response".into(),
            ));
        };
        let status = u16::try_from(status).unwrap_or(500);
        let body = obj.remove("body").unwrap_or(Value::Null);
        let id = match obj.get("id") {
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        };
        let Some(pending) = id.and_then(|id| self.pending.remove(&id)) else {
            if status == 200 && self.ready_deadline.is_some() {
                self.handle_ready(now);
                return Ok(());
            }
            // A frame for the connection: a refused handshake or an expiring token.
            let auth = status == 401;
            self.events
                .push_back(ClientEvent::ServerError { status, body });
            if auth {
                self.events.push_back(ClientEvent::AuthRequired);
            }
            return Ok(());
        };
        let id = id.unwrap_or_default();
        match pending.kind {
            PendingKind::Request => self.events.push_back(ClientEvent::Response {
                id: RequestId(id),
                status,
                body,
            }),
            PendingKind::Internal => {
                if status == 401 || status == 403 {
                    self.events.push_back(ClientEvent::AuthRequired);
                }
            }
            PendingKind::Subscribe(sub) => self.subscribed(sub, status, body),
        }
        Ok(())
    }

    /// Time passed: requests past their deadline fail with [`ClientError::Timeout`]; when the
    /// backoff is over, a [`ClientEvent::Connect`] asks for a new socket.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let ms = self.config.request_timeout.as_millis() as u64;
            match p.kind {
                PendingKind::Request => self.events.push_back(ClientEvent::RequestFailed {
                    id: RequestId(id),
                    error: ClientError::Timeout(ms),
                }),
                PendingKind::Subscribe(sub) => {
                    self.subs.remove(&sub);
                    self.events.push_back(ClientEvent::SubscribeFailed {
                        sub,
                        status: 504,
                        body: json!({"error": "timeout", "error_description": format!("no confirmation within {ms} ms")}),
                    });
                }
                PendingKind::Internal => {}
            }
        }
        if self.ready_deadline.is_some_and(|t| t <= now) {
            // Open but never greeted: a server that does not speak the protocol; try again.
            self.handle_close(now, None);
        }
        if self.state == ConnectionState::Reconnecting
            && self.reconnect_at.is_some_and(|t| t <= now)
        {
            self.reconnect_at = None;
            self.set_state(ConnectionState::Connecting);
            self.events.push_back(ClientEvent::Connect {
                url: self.connect_url(),
            });
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

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest request deadline
    /// or the reconnect time.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == ConnectionState::Closed {
            return None;
        }
        let request = self.pending.values().map(|p| p.deadline).min();
        [request, self.reconnect_at, self.ready_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_event(&mut self, kind: String, obj: Map<String, Value>) -> Result<(), ClientError> {
        let server_id = obj
            .get("subscription")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::BadServerFrame("an event without a subscription".into()))?;
        let Some(sub) = self.by_server.get(server_id).copied() else {
            // An event of a subscription this client already ended: nothing to do.
            return Ok(());
        };
        if kind == "revoked" {
            self.by_server.remove(server_id);
            self.subs.remove(&sub);
            let reason = obj
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("revoked")
                .to_owned();
            self.events.push_back(ClientEvent::Revoked { sub, reason });
            return Ok(());
        }
        let seq = obj
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClientError::BadServerFrame("an event without a seq".into()))?;
        let Some(s) = self.subs.get_mut(&sub) else {
            return Ok(());
        };
        let is_delivery = obj
            .get("entity")
            .and_then(|e| e.get("transaction"))
            .is_some();
        // Events come once and in order; a queue delivery may repeat a seq (a redelivery).
        if !is_delivery {
            if s.last_seq.is_some_and(|last| seq <= last) {
                return Ok(());
            }
            s.last_seq = Some(seq);
        }
        let entity = obj.get("entity").cloned().unwrap_or(Value::Null);
        self.events.push_back(ClientEvent::Event {
            sub,
            kind,
            seq,
            entity,
        });
        Ok(())
    }

    fn subscribed(&mut self, sub: SubId, status: u16, body: Value) {
        let Some(s) = self.subs.get_mut(&sub) else {
            return;
        };
        if status != 200 {
            self.subs.remove(&sub);
            self.events
                .push_back(ClientEvent::SubscribeFailed { sub, status, body });
            return;
        }
        let seq = body.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if let Some(server_id) = body.get("subscription").and_then(Value::as_str) {
            s.server_id = Some(server_id.to_owned());
            self.by_server.insert(server_id.to_owned(), sub);
        }
        let resumed = s.confirmed_once;
        s.confirmed_once = true;
        let lost = body.get("recovered") == Some(&Value::Bool(false));
        if lost || s.last_seq.is_none() {
            s.last_seq = Some(seq);
        }
        self.events.push_back(ClientEvent::Subscribed {
            sub,
            seq,
            snapshot: body.get("snapshot").cloned(),
            resumed,
        });
        if lost {
            self.events.push_back(ClientEvent::ResyncRequired { sub });
        }
    }

    fn send_subscribe(&mut self, now: Instant, sub: SubId) {
        let id = self.take_id();
        let Some(s) = self.subs.get(&sub) else {
            return;
        };
        let mut frame = json!({"id": id, "method": "SUBSCRIBE", "path": s.path});
        if let Some(p) = &s.params {
            // A snapshot is for the first confirmation; a resume replays instead.
            let mut p = p.clone();
            if s.confirmed_once
                && let Some(obj) = p.as_object_mut()
            {
                obj.remove("snapshot");
            }
            frame["params"] = p;
        }
        if let Some(seq) = s.last_seq {
            frame["since"] = json!(seq);
        }
        self.send(now, id, frame, PendingKind::Subscribe(sub));
    }

    fn send(&mut self, now: Instant, id: u64, frame: Value, kind: PendingKind) {
        self.pending.insert(
            id,
            Pending {
                deadline: now + self.config.request_timeout,
                kind,
            },
        );
        self.transmits.push_back(frame.to_string());
    }

    fn fail_pending(&mut self, error: ClientError) {
        let pending = std::mem::take(&mut self.pending);
        for (id, p) in pending {
            match p.kind {
                PendingKind::Request => self.events.push_back(ClientEvent::RequestFailed {
                    id: RequestId(id),
                    error: error.clone(),
                }),
                // Subscriptions are resent when the socket opens again.
                PendingKind::Subscribe(_) | PendingKind::Internal => {}
            }
        }
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

#[cfg(test)]
mod tests;
