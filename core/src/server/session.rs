//! [`ServerSession`]: the protocol state of one accepted socket, sans IO.

use crate::rate::RateLimit;
use crate::subscription::encode_revoked;
use crate::time::Instant;
use crate::wire::{
    ApiRequest, Command, FrameError, FrameId, Params, PresenceAction, RejectedFrame,
    decode_request, encode_rejection, encode_response, error_body_json,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::close_code;

/// Limits and timers of one server-side session.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest text frame accepted; a larger one closes the socket with 1009.
    pub max_frame_len: usize,
    /// Most requests executing at once on one socket; one more is answered 429.
    pub max_in_flight: usize,
    /// How long a request may execute before the client is answered 504.
    pub request_timeout: Duration,
    /// Most subscriptions one socket may hold; one more is answered 429.
    pub max_subscriptions: usize,
    /// Most bytes of paths and parameters (a `ql`, …) one socket's subscriptions may hold
    /// together; a subscription past it is answered 429. The host keeps a subscription's
    /// filter for as long as it lasts, so its text is what the socket holds of the server.
    pub max_subscription_bytes: usize,
    /// Most events held for subscriptions awaiting confirmation; more closes with 4008.
    pub max_queued_events: usize,
    /// Ping a socket idle this long; close it when idle twice as long. `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long after its token expires a socket may send `AUTH` before it is closed.
    pub auth_grace: Duration,
    /// Most requests a socket may start per second (with a burst of one second's worth); one
    /// more is answered 429 `rate_limited`. `None`: no limit.
    pub max_requests_per_sec: Option<u32>,
    /// Largest `BROADCAST` body, in bytes of compact JSON; a larger one is answered 413
    /// `broadcast_too_large`.
    pub max_broadcast_bytes: usize,
    /// Most `BROADCAST`s a socket may send per second (with a burst of one second's worth),
    /// on top of `max_requests_per_sec`; one more is answered 429 `rate_limited`. `None`: no
    /// limit of its own.
    pub max_broadcasts_per_sec: Option<u32>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_len: 1 << 20,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            max_subscriptions: 1000,
            max_subscription_bytes: 256 * 1024,
            max_queued_events: 10_000,
            ping_interval: Some(Duration::from_secs(25)),
            auth_grace: Duration::from_secs(30),
            max_requests_per_sec: None,
            max_broadcast_bytes: 8 * 1024,
            max_broadcasts_per_sec: Some(20),
        }
    }
}

/// Names one request the host is executing; hand it back to [`ServerSession::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestHandle(pub u64);

/// Names one subscription of this socket; on the wire it is the string `s{n}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(pub u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl SubscriptionId {
    /// Reads the wire form `s{n}`.
    pub fn parse(s: &str) -> Option<SubscriptionId> {
        s.strip_prefix('s')?.parse().ok().map(SubscriptionId)
    }
}

/// Work for the host.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum ServerEvent {
    /// Execute this request (as the connection's principal) and call
    /// [`ServerSession::complete`] with the result.
    Request {
        /// Pass back to `complete`.
        handle: RequestHandle,
        /// What to execute.
        request: ApiRequest,
        /// The client's id for this write, if the frame carried one: execute a repeat of an
        /// already applied write id (in the same application) by answering it the first
        /// answer, not by applying it again. Always `None` for reads.
        write_id: Option<String>,
        /// The length of the frame that carried it. A write's bytes are the host's to count
        /// while it runs (it may outlive the socket); a read's are counted by the session
        /// until it is answered ([`ServerSession::read_bytes`]).
        bytes: usize,
    },
    /// Check access, start delivering changes of `path` for `subscription`, then call
    /// [`ServerSession::confirm_subscription`] (or `complete` with an error).
    Subscribe {
        /// Pass back to `confirm_subscription` or `complete`.
        handle: RequestHandle,
        /// The id the session gave the subscription.
        subscription: SubscriptionId,
        /// What to watch.
        path: String,
        /// `ql`, `snapshot`, `consumer`, …
        params: Params,
        /// Resume after this log position.
        since: Option<u64>,
    },
    /// Stop delivering changes for this subscription (the client unsubscribed, it was revoked,
    /// or it failed before confirmation). Idempotent for the host.
    Unsubscribed {
        /// The subscription that ended.
        subscription: SubscriptionId,
    },
    /// Validate this token and, if it is good, call [`ServerSession::set_token_expiry`] and
    /// `complete` with 200; otherwise `complete` with the error.
    Auth {
        /// Pass back to `complete`.
        handle: RequestHandle,
        /// The new token.
        access_token: String,
    },
    /// Check that the connection may read `path`, then join its presence (or change this
    /// connection's state there) or leave it, and `complete` with the snapshot or the error.
    Presence {
        /// Pass back to `complete`.
        handle: RequestHandle,
        /// The path whose presence is joined or left.
        path: String,
        /// Join with a state, or leave.
        action: PresenceAction,
    },
    /// Check that the connection may write `path`, then hand `body_json` to whoever watches
    /// it now (its subscribers and present connections that may read it), the sender only if
    /// `echo`, and `complete`. The body is within
    /// [`ServerConfig::max_broadcast_bytes`] already.
    Broadcast {
        /// Pass back to `complete`.
        handle: RequestHandle,
        /// The path.
        path: String,
        /// The message, as compact JSON.
        body_json: String,
        /// The sender gets its own message too.
        echo: bool,
    },
}

/// A frame for the host to write to the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum OutFrame {
    /// A JSON text frame.
    Text(String),
    /// An event frame encoded once and shared by every subscriber it goes to; written as a
    /// text frame like [`OutFrame::Text`].
    Event(Arc<str>),
    /// A WebSocket ping (heartbeat).
    Ping,
    /// A close frame; after it the host writes nothing more and ends the connection.
    Close {
        /// WebSocket close code (see [`close_code`]).
        code: u16,
        /// Short reason for people reading logs.
        reason: String,
    },
}

impl OutFrame {
    /// The JSON text of a text or event frame; `None` for pings and closes.
    pub fn text(&self) -> Option<&str> {
        match self {
            OutFrame::Text(t) => Some(t),
            OutFrame::Event(t) => Some(t),
            OutFrame::Ping | OutFrame::Close { .. } => None,
        }
    }
}

struct Pending {
    id: Option<FrameId>,
    deadline: Instant,
    subscription: Option<SubscriptionId>,
    /// A read's frame length, counted in [`ServerSession::read_bytes`] until it is answered.
    read_bytes: usize,
}

enum SubState {
    /// Awaiting confirmation; live events (with their seq) and deliveries (without) wait here.
    Pending {
        buffered: Vec<(Option<u64>, Arc<str>)>,
    },
    /// Confirmed; events up to `last_seq` were delivered.
    Active { last_seq: u64 },
}

struct Sub {
    path: String,
    /// Its path's and parameters' bytes, which count in `max_subscription_bytes`.
    bytes: u32,
    state: SubState,
}

/// A socket's subscriptions, in the order they were made (their ids grow), found by binary
/// search. A socket holds one or a few: a vector of exactly that many costs a fraction of a
/// hash table's smallest size, which an idle socket would carry for its whole life.
#[derive(Default)]
struct SubTable(Vec<(SubscriptionId, Sub)>);

impl SubTable {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn position(&self, id: &SubscriptionId) -> Option<usize> {
        self.0.binary_search_by_key(id, |(i, _)| *i).ok()
    }

    fn get(&self, id: &SubscriptionId) -> Option<&Sub> {
        self.position(id).map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, id: &SubscriptionId) -> Option<&mut Sub> {
        self.position(id).map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, id: &SubscriptionId) -> bool {
        self.position(id).is_some()
    }

    /// Adds a subscription whose id is greater than every id held.
    fn push(&mut self, id: SubscriptionId, sub: Sub) {
        debug_assert!(self.0.last().is_none_or(|(last, _)| *last < id));
        if self.0.capacity() == 0 {
            // The first: room for it alone (a vector's first growth would make room for four).
            self.0.reserve_exact(1);
        }
        self.0.push((id, sub));
    }

    fn remove(&mut self, id: &SubscriptionId) -> Option<Sub> {
        let sub = self.position(id).map(|i| self.0.remove(i).1);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        sub
    }

    /// Oldest first.
    fn iter(&self) -> impl Iterator<Item = (&SubscriptionId, &Sub)> {
        self.0.iter().map(|(id, sub)| (id, sub))
    }
}

/// The protocol state of one socket on the server.
///
/// Drive it like this: feed every frame the socket reads to [`handle_text`](Self::handle_text),
/// [`handle_binary`](Self::handle_binary) or [`handle_pong`](Self::handle_pong), every finished
/// request to [`complete`](Self::complete) or [`confirm_subscription`](Self::confirm_subscription),
/// and every change event for a subscription to [`handle_push`](Self::handle_push); after each
/// call drain [`poll_event`](Self::poll_event) (work to do) and
/// [`poll_transmit`](Self::poll_transmit) (frames to write) until `None`; arm one timer at
/// [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout) when it
/// fires. Once [`is_closed`](Self::is_closed), write what is queued and drop the socket.
pub struct ServerSession {
    /// Shared: every socket of a server has the same.
    config: Arc<ServerConfig>,
    next_handle: u64,
    next_subscription: u64,
    // Handles grow and the timeout is fixed, so the first entry always has the earliest deadline.
    pending: BTreeMap<RequestHandle, Pending>,
    // Requests in flight that change something, and reads held back until the writes sent
    // before them are answered (so a socket reads its own writes).
    writes: BTreeSet<RequestHandle>,
    held_reads: VecDeque<(RequestHandle, ApiRequest)>,
    subs: SubTable,
    buffered_events: usize,
    transmits: VecDeque<OutFrame>,
    events: VecDeque<ServerEvent>,
    closed: bool,
    /// Closing once nothing is in flight ([`ServerSession::drain`]).
    draining: bool,
    last_seen: Instant,
    ping_sent: bool,
    token_expiry: Option<Instant>,
    expiry_close_at: Option<Instant>,
    rate: Option<RateLimit>,
    broadcast_rate: Option<RateLimit>,
    /// The presence names this socket joined (and did not leave): a join of one of them is a
    /// state change.
    present_on: BTreeSet<String>,
}

impl ServerSession {
    /// A session for a connection whose handshake (URL and credentials) succeeded.
    pub fn accept(config: impl Into<Arc<ServerConfig>>, now: Instant) -> Self {
        let config = config.into();
        ServerSession {
            rate: config.max_requests_per_sec.map(RateLimit::new),
            broadcast_rate: config.max_broadcasts_per_sec.map(RateLimit::new),
            present_on: BTreeSet::new(),
            config,
            next_handle: 0,
            next_subscription: 1,
            pending: BTreeMap::new(),
            writes: BTreeSet::new(),
            held_reads: VecDeque::new(),
            subs: SubTable::default(),
            buffered_events: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
            draining: false,
            last_seen: now,
            ping_sent: false,
            token_expiry: None,
            expiry_close_at: None,
        }
    }

    /// A session for a connection refused at the handshake: it sends one error frame
    /// (`{"id":null,"status":…,"body":…}`) and closes with `close_code` (4401, 4404, …).
    pub fn reject(
        config: impl Into<Arc<ServerConfig>>,
        now: Instant,
        status: u16,
        body_json: &str,
        close_code: u16,
    ) -> Self {
        let mut s = Self::accept(config, now);
        s.transmits
            .push_back(OutFrame::Text(encode_response(None, status, body_json)));
        s.close_with(close_code, reason_for(close_code));
        s
    }

    /// Greets an accepted connection: `{"id":null,"status":200,"body":…}` is its first frame,
    /// so a client knows the handshake succeeded (a refused one gets an error frame instead).
    /// A connection opened on a resource URL is greeted by its subscription's confirmation.
    pub fn welcome(&mut self, _now: Instant, body_json: &str) {
        if !self.closed {
            self.transmits
                .push_back(OutFrame::Text(encode_response(None, 200, body_json)));
        }
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        self.take_text(now, text, false);
    }

    /// A text frame arrived while the server holds all the request bytes it may: a request
    /// of the API is answered 503 `server_busy` instead of started, so that it holds nothing
    /// (the client retries it); every other frame is taken as [`handle_text`](Self::handle_text)
    /// takes it.
    pub fn handle_text_when_busy(&mut self, now: Instant, text: &str) {
        self.take_text(now, text, true);
    }

    fn take_text(&mut self, now: Instant, text: &str, busy: bool) {
        if self.closed {
            return;
        }
        self.seen(now);
        if self.draining {
            // Not taken: the client sends it again on its next connection (see `drain`).
            return;
        }
        if text.len() > self.config.max_frame_len {
            self.close_with(close_code::MESSAGE_TOO_BIG, "frame too large");
            return;
        }
        match decode_request(text) {
            Err(rejected) => self
                .transmits
                .push_back(OutFrame::Text(encode_rejection(&rejected))),
            Ok(frame) => match frame.command {
                Command::Api(_) if busy => self.refuse(
                    Some(&frame.id),
                    503,
                    "server_busy",
                    "the server holds as many requests as it may now; retry in a second",
                ),
                Command::Api(request) => {
                    if let Some(handle) = self.start(now, Some(frame.id), None) {
                        let bytes = text.len();
                        let mut write_id = None;
                        if !request.is_read_only() {
                            self.writes.insert(handle);
                            write_id = frame.write_id;
                        } else {
                            self.count_read(handle, bytes);
                            if !self.writes.is_empty() {
                                self.held_reads.push_back((handle, request));
                                return;
                            }
                        }
                        self.events.push_back(ServerEvent::Request {
                            handle,
                            request,
                            write_id,
                            bytes,
                        });
                    }
                }
                Command::Subscribe {
                    path,
                    params,
                    since,
                } => self.subscribe(now, Some(frame.id), path, params, since),
                Command::Unsubscribe { path, subscription } => {
                    self.unsubscribe(frame.id, path, subscription)
                }
                Command::Auth { access_token } => {
                    if let Some(handle) = self.start(now, Some(frame.id), None) {
                        self.events.push_back(ServerEvent::Auth {
                            handle,
                            access_token,
                        });
                    }
                }
                Command::Presence { path, action } => {
                    // A state change reaches everyone present, as a broadcast does, and
                    // counts against the same rate. A socket's first join of a path does not
                    // (after a reconnect a client joins every path again at once; the paths
                    // are bounded), nor does leaving.
                    let name = crate::presence::presence_name(&path, None);
                    let first = match (&action, name) {
                        // Bounded: past it (the server refuses a 33rd path anyway) every
                        // join counts.
                        (PresenceAction::Join { .. }, Ok(name)) => {
                            self.present_on.len() < 64 && self.present_on.insert(name)
                        }
                        (PresenceAction::Leave, Ok(name)) => {
                            self.present_on.remove(&name);
                            true
                        }
                        // The host refuses a path that can have no presence; trying counts.
                        (_, Err(_)) => false,
                    };
                    if !first && !self.take_broadcast_turn(now, &frame.id) {
                        return;
                    }
                    if let Some(handle) = self.start(now, Some(frame.id), None) {
                        self.events.push_back(ServerEvent::Presence {
                            handle,
                            path,
                            action,
                        });
                    }
                }
                Command::Broadcast { path, body, echo } => {
                    self.broadcast(now, frame.id, path, &body, echo)
                }
            },
        }
    }

    /// A binary frame of `len` bytes arrived; the protocol has none, so it is answered 400.
    pub fn handle_binary(&mut self, now: Instant, len: usize) {
        if self.closed {
            return;
        }
        self.seen(now);
        if len > self.config.max_frame_len {
            self.close_with(close_code::MESSAGE_TOO_BIG, "frame too large");
            return;
        }
        let rejected = RejectedFrame {
            id: None,
            error: FrameError::Binary,
        };
        self.transmits
            .push_back(OutFrame::Text(encode_rejection(&rejected)));
    }

    /// A pong (or ping) arrived: the peer is alive.
    pub fn handle_pong(&mut self, now: Instant) {
        self.seen(now);
    }

    /// Subscribes as if the client had sent `SUBSCRIBE` for `path` (a socket opened on a
    /// resource URL). The confirmation goes out with `"id": null`.
    /// A `since` among the URL's parameters resumes, as a frame's does. One that is not a
    /// single whole number refuses the connection (400, then 4400), as a frame's would be
    /// refused: starting from now instead would lose the events the client asked for.
    pub fn subscribe_on_connect(&mut self, now: Instant, path: String, mut params: Params) {
        let since = {
            let mut values = params.get_all("since");
            match (values.next(), values.next()) {
                (None, _) => Ok(None),
                (Some(v), None) => crate::json::as_u64(v).map(Some).ok_or(()),
                _ => Err(()),
            }
        };
        params.remove("since");
        match since {
            Ok(since) => self.subscribe(now, None, path, params, since),
            Err(()) if !self.closed => {
                let description = crate::wire::FrameError::BadSince.to_string();
                self.refuse(None, 400, "illegal_argument", &description);
                self.close_with(close_code::BAD_REQUEST, reason_for(close_code::BAD_REQUEST));
            }
            Err(()) => {}
        }
    }

    /// The peer closed the socket, or it broke: nothing more is sent, answers are dropped.
    pub fn handle_disconnect(&mut self, _now: Instant) {
        self.closed = true;
        self.pending.clear();
        self.writes.clear();
        self.held_reads.clear();
        self.end_all_subscriptions();
    }

    /// The host closes the connection (shutdown, limits, slow consumer): queues a close frame.
    pub fn close(&mut self, _now: Instant, code: u16, reason: &str) {
        if !self.closed {
            self.close_with(code, reason);
        }
    }

    /// The server is going down: the socket takes no new request (a frame read from now on
    /// is dropped unanswered), answers what it has in flight, each by its answer or its
    /// deadline's 504, then closes with 1012. A client sends what it had not been answered
    /// again on its next connection; a write it had sent is answered here, not left to a
    /// repeat that finds it neither answered nor known to have failed.
    pub fn drain(&mut self, _now: Instant) {
        if self.closed {
            return;
        }
        self.draining = true;
        self.close_if_drained();
    }

    fn close_if_drained(&mut self) {
        if self.draining && !self.closed && self.pending.is_empty() {
            self.close_with(close_code::SERVICE_RESTART, "server restarting");
        }
    }

    /// The host finished a request (or refused a subscription or an `AUTH`): queues its
    /// response frame.
    ///
    /// Returns false when the request is no longer awaited (it timed out, or the socket closed);
    /// the answer is then dropped.
    pub fn complete(
        &mut self,
        _now: Instant,
        handle: RequestHandle,
        status: u16,
        body_json: &str,
    ) -> bool {
        let Some(pending) = self.take_pending(handle) else {
            return false;
        };
        if self.writes.remove(&handle) {
            self.release_held_reads();
        }
        release_set(&mut self.writes);
        // The subscription a resource URL asked for is what the connection is for: if it
        // cannot start, the connection is refused, as one the access check refused at connect.
        let on_connect = pending.id.is_none() && pending.subscription.is_some();
        if let Some(sub) = pending.subscription {
            // A subscription answered with anything but its confirmation did not start.
            self.drop_subscription(sub);
        }
        if self.closed {
            return false;
        }
        self.transmits.push_back(OutFrame::Text(encode_response(
            pending.id.as_ref(),
            status,
            body_json,
        )));
        if on_connect {
            let code = match status {
                401 | 403 => close_code::UNAUTHORIZED,
                404 => close_code::NOT_FOUND,
                500.. => close_code::TRY_AGAIN_LATER,
                _ => close_code::BAD_REQUEST,
            };
            self.close_with(code, reason_for(code));
        }
        self.close_if_drained();
        true
    }

    /// The host started a subscription: queues the confirmation `body_json`, then the
    /// `replay` events (those after `position`, in order), then any live events that arrived
    /// meanwhile. Events up to `position` are treated as delivered.
    ///
    /// Returns false when the subscription is no longer awaited; the host then drops it.
    pub fn confirm_subscription(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        position: u64,
        body_json: &str,
        replay: impl IntoIterator<Item = (u64, Arc<str>)>,
    ) -> bool {
        let confirmed = self.start_subscription(now, handle, position, body_json, replay);
        self.close_if_drained();
        confirmed
    }

    fn start_subscription(
        &mut self,
        _now: Instant,
        handle: RequestHandle,
        position: u64,
        body_json: &str,
        replay: impl IntoIterator<Item = (u64, Arc<str>)>,
    ) -> bool {
        let Some(pending) = self.take_pending(handle) else {
            return false;
        };
        let Some(sub_id) = pending.subscription else {
            return false;
        };
        let Some(sub) = self.subs.get_mut(&sub_id) else {
            return false;
        };
        let buffered =
            match std::mem::replace(&mut sub.state, SubState::Active { last_seq: position }) {
                SubState::Pending { buffered } => buffered,
                SubState::Active { .. } => Vec::new(),
            };
        self.buffered_events -= buffered.len();
        if self.closed {
            return false;
        }
        self.transmits.push_back(OutFrame::Text(encode_response(
            pending.id.as_ref(),
            200,
            body_json,
        )));
        let mut last = position;
        let replay = replay.into_iter().map(|(seq, frame)| (Some(seq), frame));
        for (seq, frame) in replay.chain(buffered) {
            match seq {
                Some(seq) if seq <= last => {}
                Some(seq) => {
                    last = seq;
                    self.transmits.push_back(OutFrame::Event(frame));
                }
                None => self.transmits.push_back(OutFrame::Event(frame)),
            }
        }
        if let Some(sub) = self.subs.get_mut(&sub_id) {
            sub.state = SubState::Active { last_seq: last };
        }
        true
    }

    /// A change event for a subscription, already encoded. Delivered once and in order:
    /// an event at or before the last delivered `seq` is dropped.
    pub fn handle_push(
        &mut self,
        _now: Instant,
        subscription: SubscriptionId,
        seq: u64,
        frame: Arc<str>,
    ) {
        if self.closed {
            return;
        }
        let Some(sub) = self.subs.get_mut(&subscription) else {
            return;
        };
        match &mut sub.state {
            SubState::Active { last_seq } => {
                if seq > *last_seq {
                    *last_seq = seq;
                    self.transmits.push_back(OutFrame::Event(frame));
                }
            }
            SubState::Pending { buffered } => {
                if self.buffered_events >= self.config.max_queued_events {
                    self.close_with(close_code::SLOW_CONSUMER, "slow consumer");
                    return;
                }
                self.buffered_events += 1;
                buffered.push((Some(seq), frame));
            }
        }
    }

    /// A delivery that is not part of the ordered change stream (a queue message handed to a
    /// consumer, possibly again after its transaction timed out): sent as is, after the
    /// confirmation if that is still to come. False if the subscription is gone.
    pub fn handle_delivery(
        &mut self,
        _now: Instant,
        subscription: SubscriptionId,
        frame: Arc<str>,
    ) -> bool {
        if self.closed {
            return false;
        }
        match self.subs.get_mut(&subscription).map(|s| &mut s.state) {
            Some(SubState::Active { .. }) => {
                self.transmits.push_back(OutFrame::Event(frame));
                true
            }
            Some(SubState::Pending { buffered }) => {
                if self.buffered_events >= self.config.max_queued_events {
                    self.close_with(close_code::SLOW_CONSUMER, "slow consumer");
                    return false;
                }
                self.buffered_events += 1;
                buffered.push((None, frame));
                true
            }
            None => false,
        }
    }

    /// An ephemeral event for this socket (a presence change, a broadcast): not part of any
    /// subscription's ordered stream, sent as is. False if the socket is closed.
    pub fn handle_ephemeral(&mut self, _now: Instant, frame: Arc<str>) -> bool {
        if self.closed {
            return false;
        }
        self.transmits.push_back(OutFrame::Event(frame));
        true
    }

    /// The subscriber lost read access: sends `{"event":"revoked",…}` and ends the subscription.
    pub fn revoke(&mut self, _now: Instant, subscription: SubscriptionId, reason: &str) {
        let Some(sub) = self.subs.get(&subscription) else {
            return;
        };
        if !self.closed {
            let frame = encode_revoked(&subscription.to_string(), &sub.path, reason);
            self.transmits.push_back(OutFrame::Text(frame));
        }
        self.drop_subscription(subscription);
    }

    /// The socket lost read access to a presence it joined as `path`, named `name` (the
    /// name its answers and events carry): sends `{"event":"revoked","presence",…}`. The
    /// host has already taken the socket out of that presence; joining it again counts as a
    /// first join.
    pub fn revoke_presence(&mut self, _now: Instant, path: &str, name: &str, reason: &str) {
        if let Ok(name) = crate::presence::presence_name(path, None) {
            self.present_on.remove(&name);
        }
        if !self.closed {
            let frame = crate::presence::encode_revoked(name, reason);
            self.transmits.push_back(OutFrame::Text(frame));
        }
    }

    /// When the connection's token expires (`None`: never). Setting a later time after the
    /// expiry was announced (a successful `AUTH`) cancels the close.
    pub fn set_token_expiry(&mut self, _now: Instant, expiry: Option<Instant>) {
        self.token_expiry = expiry;
        self.expiry_close_at = None;
    }

    /// Time passed: requests past their deadline are answered 504, an expired token is
    /// announced and, after the grace period, the socket closed with 4401; idle sockets are
    /// pinged, and closed when silent for two ping intervals.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Held reads are released after every expired request is gone, so that none is handed
        // to the host just before its own 504.
        let mut write_expired = false;
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            let handle = *entry.key();
            let pending = entry.remove();
            let write = self.writes.remove(&handle);
            write_expired |= write;
            if let Some(sub) = pending.subscription {
                self.drop_subscription(sub);
            }
            if !self.closed {
                let description =
                    crate::wire::request_timeout_description(self.config.request_timeout, write);
                self.refuse(pending.id.as_ref(), 504, "request_timeout", &description);
            }
        }
        release_map(&mut self.pending);
        release_set(&mut self.writes);
        if write_expired {
            self.release_held_reads();
        }
        self.close_if_drained();
        if self.closed {
            return;
        }
        if let Some(close_at) = self.expiry_close_at {
            if now >= close_at {
                self.close_with(close_code::UNAUTHORIZED, "token expired");
                return;
            }
        } else if let Some(expiry) = self.token_expiry
            && now >= expiry
        {
            let description = format!(
                "the access token has expired; send AUTH with a new one within {} s or the socket closes",
                self.config.auth_grace.as_secs()
            );
            self.refuse(None, 401, "expired_token", &description);
            self.expiry_close_at = Some(now + self.config.auth_grace);
        }
        if let Some(interval) = self.config.ping_interval {
            if now >= self.last_seen + interval * 2 {
                self.close_with(close_code::GOING_AWAY, "ping timeout");
            } else if !self.ping_sent && now >= self.last_seen + interval {
                self.ping_sent = true;
                self.transmits.push_back(OutFrame::Ping);
            }
        }
    }

    /// The next piece of work for the host. Changes after `handle_text`, `revoke`, timeouts
    /// and disconnects.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let event = self.events.pop_front();
        if event.is_none() {
            release_queue(&mut self.events);
        }
        event
    }

    /// The next frame to write. Changes after every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<OutFrame> {
        let frame = self.transmits.pop_front();
        if frame.is_none() {
            release_queue(&mut self.transmits);
        }
        frame
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest of the request
    /// deadlines, the token expiry (or the close after it) and the next heartbeat. Changes
    /// after every input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let request = self.pending.values().next().map(|p| p.deadline);
        let token = self.expiry_close_at.or(self.token_expiry);
        let ping = self.config.ping_interval.map(|i| {
            if self.ping_sent {
                self.last_seen + i * 2
            } else {
                self.last_seen + i
            }
        });
        [request, token, ping].into_iter().flatten().min()
    }

    /// True once a close frame is queued or the peer is gone.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// How many requests are executing.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The frame bytes of the reads this session holds: running, or held back behind a write.
    /// The host counts them against its budget of request bytes, with the writes it runs.
    pub fn read_bytes(&self) -> usize {
        // Summed, not kept: at most `max_in_flight` requests, and every idle socket would carry
        // the field.
        self.pending.values().map(|p| p.read_bytes).sum()
    }

    /// How many subscriptions the socket holds (confirmed or not).
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    fn seen(&mut self, now: Instant) {
        self.last_seen = now;
        self.ping_sent = false;
    }

    fn start(
        &mut self,
        now: Instant,
        id: Option<FrameId>,
        subscription: Option<SubscriptionId>,
    ) -> Option<RequestHandle> {
        if let Some(rate) = &mut self.rate
            && !rate.try_take(now)
        {
            let description = format!(
                "more than {} requests per second on this socket; slow down",
                rate.per_second()
            );
            self.refuse(id.as_ref(), 429, "rate_limited", &description);
            return None;
        }
        if self.pending.len() >= self.config.max_in_flight {
            let description = format!(
                "more than {} requests in flight on this socket; wait for responses",
                self.config.max_in_flight
            );
            self.refuse(id.as_ref(), 429, "too_many_requests", &description);
            return None;
        }
        let handle = RequestHandle(self.next_handle);
        self.next_handle += 1;
        self.pending.insert(
            handle,
            Pending {
                id,
                deadline: now + self.config.request_timeout,
                subscription,
                read_bytes: 0,
            },
        );
        Some(handle)
    }

    /// Counts a read's frame in [`ServerSession::read_bytes`] until it is answered.
    fn count_read(&mut self, handle: RequestHandle, bytes: usize) {
        if let Some(p) = self.pending.get_mut(&handle) {
            p.read_bytes = bytes;
        }
    }

    /// Hands the host the held reads that no unanswered write precedes, in order.
    fn release_held_reads(&mut self) {
        if self.closed {
            self.held_reads.clear();
            return;
        }
        while let Some(&(read, _)) = self.held_reads.front() {
            if self.writes.first().is_some_and(|&w| w < read) {
                break;
            }
            let Some((handle, request)) = self.held_reads.pop_front() else {
                break;
            };
            // A held read that timed out was answered 504 already.
            if let Some(p) = self.pending.get(&handle) {
                self.events.push_back(ServerEvent::Request {
                    handle,
                    request,
                    write_id: None,
                    bytes: p.read_bytes,
                });
            }
        }
        release_queue(&mut self.held_reads);
    }

    fn subscribe(
        &mut self,
        now: Instant,
        id: Option<FrameId>,
        path: String,
        params: Params,
        since: Option<u64>,
    ) {
        if self.subs.len() >= self.config.max_subscriptions {
            let description = format!(
                "at most {} subscriptions per socket; unsubscribe first",
                self.config.max_subscriptions
            );
            self.refuse(id.as_ref(), 429, "too_many_subscriptions", &description);
            return;
        }
        let bytes = path.len() + params.text_len();
        // Summed when a subscription comes (a socket has a few, at most a thousand), not kept:
        // every idle socket would carry the field.
        let held = self
            .subs
            .iter()
            .map(|(_, s)| s.bytes as usize)
            .sum::<usize>()
            .saturating_add(bytes);
        let fits = u32::try_from(bytes)
            .ok()
            .filter(|_| held <= self.config.max_subscription_bytes);
        let Some(bytes) = fits else {
            let description = format!(
                "this socket's subscriptions may hold {} bytes of paths and parameters, and this one would take them to {held}; unsubscribe first",
                self.config.max_subscription_bytes
            );
            self.refuse(id.as_ref(), 429, "too_many_subscriptions", &description);
            return;
        };
        let sub_id = SubscriptionId(self.next_subscription);
        let Some(handle) = self.start(now, id, Some(sub_id)) else {
            return;
        };
        self.next_subscription += 1;
        self.subs.push(
            sub_id,
            Sub {
                path: path.clone(),
                bytes,
                state: SubState::Pending {
                    buffered: Vec::new(),
                },
            },
        );
        self.events.push_back(ServerEvent::Subscribe {
            handle,
            subscription: sub_id,
            path,
            params,
            since,
        });
    }

    /// Takes one of the socket's broadcasts (and presence state changes) of this second;
    /// false, with request `id` answered 429 `rate_limited`, past the rate.
    fn take_broadcast_turn(&mut self, now: Instant, id: &FrameId) -> bool {
        let Some(rate) = &mut self.broadcast_rate else {
            return true;
        };
        if rate.try_take(now) {
            return true;
        }
        let description = format!(
            "more than {} broadcasts per second (presence state changes included) on this socket; slow down",
            rate.per_second()
        );
        self.refuse(Some(id), 429, "rate_limited", &description);
        false
    }

    fn broadcast(
        &mut self,
        now: Instant,
        id: FrameId,
        path: String,
        body: &serde_json::Value,
        echo: bool,
    ) {
        let body_json = body.to_string();
        if body_json.len() > self.config.max_broadcast_bytes {
            let description = format!(
                "a broadcast body is at most {} bytes of JSON; this one is {}",
                self.config.max_broadcast_bytes,
                body_json.len()
            );
            self.refuse(Some(&id), 413, "broadcast_too_large", &description);
            return;
        }
        if !self.take_broadcast_turn(now, &id) {
            return;
        }
        if let Some(handle) = self.start(now, Some(id), None) {
            self.events.push_back(ServerEvent::Broadcast {
                handle,
                path,
                body_json,
                echo,
            });
        }
    }

    fn unsubscribe(&mut self, id: FrameId, path: Option<String>, subscription: Option<String>) {
        let targets: Vec<SubscriptionId> = match (&subscription, &path) {
            (Some(s), _) => SubscriptionId::parse(s)
                .filter(|sid| self.subs.contains_key(sid))
                .into_iter()
                .collect(),
            (None, Some(p)) => {
                let wanted = normalize_path(p);
                self.subs
                    .iter()
                    .filter(|(_, s)| normalize_path(&s.path) == wanted)
                    .map(|(id, _)| *id)
                    .collect()
            }
            (None, None) => Vec::new(),
        };
        if targets.is_empty() {
            let what = subscription
                .map(|s| format!("subscription {s:?}"))
                .or(path.map(|p| format!("a subscription of {p:?}")))
                .unwrap_or_default();
            self.refuse(
                Some(&id),
                404,
                "subscription_not_found",
                &format!("no {what} on this socket"),
            );
            return;
        }
        let ended: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let paths: Vec<String> = targets
            .iter()
            .filter_map(|t| self.subs.get(t).map(|s| s.path.clone()))
            .collect();
        for t in targets {
            // A pending subscription's request stays in flight and is answered when it ends.
            self.drop_subscription(t);
        }
        let body = serde_json::json!({"unsubscribed": ended, "path": paths.first()}).to_string();
        self.transmits
            .push_back(OutFrame::Text(encode_response(Some(&id), 200, &body)));
    }

    /// Answers the frame `id` (`None`: the socket itself) with an error, as the API's errors
    /// look.
    fn refuse(&mut self, id: Option<&FrameId>, status: u16, error: &str, description: &str) {
        let body = error_body_json(error, description);
        self.transmits
            .push_back(OutFrame::Text(encode_response(id, status, &body)));
    }

    /// Takes an answered request out of the table, and gives the table's memory back once it
    /// is empty.
    fn take_pending(&mut self, handle: RequestHandle) -> Option<Pending> {
        let pending = self.pending.remove(&handle);
        release_map(&mut self.pending);
        pending
    }

    fn drop_subscription(&mut self, sub: SubscriptionId) {
        if let Some(s) = self.subs.remove(&sub) {
            if let SubState::Pending { buffered } = s.state {
                self.buffered_events -= buffered.len();
            }
            self.events
                .push_back(ServerEvent::Unsubscribed { subscription: sub });
        }
    }

    fn end_all_subscriptions(&mut self) {
        let ids: Vec<_> = self.subs.iter().map(|(id, _)| *id).collect();
        for id in ids {
            self.drop_subscription(id);
        }
    }

    fn close_with(&mut self, code: u16, reason: &str) {
        self.closed = true;
        self.pending.clear();
        self.events.clear();
        self.end_all_subscriptions();
        self.transmits.push_back(OutFrame::Close {
            code,
            reason: reason.to_owned(),
        });
    }
}

fn normalize_path(p: &str) -> String {
    let parts: Vec<String> = p
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    format!("/{}", parts.join("/"))
}

fn reason_for(code: u16) -> &'static str {
    match code {
        close_code::UNAUTHORIZED => "unauthorized",
        close_code::NOT_FOUND => "not found",
        close_code::BAD_REQUEST => "bad request",
        close_code::TRY_AGAIN_LATER => "try again later",
        _ => "closed",
    }
}

// An idle socket keeps nothing it does not need: a B-tree keeps its empty root node (over
// 700 bytes for the request table) and a queue its capacity once emptied, so each is given
// back when empty. At most one allocation is made again per burst of work.

fn release_map<K, V>(map: &mut BTreeMap<K, V>) {
    if map.is_empty() {
        *map = BTreeMap::new();
    }
}

fn release_set<T>(set: &mut BTreeSet<T>) {
    if set.is_empty() {
        *set = BTreeSet::new();
    }
}

fn release_queue<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests;
