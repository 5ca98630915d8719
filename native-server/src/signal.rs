//! The signals nodes send each other: short notes that something changed ("app X's log grew",
//! "grants changed", "these tokens were revoked"), never the events themselves. A leaf: the API
//! emits them, the realtime layer and the bus act on them.

use serde::{Deserialize, Serialize};

/// What one node tells the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// An application's change log grew: dispatch it.
    Changed {
        /// Application uuid.
        app: String,
    },
    /// A permission, role or group membership changed: reload grants and re-check
    /// subscriptions.
    GrantsChanged,
    /// Tokens of a user or admin were revoked: forget them and close that user's sockets.
    TokensRevoked {
        /// The user's or admin's uuid.
        subject: String,
        /// The hash (base64url) of the one token kept, if any: a password change keeps the token
        /// that made it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<String>,
    },
    /// One token was revoked: forget it and close the sockets using it.
    TokenRevoked {
        /// The token's hash (base64url).
        hash: String,
    },
    /// An application user's username, email, activation or disabled flag changed, or the
    /// user was deleted: re-read who their cached tokens and open sockets speak for.
    UserChanged {
        /// Application uuid.
        app: String,
        /// The user's uuid.
        user: String,
    },
    /// A node was cut off from the bus and may have missed signals or failed to send them:
    /// every node re-reads what signals would have told it.
    Resync,
}
