//! The hub: which sockets are connected, what each subscription watches, and the state the
//! dispatcher works from.

use super::push::{Push, Sink};
use crate::api::Caller;
use crate::store::AppRecord;
use gridsocket_core::Instant;
use gridsocket_core::access::KeptAccessPath;
use gridsocket_core::subscription::Change;
use gridsocket_core::{EventKind, SubscriptionId, SubscriptionIndex, Target, close_code};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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

/// One subscription's details. (Its wire id, `s1`, is its key's [`SubscriptionId`], written out
/// where an event is encoded.)
pub struct SubEntry {
    /// The path as the client wrote it (echoed in events).
    pub path: Arc<str>,
    /// The path in canonical form, resolved when subscribing: what access is re-checked on.
    pub access: KeptAccessPath,
    /// For queue consumers: which consumer, with the transaction timeout in ms. (Boxed: most
    /// subscriptions are not, and the entry would be twice its size.)
    pub consumer: Option<Box<(ConsumerKey, u64)>>,
    /// The presence name of `path` for its subscriber ([`presence_path`]): broadcasts to that
    /// name reach the subscription's socket.
    ///
    /// [`presence_path`]: crate::api::presence_path
    pub presence: Arc<str>,
}

/// One subscription a change goes to, with what deciding and encoding its event needs.
pub struct Delivery {
    /// The subscriber's socket.
    pub socket: Arc<dyn Sink>,
    /// Which subscription.
    pub subscription: SubscriptionId,
    /// The event it gets.
    pub kind: EventKind,
    /// The path as the client wrote it.
    pub path: Arc<str>,
    /// For a queue consumer: which one (its pump hands out the messages).
    pub consumer: Option<ConsumerKey>,
    /// True for the application's admins.
    pub admin: bool,
    /// Who subscribed.
    pub caller: Arc<Caller>,
    /// The application.
    pub app: Arc<AppRecord>,
}

/// One subscription, as its access is re-checked.
pub struct Subscribed {
    /// Which subscription.
    pub key: SubKey,
    /// Its application.
    pub app: Arc<AppRecord>,
    /// Who subscribed.
    pub caller: Arc<Caller>,
    /// What it watches, in canonical form.
    pub access: KeptAccessPath,
}

/// The next socket a queue consumer's message goes to.
pub struct Consumer {
    /// The subscription.
    pub key: SubKey,
    /// Its path as the client wrote it.
    pub path: Arc<str>,
}

/// The subscriptions of one application.
#[derive(Default)]
struct AppSubs {
    index: SubscriptionIndex<SubKey>,
    /// Details by key (the hub's and sessions' own numbers: a fast, unkeyed hash).
    entries: FxHashMap<SubKey, SubEntry>,
    /// Each socket's subscriptions here: a socket that goes forgets its own, without a look
    /// at everyone else's (an application's sockets come and go a thousand a second).
    by_conn: FxHashMap<ConnId, SmallVec<[SubscriptionId; 1]>>,
    /// The last log position dispatched, once known.
    dispatched: Option<u64>,
    /// The sockets subscribed to each presence name, with how many of their subscriptions
    /// have it: whom a broadcast reaches, found without going through every subscription.
    by_presence: FxHashMap<Arc<str>, Watchers>,
}

/// The sockets subscribed to one presence name, with how many of their subscriptions have
/// it. Most names have one socket (a user's inbox, an entity one socket watches), held
/// inline: a map of one costs an allocation of ~100 bytes, a socket's worth at a million.
/// The map is boxed so that the one-socket form sets every entry's size (24 bytes, not 40).
enum Watchers {
    One(ConnId, u32),
    #[allow(clippy::box_collection)] // The box is what keeps the entry small.
    Many(Box<FxHashMap<ConnId, u32>>),
}

impl Watchers {
    fn add(&mut self, conn: ConnId) {
        match self {
            Watchers::One(one, n) if *one == conn => *n += 1,
            Watchers::One(one, n) => {
                *self = Watchers::Many(Box::new([(*one, *n), (conn, 1)].into_iter().collect()))
            }
            Watchers::Many(conns) => *conns.entry(conn).or_insert(0) += 1,
        }
    }

    /// Takes away one of `conn`'s subscriptions; true when no socket is left.
    fn remove(&mut self, conn: ConnId) -> bool {
        match self {
            Watchers::One(one, n) => {
                if *one == conn {
                    *n = n.saturating_sub(1);
                }
                *n == 0
            }
            Watchers::Many(conns) => {
                if let Some(n) = conns.get_mut(&conn) {
                    *n -= 1;
                    if *n == 0 {
                        conns.remove(&conn);
                    }
                }
                conns.is_empty()
            }
        }
    }

    fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        let (one, many) = match self {
            Watchers::One(one, _) => (Some(*one), None),
            Watchers::Many(conns) => (None, Some(conns.keys().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl AppSubs {
    fn watch(&mut self, entry: &SubEntry, conn: ConnId) {
        match self.by_presence.entry(entry.presence.clone()) {
            Entry::Occupied(watchers) => watchers.into_mut().add(conn),
            Entry::Vacant(place) => {
                place.insert(Watchers::One(conn, 1));
            }
        }
    }

    fn unwatch(&mut self, entry: &SubEntry, conn: ConnId) {
        let gone = self
            .by_presence
            .get_mut(&entry.presence)
            .is_some_and(|watchers| watchers.remove(conn));
        if gone {
            self.by_presence.remove(&entry.presence);
        }
    }
}

/// A running consumer pump.
struct Pump {
    wake: Arc<Notify>,
    /// Sockets subscribed as this consumer, in delivery rotation.
    members: Vec<SubKey>,
    /// Next member to hand a message to.
    next: usize,
    stop: CancellationToken,
}

/// Hub state behind one lock.
#[derive(Default)]
struct HubState {
    /// Sockets (by the hub's own numbers: a fast, unkeyed hash).
    conns: FxHashMap<ConnId, ConnHandle>,
    /// Subscriptions per application uuid.
    apps: HashMap<String, AppSubs>,
    pumps: HashMap<ConsumerKey, Pump>,
}

/// The hub.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    /// Set by [`Hub::drain_all`]: a socket registered later is drained (closed) at once.
    draining: OnceLock<()>,
    dirty: Mutex<HashSet<String>>,
    revalidate: AtomicBool,
    wake: Notify,
    next_conn: AtomicU64,
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a socket; returns its id.
    pub fn register(&self, handle: ConnHandle) -> ConnId {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let socket = handle.socket.clone();
        self.state().conns.insert(id, handle);
        // After the insert: a drain_all that ran before it is seen here, one after it sees
        // the socket.
        if self.draining.get().is_some() {
            socket.push(Instant::now(), Push::Drain);
        }
        id
    }

    /// Drains every socket, now and registered from now on (the server is shutting down):
    /// each answers what it has in flight, then closes with 1012.
    pub fn drain_all(&self) {
        let _ = self.draining.set(());
        let sockets: Vec<Arc<dyn Sink>> = self
            .state()
            .conns
            .values()
            .map(|c| c.socket.clone())
            .collect();
        let now = Instant::now();
        for socket in sockets {
            socket.push(now, Push::Drain);
        }
    }

    /// Forgets a socket and every subscription it had.
    pub fn unregister(&self, conn: ConnId) {
        let mut st = self.state();
        let Some(handle) = st.conns.remove(&conn) else {
            return;
        };
        let app = handle.app.uuid.clone();
        for key in subscriptions_of(&st, &app, conn) {
            remove_locked(&mut st, &app, key);
        }
    }

    /// Adds a subscription to the index.
    pub fn add(&self, app: &str, key: SubKey, target: Target, entry: SubEntry) {
        let mut st = self.state();
        if let Some((consumer, _)) = entry.consumer.as_deref()
            && let Some(pump) = st.pumps.get_mut(consumer)
        {
            pump.members.push(key);
        }
        let subs = st.apps.entry(app.to_owned()).or_default();
        subs.index.insert(key, target);
        subs.watch(&entry, key.0);
        match subs.entries.insert(key, entry) {
            Some(replaced) => subs.unwatch(&replaced, key.0),
            None => subs.by_conn.entry(key.0).or_default().push(key.1),
        }
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

    /// The application and caller of a connection, if it is still there.
    pub fn caller_of(&self, conn: ConnId) -> Option<(Arc<AppRecord>, Arc<Caller>)> {
        self.state()
            .conns
            .get(&conn)
            .map(|h| (h.app.clone(), h.caller.clone()))
    }

    /// Pushes to one socket, if it is still there.
    pub fn push_to(&self, conn: ConnId, push: Push) {
        if let Some(socket) = self.socket(conn) {
            socket.push(Instant::now(), push);
        }
    }

    /// The sockets with a subscription of application `app` to presence name `presence`
    /// ([`SubEntry::presence`]), each once.
    pub fn subscribers_of(&self, app: &str, presence: &str) -> Vec<(ConnId, Arc<dyn Sink>)> {
        let st = self.state();
        let Some(conns) = st.apps.get(app).and_then(|a| a.by_presence.get(presence)) else {
            return Vec::new();
        };
        conns
            .conns()
            .filter_map(|conn| Some((conn, st.conns.get(&conn)?.socket.clone())))
            .collect()
    }

    /// How many subscriptions there are, over every application.
    pub fn subscriptions(&self) -> usize {
        self.state().apps.values().map(|a| a.entries.len()).sum()
    }

    /// How many sockets are registered.
    pub fn connections(&self) -> usize {
        self.state().conns.len()
    }
    /// Where an application's dispatch stands: the last position dispatched (once known) and
    /// whether anyone watches it; `None` if the hub does not know the application.
    pub fn dispatch_state(&self, app: &str) -> Option<(Option<u64>, bool)> {
        self.state()
            .apps
            .get(app)
            .map(|a| (a.dispatched, !a.entries.is_empty()))
    }

    /// Starts dispatching an application's log at `position`, unless it already is.
    pub fn start_dispatch_at(&self, app: &str, position: u64) {
        let mut st = self.state();
        let subs = st.apps.entry(app.to_owned()).or_default();
        if subs.dispatched.is_none() {
            subs.dispatched = Some(position);
        }
    }

    /// Records that an application's log is dispatched up to `seq`.
    pub fn dispatched_to(&self, app: &str, seq: u64) {
        if let Some(a) = self.state().apps.get_mut(app) {
            a.dispatched = Some(a.dispatched.unwrap_or(0).max(seq));
        }
    }

    /// The subscriptions of an application a change goes to.
    pub fn deliveries(&self, app: &str, change: &Change<'_>) -> Vec<Delivery> {
        let st = self.state();
        let Some(subs) = st.apps.get(app) else {
            return Vec::new();
        };
        let mut matched = Vec::new();
        subs.index.matches(change, &mut matched);
        matched
            .into_iter()
            .filter_map(|((conn, subscription), kind)| {
                let entry = subs.entries.get(&(conn, subscription))?;
                let handle = st.conns.get(&conn)?;
                Some(Delivery {
                    socket: handle.socket.clone(),
                    subscription,
                    kind,
                    path: entry.path.clone(),
                    consumer: entry.consumer.as_deref().map(|(c, _)| c.clone()),
                    admin: handle.admin,
                    caller: handle.caller.clone(),
                    app: handle.app.clone(),
                })
            })
            .collect()
    }

    /// Every subscription, with what re-checking its access needs.
    pub fn subscriptions_to_check(&self) -> Vec<Subscribed> {
        let st = self.state();
        st.apps
            .values()
            .flat_map(|a| a.entries.iter())
            .filter_map(|(key, entry)| {
                let conn = st.conns.get(&key.0)?;
                Some(Subscribed {
                    key: *key,
                    app: conn.app.clone(),
                    caller: conn.caller.clone(),
                    access: entry.access.clone(),
                })
            })
            .collect()
    }

    /// Ends the sockets `which` picks: each subscription gets a `revoked` event
    /// (`token_revoked`) and is forgotten, then the socket closes with 4401 and `reason`.
    pub fn close_where(&self, which: impl Fn(&ConnHandle) -> bool, reason: &'static str) {
        let mut st = self.state();
        let conns: Vec<ConnId> = st
            .conns
            .iter()
            .filter(|(_, c)| which(c))
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            let Some(app) = st.conns.get(&conn).map(|c| c.app.uuid.clone()) else {
                continue;
            };
            let keys = subscriptions_of(&st, &app, conn);
            if let Some(handle) = st.conns.get(&conn) {
                for key in &keys {
                    handle.push(Push::Revoke {
                        subscription: key.1,
                        reason: "token_revoked",
                    });
                }
                handle.push(Push::Close {
                    code: close_code::UNAUTHORIZED,
                    reason,
                });
            }
            for key in keys {
                remove_locked(&mut st, &app, key);
            }
        }
    }

    /// The callers of the sockets `which` picks.
    pub fn callers(&self, which: impl Fn(&ConnHandle) -> bool) -> Vec<Arc<Caller>> {
        self.state()
            .conns
            .values()
            .filter(|c| which(c))
            .map(|c| c.caller.clone())
            .collect()
    }

    /// The hashes of the tokens this node's sockets authenticated with, each once.
    pub fn tokens(&self) -> Vec<[u8; 32]> {
        let mut t: Vec<[u8; 32]> = self
            .state()
            .conns
            .values()
            .filter_map(|c| c.caller.token())
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    /// Registers a queue consumer's pump; `None` if it runs already. The pump stops when its
    /// last subscriber goes.
    pub fn start_pump(&self, key: &ConsumerKey) -> Option<(Arc<Notify>, CancellationToken)> {
        let mut st = self.state();
        if st.pumps.contains_key(key) {
            return None;
        }
        let (wake, stop) = (Arc::new(Notify::new()), CancellationToken::new());
        st.pumps.insert(
            key.clone(),
            Pump {
                wake: wake.clone(),
                members: Vec::new(),
                next: 0,
                stop: stop.clone(),
            },
        );
        Some((wake, stop))
    }

    /// Wakes a queue consumer's pump (a message arrived).
    pub fn wake_pump(&self, key: &ConsumerKey) {
        if let Some(p) = self.state().pumps.get(key) {
            p.wake.notify_one();
        }
    }

    /// The socket a consumer's next message goes to, in rotation: `Err(())` when the pump is
    /// gone, `Ok(None)` when nobody is subscribed right now.
    #[allow(clippy::result_unit_err)]
    pub fn next_consumer(&self, key: &ConsumerKey) -> Result<Option<Consumer>, ()> {
        let mut st = self.state();
        let pump = st.pumps.get_mut(key).ok_or(())?;
        if pump.members.is_empty() {
            return Ok(None);
        }
        let k = pump.members[pump.next % pump.members.len()];
        pump.next = pump.next.wrapping_add(1);
        Ok(st
            .apps
            .get(&key.app)
            .and_then(|a| a.entries.get(&k))
            .map(|e| Consumer {
                key: k,
                path: e.path.clone(),
            }))
    }
}

/// A socket's subscriptions in an application.
fn subscriptions_of(st: &HubState, app: &str, conn: ConnId) -> Vec<SubKey> {
    st.apps
        .get(app)
        .and_then(|a| a.by_conn.get(&conn))
        .map(|own| own.iter().map(|id| (conn, *id)).collect())
        .unwrap_or_default()
}

fn remove_locked(st: &mut HubState, app: &str, key: SubKey) {
    let Some(subs) = st.apps.get_mut(app) else {
        return;
    };
    subs.index.remove(&key);
    let entry = subs.entries.remove(&key);
    if let Some(entry) = &entry {
        subs.unwatch(entry, key.0);
        if let Some(own) = subs.by_conn.get_mut(&key.0) {
            own.retain(|id| *id != key.1);
            if own.is_empty() {
                subs.by_conn.remove(&key.0);
            }
        }
    }
    if let Some((consumer, _)) = entry.and_then(|e| e.consumer).map(|c| *c)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Authenticated, Principal};
    use std::sync::Mutex;

    #[test]
    fn a_presence_name_watched_by_one_socket_costs_no_map() {
        // Every presence name's entry is this size, whatever its form (see `Watchers`).
        assert!(std::mem::size_of::<Watchers>() <= 24);
        let mut one = Watchers::One(7, 1);
        one.add(7);
        assert!(matches!(one, Watchers::One(7, 2)));
        one.add(8);
        assert_eq!(one.conns().count(), 2, "a second socket makes the map");
        assert!(!one.remove(7) && !one.remove(7) && one.remove(8));
    }

    /// Keeps the close codes it is told (a drain's as 1012, the code it ends with).
    #[derive(Default)]
    struct Closes(Mutex<Vec<u16>>);

    impl Sink for Closes {
        fn push(&self, _: Instant, push: Push) {
            match push {
                Push::Close { code, .. } => self.0.lock().unwrap().push(code),
                Push::Drain => self.0.lock().unwrap().push(close_code::SERVICE_RESTART),
                _ => {}
            }
        }

        fn push_corked(&self, now: Instant, push: Push) -> bool {
            self.push(now, push);
            false
        }

        fn uncork(&self) {}
    }

    fn handle(socket: &Arc<Closes>) -> ConnHandle {
        ConnHandle {
            socket: socket.clone(),
            admin: false,
            caller: Arc::new(Caller::new(Authenticated::from(Principal::Superuser))),
            app: Arc::new(AppRecord {
                uuid: "app".into(),
                org_uuid: "org".into(),
                org_name: "org".into(),
                name: "app".into(),
                client_id: String::new(),
                client_secret: String::new(),
                created: 0,
            }),
        }
    }

    #[test]
    fn drain_all_drains_every_socket_and_each_one_registered_after_it() {
        let hub = Hub::default();
        let (before, after) = (Arc::new(Closes::default()), Arc::new(Closes::default()));
        hub.register(handle(&before));
        hub.drain_all();
        assert_eq!(*before.0.lock().unwrap(), [close_code::SERVICE_RESTART]);
        // A socket whose opening finished while the server was shutting down.
        hub.register(handle(&after));
        assert_eq!(*after.0.lock().unwrap(), [close_code::SERVICE_RESTART]);
    }

    #[test]
    fn a_presence_name_goes_from_one_socket_to_many_and_back() {
        let hub = Hub::default();
        let sockets: Vec<Arc<Closes>> = (0..3).map(|_| Arc::default()).collect();
        let conns: Vec<ConnId> = sockets.iter().map(|s| hub.register(handle(s))).collect();
        let entry = || SubEntry {
            path: "/rooms/lobby".into(),
            access: gridsocket_core::access::AccessPath::new(
                &gridsocket_core::ResourcePath::parse("/rooms/lobby").expect("path"),
                None,
            )
            .expect("canonical")
            .keep(),
            consumer: None,
            presence: "/rooms/lobby".into(),
        };
        let lobby = || Target::Entity {
            collection: "rooms".into(),
            uuid: None,
            name: Some("lobby".into()),
        };
        let watching = |hub: &Hub| {
            let mut found: Vec<ConnId> = hub
                .subscribers_of("app", "/rooms/lobby")
                .into_iter()
                .map(|(conn, _)| conn)
                .collect();
            found.sort_unstable();
            found
        };
        // One socket with two subscriptions to the name: it stays until both go.
        hub.add("app", (conns[0], SubscriptionId(1)), lobby(), entry());
        hub.add("app", (conns[0], SubscriptionId(2)), lobby(), entry());
        assert_eq!(watching(&hub), [conns[0]]);
        hub.add("app", (conns[1], SubscriptionId(1)), lobby(), entry());
        hub.add("app", (conns[2], SubscriptionId(1)), lobby(), entry());
        assert_eq!(watching(&hub), conns);
        hub.remove("app", (conns[0], SubscriptionId(1)));
        assert_eq!(watching(&hub), conns);
        hub.remove("app", (conns[0], SubscriptionId(2)));
        hub.remove("app", (conns[2], SubscriptionId(1)));
        assert_eq!(watching(&hub), [conns[1]]);
        hub.remove("app", (conns[1], SubscriptionId(1)));
        assert!(watching(&hub).is_empty());
        hub.add("app", (conns[2], SubscriptionId(3)), lobby(), entry());
        assert_eq!(watching(&hub), [conns[2]]);
    }
}
