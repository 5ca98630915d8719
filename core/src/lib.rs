//! # gridsocket-core
//!
//! The sans-IO heart of gridsocket, the realtime WebSocket API of a Usergrid-style
//! Backend-as-a-Service. Everything here is pure logic: no sockets, clocks, threads or async
//! runtime, so the native server and the wasm browser client drive the very same code, and tests
//! run it deterministically in simulated time.
//!
//! - [`wire`]: the JSON frames that cross the socket.
//! - [`path`]: Usergrid resource paths (`/{org}/{app}/users/me/feed`, `/queues/a/b`).
//! - [`inflector`]: plural collection names, singular entity types.
//! - [`route`]: which operation a request inside an application asks for ([`route::AppRoute`]).
//! - [`query`]: the Usergrid query language (`select * where price < 10 order by title`).
//! - [`permission`]: Usergrid permissions (`get,post:/users/${user}/**`).
//! - [`access`]: who may do what, decided on canonical paths (every alias of a resource is
//!   one path), without IO: a decision asks the host for lookups when it needs them.
//! - [`subscription`]: what a subscription watches, and the index that matches changes to
//!   subscriptions.
//! - [`presence`]: [`PresenceBook`], who is present on a path, replicated between nodes over
//!   a message bus.
//! - [`server`]: [`ServerSession`], the protocol state machine of one server-side socket.
//! - [`client`]: [`ClientSession`], one client's requests, subscriptions and reconnects.
//!
//! ## Driving a session
//! A host owns the socket and the clock. After every input it drains the outputs:
//!
//! ```no_run
//! use gridsocket_core::{ServerConfig, ServerEvent, ServerSession, OutFrame, Instant};
//! let mut session = ServerSession::accept(ServerConfig::default(), Instant::now());
//! // 1. Feed what the socket read, with the current time.
//! session.handle_text(Instant::now(), r#"{"id":1,"method":"GET","path":"/users/me"}"#);
//! // 2. Execute the requests it asks for, and hand each result back.
//! while let Some(ServerEvent::Request { handle, .. }) = session.poll_event() {
//!     let _ = session.complete(Instant::now(), handle, 200, r#"{"action":"get"}"#);
//! }
//! // 3. Write out every queued frame.
//! while let Some(frame) = session.poll_transmit() {
//!     match frame { OutFrame::Text(_) | OutFrame::Event(_) | OutFrame::Ping => {}, OutFrame::Close { .. } => break }
//! }
//! // 4. Arm one timer at `poll_timeout()`; call `handle_timeout(now)` when it fires.
//! let _deadline = session.poll_timeout();
//! ```

#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::disallowed_methods)]

pub mod access;
pub mod client;
pub mod inflector;
mod json;
pub mod path;
pub mod permission;
pub mod presence;
pub mod query;
pub mod rate;
pub mod route;
pub mod server;
pub mod subscription;
pub mod time;
pub mod wire;

pub use client::{
    AuthReason, ClientConfig, ClientError, ClientEvent, ClientSession, ConnectionState,
    PresenceChange, PresenceId, RequestId, SubId, SyncReason,
};
pub use path::{ConnectPath, EntityRef, PathError, Resource, ResourcePath};
pub use permission::Permission;
pub use presence::{
    PresenceBook, PresenceConfig, PresenceError, PresenceEvent, PresenceMessage, PresenceSnapshot,
};
pub use query::{Query, QueryError, QueryLimits};
pub use server::{
    OutFrame, RequestHandle, ServerConfig, ServerEvent, ServerSession, SubscriptionId, close_code,
};
pub use subscription::{EventKind, SubscriptionIndex, Target};
pub use time::Instant;
pub use wire::{
    ApiRequest, Command, FrameError, FrameId, Method, Params, PresenceAction, RequestFrame,
};
