//! What the hub sends a socket, and the socket as the hub sees it.
//!
//! The realtime layer does not know WebSockets: it hands events to a [`Sink`], and the
//! network layer's socket encodes them. An event goes to many subscribers as one
//! [`SharedEvent`], whose encoded frame the first socket to write it makes and every other
//! socket reuses.

use bytes::Bytes;
use gridsocket_core::{Instant, RequestHandle, SubscriptionId};
use std::sync::{Arc, OnceLock};

/// An event's text, shared by every subscriber that gets the same bytes, with a slot for its
/// encoding on the wire (filled once, by the first socket that writes it).
#[derive(Debug)]
pub struct SharedEvent {
    text: Arc<str>,
    wire: OnceLock<Bytes>,
}

impl SharedEvent {
    /// An event frame's text.
    pub fn new(text: impl Into<Arc<str>>) -> Arc<SharedEvent> {
        Arc::new(SharedEvent {
            text: text.into(),
            wire: OnceLock::new(),
        })
    }

    /// The frame's text.
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// The frame as the transport writes it, encoded by `encode` the first time it is asked
    /// for.
    pub fn wire(&self, encode: impl FnOnce(&str) -> Bytes) -> Bytes {
        self.wire.get_or_init(|| encode(&self.text)).clone()
    }
}

/// What the hub sends a socket.
#[derive(Debug)]
pub enum Push {
    /// An event of the ordered change stream.
    Event {
        /// Which subscription.
        subscription: SubscriptionId,
        /// Its log position.
        seq: u64,
        /// The event.
        event: Arc<SharedEvent>,
    },
    /// A queue message handed to this socket as its consumer (outside the ordered stream:
    /// a redelivery repeats an earlier `seq`).
    Delivery {
        /// Which subscription.
        subscription: SubscriptionId,
        /// The event.
        event: Arc<SharedEvent>,
    },
    /// The subscription lost read access.
    Revoke {
        /// Which subscription.
        subscription: SubscriptionId,
        /// Why (`forbidden`, `token_revoked`).
        reason: &'static str,
    },
    /// An event outside every subscription's ordered stream (a presence change, a
    /// broadcast): sent as is.
    Ephemeral {
        /// The event.
        event: Arc<SharedEvent>,
    },
    /// The answer to one of the socket's requests, from work that must answer in order with
    /// the events it causes (a presence join is answered before anybody's later change of
    /// that presence reaches the socket).
    Complete {
        /// The request.
        handle: RequestHandle,
        /// Its status.
        status: u16,
        /// Its body, JSON.
        body: String,
    },
    /// Close the socket (its credentials were revoked).
    Close {
        /// Close code.
        code: u16,
        /// Reason.
        reason: &'static str,
    },
}

/// A socket, as the hub pushes to it. Pushes never wait: a socket that cannot take more
/// closes itself as a slow consumer.
pub trait Sink: Send + Sync {
    /// Applies a push and writes what it makes the socket send, now if the connection takes
    /// it.
    fn push(&self, now: Instant, push: Push);

    /// Applies a push and holds what it makes the socket send until [`Sink::uncork`]: one
    /// write for a burst. True if the sink was not holding anything yet (the caller must
    /// uncork it).
    fn push_corked(&self, now: Instant, push: Push) -> bool;

    /// Writes what [`Sink::push_corked`] held.
    fn uncork(&self);
}

/// Pushes one ephemeral event (presence, broadcast: outside any subscription) to `sinks`.
pub fn push_ephemeral<'a>(
    sinks: impl IntoIterator<Item = &'a Arc<dyn Sink>>,
    now: Instant,
    event: &Arc<SharedEvent>,
) {
    for sink in sinks {
        sink.push(
            now,
            Push::Ephemeral {
                event: event.clone(),
            },
        );
    }
}
