//! Activities and feeds: a user's or group's outbox (`activities`) and inbox (`feed`), and
//! posting an activity, which reaches the feeds of the owner and of its followers or members.

use super::entities::{Paging, encode_cursor};
use super::envelope::Envelope;
use super::{Api, ApiError, Caller, now_ms};
use crate::store::{AppRecord, Direction, Entity, EntityKey};
use gridsocket_core::query::OrderBy;
use gridsocket_core::{ApiRequest, Query};
use serde_json::{Map, Value};

impl Api {
    /// A page of a user's or group's `feed` or `activities`, newest first unless the query
    /// orders them.
    pub(super) async fn feed(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        owner: &Entity,
        relation: &str,
        mut env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let mut paging = Paging::from_request(request, &self.config)?;
        let q = paging.query.get_or_insert_with(Query::default);
        if q.order.is_empty() {
            q.order.push(OrderBy {
                property: "published".into(),
                descending: true,
            });
        }
        let mut page = self
            .store
            .related(
                &app.uuid,
                &owner.uuid,
                relation,
                Direction::Outbound,
                &paging.page_query()?,
            )
            .await?;
        if page.more {
            env.cursor = Some(encode_cursor(paging.offset + page.entities.len()));
        }
        // A feed shows only the activities a GET of each would: the cursor still counts
        // every one the page passed over.
        page.entities = self
            .permitted(app, caller, gridsocket_core::Method::Get, page.entities)
            .await;
        env.count = Some(page.entities.len());
        self.with_entities(app, env, page.entities).await
    }

    /// `POST /users/{u}/activities` or `/groups/{g}/activities`: creates the activity and
    /// delivers it to the owner's feed and to the feeds of the user's followers or the
    /// group's members.
    pub(super) async fn post_activity(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Entity,
        request: &ApiRequest,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let mut props = match &request.body {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(ApiError::BadBody("an activity is a JSON object".into())),
        };
        let default_actor = (owner.collection == "users").then_some(owner);
        self.stamp_actor(app, caller, default_actor, &mut props)
            .await?;
        if !props.get("actor").is_some_and(Value::is_object) {
            return Err(ApiError::RequiredProperty("actor"));
        }
        props.entry("verb").or_insert(Value::String("post".into()));
        props.entry("published").or_insert(now_ms().into());
        let activity = self.create_entity(app, caller, "activities", props).await?;
        self.store
            .add_relation(&app.uuid, &owner.uuid, "activities", &activity.uuid)
            .await?;
        let mut owners = vec![owner.uuid.clone()];
        let audience = match owner.collection.as_str() {
            "users" => {
                self.store
                    .related_uuids(&app.uuid, &owner.uuid, "following", Direction::Inbound)
                    .await?
            }
            _ => {
                self.store
                    .related_uuids(&app.uuid, &owner.uuid, "users", Direction::Outbound)
                    .await?
            }
        };
        owners.extend(audience);
        self.store
            .deliver_to_feeds(&app.uuid, &activity, &owners)
            .await?;
        self.with_entities(app, env, vec![activity]).await
    }

    /// Sets an activity's actor. A user posts as themself: the actor's identity (uuid,
    /// username, email) is theirs, whatever the body says. An admin may name any actor, and by
    /// default posts as `default` (the feed's owner).
    pub(super) async fn stamp_actor(
        &self,
        app: &AppRecord,
        caller: &Caller,
        default: Option<&Entity>,
        props: &mut Map<String, Value>,
    ) -> Result<(), ApiError> {
        let (poster, forced) = match caller.user_uuid() {
            Some(uuid) => (
                self.store
                    .entity(&app.uuid, Some("users"), EntityKey::Uuid(uuid))
                    .await?,
                true,
            ),
            None => (default.cloned(), false),
        };
        let Some(user) = &poster else {
            return Ok(());
        };
        let username = user.data.get("username").cloned().unwrap_or(Value::Null);
        let display = user
            .data
            .get("name")
            .cloned()
            .unwrap_or_else(|| username.clone());
        let actor = props
            .entry("actor")
            .or_insert_with(|| Value::Object(Map::new()));
        if !actor.is_object() && forced {
            *actor = Value::Object(Map::new());
        }
        if let Value::Object(a) = actor {
            let mut identity = vec![
                ("uuid", Value::String(user.uuid.clone())),
                ("username", username),
            ];
            match user.data.get("email") {
                Some(email) => identity.push(("email", email.clone())),
                None if forced => {
                    a.remove("email");
                }
                None => {}
            }
            for (k, v) in identity {
                if forced {
                    a.insert(k.into(), v);
                } else {
                    a.entry(k).or_insert(v);
                }
            }
            if forced {
                a.insert("displayName".into(), display);
            } else {
                a.entry("displayName").or_insert(display);
            }
        }
        Ok(())
    }
}
