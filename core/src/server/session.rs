//! [`ServerSession`]: the protocol state of one accepted socket, sans IO.

use crate::time::Instant;
use crate::wire::{
    ApiRequest, FrameError, FrameId, RejectedFrame, decode_request, encode_rejection,
    encode_response, error_body_json,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::close_code;

/// Limits of one server-side session.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest text frame accepted; a larger one closes the socket with 1009.
    pub max_frame_len: usize,
    /// Most requests executing at once on one socket; one more is answered 429.
    pub max_in_flight: usize,
    /// How long a request may execute before the client is answered 504.
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_len: 1 << 20,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Names one request the host is executing; hand it back to [`ServerSession::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestHandle(pub u64);

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
    },
}

/// A frame for the host to write to the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum OutFrame {
    /// A JSON text frame.
    Text(String),
    /// A close frame; after it the host writes nothing more and ends the connection.
    Close {
        /// WebSocket close code (see [`close_code`]).
        code: u16,
        /// Short reason for people reading logs.
        reason: String,
    },
}

struct Pending {
    id: FrameId,
    deadline: Instant,
}

/// The protocol state of one socket on the server.
///
/// Drive it like this: feed every frame the socket reads to [`handle_text`](Self::handle_text)
/// or [`handle_binary`](Self::handle_binary), and every finished request to
/// [`complete`](Self::complete); after each call drain [`poll_event`](Self::poll_event) (work to
/// do) and [`poll_transmit`](Self::poll_transmit) (frames to write) until `None`; arm one timer
/// at [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout) when
/// it fires. Once [`is_closed`](Self::is_closed), write what is queued and drop the socket.
pub struct ServerSession {
    config: ServerConfig,
    next_handle: u64,
    // Handles grow and the timeout is fixed, so the first entry always has the earliest deadline.
    pending: BTreeMap<RequestHandle, Pending>,
    transmits: VecDeque<OutFrame>,
    events: VecDeque<ServerEvent>,
    closed: bool,
}

impl ServerSession {
    /// A session for a connection whose handshake (URL and credentials) succeeded.
    pub fn accept(config: ServerConfig) -> Self {
        ServerSession {
            config,
            next_handle: 0,
            pending: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// A session for a connection refused at the handshake: it sends one error frame
    /// (`{"id":null,"status":…,"body":…}`) and closes with `close_code` (4401, 4404, …).
    pub fn reject(config: ServerConfig, status: u16, body_json: &str, close_code: u16) -> Self {
        let mut s = Self::accept(config);
        s.transmits
            .push_back(OutFrame::Text(encode_null_id(status, body_json)));
        s.close_with(close_code, reason_for(close_code));
        s
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        if self.closed {
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
            Ok(frame) => self.start(now, frame.id, frame.request),
        }
    }

    /// A binary frame of `len` bytes arrived; the protocol has none, so it is answered 400.
    pub fn handle_binary(&mut self, _now: Instant, len: usize) {
        if self.closed {
            return;
        }
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

    /// The peer closed the socket, or it broke: nothing more is sent, answers are dropped.
    pub fn handle_disconnect(&mut self, _now: Instant) {
        self.closed = true;
        self.pending.clear();
        self.events.clear();
    }

    /// The host closes the connection (shutdown, limits): queues a close frame.
    pub fn close(&mut self, _now: Instant, code: u16, reason: &str) {
        if !self.closed {
            self.close_with(code, reason);
        }
    }

    /// The host finished executing a request: queues its response frame.
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
        let Some(pending) = self.pending.remove(&handle) else {
            return false;
        };
        if self.closed {
            return false;
        }
        self.transmits.push_back(OutFrame::Text(encode_response(
            &pending.id,
            status,
            body_json,
        )));
        true
    }

    /// Time passed: requests past their deadline are answered 504 `request_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            let pending = entry.remove();
            if !self.closed {
                let body = error_body_json(
                    "request_timeout",
                    &format!(
                        "the request did not finish within {} ms",
                        self.config.request_timeout.as_millis()
                    ),
                );
                self.transmits
                    .push_back(OutFrame::Text(encode_response(&pending.id, 504, &body)));
            }
        }
    }

    /// The next request to execute. Changes after `handle_text`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The next frame to write. Changes after every `handle_*`, `complete` and `close`.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<OutFrame> {
        self.transmits.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest request deadline.
    /// Changes when a request starts or completes.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().next().map(|p| p.deadline)
    }

    /// True once a close frame is queued or the peer is gone.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// How many requests are executing.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn start(&mut self, now: Instant, id: FrameId, request: ApiRequest) {
        if self.pending.len() >= self.config.max_in_flight {
            let body = error_body_json(
                "too_many_requests",
                &format!(
                    "more than {} requests in flight on this socket; wait for responses",
                    self.config.max_in_flight
                ),
            );
            self.transmits
                .push_back(OutFrame::Text(encode_response(&id, 429, &body)));
            return;
        }
        let handle = RequestHandle(self.next_handle);
        self.next_handle += 1;
        self.pending.insert(
            handle,
            Pending {
                id,
                deadline: now + self.config.request_timeout,
            },
        );
        self.events
            .push_back(ServerEvent::Request { handle, request });
    }

    fn close_with(&mut self, code: u16, reason: &str) {
        self.closed = true;
        self.pending.clear();
        self.events.clear();
        self.transmits.push_back(OutFrame::Close {
            code,
            reason: reason.to_owned(),
        });
    }
}

fn encode_null_id(status: u16, body_json: &str) -> String {
    format!("{{\"id\":null,\"status\":{status},\"body\":{body_json}}}")
}

fn reason_for(code: u16) -> &'static str {
    match code {
        close_code::UNAUTHORIZED => "unauthorized",
        close_code::NOT_FOUND => "not found",
        close_code::TRY_AGAIN_LATER => "try again later",
        _ => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Method;
    use serde_json::Value;

    // Any origin will do: every later instant is derived from it.
    #[allow(clippy::disallowed_methods)]
    fn session() -> (ServerSession, Instant) {
        let config = ServerConfig {
            max_frame_len: 200,
            max_in_flight: 2,
            request_timeout: Duration::from_secs(5),
        };
        (ServerSession::accept(config), Instant::now())
    }

    fn text(s: &mut ServerSession) -> Value {
        match s.poll_transmit() {
            Some(OutFrame::Text(t)) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    fn request(s: &mut ServerSession) -> (RequestHandle, ApiRequest) {
        match s.poll_event() {
            Some(ServerEvent::Request { handle, request }) => (handle, request),
            None => panic!("expected a request"),
        }
    }

    #[test]
    fn correlates_out_of_order_responses() {
        let (mut s, now) = session();
        s.handle_text(now, r#"{"id":1,"method":"GET","path":"/a"}"#);
        s.handle_text(
            now,
            r#"{"id":"two","method":"POST","path":"/b","body":{"x":1}}"#,
        );
        let (h1, r1) = request(&mut s);
        let (h2, r2) = request(&mut s);
        assert_eq!(r1.method, Method::Get);
        assert_eq!(r2.body, Some(serde_json::json!({"x":1})));
        assert!(s.poll_transmit().is_none());
        assert!(s.complete(now, h2, 201, r#"{"ok":2}"#));
        assert!(s.complete(now, h1, 200, r#"{"ok":1}"#));
        let a = text(&mut s);
        assert_eq!(
            (a["id"].clone(), a["status"].clone()),
            ("two".into(), 201.into())
        );
        let b = text(&mut s);
        assert_eq!(
            (b["id"].clone(), b["body"]["ok"].clone()),
            (1.into(), 1.into())
        );
        assert!(!s.complete(now, h1, 200, "{}"), "a handle completes once");
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn bad_frames_are_answered_and_the_session_survives() {
        let (mut s, now) = session();
        for bad in [
            "nope",
            "[]",
            r#"{"id":3}"#,
            r#"{"id":4,"method":"FLY","path":"/"}"#,
        ] {
            s.handle_text(now, bad);
            let v = text(&mut s);
            assert_eq!(v["status"], 400, "{bad}");
            assert_eq!(v["body"]["error"], "invalid_frame");
        }
        s.handle_binary(now, 3);
        assert_eq!(text(&mut s)["body"]["error"], "invalid_frame");
        assert!(!s.is_closed());
        s.handle_text(now, r#"{"id":5,"method":"GET","path":"/a"}"#);
        let _ = request(&mut s);
    }

    #[test]
    fn limits_in_flight_requests() {
        let (mut s, now) = session();
        for id in 0..3 {
            s.handle_text(now, &format!(r#"{{"id":{id},"method":"GET","path":"/a"}}"#));
        }
        let (h0, _) = request(&mut s);
        let _ = request(&mut s);
        assert!(s.poll_event().is_none());
        let v = text(&mut s);
        assert_eq!(
            (v["id"].clone(), v["status"].clone()),
            (2.into(), 429.into())
        );
        assert!(s.complete(now, h0, 200, "{}"));
        s.handle_text(now, r#"{"id":9,"method":"GET","path":"/a"}"#);
        let _ = request(&mut s);
    }

    #[test]
    fn oversize_frames_close_with_1009() {
        let (mut s, now) = session();
        s.handle_text(now, &"x".repeat(201));
        assert!(matches!(
            s.poll_transmit(),
            Some(OutFrame::Close { code: 1009, .. })
        ));
        assert!(s.is_closed());
        s.handle_text(now, r#"{"id":1,"method":"GET","path":"/a"}"#);
        assert!(s.poll_event().is_none());
    }

    #[test]
    fn requests_time_out_in_simulated_time() {
        let (mut s, now) = session();
        s.handle_text(now, r#"{"id":1,"method":"GET","path":"/a"}"#);
        let (h, _) = request(&mut s);
        let deadline = s.poll_timeout().unwrap();
        assert_eq!(deadline, now + Duration::from_secs(5));
        s.handle_timeout(deadline - Duration::from_millis(1));
        assert!(s.poll_transmit().is_none());
        s.handle_timeout(deadline);
        let v = text(&mut s);
        assert_eq!(v["status"], 504);
        assert_eq!(v["body"]["error"], "request_timeout");
        assert!(!s.complete(deadline, h, 200, "{}"));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn rejected_handshake_sends_one_error_then_closes() {
        let mut s = ServerSession::reject(
            ServerConfig::default(),
            401,
            r#"{"error":"auth_bad_access_token"}"#,
            close_code::UNAUTHORIZED,
        );
        let v = text(&mut s);
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["status"], 401);
        assert!(matches!(
            s.poll_transmit(),
            Some(OutFrame::Close { code: 4401, .. })
        ));
        assert!(s.is_closed());
    }
}
