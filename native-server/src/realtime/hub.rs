//! The hub: which sockets are connected, what each subscription watches, and the state the
//! dispatcher works from.

use super::push::{Push, Sink};
use crate::api::Caller;
use crate::store::AppRecord;
use gridsocket_core::Instant;
use gridsocket_core::access::AccessPath;
use gridsocket_core::{SubscriptionId, SubscriptionIndex, Target};
use rustc_hash::FxHashMap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Names one socket.
pub type ConnId = u64;

/// Names one subscription in the hub.
pub type SubKey = (ConnId, SubscriptionId);

/// The hub's handle on one socket.
pub struct ConnHandle {
    /// The socket: pushes are applied to its session and written at once where possible.
    pub socket: Arc<dyn Sink>,
    /// True for the application's admins, who read every change: asked once, not per event.
    pub admin: bool,
    /// Who is connected.
    pub caller: Arc<Caller>,
    /// The application.
    pub app: Arc<AppRecord>,
}

impl ConnHandle {
    /// Applies a push without waiting; a socket too far behind closes as a slow consumer.
    pub fn push(&self, push: Push) {
        self.socket.push(Instant::now(), push);
    }
}

/// A consumer subscription to a queue: messages go to one socket per consumer id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerKey {
    /// Application uuid.
    pub app: String,
    /// Queue path.
    pub queue: String,
    /// Consumer id.
    pub consumer: String,
}

/// One subscription's details.
pub struct SubEntry {
    /// The path as the client wrote it (echoed in events).
    pub path: Arc<str>,
    /// The path in canonical form, resolved when subscribing: what access is re-checked on.
    pub access: Arc<AccessPath>,
    /// The wire id (`s1`).
    pub wire_id: Arc<str>,
    /// For queue consumers: which consumer, with the transaction timeout in ms.
    pub consumer: Option<(ConsumerKey, u64)>,
}

/// The subscriptions of one application.
#[derive(Default)]
pub struct AppSubs {
    /// Matching index.
    pub index: SubscriptionIndex<SubKey>,
    /// Details by key (the hub's and sessions' own numbers: a fast, unkeyed hash).
    pub entries: FxHashMap<SubKey, SubEntry>,
    /// The last log position dispatched, once known.
    pub dispatched: Option<u64>,
}

/// A running consumer pump.
pub struct Pump {
    /// Wakes it (a message arrived).
    pub wake: Arc<Notify>,
    /// Sockets subscribed as this consumer, in delivery rotation.
    pub members: Vec<SubKey>,
    /// Next member to hand a message to.
    pub next: usize,
    /// Stops it.
    pub stop: tokio_util::sync::CancellationToken,
}

/// Hub state behind one lock.
#[derive(Default)]
pub struct HubState {
    /// Sockets (by the hub's own numbers: a fast, unkeyed hash).
    pub conns: FxHashMap<ConnId, ConnHandle>,
    /// Subscriptions per application uuid.
    pub apps: HashMap<String, AppSubs>,
    /// Queue consumer pumps.
    pub pumps: HashMap<ConsumerKey, Pump>,
}

/// The hub.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    dirty: Mutex<HashSet<String>>,
    revalidate: AtomicBool,
    wake: Notify,
    next_conn: AtomicU64,
}

impl Hub {
    /// Locks the state.
    pub fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a socket; returns its id.
    pub fn register(&self, handle: ConnHandle) -> ConnId {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        self.state().conns.insert(id, handle);
        id
    }

    /// Forgets a socket and every subscription it had.
    pub fn unregister(&self, conn: ConnId) {
        let mut st = self.state();
        let Some(handle) = st.conns.remove(&conn) else {
            return;
        };
        let app = handle.app.uuid.clone();
        let keys: Vec<SubKey> = st
            .apps
            .get(&app)
            .map(|a| a.entries.keys().filter(|k| k.0 == conn).copied().collect())
            .unwrap_or_default();
        for key in keys {
            remove_locked(&mut st, &app, key);
        }
    }

    /// Adds a subscription to the index.
    pub fn add(&self, app: &str, key: SubKey, target: Target, entry: SubEntry) {
        let mut st = self.state();
        if let Some((consumer, _)) = &entry.consumer
            && let Some(pump) = st.pumps.get_mut(consumer)
        {
            pump.members.push(key);
        }
        let subs = st.apps.entry(app.to_owned()).or_default();
        subs.index.insert(key, target);
        subs.entries.insert(key, entry);
    }

    /// Removes a subscription (idempotent).
    pub fn remove(&self, app: &str, key: SubKey) {
        remove_locked(&mut self.state(), app, key);
    }

    /// Marks an application's log as having new changes.
    pub fn notify(&self, app: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_owned());
        self.wake.notify_one();
    }

    /// Asks the dispatcher to re-check every subscription's access (permissions changed).
    pub fn request_revalidation(&self) {
        self.revalidate.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Waits for work; returns the dirty applications and whether to revalidate.
    pub async fn next_work(&self) -> (HashSet<String>, bool) {
        self.wake.notified().await;
        self.take_work()
    }

    /// Takes pending work without waiting.
    pub fn take_work(&self) -> (HashSet<String>, bool) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        (dirty, self.revalidate.swap(false, Ordering::AcqRel))
    }

    /// The applications that have subscribers.
    pub fn watched_apps(&self) -> Vec<String> {
        self.state()
            .apps
            .iter()
            .filter(|(_, a)| !a.entries.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The socket of a connection, if it is still there.
    pub fn socket(&self, conn: ConnId) -> Option<Arc<dyn Sink>> {
        self.state().conns.get(&conn).map(|h| h.socket.clone())
    }

    /// Pushes to one socket, if it is still there.
    pub fn push_to(&self, conn: ConnId, push: Push) {
        if let Some(socket) = self.socket(conn) {
            socket.push(Instant::now(), push);
        }
    }

    /// How many subscriptions there are, over every application.
    pub fn subscriptions(&self) -> usize {
        self.state().apps.values().map(|a| a.entries.len()).sum()
    }

    /// How many sockets are registered.
    pub fn connections(&self) -> usize {
        self.state().conns.len()
    }
}

fn remove_locked(st: &mut HubState, app: &str, key: SubKey) {
    let Some(subs) = st.apps.get_mut(app) else {
        return;
    };
    subs.index.remove(&key);
    let entry = subs.entries.remove(&key);
    if let Some((consumer, _)) = entry.and_then(|e| e.consumer)
        && let Some(pump) = st.pumps.get_mut(&consumer)
    {
        pump.members.retain(|k| *k != key);
        if pump.members.is_empty()
            && let Some(p) = st.pumps.remove(&consumer)
        {
            p.stop.cancel();
        }
    }
}
