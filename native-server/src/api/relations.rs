//! Relations between entities: connections (`/users/a/likes/books/b`, `following`) and
//! linked collections (`/groups/g/users/u`), read, made and unmade.

use super::entities::{Key, MAX_LIMIT, Paging, body_object, encode_cursor, key_of, name_property};
use super::envelope::Envelope;
use super::{Api, ApiError, Caller};
use crate::store::{AppRecord, Direction, Entity, EntityKey, PageQuery};
use gridsocket_core::access::implied_target_collection;
use gridsocket_core::inflector::{collection_name, singularize};
use gridsocket_core::path::RelationTarget;
use gridsocket_core::{ApiRequest, EntityRef, Method, ResourcePath};
use serde_json::Value;

/// Collections whose membership is kept on both sides: `(owner, relation) → reverse relation`.
fn linked_reverse(owner_collection: &str, relation: &str) -> Option<&'static str> {
    match (owner_collection, relation) {
        ("groups", "users") => Some("groups"),
        ("users", "groups") => Some("users"),
        ("roles", "users") => Some("roles"),
        ("users", "roles") => Some("users"),
        _ => None,
    }
}

/// Relations that change what someone may do.
fn affects_grants(collection: &str, relation: &str) -> bool {
    matches!(collection, "users" | "groups" | "roles")
        && matches!(relation, "users" | "groups" | "roles" | "permissions")
}

/// True when a relation's target is named without a collection that the relation implies:
/// then it is found by uuid in any collection, before access is asked.
fn relation_names_no_collection(owner: &Entity, relation: &str) -> bool {
    implied_target_collection(&owner.collection, relation).is_none()
}

fn direction(inbound: bool) -> Direction {
    if inbound {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

fn not_related(target: &Entity, owner: &Entity, relation: &str) -> ApiError {
    ApiError::NotFound(format!(
        "{} is not related to {} by {relation}",
        target.uuid, owner.uuid
    ))
}

impl Api {
    /// A page of a relation's entities that the caller may read.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn list_related(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        owner: &Entity,
        relation: &str,
        inbound: bool,
        mut env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let paging = Paging::from_request(request, &self.config)?;
        let mut page = self
            .store
            .related(
                &app.uuid,
                &owner.uuid,
                relation,
                direction(inbound),
                &paging.page_query()?,
            )
            .await?;
        if page.more {
            env.cursor = Some(encode_cursor(paging.offset + page.entities.len()));
        }
        // Related entities show only where their own GET would.
        page.entities = self
            .permitted(app, caller, Method::Get, page.entities)
            .await;
        env.count = Some(page.entities.len());
        self.with_entities(app, env, page.entities).await
    }

    /// `POST /users/fred/devices {…}`: creates the entity in the relation's collection, then
    /// relates it.
    pub(super) async fn create_related(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        owner: &Entity,
        relation: &str,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let props = match &request.body {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(ApiError::BadBody("POST needs a JSON object body".into())),
        };
        let collection = implied_target_collection(&owner.collection, relation)
            .map(str::to_owned)
            .unwrap_or_else(|| collection_name(relation));
        let created = self.create_entity(app, caller, &collection, props).await?;
        self.connect(app, owner, relation, &created).await?;
        self.with_entities(app, env, vec![created]).await
    }

    /// The target of a relation, if it is related.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn get_related(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Entity,
        relation: &str,
        inbound: bool,
        target: &RelationTarget,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let target = self
            .readable_target(app, caller, owner, relation, target)
            .await?;
        let linked = self
            .store
            .related_uuids(&app.uuid, &owner.uuid, relation, direction(inbound))
            .await?
            .contains(&target.uuid);
        if !linked {
            return Err(not_related(&target, owner, relation));
        }
        self.with_entities(app, env, vec![target]).await
    }

    /// Relates the owner to a target.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn link(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Entity,
        relation: &str,
        target: &RelationTarget,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let target = self
            .readable_target(app, caller, owner, relation, target)
            .await?;
        self.link_checked(app, caller, owner, relation, &target)
            .await?;
        self.with_entities(app, env, vec![target]).await
    }

    /// Relates the owner to a target the caller may read, unless the target belongs to
    /// another user.
    async fn link_checked(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Entity,
        relation: &str,
        target: &Entity,
    ) -> Result<(), ApiError> {
        if owner.collection == "users" && relation == "devices" && !self.is_app_admin(app, caller) {
            // A device belongs to the first user it is registered to: linking it to oneself
            // would make it one's own to change or delete.
            let users = self
                .store
                .related_uuids(&app.uuid, &target.uuid, "devices", Direction::Inbound)
                .await?;
            if users.iter().any(|u| *u != owner.uuid) {
                return Err(ApiError::Forbidden(format!(
                    "/devices/{} belongs to another user",
                    target.uuid
                )));
            }
        }
        self.connect(app, owner, relation, target).await
    }

    /// Updates a relation's target with the body and relates it to the owner; a target the
    /// path names by a name nothing has yet is created with it (`PUT /users/fred/devices/ipad`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn put_related(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        owner: &Entity,
        relation: &str,
        target: &RelationTarget,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let props = body_object(request)?;
        let found = self
            .readable_target(app, caller, owner, relation, target)
            .await;
        let entity = match (found, &target.entity) {
            (Ok(existing), _) => {
                let path = ResourcePath::from_segments(vec![
                    existing.collection.clone(),
                    existing.uuid.clone(),
                ])?;
                self.check_access(app, caller, Method::Put, &path).await?;
                self.merge_into(app, caller, existing, props).await?
            }
            (Err(ApiError::NotFound(_)), EntityRef::Name(name)) => {
                let Some(collection) = target.collection.clone().or_else(|| {
                    implied_target_collection(&owner.collection, relation).map(str::to_owned)
                }) else {
                    return Err(ApiError::IllegalArgument(format!(
                        "name the collection of {name:?}: …/{relation}/{{collection}}/{name}"
                    )));
                };
                let path = ResourcePath::from_segments(vec![collection.clone(), name.clone()])?;
                self.check_access(app, caller, Method::Put, &path).await?;
                let mut props = props;
                let (name_prop, _) = name_property(&collection);
                props.insert(name_prop.into(), Value::String(name.clone()));
                self.create_entity(app, caller, &collection, props).await?
            }
            (Err(e), _) => return Err(e),
        };
        self.link_checked(app, caller, owner, relation, &entity)
            .await?;
        self.with_entities(app, env, vec![entity]).await
    }

    /// Unrelates the owner from a target (both sides of a linked collection).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn unlink(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Entity,
        relation: &str,
        target: &RelationTarget,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let target = self
            .readable_target(app, caller, owner, relation, target)
            .await?;
        let removed = self
            .store
            .remove_relation(&app.uuid, &owner.uuid, relation, &target.uuid)
            .await?;
        if !removed {
            return Err(not_related(&target, owner, relation));
        }
        if let Some(reverse) = linked_reverse(&owner.collection, relation) {
            self.store
                .remove_relation(&app.uuid, &target.uuid, reverse, &owner.uuid)
                .await?;
        }
        if affects_grants(&owner.collection, relation) {
            self.bump_grants();
        }
        self.with_entities(app, env, vec![target]).await
    }

    /// A relation's target, if the caller may read it on its own: a relation shows and takes
    /// nothing more, so linking an entity to oneself opens nothing.
    async fn readable_target(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Entity,
        relation: &str,
        target: &RelationTarget,
    ) -> Result<Entity, ApiError> {
        let found = self
            .load_target(app, caller, owner, relation, target)
            .await?;
        if self
            .may(
                app,
                caller,
                Method::Get,
                &found.collection,
                &found.uuid,
                found.name.as_deref(),
            )
            .await
        {
            return Ok(found);
        }
        let what = format!("/{}/{}", found.collection, target.entity);
        if target.collection.is_none() && relation_names_no_collection(owner, relation) {
            // Named by uuid alone, it was looked up before access could be asked: a refusal
            // would tell that it exists. It is not found, like one that does not.
            return Err(ApiError::NotFound(format!("{} not found", target.entity)));
        }
        Err(if caller.user_uuid().is_some() {
            ApiError::Forbidden(format!("no permission to GET {what}"))
        } else {
            ApiError::Unauthorized(format!("guests may not GET {what}: send an access token"))
        })
    }

    pub(super) async fn connect(
        &self,
        app: &AppRecord,
        owner: &Entity,
        relation: &str,
        target: &Entity,
    ) -> Result<(), ApiError> {
        if let Some(expected) = implied_target_collection(&owner.collection, relation)
            && target.collection != expected
        {
            return Err(ApiError::IllegalArgument(format!(
                "{relation} of a {} must be {expected}, not {}",
                singularize(&owner.collection),
                target.collection
            )));
        }
        self.store
            .add_relation(&app.uuid, &owner.uuid, relation, &target.uuid)
            .await?;
        if let Some(reverse) = linked_reverse(&owner.collection, relation) {
            self.store
                .add_relation(&app.uuid, &target.uuid, reverse, &owner.uuid)
                .await?;
        }
        if affects_grants(&owner.collection, relation) {
            self.bump_grants();
        }
        if relation == "following" && target.collection == "users" {
            // Usergrid copies the followed user's activities into the follower's feed.
            let all = PageQuery {
                query: None,
                limit: MAX_LIMIT,
                offset: 0,
                after: None,
                deadline: None,
                max_bytes: None,
                max_rows: None,
            };
            let past = self
                .store
                .related(
                    &app.uuid,
                    &target.uuid,
                    "activities",
                    Direction::Outbound,
                    &all,
                )
                .await?;
            for activity in past.entities {
                self.store
                    .deliver_to_feeds(&app.uuid, &activity, std::slice::from_ref(&owner.uuid))
                    .await?;
            }
        }
        Ok(())
    }

    async fn load_target(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Entity,
        relation: &str,
        target: &RelationTarget,
    ) -> Result<Entity, ApiError> {
        let collection = target
            .collection
            .clone()
            .or_else(|| implied_target_collection(&owner.collection, relation).map(str::to_owned));
        let key = key_of(caller, &target.entity)?;
        match (collection, &key) {
            (Some(c), _) => {
                // Whether the caller may read it is asked before whether it exists, so that
                // a refusal tells nothing about what is there.
                let path = ResourcePath::from_segments(vec![c.clone(), key.text().to_owned()])?;
                self.check_access(app, caller, Method::Get, &path).await?;
                self.load(app, &c, &key).await
            }
            (None, Key::Uuid(u)) => self
                .store
                .entity(&app.uuid, None, EntityKey::Uuid(u))
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("{u} not found"))),
            (None, Key::Name(n)) => Err(ApiError::IllegalArgument(format!(
                "name the collection of {n:?}: /{}/{}/{relation}/{{collection}}/{n}",
                owner.collection, owner.uuid
            ))),
        }
    }
}
