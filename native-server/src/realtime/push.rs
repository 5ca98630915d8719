//! What the hub sends a socket, and the socket as the hub sees it.
//!
//! The realtime layer does not know WebSockets: it hands events to a [`Sink`], and the
//! network layer's socket encodes them. An event goes to many subscribers as one
//! [`SharedEvent`], whose encoded frame the first socket to write it makes and every other
//! socket reuses.

use bytes::Bytes;
use gridsocket_core::{Instant, RequestHandle, SubscriptionId};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

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
    /// The socket lost read access to a presence it joined: it is out of it now.
    RevokePresence {
        /// The path it joined, as it asked.
        path: String,
        /// The presence's name (as its answers and events show it).
        name: String,
        /// Why (`forbidden`).
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
    /// The server is going down: answer what is in flight, then close with 1012.
    Drain,
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

/// Ephemeral events (presence changes, broadcasts: outside any subscription) on their way
/// to their sockets. A sender queues an event with its receivers and goes on; one task at a
/// time writes the queue out, every socket's share of a burst in one write, as the dispatcher
/// does with a burst of changes. Writing each event to a thousand sockets at once took one
/// `send()` per socket per event: a sender going flat out got a fraction of what the same
/// receivers got from the change log. Events leave in the order they were queued: one
/// socket's presence changes and broadcasts reach the others in the order it sent them.
#[derive(Default)]
pub struct EphemeralQueue {
    state: Mutex<QueueState>,
}

/// An event and the sockets it goes to.
type Queued = (Vec<Arc<dyn Sink>>, Arc<SharedEvent>);

#[derive(Default)]
struct QueueState {
    events: VecDeque<Queued>,
    /// What `events` holds, as [`queued_bytes`] counts it.
    bytes: usize,
    /// A task is writing the queue out.
    writing: bool,
}

/// Most the queue holds, in [`queued_bytes`]: senders that outrun the writing (every socket
/// of a node broadcasting to every other at its rate limit) are refused past it, instead of
/// growing the queue without end.
pub const MAX_EPHEMERAL_BYTES: usize = 64 << 20;

/// What an event waiting for `receivers` costs the queue: its text, and a pointer for each.
fn queued_bytes(receivers: usize, event: &SharedEvent) -> usize {
    receivers
        .saturating_mul(std::mem::size_of::<Arc<dyn Sink>>())
        .saturating_add(event.text.len())
}

impl EphemeralQueue {
    /// Queues `event` for `sinks`; a task writes it out soon after (needs a tokio runtime).
    /// False, and nothing queued, when the queue is full ([`MAX_EPHEMERAL_BYTES`]).
    pub fn send(self: &Arc<Self>, sinks: Vec<Arc<dyn Sink>>, event: Arc<SharedEvent>) -> bool {
        if sinks.is_empty() {
            return true;
        }
        let cost = queued_bytes(sinks.len(), &event);
        let mut st = self.state();
        // An empty queue takes any one event: its size is bounded by the sockets it goes to.
        if !st.events.is_empty() && st.bytes.saturating_add(cost) > MAX_EPHEMERAL_BYTES {
            return false;
        }
        st.bytes = st.bytes.saturating_add(cost);
        st.events.push_back((sinks, event));
        if st.writing {
            return true;
        }
        st.writing = true;
        drop(st);
        let me = self.clone();
        tokio::spawn(async move { me.write_out().await });
        true
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes out what is queued, burst after burst, until the queue is empty.
    async fn write_out(&self) {
        loop {
            let burst: Vec<_> = {
                let mut st = self.state();
                if st.events.is_empty() {
                    st.writing = false;
                    return;
                }
                st.bytes = 0;
                st.events.drain(..).collect()
            };
            let now = Instant::now();
            let mut corked = Vec::new();
            for (sinks, event) in burst {
                for sink in sinks {
                    let push = Push::Ephemeral {
                        event: event.clone(),
                    };
                    if sink.push_corked(now, push) {
                        corked.push(sink);
                    }
                }
            }
            for sink in corked {
                sink.uncork();
                // Writing to ten thousand sockets takes a while: let others run meanwhile.
                tokio::task::consume_budget().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the events it gets.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Sink for Counter {
        fn push(&self, _: Instant, _: Push) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }

        fn push_corked(&self, now: Instant, push: Push) -> bool {
            self.push(now, push);
            false
        }

        fn uncork(&self) {}
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_ephemeral_queue_refuses_what_would_pass_its_bound_and_delivers_the_rest() {
        let queue = Arc::new(EphemeralQueue::default());
        let sink = Arc::new(Counter::default());
        let sinks = || vec![sink.clone() as Arc<dyn Sink>];
        // Nothing is written until this task yields: the queue fills.
        let text = "x".repeat(8 << 10);
        let fits = MAX_EPHEMERAL_BYTES / queued_bytes(1, &SharedEvent::new(text.clone()));
        for i in 0..fits {
            assert!(
                queue.send(sinks(), SharedEvent::new(text.clone())),
                "event {i}"
            );
        }
        assert!(
            !queue.send(sinks(), SharedEvent::new(text.clone())),
            "the bound holds"
        );
        // Once written out, it takes events again.
        tokio::task::yield_now().await;
        while queue.state().writing {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            sink.0.load(Ordering::Relaxed),
            fits,
            "every queued event arrived"
        );
        assert!(queue.send(sinks(), SharedEvent::new(text)));
    }
}
