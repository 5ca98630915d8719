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

mod dispatcher;
pub mod hub;
pub mod presence;
mod pumps;
pub mod push;
mod revocation;

use crate::api::{Api, ApiError, ApiResponse, Caller, now_ms, presence_path};
use crate::bus::Broadcast;
use crate::signal::Signal;
use crate::store::{AppRecord, ChangeView, StoreError};
use dispatcher::event_entity_json;
use gridsocket_core::presence::{PresenceConfig, PresenceUser};
use gridsocket_core::subscription::encode_event;
use gridsocket_core::{
    ApiRequest, EntityRef, Method, Params, PresenceAction, Query, RequestHandle, Resource,
    ResourcePath, SubscriptionId, Target,
};
use hub::{ConnId, ConsumerKey, Hub, SubEntry};
use presence::Presence;
use push::{EphemeralQueue, Push, SharedEvent, Sink};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Most missed changes a resume replays; further back, the reply says `"recovered": false`.
pub const MAX_REPLAY: usize = 10_000;
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

/// Settings of the realtime layer.
#[derive(Clone, Copy, Debug)]
pub struct RealtimeConfig {
    /// Most bytes of events a resume replays; past them the reply says `"recovered": false`
    /// and the client reloads (a replay is sent at once, and must fit a socket's backlog).
    pub max_replay_bytes: usize,
    /// Largest presence state of one connection, in bytes of compact JSON.
    pub max_presence_state_bytes: usize,
}

/// The realtime layer of a node: the hub of sockets and subscriptions, over the [`Api`].
pub struct Realtime {
    api: Arc<Api>,
    config: RealtimeConfig,
    hub: Hub,
    presence: Arc<Presence>,
    /// Presence events and broadcasts on their way to this node's sockets, in order.
    ephemeral: Arc<EphemeralQueue>,
    /// Where this node's broadcasts go to reach the other nodes.
    broadcast_bus: OnceLock<Box<dyn Fn(Broadcast) + Send + Sync>>,
    /// This layer, for the tasks it spawns.
    me: Weak<Realtime>,
}

impl Realtime {
    /// The realtime layer over an API.
    pub fn new(api: Arc<Api>, config: RealtimeConfig) -> Arc<Realtime> {
        let ephemeral = Arc::new(EphemeralQueue::default());
        let presence = Arc::new(Presence::new(
            PresenceConfig {
                max_state_bytes: config.max_presence_state_bytes,
                ..PresenceConfig::default()
            },
            ephemeral.clone(),
        ));
        api.read_presence_from(presence.clone());
        Arc::new_cyclic(|me| Realtime {
            api,
            config,
            hub: Hub::default(),
            presence,
            ephemeral,
            broadcast_bus: OnceLock::new(),
            me: me.clone(),
        })
    }

    /// Who is present where, on this node.
    pub fn presence(&self) -> &Presence {
        &self.presence
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
            Signal::TokenRevoked { hash } => {
                if let Some(gone) = crate::api::auth::hash_from_text(hash) {
                    self.hub
                        .close_where(|c| c.caller.token() == Some(gone), "token revoked");
                }
            }
            Signal::UserChanged { app, user } => {
                if let Some(me) = self.me.upgrade() {
                    let (app, user) = (app.clone(), user.clone());
                    tokio::spawn(async move { me.refresh_user(&app, &user).await });
                }
            }
            Signal::Resync => {
                self.presence.handle_bus_restored();
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
    /// `PRESENCE` from socket `conn`: joins (or changes its state on) or leaves `path` once
    /// the caller may read it. Request `handle` is answered by a push to the socket, in order
    /// with the presence's changes.
    #[allow(clippy::too_many_arguments)]
    pub async fn presence_command(
        &self,
        app: &AppRecord,
        caller: &Caller,
        conn: ConnId,
        handle: RequestHandle,
        path: &str,
        action: PresenceAction,
    ) {
        let started = Instant::now();
        let refuse = |e: ApiError| {
            let resp = self.api.error_response(e, started);
            self.hub.push_to(
                conn,
                Push::Complete {
                    handle,
                    status: resp.status,
                    body: resp.body,
                },
            );
        };
        let name = match presence_path(path, caller) {
            Ok(name) => name,
            Err(e) => return refuse(e),
        };
        let key = presence::book_path(&app.uuid, &name);
        match action {
            // Leaving needs no permission: a socket may always stop being somewhere.
            PresenceAction::Leave => self.presence.leave(&self.hub, &key, conn, handle),
            PresenceAction::Join { state } => {
                if let Err(e) = self.api.check_presence_access(app, caller, &name).await {
                    return refuse(e);
                }
                let user = PresenceUser {
                    uuid: self.presence_uuid(caller, conn),
                    username: caller.username().to_string(),
                };
                self.presence
                    .join(&self.hub, (&key, path), conn, user, state, handle);
            }
        }
    }

    /// Who socket `conn`'s caller is in presence and broadcasts. Somebody in particular (a
    /// user, an admin) is one presence however many sockets they have; anybody else (a guest,
    /// client credentials) is one per socket: all guests under one empty uuid would be one
    /// user, joining and leaving as one.
    fn presence_uuid(&self, caller: &Caller, conn: ConnId) -> String {
        match caller.person_uuid() {
            Some(uuid) => uuid.to_owned(),
            None => self.presence.anonymous_id(conn),
        }
    }

    /// `BROADCAST` from socket `conn`: once the caller may broadcast on `path`, `body_json`
    /// goes to the sockets subscribed to that path and those present on it, and the sender if
    /// `echo`. Answered `{"path","delivered"}`.
    ///
    /// Broadcasting needs `post` permission on `{path}/broadcast`, as presence needs `get`
    /// on `{path}/presence`: a grant to post to a path (a guest's `post:/users`, to sign up)
    /// is not one to talk to everyone watching it, and a role may grant either alone. A
    /// user's path is theirs alone, and another user's feed stays theirs (see
    /// [`gridsocket_core::access::AccessPath::beneath`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn broadcast(
        &self,
        app: &AppRecord,
        caller: &Caller,
        conn: ConnId,
        path: &str,
        body_json: &str,
        echo: bool,
    ) -> ApiResponse {
        let started = Instant::now();
        let shown = match presence_path(path, caller) {
            Ok(name) => name,
            Err(e) => return self.api.error_response(e, started),
        };
        if let Err(e) = self.may_broadcast(app, caller, &shown).await {
            return self.api.error_response(e, started);
        }
        let mut targets = self.watchers(&app.uuid, &shown);
        // The sender asked for its own message: it gets it whether it watches the path or not.
        match self.hub.socket(conn) {
            Some(me) if echo => {
                targets.insert(conn, me);
            }
            _ => {
                targets.remove(&conn);
            }
        }
        let from =
            json!({"uuid": self.presence_uuid(caller, conn), "username": &*caller.username()});
        let frame = format!(
            r#"{{"event":"broadcast","path":{},"from":{from},"body":{body_json}}}"#,
            Value::String(shown.clone())
        );
        if let Some(bus) = self.broadcast_bus.get() {
            bus(Broadcast {
                app: app.uuid.clone(),
                path: shown.clone(),
                frame: frame.clone(),
            });
        }
        let delivered = targets.len();
        let event = SharedEvent::new(frame);
        if !self.ephemeral.send(targets.into_values().collect(), event) {
            let busy = ApiError::Busy("the server's queue of broadcasts is full: retry shortly");
            return self.api.error_response(busy, started);
        }
        ApiResponse {
            status: 200,
            body: json!({"path": shown, "delivered": delivered}).to_string(),
            retry_after: None,
        }
    }

    /// A broadcast from another node: it goes to this node's sockets subscribed to or present
    /// on its path.
    pub fn handle_broadcast(&self, broadcast: Broadcast) {
        let targets = self.watchers(&broadcast.app, &broadcast.path);
        // A full queue drops it: a broadcast is never stored or sent again.
        let event = SharedEvent::new(broadcast.frame);
        if !self.ephemeral.send(targets.into_values().collect(), event) {
            tracing::debug!("a broadcast from the bus was dropped: the queue is full");
        }
    }

    /// Sends this node's broadcasts to the other nodes through `bus` (set once, when the node
    /// is put together).
    pub fn send_broadcasts_to(&self, bus: Box<dyn Fn(Broadcast) + Send + Sync>) {
        let _ = self.broadcast_bus.set(bus);
    }

    /// The local sockets subscribed to or present on presence path `shown` of application
    /// `app`, each once however many ways it watches the path.
    fn watchers(&self, app: &str, shown: &str) -> BTreeMap<ConnId, Arc<dyn Sink>> {
        let mut targets: BTreeMap<ConnId, Arc<dyn Sink>> = self
            .presence
            .present_sockets(&presence::book_path(app, shown))
            .into_iter()
            .collect();
        targets.extend(self.hub.subscribers_of(app, shown));
        targets
    }

    /// Runs the presence book's timers until `cancel`.
    pub async fn run_presence(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        loop {
            let next = self.presence.handle_timeout();
            let wait = next.map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(gridsocket_core::Instant::now())
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// May `caller` broadcast on the path named `name` (a [`presence_path`])? It needs `post`
    /// on `{name}/broadcast`.
    async fn may_broadcast(
        &self,
        app: &AppRecord,
        caller: &Caller,
        name: &str,
    ) -> Result<(), ApiError> {
        let parsed = ResourcePath::parse(name)?;
        let mut access = self
            .api
            .access_path(app, caller, &parsed)?
            .beneath("broadcast");
        self.api
            .authorize(app, caller, Method::Post, &mut access)
            .await?;
        // As a presence: what a broadcast is on must exist (a subscription may wait for an
        // entity to be made; a broadcast to its watchers before then is refused). `broadcast`
        // is a literal here: the entities are the name's.
        self.api.require_found(app, &mut access).await
    }

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
        // A collection's matrix parameters (`/books;ql=…`) are its query parameters.
        let with_matrix;
        let params = match &parsed.matrix {
            Some(matrix) => {
                let mut merged = params.clone();
                for (name, value) in matrix.iter() {
                    merged.remove(name);
                    merged.push(name, value);
                }
                with_matrix = merged;
                &with_matrix
            }
            None => params,
        };
        // A frame's `snapshot` is checked as it is read; a socket URL's (`?snapshot=…`) here.
        let snapshot = params
            .flag("snapshot")
            .ok_or_else(|| ApiError::IllegalArgument("snapshot must be true or false".into()))?;
        let mut access = self.api.access_path(app, caller, &parsed)?;
        self.api
            .authorize(app, caller, Method::Get, &mut access)
            .await?;
        // Kept resolved, so that re-checking it when grants change needs no lookup and
        // follows the entities subscribed to, whatever they are called later.
        self.api.resolve_access(app, &mut access).await?;
        let (target, consumer) = self.target_of(app, caller, &parsed, params).await?;
        // Broadcasts to the path reach the subscription by this name.
        let presence = presence_path(path, caller)?;
        // The dispatcher must know where the log stands before the subscription exists, so
        // that every later change is matched against it.
        self.ensure_dispatch_position(&app.uuid).await?;
        if let Some((key, timeout)) = &consumer {
            self.ensure_pump(key.clone(), *timeout);
        }
        let wire_id = subscription.to_string();
        let kept_path: Arc<str> = path.into();
        // Most paths are their presence name already (`/users/me/inbox` is not): one copy.
        let kept_presence = if path == presence {
            kept_path.clone()
        } else {
            presence.as_str().into()
        };
        self.hub.add(
            &app.uuid,
            (conn, subscription),
            target.clone(),
            SubEntry {
                path: kept_path,
                access: access.keep(),
                consumer: consumer.clone().map(Box::new),
                presence: kept_presence,
            },
        );
        // `name` is what broadcasts to the path carry as theirs: clients match them by it.
        let mut body = json!({"subscription": wire_id, "path": path, "name": presence});
        // `covered`: the log position up to which every change was looked at for this
        // subscription, which the confirmation's `seq` tells the client it holds.
        let (position, replay, covered) = if snapshot {
            let (position, page) = self.snapshot(app, caller, path, params).await?;
            body["snapshot"] = page;
            (position, Vec::new(), position)
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
                    if !self.may_read(app, caller, &view.record).await {
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
                // Every change up to the batch's position was looked at, not only those
                // replayed: a replay of nothing still brings the client up to it, where before
                // it was told `since` again (0 for a first resume), to read it all next time.
                (since, replay, batch.position)
            } else {
                (batch.position, Vec::new(), batch.position)
            }
        } else {
            let position = self.api.store().log_position(&app.uuid).await?;
            (position, Vec::new(), position)
        };
        let current = replay
            .last()
            .map(|(s, _)| *s)
            .unwrap_or(position)
            .max(covered);
        body["seq"] = json!(current);
        if let Some((key, _)) = &consumer {
            body["consumer"] = Value::String(key.consumer.clone());
            self.hub.wake_pump(key);
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
            // A page that cannot be read (a bad `cursor` or `limit`) refuses the subscription.
            let resp = self
                .api
                .try_app(app, caller, request, Instant::now())
                .await?;
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
                                .ok_or(ApiError::NoSuchResource(
                                    "/users/me needs a user's access token".into(),
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
                Ok((
                    Target::Feed {
                        owner: owner.uuid.into(),
                    },
                    None,
                ))
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

    /// Drops changes older than the retention.
    pub async fn prune_log(&self, retention: Duration) {
        let before = now_ms() - retention.as_millis() as i64;
        match self.api.store().prune_changes(before).await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "change log pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the change log failed"),
        }
    }
}
