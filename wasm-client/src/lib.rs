//! # gridsocket-wasm
//!
//! The protocol engine of gridsocket's JavaScript package: [`gridsocket_core::ClientSession`]
//! exported to JavaScript as `Session`, and nothing else. The package's JavaScript
//! (`wasm-client/js/index.js`) is the host: it owns the `WebSocket` (the platform's, or one the
//! app passes in, such as the `ws` package in Node), one timer, promises, listeners and token
//! refresh, and drives this session the way the core's docs say: after every input, send each
//! frame [`Session::transmit`] returns, act on each event [`Session::event`] returns, then arm
//! one timer [`Session::wait`] milliseconds away and call [`Session::timeout`] when it fires.
//!
//! Keeping the host in JavaScript keeps the `.wasm` small and free of platform bindings: it
//! imports nothing but the clock. Everything that crosses the boundary is a string or a
//! number: bodies and entities are the server's JSON text, spliced unparsed into each event's
//! JSON, which the host parses once.

use gridsocket_core::{
    ClientConfig, ClientError, ClientEvent, ClientSession, Instant, PresenceId, SubId,
};
use std::time::Duration;
use wasm_bindgen::prelude::*;

/// One client's protocol state (see the crate docs). Every method reads the clock itself.
#[wasm_bindgen]
pub struct Session {
    inner: ClientSession,
}

fn duration(ms: f64) -> Option<Duration> {
    (ms > 0.0).then(|| Duration::from_millis(ms as u64))
}

fn push_num(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
}

/// Appends `s` as a JSON string (the values here are URLs, codes, subscription reasons).
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"t":"<tag>"` then `,"<key>":<n>` pairs; the caller closes the object.
fn start(tag: &str) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"t\":\"");
    out.push_str(tag);
    out.push('"');
    out
}

fn num(out: &mut String, key: &str, n: u64) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    push_num(out, n);
}

fn raw(out: &mut String, key: &str, json: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    out.push_str(json);
}

fn text(out: &mut String, key: &str, s: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    push_str(out, s);
}

fn ids(out: &mut String, key: &str, ids: impl Iterator<Item = u64>) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":[");
    for (i, id) in ids.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_num(out, id);
    }
    out.push(']');
}

fn error(out: &mut String, e: &ClientError) {
    text(out, "code", e.code());
    if let ClientError::Timeout(ms) = e {
        num(out, "ms", *ms);
    }
}

/// An event as JSON text: `{"t": tag, …}`; bodies, snapshots and entities spliced in raw.
fn encode(event: ClientEvent) -> String {
    use ClientEvent as E;
    let mut o;
    match event {
        E::Connect { url } => {
            o = start("connect");
            text(&mut o, "url", &url);
        }
        E::Disconnect => o = start("disconnect"),
        E::StateChanged(state) => {
            o = start("state");
            text(&mut o, "state", state.as_str());
        }
        E::Response { id, status, body } => {
            o = start("response");
            num(&mut o, "id", id.0);
            num(&mut o, "status", status.into());
            raw(&mut o, "body", &body);
        }
        E::RequestFailed { id, error: e } => {
            o = start("failed");
            num(&mut o, "id", id.0);
            error(&mut o, &e);
        }
        E::Subscribed {
            sub,
            seq,
            snapshot,
            resumed,
        } => {
            o = start("subscribed");
            num(&mut o, "sub", sub.0);
            num(&mut o, "seq", seq);
            raw(&mut o, "resumed", if resumed { "true" } else { "false" });
            if let Some(s) = snapshot {
                raw(&mut o, "snapshot", &s);
            }
        }
        E::SubscribeFailed { sub, status, body } => {
            o = start("refused");
            num(&mut o, "sub", sub.0);
            num(&mut o, "status", status.into());
            raw(&mut o, "body", &body);
        }
        E::SubscriptionEnded { sub, error: e } => {
            o = start("ended");
            num(&mut o, "sub", sub.0);
            error(&mut o, &e);
        }
        E::Event {
            sub,
            kind,
            seq,
            entity,
        } => {
            o = start("event");
            num(&mut o, "sub", sub.0);
            text(&mut o, "type", &kind);
            num(&mut o, "seq", seq);
            raw(&mut o, "entity", &entity);
        }
        E::ResyncRequired { sub } => {
            o = start("resync");
            num(&mut o, "sub", sub.0);
        }
        E::Revoked { sub, reason } => {
            o = start("revoked");
            num(&mut o, "sub", sub.0);
            text(&mut o, "reason", &reason);
        }
        E::ServerError { status, body } => {
            o = start("error");
            num(&mut o, "status", status.into());
            raw(&mut o, "body", &body);
        }
        E::AuthRequired { reason } => {
            o = start("auth");
            text(&mut o, "reason", reason.as_str());
        }
        E::Failed { error: e } => {
            o = start("gaveup");
            error(&mut o, &e);
        }
        E::PresenceChanged {
            presence,
            change,
            uuid,
            username,
            connections,
        } => {
            o = start("presence");
            num(&mut o, "p", presence.0);
            text(&mut o, "type", change.as_str());
            text(&mut o, "uuid", &uuid);
            text(&mut o, "username", &username);
            raw(&mut o, "connections", &connections);
        }
        E::PresenceSynced {
            presence,
            reason,
            path,
            users,
        } => {
            o = start("sync");
            num(&mut o, "p", presence.0);
            text(&mut o, "reason", reason.as_str());
            text(&mut o, "path", &path);
            raw(&mut o, "users", &users);
        }
        E::PresenceRefused {
            presence,
            status,
            body,
        } => {
            o = start("prefused");
            num(&mut o, "p", presence.0);
            num(&mut o, "status", status.into());
            raw(&mut o, "body", &body);
        }
        E::PresenceRevoked { presence, reason } => {
            o = start("prevoked");
            num(&mut o, "p", presence.0);
            text(&mut o, "reason", &reason);
        }
        E::PresenceEnded { presence, error: e } => {
            o = start("pended");
            num(&mut o, "p", presence.0);
            error(&mut o, &e);
        }
        E::Broadcast {
            path,
            from,
            body,
            subs,
            presences,
        } => {
            o = start("broadcast");
            text(&mut o, "path", &path);
            raw(&mut o, "from", &from);
            raw(&mut o, "body", &body);
            ids(&mut o, "subs", subs.iter().map(|s| s.0));
            ids(&mut o, "presences", presences.iter().map(|p| p.0));
        }
    }
    o.push('}');
    o
}

#[wasm_bindgen]
impl Session {
    /// A session that connects at once to `url` (`ws://host:8088/org/app`). Timeouts in ms
    /// (0: the default). `seed_*` are four random 32-bit numbers (they name this client's
    /// writes).
    #[wasm_bindgen(constructor)]
    pub fn new(
        url: &str,
        token: Option<String>,
        request_timeout_ms: f64,
        connect_timeout_ms: f64,
        seed: &[u32],
    ) -> Session {
        let mut config = ClientConfig::default();
        if let Some(d) = duration(request_timeout_ms) {
            config.request_timeout = d;
        }
        if let Some(d) = duration(connect_timeout_ms) {
            config.connect_timeout = d;
        }
        let seed = seed
            .iter()
            .take(4)
            .fold(0u128, |acc, &w| (acc << 32) | u128::from(w));
        Session {
            inner: ClientSession::new(Instant::now(), config, url, token, seed),
        }
    }

    /// Sends (or queues) a request; `params` a JSON object's text, `body` JSON text;
    /// `timeout_ms` 0 for the default. Returns its id, which the `response` or `failed` event
    /// names.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        params: Option<String>,
        body: Option<String>,
        timeout_ms: f64,
    ) -> f64 {
        let id = self.inner.request(
            Instant::now(),
            method,
            path,
            params.as_deref(),
            body.as_deref(),
            duration(timeout_ms),
        );
        id.0 as f64
    }

    /// Subscribes; `params` a JSON object's text, `since` negative for none. Returns the
    /// subscription's id.
    pub fn subscribe(
        &mut self,
        path: &str,
        params: Option<String>,
        snapshot: bool,
        since: f64,
    ) -> f64 {
        let since = (since >= 0.0).then_some(since as u64);
        let sub = self
            .inner
            .subscribe(Instant::now(), path, params.as_deref(), snapshot, since);
        sub.0 as f64
    }

    /// Ends a subscription.
    pub fn unsubscribe(&mut self, sub: f64) {
        self.inner.unsubscribe(Instant::now(), SubId(sub as u64));
    }

    /// Joins the presence of `path` with `state` (a JSON object's text). Returns the
    /// presence's id, which the `presence`, `sync`, `prefused` and `pended` events name.
    pub fn presence(&mut self, path: &str, state: &str) -> f64 {
        self.inner.presence(Instant::now(), path, state).0 as f64
    }

    /// Changes this client's state on a presence; answered like a request (its id is
    /// returned). `timeout_ms` 0 for the default.
    #[wasm_bindgen(js_name = presenceUpdate)]
    pub fn presence_update(&mut self, presence: f64, state: &str, timeout_ms: f64) -> f64 {
        let id = self.inner.presence_update(
            Instant::now(),
            PresenceId(presence as u64),
            state,
            duration(timeout_ms),
        );
        id.0 as f64
    }

    /// Leaves a presence; answered like a request (its id is returned).
    #[wasm_bindgen(js_name = presenceLeave)]
    pub fn presence_leave(&mut self, presence: f64, timeout_ms: f64) -> f64 {
        let id = self.inner.presence_leave(
            Instant::now(),
            PresenceId(presence as u64),
            duration(timeout_ms),
        );
        id.0 as f64
    }

    /// Sends `body` (JSON text) to whoever watches `path` now; answered like a request (its
    /// id is returned).
    pub fn broadcast(&mut self, path: &str, body: &str, echo: bool, timeout_ms: f64) -> f64 {
        let id = self
            .inner
            .broadcast(Instant::now(), path, body, echo, duration(timeout_ms));
        id.0 as f64
    }

    /// Offers a new token; answered like a request (its id is returned).
    #[wasm_bindgen(js_name = setAccessToken)]
    pub fn set_access_token(&mut self, token: String) -> f64 {
        self.inner.set_access_token(Instant::now(), token).0 as f64
    }

    /// Closes the session for good.
    pub fn close(&mut self) {
        self.inner.close(Instant::now());
    }

    /// The socket opened.
    pub fn opened(&mut self) {
        self.inner.handle_open(Instant::now());
    }

    /// A text frame arrived; false if it was not a protocol frame (it is ignored).
    pub fn frame(&mut self, text: &str) -> bool {
        self.inner.handle_frame(Instant::now(), text).is_ok()
    }

    /// The socket closed or failed (`code` negative when there is none, as after `error`).
    pub fn closed(&mut self, code: f64) {
        let code = (0.0..65536.0).contains(&code).then_some(code as u16);
        self.inner.handle_close(Instant::now(), code);
    }

    /// The timer fired.
    pub fn timeout(&mut self) {
        self.inner.handle_timeout(Instant::now());
    }

    /// The next frame to send, if any.
    pub fn transmit(&mut self) -> Option<String> {
        self.inner.poll_transmit()
    }

    /// The next event, as JSON text, if any.
    pub fn event(&mut self) -> Option<String> {
        self.inner.poll_event().map(encode)
    }

    /// Milliseconds until [`Session::timeout`] is due; negative when no timer is needed.
    pub fn wait(&self) -> f64 {
        match self.inner.poll_timeout() {
            Some(at) => at.saturating_duration_since(Instant::now()).as_millis() as f64,
            None => -1.0,
        }
    }

    /// `connecting`, `open`, `reconnecting` or `closed`.
    pub fn state(&self) -> String {
        self.inner.state().as_str().to_owned()
    }

    /// The `seq` of the last event a subscription delivered; negative when none yet.
    #[wasm_bindgen(js_name = lastSeq)]
    pub fn last_seq(&self, sub: f64) -> f64 {
        match self.inner.last_seq(SubId(sub as u64)) {
            Some(s) => s as f64,
            None => -1.0,
        }
    }
}
