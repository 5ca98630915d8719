//! Queue consumers over sockets: a pump per consumer id hands each message to one of the
//! sockets subscribed as that consumer, in a transaction that times out into a redelivery
//! unless the message is acknowledged.

use super::Realtime;
use super::hub::{Consumer, ConsumerKey};
use super::push::{Push, SharedEvent};
use crate::api::now_ms;
use crate::store::QueueRead;
use gridsocket_core::EventKind;
use gridsocket_core::subscription::encode_event;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Messages a queue consumer pump takes at a time.
const PUMP_BATCH: usize = 100;

impl Realtime {
    /// Starts the pump of a consumer, unless it runs already.
    pub(super) fn ensure_pump(&self, key: ConsumerKey, timeout_ms: u64) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        if let Some((wake, stop)) = self.hub.start_pump(&key) {
            tokio::spawn(me.pump(key, timeout_ms, wake, stop));
        }
    }

    /// Hands a queue's messages to the sockets subscribed as one consumer, one socket per
    /// message, each in a transaction that times out into a redelivery unless acknowledged.
    async fn pump(
        self: Arc<Self>,
        key: ConsumerKey,
        timeout_ms: u64,
        wake: Arc<Notify>,
        stop: CancellationToken,
    ) {
        let read = QueueRead::Consumer {
            consumer: key.consumer.clone(),
            timeout_ms,
        };
        loop {
            if stop.is_cancelled() {
                return;
            }
            let batch = match self
                .api
                .store()
                .queue_read(&key.app, &key.queue, &read, PUMP_BATCH, now_ms())
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "queue read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let full = batch.len() == PUMP_BATCH;
            for m in batch {
                let Ok(next) = self.hub.next_consumer(&key) else {
                    return;
                };
                // Nobody to hand it to: its transaction times out and it comes again later.
                let Some(Consumer { key: k, path }) = next else {
                    continue;
                };
                let frame = encode_event(
                    EventKind::Create,
                    &k.1.to_string(),
                    &path,
                    m.seq,
                    &m.message.to_string(),
                );
                self.hub.push_to(
                    k.0,
                    Push::Delivery {
                        subscription: k.1,
                        event: SharedEvent::new(frame),
                    },
                );
            }
            if full {
                continue;
            }
            let next = self
                .api
                .store()
                .queue_next_expiry(&key.app, &key.queue, &key.consumer)
                .await
                .ok()
                .flatten();
            let wait = next
                .map(|e| Duration::from_millis((e - now_ms()).max(0) as u64 + 5))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}
