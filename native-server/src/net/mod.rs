//! The network edge: TLS, the REST port's HTTP, and the socket port's WebSocket connections.

pub mod assets;
pub mod http;
pub mod tls;
pub mod ws;
