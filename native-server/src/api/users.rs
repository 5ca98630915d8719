//! A user's own endpoints (`password`, `revoketokens`) and the permissions of users, groups
//! and roles.

use super::entities::body_object;
use super::envelope::Envelope;
use super::{Api, ApiError, Caller};
use crate::api::auth::{hash_text, token_hash};
use crate::signal::Signal;
use crate::store::{AppRecord, Entity, TokenKind};
use gridsocket_core::route::PermissionsOp;
use gridsocket_core::{ApiRequest, Permission};
use serde_json::Value;

impl Api {
    /// Sets a user's password: the user with the old one, or an admin. Every other token of
    /// the user is revoked.
    pub(super) async fn change_password(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        user: &Entity,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let body = body_object(request)?;
        let new = body
            .get("newpassword")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or(ApiError::RequiredProperty("newpassword"))?
            .to_owned();
        // The old password is the credential (Usergrid's UserResource): whoever knows it may
        // change it, with or without a token. Only an app admin may set one without it.
        if !self.is_app_admin(app, caller) {
            let old = body
                .get("oldpassword")
                .and_then(Value::as_str)
                .ok_or(ApiError::RequiredProperty("oldpassword"))?
                .to_owned();
            // A wrong old password is a failed login: throttled like one.
            let key = Some((app.uuid.as_str(), user.uuid.as_str()));
            let attempt = self.login_attempt(caller.address(), key)?;
            let stored = self.store.user_secret(&app.uuid, &user.uuid).await?;
            if !self.verify_password(old, stored).await? {
                return Err(ApiError::WrongOldPassword);
            }
            attempt.succeeded();
        }
        let hash = self.hash_password(new).await?;
        self.store
            .set_user_secret(&app.uuid, &user.uuid, &hash)
            .await?;
        // Whoever knew the old password is logged out everywhere; the user's own session that
        // made the change goes on.
        let keep = caller
            .token()
            .filter(|_| caller.user_uuid() == Some(user.uuid.as_str()));
        self.revoke_subject(&user.uuid, keep).await?;
        Ok(env)
    }

    /// Revokes every token of a user (the user, or an admin) and ends their sockets.
    pub(super) async fn revoke_tokens(
        &self,
        app: &AppRecord,
        caller: &Caller,
        user: &Entity,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        if caller.user_uuid() != Some(user.uuid.as_str()) {
            self.require_app_admin(app, caller)?;
        }
        self.revoke_subject(&user.uuid, None).await?;
        Ok(env)
    }

    /// Revokes one token of a user, named by `?token=`: holding it is the right to end it.
    /// Its sockets close (4401) on every node.
    pub(super) async fn revoke_token(
        &self,
        app: &AppRecord,
        request: &ApiRequest,
        user: &Entity,
        env: Envelope,
    ) -> Result<Envelope, ApiError> {
        let token = request
            .params
            .get("token")
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::RequiredProperty("token"))?;
        let hash = token_hash(token);
        match self.store.token(&hash).await? {
            Some(t)
                if t.kind == TokenKind::AppUser
                    && t.subject == user.uuid
                    && t.scope == app.uuid => {}
            // Not this user's: nothing is said about whose it is.
            _ => return Err(ApiError::BadToken),
        }
        self.store.revoke_token(&hash).await?;
        self.signal(Signal::TokenRevoked {
            hash: hash_text(&hash),
        });
        Ok(env)
    }

    /// Lists, grants or revokes a user's, group's or role's permissions.
    pub(super) async fn permissions(
        &self,
        app: &AppRecord,
        request: &ApiRequest,
        owner: &Entity,
        op: PermissionsOp,
        mut env: Envelope,
    ) -> Result<Envelope, ApiError> {
        if !matches!(owner.collection.as_str(), "users" | "groups" | "roles") {
            return Err(ApiError::NoSuchResource(
                "only users, groups and roles have permissions".into(),
            ));
        }
        let permission_arg = |text: Option<&str>| -> Result<String, ApiError> {
            let text = text.ok_or(ApiError::RequiredProperty("permission"))?;
            let parsed =
                Permission::parse(text).map_err(|e| ApiError::IllegalArgument(e.to_string()))?;
            Ok(parsed.to_string())
        };
        match op {
            PermissionsOp::List => {
                let perms = self.store.permissions(&app.uuid, &owner.uuid).await?;
                env.data = Some(Value::from(perms));
            }
            PermissionsOp::Grant => {
                let body = body_object(request)?;
                let perm = permission_arg(body.get("permission").and_then(Value::as_str))?;
                self.store
                    .add_permission(&app.uuid, &owner.uuid, &perm)
                    .await?;
                self.bump_grants();
                env.data = Some(Value::from(vec![perm]));
            }
            PermissionsOp::Revoke => {
                let perm = permission_arg(request.params.get("permission"))?;
                if !self
                    .store
                    .remove_permission(&app.uuid, &owner.uuid, &perm)
                    .await?
                {
                    return Err(ApiError::NotFound(format!(
                        "permission {perm:?} is not granted"
                    )));
                }
                self.bump_grants();
                env.data = Some(Value::from(vec![perm]));
            }
        }
        Ok(env)
    }
}
