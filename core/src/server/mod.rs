//! The server side of one socket: frames in, requests to execute and frames out.

mod session;

pub use session::{
    OutFrame, RequestHandle, ServerConfig, ServerEvent, ServerSession, SubscriptionId,
};

/// WebSocket close codes the server uses, with their meaning for the client.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown); reconnect later.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (unmasked or malformed frames, a stray
    /// continuation, a reserved opcode); fix the client.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame was larger than the server accepts.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server restarts; reconnect (and resume) right away.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The token is missing, bad, expired or revoked; get a new one before reconnecting.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The organization or application in the URL does not exist, or the resource it names.
    pub const NOT_FOUND: u16 = 4404;
    /// The resource URL, or its parameters, cannot be subscribed to as written; fix the URL.
    pub const BAD_REQUEST: u16 = 4400;
    /// The socket did not read its events fast enough; reconnect and resume with `since`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The server is at its connection limit; retry with backoff.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
