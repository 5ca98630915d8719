//! Who is calling and what they may do: principals, cached grants, permission checks.

use super::{ApiError, Service};
use crate::store::{AppRecord, Direction, EntityKey};
use gridsocket_core::permission::Caller as PermCaller;
use gridsocket_core::{Method, Permission, ResourcePath};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

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
    /// An application user: what the app's roles and permissions grant.
    AppUser {
        /// Application uuid.
        app: String,
        /// User uuid.
        uuid: String,
        /// Username.
        username: String,
    },
    /// No credentials: what the `guest` role grants.
    Guest,
}

struct Grants {
    generation: u64,
    permissions: Vec<Permission>,
}

/// A principal with its permissions, loaded on first use and reloaded only when permissions
/// change somewhere. A socket keeps one for its whole life.
pub struct Caller {
    /// Who it is.
    pub principal: Principal,
    grants: Mutex<Option<Arc<Grants>>>,
    /// The hash of the token a socket authenticated with, re-checked after a bus outage.
    token: Mutex<Option<[u8; 32]>>,
}

impl Caller {
    /// A caller whose grants are not loaded yet.
    pub fn new(principal: Principal) -> Caller {
        Caller {
            principal,
            grants: Mutex::new(None),
            token: Mutex::new(None),
        }
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
            Principal::AppUser { uuid, .. } => Some(uuid),
            _ => None,
        }
    }
}

impl Service {
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
            Principal::AppUser { app: a, .. } => *a == app.uuid,
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
            Principal::AppUser { app: a, .. } if *a == app.uuid => Err(ApiError::Forbidden(
                "only the application's admins may do this".into(),
            )),
            _ => Err(ApiError::Unauthorized(
                "this needs an organization admin or application client token".into(),
            )),
        }
    }

    /// May `caller` do `method` on `path` in `app`?
    pub(super) async fn check_access(
        &self,
        app: &AppRecord,
        caller: &Caller,
        method: Method,
        path: &ResourcePath,
    ) -> Result<(), ApiError> {
        if self.is_app_admin(app, caller) {
            return Ok(());
        }
        let me = match &caller.principal {
            Principal::AppUser {
                app: a,
                uuid,
                username,
            } if *a == app.uuid => Some(PermCaller { uuid, username }),
            Principal::Guest => None,
            _ => {
                return Err(ApiError::Unauthorized(
                    "the token is not valid for this application".into(),
                ));
            }
        };
        let mut segments = path.segments.clone();
        if segments.len() >= 2 && segments[0].eq_ignore_ascii_case("users") && segments[1] == "me" {
            match me {
                Some(c) => segments[1] = c.uuid.to_owned(),
                None => {
                    return Err(ApiError::Unauthorized(
                        "/users/me needs a user's access token".into(),
                    ));
                }
            }
        }
        let grants = self.grants(app, caller).await?;
        // A user's feed is their inbox: private to them unless a permission names it
        // (`get:/users/*/feed`); the default role's `/**` does not open it.
        if segments.len() >= 3
            && segments[0].eq_ignore_ascii_case("users")
            && matches!(segments[2].to_ascii_lowercase().as_str(), "feed" | "inbox")
        {
            if let Some(c) = me
                && (segments[1].eq_ignore_ascii_case(c.uuid)
                    || segments[1].eq_ignore_ascii_case(c.username))
            {
                return Ok(());
            }
            let named = grants
                .permissions
                .iter()
                .any(|p| p.names("feed") && p.allows(method, &segments, me));
            return if named {
                Ok(())
            } else {
                Err(ApiError::Forbidden(format!(
                    "the feed of /{}/{} is private to its owner",
                    segments[0], segments[1]
                )))
            };
        }
        if grants
            .permissions
            .iter()
            .any(|p| p.allows(method, &segments, me))
        {
            return Ok(());
        }
        // Usergrid's implicit grant: a user may always read themself.
        if let Some(c) = me
            && method == Method::Get
            && segments.len() == 2
            && segments[0].eq_ignore_ascii_case("users")
            && (segments[1].eq_ignore_ascii_case(c.uuid)
                || segments[1].eq_ignore_ascii_case(c.username))
        {
            return Ok(());
        }
        let what = format!("{} {}", method.as_str(), path_text(&path.segments));
        match me {
            None => Err(ApiError::Unauthorized(format!(
                "guests may not {what}: send an access token"
            ))),
            Some(_) => Err(ApiError::Forbidden(format!("no permission to {what}"))),
        }
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
        let mut permissions = Vec::new();
        for owner in owners {
            for text in self.store.permissions(&app.uuid, &owner).await? {
                match Permission::parse(&text) {
                    Ok(p) => permissions.push(p),
                    Err(e) => {
                        tracing::warn!(permission = %text, error = %e, "ignoring stored permission")
                    }
                }
            }
        }
        let grants = Arc::new(Grants {
            generation,
            permissions,
        });
        *caller.grants.lock().unwrap_or_else(|p| p.into_inner()) = Some(grants.clone());
        Ok(grants)
    }
}

fn path_text(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}
