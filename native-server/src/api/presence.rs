//! Presence as the API sees it: `GET …/presence` of a path, answered from the realtime
//! layer's book (the API layer sits below it, so the book is handed in as a
//! [`PresenceSource`]), and the one name each path's presence goes by.

use super::envelope::{Body, Reply};
use super::{Api, ApiError, Caller};
use crate::store::AppRecord;
use gridsocket_core::access::AccessPath;
use gridsocket_core::{ApiRequest, Method, ResourcePath};
use serde_json::Value;

/// Who is present where, on this node: the realtime layer's presence book.
pub trait PresenceSource: Send + Sync {
    /// Who is present on `path` (a [`presence_path`]) of application `app`, as the body of a
    /// `GET …/presence`: `{"path","seq","epoch","users":[…]}`.
    fn presence_of(&self, app: &str, path: &str) -> Value;
}

/// The path whose `get` permission lets a caller see and join the presence named `name` (a
/// [`presence_path`]): `{name}/presence`. A role's `get:/groups/**` grants it with the
/// groups; `get:/groups/*` grants reading the groups without who is on them. Judged on the
/// name, so that every spelling of a path (`/user/Alice`, `/books;ql=…`) is judged as one.
fn presence_resource(name: &str) -> String {
    format!("{}/presence", name.trim_end_matches('/'))
}

/// The name the presence of `path`, and its broadcasts, go by for `caller` (see
/// [`gridsocket_core::presence::presence_name`]; clients take the names from the answers to
/// their joins and subscriptions), or why `path` can have none (400).
pub fn presence_path(path: &str, caller: &Caller) -> Result<String, ApiError> {
    Ok(gridsocket_core::presence::presence_name(
        path,
        caller.user_uuid(),
    )?)
}

impl Api {
    /// Where `GET …/presence` reads from (set once, when the node is put together).
    pub fn read_presence_from(&self, source: std::sync::Arc<dyn PresenceSource>) {
        let _ = self.presence.set(source);
    }

    /// `GET /{path}/presence`: `Some` for such a request, answered with who is present on
    /// `path` if the caller may read it. A relation named `presence` cannot be read over REST:
    /// this name is the presence's.
    pub(super) async fn presence_call(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
    ) -> Option<Reply> {
        if request.method != Method::Get {
            return None;
        }
        let trimmed = request.path.trim_end_matches('/');
        let (parent, last) = trimmed.rsplit_once('/')?;
        if !last.eq_ignore_ascii_case("presence") || parent.trim_matches('/').is_empty() {
            return None;
        }
        Some(self.presence_get(app, caller, parent).await)
    }

    /// May `caller` see, and join, the presence named `name` (a [`presence_path`])? It needs
    /// `get` on [`presence_resource`], and every entity `name` names must exist (404):
    /// listing, joining and every later re-check ask this.
    ///
    /// The access rules let a missing entity through, for its handler to answer 404 (or, for
    /// a PUT, to create it), and a presence has no such handler. Without this, anyone could
    /// join the feed of a user who has not signed up yet (nobody's, so nobody's private
    /// feed), stay there once that user exists, and hear what is said on it.
    pub async fn check_presence_access(
        &self,
        app: &AppRecord,
        caller: &Caller,
        name: &str,
    ) -> Result<(), ApiError> {
        let path = ResourcePath::parse(&presence_resource(name))?;
        self.check_access(app, caller, Method::Get, &path).await?;
        let mut named = self.access_path(app, caller, &ResourcePath::parse(name)?)?;
        self.require_found(app, &mut named).await
    }

    /// Every entity `access` names exists, or 404 (looking up those not looked up yet): what
    /// a presence or a broadcast is of must be there (see [`Api::check_presence_access`]).
    pub async fn require_found(
        &self,
        app: &AppRecord,
        access: &mut AccessPath,
    ) -> Result<(), ApiError> {
        self.resolve_access(app, access).await?;
        match access.missing() {
            Some(shown) => Err(ApiError::NotFound(format!("{shown} not found"))),
            None => Ok(()),
        }
    }

    async fn presence_get(&self, app: &AppRecord, caller: &Caller, parent: &str) -> Reply {
        let key = presence_path(parent, caller)?;
        self.check_presence_access(app, caller, &key).await?;
        let body = match self.presence.get() {
            Some(source) => source.presence_of(&app.uuid, &key),
            // A node without sockets holds nobody's presence.
            None => serde_json::json!({"path": key, "seq": 0, "epoch": "", "users": []}),
        };
        Ok((200, Body::Json(body)))
    }
}
