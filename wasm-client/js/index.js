// The gridsocket package: the Usergrid API and live subscriptions over one WebSocket.
//
// This file is the host of the protocol engine, a WebAssembly `Session` built from
// gridsocket-core's ClientSession (wasm-client/src/lib.rs). The engine decides everything about
// the protocol: what to send, what waits for the connection, what times out, when to
// reconnect, what a subscription resumes from, which token to try. This file only does what a
// platform must: it owns the WebSocket (the platform's, or one passed in), one timer, the
// promises, the listeners, and calls the app's getToken. After every input it drains the
// engine: each frame to send, each event to act on, then arms the timer.
//
// Nothing here runs on import (no side effects): the engine is loaded by the first
// Client.connect(). It is embedded in wasm.js, so that bundlers, Node and plain
// <script type="module"> pages load it without any configuration.
import init, { Session } from "./gridsocket.js";
import packed from "./wasm.js";

let loading;

/** Loads the engine once: the embedded wasm is gunzipped and compiled. */
function load() {
  loading ??= (async () => {
    const zipped = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
    const stream = new Blob([zipped]).stream().pipeThrough(new DecompressionStream("gzip"));
    await init({ module_or_path: await new Response(stream).arrayBuffer() });
  })().catch((e) => {
    loading = undefined;
    throw e;
  });
  return loading;
}

const MESSAGES = {
  closed: "the client is closed",
  too_many_pending: "too many requests are waiting for answers",
  frame_too_large: "the request is larger than the server takes (its max_frame_bytes): it was not sent",
  user_changed: "the server greeted the connection as another user: a client stays one user; open a new client for another",
  bad_server_frame: "the server sent a frame that is not part of the protocol",
  disconnected:
    "the connection is down (or dropped before the answer): a broadcast is for whoever watches now, so it is never held or sent again",
  not_present: "the presence was left: join again with client.presence()",
  already_present: "this client is present on that path already: change its state with that presence's update()",
};

/**
 * Every error the package raises: a request's REST error (with the HTTP `status` and the
 * Usergrid `code`), or a client error (`status` 0).
 */
export class GridsocketError extends Error {
  constructor(code, message, status = 0, body = undefined) {
    super(message);
    this.name = "GridsocketError";
    this.code = code;
    this.status = status;
    this.body = body;
  }
}

function clientError(code, ms) {
  const message = code === "timeout" ? `no answer within ${ms} ms` : (MESSAGES[code] ?? code);
  return new GridsocketError(code, message, 0);
}

function serverError(status, body) {
  const code = typeof body?.error === "string" ? body.error : "server_error";
  const message = body?.error_description ?? `request failed with status ${status}`;
  return new GridsocketError(code, message, status, body);
}

function invalid(message) {
  return new GridsocketError("invalid_argument", message, 0);
}

/** A value as an error message shows it. */
function shown(value) {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/** The longest timer a platform arms (setTimeout's limit), in ms. */
const MAX_TIMER_MS = 0x7fffffff;

/** An options argument: absent (`{}`), or an object. */
function optionsObject(options, what) {
  if (options == null) return {};
  if (typeof options !== "object" || Array.isArray(options)) {
    throw invalid(`${what} must be an object, got ${shown(options)}`);
  }
  return options;
}

/**
 * A duration option, in ms: 0 when absent (the engine's default), else a positive number of
 * ms a timer can wait. The engine adds it to the clock, so a huge one must never reach it.
 */
function msOption(options, name) {
  const value = options?.[name];
  if (value == null) return 0;
  if (typeof value !== "number" || !(value > 0 && value <= MAX_TIMER_MS)) {
    throw invalid(`${name} must be a number of ms from 1 to ${MAX_TIMER_MS}, got ${shown(value)}`);
  }
  return value;
}

/** A yes-or-no option: false when absent. */
function flagOption(options, name) {
  const value = options?.[name];
  if (value == null) return false;
  if (typeof value !== "boolean") throw invalid(`${name} must be true or false, got ${shown(value)}`);
  return value;
}

/** A whole-number option from `min` to `max`, or undefined when absent. */
function wholeOption(options, name, min, max) {
  const value = options?.[name];
  if (value == null) return undefined;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(`${name} must be a whole number from ${min} to ${max}, got ${shown(value)}`);
  }
  return value;
}

/** A string option, or undefined when absent. */
function stringOption(options, name) {
  const value = options?.[name];
  if (value != null && typeof value !== "string") {
    throw invalid(`${name} must be a string, got ${shown(value)}`);
  }
  return value ?? undefined;
}

/** A function option, or undefined when absent. */
function functionOption(options, name) {
  const value = options?.[name];
  if (value != null && typeof value !== "function") {
    throw invalid(`${name} must be a function, got ${shown(value)}`);
  }
  return value ?? undefined;
}

/** JSON text of `value`, or an `invalid_argument` error thrown. */
function json(value, what) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    throw invalid(`${what} is not JSON-serializable: ${e.message}`);
  }
  // A function, a symbol or undefined has no JSON at all.
  if (typeof text !== "string") throw invalid(`${what} is not JSON-serializable: ${typeof value}`);
  return text;
}

function take(map, key) {
  const value = map.get(key);
  map.delete(key);
  return value;
}

function call(f, arg) {
  try {
    f(arg);
  } catch (e) {
    // A throwing app callback must not break the client; report it where developers look.
    console.error("gridsocket: a callback threw", e);
  }
}

function noop() {}

const INTERNAL = Symbol("gridsocket");

/** Most events an `events()` iterator holds for a slow reader before it says `resync`. */
const MAX_BUFFERED = 10000;

/** Adds `listener` to the set of `event` in `listeners` (a Map); returns its remover. */
function listen(listeners, event, listener) {
  if (typeof listener !== "function") throw invalid("the listener must be a function");
  let set = listeners.get(event);
  if (!set) listeners.set(event, (set = new Set()));
  set.add(listener);
  return () => {
    set.delete(listener);
    if (set.size === 0 && listeners.get(event) === set) listeners.delete(event);
  };
}

function emit(listeners, event, arg) {
  const set = listeners.get(event);
  if (set) for (const f of [...set]) call(f, arg);
}

/** A plain JSON object, as a presence state must be. */
function stateJson(state) {
  if (state === null || typeof state !== "object" || Array.isArray(state)) {
    throw invalid("a presence state must be a JSON object: { status: \"here\" }");
  }
  return json(state, "the state");
}

/** One subscription of a {@link Client}. */
export class Subscription {
  #lastSeq;
  #unsubscribe;
  #listeners;

  constructor(key, lastSeq, unsubscribe, path, seq, snapshot, listeners) {
    if (key !== INTERNAL) throw new TypeError("subscriptions come from client.subscribe()");
    this.#lastSeq = lastSeq;
    this.#unsubscribe = unsubscribe;
    this.#listeners = listeners;
    this.path = path;
    this.seq = seq;
    this.snapshot = snapshot;
  }

  /** The `seq` of the last event delivered, if any. */
  get lastSeq() {
    return this.#lastSeq();
  }

  /** `broadcast`: the messages sent to this path (client.broadcast). Returns the remover. */
  on(event, listener) {
    if (event !== "broadcast") throw invalid(`a subscription has no "${event}" event`);
    return listen(this.#listeners, event, listener);
  }

  /** Ends the subscription; the callback gets nothing more. */
  unsubscribe() {
    this.#unsubscribe();
  }
}

const PRESENCE_EVENTS = new Set(["join", "leave", "update", "sync", "broadcast", "ended"]);

/**
 * Who is present on a path, kept equal to the server's: a {@link Client.presence}. After a
 * reconnect it joins again with its last state and takes the server's snapshot; whoever came,
 * went or changed meanwhile is reported as the `join`, `leave` and `update` they are, then
 * `sync`.
 */
export class Presence {
  #record;
  #update;
  #leave;

  constructor(key, record, update, leave) {
    if (key !== INTERNAL) throw new TypeError("presences come from client.presence()");
    this.#record = record;
    this.#update = update;
    this.#leave = leave;
  }

  /** The presence's name: the path in lower case, `/users/me` as the user's uuid. */
  get path() {
    return this.#record.path;
  }

  /** Who is present, by user uuid (this client's user included); a new Map on every change. */
  get state() {
    return this.#record.users;
  }

  /** This client's state, as the server last took it. */
  get myState() {
    return JSON.parse(this.#record.state);
  }

  /** False once left, or ended (the client closed, or a rejoin was refused). */
  get active() {
    return this.#record.active;
  }

  /** `join`, `leave`, `update`, `sync`, `broadcast` or `ended`. Returns the remover. */
  on(event, listener) {
    if (!PRESENCE_EVENTS.has(event)) throw invalid(`a presence has no "${event}" event`);
    return listen(this.#record.listeners, event, listener);
  }

  /** Changes this client's state; resolves once the server has it. */
  update(state, options) {
    try {
      return this.#update(stateJson(state), msOption(optionsObject(options, "options"), "timeoutMs"));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Leaves: nothing more is reported, and `state` is empty. */
  leave(options) {
    try {
      return this.#leave(msOption(optionsObject(options, "options"), "timeoutMs"));
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

/** A gridsocket connection. Make one with {@link Client.connect}. */
export class Client {
  #session;
  #WebSocket;
  #ws = null;
  #timer = null;
  #driving = false;
  #requests = new Map();
  #subs = new Map();
  #presences = new Map();
  #listeners = new Map();
  #getToken;
  #refreshing = false;
  #opening;
  #opened;

  /** Connects; resolves once the server greets the socket. See index.d.ts and README.md. */
  static async connect(url, options = {}) {
    if (typeof url !== "string" || !/^(wss?|https?):\/\/[^/]/i.test(url)) {
      throw invalid("the URL must be a ws:// or wss:// URL: ws://host:8088/{org}/{app}");
    }
    // Checked before anything else happens; the engine takes them as they are.
    options = optionsObject(options, "the options");
    msOption(options, "requestTimeoutMs");
    msOption(options, "connectTimeoutMs");
    functionOption(options, "getToken");
    const WebSocketImpl = functionOption(options, "WebSocket") ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== "function") {
      throw new GridsocketError(
        "no_websocket",
        "no WebSocket on this platform: on Node 20 run with --experimental-websocket, or pass " +
          "one: Client.connect(url, { WebSocket }) with the ws package",
      );
    }
    let token = options.accessToken;
    if (token == null && options.getToken) {
      try {
        token = await options.getToken({ reason: "initial" });
      } catch (e) {
        throw new GridsocketError("get_token_failed", `getToken() failed: ${e?.message ?? e}`);
      }
    }
    if (token != null && (typeof token !== "string" || token === "")) {
      throw invalid("the access token must be a non-empty string");
    }
    await load();
    return new Client(INTERNAL, url, token, options, WebSocketImpl).#opened;
  }

  constructor(key, url, token, options, WebSocketImpl) {
    if (key !== INTERNAL) throw new TypeError("clients come from Client.connect()");
    this.#WebSocket = WebSocketImpl;
    this.#getToken = options.getToken;
    const seed = new Uint32Array(4);
    if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(seed);
    else for (let i = 0; i < 4; i++) seed[i] = Math.random() * 0x100000000;
    this.#session = new Session(
      url,
      token ?? undefined,
      options.requestTimeoutMs ?? 0,
      options.connectTimeoutMs ?? 0,
      seed,
    );
    this.#opened = new Promise((resolve, reject) => {
      this.#opening = { resolve: () => resolve(this), reject, error: null };
    });
    this.#drive();
  }

  /** `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this.#session.state();
  }

  get(path, params, options) {
    return this.#request("GET", path, params, undefined, options);
  }

  post(path, body, options) {
    return this.#request("POST", path, undefined, body, options);
  }

  put(path, body, options) {
    return this.#request("PUT", path, undefined, body, options);
  }

  delete(path, options) {
    return this.#request("DELETE", path, undefined, undefined, options);
  }

  request(req) {
    if (req === null || typeof req !== "object") {
      return Promise.reject(invalid("the request must be an object: { method, path }"));
    }
    const method = typeof req?.method === "string" ? req.method.toUpperCase() : "";
    if (!["GET", "POST", "PUT", "DELETE"].includes(method)) {
      return Promise.reject(invalid("method must be GET, POST, PUT or DELETE"));
    }
    return this.#request(method, req.path, req.params, req.body, req);
  }

  #request(method, path, params, body, options) {
    try {
      if (typeof path !== "string") throw invalid("the path must be a string: /users/me");
      if (params != null && (typeof params !== "object" || Array.isArray(params))) {
        throw invalid("params must be an object: { ql, limit, cursor }");
      }
      const p = params == null ? undefined : json(params, "params");
      const b = body === undefined ? undefined : json(body, "the body");
      const ms = msOption(optionsObject(options, "options"), "timeoutMs");
      return new Promise((resolve, reject) => {
        const id = this.#session.request(method, path, p, b, ms);
        this.#requests.set(id, { resolve, reject });
        this.#drive();
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  subscribe(path, options, callback) {
    if (typeof options === "function") return this.#subscribe(path, {}, options, null);
    return this.#subscribe(path, options ?? {}, callback, null);
  }

  #subscribe(path, options, callback, end) {
    try {
      if (typeof path !== "string") throw invalid("the path must be a string: /books");
      if (typeof callback !== "function") throw invalid("the callback must be a function");
      const { since, snapshot, ...params } = optionsObject(options, "options");
      const from = wholeOption({ since }, "since", 0, Number.MAX_SAFE_INTEGER) ?? -1;
      const withSnapshot = flagOption({ snapshot }, "snapshot");
      stringOption(params, "ql");
      stringOption(params, "cursor");
      stringOption(params, "consumer");
      wholeOption(params, "limit", 1, Number.MAX_SAFE_INTEGER);
      wholeOption(params, "timeout", 1, 86_400_000);
      const text = Object.keys(params).length ? json(params, "options") : undefined;
      return new Promise((resolve, reject) => {
        const sub = this.#session.subscribe(path, text, withSnapshot, from);
        const listeners = new Map();
        this.#subs.set(sub, { path, callback, confirm: { resolve, reject }, end, listeners });
        this.#drive();
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  events(path, options = {}) {
    const queue = [];
    let waiter = null;
    let done = false;
    let failure = null;
    const wake = () => {
      const w = waiter;
      waiter = null;
      w?.();
    };
    const end = (error) => {
      done = true;
      failure = error;
      wake();
    };
    const push = (event) => {
      if (queue.length >= MAX_BUFFERED) {
        // The reader fell too far behind: drop what is buffered and tell it to refetch.
        queue.length = 0;
        queue.push({ type: "resync", path });
      } else {
        queue.push(event);
      }
      wake();
    };
    const started = this.#subscribe(path, options, push, end);
    started.catch(noop); // surfaced by next()
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      async next() {
        await started;
        while (queue.length === 0 && !done) await new Promise((resolve) => (waiter = resolve));
        if (queue.length > 0) return { value: queue.shift(), done: false };
        if (failure) throw failure;
        return { value: undefined, done: true };
      },
      async return() {
        done = true;
        wake();
        (await started.catch(() => null))?.unsubscribe();
        return { value: undefined, done: true };
      },
    };
  }

  presence(path, state = {}) {
    try {
      if (typeof path !== "string") throw invalid("the path must be a string: /groups/lobby");
      const text = stateJson(state);
      return new Promise((resolve, reject) => {
        const id = this.#session.presence(path, text);
        this.#presences.set(id, {
          id,
          path,
          state: text,
          users: new Map(),
          listeners: new Map(),
          active: true,
          confirm: { resolve, reject },
        });
        this.#drive();
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  broadcast(path, body, options) {
    try {
      if (typeof path !== "string") throw invalid("the path must be a string: /groups/lobby");
      options = optionsObject(options, "options");
      const echo = flagOption(options, "echo");
      const ms = msOption(options, "timeoutMs");
      if (body === undefined || body === null) {
        throw invalid("a broadcast body must be a JSON value other than null");
      }
      const text = json(body, "the body");
      // NaN and Infinity are null in JSON.
      if (text === "null") throw invalid("a broadcast body must be a JSON value other than null");
      return new Promise((resolve, reject) => {
        const id = this.#session.broadcast(path, text, echo, ms);
        this.#requests.set(id, { resolve, reject });
        this.#drive();
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A presence's handle, made when its first snapshot arrives. */
  #presenceHandle(record) {
    const call = (id) =>
      new Promise((resolve, reject) => {
        this.#requests.set(id, { resolve: () => resolve(), reject });
        this.#drive();
      });
    const update = (text, timeoutMs) => {
      const id = this.#session.presenceUpdate(record.id, text, timeoutMs);
      return call(id).then(() => {
        if (record.active) record.state = text;
      });
    };
    const leave = (timeoutMs) => {
      const id = this.#session.presenceLeave(record.id, timeoutMs);
      if (this.#presences.get(record.id) === record) this.#presences.delete(record.id);
      record.active = false;
      record.users = new Map();
      return call(id);
    };
    return new Presence(INTERNAL, record, update, leave);
  }

  /** A presence is over without being left: its copy is emptied and its listeners told (and
   * the client's `error` listeners, unless it closed or the server ended it on purpose). */
  #presenceEnded(record, error, revoked = false) {
    this.#presences.delete(record.id);
    record.active = false;
    if (record.confirm) return record.confirm.reject(error);
    record.users = new Map();
    emit(record.listeners, "ended", { type: "ended", path: record.path, error });
    if (error.code !== "closed" && !revoked) this.#emit("error", error);
  }

  ready(options) {
    let ms;
    try {
      ms = msOption(optionsObject(options, "options"), "timeoutMs");
    } catch (e) {
      return Promise.reject(e);
    }
    const state = this.state;
    if (state === "open") return Promise.resolve();
    if (state === "closed") return Promise.reject(clientError("closed"));
    return new Promise((resolve, reject) => {
      let timer;
      const finish = (error) => {
        off();
        clearTimeout(timer);
        error ? reject(error) : resolve();
      };
      const off = this.on("state", (s) => {
        if (s === "open") finish(null);
        else if (s === "closed") finish(clientError("closed"));
      });
      if (ms > 0) timer = setTimeout(() => finish(clientError("timeout", ms)), ms);
    });
  }

  on(event, listener) {
    return listen(this.#listeners, event, listener);
  }

  setAccessToken(token) {
    if (typeof token !== "string" || token === "") {
      return Promise.reject(invalid("the access token must be a non-empty string"));
    }
    return new Promise((resolve, reject) => {
      const id = this.#session.setAccessToken(token);
      this.#requests.set(id, { resolve: () => resolve(), reject });
      this.#drive();
    });
  }

  close() {
    this.#session.close();
    this.#drive();
  }

  /** Drops the socket as if the network failed (for tests of reconnect and resume). */
  dropConnectionForTesting() {
    if (!this.#ws) return;
    this.#detach();
    this.#session.closed(-1);
    this.#drive();
  }

  /** Sends what the engine queued, acts on its events, re-arms the timer. */
  #drive() {
    // Called again from a callback: the running drive picks up what that call queued.
    if (this.#driving) return;
    this.#driving = true;
    try {
      for (;;) {
        const frame = this.#session.transmit();
        if (frame !== undefined) {
          this.#emit("frame", { direction: "out", text: frame });
          try {
            this.#ws?.send(frame);
          } catch {
            // The socket is closing: its close event reports it, the engine sends again.
          }
          continue;
        }
        const event = this.#session.event();
        if (event === undefined) break;
        this.#handle(JSON.parse(event));
      }
    } finally {
      this.#driving = false;
    }
    clearTimeout(this.#timer);
    this.#timer = null;
    const ms = this.#session.wait();
    if (ms >= 0) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#session.timeout();
        this.#drive();
      }, Math.min(ms + 1, 0x7fffffff));
    }
  }

  #handle(e) {
    const sub = e.sub === undefined ? undefined : this.#subs.get(e.sub);
    switch (e.t) {
      case "connect":
        return this.#open(e.url);
      case "disconnect":
        return this.#detach();
      case "state": {
        const opening = this.#opening;
        if (opening && e.state === "open") {
          this.#opening = null;
          opening.resolve();
        } else if (opening && e.state === "closed") {
          this.#opening = null;
          opening.reject(opening.error ?? clientError("closed"));
        }
        return this.#emit("state", e.state);
      }
      case "response": {
        const r = take(this.#requests, e.id);
        if (e.status >= 200 && e.status < 300) r?.resolve(e.body);
        else r?.reject(serverError(e.status, e.body));
        return;
      }
      case "failed":
        return take(this.#requests, e.id)?.reject(clientError(e.code, e.ms));
      case "subscribed": {
        const confirm = sub?.confirm;
        if (!confirm) return;
        sub.confirm = null;
        const id = e.sub;
        const lastSeq = () => {
          const seq = this.#session.lastSeq(id);
          return seq < 0 ? undefined : seq;
        };
        const unsubscribe = () => {
          const s = take(this.#subs, id);
          if (!s) return;
          this.#session.unsubscribe(id);
          this.#drive();
          s.end?.(null);
        };
        return confirm.resolve(
          new Subscription(INTERNAL, lastSeq, unsubscribe, sub.path, e.seq, e.snapshot, sub.listeners),
        );
      }
      case "refused":
      case "ended": {
        if (!sub) return;
        this.#subs.delete(e.sub);
        const error = e.t === "refused" ? serverError(e.status, e.body) : clientError(e.code, e.ms);
        if (sub.confirm) return sub.confirm.reject(error);
        if (e.t === "ended") return sub.end?.(error); // closed: iterators throw it
        // A resume the server refused (access lost while away): the subscription is over.
        call(sub.callback, { type: "revoked", path: sub.path, reason: error.code });
        sub.end?.(null);
        return this.#emit("error", error);
      }
      case "event":
        if (sub) call(sub.callback, { type: e.type, seq: e.seq, path: sub.path, entity: e.entity });
        return;
      case "resync":
        if (sub) call(sub.callback, { type: "resync", path: sub.path });
        return;
      case "revoked":
        if (!sub) return;
        this.#subs.delete(e.sub);
        call(sub.callback, { type: "revoked", path: sub.path, reason: e.reason });
        sub.end?.(null);
        return;
      case "error":
      case "gaveup": {
        const error = e.t === "error" ? serverError(e.status, e.body) : clientError(e.code, e.ms);
        if (this.#opening) this.#opening.error ??= error;
        return this.#emit("error", error);
      }
      case "auth":
        this.#emit("auth", { reason: e.reason });
        return void this.#refresh(e.reason);
      case "presence": {
        const record = this.#presences.get(e.p);
        if (!record) return;
        const user = { uuid: e.uuid, username: e.username };
        const users = new Map(record.users);
        if (e.type === "leave") users.delete(e.uuid);
        else users.set(e.uuid, { ...user, connections: e.connections });
        record.users = users;
        if (record.confirm) return; // the first snapshot: reported by the handle's state
        return emit(record.listeners, e.type, {
          type: e.type,
          path: record.path,
          user,
          connections: e.connections,
        });
      }
      case "sync": {
        const record = this.#presences.get(e.p);
        if (!record) return;
        record.path = e.path;
        record.users = new Map(e.users.map((u) => [u.uuid, u]));
        const confirm = record.confirm;
        if (confirm) {
          record.confirm = null;
          return confirm.resolve(this.#presenceHandle(record));
        }
        return emit(record.listeners, "sync", {
          type: "sync",
          path: record.path,
          reason: e.reason,
          users: e.users,
        });
      }
      case "prefused":
      case "pended": {
        const record = this.#presences.get(e.p);
        if (!record) return;
        const error = e.t === "prefused" ? serverError(e.status, e.body) : clientError(e.code, e.ms);
        return this.#presenceEnded(record, error);
      }
      case "prevoked": {
        // The caller lost read access: the server took this socket out of the presence.
        const record = this.#presences.get(e.p);
        if (!record) return;
        const body = { error: e.reason, error_description: "read access to this presence was lost" };
        return this.#presenceEnded(record, serverError(403, body), true);
      }
      case "broadcast": {
        const event = { type: "broadcast", path: e.path, from: e.from, body: e.body };
        for (const id of e.subs) {
          const s = this.#subs.get(id);
          if (s) emit(s.listeners, "broadcast", event);
        }
        for (const id of e.presences) {
          const record = this.#presences.get(id);
          if (record && !record.confirm) emit(record.listeners, "broadcast", event);
        }
        return this.#emit("broadcast", event);
      }
    }
  }

  /** Opens the socket the engine asks for; only this socket's events reach the engine. */
  #open(url) {
    this.#detach();
    let ws;
    try {
      ws = new this.#WebSocket(url);
    } catch {
      return this.#session.closed(-1);
    }
    const mine = (f) => (event) => {
      if (this.#ws !== ws) return;
      f(event);
      this.#drive();
    };
    ws.onopen = mine(() => this.#session.opened());
    ws.onmessage = mine((event) => {
      if (typeof event.data !== "string") return;
      this.#emit("frame", { direction: "in", text: event.data });
      this.#session.frame(event.data);
    });
    ws.onclose = mine((event) => {
      this.#ws = null;
      this.#session.closed(typeof event?.code === "number" ? event.code : -1);
    });
    // An error before the socket opened is a failed attempt (Node 20's WebSocket reports a
    // refused connection with `error` alone, never `close`); after, the socket is dead too.
    ws.onerror = mine(() => {
      this.#detach();
      this.#session.closed(-1);
    });
    this.#ws = ws;
  }

  /** Lets go of the current socket: no more of its events, and it is closed. */
  #detach() {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Not null: the ws package throws an `error` nobody listens to.
    ws.onerror = noop;
    try {
      ws.close();
    } catch {
      // Already closed.
    }
  }

  #emit(event, arg) {
    emit(this.#listeners, event, arg);
  }

  /** Gets a fresh token from the app's getToken and offers it; one at a time. */
  async #refresh(reason) {
    if (!this.#getToken || this.#refreshing) return;
    this.#refreshing = true;
    try {
      let token;
      try {
        token = await this.#getToken({ reason });
      } catch (e) {
        throw new GridsocketError("get_token_failed", `getToken() failed: ${e?.message ?? e}`);
      }
      await this.setAccessToken(token);
    } catch (e) {
      if (this.state !== "closed") this.#emit("error", e);
    } finally {
      this.#refreshing = false;
    }
  }
}
