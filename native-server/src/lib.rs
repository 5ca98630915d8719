//! # gridsocket-server
//!
//! The `gridsocket` server: the Usergrid REST API on one port and the realtime WebSocket API
//! on another, over one service layer and one store. Sockets are driven by
//! `gridsocket-core`'s sans-IO [`ServerSession`](gridsocket_core::ServerSession); this crate
//! only does IO: listeners, HTTP, WebSocket framing, storage.

pub mod auth;
pub mod bus;
pub mod connection;
pub mod dedup;
pub mod demo;
pub mod hub;
pub mod metrics;
pub mod rest;
pub mod server;
pub mod service;
pub mod settings;
pub mod socket;
pub mod store;
pub mod tls;
pub mod ws;

pub use server::{Server, StartError};
pub use settings::Settings;
