//! Realtime: subscriptions, the dispatcher that pushes each application's changes in log
//! order, revocation, and queue consumers.
//!
//! Every write lands in its application's change log, in the same transaction; the API
//! signals the write, and the [`hub`] marks the application dirty; the dispatcher reads the
//! log after the last position it dispatched, in order, matches each change against the
//! application's subscriptions and pushes each event to its subscribers' [`Sink`]s (the
//! network layer's sockets), which write it at once or keep it in a bounded backlog. A socket
//! whose backlog is full closes with 4008 (slow consumer) and resumes with `since`: nobody
//! waits for it and its memory stays bounded.

pub mod hub;
pub mod push;

use crate::api::{Api, ApiError, ApiResponse, Caller, now_ms, render_entity, user_may_log_in};
use crate::signal::Signal;
use crate::store::{AppRecord, ChangeRecord, ChangeView, Entity, EntityKey, QueueRead, StoreError};
use gridsocket_core::access::AccessPath;
use gridsocket_core::subscription::{ChangeKind, encode_event};
use gridsocket_core::{
    ApiRequest, EntityRef, EventKind, Method, Params, Query, Resource, ResourcePath,
    SubscriptionId, Target, close_code,
};
use hub::{ConnHandle, ConnId, ConsumerKey, Hub, Pump, SubEntry, SubKey};
use push::{Push, SharedEvent, Sink};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most missed changes a resume replays; further back, the reply says `"recovered": false`.
pub const MAX_REPLAY: usize = 10_000;
/// Changes the dispatcher reads from the log at a time.
const DISPATCH_BATCH: usize = 512;
/// Messages a queue consumer pump takes at a time.
const PUMP_BATCH: usize = 100;
/// Default transaction timeout of a queue consumer subscription, ms.
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 30_000;

/// A started subscription, for [`gridsocket_core::ServerSession::confirm_subscription`].
pub struct SubscribeOk {
    /// Events up to here count as delivered.
    pub position: u64,
    /// The confirmation body.
    pub body: String,
    /// Missed events to send first, in order.
    pub replay: Vec<(u64, Arc<str>)>,
}

/// The JSON of an event's `entity`: the entity as REST shows it, or the queue message.
fn event_entity_json(rec: &ChangeRecord) -> String {
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

/// Settings of the realtime layer.
#[derive(Clone, Copy, Debug)]
pub struct RealtimeConfig {
    /// Most bytes of events a resume replays; past them the reply says `"recovered": false`
    /// and the client reloads (a replay is sent at once, and must fit a socket's backlog).
    pub max_replay_bytes: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            max_replay_bytes: 2 << 20,
        }
    }
}

/// The realtime layer of a node: the hub of sockets and subscriptions, over the [`Api`].
pub struct Realtime {
    api: Arc<Api>,
    config: RealtimeConfig,
    hub: Hub,
    /// This layer, for the tasks it spawns.
    me: Weak<Realtime>,
}

impl Realtime {
    /// The realtime layer over an API.
    pub fn new(api: Arc<Api>, config: RealtimeConfig) -> Arc<Realtime> {
        Arc::new_cyclic(|me| Realtime {
            api,
            config,
            hub: Hub::default(),
            me: me.clone(),
        })
    }

    /// The API underneath.
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Sockets and their subscriptions.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Acts on a signal, from this node or another (the API acts on its own part).
    pub fn apply_signal(&self, signal: &Signal) {
        match signal {
            Signal::Changed { app } => self.hub.notify(app),
            Signal::GrantsChanged => self.hub.request_revalidation(),
            Signal::TokensRevoked { subject, except } => {
                let keep = except.as_deref().and_then(crate::api::auth::hash_from_text);
                self.close_user_sockets(subject, keep);
            }
            Signal::UserChanged { app, user } => {
                if let Some(me) = self.me.upgrade() {
                    let (app, user) = (app.clone(), user.clone());
                    tokio::spawn(async move { me.refresh_user(&app, &user).await });
                }
            }
            Signal::Resync => {
                for app in self.hub.watched_apps() {
                    self.hub.notify(&app);
                }
                self.hub.request_revalidation();
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move { me.recheck_socket_tokens().await });
                }
            }
        }
    }
}

impl Realtime {
    /// Starts a subscription for socket `conn`.
    #[allow(clippy::too_many_arguments)]
    pub async fn subscribe(
        &self,
        app: &Arc<AppRecord>,
        caller: &Caller,
        conn: ConnId,
        subscription: SubscriptionId,
        path: &str,
        params: &Params,
        since: Option<u64>,
    ) -> Result<SubscribeOk, ApiResponse> {
        let started = Instant::now();
        let result = self
            .start_subscription(app, caller, conn, subscription, path, params, since)
            .await;
        result.map_err(|e| {
            self.hub.remove(&app.uuid, (conn, subscription));
            self.api.error_response(e, started)
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_subscription(
        &self,
        app: &Arc<AppRecord>,
        caller: &Caller,
        conn: ConnId,
        subscription: SubscriptionId,
        path: &str,
        params: &Params,
        since: Option<u64>,
    ) -> Result<SubscribeOk, ApiError> {
        let parsed = ResourcePath::parse(path)?;
        let mut access = self.api.access_path(app, caller, &parsed)?;
        self.api
            .authorize(app, caller, Method::Get, &mut access)
            .await?;
        // Kept resolved, so that re-checking it when grants change needs no lookup and
        // follows the entities subscribed to, whatever they are called later.
        self.api.resolve_access(app, &mut access).await?;
        let (target, consumer) = self.target_of(app, caller, &parsed, params).await?;
        // The dispatcher must know where the log stands before the subscription exists, so
        // that every later change is matched against it.
        self.ensure_dispatch_position(&app.uuid).await?;
        if let Some((key, timeout)) = &consumer {
            self.ensure_pump(key.clone(), *timeout);
        }
        let wire_id = subscription.to_string();
        self.hub.add(
            &app.uuid,
            (conn, subscription),
            target.clone(),
            SubEntry {
                path: path.into(),
                access: Arc::new(access),
                wire_id: wire_id.as_str().into(),
                consumer: consumer.clone(),
            },
        );
        let mut body = json!({"subscription": wire_id, "path": path});
        let snapshot = params.get("snapshot") == Some("true");
        let (position, replay) = if snapshot {
            let (position, page) = self.snapshot(app, caller, path, params).await?;
            body["snapshot"] = page;
            (position, Vec::new())
        } else if let (Some(since), None) = (since, &consumer) {
            let batch = self
                .api
                .store()
                .changes_since(&app.uuid, since, MAX_REPLAY + 1)
                .await?;
            let recovered = since <= batch.position
                && since.saturating_add(1) >= batch.first_retained
                && batch.changes.len() <= MAX_REPLAY;
            let mut recovered = recovered;
            let mut replay = Vec::new();
            let mut bytes = 0usize;
            if recovered {
                for rec in batch.changes {
                    let view = ChangeView::new(rec);
                    let Some(kind) = target.event_for(&view.change()) else {
                        continue;
                    };
                    if !self.may_read(app, caller, &view.record, kind).await {
                        continue;
                    }
                    let frame = encode_event(
                        kind,
                        &wire_id,
                        path,
                        view.record.seq,
                        &event_entity_json(&view.record),
                    );
                    bytes = bytes.saturating_add(frame.len());
                    if bytes > self.config.max_replay_bytes {
                        // More than a socket takes at once: the client reloads instead.
                        recovered = false;
                        replay = Vec::new();
                        break;
                    }
                    replay.push((view.record.seq, frame.into()));
                }
            }
            body["recovered"] = Value::Bool(recovered);
            if recovered {
                (since, replay)
            } else {
                (batch.position, Vec::new())
            }
        } else {
            (self.api.store().log_position(&app.uuid).await?, Vec::new())
        };
        let current = replay
            .last()
            .map(|(s, _)| *s)
            .unwrap_or(position)
            .max(position);
        body["seq"] = json!(current);
        if let Some((key, _)) = &consumer {
            body["consumer"] = Value::String(key.consumer.clone());
            self.wake_pump(key);
        }
        Ok(SubscribeOk {
            position,
            body: body.to_string(),
            replay,
        })
    }

    /// The current result page of `path` (as GET returns it) with the log position it shows.
    async fn snapshot(
        &self,
        app: &AppRecord,
        caller: &Caller,
        path: &str,
        params: &Params,
    ) -> Result<(u64, Value), ApiError> {
        let mut get_params = params.clone();
        get_params.remove("snapshot");
        get_params.remove("consumer");
        for _ in 0..8 {
            let before = self.api.store().log_position(&app.uuid).await?;
            let request = ApiRequest {
                method: Method::Get,
                path: path.to_owned(),
                params: get_params.clone(),
                body: None,
            };
            let resp = self
                .api
                .handle_app(app, caller, request, Instant::now())
                .await;
            let after = self.api.store().log_position(&app.uuid).await?;
            // No change committed between the two reads: the page is exactly the state at it.
            if before == after {
                let page = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
                return Ok((before, page));
            }
        }
        Err(ApiError::Store(StoreError::Backend(Box::new(
            std::io::Error::other("the log kept moving while taking a snapshot; retry"),
        ))))
    }

    async fn target_of(
        &self,
        app: &AppRecord,
        caller: &Caller,
        path: &ResourcePath,
        params: &Params,
    ) -> Result<(Target, Option<(ConsumerKey, u64)>), ApiError> {
        let unsupported = || {
            ApiError::IllegalArgument(format!(
                "cannot subscribe to /{}: subscribe to an entity, a collection, a user's or group's feed, or a queue",
                path.segments.join("/")
            ))
        };
        match &path.resource {
            Resource::Entity { collection, entity } => {
                let target = match entity {
                    EntityRef::Me => Target::Entity {
                        collection: collection.clone(),
                        uuid: Some(
                            caller
                                .user_uuid()
                                .ok_or(ApiError::Unauthorized(
                                    "/users/me needs a user's token".into(),
                                ))?
                                .to_owned(),
                        ),
                        name: None,
                    },
                    EntityRef::Uuid(u) => Target::Entity {
                        collection: collection.clone(),
                        uuid: Some(u.clone()),
                        name: None,
                    },
                    EntityRef::Name(n) => {
                        // It may not exist yet: watch the name, and its uuid if it does.
                        let found = self
                            .api
                            .lookup_entity(app, Some(collection), entity)
                            .await?;
                        Target::Entity {
                            collection: collection.clone(),
                            uuid: found.map(|e| e.uuid),
                            name: Some(n.to_ascii_lowercase()),
                        }
                    }
                };
                Ok((target, None))
            }
            Resource::Collection { collection } => {
                let filter = match params.get("ql").filter(|q| !q.trim().is_empty()) {
                    Some(ql) => {
                        let q = Query::parse_with(ql, self.api.config().query_limits)?;
                        q.filter.is_some().then(|| Arc::new(q))
                    }
                    None => None,
                };
                Ok((
                    Target::Collection {
                        collection: collection.clone(),
                        filter,
                    },
                    None,
                ))
            }
            Resource::Related {
                collection,
                entity,
                relation,
                inbound: false,
                target: None,
            } if relation == "feed" && matches!(collection.as_str(), "users" | "groups") => {
                let me = caller.user_uuid().map(|u| EntityRef::Uuid(u.to_owned()));
                let entity = match entity {
                    EntityRef::Me => me.as_ref().unwrap_or(entity),
                    other => other,
                };
                let owner = self
                    .api
                    .lookup_entity(app, Some(collection), entity)
                    .await?
                    .ok_or_else(|| {
                        ApiError::NotFound(format!("/{} not found", path.segments[..2].join("/")))
                    })?;
                Ok((Target::Feed { owner: owner.uuid }, None))
            }
            Resource::Queue {
                queue,
                part: gridsocket_core::path::QueuePart::Messages,
            } if queue != "/" => {
                let consumer = match params.get("consumer").filter(|c| !c.is_empty()) {
                    None => None,
                    Some(c) => {
                        let timeout = crate::api::queue_timeout(
                            params.get("timeout"),
                            DEFAULT_QUEUE_TIMEOUT_MS,
                        )?;
                        if timeout == 0 {
                            return Err(ApiError::IllegalArgument(
                                "a consumer subscription's timeout must be a positive number of ms"
                                    .into(),
                            ));
                        }
                        Some((
                            ConsumerKey {
                                app: app.uuid.clone(),
                                queue: queue.clone(),
                                consumer: c.to_owned(),
                            },
                            timeout,
                        ))
                    }
                };
                Ok((
                    Target::Queue {
                        queue: queue.clone(),
                    },
                    consumer,
                ))
            }
            _ => Err(unsupported()),
        }
    }

    /// May this caller see this change? Entities are checked as a GET of their canonical
    /// path (by uuid and name); feed items and queue messages were checked when subscribing.
    async fn may_read(
        &self,
        app: &AppRecord,
        caller: &Caller,
        rec: &ChangeRecord,
        _kind: EventKind,
    ) -> bool {
        matches!(rec.kind, ChangeKind::FeedItem | ChangeKind::QueueMessage)
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

    async fn ensure_dispatch_position(&self, app: &str) -> Result<(), ApiError> {
        let known = self
            .hub
            .state()
            .apps
            .get(app)
            .and_then(|a| a.dispatched)
            .is_some();
        if !known {
            let position = self.api.store().log_position(app).await?;
            let mut st = self.hub.state();
            let subs = st.apps.entry(app.to_owned()).or_default();
            if subs.dispatched.is_none() {
                subs.dispatched = Some(position);
            }
        }
        Ok(())
    }

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

    async fn dispatch_app(&self, app_uuid: &str) -> Result<(), StoreError> {
        loop {
            let (from, has_subs) = {
                let st = self.hub.state();
                match st.apps.get(app_uuid) {
                    Some(a) => (a.dispatched, !a.entries.is_empty()),
                    None => return Ok(()),
                }
            };
            let Some(from) = from else {
                return Ok(());
            };
            if !has_subs {
                let position = self.api.store().log_position(app_uuid).await?;
                if let Some(a) = self.hub.state().apps.get_mut(app_uuid) {
                    a.dispatched = Some(position.max(from));
                }
                return Ok(());
            }
            let batch = self
                .api
                .store()
                .changes_since(app_uuid, from, DISPATCH_BATCH)
                .await?;
            let n = batch.changes.len();
            // A burst of changes: every event of the batch for one socket goes out in one
            // write. A single change is written to each socket right away.
            let mut corked = (n > 1).then(Vec::new);
            for rec in batch.changes {
                self.dispatch_change(app_uuid, ChangeView::new(rec), corked.as_mut())
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
        app_uuid: &str,
        view: ChangeView,
        mut corked: Option<&mut Vec<Arc<dyn Sink>>>,
    ) {
        let seq = view.record.seq;
        /// One matched subscription, with what deciding and encoding its event needs.
        struct Delivery {
            socket: Arc<dyn Sink>,
            subscription: SubscriptionId,
            kind: EventKind,
            path: Arc<str>,
            wire_id: Arc<str>,
            consumer: Option<ConsumerKey>,
            admin: bool,
            caller: Arc<Caller>,
            app: Arc<AppRecord>,
        }
        let deliveries: Vec<Delivery> = {
            let st = self.hub.state();
            let mut matched = Vec::new();
            let Some(subs) = st.apps.get(app_uuid) else {
                return;
            };
            subs.index.matches(&view.change(), &mut matched);
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
                        wire_id: entry.wire_id.clone(),
                        consumer: entry.consumer.as_ref().map(|(c, _)| c.clone()),
                        admin: handle.admin,
                        caller: handle.caller.clone(),
                        app: handle.app.clone(),
                    })
                })
                .collect()
        };
        if !deliveries.is_empty() {
            // The entity is serialized once per change, and each distinct frame (kind,
            // subscription id, path) encoded once: subscribers that get the same bytes share
            // them. Subscribers in a row mostly get the same frame as the one before.
            let entity_json = event_entity_json(&view.record);
            let mut frames: HashMap<(EventKind, Arc<str>, Arc<str>), Arc<SharedEvent>> =
                HashMap::new();
            let mut last: Option<(EventKind, &str, &str, Arc<SharedEvent>)> = None;
            // Whether a user may read this change depends only on who they are: asked once
            // per user, not once per socket; the app's admins read everything.
            let mut readable: HashMap<&str, bool> = HashMap::new();
            let mut last_reader: Option<(&str, bool)> = None;
            let now = gridsocket_core::Instant::now();
            for d in &deliveries {
                if let Some(consumer) = &d.consumer {
                    self.wake_pump(consumer);
                    continue;
                }
                let allowed = d.admin || {
                    let who = d.caller.user_uuid().unwrap_or("");
                    let known = match last_reader {
                        // The same user as the subscriber before: no lookup.
                        Some((last, known)) if last == who => Some(known),
                        _ => readable.get(who).copied(),
                    };
                    let ok = match known {
                        Some(known) => known,
                        None => {
                            let ok = self.may_read(&d.app, &d.caller, &view.record, d.kind).await;
                            readable.insert(who, ok);
                            ok
                        }
                    };
                    last_reader = Some((who, ok));
                    ok
                };
                if !allowed {
                    continue;
                }
                let event = match &last {
                    Some((kind, id, path, event))
                        if *kind == d.kind && **id == *d.wire_id && **path == *d.path =>
                    {
                        event.clone()
                    }
                    _ => {
                        let event = frames
                            .entry((d.kind, d.wire_id.clone(), d.path.clone()))
                            .or_insert_with(|| {
                                SharedEvent::new(encode_event(
                                    d.kind,
                                    &d.wire_id,
                                    &d.path,
                                    seq,
                                    &entity_json,
                                ))
                            })
                            .clone();
                        last = Some((d.kind, &d.wire_id, &d.path, event.clone()));
                        event
                    }
                };
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
        if let Some(a) = self.hub.state().apps.get_mut(app_uuid) {
            a.dispatched = Some(a.dispatched.unwrap_or(0).max(seq));
        }
    }

    /// Re-checks every subscription of non-admin callers after a permission or user change;
    /// those that lost read access are revoked.
    async fn revalidate(&self) {
        /// One subscription to re-check: its app, subscriber, key and canonical path.
        type Check = (Arc<AppRecord>, Arc<Caller>, SubKey, Arc<AccessPath>);
        let subs: Vec<Check> = {
            let st = self.hub.state();
            st.apps
                .values()
                .flat_map(|a| a.entries.iter())
                .filter_map(|(key, entry)| {
                    let conn = st.conns.get(&key.0)?;
                    Some((
                        conn.app.clone(),
                        conn.caller.clone(),
                        *key,
                        entry.access.clone(),
                    ))
                })
                .collect()
        };
        for (app, caller, key, access) in subs {
            if self.api.is_app_admin(&app, &caller) {
                continue;
            }
            let mut access = (*access).clone();
            let allowed = self
                .api
                .authorize(&app, &caller, Method::Get, &mut access)
                .await
                .is_ok();
            if !allowed {
                self.hub.remove(&app.uuid, key);
                self.hub.push_to(
                    key.0,
                    Push::Revoke {
                        subscription: key.1,
                        reason: "forbidden",
                    },
                );
            }
        }
    }

    /// Ends every socket of a user whose tokens were revoked, but the one using the kept
    /// token `except`: each subscription gets a `revoked` event, then the socket closes with
    /// 4401.
    pub(super) fn close_user_sockets(&self, user_uuid: &str, except: Option<[u8; 32]>) {
        self.close_sockets(
            |c| {
                c.caller.user_uuid() == Some(user_uuid)
                    && (except.is_none() || c.caller.token() != except)
            },
            "token revoked",
        );
    }

    /// Re-reads a user whose username, email, activation or disabled flag changed: the
    /// sockets of a user who may no longer act close (4401); the others speak for the user as
    /// they are now, and every subscription is re-checked.
    pub(super) async fn refresh_user(&self, app: &str, user: &str) {
        let found = self
            .api
            .store()
            .entity(app, Some("users"), EntityKey::Uuid(user))
            .await;
        let mine = |c: &ConnHandle| c.caller.user_uuid() == Some(user);
        match found {
            Ok(Some(u)) if user_may_log_in(&u).is_ok() => {
                let name = u.name.unwrap_or_default();
                for c in self.hub.state().conns.values().filter(|c| mine(c)) {
                    c.caller.set_username(&name);
                }
                self.hub.request_revalidation();
            }
            Ok(_) => self.close_sockets(mine, "user disabled or deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "could not re-read a changed user; closing their sockets");
                self.close_sockets(mine, "user changed");
            }
        }
    }

    /// Ends the sockets `which` picks as [`Self::close_user_sockets`] does.
    fn close_sockets(&self, which: impl Fn(&ConnHandle) -> bool, reason: &'static str) {
        let mut st = self.hub.state();
        let conns: Vec<ConnId> = st
            .conns
            .iter()
            .filter(|(_, c)| which(c))
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            let app = match st.conns.get(&conn) {
                Some(c) => c.app.uuid.clone(),
                None => continue,
            };
            let keys: Vec<SubKey> = st
                .apps
                .get(&app)
                .map(|a| a.entries.keys().filter(|k| k.0 == conn).copied().collect())
                .unwrap_or_default();
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
            if let Some(a) = st.apps.get_mut(&app) {
                for key in keys {
                    a.index.remove(&key);
                    a.entries.remove(&key);
                }
            }
        }
    }

    /// Re-checks, after a bus outage, the tokens of this node's sockets: a socket whose token
    /// was revoked meanwhile is closed as if the revocation's signal had arrived.
    pub(super) async fn recheck_socket_tokens(&self) {
        let tokens: Vec<[u8; 32]> = {
            let st = self.hub.state();
            let mut t: Vec<[u8; 32]> = st.conns.values().filter_map(|c| c.caller.token()).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        for hash in tokens {
            match self.api.store().token(&hash).await {
                Ok(Some(_)) => {}
                Ok(None) => self.close_sockets(|c| c.caller.token() == Some(hash), "token revoked"),
                Err(e) => tracing::warn!(error = %e, "could not re-check a socket's token"),
            }
        }
    }

    /// Checks a token sent with `AUTH` on a socket: it must speak for the same principal.
    /// Returns its expiry (ms since the epoch).
    pub async fn reauthenticate(
        &self,
        caller: &Caller,
        token: &str,
    ) -> Result<Option<i64>, ApiResponse> {
        let started = Instant::now();
        let who = match self.api.principal_of_token(token).await {
            Ok(who) => who,
            Err(e) => return Err(self.api.error_response(e, started)),
        };
        if who.principal != *caller.principal() {
            return Err(self.api.error_response(
                ApiError::Forbidden(
                    "AUTH must keep the same user; open a new socket for another".into(),
                ),
                started,
            ));
        }
        caller.set_token(crate::api::auth::token_hash(token));
        Ok(self.api.token_expiry(token))
    }

    /// Drops changes older than the retention.
    pub async fn prune_log(&self, retention: Duration) {
        let before = now_ms() - retention.as_millis() as i64;
        match self.api.store().prune_changes(before).await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "change log pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the change log failed"),
        }
    }

    fn ensure_pump(&self, key: ConsumerKey, timeout_ms: u64) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let mut st = self.hub.state();
        if st.pumps.contains_key(&key) {
            return;
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        let stop = CancellationToken::new();
        st.pumps.insert(
            key.clone(),
            Pump {
                wake: wake.clone(),
                members: Vec::new(),
                next: 0,
                stop: stop.clone(),
            },
        );
        tokio::spawn(me.pump(key, timeout_ms, wake, stop));
    }

    fn wake_pump(&self, key: &ConsumerKey) {
        if let Some(p) = self.hub.state().pumps.get(key) {
            p.wake.notify_one();
        }
    }

    /// Hands a queue's messages to the sockets subscribed as one consumer, one socket per
    /// message, each in a transaction that times out into a redelivery unless acknowledged.
    async fn pump(
        self: Arc<Self>,
        key: ConsumerKey,
        timeout_ms: u64,
        wake: Arc<tokio::sync::Notify>,
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
                let member = {
                    let mut st = self.hub.state();
                    let Some(pump) = st.pumps.get_mut(&key) else {
                        return;
                    };
                    if pump.members.is_empty() {
                        None
                    } else {
                        let k = pump.members[pump.next % pump.members.len()];
                        pump.next = pump.next.wrapping_add(1);
                        st.apps
                            .get(&key.app)
                            .and_then(|a| a.entries.get(&k))
                            .map(|e| (k, e.path.clone(), e.wire_id.clone()))
                    }
                };
                // Nobody to hand it to: its transaction times out and it comes again later.
                let Some((k, path, wire_id)) = member else {
                    continue;
                };
                let frame = encode_event(
                    EventKind::Create,
                    &wire_id,
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
