//! # gridsocket-server
//!
//! The `gridsocket` server: the Usergrid REST API on one port and the realtime WebSocket API
//! on another, over one API layer and one store. Sockets are driven by `gridsocket-core`'s
//! sans-IO [`ServerSession`](gridsocket_core::ServerSession); this crate does the IO:
//! listeners, HTTP, WebSocket framing, storage, the bus between nodes.
//!
//! # Layout
//!
//! Dependencies run one way, from the edge to the data: `net` → `realtime` → `api` → `store`.
//! `signal` is a leaf that `api` emits into and `realtime` and `bus` act on; `config` and
//! `server` sit above everything and wire it together.
//!
//! - [`server`]: the process. Opens the store, builds the layers, binds both listeners, and
//!   accepts until the injected shutdown future resolves (as mini-redis's `server::run`).
//! - [`config`]: every setting, from flags, the environment or a TOML file, and the mapping
//!   of each limit onto the layer that enforces it (`Settings::session_config`,
//!   `api_config`, `ws_config`, …). A limit's default is written once, in its flag.
//! - [`net`]: the network edge.
//!   - `net::http`: the REST port (hyper), with its header, idle and per-address limits;
//!   - `net::ws`: the socket port. `ws/mod.rs` admits a connection, authenticates it and
//!     drives its [`ServerSession`](gridsocket_core::ServerSession); `ws/socket.rs` is the
//!     state a socket shares with whoever pushes to it; `ws/stream.rs` splits the
//!     connection into the halves those two need;
//!   - `net::tls`: rustls for both ports.
//! - [`realtime`]: subscriptions and what reaches them. `hub.rs` holds sockets and
//!   subscriptions behind methods, `dispatcher.rs` reads each application's change log in
//!   order and fans changes out, `revocation.rs` ends or re-reads sockets whose credentials
//!   changed, `pumps.rs` hands queue messages to consumers, `push.rs` is the socket as the
//!   realtime layer sees it (a `Sink`), `presence.rs` is who is present where (one
//!   `PresenceBook` per process) and delivers its changes.
//! - [`api`]: the Usergrid API, one implementation that REST and the socket share.
//!   `router.rs` runs each request core's `AppRoute` parsed; handlers live by resource
//!   (`entities`, `relations`, `activities`, `users`, `queues`, `management`); `access.rs`
//!   decides who may do what, `auth.rs` and `passwords.rs` make and check credentials,
//!   `envelope.rs` renders Usergrid's response body, `error.rs` is every way a call fails.
//! - [`store`]: the [`Store`](store::Store) trait and its records; `contract.rs`, the checks
//!   every backend passes; `plan.rs`, the queue-read plan both stores run; `rows.rs`, row
//!   handling both SQL stores share; `sqlite/` (the embedded default) and `postgres/`, each
//!   with its schema.
//! - [`bus`]: NATS between nodes. It carries [`signal`]s, never events, and what is never
//!   stored (presence messages, broadcasts), and hands what it receives to a callback.
//! - [`metrics`]: the Prometheus registry served at `/metrics`.
//! - [`demo`]: the organization, app and users of `serve --demo`.
//!
//! # Where a change goes
//!
//! - A REST endpoint: a variant of core's `AppRoute` (and its parse), an arm in
//!   `api/router.rs`, the handler in the resource's file. The socket carries it unchanged.
//! - A socket method: core's wire types and `ServerSession`, then the event it emits is
//!   handled in `net/ws/mod.rs` (and in `realtime` if it subscribes).
//! - A limit: a flag in `config/mod.rs` and its line in the layer's `*_config()`; the layer
//!   enforces it.
//! - A store: a module under `store/` implementing [`Store`](store::Store) that passes
//!   `store::contract::run_all`, and a `--store` URL scheme in `server.rs`.

pub mod api;
pub mod bus;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod net;
pub mod realtime;
pub mod server;
pub mod signal;
pub mod store;

pub use config::Settings;
pub use server::{Server, StartError};
