//! Who is calling and what they may do: principals, cached grants, and access checks.
//!
//! Every check runs on the canonical form of the path ([`AccessPath`]): the decision itself is
//! `gridsocket_core::access::decide`, pure and tested there; this module feeds it the caller's
//! grants and looks entities up when it asks.

use super::{Api, ApiError};
use crate::store::{AppRecord, Direction, Entity, EntityKey};
use gridsocket_core::access::{self, AccessPath, Decision, Denial, Found, Identity};
use gridsocket_core::{EntityRef, Method, Permission, ResourcePath};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

/// Whom a request speaks for, once its credentials are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap superuser: everything.
    Superuser,
    /// An organization admin: everything in the apps of their organizations.
    Admin {
        /// Admin uuid.
        uuid: String,
        /// Uuids of the organizations they administer.
        orgs: Vec<String>,
    },
    /// An organization's client credentials: everything in that organization.
    OrgClient {
        /// Organization uuid.
        org: String,
    },
    /// An application's client credentials: everything in that application.
    AppClient {
        /// Application uuid.
        app: String,
    },
    /// An application user: what the app's roles and permissions grant. Their username is
    /// not part of who they are: it can change, and the [`Caller`] keeps it current.
    ///
    /// Both uuids are held inline, with no allocation: every socket of a user keeps one, and
    /// the token cache another.
    AppUser {
        /// Application uuid, parsed from its canonical form ([`canonical_uuid`]).
        app: uuid::Uuid,
        /// User uuid.
        uuid: UuidText,
    },
    /// No credentials: what the `guest` role grants.
    Guest,
}

/// A uuid in its 36-character text form, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UuidText([u8; 36]);

impl UuidText {
    /// `text` if it is 36 bytes long, as every uuid the store makes is.
    pub fn new(text: &str) -> Option<UuidText> {
        text.as_bytes().try_into().ok().map(UuidText)
    }

    pub fn as_str(&self) -> &str {
        // Always whole: the bytes are all of a `str`'s.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for UuidText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for UuidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for UuidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// True if `app` is the application whose uuid is `uuid` (as the text comparison it
/// replaces: only the canonical spelling matches).
fn is_app(uuid: &uuid::Uuid, app: &AppRecord) -> bool {
    canonical_uuid(&app.uuid) == Some(*uuid)
}

/// A principal as credentials resolved it, with the username an application user has now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// Who it is.
    pub principal: Principal,
    /// An application user's current username.
    pub username: Option<String>,
    /// When the credentials stop working (ms since the epoch): a token's expiry. None for
    /// client credentials and guests.
    pub expires: Option<i64>,
}

impl From<Principal> for Authenticated {
    fn from(principal: Principal) -> Self {
        Authenticated {
            principal,
            username: None,
            expires: None,
        }
    }
}

pub(crate) struct Grants {
    generation: u64,
    permissions: Vec<Permission>,
}

/// The grants of each user (and of guests) of each application, shared by every socket and
/// request that holds them: a user with many sockets holds one copy, not one per socket, and
/// users whose roles grant the same permissions (most of an app's users: the `default` role)
/// hold one copy between them. Held weakly, so grants nobody holds any more go with their last
/// holder.
#[derive(Default)]
pub(crate) struct SharedGrants {
    /// By application uuid and user uuid (none for guests).
    by_user: Mutex<HashMap<UserKey, Weak<Grants>>>,
    /// By the permissions' text, one per line, in the order they were loaded.
    by_text: Mutex<HashMap<String, Weak<Grants>>>,
}

/// Whose grants: an application's uuid and a user's (`None` for guests), parsed. Every app of
/// many users holds one per user, so the key is 33 bytes with no allocation, not two strings.
type UserKey = (uuid::Uuid, Option<uuid::Uuid>);

/// The key of `user`'s grants in `app`; `None` if either is not a uuid in its canonical form
/// (their grants are then not shared, only read again). Canonical only: two strings the store
/// keeps apart (`A…` and `a…`) must never share one user's grants.
fn user_key(app: &str, user: Option<&str>) -> Option<UserKey> {
    let app = canonical_uuid(app)?;
    match user {
        Some(user) => Some((app, Some(canonical_uuid(user)?))),
        None => Some((app, None)),
    }
}

/// `text` parsed, if it is a uuid in its canonical form (lower case, hyphenated): what the
/// store writes. Any other spelling is not the same uuid to the store, so it is `None`.
pub(crate) fn canonical_uuid(text: &str) -> Option<uuid::Uuid> {
    let parsed = uuid::Uuid::parse_str(text).ok()?;
    let mut buf = uuid::Uuid::encode_buffer();
    (parsed.hyphenated().encode_lower(&mut buf) == text).then_some(parsed)
}

/// Keeps `key`'s entry in a table of weakly held values, first sweeping the entries nobody
/// holds when the new key takes the table past a power of two: each sweep's cost spreads over
/// the insertions since the last one.
fn put_weak<K: std::hash::Hash + Eq, V>(table: &mut HashMap<K, Weak<V>>, key: K, value: &Arc<V>) {
    let len = table.len();
    if len >= 64 && len.is_power_of_two() && !table.contains_key(&key) {
        table.retain(|_, v| v.strong_count() > 0);
    }
    table.insert(key, Arc::downgrade(value));
}

impl SharedGrants {
    /// The grants of `key` of `generation`, if somebody holds them.
    fn get(&self, key: &UserKey, generation: u64) -> Option<Arc<Grants>> {
        let by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        by_user
            .get(key)
            .and_then(Weak::upgrade)
            .filter(|g| g.generation == generation)
    }

    /// Shares `grants` as those of `key`.
    fn put(&self, key: UserKey, grants: &Arc<Grants>) {
        let mut by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        put_weak(&mut by_user, key, grants);
    }

    /// The grants of `generation` whose permissions are `texts`: a copy somebody holds if there
    /// is one, else parsed from them (a permission that does not parse is left out, and said).
    fn of_texts(&self, generation: u64, texts: &[String]) -> Arc<Grants> {
        let key = texts.join("\n");
        let held = |by_text: &HashMap<String, Weak<Grants>>| {
            by_text
                .get(&key)
                .and_then(Weak::upgrade)
                .filter(|g| g.generation == generation)
        };
        if let Some(g) = held(&self.by_text.lock().unwrap_or_else(|p| p.into_inner())) {
            return g;
        }
        let permissions = texts
            .iter()
            .filter_map(|text| match Permission::parse(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(permission = %text, error = %e, "ignoring stored permission");
                    None
                }
            })
            .collect();
        let grants = Arc::new(Grants {
            generation,
            permissions,
        });
        let mut by_text = self.by_text.lock().unwrap_or_else(|p| p.into_inner());
        // Another request may have parsed the same meanwhile: one copy is kept.
        if let Some(g) = held(&by_text) {
            return g;
        }
        put_weak(&mut by_text, key, &grants);
        grants
    }
}

/// A principal with its permissions, loaded on first use and reloaded only when permissions
/// change somewhere. A socket keeps one for its whole life; when its user changes (renamed,
/// disabled, deleted) the service updates or ends it on every node.
pub struct Caller {
    principal: Principal,
    /// The client's address, for throttling failed logins.
    address: Option<IpAddr>,
    username: Mutex<Arc<str>>,
    grants: Mutex<Option<Arc<Grants>>>,
    /// The hash of the token a socket authenticated with, re-checked after a bus outage.
    token: Mutex<Option<[u8; 32]>>,
}

impl Caller {
    /// A caller whose grants are not loaded yet.
    pub fn new(who: Authenticated) -> Caller {
        Caller {
            principal: who.principal,
            address: None,
            username: Mutex::new(who.username.unwrap_or_default().into()),
            grants: Mutex::new(None),
            token: Mutex::new(None),
        }
    }

    /// The caller, calling from `address`.
    pub fn at(mut self, address: Option<IpAddr>) -> Caller {
        self.address = address;
        self
    }

    /// Who it is.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The client's address, when known.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// An application user's current username (empty for other principals).
    pub fn username(&self) -> Arc<str> {
        self.username
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a user's new username (they were renamed).
    pub(crate) fn set_username(&self, name: &str) {
        *self.username.lock().unwrap_or_else(|p| p.into_inner()) = name.into();
    }

    /// The hash of the token this caller authenticated with, if it used one.
    pub fn token(&self) -> Option<[u8; 32]> {
        *self.token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the token this caller authenticated with (at connect, and on `AUTH`).
    pub fn set_token(&self, hash: [u8; 32]) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash);
    }

    /// The app user's uuid, if the caller is one.
    pub fn user_uuid(&self) -> Option<&str> {
        match &self.principal {
            Principal::AppUser { uuid, .. } => Some(uuid.as_str()),
            _ => None,
        }
    }

    /// The uuid of the person calling: an app user's or an admin's; `None` for a guest, the
    /// superuser and client credentials, which are nobody in particular.
    pub fn person_uuid(&self) -> Option<&str> {
        match &self.principal {
            Principal::AppUser { uuid, .. } => Some(uuid.as_str()),
            Principal::Admin { uuid, .. } => Some(uuid),
            _ => None,
        }
    }
}

/// Refuses a user who may not act now: not activated, or disabled (by an admin). Tokens of
/// such a user are refused as their logins are.
pub fn user_may_log_in(user: &Entity) -> Result<(), ApiError> {
    // A flag is read as a client may have written it: true, "true", 1 or "1" (and their
    // opposites); anything else is unset.
    use serde_json::Value;
    let flag = |name: &str, value: bool| {
        let set = match user.data.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::Number(n)) => n.as_f64().map(|f| f != 0.0),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" => Some(false),
                _ => None,
            },
            _ => None,
        };
        set == Some(value)
    };
    if flag("activated", false) {
        return Err(ApiError::UserNotActivated);
    }
    if flag("disabled", true) {
        return Err(ApiError::UserDisabled);
    }
    Ok(())
}

impl Api {
    /// True for principals that administer the app (superuser, its org's admins and client,
    /// its own client).
    pub fn is_app_admin(&self, app: &AppRecord, caller: &Caller) -> bool {
        match &caller.principal {
            Principal::Superuser => true,
            Principal::Admin { orgs, .. } => orgs.contains(&app.org_uuid),
            Principal::OrgClient { org } => *org == app.org_uuid,
            Principal::AppClient { app: a } => *a == app.uuid,
            Principal::AppUser { .. } | Principal::Guest => false,
        }
    }

    /// True if the caller may act in this application at all: its admins, its own users, and
    /// guests (whose grants are the `guest` role's). A user of another application may not.
    pub(super) fn may_act_in(&self, app: &AppRecord, caller: &Caller) -> bool {
        match &caller.principal {
            Principal::AppUser { app: a, .. } => is_app(a, app),
            Principal::Guest => true,
            _ => self.is_app_admin(app, caller),
        }
    }

    pub(super) fn require_app_admin(
        &self,
        app: &AppRecord,
        caller: &Caller,
    ) -> Result<(), ApiError> {
        match &caller.principal {
            _ if self.is_app_admin(app, caller) => Ok(()),
            Principal::AppUser { app: a, .. } if is_app(a, app) => Err(ApiError::Forbidden(
                "only the application's admins may do this".into(),
            )),
            _ => Err(ApiError::Unauthorized(
                "this needs an organization admin or application client token".into(),
            )),
        }
    }

    /// The canonical form of `path` for `caller`, before any lookup.
    pub(crate) fn access_path(
        &self,
        app: &AppRecord,
        caller: &Caller,
        path: &ResourcePath,
    ) -> Result<AccessPath, ApiError> {
        let name = caller.username();
        let me = self.identity(app, caller, &name)?;
        AccessPath::new(path, me).map_err(|d| denied(d, me.is_none(), Method::Get, ""))
    }

    /// Who `caller` is to the access rules: an app user of this app, or a guest (`None`).
    /// Others (admins are never asked; principals of other apps) are refused.
    fn identity<'a>(
        &self,
        app: &AppRecord,
        caller: &'a Caller,
        username: &'a str,
    ) -> Result<Option<Identity<'a>>, ApiError> {
        match &caller.principal {
            Principal::AppUser { app: a, uuid } if is_app(a, app) => Ok(Some(Identity {
                uuid: uuid.as_str(),
                username,
            })),
            Principal::Guest => Ok(None),
            _ if self.is_app_admin(app, caller) => Ok(None),
            _ => Err(ApiError::Unauthorized(
                "the token is not valid for this application".into(),
            )),
        }
    }

    /// May `caller` do `method` on `path` in `app`?
    pub(crate) async fn check_access(
        &self,
        app: &AppRecord,
        caller: &Caller,
        method: Method,
        path: &ResourcePath,
    ) -> Result<(), ApiError> {
        if self.is_app_admin(app, caller) {
            return Ok(());
        }
        let mut access = self.access_path(app, caller, path)?;
        self.authorize(app, caller, method, &mut access).await
    }

    /// Decides `method` on a canonical path for a non-admin `caller`, looking entities up
    /// when the decision depends on them (then `access` stays resolved).
    pub(crate) async fn authorize(
        &self,
        app: &AppRecord,
        caller: &Caller,
        method: Method,
        access: &mut AccessPath,
    ) -> Result<(), ApiError> {
        if self.is_app_admin(app, caller) {
            return Ok(());
        }
        let grants = self.grants(app, caller).await?;
        let name = caller.username();
        let who = self.identity(app, caller, &name)?;
        for _ in 0..2 {
            match access::decide(access, method, who, &grants.permissions) {
                Decision::Allow => return Ok(()),
                Decision::Deny(d) => {
                    return Err(denied(d, who.is_none(), method, &access.shown()));
                }
                Decision::Lookup => self.resolve_access(app, access).await?,
            }
        }
        // `decide` never asks twice once everything is looked up.
        Err(ApiError::Forbidden(format!(
            "no permission to {}",
            method.as_str()
        )))
    }

    /// Looks up every entity an access path still names by uuid, name or email.
    pub(crate) async fn resolve_access(
        &self,
        app: &AppRecord,
        access: &mut AccessPath,
    ) -> Result<(), ApiError> {
        for lookup in access.lookups() {
            let found = self
                .lookup_entity(app, lookup.collection.as_deref(), &lookup.entity)
                .await?;
            access.resolve(
                lookup.slot,
                found.map(|e| Found {
                    collection: e.collection,
                    uuid: e.uuid,
                    name: e.name,
                }),
            );
        }
        Ok(())
    }

    /// Finds the entity a path segment names: by uuid (in any collection when the path names
    /// none), or by name; a user also by email, which is tried first for anything with an
    /// `@`, so a login or path by email finds exactly that user.
    pub(crate) async fn lookup_entity(
        &self,
        app: &AppRecord,
        collection: Option<&str>,
        entity: &EntityRef,
    ) -> Result<Option<Entity>, ApiError> {
        let found = match (entity, collection) {
            (EntityRef::Uuid(u), c) => self.store.entity(&app.uuid, c, EntityKey::Uuid(u)).await?,
            (EntityRef::Name(n), Some("users")) if n.contains('@') => {
                match self.store.user_by_email(&app.uuid, n).await? {
                    Some(u) => Some(u),
                    None => {
                        self.store
                            .entity(&app.uuid, Some("users"), EntityKey::Name(n))
                            .await?
                    }
                }
            }
            (EntityRef::Name(n), Some(c)) => {
                self.store
                    .entity(&app.uuid, Some(c), EntityKey::Name(n))
                    .await?
            }
            (EntityRef::Name(_), None) | (EntityRef::Me, _) => None,
        };
        Ok(found)
    }

    /// True when `caller` may do `method` on one entity (`/{collection}/{uuid or name}`):
    /// what listings, bulk deletes, snapshots and pushed changes go by.
    pub(crate) async fn may(
        &self,
        app: &AppRecord,
        caller: &Caller,
        method: Method,
        collection: &str,
        uuid: &str,
        name: Option<&str>,
    ) -> bool {
        if self.is_app_admin(app, caller) {
            return true;
        }
        let mut access = AccessPath::entity(collection, uuid, name);
        self.authorize(app, caller, method, &mut access)
            .await
            .is_ok()
    }

    /// Keeps the entities `caller` may do `method` on, in order.
    pub(super) async fn permitted(
        &self,
        app: &AppRecord,
        caller: &Caller,
        method: Method,
        entities: Vec<Entity>,
    ) -> Vec<Entity> {
        if self.is_app_admin(app, caller) {
            return entities;
        }
        let mut out = Vec::with_capacity(entities.len());
        for e in entities {
            if self
                .may(
                    app,
                    caller,
                    method,
                    &e.collection,
                    &e.uuid,
                    e.name.as_deref(),
                )
                .await
            {
                out.push(e);
            }
        }
        out
    }

    async fn grants(&self, app: &AppRecord, caller: &Caller) -> Result<Arc<Grants>, ApiError> {
        let generation = self.grants_generation.load(Ordering::Relaxed);
        if let Some(g) = caller
            .grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|g| g.generation == generation)
        {
            return Ok(g.clone());
        }
        let key = user_key(&app.uuid, caller.user_uuid());
        if let Some(g) = key.and_then(|key| self.shared_grants.get(&key, generation)) {
            *caller.grants.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.clone());
            return Ok(g);
        }
        let mut owners = Vec::new();
        let role_name = if caller.user_uuid().is_some() {
            "default"
        } else {
            "guest"
        };
        if let Some(role) = self
            .store
            .entity(&app.uuid, Some("roles"), EntityKey::Name(role_name))
            .await?
        {
            owners.push(role.uuid);
        }
        if let Some(user) = caller.user_uuid() {
            owners.push(user.to_owned());
            owners.extend(
                self.store
                    .related_uuids(&app.uuid, user, "roles", Direction::Outbound)
                    .await?,
            );
            owners.extend(
                self.store
                    .related_uuids(&app.uuid, user, "groups", Direction::Outbound)
                    .await?,
            );
        }
        let mut texts = Vec::new();
        for owner in owners {
            texts.extend(self.store.permissions(&app.uuid, &owner).await?);
        }
        let grants = self.shared_grants.of_texts(generation, &texts);
        if let Some(key) = key {
            self.shared_grants.put(key, &grants);
        }
        *caller.grants.lock().unwrap_or_else(|p| p.into_inner()) = Some(grants.clone());
        Ok(grants)
    }
}

/// The error for a refusal: guests are told to authenticate (401), users that they may not
/// (403). A guest hears the same whatever the refusal, so that a refusal tells a stranger
/// nothing about what exists (a user's "only they may change it" would say the user exists).
fn denied(denial: Denial, guest: bool, method: Method, shown: &str) -> ApiError {
    match (denial, guest) {
        // Usergrid answers a `me` that names nobody as a path that names nothing.
        (Denial::NoUser, _) => ApiError::NoSuchResource(Denial::NoUser.to_string()),
        (_, true) => ApiError::Unauthorized(format!(
            "guests may not {} {shown}: send an access token",
            method.as_str()
        )),
        (d, false) => ApiError::Forbidden(d.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Grants, SharedGrants, UserKey, canonical_uuid, is_app, user_key};
    use crate::store::AppRecord;
    use std::sync::Arc;

    const APP: &str = "0190c2a0-0000-7000-8000-000000000001";

    fn key(user: &str) -> UserKey {
        // A user's uuid made from their name (tests name users `ann`, `bob`, `17`).
        let n = user.bytes().fold(0u128, |n, b| n * 256 + u128::from(b));
        user_key(APP, Some(&uuid::Uuid::from_u128(n).to_string())).expect("uuids")
    }

    #[test]
    fn grants_are_shared_by_uuids_only() {
        let app = APP;
        let user = "0190c2a0-0000-7000-8000-0000000000ff";
        assert!(user_key(app, Some(user)).is_some());
        // Other spellings of a uuid name other rows of the store: never the same key.
        for other in [
            user.to_uppercase(),
            user.replace('-', ""),
            format!("{{{user}}}"),
            format!("urn:uuid:{user}"),
        ] {
            assert_eq!(user_key(app, Some(&other)), None, "{other}");
        }
        assert_ne!(
            user_key(app, Some(user)),
            user_key(app, None),
            "a user is not a guest"
        );
        assert_eq!(user_key("not-a-uuid", Some(user)), None);
        assert_eq!(user_key(app, Some("nobody")), None);
    }

    /// A token's application is the app whose record has that uuid in the store's spelling:
    /// an app record spelled otherwise (which the store would keep apart) is another app.
    #[test]
    fn an_app_user_belongs_only_to_the_app_of_the_canonical_uuid() {
        let token_app = canonical_uuid(APP).expect("canonical");
        let record = |uuid: String| AppRecord {
            uuid,
            org_uuid: String::new(),
            org_name: "acme".into(),
            name: "shop".into(),
            client_id: String::new(),
            client_secret: String::new(),
            created: 0,
        };
        assert!(is_app(&token_app, &record(APP.into())));
        for other in [
            APP.to_uppercase(),
            APP.replace('-', ""),
            format!("{{{APP}}}"),
            format!("urn:uuid:{APP}"),
        ] {
            assert!(!is_app(&token_app, &record(other.clone())), "{other}");
            assert_eq!(canonical_uuid(&other), None, "{other}");
        }
        let another = canonical_uuid("0190c2a0-0000-7000-8000-000000000002").expect("canonical");
        assert!(!is_app(&another, &record(APP.into())));
    }

    #[test]
    fn shared_grants_are_one_copy_per_user_while_held_and_of_the_current_generation() {
        let shared = SharedGrants::default();
        let held = Arc::new(Grants {
            generation: 1,
            permissions: Vec::new(),
        });
        shared.put(key("ann"), &held);
        let got = shared.get(&key("ann"), 1).expect("held");
        assert!(Arc::ptr_eq(&got, &held), "the same copy");
        assert!(
            shared.get(&key("bob"), 1).is_none(),
            "another user's are not ann's"
        );
        assert!(shared.get(&key("ann"), 2).is_none(), "grants changed since");
        drop((got, held));
        assert!(
            shared.get(&key("ann"), 1).is_none(),
            "nobody holds them any more"
        );
        // Entries nobody holds are swept as new users come.
        for i in 0..200 {
            let g = Arc::new(Grants {
                generation: 1,
                permissions: Vec::new(),
            });
            shared.put(key(&i.to_string()), &g);
        }
        let len = shared.by_user.lock().unwrap().len();
        assert!(len < 100, "{len} entries kept for 200 users nobody holds");
    }

    #[test]
    fn users_granted_the_same_permissions_share_one_copy() {
        let shared = SharedGrants::default();
        let texts = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let default = texts(&["get,put,post,delete:/**", "get:/users/me"]);
        let ann = shared.of_texts(1, &default);
        let bob = shared.of_texts(1, &default);
        assert!(Arc::ptr_eq(&ann, &bob), "one copy for both");
        assert_eq!(ann.permissions.len(), 2);
        let more = shared.of_texts(1, &texts(&["get,put,post,delete:/**", "get:/books/**"]));
        assert!(!Arc::ptr_eq(&ann, &more), "other permissions, another copy");
        let later = shared.of_texts(2, &default);
        assert!(
            !Arc::ptr_eq(&ann, &later),
            "grants changed since: parsed again"
        );
        assert_eq!(later.generation, 2);
        // A permission that does not parse is left out; the rest still count.
        let bad = shared.of_texts(2, &texts(&["get:/**", "nonsense"]));
        assert_eq!(bad.permissions.len(), 1);
        // Nobody holds them: the next user parses them again.
        let weak = Arc::downgrade(&ann);
        drop((ann, bob));
        assert!(weak.upgrade().is_none());
    }
}
