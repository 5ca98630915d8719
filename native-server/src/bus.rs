//! The bus between nodes: NATS carries short signals ("app X's log grew", "grants changed",
//! "these tokens were revoked"), never the events themselves.
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

/// Signals waiting to be published. When the bus is down or slow and this many are waiting,
/// further signals are dropped and counted (`gridsocket_bus_dropped_total`): the dispatcher's
/// poll and the resync after reconnecting make up for them.
pub const OUTBOX_CAPACITY: usize = 4096;

/// The sending side of the bus, held by the service. Never waits.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Signal>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// Queues a signal for the other nodes; drops it (counted) when the queue is full.
    pub fn send(&self, signal: Signal) {
        if self.tx.try_send(signal).is_err() {
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
    subject: String,
    node: String,
    outbox: mpsc::Receiver<Signal>,
    /// The outbox's sending side, for the bus's own resync signal.
    resync: Outbox,
    connects: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
}

impl NatsBus {
    /// Connects to NATS at `url` (comma-separated servers), listens on `{prefix}.signals`,
    /// and returns the bus with the outbox the service sends through.
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
        let subject = format!("{prefix}.signals");
        let subscriber = client.subscribe(subject.clone()).await?;
        let (tx, outbox) = mpsc::channel(OUTBOX_CAPACITY);
        let sender = Outbox {
            tx,
            metrics: metrics.clone(),
        };
        let bus = NatsBus {
            client,
            subscriber,
            subject,
            node,
            outbox,
            resync: sender.clone(),
            connects,
            metrics,
        };
        Ok((bus, sender))
    }

    /// Publishes this node's signals and hands the other nodes' to `apply` until `cancel`.
    /// When the bus comes back after an outage, `apply` gets a [`Signal::Resync`], and every
    /// other node one too.
    pub async fn run(self, apply: impl Fn(&Signal), cancel: CancellationToken) {
        let NatsBus {
            client,
            mut subscriber,
            subject,
            node,
            mut outbox,
            resync,
            mut connects,
            metrics,
        } = self;
        // Publishing waits while NATS is unreachable; it runs on its own so that receiving
        // does not wait with it (the outbox fills and drops meanwhile).
        let publisher = {
            let (client, subject, node, metrics) = (
                client.clone(),
                subject.clone(),
                node.clone(),
                metrics.clone(),
            );
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    let signal = tokio::select! {
                        s = outbox.recv() => match s { Some(s) => s, None => return },
                        _ = cancel.cancelled() => return,
                    };
                    let envelope = WireSignal {
                        node: node.clone(),
                        signal,
                    };
                    let Ok(payload) = serde_json::to_vec(&envelope) else {
                        continue;
                    };
                    match client.publish(subject.clone(), payload.into()).await {
                        Ok(()) => {
                            metrics.bus_published.inc();
                        }
                        Err(e) => {
                            metrics.bus_dropped.inc();
                            tracing::warn!(error = %e, "could not publish a signal");
                        }
                    }
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
                            apply(&env.signal);
                        }
                        Err(e) => tracing::warn!(error = %e, "ignored a malformed bus message"),
                    }
                }
                changed = connects.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tracing::info!("bus is back: resyncing from the change log");
                    // Others may have missed this node's signals, and it theirs.
                    apply(&Signal::Resync);
                    resync.send(Signal::Resync);
                }
                _ = cancel.cancelled() => break,
            }
        }
        publisher.abort();
        let _ = client.flush().await;
    }
}
