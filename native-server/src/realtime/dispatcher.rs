//! The dispatcher: reads each watched application's change log in order, matches every change
//! against the application's subscriptions and pushes the events to their sockets; and
//! re-checks every subscription's access when grants or users change.

use super::Realtime;
use super::hub::Delivery;
use super::push::{Push, SharedEvent, Sink};
use crate::api::{ApiError, Caller, presence_path, render_entity};
use crate::store::{AppRecord, ChangeRecord, ChangeView, Entity, StoreError};
use gridsocket_core::subscription::{ChangeKind, encode_event};
use gridsocket_core::{Instant, Method};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Changes the dispatcher reads from the log at a time.
const DISPATCH_BATCH: usize = 512;

/// The JSON of an event's `entity`: the entity as REST shows it, or the queue message.
pub(super) fn event_entity_json(rec: &ChangeRecord) -> String {
    match rec.kind {
        ChangeKind::QueueMessage => Value::Object(rec.entity.clone()).to_string(),
        _ => {
            let entity = Entity {
                uuid: rec.uuid.clone(),
                collection: rec.collection.clone(),
                name: rec.name.clone(),
                data: rec.entity.clone(),
            };
            render_entity(entity, &format!("/{}", rec.collection)).to_string()
        }
    }
}

/// Answers already worked out while one change goes to its subscribers: the last one first
/// (subscribers in a row mostly ask the same), then every other one seen.
pub(super) struct Memo<K, V> {
    last: Option<(K, V)>,
    seen: HashMap<K, V>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            last: None,
            seen: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    /// The answer for `key`, if worked out already.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        if let Some((k, v)) = &self.last
            && k == key
        {
            return Some(v.clone());
        }
        let v = self.seen.get(key)?.clone();
        self.last = Some((key.clone(), v.clone()));
        Some(v)
    }

    /// Remembers the answer for `key`.
    pub(super) fn insert(&mut self, key: K, value: V) {
        self.seen.insert(key.clone(), value.clone());
        self.last = Some((key, value));
    }

    /// The answer for `key`, worked out by `make` the first time.
    pub(super) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.get(&key) {
            return v;
        }
        let v = make();
        self.insert(key, v.clone());
        v
    }
}

impl Realtime {
    /// Runs the dispatcher until `cancel`: pushes every application's changes in log order,
    /// when signalled and every `poll` regardless.
    pub async fn run_dispatcher(self: Arc<Self>, poll: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (mut dirty, revalidate) = tokio::select! {
                work = self.hub.next_work() => work,
                _ = tick.tick() => self.hub.take_work(),
                _ = cancel.cancelled() => return,
            };
            // A safety net: look at every watched app now and then, whoever wrote to it.
            dirty.extend(self.hub.watched_apps());
            if revalidate {
                self.revalidate().await;
            }
            for app in dirty {
                if let Err(e) = self.dispatch_app(&app).await {
                    tracing::warn!(error = %e, "dispatch failed; retrying");
                    self.hub.notify(&app);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Makes sure the dispatcher knows where an application's log stands before a
    /// subscription to it exists, so that every later change is matched against it.
    pub(super) async fn ensure_dispatch_position(&self, app: &str) -> Result<(), ApiError> {
        if self
            .hub
            .dispatch_state(app)
            .is_none_or(|(position, _)| position.is_none())
        {
            let position = self.api.store().log_position(app).await?;
            self.hub.start_dispatch_at(app, position);
        }
        Ok(())
    }

    /// Pushes an application's changes since the last dispatched, in order.
    async fn dispatch_app(&self, app: &str) -> Result<(), StoreError> {
        loop {
            let Some((Some(from), watched)) = self.hub.dispatch_state(app) else {
                return Ok(());
            };
            if !watched {
                let position = self.api.store().log_position(app).await?;
                self.hub.dispatched_to(app, position.max(from));
                return Ok(());
            }
            let batch = self
                .api
                .store()
                .changes_since(app, from, DISPATCH_BATCH)
                .await?;
            let n = batch.changes.len();
            // A burst of changes: every event of the batch for one socket goes out in one
            // write. A single change is written to each socket right away.
            let mut corked = (n > 1).then(Vec::new);
            for rec in batch.changes {
                self.dispatch_change(app, ChangeView::new(rec), corked.as_mut())
                    .await;
            }
            for socket in corked.into_iter().flatten() {
                socket.uncork();
                // Writing to ten thousand sockets takes a while: let others run meanwhile.
                tokio::task::consume_budget().await;
            }
            if n < DISPATCH_BATCH {
                return Ok(());
            }
        }
    }

    /// Pushes one change to its subscribers' sockets. With `corked`, the events are queued
    /// and the sockets touched for the first time added to it, for the caller to uncork;
    /// without, each is written at once.
    async fn dispatch_change(
        &self,
        app: &str,
        view: ChangeView,
        mut corked: Option<&mut Vec<Arc<dyn Sink>>>,
    ) {
        let seq = view.record.seq;
        let deliveries = self.hub.deliveries(app, &view.change());
        if !deliveries.is_empty() {
            // The entity is serialized once per change, and each distinct frame (kind,
            // subscription id, path) made once: subscribers that get the same bytes share
            // them.
            let entity_json = event_entity_json(&view.record);
            let mut events = Memo::default();
            let mut readers = Memo::default();
            let now = Instant::now();
            for d in &deliveries {
                if let Some(consumer) = &d.consumer {
                    self.hub.wake_pump(consumer);
                    continue;
                }
                if !self.may_deliver(d, &view.record, &mut readers).await {
                    continue;
                }
                let frame = (d.kind, d.subscription, d.path.clone());
                let event = events.get_or_insert_with(frame, || {
                    let wire_id = d.subscription.to_string();
                    SharedEvent::new(encode_event(d.kind, &wire_id, &d.path, seq, &entity_json))
                });
                let push = Push::Event {
                    subscription: d.subscription,
                    seq,
                    event,
                };
                match corked.as_deref_mut() {
                    Some(corked) => {
                        if d.socket.push_corked(now, push) {
                            corked.push(d.socket.clone());
                        }
                    }
                    None => {
                        d.socket.push(now, push);
                        // Writing to ten thousand sockets takes a while: let others run.
                        tokio::task::consume_budget().await;
                    }
                }
            }
        }
        self.hub.dispatched_to(app, seq);
    }

    /// Whether a delivery's subscriber may see the change. It depends only on who they are:
    /// asked once per user for a change, not once per socket; admins read everything.
    async fn may_deliver<'a>(
        &self,
        d: &'a Delivery,
        rec: &ChangeRecord,
        readers: &mut Memo<&'a str, bool>,
    ) -> bool {
        if d.admin {
            return true;
        }
        let who = d.caller.user_uuid().unwrap_or("");
        if let Some(known) = readers.get(&who) {
            return known;
        }
        let ok = self.may_read(&d.app, &d.caller, rec).await;
        readers.insert(who, ok);
        ok
    }

    /// May this caller see this change? Entities, and the activities of a feed, are checked
    /// as a GET of their canonical path (by uuid and name), as a listing checks them; queue
    /// messages were checked when subscribing.
    pub(super) async fn may_read(
        &self,
        app: &AppRecord,
        caller: &Caller,
        rec: &ChangeRecord,
    ) -> bool {
        rec.kind == ChangeKind::QueueMessage
            || self
                .api
                .may(
                    app,
                    caller,
                    Method::Get,
                    &rec.collection,
                    &rec.uuid,
                    rec.name.as_deref(),
                )
                .await
    }

    /// Re-checks every subscription and presence of non-admin callers after a permission or
    /// user change; those that lost read access are revoked. A check the store could not
    /// answer keeps what it checks: the next pass looks again.
    pub(super) async fn revalidate(&self) {
        for sub in self.hub.subscriptions_to_check() {
            if self.api.is_app_admin(&sub.app, &sub.caller) {
                continue;
            }
            let refused = match sub.access.path() {
                Some(mut access) => is_refusal(
                    &self
                        .api
                        .authorize(&sub.app, &sub.caller, Method::Get, &mut access)
                        .await,
                ),
                // Only `AccessPath::keep` makes these bytes, so this does not happen; if it
                // did, the subscription could never be re-checked: it ends rather than
                // outliving its grants.
                None => true,
            };
            if refused {
                self.hub.remove(&sub.app.uuid, sub.key);
                self.hub.push_to(
                    sub.key.0,
                    Push::Revoke {
                        subscription: sub.key.1,
                        reason: "forbidden",
                    },
                );
            }
        }
        for (conn, path, asked) in self.presence.joined() {
            let Some((app, caller)) = self.hub.caller_of(conn) else {
                continue;
            };
            if self.api.is_app_admin(&app, &caller) {
                continue;
            }
            // Judged as the join was: on the presence's name.
            let Ok(name) = presence_path(&asked, &caller) else {
                continue;
            };
            let checked = self.api.check_presence_access(&app, &caller, &name).await;
            if is_refusal(&checked) {
                let reason = match checked {
                    Err(e) if e.status() == 404 => "not_found",
                    _ => "forbidden",
                };
                self.presence.revoke(&path, conn, reason);
            }
        }
    }
}

/// Whether an access check said no (as opposed to failing to find out: the store down, a
/// timeout).
fn is_refusal(checked: &Result<(), ApiError>) -> bool {
    checked.as_ref().is_err_and(|e| e.status() < 500)
}

#[cfg(test)]
mod tests {
    use super::Memo;

    #[test]
    fn a_memo_answers_the_last_key_and_every_key_seen() {
        let mut m: Memo<&str, u32> = Memo::default();
        assert_eq!(m.get(&"a"), None);
        m.insert("a", 1);
        m.insert("b", 2);
        assert_eq!(m.get(&"b"), Some(2), "the last one");
        assert_eq!(m.get(&"a"), Some(1), "one seen before");
        assert_eq!(m.get(&"a"), Some(1), "now the last one");
        let mut made = 0;
        for _ in 0..3 {
            let v = m.get_or_insert_with("c", || {
                made += 1;
                3
            });
            assert_eq!(v, 3);
        }
        assert_eq!(made, 1, "worked out once");
        m.insert("a", 9);
        assert_eq!(m.get(&"a"), Some(9));
    }
}
