//! # gridsocket-server
//!
//! The `gridsocket` server: the Usergrid REST API on one port and the realtime WebSocket API
//! on another, over one service layer and one store. Sockets are driven by
//! `gridsocket-core`'s sans-IO [`ServerSession`](gridsocket_core::ServerSession); this crate
//! only does IO: listeners, HTTP, WebSocket framing, storage.

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
