//! The client side of the protocol: [`ClientSession`], driven by the browser host (and by any
//! other host that wants reconnection and resume without writing them again).

mod backoff;
mod session;

pub use backoff::Backoff;
pub use session::{
    ClientConfig, ClientError, ClientEvent, ClientSession, ConnectionState, RequestId, SubId,
};
