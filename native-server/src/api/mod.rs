//! The API: one implementation of the Usergrid API that REST and the socket share.
//!
//! REST authenticates every request (the token, then the caller's permissions); a socket does
//! that once when it connects and keeps the result in a [`Caller`], whose grants are reloaded
//! only when some permission in the server changes. Both end in [`Api::handle_app`], so the
//! same request gets the same status and body either way. What changes here is announced as a
//! [`Signal`], for the realtime layer and the other nodes.

mod access;
mod activities;
mod assets;
pub mod auth;
pub mod dedup;
mod entities;
mod envelope;
mod error;
mod management;
mod passwords;
mod presence;
mod queues;
mod relations;
mod router;
mod users;

#[cfg(test)]
mod tests;

pub use access::{Authenticated, Caller, Principal, user_may_log_in};
pub use assets::{AssetReply, Upload};
pub use envelope::render_entity;
pub use error::ApiError;
pub use presence::{PresenceSource, presence_path};
pub use queues::queue_timeout;

use crate::api::auth::{Credentials, TokenCache, token_hash};
use crate::metrics::Metrics;
use crate::signal::Signal;
use crate::store::{AppRecord, Store, TokenKind, TokenRecord};
use envelope::error_json;
use envelope::{Body, Reply};
use gridsocket_core::path::split_segments;
use gridsocket_core::{
    ApiRequest, ConnectPath, Method, Params, QueryLimits, ResourcePath, close_code,
};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A finished request: HTTP status and the JSON body as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Seconds to wait before retrying (REST's `Retry-After`), for a refusal that has one.
    pub retry_after: Option<u64>,
}

/// The longest a token lives, whatever its grant asks for (Usergrid's `LONG_TOKEN_AGE`).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Base of the `uri` field (`http://127.0.0.1:8080`).
    pub base_url: String,
    /// Organization of the app-only URL form `/{app}/…`.
    pub default_org: Option<String>,
    /// Bootstrap superuser `(name, password)`.
    pub superuser: Option<(String, String)>,
    /// Lifetime of a token when the request asks for none.
    pub token_ttl: Duration,
    /// Largest JSON body a POST or PUT may store, in bytes.
    pub max_entity_bytes: usize,
    /// Largest asset an entity may carry, in bytes.
    pub max_asset_bytes: usize,
    /// How complex a `ql` may be.
    pub query_limits: QueryLimits,
    /// How long a query may run.
    pub query_timeout: Duration,
    /// Most entities a collection query reads for one page.
    pub max_query_rows: usize,
    /// Failed password logins allowed per username per minute (0: any).
    pub login_failures_per_user: u32,
    /// Failed logins allowed per client address per minute (0: any).
    pub login_failures_per_ip: u32,
    /// Users one client address may sign up per minute (0: any).
    pub signups_per_ip: u32,
    /// Password hashes and checks that run at once.
    pub max_password_checks: usize,
}

/// What a socket is bound to once its handshake succeeds.
pub struct SocketContext {
    /// The application named by the URL.
    pub app: Arc<AppRecord>,
    /// Who connected, with cached grants.
    pub caller: Arc<Caller>,
    /// The resource path in the URL after the app, if any (`/users/johndoe/inbox`): the
    /// socket subscribes to it at once.
    pub resource: Option<String>,
    /// The URL's query parameters (`ql`, `consumer`, … for that subscription).
    pub params: Params,
    /// When the connection's token expires, ms since the epoch.
    pub expires: Option<i64>,
}

/// A refused socket handshake: the error frame's status and body, and the close code.
#[derive(Debug)]
pub struct ConnectRefusal {
    /// HTTP-style status of the error frame.
    pub status: u16,
    /// Usergrid error body, JSON text.
    pub body: String,
    /// WebSocket close code (4401, 4404, …).
    pub close_code: u16,
}

impl ConnectRefusal {
    /// The connection's credentials could not be checked within the handshake timeout.
    pub fn timed_out() -> ConnectRefusal {
        ConnectRefusal {
            status: 503,
            body: gridsocket_core::wire::error_body_json(
                "handshake_timeout",
                "the connection could not be authenticated in time; retry",
            ),
            close_code: close_code::TRY_AGAIN_LATER,
        }
    }
}

#[derive(Clone)]
struct CachedToken {
    /// What it resolved to, its expiry with it.
    who: Authenticated,
    subject: String,
}

/// Who presents a token. Sockets' tokens go to a small cache of their own: a socket keeps its
/// caller for its life, so caching its token only helps other sockets with the same token
/// (one user's tabs, a reconnect), and a node's many sockets of distinct users would
/// otherwise hold an entry each (~300 B a socket) and crowd REST calls' tokens out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Presenter {
    /// A REST request (or a management call).
    Request,
    /// A socket, at connect or with `AUTH`.
    Socket,
}

/// Tokens the sockets' cache holds at most (it empties itself when full, like the other).
const SOCKET_TOKENS: usize = 1_024;

/// The Usergrid API over a [`Store`].
pub struct Api {
    store: Arc<dyn Store>,
    config: ApiConfig,
    /// REST calls' tokens.
    tokens: TokenCache<CachedToken>,
    /// Sockets' tokens, a few (see [`Presenter`]).
    socket_tokens: TokenCache<CachedToken>,
    apps: Mutex<HashMap<(String, String), Arc<AppRecord>>>,
    /// Bumped whenever a permission, role or group membership changes anywhere, so cached
    /// grants know to reload.
    grants_generation: AtomicU64,
    /// Each user's grants, one copy for all its sockets.
    shared_grants: access::SharedGrants,
    /// The server's metrics.
    metrics: Arc<Metrics>,
    /// Password checks and login throttling.
    logins: passwords::Logins,
    /// Where signals go besides this API: the realtime layer and the bus.
    signals: OnceLock<SignalSink>,
    presence: OnceLock<Arc<dyn PresenceSource>>,
    /// Work that runs to its end whoever waits for it, and that shutdown waits for: writes
    /// whose callers stopped waiting, writes' answers on their way to the store.
    lasting: tokio_util::task::TaskTracker,
}

/// Where the API's signals go once it has applied them itself.
pub type SignalSink = Box<dyn Fn(Signal) + Send + Sync>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) use gridsocket_core::wire::json_size;

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

impl Api {
    /// A service over a store.
    pub fn new(store: Arc<dyn Store>, mut config: ApiConfig) -> Arc<Api> {
        // The superuser's password is kept only as a hash.
        let logins = passwords::Logins::new(
            config.superuser.take(),
            config.login_failures_per_user,
            config.login_failures_per_ip,
            config.signups_per_ip,
            config.max_password_checks,
        );
        Arc::new(Api {
            logins,
            store,
            config,
            tokens: TokenCache::new(100_000),
            socket_tokens: TokenCache::new(SOCKET_TOKENS),
            apps: Mutex::new(HashMap::new()),
            grants_generation: AtomicU64::new(0),
            shared_grants: access::SharedGrants::default(),
            metrics: Arc::new(Metrics::default()),
            signals: OnceLock::new(),
            presence: OnceLock::new(),
            lasting: tokio_util::task::TaskTracker::new(),
        })
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    pub(crate) fn error_response(&self, err: ApiError, started: Instant) -> ApiResponse {
        // A client's own mistake that the store found (a taken name: 400) is no failure of
        // the server's, and logging it would let any client fill the log with errors.
        if let ApiError::Store(e) = &err
            && err.status() >= 500
        {
            tracing::error!(error = %e, "store failure");
        }
        ApiResponse {
            status: err.status(),
            body: error_json(&err, now_ms(), elapsed_ms(started)),
            retry_after: err.retry_after(),
        }
    }

    fn respond(&self, result: Reply, started: Instant) -> ApiResponse {
        match result {
            Ok((status, Body::Envelope(mut env))) => {
                env.timestamp = now_ms();
                env.duration = elapsed_ms(started);
                ApiResponse {
                    status,
                    body: serde_json::to_string(&env).unwrap_or_default(),
                    retry_after: None,
                }
            }
            Ok((status, Body::Json(value))) => ApiResponse {
                status,
                body: value.to_string(),
                retry_after: None,
            },
            Err(e) => self.error_response(e, started),
        }
    }

    /// A REST request: `path` is the whole URL path; `body` is the parsed JSON body, or the
    /// reason it could not be parsed.
    pub async fn handle_rest(
        &self,
        method: Method,
        path: &str,
        params: Params,
        body: Result<Option<Value>, String>,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> ApiResponse {
        let started = Instant::now();
        let body = match body {
            Ok(b) => b,
            Err(why) => return self.error_response(ApiError::BadBody(why), started),
        };
        let segments = match split_segments(path) {
            Ok(s) => s,
            Err(e) => return self.error_response(e.into(), started),
        };
        let creds = Credentials::from_request(&params, authorization);
        match segments.first().map(String::as_str) {
            None => self.respond(
                Ok((200, Body::Envelope(Box::new(self.root_envelope())))),
                started,
            ),
            Some("management") => {
                let result = self
                    .management(method, &segments[1..], &params, body, &creds, peer)
                    .await;
                self.respond(result, started)
            }
            Some(_) => {
                let found = self.rest_caller(path, &segments, &creds, peer).await;
                let (app, caller, path) = match found {
                    Ok(found) => found,
                    Err(e) => return self.error_response(e, started),
                };
                let request = ApiRequest {
                    method,
                    path,
                    params,
                    body,
                };
                self.handle_app(&app, &caller, request, started).await
            }
        }
    }

    /// The application a REST path names (`raw`, split into `segments`), the caller its
    /// credentials make, and the path inside the application, as sent (still encoded, with
    /// any matrix parameters).
    async fn rest_caller(
        &self,
        raw: &str,
        segments: &[String],
        creds: &Credentials,
        peer: Option<IpAddr>,
    ) -> Result<(Arc<AppRecord>, Caller, String), ApiError> {
        let (app, rest) = self.resolve_app_path(segments).await?;
        let who = self
            .authenticate(creds, Some(&app), peer, Presenter::Request)
            .await?;
        let caller = Caller::new(who).at(peer);
        if let Credentials::Token(t) = creds {
            caller.set_token(token_hash(t));
        }
        let consumed = segments.len() - rest.len();
        let inside: Vec<&str> = raw
            .split('/')
            .filter(|s| !s.is_empty())
            .skip(consumed)
            .collect();
        Ok((app, caller, format!("/{}", inside.join("/"))))
    }

    fn root_envelope(&self) -> envelope::Envelope {
        envelope::Envelope {
            action: "get".into(),
            data: Some(
                serde_json::json!({"name": "gridsocket", "version": env!("CARGO_PKG_VERSION")}),
            ),
            ..Default::default()
        }
    }

    /// Opens a socket: resolves the app in the URL and authenticates once.
    pub async fn open_socket(
        &self,
        target: &str,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<SocketContext, ConnectRefusal> {
        let started = Instant::now();
        let refuse = |err: ApiError, code: u16| ConnectRefusal {
            status: err.status(),
            body: error_json(&err, now_ms(), elapsed_ms(started)),
            close_code: code,
        };
        let connect = ConnectPath::parse(target).map_err(|e| {
            let code = unreadable_url_close(&e);
            refuse(e.into(), code)
        })?;
        let found = self
            .settle_app(connect.candidates())
            .await
            .map_err(|e| refuse(e, close_code::TRY_AGAIN_LATER))?;
        let Some((app, rest)) = found else {
            return Err(refuse(
                ApiError::AppNotFound(target.split('?').next().unwrap_or("").to_owned()),
                close_code::NOT_FOUND,
            ));
        };
        let creds = Credentials::from_request(&connect.params, authorization);
        let who = self
            .authenticate(&creds, Some(&app), peer, Presenter::Socket)
            .await
            .map_err(|e| refuse(e, close_code::UNAUTHORIZED))?;
        let expires = who.expires;
        let caller = Arc::new(Caller::new(who).at(peer));
        if !self.may_act_in(&app, &caller) {
            return Err(refuse(
                ApiError::Unauthorized("the token is not valid for this application".into()),
                close_code::UNAUTHORIZED,
            ));
        }
        if let Credentials::Token(t) = &creds {
            caller.set_token(token_hash(t));
        }
        let resource = if rest.is_empty() {
            None
        } else {
            let path = format!("/{}", rest.join("/"));
            let parsed = ResourcePath::parse(&path).map_err(|e| {
                let code = unreadable_url_close(&e);
                refuse(e.into(), code)
            })?;
            // A socket opened on a resource must be allowed to read it.
            self.check_access(&app, &caller, Method::Get, &parsed)
                .await
                .map_err(|e| refuse(e, close_code::UNAUTHORIZED))?;
            Some(path)
        };
        Ok(SocketContext {
            app,
            caller,
            resource,
            params: connect.params,
            expires,
        })
    }

    /// Executes one request inside an application, as `caller`. REST and sockets both end here.
    pub async fn handle_app(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: ApiRequest,
        started: Instant,
    ) -> ApiResponse {
        let result = self.app_call(app, caller, &request).await;
        self.respond(result, started)
    }

    /// As [`Api::handle_app`], but a refusal comes back as the error it is, for a caller that
    /// answers with it as its own (a subscription's snapshot is refused as its `GET` is).
    pub async fn try_app(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: ApiRequest,
        started: Instant,
    ) -> Result<ApiResponse, ApiError> {
        let answer = self.app_call(app, caller, &request).await?;
        Ok(self.respond(Ok(answer), started))
    }

    /// Runs `work` to its end on a task of its own that shutdown waits for
    /// ([`Api::finish_lasting`]): a write goes on when its caller stops waiting (a timeout, a
    /// closed connection), and the server going down does not cut it short.
    pub fn spawn_lasting<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.lasting.spawn(work)
    }

    /// Waits, up to `within`, for the work [`Api::spawn_lasting`] started (also what starts
    /// meanwhile); true if it all ended.
    pub async fn finish_lasting(&self, within: Duration) -> bool {
        self.lasting.close();
        tokio::time::timeout(within, self.lasting.wait())
            .await
            .is_ok()
    }

    /// Finds the app a REST URL names (see [`Api::settle_app`]). Returns it with the rest of
    /// the path.
    async fn resolve_app_path(
        &self,
        segments: &[String],
    ) -> Result<(Arc<AppRecord>, Vec<String>), ApiError> {
        if let Some(found) = self
            .settle_app(gridsocket_core::path::app_candidates(segments))
            .await?
        {
            return Ok(found);
        }
        Err(ApiError::AppNotFound(format!(
            "/{}",
            segments
                .iter()
                .take(2)
                .cloned()
                .collect::<Vec<_>>()
                .join("/")
        )))
    }

    /// The app the first of `candidates` (REST's or a socket's URL, read both ways) that
    /// names one names, with the rest of the path.
    ///
    /// A URL that starts with an organization's name is that organization's: an app it does
    /// not have is not looked for in the default organization, where an app named like the
    /// organization (anyone there may make one) would take in requests and sign-ups meant for
    /// it.
    async fn settle_app(
        &self,
        candidates: Vec<gridsocket_core::path::AppCandidate>,
    ) -> Result<Option<(Arc<AppRecord>, Vec<String>)>, ApiError> {
        // Whether the name an app-only reading starts with is known to be no organization's:
        // the `{org}/{app}` reading, tried first, looked it up.
        let mut no_such_org = false;
        for cand in candidates {
            if cand.org.is_none()
                && !no_such_org
                && self.store.org_by_name(&cand.app).await?.is_some()
            {
                return Ok(None);
            }
            match self.app_of(cand.org.as_deref(), &cand.app).await? {
                AppLookup::Found(app) => return Ok(Some((app, cand.rest))),
                AppLookup::NotInOrg if cand.org.is_some() => return Ok(None),
                AppLookup::NoOrg if cand.org.is_some() => no_such_org = true,
                AppLookup::NotInOrg | AppLookup::NoOrg => {}
            }
        }
        Ok(None)
    }

    /// Looks an app up by org name (or the default org) and app name, through a cache.
    pub async fn find_app(
        &self,
        org: Option<&str>,
        app: &str,
    ) -> Result<Option<Arc<AppRecord>>, ApiError> {
        Ok(match self.app_of(org, app).await? {
            AppLookup::Found(app) => Some(app),
            AppLookup::NotInOrg | AppLookup::NoOrg => None,
        })
    }

    /// [`Api::find_app`], saying which part was missing when nothing is found.
    async fn app_of(&self, org: Option<&str>, app: &str) -> Result<AppLookup, ApiError> {
        let Some(org) = org.or(self.config.default_org.as_deref()) else {
            return Ok(AppLookup::NoOrg);
        };
        let key = (org.to_lowercase(), app.to_lowercase());
        if let Some(hit) = self
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(AppLookup::Found(hit.clone()));
        }
        let Some(org_rec) = self.store.org_by_name(org).await? else {
            return Ok(AppLookup::NoOrg);
        };
        let Some(found) = self.store.app_by_name(&org_rec.uuid, app).await? else {
            return Ok(AppLookup::NotInOrg);
        };
        let found = Arc::new(found);
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, found.clone());
        Ok(AppLookup::Found(found))
    }

    /// Resolves credentials to a principal. `app` is the application being called, if any:
    /// client credentials are checked against it.
    pub async fn authenticate(
        &self,
        creds: &Credentials,
        app: Option<&AppRecord>,
        peer: Option<IpAddr>,
        presenter: Presenter,
    ) -> Result<Authenticated, ApiError> {
        match creds {
            Credentials::None => Ok(Principal::Guest.into()),
            Credentials::Token(token) => self.principal_of_token(token, presenter).await,
            Credentials::Client { id, secret } => {
                let attempt = self.login_attempt(peer, None)?;
                if let Some(found) = self.store.app_by_client_id(id).await?
                    && crate::api::auth::secrets_equal(&found.client_secret, secret)
                    && app.is_none_or(|a| a.uuid == found.uuid)
                {
                    attempt.succeeded();
                    return Ok(Principal::AppClient { app: found.uuid }.into());
                }
                if let Some(org) = self.store.org_by_client_id(id).await?
                    && crate::api::auth::secrets_equal(&org.client_secret, secret)
                {
                    attempt.succeeded();
                    return Ok(Principal::OrgClient { org: org.uuid }.into());
                }
                Err(ApiError::InvalidClient)
            }
        }
    }

    /// Resolves a token (from the cache, else the store). Its expiry comes with it.
    pub(crate) async fn principal_of_token(
        &self,
        token: &str,
        presenter: Presenter,
    ) -> Result<Authenticated, ApiError> {
        let hash = token_hash(token);
        let now = now_ms();
        let cache = match presenter {
            Presenter::Request => &self.tokens,
            Presenter::Socket => &self.socket_tokens,
        };
        // A socket also finds a token REST calls cached; a REST call looks in its own only.
        let hit = cache.get(&hash).or_else(|| match presenter {
            Presenter::Socket => self.tokens.get(&hash),
            Presenter::Request => None,
        });
        if let Some(hit) = hit {
            if hit.who.expires.is_some_and(|e| e <= now) {
                return Err(ApiError::ExpiredToken);
            }
            return Ok(hit.who);
        }
        let Some(rec) = self.store.token(&hash).await? else {
            return Err(ApiError::BadToken);
        };
        if rec.expires <= now {
            return Err(ApiError::ExpiredToken);
        }
        let who: Authenticated = match rec.kind {
            // Issued under other superuser credentials, or with none configured now: void.
            TokenKind::Superuser => match self.superuser_fingerprint() {
                Some(now) if crate::api::auth::secrets_equal(now, &rec.scope) => {
                    Principal::Superuser.into()
                }
                _ => return Err(ApiError::BadToken),
            },
            TokenKind::Admin => {
                // The admin's username names them in presences and broadcasts.
                let Some(admin) = self.store.admin_by_uuid(&rec.subject).await? else {
                    return Err(ApiError::BadToken);
                };
                let orgs = self.store.admin_orgs(&rec.subject).await?;
                Authenticated {
                    principal: Principal::Admin {
                        uuid: rec.subject.clone(),
                        orgs: orgs.into_iter().map(|o| o.uuid).collect(),
                    },
                    username: Some(admin.username),
                    expires: None,
                }
            }
            TokenKind::OrgClient => Principal::OrgClient {
                org: rec.subject.clone(),
            }
            .into(),
            TokenKind::AppClient => Principal::AppClient {
                app: rec.subject.clone(),
            }
            .into(),
            TokenKind::AppUser => {
                let Some(user) = self
                    .store
                    .entity(
                        &rec.scope,
                        Some("users"),
                        crate::store::EntityKey::Uuid(&rec.subject),
                    )
                    .await?
                else {
                    return Err(ApiError::BadToken);
                };
                // A disabled or deactivated user's tokens stop working at once.
                user_may_log_in(&user)?;
                let (Some(app), Some(uuid)) = (
                    access::canonical_uuid(&rec.scope),
                    access::UuidText::new(&user.uuid),
                ) else {
                    return Err(ApiError::BadToken);
                };
                Authenticated {
                    principal: Principal::AppUser { app, uuid },
                    username: user.name,
                    expires: None,
                }
            }
        };
        // Whatever the kind, the token's own expiry.
        let who = Authenticated {
            expires: Some(rec.expires),
            ..who
        };
        cache.insert(
            hash,
            CachedToken {
                who: who.clone(),
                subject: rec.subject,
            },
        );
        Ok(who)
    }

    /// Issues a token and stores its hash. `ttl_ms` is the caller's wish (0 or absent: the
    /// default), capped at the configured maximum. Returns the token and its lifetime in seconds.
    async fn issue_token(
        &self,
        kind: TokenKind,
        subject: &str,
        scope: &str,
        ttl_ms: Option<u64>,
    ) -> Result<(String, u64), ApiError> {
        let ttl = match ttl_ms {
            Some(ms) if ms > 0 => Duration::from_millis(ms).min(MAX_TOKEN_TTL),
            _ => self.config.token_ttl,
        };
        let token = crate::api::auth::random_secret(32);
        let now = now_ms();
        self.store
            .put_token(&TokenRecord {
                hash: token_hash(&token),
                kind,
                subject: subject.to_owned(),
                scope: scope.to_owned(),
                created: now,
                expires: now + ttl.as_millis() as i64,
            })
            .await?;
        Ok((token, ttl.as_secs()))
    }

    /// Revokes every token of a subject (a user or admin uuid) but `except` (a token hash),
    /// and ends the sockets that used them, on every node.
    async fn revoke_subject(
        &self,
        subject: &str,
        except: Option<[u8; 32]>,
    ) -> Result<u64, ApiError> {
        let n = self.store.revoke_tokens(subject, except.as_ref()).await?;
        self.signal(Signal::TokensRevoked {
            subject: subject.to_owned(),
            except: except.as_ref().map(crate::api::auth::hash_text),
        });
        Ok(n)
    }

    fn bump_grants(&self) {
        self.signal(Signal::GrantsChanged);
    }

    /// Where the API's signals go from now on, after it has applied them itself: the
    /// realtime layer and the bus (set once, when the node is put together).
    pub fn send_signals_to(&self, sink: SignalSink) {
        let _ = self.signals.set(sink);
    }

    /// Acts on a signal here and sends it on.
    pub fn signal(&self, signal: Signal) {
        self.apply_signal(&signal);
        if let Some(sink) = self.signals.get() {
            sink(signal);
        }
    }

    /// Acts on the API's part of a signal, from this node or another: cached tokens and
    /// grants.
    pub fn apply_signal(&self, signal: &Signal) {
        match signal {
            Signal::Changed { .. } => {}
            Signal::GrantsChanged => {
                self.grants_generation.fetch_add(1, Ordering::Relaxed);
            }
            Signal::TokensRevoked { subject, except } => {
                let keep = except.as_deref().and_then(crate::api::auth::hash_from_text);
                self.forget_tokens(|hash, t| &t.subject == subject && Some(*hash) != keep);
            }
            Signal::TokenRevoked { hash } => {
                let gone = crate::api::auth::hash_from_text(hash);
                self.forget_tokens(|h, _| Some(*h) == gone);
            }
            Signal::UserChanged { user, .. } => {
                self.forget_tokens(|_, t| &t.subject == user);
            }
            Signal::Resync => {
                self.metrics.bus_resyncs.inc();
                self.grants_generation.fetch_add(1, Ordering::Relaxed);
                self.forget_tokens(|_, _| true);
            }
        }
    }

    /// Drops the cached tokens `which` picks, from both caches.
    fn forget_tokens(&self, which: impl Fn(&[u8; 32], &CachedToken) -> bool) {
        self.tokens.remove_where(&which);
        self.socket_tokens.remove_where(&which);
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// What looking an app up by org and app name found.
enum AppLookup {
    Found(Arc<AppRecord>),
    /// The organization exists and has no such app.
    NotInOrg,
    /// No such organization (or none named, and no default one).
    NoOrg,
}

/// How a socket whose URL cannot be read closes: 4404 if it names no application, as an
/// unknown one does; 4400 if it is malformed (a `..`, an encoded `/`).
fn unreadable_url_close(err: &gridsocket_core::path::PathError) -> u16 {
    match err {
        gridsocket_core::path::PathError::NoApplication => close_code::NOT_FOUND,
        _ => close_code::BAD_REQUEST,
    }
}
