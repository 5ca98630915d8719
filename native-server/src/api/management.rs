//! Organizations, applications, admins and the token endpoints.

use super::access::user_may_log_in;
use super::entities::{validate_email, validate_name};
use super::envelope::{Body, Envelope, Reply, render_entity};
use super::{Api, ApiError, Authenticated, Caller, Presenter, Principal, now_ms};
use crate::api::auth::{Credentials, random_secret, secrets_equal};
use crate::store::{AdminRecord, AppRecord, Entity, OrgRecord, TokenKind};
use gridsocket_core::{ApiRequest, EntityRef, Method, Params};
use serde_json::{Map, Value, json};
use std::net::IpAddr;

/// Names that cannot be organizations or applications: they are routes.
const RESERVED_NAMES: &[&str] = &["management", "status", "healthz", "metrics", "demo-assets"];

/// The default roles of a new application (Usergrid's `resetRoles`).
const DEFAULT_ROLES: &[(&str, &str, &[&str])] = &[
    ("admin", "Administrator", &[]),
    ("default", "Default", &["get,put,post,delete:/**"]),
    (
        "guest",
        "Guest",
        &["post:/users", "post:/devices", "put:/devices/*"],
    ),
];

fn valid_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !RESERVED_NAMES.contains(&name.to_ascii_lowercase().as_str());
    if ok {
        Ok(())
    } else {
        Err(ApiError::IllegalArgument(format!(
            "{kind} name {name:?} must be 1 to 64 letters, digits, '-' or '_', and not a reserved word"
        )))
    }
}

/// A grant's fields, read from the JSON body first, then the query.
struct GrantArgs<'a> {
    body: Map<String, Value>,
    params: &'a Params,
}

impl GrantArgs<'_> {
    fn get(&self, name: &str) -> Option<String> {
        match self.body.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => self.params.get(name).map(str::to_owned),
        }
    }

    fn require(&self, name: &'static str) -> Result<String, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or(ApiError::RequiredProperty(name))
    }

    fn ttl_ms(&self) -> Result<Option<u64>, ApiError> {
        match self.get("ttl") {
            None => Ok(None),
            Some(t) => t.parse::<u64>().map(Some).map_err(|_| {
                ApiError::IllegalArgument("ttl must be a whole number of milliseconds".into())
            }),
        }
    }
}

fn grant_args<'a>(body: Option<Value>, params: &'a Params) -> Result<GrantArgs<'a>, ApiError> {
    let body = match body {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::BadBody("the body must be a JSON object".into())),
    };
    Ok(GrantArgs { body, params })
}

fn plain_env(action: &str, params: &Params) -> Envelope {
    Envelope {
        action: action.to_owned(),
        params: super::envelope::params_echo(params),
        ..Envelope::default()
    }
}

fn admin_json(admin: &AdminRecord, orgs: &[OrgRecord]) -> Value {
    let organizations: Map<String, Value> = orgs
        .iter()
        .map(|o| (o.name.clone(), json!({"uuid": o.uuid, "name": o.name})))
        .collect();
    json!({
        "uuid": admin.uuid, "type": "user", "username": admin.username, "email": admin.email,
        "name": admin.name, "activated": true, "created": admin.created,
        "organizations": organizations,
    })
}

impl Api {
    /// `/management/…`: tokens, organizations, applications.
    pub(super) async fn management(
        &self,
        method: Method,
        segments: &[String],
        params: &Params,
        body: Option<Value>,
        creds: &Credentials,
        peer: Option<IpAddr>,
    ) -> Reply {
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let org_for_admin = |name: &str| self.org_for_admin(name.to_owned(), creds, peer);
        match (method, segs.as_slice()) {
            (Method::Get | Method::Post, ["token"]) => {
                let args = grant_args(body, params)?;
                self.management_token(&args, creds, peer).await
            }
            (Method::Post, ["orgs" | "organizations"]) => {
                let caller = self
                    .authenticate(creds, None, peer, Presenter::Request)
                    .await?;
                if caller.principal != Principal::Superuser {
                    return Err(ApiError::Unauthorized(
                        "creating an organization needs the superuser's token".into(),
                    ));
                }
                let args = grant_args(body, params)?;
                self.create_org(&args, params).await
            }
            (Method::Get, ["orgs" | "organizations", org]) => {
                let org = org_for_admin(org).await?;
                let mut env = plain_env("get organization", params);
                env.data =
                    Some(json!({"uuid": org.uuid, "name": org.name, "created": org.created}));
                Ok((200, Body::Envelope(Box::new(env))))
            }
            (Method::Get, ["orgs" | "organizations", org, "credentials"]) => {
                let org = org_for_admin(org).await?;
                let mut env = plain_env("get organization client credentials", params);
                env.credentials =
                    Some(json!({"client_id": org.client_id, "client_secret": org.client_secret}));
                Ok((200, Body::Envelope(Box::new(env))))
            }
            (Method::Get, ["orgs" | "organizations", org, "apps" | "applications"]) => {
                let org = org_for_admin(org).await?;
                let apps = self.store.apps_of_org(&org.uuid).await?;
                let data: Map<String, Value> = apps
                    .iter()
                    .map(|a| {
                        (
                            format!("{}/{}", org.name, a.name),
                            Value::String(a.uuid.clone()),
                        )
                    })
                    .collect();
                let mut env = plain_env("get organization application", params);
                env.data = Some(Value::Object(data));
                Ok((200, Body::Envelope(Box::new(env))))
            }
            (Method::Post, ["orgs" | "organizations", org, "apps" | "applications"]) => {
                let org = org_for_admin(org).await?;
                let args = grant_args(body, params)?;
                let name = args.require("name")?;
                let app = self.create_app(&org, &name).await?;
                let mut env = plain_env("new application", params);
                env.data = Some(json!({ format!("{}/{}", org.name, app.name): app.uuid }));
                env.credentials =
                    Some(json!({"client_id": app.client_id, "client_secret": app.client_secret}));
                Ok((200, Body::Envelope(Box::new(env))))
            }
            (
                Method::Get,
                [
                    "orgs" | "organizations",
                    org,
                    "apps" | "applications",
                    app,
                    "credentials",
                ],
            ) => {
                let org = org_for_admin(org).await?;
                let app = self
                    .store
                    .app_by_name(&org.uuid, app)
                    .await?
                    .ok_or_else(|| ApiError::AppNotFound(format!("{}/{app}", org.name)))?;
                let mut env = plain_env("get application client credentials", params);
                env.credentials =
                    Some(json!({"client_id": app.client_id, "client_secret": app.client_secret}));
                Ok((200, Body::Envelope(Box::new(env))))
            }
            (_, ["token" | "orgs" | "organizations", ..]) => {
                Err(ApiError::MethodNotAllowed(method.as_str()))
            }
            _ => Err(ApiError::NoSuchResource(format!(
                "/management/{}",
                segs.join("/")
            ))),
        }
    }

    /// The organization `name`, if the credentials administer it. Callers who do not are
    /// answered alike whether or not it exists: who may not see an organization does not
    /// learn that it is there.
    async fn org_for_admin(
        &self,
        name: String,
        creds: &Credentials,
        peer: Option<IpAddr>,
    ) -> Result<OrgRecord, ApiError> {
        let caller = self
            .authenticate(creds, None, peer, Presenter::Request)
            .await?;
        if caller.principal == Principal::Guest {
            return Err(ApiError::Unauthorized(
                "organization management needs an admin token".into(),
            ));
        }
        let allowed = |org: &OrgRecord| match &caller.principal {
            Principal::Superuser => true,
            Principal::Admin { orgs, .. } => orgs.contains(&org.uuid),
            Principal::OrgClient { org: o } => *o == org.uuid,
            _ => false,
        };
        match self.store.org_by_name(&name).await? {
            Some(org) if allowed(&org) => Ok(org),
            _ => Err(ApiError::AppNotFound(name)),
        }
    }

    async fn management_token(
        &self,
        args: &GrantArgs<'_>,
        creds: &Credentials,
        peer: Option<IpAddr>,
    ) -> Reply {
        let grant = args.require("grant_type")?;
        let ttl = args.ttl_ms()?;
        match grant.as_str() {
            "password" => {
                let username = args.require("username")?;
                let password = args.require("password")?;
                let bad = || ApiError::InvalidGrant("invalid username or password".into());
                if let Some((su_name, su_hash)) = self.superuser_named(&username) {
                    let (su_name, su_hash) = (su_name.to_owned(), su_hash.to_owned());
                    let attempt = self.login_attempt(peer, Some(("management", "superuser")))?;
                    if !self.verify_password(password, Some(su_hash)).await? {
                        return Err(bad());
                    }
                    attempt.succeeded();
                    let (token, expires_in) = self
                        .issue_token(
                            TokenKind::Superuser,
                            "superuser",
                            self.superuser_fingerprint().unwrap_or_default(),
                            ttl,
                        )
                        .await?;
                    return Ok((
                        200,
                        Body::Json(json!({
                            "access_token": token, "expires_in": expires_in,
                            "user": {"username": su_name, "type": "user", "superuser": true},
                        })),
                    ));
                }
                let admin = self.store.admin_by_login(&username).await?;
                // Failures count against the admin, however the login names them (username
                // or email), or against the name given when there is no such admin.
                let who = admin
                    .as_ref()
                    .map_or_else(|| username.to_lowercase(), |a| a.uuid.clone());
                let attempt = self.login_attempt(peer, Some(("management", who.as_str())))?;
                let hash = admin.as_ref().map(|a| a.password_hash.clone());
                let admin = match (self.verify_password(password, hash).await?, admin) {
                    (true, Some(admin)) => admin,
                    _ => return Err(bad()),
                };
                attempt.succeeded();
                let orgs = self.store.admin_orgs(&admin.uuid).await?;
                let (token, expires_in) = self
                    .issue_token(TokenKind::Admin, &admin.uuid, "", ttl)
                    .await?;
                Ok((
                    200,
                    Body::Json(json!({
                        "access_token": token, "expires_in": expires_in, "user": admin_json(&admin, &orgs),
                    })),
                ))
            }
            "client_credentials" => {
                let (id, secret) = client_pair(args, creds)?;
                let attempt = self.login_attempt(peer, None)?;
                let org = self.store.org_by_client_id(&id).await?;
                let Some(org) = org.filter(|o| secrets_equal(&o.client_secret, &secret)) else {
                    // As Usergrid's token endpoints answer any failed grant.
                    return Err(ApiError::InvalidGrant(
                        "invalid username or password".into(),
                    ));
                };
                attempt.succeeded();
                let (token, expires_in) = self
                    .issue_token(TokenKind::OrgClient, &org.uuid, &org.uuid, ttl)
                    .await?;
                Ok((
                    200,
                    Body::Json(json!({
                        "access_token": token, "expires_in": expires_in,
                        "organization": {"uuid": org.uuid, "name": org.name},
                    })),
                ))
            }
            other => Err(ApiError::UnsupportedGrant(other.to_owned())),
        }
    }

    /// `/{org}/{app}/token`: app users (password) and the app's client (client_credentials).
    pub(super) async fn app_token(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
    ) -> Reply {
        if !matches!(request.method, Method::Get | Method::Post) {
            return Err(ApiError::MethodNotAllowed(request.method.as_str()));
        }
        let peer = caller.address();
        let args = grant_args(request.body.clone(), &request.params)?;
        let grant = args.require("grant_type")?;
        let ttl = args.ttl_ms()?;
        match grant.as_str() {
            "password" => {
                let username = args.require("username")?;
                let password = args.require("password")?;
                let user = self
                    .lookup_entity(app, Some("users"), &EntityRef::Name(username.clone()))
                    .await?;
                // Failures count against the user, however the login names them (username or
                // email), or against the name given when there is no such user.
                let who = user
                    .as_ref()
                    .map_or_else(|| username.clone(), |u| u.uuid.clone());
                let key = Some((app.uuid.as_str(), who.as_str()));
                let attempt = self.login_attempt(peer, key)?;
                // An unknown user costs what a wrong password does: the dummy hash is checked.
                let hash = match &user {
                    Some(u) => self.store.user_secret(&app.uuid, &u.uuid).await?,
                    None => None,
                };
                let user = match (self.verify_password(password, hash).await?, user) {
                    (true, Some(user)) => user,
                    _ => {
                        return Err(ApiError::InvalidGrant(
                            "invalid username or password".into(),
                        ));
                    }
                };
                attempt.succeeded();
                self.user_access(app, user, ttl).await
            }
            "client_credentials" => {
                let (id, secret) = client_pair(&args, &Credentials::None)?;
                let attempt = self.login_attempt(peer, None)?;
                if !(secrets_equal(&app.client_id, &id)
                    && secrets_equal(&app.client_secret, &secret))
                {
                    // As Usergrid's token endpoints answer any failed grant.
                    return Err(ApiError::InvalidGrant(
                        "invalid username or password".into(),
                    ));
                }
                attempt.succeeded();
                let (token, expires_in) = self
                    .issue_token(TokenKind::AppClient, &app.uuid, &app.uuid, ttl)
                    .await?;
                Ok((
                    200,
                    Body::Json(json!({
                        "access_token": token, "expires_in": expires_in,
                        "application": {"uuid": app.uuid, "name": app.name, "organization": app.org_name},
                    })),
                ))
            }
            other => Err(ApiError::UnsupportedGrant(other.to_owned())),
        }
    }

    /// `GET /{org}/{app}/users/{u}/token`: an application admin (an org admin, the org's or
    /// the app's client) takes a token for one of its users without the user's password, as
    /// Usergrid's `UserResource.getAccessToken` does; `?ttl=` in milliseconds. The router has
    /// checked the caller is one, before it looked the user up. A user may not trade a token
    /// for another (a longer one), not even for themself.
    pub(super) async fn user_token(
        &self,
        app: &AppRecord,
        request: &ApiRequest,
        user: Entity,
    ) -> Reply {
        let ttl = grant_args(None, &request.params)?.ttl_ms()?;
        self.user_access(app, user, ttl).await
    }

    /// A new token for a user who may log in, answered as a login is.
    async fn user_access(&self, app: &AppRecord, user: Entity, ttl: Option<u64>) -> Reply {
        match user_may_log_in(&user) {
            Err(ApiError::UserNotActivated) => {
                return Err(ApiError::InvalidGrant("user not activated".into()));
            }
            Err(_) => return Err(ApiError::InvalidGrant("user disabled".into())),
            Ok(()) => {}
        }
        let (token, expires_in) = self
            .issue_token(TokenKind::AppUser, &user.uuid, &app.uuid, ttl)
            .await?;
        Ok((
            200,
            Body::Json(json!({
                "access_token": token, "expires_in": expires_in,
                "user": render_entity(user, "/users"),
            })),
        ))
    }

    pub(super) fn app_credentials_envelope(
        &self,
        app: &AppRecord,
        request: &ApiRequest,
    ) -> Envelope {
        let mut env = Envelope::for_app(
            "get application client credentials",
            app,
            &self.config.base_url,
            &request.path,
            &request.params,
        );
        env.credentials =
            Some(json!({"client_id": app.client_id, "client_secret": app.client_secret}));
        env
    }

    async fn create_org(&self, args: &GrantArgs<'_>, params: &Params) -> Reply {
        let org_name = args.require("organization")?;
        valid_name("organization", &org_name)?;
        // An admin's login names are held to the rules of users' (nothing a path, a pattern
        // or a login could read as more than itself).
        let username = args.require("username")?;
        let username = validate_name("users", "username", &Value::String(username))?;
        let email = validate_email(&Value::String(args.require("email")?))?;
        let password = args.require("password")?;
        let name = args.get("name").unwrap_or_else(|| username.clone());
        let now = now_ms();
        let org = OrgRecord {
            uuid: uuid::Uuid::now_v7().to_string(),
            name: org_name.clone(),
            client_id: format!("b3U6{}", random_secret(16)),
            client_secret: format!("b3U6{}", random_secret(24)),
            created: now,
        };
        let admin = AdminRecord {
            uuid: uuid::Uuid::now_v7().to_string(),
            username,
            email,
            name,
            password_hash: self.hash_password(password).await?,
            created: now,
        };
        self.store
            .create_org(&org, &admin)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Duplicate(what) => ApiError::Conflict(what),
                other => other.into(),
            })?;
        let mut env = plain_env("new organization", params);
        env.data = Some(json!({
            "owner": admin_json(&admin, std::slice::from_ref(&org)),
            "organization": {"uuid": org.uuid, "name": org.name},
        }));
        env.credentials =
            Some(json!({"client_id": org.client_id, "client_secret": org.client_secret}));
        Ok((200, Body::Envelope(Box::new(env))))
    }

    /// Creates an application with its default roles.
    pub async fn create_app(&self, org: &OrgRecord, name: &str) -> Result<AppRecord, ApiError> {
        valid_name("application", name)?;
        let now = now_ms();
        let app = AppRecord {
            uuid: uuid::Uuid::now_v7().to_string(),
            org_uuid: org.uuid.clone(),
            org_name: org.name.clone(),
            name: name.to_owned(),
            client_id: format!("YXA6{}", random_secret(16)),
            client_secret: format!("YXA6{}", random_secret(24)),
            created: now,
        };
        let mut roles = Vec::new();
        let mut permissions = Vec::new();
        for (role, title, perms) in DEFAULT_ROLES {
            let uuid = uuid::Uuid::now_v7().to_string();
            let mut data = Map::new();
            data.insert("uuid".into(), Value::String(uuid.clone()));
            data.insert("type".into(), Value::String("role".into()));
            data.insert("name".into(), Value::String((*role).into()));
            data.insert("roleName".into(), Value::String((*role).into()));
            data.insert("title".into(), Value::String((*title).into()));
            data.insert("created".into(), now.into());
            data.insert("modified".into(), now.into());
            for p in *perms {
                permissions.push((uuid.clone(), (*p).to_owned()));
            }
            roles.push(Entity {
                uuid,
                collection: "roles".into(),
                name: Some((*role).into()),
                data,
            });
        }
        self.store
            .create_app(&app, &roles, &permissions)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Duplicate(_) => {
                    ApiError::Conflict(format!("application {}/{name}", org.name))
                }
                other => other.into(),
            })?;
        Ok(app)
    }

    /// Creates an organization and its admin directly (bootstrap and demo data).
    pub async fn bootstrap_org(
        &self,
        org_name: &str,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<OrgRecord, ApiError> {
        if let Some(org) = self.store.org_by_name(org_name).await? {
            return Ok(org);
        }
        let params = Params::new();
        let mut body = Map::new();
        for (k, v) in [
            ("organization", org_name),
            ("username", username),
            ("email", email),
            ("password", password),
        ] {
            body.insert(k.into(), Value::String(v.into()));
        }
        let args = GrantArgs {
            body,
            params: &params,
        };
        self.create_org(&args, &params).await?;
        self.store
            .org_by_name(org_name)
            .await?
            .ok_or_else(|| ApiError::AppNotFound(org_name.to_owned()))
    }

    /// Executes a request in an app as its admin (for bootstrap and demo data).
    pub async fn admin_request(&self, app: &AppRecord, request: ApiRequest) -> super::ApiResponse {
        let caller = Caller::new(Authenticated::from(Principal::Superuser));
        self.handle_app(app, &caller, request, std::time::Instant::now())
            .await
    }
}

fn client_pair(args: &GrantArgs<'_>, creds: &Credentials) -> Result<(String, String), ApiError> {
    if let (Some(id), Some(secret)) = (args.get("client_id"), args.get("client_secret")) {
        return Ok((id, secret));
    }
    if let Credentials::Client { id, secret } = creds {
        return Ok((id.clone(), secret.clone()));
    }
    Err(ApiError::RequiredProperty("client_id"))
}
