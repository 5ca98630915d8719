//! The router: every request inside an application is parsed once into a
//! [`AppRoute`](gridsocket_core::route::AppRoute) and run by one `match`. Adding an endpoint
//! is a variant in core's router and an arm here.

use super::entities::{Key, key_of};
use super::envelope::Envelope;
use super::envelope::{Body, Reply};
use super::{Api, ApiError, Caller, json_size};
use crate::signal::Signal;
use crate::store::{AppRecord, Entity};
use gridsocket_core::path::{Resource, join_segments};
use gridsocket_core::route::{AppRoute, Owner};
use gridsocket_core::{ApiRequest, Method, Params, ResourcePath};

impl Api {
    /// Checks and runs one request inside an application.
    pub(super) async fn app_call(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
    ) -> Reply {
        if let Some(reply) = self.presence_call(app, caller, request).await {
            return reply;
        }
        let path = ResourcePath::parse(&request.path)?;
        if let Some(matrix) = &path.matrix {
            return self.matrix_call(app, caller, request, &path, matrix).await;
        }
        if let Some(body) = &request.body {
            let size = json_size(body);
            if size > self.config.max_entity_bytes {
                return Err(ApiError::EntityTooLarge {
                    size,
                    limit: self.config.max_entity_bytes,
                });
            }
        }
        let route = AppRoute::parse(&path, request.method);
        // Everything else goes by the caller's grants, before anything else is said about the
        // path.
        // The token endpoint and the admins' credentials check their own credentials; so do a
        // password change (the old password) and a token's revocation (the token itself).
        let own_credentials = matches!(
            route,
            Ok(AppRoute::Token
                | AppRoute::Credentials
                | AppRoute::SetPassword { .. }
                | AppRoute::RevokeToken { .. })
        );
        if !own_credentials {
            // A PUT on a collection without a query creates: it is asked about as a POST.
            let creates = matches!(route, Ok(AppRoute::PutCollection { .. }))
                && request.params.get("ql").is_none_or(|q| q.trim().is_empty());
            let method = if creates {
                Method::Post
            } else {
                request.method
            };
            self.check_access(app, caller, method, &path).await?;
        }
        let route = match route {
            Ok(route) => route,
            Err(refused) => {
                // A relation's owner is looked up before its method is judged: a missing owner
                // is a 404 whatever the method.
                if let Some(owner) = AppRoute::owner_of(&path) {
                    self.owner(app, caller, &owner).await?;
                }
                return Err(refused.into());
            }
        };
        let result = self.run(app, caller, request, route).await;
        if request.method != Method::Get {
            // Writes log their changes; the dispatchers read them from there.
            self.signal(Signal::Changed {
                app: app.uuid.clone(),
            });
        }
        result
    }

    async fn run(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        route: AppRoute,
    ) -> Reply {
        // Usergrid's response path is the canonical path of what was asked for: the plural
        // collection, and a relation under its owner's uuid (`/users/{uuid}/groups`).
        let env = |action: &str, path: &str| {
            Envelope::for_app(action, app, &self.config.base_url, path, &request.params)
        };
        let typed = |i: usize| {
            request
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .nth(i)
                .map(str::to_ascii_lowercase)
        };
        // The relation as its path shows it: entities pointing at the owner are its
        // `connecting` ones (or, for users, its `followers`).
        let relation_path = |owner: &Entity, relation: &str, inbound: bool| {
            let shown = match (inbound, typed(2).as_deref()) {
                (false, _) => relation,
                (true, Some("followers")) => "followers",
                (true, _) => "connecting",
            };
            format!("/{}/{}/{shown}", owner.collection, owner.uuid)
        };
        let action = request.method.action();
        let listed = |collection: &str| env(action, &format!("/{collection}"));
        let answer = match route {
            AppRoute::Token => return self.app_token(app, caller, request).await,
            AppRoute::Credentials => {
                self.require_app_admin(app, caller)?;
                Ok(self.app_credentials_envelope(app, request))
            }
            AppRoute::Queue(queue) => return self.queue_call(app, caller, request, queue).await,
            // Paths with a query in them went to `matrix_call` before any route.
            AppRoute::Matching { .. } => {
                return Err(ApiError::NoSuchResource(
                    "a query in a path applies only to its first segment".into(),
                ));
            }
            AppRoute::List { collection } => {
                self.get_collection(app, caller, request, &collection, listed(&collection))
                    .await
            }
            AppRoute::Create { collection } => {
                self.post_collection(app, caller, request, &collection, listed(&collection))
                    .await
            }
            AppRoute::PutCollection { collection } => {
                self.put_collection(app, caller, request, &collection, listed(&collection))
                    .await
            }
            AppRoute::DeleteMatching { collection } => {
                self.delete_collection(app, caller, request, &collection, listed(&collection))
                    .await
            }
            AppRoute::Get { collection, entity } => {
                let key = key_of(caller, &entity)?;
                self.get_entity(app, &collection, &key, listed(&collection))
                    .await
            }
            AppRoute::Update { collection, entity } => {
                let key = key_of(caller, &entity)?;
                let env = listed(&collection);
                self.update_entity(app, caller, request, &collection, &key, env)
                    .await
            }
            AppRoute::Delete { collection, entity } => {
                let key = key_of(caller, &entity)?;
                self.delete_entity(app, caller, &collection, &key, listed(&collection))
                    .await
            }
            AppRoute::Feed { owner, relation } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, &relation, false));
                self.feed(app, caller, request, &owner, &relation, env)
                    .await
            }
            AppRoute::PostActivity { owner } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, "activities", false));
                self.post_activity(app, caller, &owner, request, env).await
            }
            AppRoute::SetPassword { user } => {
                let user = self.owner(app, caller, &user).await?;
                let env = env(
                    "set user password",
                    &relation_path(&user, "password", false),
                );
                self.change_password(app, caller, request, &user, env).await
            }
            AppRoute::RevokeToken { user } => {
                let user = self.owner(app, caller, &user).await?;
                let env = env(
                    "revoked user token",
                    &relation_path(&user, "revoketoken", false),
                );
                self.revoke_token(app, request, &user, env).await
            }
            AppRoute::UserToken { user } => {
                // Before the lookup: only an admin learns whether the user exists.
                self.require_app_admin(app, caller)?;
                let user = self.owner(app, caller, &user).await?;
                return self.user_token(app, request, user).await;
            }
            AppRoute::RevokeTokens { user } => {
                let user = self.owner(app, caller, &user).await?;
                let env = env(
                    "revoked user tokens",
                    &relation_path(&user, "revoketokens", false),
                );
                self.revoke_tokens(app, caller, &user, env).await
            }
            AppRoute::Permissions { owner, op } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, "permissions", false));
                self.permissions(app, request, &owner, op, env).await
            }
            AppRoute::Related {
                owner,
                relation,
                inbound,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, &relation, inbound));
                self.list_related(app, caller, request, &owner, &relation, inbound, env)
                    .await
            }
            AppRoute::CreateRelated { owner, relation } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, &relation, false));
                self.create_related(app, caller, request, &owner, &relation, env)
                    .await
            }
            AppRoute::GetRelated {
                owner,
                relation,
                inbound,
                target,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, &relation, inbound));
                self.get_related(app, caller, &owner, &relation, inbound, &target, env)
                    .await
            }
            AppRoute::Link {
                owner,
                relation,
                target,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, &relation, false));
                self.link(app, caller, &owner, &relation, &target, env)
                    .await
            }
            AppRoute::PutRelated {
                owner,
                relation,
                target,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, &relation, false));
                self.put_related(app, caller, request, &owner, &relation, &target, env)
                    .await
            }
            AppRoute::Unlink {
                owner,
                relation,
                target,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                let env = env(action, &relation_path(&owner, &relation, false));
                self.unlink(app, caller, &owner, &relation, &target, env)
                    .await
            }
        };
        answer.map(|env| (200, Body::Envelope(Box::new(env))))
    }

    /// A path with Usergrid's matrix parameters (`/books;ql=…`): on a collection alone they
    /// are its query parameters; with more path after them, the rest of the path runs for
    /// each entity the query selects, each as its own request (its own access check), and the
    /// answers' entities come back together.
    async fn matrix_call(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        path: &ResourcePath,
        matrix: &Params,
    ) -> Reply {
        let with_params = |path: String, params: Params| ApiRequest {
            method: request.method,
            path,
            params,
            body: request.body.clone(),
        };
        let rest = match &path.resource {
            Resource::Matching { rest, .. } => rest,
            _ => {
                // The matrix's parameters win over the query string's of the same name.
                let mut params = request.params.clone();
                for (name, _) in matrix.iter() {
                    params.remove(name);
                }
                for (name, value) in matrix.iter() {
                    params.push(name, value);
                }
                let plain = with_params(join_segments(&path.segments), params);
                return Box::pin(self.app_call(app, caller, &plain)).await;
            }
        };
        let collection = path.segments[0].as_str();
        let listing = ResourcePath::from_segments(vec![collection.to_owned()])?;
        self.check_access(app, caller, Method::Get, &listing)
            .await?;
        let selection = with_params(join_segments(&[collection]), matrix.clone());
        let paging = super::entities::Paging::from_request(&selection, &self.config)?;
        let canonical = gridsocket_core::inflector::collection_name(collection);
        let page = self
            .store
            .query(&app.uuid, &canonical, &paging.collection_page()?)
            .await?;
        let selected = self
            .permitted(app, caller, Method::Get, page.entities)
            .await;
        let mut merged: Option<Box<Envelope>> = None;
        for entity in selected {
            let mut segments = vec![canonical.clone(), entity.uuid.clone()];
            segments.extend(rest.iter().cloned());
            let one = with_params(join_segments(&segments), request.params.clone());
            match Box::pin(self.app_call(app, caller, &one)).await? {
                (_, Body::Envelope(env)) => match &mut merged {
                    None => merged = Some(env),
                    Some(all) => {
                        let more = env.entities.unwrap_or_default();
                        all.entities.get_or_insert_with(Vec::new).extend(more);
                    }
                },
                other => return Ok(other),
            }
        }
        let mut env = match merged {
            Some(env) => env,
            None => Box::new(Envelope::for_app(
                request.method.action(),
                app,
                &self.config.base_url,
                &format!("/{canonical}"),
                &request.params,
            )),
        };
        let count = env.entities.get_or_insert_with(Vec::new).len();
        env.count = Some(count);
        Ok((200, Body::Envelope(env)))
    }

    /// The entity a relation route starts from, or 404.
    async fn owner(
        &self,
        app: &AppRecord,
        caller: &Caller,
        owner: &Owner,
    ) -> Result<Entity, ApiError> {
        let key: Key = key_of(caller, &owner.entity)?;
        self.load(app, &owner.collection, &key).await
    }
}
