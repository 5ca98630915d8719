//! The bus between nodes: NATS carries short signals ("app X's log grew", "grants changed",
//! "these tokens were revoked"), never the events themselves, on `{subject}.signals`; and what
//! is never stored at all: presence ([`PresenceMessage`] JSON on `{subject}.presence`) and
//! broadcasts (on `{subject}.broadcast`).
//!
//! Events live in the store's change log; a signal only tells the other nodes' dispatchers to
//! read it now. So a lost signal costs latency, never an event: each dispatcher also reads
//! every watched application's log on a timer, and a node that was cut off from the bus asks
//! every node to resync when it is back (re-read the logs, reload grants, forget cached
//! tokens and re-check its sockets' tokens). Core NATS is enough for that; JetStream would
//! keep a second copy of what PostgreSQL already keeps.

use crate::metrics::Metrics;
use crate::signal::Signal;
use futures_util::StreamExt;
use gridsocket_core::presence::PresenceMessage;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A signal on the wire, with the node that sent it (a node skips its own).
#[derive(Serialize, Deserialize)]
struct WireSignal {
    node: String,
    #[serde(flatten)]
    signal: Signal,
}

/// A broadcast for the sockets of other nodes: the event frame as receivers get it, and the
/// presence path (of application `app`) whose watchers get it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Broadcast {
    /// The application's uuid.
    pub app: String,
    /// The presence path (`/groups/lobby`).
    pub path: String,
    /// The `{"event":"broadcast",…}` frame.
    pub frame: String,
}

/// A broadcast on the wire, with the node that sent it (a node skips its own).
#[derive(Serialize, Deserialize)]
struct WireBroadcast {
    node: String,
    #[serde(flatten)]
    broadcast: Broadcast,
}

/// What the bus hands the node.
pub enum Received<'a> {
    /// A signal from another node (or the bus's own resync).
    Signal(&'a Signal),
    /// A presence message from any node (the book skips its own).
    Presence(PresenceMessage),
    /// A broadcast from another node.
    Broadcast(Broadcast),
}

/// What waits to be published, and on which subject.
enum Outgoing {
    Signal(Signal),
    Presence(PresenceMessage),
    Broadcast(Broadcast),
}

/// Signals waiting to be published. When the bus is down or slow and this many are waiting,
/// further signals are dropped and counted (`gridsocket_bus_dropped_total`): the dispatcher's
/// poll and the resync after reconnecting make up for them.
pub const OUTBOX_CAPACITY: usize = 4096;

/// How long a node that shuts down keeps publishing what it queued before (its presence bye
/// above all) and waits for NATS to take it; an unreachable bus does not hold the shutdown up.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The sending side of the bus, held by the service. Never waits.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// Queues a signal for the other nodes; drops it (counted) when the queue is full.
    pub fn send(&self, signal: Signal) {
        self.queue(Outgoing::Signal(signal));
    }

    /// Queues a presence message; dropped (counted) when the queue is full, which the
    /// receivers notice by its counter and repair with a resync.
    pub fn send_presence(&self, msg: PresenceMessage) {
        self.queue(Outgoing::Presence(msg));
    }

    /// Queues a broadcast; dropped (counted) when the queue is full: a broadcast is
    /// ephemeral, and late is no better than lost.
    pub fn send_broadcast(&self, broadcast: Broadcast) {
        self.queue(Outgoing::Broadcast(broadcast));
    }

    fn queue(&self, out: Outgoing) {
        if self.tx.try_send(out).is_err() {
            self.metrics.bus_dropped.inc();
        }
    }
}

/// Why the bus could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL is not `nats://…`.
    #[error("unsupported bus URL {0:?}: expected nats://host:port")]
    Url(String),
    /// NATS did not answer.
    #[error("cannot reach the bus at {url}: {source}")]
    Connect {
        /// Where.
        url: String,
        /// The cause.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The subscription was refused.
    #[error("cannot subscribe on the bus: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// A joined bus, ready to run.
pub struct NatsBus {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    presence: async_nats::Subscriber,
    broadcasts: async_nats::Subscriber,
    prefix: String,
    node: String,
    outbox: mpsc::Receiver<Outgoing>,
    /// The outbox's sending side, for the bus's own resync signal.
    resync: Outbox,
    connects: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
}

/// How often the bus pings NATS.
const BUS_PING_INTERVAL: Duration = Duration::from_secs(3);

impl NatsBus {
    /// Connects to NATS at `url` (comma-separated servers), listens on `{prefix}.signals`,
    /// `{prefix}.presence` and `{prefix}.broadcast`, and returns the bus with the outbox the service sends through.
    pub async fn connect(
        url: &str,
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Result<(NatsBus, Outbox), BusError> {
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        if servers
            .iter()
            .any(|s| !s.starts_with("nats://") && !s.starts_with("tls://"))
        {
            return Err(BusError::Url(url.to_owned()));
        }
        // Time-ordered and random: unique per process, and readable in NATS's connection list.
        let node = uuid::Uuid::now_v7().simple().to_string();
        let (connects_tx, connects) = watch::channel(0u64);
        let events_metrics = metrics.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("gridsocket-{node}"))
            .connection_timeout(Duration::from_secs(5))
            // A link that hangs (no end, no error) is noticed by its unanswered pings: two
            // missed, and the client reconnects. The default (a minute) took minutes.
            .ping_interval(BUS_PING_INTERVAL)
            .event_callback(move |event| {
                let metrics = events_metrics.clone();
                let connects = connects_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            metrics.bus_connected.set(1);
                            connects.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => {
                            metrics.bus_connected.set(0);
                            metrics.bus_disconnects.inc();
                            tracing::warn!(
                                "lost the bus: events from other nodes now arrive by polling \
                                 the change log until it is back"
                            );
                        }
                        other => tracing::info!(event = %other, "bus event"),
                    }
                }
            });
        let client = options
            .connect(servers.as_slice())
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let subscriber = client.subscribe(format!("{prefix}.signals")).await?;
        let presence = client.subscribe(format!("{prefix}.presence")).await?;
        let broadcasts = client.subscribe(format!("{prefix}.broadcast")).await?;
        let (tx, outbox) = mpsc::channel(OUTBOX_CAPACITY);
        let sender = Outbox {
            tx,
            metrics: metrics.clone(),
        };
        let bus = NatsBus {
            client,
            subscriber,
            presence,
            broadcasts,
            prefix: prefix.to_owned(),
            node,
            outbox,
            resync: sender.clone(),
            connects,
            metrics,
        };
        Ok((bus, sender))
    }

    /// Publishes this node's signals, presence messages and broadcasts, and hands the other
    /// nodes' to `apply` until `cancel`. When the bus comes back after an outage, `apply`
    /// gets a [`Signal::Resync`], and every other node one too.
    pub async fn run(self, apply: impl Fn(Received<'_>), cancel: CancellationToken) {
        let NatsBus {
            client,
            mut subscriber,
            mut presence,
            mut broadcasts,
            prefix,
            node,
            mut outbox,
            resync,
            mut connects,
            metrics,
        } = self;
        // Publishing waits while NATS is unreachable; it runs on its own so that receiving
        // does not wait with it (the outbox fills and drops meanwhile).
        let publisher = {
            let (client, prefix, node, metrics) = (
                client.clone(),
                prefix.clone(),
                node.clone(),
                metrics.clone(),
            );
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let publish = |out: Outgoing| {
                    let node = node.clone();
                    let (subject, payload) = match out {
                        Outgoing::Signal(signal) => {
                            ("signals", serde_json::to_vec(&WireSignal { node, signal }))
                        }
                        Outgoing::Presence(msg) => ("presence", serde_json::to_vec(&msg)),
                        Outgoing::Broadcast(broadcast) => (
                            "broadcast",
                            serde_json::to_vec(&WireBroadcast { node, broadcast }),
                        ),
                    };
                    let subject = format!("{prefix}.{subject}");
                    let (client, metrics) = (&client, &metrics);
                    async move {
                        let Ok(payload) = payload else {
                            return;
                        };
                        match client.publish(subject, payload.into()).await {
                            Ok(()) => {
                                metrics.bus_published.inc();
                            }
                            Err(e) => {
                                metrics.bus_dropped.inc();
                                tracing::warn!(error = %e, "could not publish a signal");
                            }
                        }
                    }
                };
                loop {
                    let out = tokio::select! {
                        biased;
                        s = outbox.recv() => match s { Some(s) => s, None => return },
                        _ = cancel.cancelled() => {
                            // What was queued before the shutdown still goes out: above all
                            // the presence bye, which spares the others waiting for this
                            // node's entries to expire.
                            while let Ok(out) = outbox.try_recv() {
                                publish(out).await;
                            }
                            return;
                        }
                    };
                    publish(out).await;
                }
            })
        };
        connects.mark_unchanged();
        loop {
            tokio::select! {
                msg = subscriber.next() => {
                    let Some(msg) = msg else { break };
                    match serde_json::from_slice::<WireSignal>(&msg.payload) {
                        Ok(env) if env.node == node => {}
                        Ok(env) => {
                            metrics.bus_received.inc();
                            apply(Received::Signal(&env.signal));
                        }
                        Err(e) => tracing::warn!(error = %e, "ignored a malformed bus message"),
                    }
                }
                msg = presence.next() => {
                    let Some(msg) = msg else { break };
                    match serde_json::from_slice::<PresenceMessage>(&msg.payload) {
                        Ok(msg) => {
                            metrics.bus_received.inc();
                            apply(Received::Presence(msg));
                        }
                        Err(e) => tracing::warn!(error = %e, "ignored a malformed presence message"),
                    }
                }
                msg = broadcasts.next() => {
                    let Some(msg) = msg else { break };
                    match serde_json::from_slice::<WireBroadcast>(&msg.payload) {
                        Ok(env) if env.node == node => {}
                        Ok(env) => {
                            metrics.bus_received.inc();
                            apply(Received::Broadcast(env.broadcast));
                        }
                        Err(e) => tracing::warn!(error = %e, "ignored a malformed broadcast"),
                    }
                }
                changed = connects.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tracing::info!("bus is back: resyncing from the change log");
                    // Others may have missed this node's signals, and it theirs.
                    apply(Received::Signal(&Signal::Resync));
                    resync.send(Signal::Resync);
                }
                _ = cancel.cancelled() => break,
            }
        }
        // The publisher sends what was queued before the shutdown, while the bus takes it.
        let publishing = publisher.abort_handle();
        if tokio::time::timeout(SHUTDOWN_FLUSH, publisher)
            .await
            .is_err()
        {
            publishing.abort();
        }
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, client.flush()).await;
    }
}
