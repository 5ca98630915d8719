//! # gridsocket-wasm
//!
//! The JavaScript client of gridsocket: a thin wasm-bindgen wrapper over
//! [`gridsocket_core::ClientSession`]. The core decides everything (request correlation,
//! subscriptions and their last `seq`, reconnect backoff, resume, token refresh); this crate
//! only owns the `WebSocket`, one `setTimeout`, and the JavaScript promises and callbacks.

mod error;

use error::{client_error, response_error};
use gridsocket_core::{
    ClientConfig, ClientEvent, ClientSession, ConnectionState, Instant, RequestId, SubId,
};
use js_sys::{Function, JSON, Object, Promise, Reflect};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options of {@link Client.connect}. */
export interface ConnectOptions {
  /** Access token from `POST /{org}/{app}/token`; omit to connect as a guest. */
  accessToken?: string;
  /** How long a request may wait for its response, ms (default 30000). */
  requestTimeoutMs?: number;
}

/** Options of {@link Client.subscribe}. */
export interface SubscribeOptions {
  /** Usergrid query filtering a collection: `select * where price < 10`. */
  ql?: string;
  /** Resume after this `seq` (from an earlier event). */
  since?: number;
  /** Also return the current result page, taken at exactly the subscription's start. */
  snapshot?: boolean;
  /** Queue consumer id: each message goes to one subscriber of that id, in a transaction. */
  consumer?: string;
  /** Queue transaction timeout, ms. */
  timeout?: number;
}

/** An entity as the API returns it: its own properties plus these. */
export interface Entity {
  uuid: string;
  type: string;
  created: number;
  modified: number;
  name?: string;
  metadata?: { path: string; collections?: Record<string, string> };
  [property: string]: any;
}

/** A response body: the Usergrid envelope, or for token and queue calls their own JSON. */
export interface ApiResponse {
  action?: string;
  application?: string;
  params?: Record<string, string[]>;
  path?: string;
  uri?: string;
  entities?: Entity[];
  list?: any[];
  data?: any;
  count?: number;
  cursor?: string;
  timestamp?: number;
  duration?: number;
  organization?: string;
  applicationName?: string;
  [field: string]: any;
}

/** What a subscription callback receives. */
export type SubscriptionEvent =
  | { type: "create" | "update" | "delete" | "enter" | "leave"; seq: number; path: string; entity: Entity }
  | { type: "resync"; path: string }
  | { type: "revoked"; path: string; reason: string };

/** Connection states reported to `client.on("state", …)`. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** A failed request: `status` is the HTTP status (0 when no response came), `code` the
 * Usergrid `error` (`entity_not_found`, …) or a client code (`disconnected`, `timeout`). */
export interface GridsocketError extends Error {
  status: number;
  code: string;
  body?: Record<string, any>;
}
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(handle: &JsValue);
    #[wasm_bindgen(typescript_type = "ConnectOptions")]
    pub type ConnectOptions;
    #[wasm_bindgen(typescript_type = "SubscribeOptions")]
    pub type SubscribeOptions;
    #[wasm_bindgen(typescript_type = "(event: SubscriptionEvent) => void")]
    pub type EventCallback;
}

/// A JS function to call once the Rust borrow is over, with its argument.
type Deferred = (Function, JsValue);

/// The open socket and its listeners; dropping it removes them and closes the socket.
struct Socket {
    ws: WebSocket,
    _onopen: Closure<dyn FnMut()>,
    _onmessage: Closure<dyn FnMut(MessageEvent)>,
    _onclose: Closure<dyn FnMut(CloseEvent)>,
    _onerror: Closure<dyn FnMut()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

struct SubEntry {
    path: String,
    callback: Function,
    confirm: Option<(Function, Function)>,
}

struct Inner {
    session: ClientSession,
    socket: Option<Socket>,
    timer: Option<(JsValue, Closure<dyn FnMut()>)>,
    requests: HashMap<RequestId, (Function, Function)>,
    subs: HashMap<SubId, SubEntry>,
    listeners: HashMap<String, Vec<Function>>,
    connect: Option<(Function, Function)>,
    /// Callbacks queued by an input handler, run with the drive's own.
    deferred: Vec<Deferred>,
    me: Weak<RefCell<Inner>>,
}

fn to_js(value: &Value) -> JsValue {
    JSON::parse(&value.to_string()).unwrap_or(JsValue::NULL)
}

fn from_js(value: &JsValue) -> Result<Option<Value>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let text: String = JSON::stringify(value)?.into();
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| js_sys::Error::new(&format!("not JSON-serializable: {e}")).into())
}

fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

fn run(calls: Vec<Deferred>) {
    for (f, arg) in calls {
        if let Err(e) = f.call1(&JsValue::NULL, &arg) {
            web_sys_log(&e);
        }
    }
}

fn web_sys_log(e: &JsValue) {
    // A throwing app callback must not break the client; report it where developers look.
    let console = Reflect::get(&js_sys::global(), &"console".into()).ok();
    if let Some(log) = console
        .as_ref()
        .and_then(|c| Reflect::get(c, &"error".into()).ok())
        .and_then(|f| f.dyn_into::<Function>().ok())
    {
        let _ = log.call2(
            console.as_ref().unwrap_or(&JsValue::NULL),
            &"gridsocket: a callback threw".into(),
            e,
        );
    }
}

impl Inner {
    /// Sends what the session queued, acts on its events, re-arms the timer. Returns the JS
    /// callbacks to run once the borrow ends.
    fn drive(&mut self) -> Vec<Deferred> {
        let mut calls = std::mem::take(&mut self.deferred);
        loop {
            let mut progressed = false;
            while let Some(frame) = self.session.poll_transmit() {
                progressed = true;
                self.emit_frame("out", &frame, &mut calls);
                if let Some(s) = &self.socket
                    && s.ws.send_with_str(&frame).is_err()
                {
                    // The socket is closing; its close event will fail what is in flight.
                }
            }
            while let Some(event) = self.session.poll_event() {
                progressed = true;
                self.on_event(event, &mut calls);
            }
            if !progressed {
                break;
            }
        }
        self.arm_timer();
        calls
    }

    fn on_event(&mut self, event: ClientEvent, calls: &mut Vec<Deferred>) {
        match event {
            ClientEvent::Connect { url } => self.open_socket(&url),
            ClientEvent::StateChanged(state) => {
                self.emit("state", JsValue::from_str(state.as_str()), calls);
                match state {
                    ConnectionState::Open => {
                        if let Some((resolve, _)) = self.connect.take() {
                            calls.push((resolve, JsValue::UNDEFINED));
                        }
                    }
                    ConnectionState::Closed => {
                        self.socket = None;
                        if let Some((_, reject)) = self.connect.take() {
                            let err = client_error("closed", "the connection was refused for good");
                            calls.push((reject, err));
                        }
                    }
                    _ => {}
                }
            }
            ClientEvent::Response { id, status, body } => {
                if let Some((resolve, reject)) = self.requests.remove(&id) {
                    if (200..300).contains(&status) {
                        calls.push((resolve, to_js(&body)));
                    } else {
                        calls.push((reject, response_error(status, &body)));
                    }
                }
            }
            ClientEvent::RequestFailed { id, error } => {
                if let Some((_, reject)) = self.requests.remove(&id) {
                    calls.push((reject, client_error(error.code(), &error.to_string())));
                }
            }
            ClientEvent::Subscribed {
                sub, seq, snapshot, ..
            } => {
                if let Some(entry) = self.subs.get_mut(&sub)
                    && let Some((resolve, _)) = entry.confirm.take()
                {
                    let handle = Subscription {
                        client: self.me.clone(),
                        sub,
                        path: entry.path.clone(),
                        seq,
                        snapshot: snapshot.as_ref().map(to_js).unwrap_or(JsValue::UNDEFINED),
                    };
                    calls.push((resolve, handle.into()));
                }
            }
            ClientEvent::SubscribeFailed { sub, status, body } => {
                if let Some(entry) = self.subs.remove(&sub) {
                    let err = response_error(status, &body);
                    match entry.confirm {
                        Some((_, reject)) => calls.push((reject, err)),
                        None => self.emit("error", err, calls),
                    }
                }
            }
            ClientEvent::Event {
                sub,
                kind,
                seq,
                entity,
            } => {
                if let Some(entry) = self.subs.get(&sub) {
                    let e = object(&[
                        ("type", JsValue::from_str(&kind)),
                        ("seq", JsValue::from_f64(seq as f64)),
                        ("path", JsValue::from_str(&entry.path)),
                        ("entity", to_js(&entity)),
                    ]);
                    calls.push((entry.callback.clone(), e));
                }
            }
            ClientEvent::ResyncRequired { sub } => {
                if let Some(entry) = self.subs.get(&sub) {
                    let e = object(&[
                        ("type", JsValue::from_str("resync")),
                        ("path", JsValue::from_str(&entry.path)),
                    ]);
                    calls.push((entry.callback.clone(), e));
                }
            }
            ClientEvent::Revoked { sub, reason } => {
                if let Some(entry) = self.subs.remove(&sub) {
                    let e = object(&[
                        ("type", JsValue::from_str("revoked")),
                        ("path", JsValue::from_str(&entry.path)),
                        ("reason", JsValue::from_str(&reason)),
                    ]);
                    calls.push((entry.callback, e));
                }
            }
            ClientEvent::ServerError { status, body } => {
                let err = response_error(status, &body);
                if let Some((_, reject)) = self.connect.take() {
                    // Refused at connect: give up rather than retry in the background.
                    calls.push((reject, err.clone()));
                    self.session.close(Instant::now());
                }
                self.emit("error", err, calls);
            }
            ClientEvent::AuthRequired => self.emit("auth", JsValue::UNDEFINED, calls),
        }
    }

    /// Reports a raw frame to `frame` listeners (the demo's developer panel); costs nothing
    /// when there are none.
    fn emit_frame(&self, direction: &str, text: &str, calls: &mut Vec<Deferred>) {
        if self.listeners.get("frame").is_some_and(|l| !l.is_empty()) {
            let arg = object(&[
                ("direction", JsValue::from_str(direction)),
                ("text", JsValue::from_str(text)),
            ]);
            self.emit("frame", arg, calls);
        }
    }

    fn emit(&self, name: &str, arg: JsValue, calls: &mut Vec<Deferred>) {
        for f in self.listeners.get(name).into_iter().flatten() {
            calls.push((f.clone(), arg.clone()));
        }
    }

    fn open_socket(&mut self, url: &str) {
        self.socket = None;
        let me = self.me.clone();
        let ws = match WebSocket::new(url) {
            Ok(ws) => ws,
            Err(_) => {
                // A URL the platform refuses: treat it like a failed connection attempt.
                self.session.handle_close(Instant::now(), None);
                return;
            }
        };
        let weak = me.clone();
        let onopen = Closure::<dyn FnMut()>::new(move || {
            with(&weak, |inner| inner.session.handle_open(Instant::now()));
        });
        let weak = me.clone();
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(text) = e.data().as_string() {
                with(&weak, |inner| {
                    let mut frames = Vec::new();
                    inner.emit_frame("in", &text, &mut frames);
                    inner.deferred.extend(frames);
                    // A frame the core cannot read is a server bug; it is skipped.
                    let _ = inner.session.handle_frame(Instant::now(), &text);
                });
            }
        });
        let weak = me.clone();
        let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            let code = e.code();
            with(&weak, |inner| {
                inner.socket = None;
                inner.session.handle_close(Instant::now(), Some(code));
            });
        });
        let onerror = Closure::<dyn FnMut()>::new(move || {
            // The close event that follows reports the failure.
        });
        ws.set_onopen(Some(onopen.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        ws.set_onclose(Some(onclose.as_ref().unchecked_ref()));
        ws.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        self.socket = Some(Socket {
            ws,
            _onopen: onopen,
            _onmessage: onmessage,
            _onclose: onclose,
            _onerror: onerror,
        });
    }

    fn arm_timer(&mut self) {
        if let Some((handle, _)) = self.timer.take() {
            clear_timeout(&handle);
        }
        let Some(at) = self.session.poll_timeout() else {
            return;
        };
        let ms = at
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let weak = self.me.clone();
        let cb = Closure::<dyn FnMut()>::new(move || {
            with(&weak, |inner| inner.session.handle_timeout(Instant::now()));
        });
        let handle = set_timeout(cb.as_ref().unchecked_ref(), ms.max(0) + 1);
        self.timer = Some((handle, cb));
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A timer must not fire into a client that is gone.
        if let Some((handle, _)) = self.timer.take() {
            clear_timeout(&handle);
        }
    }
}

/// Runs `f` on the client (if it still exists), drives the session, then runs the callbacks.
fn with(weak: &Weak<RefCell<Inner>>, f: impl FnOnce(&mut Inner)) {
    let Some(rc) = weak.upgrade() else {
        return;
    };
    let calls = match rc.try_borrow_mut() {
        Ok(mut inner) => {
            f(&mut inner);
            inner.drive()
        }
        // Re-entered from a callback still running: cannot happen, as callbacks run after the
        // borrow ends; skip rather than panic.
        Err(_) => return,
    };
    run(calls);
}

/// A gridsocket connection: the Usergrid API over one WebSocket, plus subscriptions that
/// survive reconnects.
///
/// @example
/// ```ts
/// const client = await Client.connect("ws://localhost:8088/demo/chatapp", { accessToken });
/// const me = await client.get("/users/me");
/// const sub = await client.subscribe("/users/me/feed", {}, (e) => console.log(e.type, e.entity));
/// ```
#[wasm_bindgen]
pub struct Client {
    inner: Rc<RefCell<Inner>>,
}

fn random_seed() -> u64 {
    (js_sys::Math::random() * (u64::MAX as f64)) as u64
}

#[wasm_bindgen]
impl Client {
    /// Connects to `url` (`ws://host:8088/{org}/{app}`); resolves once the socket is open, and
    /// rejects if the server refuses it (bad token: `auth_bad_access_token`, unknown app).
    /// Later drops reconnect by themselves.
    #[wasm_bindgen(unchecked_return_type = "Promise<Client>")]
    pub fn connect(url: &str, options: Option<ConnectOptions>) -> Promise {
        let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
        let token = Reflect::get(&options, &"accessToken".into())
            .ok()
            .and_then(|v| v.as_string());
        let mut config = ClientConfig::default();
        if let Some(ms) = Reflect::get(&options, &"requestTimeoutMs".into())
            .ok()
            .and_then(|v| v.as_f64())
        {
            config.request_timeout = Duration::from_millis(ms.max(1.0) as u64);
        }
        let session = ClientSession::new(Instant::now(), config, url, token, random_seed());
        let inner = Rc::new_cyclic(|me| {
            RefCell::new(Inner {
                session,
                socket: None,
                timer: None,
                requests: HashMap::new(),
                subs: HashMap::new(),
                listeners: HashMap::new(),
                connect: None,
                deferred: Vec::new(),
                me: me.clone(),
            })
        });
        let client_value: JsValue = Client {
            inner: inner.clone(),
        }
        .into();
        let mut ready = None;
        let promise = Promise::new(&mut |resolve, reject| ready = Some((resolve, reject)));
        let Some((resolve, reject)) = ready else {
            return promise;
        };
        // Resolve with the client object itself.
        let resolve_client = Closure::once_into_js(move |_: JsValue| {
            let _ = resolve.call1(&JsValue::NULL, &client_value);
        });
        inner.borrow_mut().connect = Some((resolve_client.unchecked_into(), reject));
        with(&Rc::downgrade(&inner), |_| {});
        promise
    }

    /// `GET path` with optional query params (`{ql, limit, cursor}`); resolves to the REST body.
    #[wasm_bindgen(unchecked_return_type = "Promise<ApiResponse>")]
    pub fn get(&self, path: &str, params: JsValue) -> Promise {
        self.call("GET", path, params, JsValue::UNDEFINED)
    }

    /// `POST path` with a JSON body.
    #[wasm_bindgen(unchecked_return_type = "Promise<ApiResponse>")]
    pub fn post(&self, path: &str, body: JsValue) -> Promise {
        self.call("POST", path, JsValue::UNDEFINED, body)
    }

    /// `PUT path` with a JSON body (merges properties).
    #[wasm_bindgen(unchecked_return_type = "Promise<ApiResponse>")]
    pub fn put(&self, path: &str, body: JsValue) -> Promise {
        self.call("PUT", path, JsValue::UNDEFINED, body)
    }

    /// `DELETE path`.
    #[wasm_bindgen(unchecked_return_type = "Promise<ApiResponse>")]
    pub fn delete(&self, path: &str) -> Promise {
        self.call("DELETE", path, JsValue::UNDEFINED, JsValue::UNDEFINED)
    }

    /// Any request: `{method, path, params?, body?}`.
    #[wasm_bindgen(unchecked_return_type = "Promise<ApiResponse>")]
    pub fn request(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "{ method: string; path: string; params?: Record<string, any>; body?: any }"
        )]
        req: JsValue,
    ) -> Promise {
        let get = |k: &str| Reflect::get(&req, &k.into()).unwrap_or(JsValue::UNDEFINED);
        let method = get("method").as_string().unwrap_or_default().to_uppercase();
        let path = get("path").as_string().unwrap_or_default();
        self.call(&method, &path, get("params"), get("body"))
    }

    fn call(&self, method: &str, path: &str, params: JsValue, body: JsValue) -> Promise {
        let (params, body) = match (from_js(&params), from_js(&body)) {
            (Ok(p), Ok(b)) => (p, b),
            (Err(e), _) | (_, Err(e)) => return Promise::reject(&e),
        };
        let mut slot = None;
        let promise = Promise::new(&mut |resolve, reject| slot = Some((resolve, reject)));
        let method = method.to_owned();
        let path = path.to_owned();
        with(&Rc::downgrade(&self.inner), move |inner| {
            let id = inner
                .session
                .request(Instant::now(), &method, &path, params, body);
            if let Some(s) = slot {
                inner.requests.insert(id, s);
            }
        });
        promise
    }

    /// Subscribes to a path (an entity, a collection, a feed, a queue); `callback` gets each
    /// event. Resolves to a {@link Subscription} once the server confirms. The subscription
    /// survives reconnects: it resumes where it was, and the callback sees every event once,
    /// in order (or a `resync` event when the server could not replay the gap).
    #[wasm_bindgen(unchecked_return_type = "Promise<Subscription>")]
    pub fn subscribe(
        &self,
        path: &str,
        options: Option<SubscribeOptions>,
        callback: EventCallback,
    ) -> Promise {
        let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
        let callback: JsValue = callback.into();
        let Ok(callback) = callback.dyn_into::<Function>() else {
            return Promise::reject(&client_error(
                "invalid_argument",
                "the callback must be a function",
            ));
        };
        let since = Reflect::get(&options, &"since".into())
            .ok()
            .and_then(|v| v.as_f64())
            .map(|v| v as u64);
        let mut params = serde_json::Map::new();
        if let Ok(Some(Value::Object(map))) = from_js(&options) {
            for (k, v) in map {
                if k != "since" {
                    params.insert(k, v);
                }
            }
        }
        let params = (!params.is_empty()).then_some(Value::Object(params));
        let mut slot = None;
        let promise = Promise::new(&mut |resolve, reject| slot = Some((resolve, reject)));
        let path = path.to_owned();
        with(&Rc::downgrade(&self.inner), move |inner| {
            let sub = inner
                .session
                .subscribe(Instant::now(), &path, params, since);
            inner.subs.insert(
                sub,
                SubEntry {
                    path,
                    callback,
                    confirm: slot,
                },
            );
        });
        promise
    }

    /// Listens to `state` (connecting, open, reconnecting, closed), `error` (server errors
    /// about the connection), `auth` (the token must be refreshed with
    /// {@link Client.setAccessToken}) or `frame` (every raw frame, `{direction, text}`, for
    /// developer tools). Returns a function that removes the listener.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "\"state\" | \"error\" | \"auth\" | \"frame\"")]
        event: &str,
        #[wasm_bindgen(unchecked_param_type = "(arg: any) => void")] listener: Function,
    ) -> JsValue {
        self.inner
            .borrow_mut()
            .listeners
            .entry(event.to_owned())
            .or_default()
            .push(listener.clone());
        let weak = Rc::downgrade(&self.inner);
        let event = event.to_owned();
        Closure::once_into_js(move || {
            if let Some(rc) = weak.upgrade()
                && let Ok(mut inner) = rc.try_borrow_mut()
                && let Some(list) = inner.listeners.get_mut(&event)
            {
                list.retain(|f| f != &listener);
            }
        })
    }

    /// The connection state: `connecting`, `open`, `reconnecting` or `closed`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.inner.borrow().session.state().as_str().to_owned()
    }

    /// Replaces the access token: sent at once (`AUTH`) and used by every reconnect.
    #[wasm_bindgen(js_name = setAccessToken)]
    pub fn set_access_token(&self, token: Option<String>) {
        with(&Rc::downgrade(&self.inner), move |inner| {
            inner.session.set_access_token(Instant::now(), token)
        });
    }

    /// Closes the client: the socket closes, requests in flight reject with `closed`.
    pub fn close(&self) {
        with(&Rc::downgrade(&self.inner), |inner| {
            inner.session.close(Instant::now());
            inner.socket = None;
        });
        let mut inner = self.inner.borrow_mut();
        if let Some((handle, _)) = inner.timer.take() {
            clear_timeout(&handle);
        }
    }

    /// Drops the socket as if the network failed (for tests of reconnect and resume).
    #[wasm_bindgen(js_name = dropConnectionForTesting)]
    pub fn drop_connection_for_testing(&self) {
        with(&Rc::downgrade(&self.inner), |inner| {
            inner.socket = None;
            inner.session.handle_close(Instant::now(), None);
        });
    }
}

/// One subscription of a {@link Client}.
#[wasm_bindgen]
pub struct Subscription {
    client: Weak<RefCell<Inner>>,
    sub: SubId,
    path: String,
    seq: u64,
    snapshot: JsValue,
}

#[wasm_bindgen]
impl Subscription {
    /// The subscribed path.
    #[wasm_bindgen(getter)]
    pub fn path(&self) -> String {
        self.path.clone()
    }

    /// The log position the subscription started after.
    #[wasm_bindgen(getter)]
    pub fn seq(&self) -> f64 {
        self.seq as f64
    }

    /// The `seq` of the last event delivered (for resuming elsewhere).
    #[wasm_bindgen(getter, js_name = lastSeq)]
    pub fn last_seq(&self) -> Option<f64> {
        let rc = self.client.upgrade()?;
        let inner = rc.try_borrow().ok()?;
        inner.session.last_seq(self.sub).map(|s| s as f64)
    }

    /// The snapshot page, when subscribed with `snapshot: true`.
    #[wasm_bindgen(getter, unchecked_return_type = "ApiResponse | undefined")]
    pub fn snapshot(&self) -> JsValue {
        self.snapshot.clone()
    }

    /// Ends the subscription; the callback gets nothing more.
    pub fn unsubscribe(&self) {
        let sub = self.sub;
        with(&self.client, move |inner| {
            inner.subs.remove(&sub);
            inner.session.unsubscribe(Instant::now(), sub);
        });
    }
}
