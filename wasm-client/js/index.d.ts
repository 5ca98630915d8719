// Typings of the gridsocket package. Written by hand, next to index.js, so that they can say
// what the runtime does in TypeScript's terms (generics, overloads, unions); the tests compile
// the README's snippets and an app against them with `tsc --strict`.

/** Any JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object: the default shape of an entity's own properties. */
export type JsonObject = { [key: string]: JsonValue };

/** What every entity carries besides its own properties. */
export interface EntityMeta {
  /** The entity's id. */
  uuid: string;
  /** Its type: the singular of its collection (`book` in `/books`). */
  type: string;
  /** Creation time, ms since the epoch. */
  created: number;
  /** Last change, ms since the epoch. */
  modified: number;
  /** Its unique name in the collection, if it has one (`username` for users). */
  name?: string;
  /** Where it lives, and the relations it has. */
  metadata?: {
    path: string;
    collections?: Record<string, string>;
    connections?: Record<string, string>;
    connecting?: Record<string, string>;
  };
}

/**
 * An entity as the API returns it: your own properties `T` plus {@link EntityMeta}.
 *
 * @example
 * ```ts
 * interface Book { title: string; price: number }
 * const res = await client.get<Book>("/books/dune");
 * const price: number | undefined = res.entities?.[0]?.price;
 * ```
 */
export type Entity<T extends object = JsonObject> = T & EntityMeta;

/**
 * A response body: Usergrid's envelope, byte for byte what REST returns for the same request.
 * `T` types the entities' own properties.
 */
export interface ApiResponse<T extends object = JsonObject> {
  action?: string;
  application?: string;
  applicationName?: string;
  organization?: string;
  params?: Record<string, string[]>;
  path?: string;
  uri?: string;
  /** The entities read or written. */
  entities?: Entity<T>[];
  /** Rows of a `select a, b` query. */
  list?: JsonValue[][];
  /** Queue messages, counters and other non-entity answers. */
  data?: JsonValue;
  count?: number;
  /** Pass back as `params.cursor` for the next page. */
  cursor?: string;
  timestamp?: number;
  duration?: number;
  /** `POST /token`: the new access token. */
  access_token?: string;
  /** `POST /token`: its lifetime in seconds. */
  expires_in?: number;
  /** `POST /token` with a password grant: the user. */
  user?: Entity<JsonObject>;
}

/** Query parameters of a read: `ql`, `limit` (1–1000), `cursor`, and any other the API takes. */
export interface QueryParams {
  /** Usergrid query: `select * where price < 10 order by title`. */
  ql?: string;
  /** Page size, 1–1000 (default 10). */
  limit?: number;
  /** From the previous page's {@link ApiResponse.cursor}. */
  cursor?: string;
  [param: string]: string | number | boolean | (string | number | boolean)[] | undefined;
}

/** Options of one request. */
export interface RequestOptions {
  /**
   * How long this request may take, including time spent waiting for the connection to come
   * back, in ms; then it rejects with `timeout`. Default: the client's `requestTimeoutMs`.
   * From 1 to 2147483647 (a timer's longest wait): anything else rejects at once with
   * `invalid_argument`, as every option of the wrong type or out of range does.
   */
  timeoutMs?: number;
}

/** A request of any method, for {@link Client.request}. */
export interface ApiRequest extends RequestOptions {
  method: "GET" | "POST" | "PUT" | "DELETE" | "get" | "post" | "put" | "delete";
  /** Relative to the application: `/users/me`. */
  path: string;
  params?: QueryParams;
  body?: JsonValue | object;
}

/** Where the connection stands; see {@link Client.state}. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Why a token is asked for (the `auth` event, and `getToken`). */
export type AuthReason = "expiring" | "expired" | "rejected";

/** Why `getToken` is called: {@link AuthReason}, or `initial` at connect. */
export type GetTokenReason = AuthReason | "initial";

/** What the client needs of a WebSocket class: the platform's, or the `ws` package's. */
export type WebSocketConstructor = abstract new (url: string) => {
  send(data: string): void;
  close(code?: number, reason?: string): void;
};

/** Options of {@link Client.connect}. */
export interface ConnectOptions {
  /** An access token (`POST /{org}/{app}/token`); omit both this and `getToken` for a guest. */
  accessToken?: string;
  /**
   * Returns a fresh access token. Called at connect when there is no `accessToken`, before
   * the current token expires (the server says when), and when the server refuses or expires
   * it; the client then sends it in band (`AUTH`) or reconnects with it. Never switches the
   * client to another user: a token of another user is refused.
   */
  getToken?: (info: { reason: GetTokenReason }) => string | Promise<string>;
  /**
   * How long a request may take in ms, including time spent waiting for the connection
   * (default 30000). Also bounds a subscription's first confirmation, and `connect()` itself.
   */
  requestTimeoutMs?: number;
  /**
   * How long one connection attempt may take before it counts as failed, ms (default 10000).
   * Each timeout is from 1 to 2147483647 ms: a bad option makes `connect()` reject with
   * `invalid_argument`.
   */
  connectTimeoutMs?: number;
  /**
   * The WebSocket class to use (default: the global one). Pass the `ws` package's on a Node
   * without a global WebSocket.
   */
  WebSocket?: WebSocketConstructor;
}

/** Options of {@link Client.subscribe} and {@link Client.events}: everything the server takes. */
export interface SubscribeOptions {
  /** Filter a collection with a Usergrid query: `select * where price < 10`. */
  ql?: string;
  /** Resume after this `seq` (from an earlier event or {@link Subscription.lastSeq}). */
  since?: number;
  /** Also return the current result page ({@link Subscription.snapshot}), taken at exactly the
   * subscription's start. */
  snapshot?: boolean;
  /** Page size of the snapshot, 1–1000. */
  limit?: number;
  /** Page of the snapshot, from a previous page's cursor. */
  cursor?: string;
  /** Queue consumer id: each message goes to one subscriber of that id, in a transaction. */
  consumer?: string;
  /** Queue transaction timeout, ms (default 30000). */
  timeout?: number;
}

/** The kinds of change an entity event reports. */
export type EntityEventType = "create" | "update" | "delete" | "enter" | "leave";

/** A change of an entity (or a queue message, or a feed item). */
export interface EntityEvent<T extends object = JsonObject> {
  type: EntityEventType;
  /** Its position in the application's change log. */
  seq: number;
  /** The subscribed path. */
  path: string;
  /** The entity after the change (before it, for `delete`). */
  entity: Entity<T>;
}

/** A resume could not replay everything missed: refetch (a GET, or `snapshot`). */
export interface ResyncEvent {
  type: "resync";
  path: string;
}

/** The subscription lost read access and ended (also: its resume was refused). */
export interface RevokedEvent {
  type: "revoked";
  path: string;
  /** `forbidden`, `token_revoked`, …, or the error code of a refused resume. */
  reason: string;
}

/** What a subscription callback receives. */
export type SubscriptionEvent<T extends object = JsonObject> =
  | EntityEvent<T>
  | ResyncEvent
  | RevokedEvent;

/** Who sent a broadcast. */
export interface BroadcastSender {
  /**
   * Who sent it, as presence names them: a user's or an admin's uuid, or for anybody else (a
   * guest, client credentials) an `anonymous-…` id of its socket.
   */
  uuid: string;
  username: string;
}

/**
 * A message sent with {@link Client.broadcast} to a path this client watches (subscribed to,
 * or present on), or its own with `echo`. Never stored or replayed: only whoever watches when
 * it is sent gets it. `B` types the body, as the app's senders write it.
 */
export interface BroadcastEvent<B = JsonValue> {
  type: "broadcast";
  /** The path's presence name: canonical (lower case, plural collections, `/users/me` as the
   * user's uuid), as `Presence.path` is. */
  path: string;
  from: BroadcastSender;
  body: B;
}

/** Options of {@link Client.broadcast}. */
export interface BroadcastOptions extends RequestOptions {
  /** Also deliver it to this client (whether it watches the path or not). Default false. */
  echo?: boolean;
}

/** The server's answer to a broadcast. */
export interface BroadcastResult {
  /** The path's presence name. */
  path: string;
  /** How many sockets it went to (on the sender's server node). */
  delivered: number;
}

/** One connection (tab, device) of a present user, with the state it set. */
export interface PresenceConnection<S extends object = JsonObject> {
  state: S;
}

/** A present user: one per user however many connections it has on the path. */
export interface PresenceUser<S extends object = JsonObject> {
  uuid: string;
  username: string;
  /** Each of its connections on the path, with its state. */
  connections: PresenceConnection<S>[];
}

/** The kinds of change of one user of a presence. */
export type PresenceChangeType = "join" | "leave" | "update";

/**
 * One user of a presence changed: `join` (its first connection arrived), `leave` (its last
 * went: closed, or left), `update` (a connection arrived, went or changed its state). Also
 * reported for what changed while the connection was down, once it is back.
 */
export interface PresenceChangeEvent<S extends object = JsonObject, K extends PresenceChangeType = PresenceChangeType> {
  type: K;
  path: string;
  user: { uuid: string; username: string };
  /** The user's connections after the change (none for `leave`). */
  connections: PresenceConnection<S>[];
}

/**
 * {@link Presence.state} is the server's snapshot now: after a reconnect (`reconnect`), or when
 * an event showed a change this client missed (`resync`). The changes it brought were
 * reported just before, as `join`, `leave` and `update`.
 */
export interface PresenceSyncEvent<S extends object = JsonObject> {
  type: "sync";
  path: string;
  reason: "join" | "reconnect" | "resync";
  users: PresenceUser<S>[];
}

/** The presence is over without `leave()`: the client closed, the server refused to rejoin
 * after a reconnect (`error.code`: `forbidden`, …), or the caller lost read access while
 * present (`error.code` `forbidden`, `error.status` 403). {@link Presence.state} is empty. */
export interface PresenceEndedEvent {
  type: "ended";
  path: string;
  error: GridsocketError;
}

/** A raw frame, for developer tools (the `frame` event). */
export interface Frame {
  direction: "in" | "out";
  text: string;
}

/** Error codes the client raises itself (`status` 0). */
export type ClientErrorCode =
  | "timeout"
  | "closed"
  | "too_many_pending"
  | "frame_too_large"
  | "user_changed"
  | "no_websocket"
  | "invalid_argument"
  | "get_token_failed"
  | "bad_server_frame"
  | "disconnected"
  | "not_present"
  | "already_present";

/** Error codes of the server's answers: the Usergrid `error` of the body. */
export type ServerErrorCode =
  | "unauthorized"
  | "auth_bad_access_token"
  | "expired_token"
  | "invalid_client"
  | "forbidden"
  | "organization_application_not_found"
  | "entity_not_found"
  | "service_resource_not_found"
  | "illegal_argument"
  | "query_parse"
  | "json_parse"
  | "required_property_not_found"
  | "duplicate_unique_property_exists"
  | "conflict"
  | "invalid_grant"
  | "unsupported_grant_type"
  | "unsupported_service_operation"
  | "entity_too_large"
  | "storage_full"
  | "storage_read_only"
  | "internal_error"
  | "invalid_frame"
  | "rate_limited"
  | "too_many_requests"
  | "request_timeout"
  | "query_timeout"
  | "query_too_expensive"
  | "too_many_subscriptions"
  | "subscription_not_found"
  | "too_many_connections"
  | "too_many_connections_from_address"
  | "write_id_conflict"
  | "write_in_progress"
  | "state_too_large"
  | "too_many_paths"
  | "broadcast_too_large"
  | "server_busy"
  | "too_many_attempts"
  | "server_error";

/** Every code a {@link GridsocketError} may have. */
export type GridsocketErrorCode = ClientErrorCode | ServerErrorCode;

/** A server's error body. */
export interface ErrorBody {
  error: string;
  error_description?: string;
  timestamp?: number;
  duration?: number;
}

/**
 * Every error the package raises or rejects with.
 *
 * @example
 * ```ts
 * try {
 *   await client.get("/books/missing");
 * } catch (e) {
 *   if (e instanceof GridsocketError && e.code === "entity_not_found") console.log(e.status); // 404
 * }
 * ```
 */
export declare class GridsocketError extends Error {
  constructor(code: GridsocketErrorCode, message: string, status?: number, body?: ErrorBody);
  readonly name: "GridsocketError";
  /** What went wrong: a server code (`entity_not_found`, …) or a client code (`timeout`, …). */
  readonly code: GridsocketErrorCode;
  /** The HTTP status of the server's answer; 0 for client errors. */
  readonly status: number;
  /** The server's error body, when there was one. */
  readonly body: ErrorBody | undefined;
}

/** One subscription of a {@link Client}. */
export declare class Subscription<T extends object = JsonObject> {
  private constructor();
  /** The subscribed path. */
  readonly path: string;
  /** The log position the subscription started after. */
  readonly seq: number;
  /** The `seq` of the last event delivered (to resume elsewhere with `since`). */
  readonly lastSeq: number | undefined;
  /** The result page at the start, when subscribed with `snapshot: true`. */
  readonly snapshot: ApiResponse<T> | undefined;
  /** Ends the subscription; the callback gets nothing more. */
  unsubscribe(): void;
  /**
   * The broadcasts to the subscribed path ({@link Client.broadcast}). Returns a function that
   * removes the listener.
   */
  on<B = JsonValue>(event: "broadcast", listener: (event: BroadcastEvent<B>) => void): () => void;
}

/**
 * Who is present on a path, kept equal to the server's: made by {@link Client.presence}.
 *
 * After a reconnect it joins again with its last state, and takes the server's snapshot (the
 * server replays no presence): whoever came, went or changed meanwhile is reported as the
 * `join`, `leave` and `update` it is, then `sync`. Between snapshots every change of the
 * others (and of this user's other tabs) comes as an event; this client's own changes show
 * once the server took them.
 *
 * @example
 * ```ts
 * const lobby = await client.presence<{ status: string }>("/groups/lobby", { status: "here" });
 * for (const user of lobby.state.values()) console.log(user.username, user.connections[0]?.state.status);
 * lobby.on("join", (e) => console.log(e.user.username, "arrived"));
 * await lobby.update({ status: "away" });
 * await lobby.leave();
 * ```
 */
export declare class Presence<S extends object = JsonObject> {
  private constructor();
  /**
   * The presence's name: the path in the canonical form access is decided on, so every
   * spelling of one resource is one presence (`/user/Alice` and `/users/%61lice` are
   * `/users/alice`, `inbox` is `feed`), `/users/me` as the user's uuid.
   */
  readonly path: string;
  /** Who is present, by user uuid (this client's user included). A new Map on every change;
   * empty once left or ended. */
  readonly state: ReadonlyMap<string, PresenceUser<S>>;
  /** This client's state, as the server last took it (a refused `update()` leaves it). */
  readonly myState: S;
  /** False once left, or ended. */
  readonly active: boolean;
  /** A user joined, left or changed. Returns a function that removes the listener. */
  on<K extends PresenceChangeType>(
    event: K,
    listener: (event: PresenceChangeEvent<S, K>) => void,
  ): () => void;
  /** `state` is the server's snapshot now (after a reconnect, or a resync). */
  on(event: "sync", listener: (event: PresenceSyncEvent<S>) => void): () => void;
  /** The broadcasts to this path. */
  on<B = JsonValue>(event: "broadcast", listener: (event: BroadcastEvent<B>) => void): () => void;
  /** The presence is over without `leave()`. */
  on(event: "ended", listener: (event: PresenceEndedEvent) => void): () => void;
  /**
   * Changes this client's state. Resolves once the server has it; while the connection is
   * down the state waits and goes with the join after the reconnect. Rejects with the
   * server's refusal (`state_too_large`), `not_present` once left, `timeout` or `closed`.
   */
  update(state: S, options?: RequestOptions): Promise<void>;
  /** Leaves: nothing more is reported, and `state` is empty. While the connection is down it
   * resolves at once (a closed socket left every presence already). */
  leave(options?: RequestOptions): Promise<void>;
}

/**
 * A gridsocket connection: the Usergrid API over one WebSocket, and subscriptions that survive
 * reconnects. Requests made while the connection is down wait for it; writes are applied once
 * even when they are sent again after a drop.
 *
 * @example
 * ```ts
 * const client = await Client.connect("ws://localhost:8088/demo/chatapp", { accessToken });
 * const me = await client.get("/users/me");
 * const sub = await client.subscribe("/users/me/feed", (e) => {
 *   if (e.type === "create") console.log(e.entity.content);
 * });
 * ```
 */
export declare class Client {
  private constructor();

  /**
   * Connects to `url` (`ws://host:8088/{org}/{app}`). Resolves once the server greets the
   * socket; rejects with the server's refusal (`auth_bad_access_token`,
   * `organization_application_not_found`, …), with `timeout` when no connection opens within
   * `requestTimeoutMs`, and at once with `no_websocket` when there is no WebSocket to use.
   * Later drops reconnect by themselves.
   */
  static connect(url: string, options?: ConnectOptions): Promise<Client>;

  /** Where the connection stands. */
  readonly state: ConnectionState;

  /** `GET path`: an entity, a collection page (`params.ql`, `limit`, `cursor`), a feed. */
  get<T extends object = JsonObject>(
    path: string,
    params?: QueryParams,
    options?: RequestOptions,
  ): Promise<ApiResponse<T>>;
  /** `POST path`: create an entity (or several, with an array), a relation, a token. */
  post<T extends object = JsonObject>(
    path: string,
    body?: JsonValue | object,
    options?: RequestOptions,
  ): Promise<ApiResponse<T>>;
  /** `PUT path`: update (merge) an entity, or create it by name. */
  put<T extends object = JsonObject>(
    path: string,
    body?: JsonValue | object,
    options?: RequestOptions,
  ): Promise<ApiResponse<T>>;
  /** `DELETE path`. */
  delete<T extends object = JsonObject>(
    path: string,
    options?: RequestOptions,
  ): Promise<ApiResponse<T>>;
  /** Any request. */
  request<T extends object = JsonObject>(request: ApiRequest): Promise<ApiResponse<T>>;

  /**
   * Subscribes to an entity, a collection (optionally filtered by `ql`), a feed or a queue.
   * Resolves to a {@link Subscription} once the server confirms. It survives reconnects: it
   * resumes where it was and the callback sees every event once, in order (or a `resync`).
   */
  subscribe<T extends object = JsonObject>(
    path: string,
    callback: (event: SubscriptionEvent<T>) => void,
  ): Promise<Subscription<T>>;
  subscribe<T extends object = JsonObject>(
    path: string,
    options: SubscribeOptions,
    callback: (event: SubscriptionEvent<T>) => void,
  ): Promise<Subscription<T>>;

  /**
   * The events of a subscription as an async iterator; `break` unsubscribes. It ends after
   * a `revoked` event, and throws `closed` when the client closes.
   *
   * @example
   * ```ts
   * for await (const e of client.events<{ content: string }>("/users/me/feed")) {
   *   if (e.type === "create") console.log(e.entity.content);
   * }
   * ```
   */
  events<T extends object = JsonObject>(
    path: string,
    options?: SubscribeOptions,
  ): AsyncIterableIterator<SubscriptionEvent<T>>;

  /**
   * Joins the presence of `path` (anything the user may read: a group, an entity, a
   * collection, a feed) with `state`, a JSON object of at most 1 KiB. Resolves to a
   * {@link Presence} with who is present once the server answers; rejects with the server's
   * refusal (`forbidden`, `state_too_large`, `too_many_paths`, `illegal_argument` for a path
   * that can have no presence: `/`, `/groups/lobby/presence`, …), `already_present` when this
   * client is present there already, `timeout` or `closed`. It survives reconnects.
   */
  presence<S extends object = JsonObject>(path: string, state?: S): Promise<Presence<S>>;

  /**
   * Sends `body` (any JSON value but `null`, at most 8 KiB) to whoever watches `path` now:
   * its subscribers and those present on it (each gets a `broadcast` event), and this client
   * with `echo`. Needs `post` permission on `{path}/broadcast` (the default role's `/**` has
   * it; a guest's sign-up grant does not). Resolves with how many sockets it went
   * to. Never stored, held while offline or sent again: rejects with `disconnected` when the
   * connection is down (or dropped before the answer), `rate_limited` (429) past the server's
   * broadcasts per second (20 by default, with a burst of as many), `broadcast_too_large`
   * (413), `forbidden`, `illegal_argument` (400) for a path that can have no presence, and
   * `invalid_argument` at once for a bad option (`echo: "yes"`).
   *
   * @example
   * ```ts
   * await client.broadcast("/groups/lobby", { typing: true });
   * ```
   */
  broadcast<B = JsonValue>(path: string, body: B, options?: BroadcastOptions): Promise<BroadcastResult>;

  /** Resolves when the connection is open (at once if it is); rejects with `closed`, or
   * `timeout` after `timeoutMs`. */
  ready(options?: { timeoutMs?: number }): Promise<void>;

  /** Connection state changes. Returns a function that removes the listener. */
  on(event: "state", listener: (state: ConnectionState) => void): () => void;
  /** Errors about the connection rather than one request: a refused reconnect, a failed token
   * refresh, a subscription the server ended. */
  on(event: "error", listener: (error: GridsocketError) => void): () => void;
  /** A token is needed (without `getToken`, call {@link Client.setAccessToken}). */
  on(event: "auth", listener: (info: { reason: AuthReason }) => void): () => void;
  /** Every raw frame, for developer tools. */
  on(event: "frame", listener: (frame: Frame) => void): () => void;
  /** Every broadcast this client gets, whichever subscription or presence it is for. */
  on<B = JsonValue>(event: "broadcast", listener: (event: BroadcastEvent<B>) => void): () => void;

  /**
   * Offers a new access token for the same user. Resolves once the server took it (in band
   * with `AUTH`, or at the next reconnect); rejects with the server's refusal (`forbidden`
   * for another user's token), `user_changed`, `timeout` or `closed`. A refused token is not
   * used again.
   */
  setAccessToken(token: string): Promise<void>;

  /** Closes for good: every pending request, `subscribe()` and `events()` ends with `closed`. */
  close(): void;

  /** Drops the socket as if the network failed (for tests of reconnect and resume). */
  dropConnectionForTesting(): void;
}
