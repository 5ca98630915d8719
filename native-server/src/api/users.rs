//! A user's own endpoints (`password`, `revoketokens`) and the permissions of users, groups
//! and roles.

use super::entities::body_object;
use super::envelope::Envelope;
use super::{Api, ApiError, Caller};
use crate::store::{AppRecord, Entity};
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
        if !self.is_app_admin(app, caller) {
            if caller.user_uuid() != Some(user.uuid.as_str()) {
                return Err(ApiError::Forbidden(
                    "only the user or an admin may change a password".into(),
                ));
            }
            let old = body
                .get("oldpassword")
                .and_then(Value::as_str)
                .ok_or(ApiError::RequiredProperty("oldpassword"))?
                .to_owned();
            // A wrong old password is a failed login: throttled like one.
            let key = Some((app.uuid.as_str(), user.uuid.as_str()));
            self.login_allowed(caller.address(), key)?;
            let stored = self.store.user_secret(&app.uuid, &user.uuid).await?;
            if !self.verify_password(old, stored).await? {
                self.login_failed(caller.address(), key);
                return Err(ApiError::InvalidGrant("old password is wrong".into()));
            }
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
