//! The router: every request inside an application is parsed once into a
//! [`AppRoute`](gridsocket_core::route::AppRoute) and run by one `match`. Adding an endpoint
//! is a variant in core's router and an arm here.

use super::entities::{Key, key_of};
use super::envelope::Envelope;
use super::envelope::{Body, Reply};
use super::{Api, ApiError, Caller, json_size};
use crate::signal::Signal;
use crate::store::{AppRecord, Entity};
use gridsocket_core::route::{AppRoute, Owner};
use gridsocket_core::{ApiRequest, Method, ResourcePath};

impl Api {
    /// Checks and runs one request inside an application.
    pub(super) async fn app_call(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
    ) -> Reply {
        let path = ResourcePath::parse(&request.path)?;
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
        // Everything but the token endpoint and the admins' credentials goes by the caller's
        // grants, and before anything else is said about the path.
        if !matches!(route, Ok(AppRoute::Token | AppRoute::Credentials)) {
            self.check_access(app, caller, request.method, &path)
                .await?;
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
        let env = |action: &str| {
            Envelope::for_app(
                action,
                app,
                &self.config.base_url,
                &request.path,
                &request.params,
            )
        };
        let action = request.method.action();
        let answer = match route {
            AppRoute::Token => return self.app_token(app, caller, request).await,
            AppRoute::Credentials => {
                self.require_app_admin(app, caller)?;
                Ok(self.app_credentials_envelope(app, request))
            }
            AppRoute::Queue(queue) => return self.queue_call(app, caller, request, queue).await,
            AppRoute::List { collection } => {
                self.get_collection(app, caller, request, &collection, env(action))
                    .await
            }
            AppRoute::Create { collection } => {
                self.post_collection(app, caller, request, &collection, env(action))
                    .await
            }
            AppRoute::DeleteMatching { collection } => {
                self.delete_collection(app, caller, request, &collection, env(action))
                    .await
            }
            AppRoute::Get { collection, entity } => {
                let key = key_of(caller, &entity)?;
                self.get_entity(app, &collection, &key, env(action)).await
            }
            AppRoute::Update { collection, entity } => {
                let key = key_of(caller, &entity)?;
                self.update_entity(app, caller, request, &collection, &key, env(action))
                    .await
            }
            AppRoute::Delete { collection, entity } => {
                let key = key_of(caller, &entity)?;
                self.delete_entity(app, caller, &collection, &key, env(action))
                    .await
            }
            AppRoute::Feed { owner, relation } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.feed(app, request, &owner, &relation, env(action))
                    .await
            }
            AppRoute::PostActivity { owner } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.post_activity(app, caller, &owner, request, env(action))
                    .await
            }
            AppRoute::SetPassword { user } => {
                let user = self.owner(app, caller, &user).await?;
                self.change_password(app, caller, request, &user, env("set user password"))
                    .await
            }
            AppRoute::RevokeTokens { user } => {
                let user = self.owner(app, caller, &user).await?;
                self.revoke_tokens(app, caller, &user, env("revoked user tokens"))
                    .await
            }
            AppRoute::Permissions { owner, op } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.permissions(app, request, &owner, op, env(action))
                    .await
            }
            AppRoute::Related {
                owner,
                relation,
                inbound,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.list_related(
                    app,
                    caller,
                    request,
                    &owner,
                    &relation,
                    inbound,
                    env(action),
                )
                .await
            }
            AppRoute::CreateRelated { owner, relation } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.create_related(app, request, &owner, &relation, env(action))
                    .await
            }
            AppRoute::GetRelated {
                owner,
                relation,
                inbound,
                target,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.get_related(
                    app,
                    caller,
                    request,
                    &owner,
                    &relation,
                    inbound,
                    &target,
                    env(action),
                )
                .await
            }
            AppRoute::Link {
                owner,
                relation,
                target,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.link(
                    app,
                    caller,
                    request,
                    &owner,
                    &relation,
                    &target,
                    env(action),
                )
                .await
            }
            AppRoute::Unlink {
                owner,
                relation,
                target,
            } => {
                let owner = self.owner(app, caller, &owner).await?;
                self.unlink(
                    app,
                    caller,
                    request,
                    &owner,
                    &relation,
                    &target,
                    env(action),
                )
                .await
            }
        };
        answer.map(|env| (200, Body::Envelope(Box::new(env))))
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
