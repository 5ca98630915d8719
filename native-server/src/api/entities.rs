//! Collections, entities and relations: the generic part of the Usergrid API.

use super::envelope::{Envelope, render_entity_with};
use super::{Api, ApiConfig, ApiError, Caller, now_ms};
use crate::signal::Signal;
use crate::store::{AppRecord, Direction, Entity, EntityKey, PageQuery};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gridsocket_core::inflector::singularize;
use gridsocket_core::path::is_uuid;
use gridsocket_core::query::Select;
use gridsocket_core::{ApiRequest, EntityRef, Method, Query};
use serde_json::{Map, Value};

/// Default page size (Usergrid's `DEFAULT_LIMIT`).
pub const DEFAULT_LIMIT: usize = 10;
/// Largest page size (Usergrid's `MAX_LIMIT`); larger asks are cut to it.
pub const MAX_LIMIT: usize = 1000;
/// A page ends once its entities hold this many bytes of JSON (its cursor goes on from
/// there): one answer stays bounded whatever `limit` and the entities' size.
pub const MAX_PAGE_BYTES: usize = 8 << 20;
/// Longest entity name accepted.
const MAX_NAME_LEN: usize = 256;

/// Properties the server owns; a body cannot set them.
const RESERVED: &[&str] = &[
    "uuid",
    "type",
    "created",
    "modified",
    "metadata",
    "file-metadata",
];

/// The property that names entities of a collection, and whether it is required.
pub(super) fn name_property(collection: &str) -> (&'static str, bool) {
    match collection {
        "users" => ("username", true),
        "groups" => ("path", true),
        "roles" => ("name", true),
        _ => ("name", false),
    }
}

/// The cursor of a relation or feed page: how many entries came before the next page.
pub(super) fn encode_cursor(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

/// The cursor of a collection page: the last entity's uuid and `order by` values (a keyset:
/// the next page starts after them, wherever entities were added or removed meanwhile). It
/// holds nothing the caller could not read, and any values in it only choose where a page
/// starts, so it needs no signature; it is checked for its form.
pub(super) fn encode_after(after: Map<String, Value>) -> String {
    URL_SAFE_NO_PAD.encode(format!("k:{}", Value::Object(after)))
}

/// Longest cursor accepted, encoded.
const MAX_CURSOR_BYTES: usize = 8 << 10;

/// Where a cursor says the next page starts.
enum Cursor {
    Offset(usize),
    After(Map<String, Value>),
}

fn invalid_cursor() -> ApiError {
    ApiError::IllegalArgument(
        "invalid cursor: pass back the cursor of the previous page unchanged".into(),
    )
}

fn decode_cursor(cursor: &str) -> Result<Cursor, ApiError> {
    let invalid = invalid_cursor;
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(invalid());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    if let Some(n) = text.strip_prefix("o:") {
        return n
            .parse::<usize>()
            .ok()
            // Offsets the server hands out fit a database's signed 64-bit OFFSET.
            .filter(|n| i64::try_from(*n).is_ok())
            .map(Cursor::Offset)
            .ok_or_else(invalid);
    }
    let after = text
        .strip_prefix("k:")
        .and_then(|json| serde_json::from_str::<Map<String, Value>>(json).ok())
        .filter(|m| {
            m.get("uuid")
                .and_then(Value::as_str)
                .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok())
        })
        .ok_or_else(invalid)?;
    Ok(Cursor::After(after))
}

/// `limit`, `cursor` and `ql` of a read, and when its query must be done.
pub(super) struct Paging {
    pub(super) query: Option<Query>,
    limit: usize,
    /// Where a relation or feed page starts.
    pub(super) offset: usize,
    /// Where a collection page starts.
    after: Option<Map<String, Value>>,
    deadline: std::time::Instant,
    max_rows: usize,
}

impl Paging {
    pub(super) fn from_request(
        request: &ApiRequest,
        config: &ApiConfig,
    ) -> Result<Paging, ApiError> {
        let limit = match request.params.get("limit") {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n >= 1 => (n as usize).min(MAX_LIMIT),
                // Larger than any number: cut, as Usergrid cuts any limit over the maximum.
                _ if s.bytes().all(|b| b.is_ascii_digit()) && s.len() > 18 => MAX_LIMIT,
                _ => {
                    return Err(ApiError::IllegalArgument(format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT}, got {s:?}"
                    )));
                }
            },
        };
        let (offset, after) = match request.params.get("cursor") {
            None | Some("") => (0, None),
            Some(c) => match decode_cursor(c)? {
                Cursor::Offset(n) => (n, None),
                Cursor::After(a) => (0, Some(a)),
            },
        };
        let query = match request.params.get("ql") {
            None => None,
            Some(ql) if ql.trim().is_empty() => None,
            Some(ql) => Some(Query::parse_with(ql, config.query_limits)?),
        };
        Ok(Paging {
            query,
            limit,
            offset,
            after,
            deadline: std::time::Instant::now() + config.query_timeout,
            max_rows: config.max_query_rows,
        })
    }

    /// A relation or feed page; a collection's cursor is refused here.
    pub(super) fn page_query(&self) -> Result<PageQuery<'_>, ApiError> {
        if self.after.is_some() {
            return Err(invalid_cursor());
        }
        Ok(self.page(None))
    }

    /// A collection page; a relation's cursor is refused here.
    pub(super) fn collection_page(&self) -> Result<PageQuery<'_>, ApiError> {
        if self.offset > 0 {
            return Err(invalid_cursor());
        }
        Ok(self.page(self.after.as_ref()))
    }

    fn page<'a>(&'a self, after: Option<&'a Map<String, Value>>) -> PageQuery<'a> {
        PageQuery {
            query: self.query.as_ref(),
            limit: self.limit,
            offset: self.offset,
            after,
            deadline: Some(self.deadline),
            max_bytes: Some(MAX_PAGE_BYTES),
            max_rows: Some(self.max_rows),
        }
    }

    /// The cursor of the collection page that ended with `last`.
    pub(super) fn next_after(&self, last: &Entity) -> String {
        encode_after(crate::store::search::position(self.query.as_ref(), last))
    }

    /// The cursor of a collection page that stopped after `uuid`, among the entities without
    /// the `order by` key.
    pub(super) fn resume_after(&self, uuid: &str) -> String {
        encode_after(Map::from_iter([(
            "uuid".to_owned(),
            Value::String(uuid.to_owned()),
        )]))
    }
}

pub(super) fn body_object(request: &ApiRequest) -> Result<Map<String, Value>, ApiError> {
    match &request.body {
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::BadBody("the body must be a JSON object".into())),
        None => Ok(Map::new()),
    }
}

/// Characters no name may hold: they mean something in paths, URLs, queries or permission
/// patterns (`*`, `?`), so a name made of them could be read as more than itself.
fn forbidden_in_name(c: char) -> bool {
    matches!(c, '*' | '/' | '\\' | '?' | '#' | ';')
        || c.is_whitespace()
        || c.is_control()
        || invisible(c)
}

/// Characters that print as nothing (zero-width spaces and joiners, direction marks, the byte
/// order mark): a name holding one looks like another name.
fn invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

pub(super) fn validate_name(
    collection: &str,
    prop: &str,
    value: &Value,
) -> Result<String, ApiError> {
    let Value::String(name) = value else {
        return Err(ApiError::IllegalArgument(format!(
            "{prop} must be a string"
        )));
    };
    let bad = name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name.chars().any(forbidden_in_name)
        || name == "."
        || name == ".."
        || is_uuid(name)
        || (collection == "users" && name.eq_ignore_ascii_case("me"));
    if bad {
        return Err(ApiError::IllegalArgument(format!(
            "{prop} {name:?} is not a valid name: 1 to {MAX_NAME_LEN} characters, none of \
             * / \\ ? # ; or white space, not a uuid{}",
            if collection == "users" {
                ", not \"me\""
            } else {
                ""
            }
        )));
    }
    Ok(name.clone())
}

/// A user's email: one address, nothing a path or a login could read otherwise.
pub(super) fn validate_email(value: &Value) -> Result<String, ApiError> {
    let ok = |e: &str| {
        e.len() <= MAX_NAME_LEN
            && e.split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
            && !e.chars().any(forbidden_in_name)
    };
    match value {
        Value::String(e) if ok(e) => Ok(e.clone()),
        _ => Err(ApiError::IllegalArgument(
            "email must be an address like name@example.com, without white space".into(),
        )),
    }
}

impl Api {
    /// Refuses an email another user has (emails are unique, ignoring case, so a login or a
    /// path by email finds exactly one user). `except` is the user being changed.
    async fn check_email_free(
        &self,
        app: &AppRecord,
        email: &str,
        except: Option<&str>,
    ) -> Result<(), ApiError> {
        match self.store.user_by_email(&app.uuid, email).await? {
            Some(other) if Some(other.uuid.as_str()) != except => {
                return Err(ApiError::Duplicate(format!("a user with email {email:?}")));
            }
            _ => {}
        }
        // A login names a user by username or email: one user's email may not be another's
        // username, or that login would find the wrong user.
        match self
            .store
            .entity(&app.uuid, Some("users"), EntityKey::Name(email))
            .await?
        {
            Some(other) if Some(other.uuid.as_str()) != except => Err(ApiError::Duplicate(
                format!("a user with username {email:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// Refuses a username that is another user's email (see [`Api::check_email_free`]).
    async fn check_username_free(
        &self,
        app: &AppRecord,
        username: &str,
        except: Option<&str>,
    ) -> Result<(), ApiError> {
        if !username.contains('@') {
            return Ok(());
        }
        match self.store.user_by_email(&app.uuid, username).await? {
            Some(other) if Some(other.uuid.as_str()) != except => Err(ApiError::Duplicate(
                format!("a user with email {username:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// Reads one entity or answers 404.
    pub(super) async fn load(
        &self,
        app: &AppRecord,
        collection: &str,
        key: &Key,
    ) -> Result<Entity, ApiError> {
        let entity = match key {
            Key::Uuid(u) => EntityRef::Uuid(u.clone()),
            Key::Name(n) => EntityRef::Name(n.clone()),
        };
        self.lookup_entity(app, Some(collection), &entity)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{collection}/{} not found", key.text())))
    }

    pub(super) async fn get_collection(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        collection: &str,
        mut env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let paging = Paging::from_request(request, &self.config)?;
        let mut page = self
            .store
            .query(&app.uuid, collection, &paging.collection_page()?)
            .await?;
        if page.more {
            env.cursor = match &page.resume_after {
                Some(uuid) => Some(paging.resume_after(uuid)),
                None => page.entities.last().map(|last| paging.next_after(last)),
            };
        }
        // A listing shows only what a GET of each entity would: the cursor still counts
        // every entity the page passed over.
        page.entities = self
            .permitted(app, caller, Method::Get, page.entities)
            .await;
        env.count = Some(page.entities.len());
        match paging.query.as_ref().map(|q| &q.select) {
            Some(select @ (Select::Fields(_) | Select::Rename(_))) => {
                let q = Query {
                    select: select.clone(),
                    ..Query::default()
                };
                env.list = Some(
                    page.entities
                        .iter()
                        .map(|e| q.project(&Value::Object(e.data.clone())))
                        .collect(),
                );
                Ok(env)
            }
            _ => self.with_entities(app, env, page.entities).await,
        }
    }

    pub(super) async fn post_collection(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        collection: &str,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let items: Vec<Map<String, Value>> = match &request.body {
            Some(Value::Object(m)) => vec![m.clone()],
            Some(Value::Array(list)) => {
                if list.len() > MAX_LIMIT {
                    return Err(ApiError::IllegalArgument(format!(
                        "at most {MAX_LIMIT} entities per request"
                    )));
                }
                list.iter()
                    .map(|v| match v {
                        Value::Object(m) => Ok(m.clone()),
                        _ => Err(ApiError::BadBody(
                            "every item of the array must be a JSON object".into(),
                        )),
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(_) => {
                return Err(ApiError::BadBody(
                    "the body must be a JSON object or an array of objects".into(),
                ));
            }
            None => return Err(ApiError::BadBody("POST needs a JSON body".into())),
        };
        // Signing up is one user at a time, unless an admin imports many: each costs a
        // password hash.
        if collection == "users" && items.len() > 1 && !self.is_app_admin(app, caller) {
            return Err(ApiError::IllegalArgument(
                "only an application's admins may create more than one user at once".into(),
            ));
        }
        let mut created = Vec::with_capacity(items.len());
        for props in items {
            created.push(self.create_entity(app, caller, collection, props).await?);
        }
        Ok(with_created(env, created))
    }

    /// Creates one entity in a collection from the properties `caller` sent, by whatever path:
    /// an activity's actor is its poster, and users signing up are counted per address.
    pub(super) async fn create_entity(
        &self,
        app: &AppRecord,
        caller: &Caller,
        collection: &str,
        mut props: Map<String, Value>,
    ) -> Result<Entity, ApiError> {
        if collection == "queues" {
            return Err(ApiError::NoSuchResource(
                "queues are not an entity collection".into(),
            ));
        }
        if collection == "activities" {
            self.stamp_actor(app, caller, None, &mut props).await?;
        }

        let (name_prop, required) = name_property(collection);
        let name = match props.get(name_prop) {
            Some(v) if !v.is_null() => {
                let name = validate_name(collection, name_prop, v)?;
                if collection == "users" {
                    self.check_username_free(app, &name, None).await?;
                }
                Some(name)
            }
            _ if required => return Err(ApiError::RequiredProperty(name_prop)),
            _ => None,
        };
        let mut secret = None;
        if collection == "users" {
            if let Some(pw) = props.remove("password") {
                let Value::String(pw) = pw else {
                    return Err(ApiError::IllegalArgument(
                        "password must be a string".into(),
                    ));
                };
                if pw.is_empty() {
                    return Err(ApiError::IllegalArgument(
                        "password must not be empty".into(),
                    ));
                }
                // Each sign-up costs a password hash: a client address gets a few a minute.
                if !self.is_app_admin(app, caller) {
                    self.signup_allowed(caller.address())?;
                }
                secret = Some(self.hash_password(pw).await?);
            }
            if let Some(email) = props.get("email").filter(|e| !e.is_null()) {
                self.check_email_free(app, &validate_email(email)?, None)
                    .await?;
            }
            props.entry("activated").or_insert(Value::Bool(true));
        }
        let now = now_ms();
        let uuid = uuid::Uuid::now_v7().to_string();
        let mut data = Map::new();
        data.insert("uuid".into(), Value::String(uuid.clone()));
        data.insert("type".into(), Value::String(singularize(collection)));
        if let Some(n) = &name {
            data.insert(name_prop.into(), Value::String(n.clone()));
        }
        data.insert("created".into(), now.into());
        data.insert("modified".into(), now.into());
        for (k, v) in props {
            if !RESERVED.contains(&k.as_str()) && !v.is_null() && !data.contains_key(&k) {
                data.insert(k, v);
            }
        }
        let entity = Entity {
            uuid,
            collection: collection.to_owned(),
            name,
            data,
        };
        self.store
            .insert_entity(&app.uuid, &entity, secret.as_deref())
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Duplicate(_) => ApiError::Duplicate(format!(
                    "{} with {name_prop} {:?}",
                    singularize(collection),
                    entity.name.clone().unwrap_or_default()
                )),
                other => other.into(),
            })?;
        Ok(entity)
    }

    pub(super) async fn update_entity(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        collection: &str,
        key: &Key,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let mut props = body_object(request)?;
        if collection == "users" && props.contains_key("password") {
            return Err(ApiError::IllegalArgument(
                "change a password with PUT /users/{user}/password {\"oldpassword\", \"newpassword\"}".into(),
            ));
        }
        let existing = match key {
            Key::Name(n) => {
                match self.load(app, collection, key).await {
                    Ok(e) => e,
                    // PUT to a free name creates the entity, as Usergrid does.
                    Err(ApiError::NotFound(_)) if request.method == Method::Put => {
                        let (name_prop, _) = name_property(collection);
                        props.insert(name_prop.into(), Value::String(n.clone()));
                        let e = self.create_entity(app, caller, collection, props).await?;
                        return Ok(with_created(env, vec![e]));
                    }
                    Err(e) => return Err(e),
                }
            }
            Key::Uuid(_) => self.load(app, collection, key).await?,
        };
        let entity = self.merge_into(app, caller, existing, props).await?;
        self.with_entities(app, env, vec![entity]).await
    }

    /// Merges `props` into an existing entity the caller may change (a `null` removes a
    /// property) and stores it.
    pub(super) async fn merge_into(
        &self,
        app: &AppRecord,
        caller: &Caller,
        existing: Entity,
        props: Map<String, Value>,
    ) -> Result<Entity, ApiError> {
        let collection = existing.collection.clone();
        let collection = collection.as_str();
        self.may_change_owned(app, caller, &existing).await?;
        // An activity's actor is who posted it: it never changes but by an admin.
        if collection == "activities"
            && !self.is_app_admin(app, caller)
            && props
                .get("actor")
                .is_some_and(|a| Some(a) != existing.data.get("actor"))
        {
            return Err(ApiError::IllegalArgument(
                "an activity's actor cannot be changed".into(),
            ));
        }
        let mut entity = existing;
        let before = (collection == "users").then(|| who_fields(&entity));
        let (name_prop, required) = name_property(collection);
        if collection == "users"
            && let Some(email) = props.get("email").filter(|e| !e.is_null())
        {
            self.check_email_free(app, &validate_email(email)?, Some(&entity.uuid))
                .await?;
        }
        for (k, v) in props {
            if RESERVED.contains(&k.as_str()) {
                continue;
            }
            if k == name_prop {
                if v.is_null() {
                    if required {
                        return Err(ApiError::RequiredProperty(name_prop));
                    }
                    entity.name = None;
                } else {
                    let name = validate_name(collection, name_prop, &v)?;
                    if collection == "users" {
                        self.check_username_free(app, &name, Some(&entity.uuid))
                            .await?;
                    }
                    entity.name = Some(name);
                }
            }
            if v.is_null() {
                entity.data.remove(&k);
            } else {
                entity.data.insert(k, v);
            }
        }
        entity.data.insert("modified".into(), now_ms().into());
        self.store.replace_entity(&app.uuid, &entity).await?;
        if before.is_some_and(|b| b != who_fields(&entity)) {
            // Who the user's tokens and sockets speak for changed: every node re-reads it.
            self.signal(Signal::UserChanged {
                app: app.uuid.clone(),
                user: entity.uuid.clone(),
            });
        }
        Ok(entity)
    }

    /// `PUT /{collection}`: with a `ql`, merges the body into every match the caller may
    /// change, as each entity's own PUT would (up to `limit`); without, creates one entity.
    pub(super) async fn put_collection(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        collection: &str,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        if request.params.get("ql").is_none_or(|q| q.trim().is_empty()) {
            return self
                .post_collection(app, caller, request, collection, env)
                .await;
        }
        let props = body_object(request)?;
        if collection == "users" && props.contains_key("password") {
            return Err(ApiError::IllegalArgument(
                "change a password with PUT /users/{user}/password {\"oldpassword\", \"newpassword\"}".into(),
            ));
        }
        let mut paging = Paging::from_request(request, &self.config)?;
        (paging.offset, paging.after) = (0, None);
        let page = self
            .store
            .query(&app.uuid, collection, &paging.collection_page()?)
            .await?;
        let mut updated = Vec::new();
        for e in self
            .permitted(app, caller, Method::Put, page.entities)
            .await
        {
            if self.may_change_owned(app, caller, &e).await.is_ok() {
                updated.push(self.merge_into(app, caller, e, props.clone()).await?);
            }
        }
        self.with_entities(app, env, updated).await
    }

    /// `GET /{collection}/{entity}`.
    pub(super) async fn get_entity(
        &self,
        app: &AppRecord,
        collection: &str,
        key: &Key,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let e = self.load(app, collection, key).await?;
        self.with_entities(app, env, vec![e]).await
    }

    /// `DELETE /{collection}/{entity}`.
    pub(super) async fn delete_entity(
        &self,
        app: &AppRecord,
        caller: &Caller,
        collection: &str,
        key: &Key,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let e = self.load(app, collection, key).await?;
        self.may_change_owned(app, caller, &e).await?;
        self.delete_one(app, &e).await?;
        self.with_entities(app, env, vec![e]).await
    }

    async fn delete_one(&self, app: &AppRecord, entity: &Entity) -> Result<(), ApiError> {
        if !self.store.delete_entity(&app.uuid, &entity.uuid).await? {
            return Err(ApiError::NotFound(format!(
                "{}/{} not found",
                entity.collection, entity.uuid
            )));
        }
        if entity.collection == "users" {
            self.revoke_subject(&entity.uuid, None).await?;
        }
        if matches!(entity.collection.as_str(), "users" | "groups" | "roles") {
            self.bump_grants();
        }
        Ok(())
    }

    pub(super) async fn delete_collection(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        collection: &str,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let mut paging = Paging::from_request(request, &self.config)?;
        (paging.offset, paging.after) = (0, None);
        let page = self
            .store
            .query(&app.uuid, collection, &paging.collection_page()?)
            .await?;
        // Each entity as if deleted alone: a bulk delete removes nothing its caller could
        // not delete one by one.
        let mut doomed = Vec::new();
        for e in self
            .permitted(app, caller, Method::Delete, page.entities)
            .await
        {
            if self.may_change_owned(app, caller, &e).await.is_ok() {
                doomed.push(e);
            }
        }
        for e in &doomed {
            self.delete_one(app, e).await?;
        }
        self.with_entities(app, env, doomed).await
    }

    /// Refuses a change to an entity that belongs to a user, by whatever path it is named,
    /// unless the caller is that user or an admin: an activity belongs to its actor, a device
    /// to the user it is registered to. Whatever the roles grant, nobody edits another's
    /// activity or takes over another's device.
    async fn may_change_owned(
        &self,
        app: &AppRecord,
        caller: &Caller,
        entity: &Entity,
    ) -> Result<(), ApiError> {
        if self.is_app_admin(app, caller) {
            return Ok(());
        }
        let owners = match entity.collection.as_str() {
            "activities" => entity
                .data
                .get("actor")
                .and_then(|a| a.get("uuid"))
                .and_then(Value::as_str)
                .map(|u| vec![u.to_owned()])
                .unwrap_or_default(),
            "devices" => {
                self.store
                    .related_uuids(&app.uuid, &entity.uuid, "devices", Direction::Inbound)
                    .await?
            }
            _ => return Ok(()),
        };
        let mine = caller
            .user_uuid()
            .is_some_and(|me| owners.iter().any(|o| o.eq_ignore_ascii_case(me)));
        if owners.is_empty() || mine {
            return Ok(());
        }
        let what = format!("/{}/{}", entity.collection, entity.uuid);
        Err(if caller.user_uuid().is_some() {
            ApiError::Forbidden(format!("{what} belongs to another user"))
        } else {
            ApiError::Unauthorized(format!("{what} belongs to a user: send their access token"))
        })
    }
}

/// An entity reference with `me` resolved.
pub(super) enum Key {
    Uuid(String),
    Name(String),
}

impl Key {
    pub(super) fn text(&self) -> &str {
        match self {
            Key::Uuid(s) | Key::Name(s) => s,
        }
    }
}

pub(super) fn key_of(caller: &Caller, entity: &EntityRef) -> Result<Key, ApiError> {
    Ok(match entity {
        EntityRef::Uuid(u) => Key::Uuid(u.clone()),
        EntityRef::Name(n) => Key::Name(n.clone()),
        EntityRef::Me => Key::Uuid(
            caller
                .user_uuid()
                // Usergrid answers a `me` that names nobody as a path that names nothing.
                .ok_or_else(|| {
                    ApiError::NoSuchResource("/users/me needs a user's access token".into())
                })?
                .to_owned(),
        ),
    })
}

/// The properties of a user that decide who their tokens speak for and whether they work.
fn who_fields(user: &Entity) -> [Option<Value>; 4] {
    ["username", "email", "activated", "disabled"].map(|k| user.data.get(k).cloned())
}

impl Api {
    /// The envelope carrying `entities`, each shown under the envelope's path (Usergrid's
    /// `importEntity`: `metadata.path` is that path plus the uuid) with the verbs of its
    /// connections, both ways.
    pub(super) async fn with_entities(
        &self,
        app: &AppRecord,
        mut env: Envelope,
        entities: Vec<Entity>,
    ) -> Result<Envelope, ApiError> {
        let uuids: Vec<String> = entities.iter().map(|e| e.uuid.clone()).collect();
        let names = match uuids.is_empty() {
            true => Vec::new(),
            false => self.store.relation_names(&app.uuid, &uuids).await?,
        };
        let base = env.path.clone().unwrap_or_default();
        let mut rendered = Vec::with_capacity(entities.len());
        // `names` is in the order of `entities`: each entity takes the run of rows that is its.
        let mut rows = names.iter().peekable();
        for entity in entities {
            let mut mine = Vec::new();
            while let Some((_, direction, relation)) =
                rows.next_if(|(uuid, _, _)| *uuid == entity.uuid)
            {
                mine.push((*direction, relation.as_str()));
            }
            rendered.push(render_entity_with(entity, &base, &mine));
        }
        env.entities = Some(rendered);
        Ok(env)
    }
}

/// The envelope carrying entities the request has just created, as [`Api::with_entities`]
/// shows them: none is connected to anything yet, so there are no verbs to read (a read per
/// POST: on PostgreSQL a round trip, and a sixth of what the database spent on a new entity).
pub(super) fn with_created(mut env: Envelope, entities: Vec<Entity>) -> Envelope {
    let base = env.path.clone().unwrap_or_default();
    env.entities = Some(
        entities
            .into_iter()
            .map(|e| render_entity_with(e, &base, &[]))
            .collect(),
    );
    env
}
