//! The client side of the protocol: [`ClientSession`], driven by the JavaScript package's host
//! (and by any other host that wants reconnection, resume, presence kept across reconnects and
//! offline requests without writing them again).

mod backoff;
mod frame;
mod session;

pub use backoff::Backoff;
pub use session::{
    AuthReason, ClientConfig, ClientError, ClientEvent, ClientSession, ConnectionState,
    PresenceChange, PresenceId, RequestId, SubId, SyncReason,
};
