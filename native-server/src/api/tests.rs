//! The API without the network: requests straight into [`Api::handle_rest`] and
//! [`dedup::execute`](super::dedup::execute) over a fresh SQLite store, one rule per test.
//! The same rules are checked over real sockets in `tests/tests/`; these pin down the API
//! layer's part of each, and run in milliseconds.

use super::{Api, ApiResponse, Authenticated, Caller, Principal};
use crate::config::Settings;
use crate::store::{AppRecord, SqliteStore};
use gridsocket_core::{ApiRequest, Method, Params};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// An API over a store of its own, with one organization and one application.
struct Fixture {
    api: Arc<Api>,
    app: Arc<AppRecord>,
    _dir: tempfile::TempDir,
}

/// The outcome of one call: status and parsed body.
struct Answer {
    status: u16,
    body: Value,
}

impl From<ApiResponse> for Answer {
    fn from(r: ApiResponse) -> Answer {
        let body = serde_json::from_str(&r.body).expect("every answer is JSON");
        Answer {
            status: r.status,
            body,
        }
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("store opens");
        let settings = Settings::ephemeral(dir.path().to_path_buf());
        let api = Api::new(Arc::new(store), settings.api_config("http://test".into()));
        let org = api
            .bootstrap_org("acme", "admin", "admin@example.com", "admin-password")
            .await
            .expect("org");
        api.create_app(&org, "shop").await.expect("app");
        let app = api
            .find_app(Some("acme"), "shop")
            .await
            .expect("lookup")
            .expect("app exists");
        Fixture {
            api,
            app,
            _dir: dir,
        }
    }

    /// A REST call inside the app, with an optional bearer token.
    async fn call(&self, method: Method, path: &str, body: Option<Value>, token: &str) -> Answer {
        self.call_with(method, path, Params::new(), body, token)
            .await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        params: Params,
        body: Option<Value>,
        token: &str,
    ) -> Answer {
        let auth = (!token.is_empty()).then(|| format!("Bearer {token}"));
        self.api
            .handle_rest(
                method,
                &format!("/acme/shop{path}"),
                params,
                Ok(body),
                auth.as_deref(),
                None,
            )
            .await
            .into()
    }

    /// A request as the application's administrator.
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let request = ApiRequest {
            method,
            path: path.into(),
            params: Params::new(),
            body,
        };
        self.api.admin_request(&self.app, request).await.into()
    }

    /// Creates a user (password `{name}-pw`) and logs in: its token and uuid.
    async fn user(&self, name: &str) -> (String, String) {
        let made = self
            .admin(
                Method::Post,
                "/users",
                Some(json!({"username": name, "password": format!("{name}-pw"),
                            "email": format!("{name}@example.com")})),
            )
            .await;
        assert_eq!(made.status, 200, "{}", made.body);
        let login = self
            .call(
                Method::Post,
                "/token",
                Some(json!({"grant_type": "password", "username": name,
                            "password": format!("{name}-pw")})),
                "",
            )
            .await;
        assert_eq!(login.status, 200, "{}", login.body);
        let token = login.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let uuid = made.body["entities"][0]["uuid"]
            .as_str()
            .expect("uuid")
            .to_owned();
        (token, uuid)
    }
}

#[tokio::test]
async fn rest_and_socket_requests_get_the_same_answer() {
    let f = Fixture::new().await;
    let (token, _) = f.user("ann").await;
    f.admin(Method::Post, "/books", Some(json!({"name": "dune"})))
        .await;
    let rest = f.call(Method::Get, "/books/dune", None, &token).await;
    let caller = Caller::new(
        f.api
            .principal_of_token(&token, crate::api::Presenter::Request)
            .await
            .expect("the token is known"),
    );
    let request = ApiRequest {
        method: Method::Get,
        path: "/books/dune".into(),
        params: Params::new(),
        body: None,
    };
    let socket: Answer =
        super::dedup::execute(&f.api, &f.app, &caller, request, None, Instant::now())
            .await
            .into();
    assert_eq!((rest.status, socket.status), (200, 200));
    // Only the timing fields may differ.
    let strip = |mut v: Value| {
        v.as_object_mut().map(|o| {
            o.remove("timestamp");
            o.remove("duration")
        });
        v
    };
    assert_eq!(strip(rest.body), strip(socket.body));
}

/// A token's expiry comes with what it resolved to, so a socket knows when its token ends
/// whatever the caches hold afterwards (a full cache empties itself). Sockets' tokens go to a
/// small cache of their own, not to REST calls'.
#[tokio::test]
async fn a_tokens_expiry_comes_with_it_and_sockets_tokens_have_their_own_cache() {
    use crate::api::Presenter;
    let f = Fixture::new().await;
    let (token, _) = f.user("ann").await;
    let hash = crate::api::auth::token_hash(&token);
    f.api.forget_tokens(|_, _| true);
    let socket = f
        .api
        .principal_of_token(&token, Presenter::Socket)
        .await
        .expect("the token is known");
    let expires = socket.expires.expect("a token has an expiry");
    assert!(expires > super::now_ms(), "{expires}");
    assert!(
        f.api.tokens.get(&hash).is_none(),
        "not in REST calls' cache"
    );
    let cached = f
        .api
        .socket_tokens
        .get(&hash)
        .expect("in the sockets' cache");
    assert_eq!(cached.who, socket);
    // Emptied (as when it fills): what was resolved keeps its expiry.
    f.api.forget_tokens(|_, _| true);
    assert_eq!(socket.expires, Some(expires));
    let request = f
        .api
        .principal_of_token(&token, Presenter::Request)
        .await
        .expect("the token is known");
    assert_eq!(request.expires, Some(expires));
    assert!(
        f.api.tokens.get(&hash).is_some(),
        "a REST call's token is cached"
    );
    // A socket finds a token REST calls cached.
    let again = f
        .api
        .principal_of_token(&token, Presenter::Socket)
        .await
        .expect("the token is known");
    assert_eq!(again, request);
}

#[tokio::test]
async fn a_guest_is_refused_before_anything_is_looked_up() {
    let f = Fixture::new().await;
    // No token: a guest may not delete a user, whether or not it exists.
    let anon = f.call(Method::Delete, "/users/nobody", None, "").await;
    assert_eq!(anon.status, 401, "{}", anon.body);
    let (token, _) = f.user("ann").await;
    // A relation of an entity that does not exist is not found once access allows it.
    let missing = f.call(Method::Get, "/users/ann/likes", None, &token).await;
    assert_eq!(missing.status, 200, "{}", missing.body);
    let other = f
        .call(Method::Get, "/users/nobody/likes", None, &token)
        .await;
    assert_eq!(other.status, 404, "{}", other.body);
}

#[tokio::test]
async fn a_name_that_could_be_a_pattern_is_refused() {
    let f = Fixture::new().await;
    for name in ["*", "e*", "a/b", "a?b", "a#b", "a;b", "a b", "a\u{7}b"] {
        let made = f
            .admin(
                Method::Post,
                "/users",
                Some(json!({"username": name, "password": "pw-pw-pw"})),
            )
            .await;
        assert_eq!(made.status, 400, "{name:?}: {}", made.body);
        assert_eq!(made.body["error"], "illegal_argument", "{name:?}");
    }
}

#[tokio::test]
async fn a_user_changes_only_itself() {
    let f = Fixture::new().await;
    let (ann, _) = f.user("ann").await;
    f.user("bob").await;
    for change in [
        json!({"username": "bobby"}),
        json!({"email": "x@example.com"}),
        json!({"disabled": true}),
        json!({"activated": false}),
    ] {
        let put = f
            .call(Method::Put, "/users/bob", Some(change.clone()), &ann)
            .await;
        assert_eq!(put.status, 403, "{change}: {}", put.body);
    }
    let delete = f.call(Method::Delete, "/users/bob", None, &ann).await;
    assert_eq!(delete.status, 403, "{}", delete.body);
    let own = f
        .call(
            Method::Put,
            "/users/ann",
            Some(json!({"title": "reader"})),
            &ann,
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    // Unique on update as on create (400, as Usergrid answers a taken unique property).
    let taken = f
        .call(
            Method::Put,
            "/users/ann",
            Some(json!({"email": "bob@example.com"})),
            &ann,
        )
        .await;
    assert_eq!(taken.status, 400, "{}", taken.body);
    assert_eq!(taken.body["error"], "duplicate_unique_property_exists");
}

#[tokio::test]
async fn joining_a_group_needs_the_right_to_change_it() {
    let f = Fixture::new().await;
    let (ann, _) = f.user("ann").await;
    f.admin(Method::Post, "/groups", Some(json!({"path": "staff"})))
        .await;
    let join = f
        .call(Method::Post, "/users/me/groups/staff", None, &ann)
        .await;
    assert_eq!(join.status, 403, "{}", join.body);
    let members = f.admin(Method::Get, "/groups/staff/users", None).await;
    assert_eq!(members.body["entities"], json!([]), "nobody joined");
}

#[tokio::test]
async fn a_feed_is_private_under_every_alias() {
    let f = Fixture::new().await;
    let (ann, _) = f.user("ann").await;
    f.user("bob").await;
    // Bob's feed is his own: Ann's listing of the activities in it must not show them.
    f.admin(
        Method::Post,
        "/users/bob/activities",
        Some(json!({"verb": "post", "content": "private"})),
    )
    .await;
    let feed = f.call(Method::Get, "/users/bob/feed", None, &ann).await;
    assert_eq!(feed.status, 403, "{}", feed.body);
    let alias = f.call(Method::Get, "/user/BOB/inbox", None, &ann).await;
    assert_eq!(alias.status, 403, "every alias of the feed: {}", alias.body);
}

#[tokio::test]
async fn a_password_change_ends_the_users_other_tokens() {
    let f = Fixture::new().await;
    let (first, _) = f.user("ann").await;
    let (bob, _) = f.user("bob").await;
    let login = json!({"grant_type": "password", "username": "ann", "password": "ann-pw"});
    let second = f.call(Method::Post, "/token", Some(login), "").await;
    let second = second.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let changed = f
        .call(
            Method::Put,
            "/users/ann/password",
            Some(json!({"oldpassword": "ann-pw", "newpassword": "ann-pw-2"})),
            &second,
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let other = f.call(Method::Get, "/users/me", None, &first).await;
    assert_eq!(other.status, 401, "the other token ends: {}", other.body);
    let own = f.call(Method::Get, "/users/me", None, &second).await;
    assert_eq!(
        own.status, 200,
        "the token that changed it stays: {}",
        own.body
    );
    let bystander = f.call(Method::Get, "/users/me", None, &bob).await;
    assert_eq!(
        bystander.status, 200,
        "another user's token stays: {}",
        bystander.body
    );
}

#[tokio::test]
async fn a_write_sent_again_is_applied_once() {
    let f = Fixture::new().await;
    let caller = Caller::new(Authenticated::from(Principal::Superuser));
    let post = || ApiRequest {
        method: Method::Post,
        path: "/messages".into(),
        params: Params::new(),
        body: Some(json!({"text": "hello"})),
    };
    let mut answers = Vec::new();
    for _ in 0..3 {
        let a: Answer = super::dedup::execute(
            &f.api,
            &f.app,
            &caller,
            post(),
            Some("w-1".into()),
            Instant::now(),
        )
        .await
        .into();
        answers.push(a);
    }
    let uuids: Vec<&Value> = answers
        .iter()
        .map(|a| &a.body["entities"][0]["uuid"])
        .collect();
    assert!(
        uuids.iter().all(|u| *u == uuids[0]),
        "one entity: {uuids:?}"
    );
    let listed = f.admin(Method::Get, "/messages", None).await;
    assert_eq!(listed.body["count"], 1, "{}", listed.body);
}

#[tokio::test]
async fn guests_and_answers_with_credentials_are_not_remembered() {
    let f = Fixture::new().await;
    f.user("ann").await;
    let send = |principal: Principal, path: &str, body: Value| {
        let caller = Caller::new(Authenticated::from(principal));
        let request = ApiRequest {
            method: Method::Post,
            path: path.into(),
            params: Params::new(),
            body: Some(body),
        };
        let api = f.api.clone();
        let app = f.app.clone();
        async move {
            let id = Some("login-1".to_owned());
            Answer::from(
                super::dedup::execute(&api, &app, &caller, request, id, Instant::now()).await,
            )
        }
    };
    let login =
        |password: &str| json!({"grant_type": "password", "username": "ann", "password": password});
    // Two guests with one write_id: the second's wrong password is refused, not answered with
    // the first's token.
    let first = send(Principal::Guest, "/token", login("ann-pw")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = send(Principal::Guest, "/token", login("wrong")).await;
    assert_ne!(second.status, 200, "{}", second.body);
    assert!(second.body["access_token"].is_null(), "{}", second.body);
    // Nor does one guest's sign-up stand for another's.
    let made = send(
        Principal::Guest,
        "/users",
        json!({"username": "gus", "password": "gus-pw"}),
    )
    .await;
    let other = send(
        Principal::Guest,
        "/users",
        json!({"username": "gia", "password": "gia-pw"}),
    )
    .await;
    assert_eq!(
        (made.status, other.status),
        (200, 200),
        "{} {}",
        made.body,
        other.body
    );
    assert_eq!(
        other.body["entities"][0]["username"], "gia",
        "{}",
        other.body
    );
    // A token is never kept as a write's answer, even for one caller: a repeat logs in again.
    let superuser = || Principal::Superuser;
    let once = send(superuser(), "/token", login("ann-pw")).await;
    let again = send(superuser(), "/token", login("ann-pw")).await;
    assert_eq!(
        (once.status, again.status),
        (200, 200),
        "{} {}",
        once.body,
        again.body
    );
    assert_ne!(once.body["access_token"], again.body["access_token"]);
}

#[tokio::test]
async fn a_queue_timeout_past_its_maximum_is_refused() {
    let f = Fixture::new().await;
    let mut params = Params::new();
    params.push("consumer", "c1");
    params.push("timeout", "9223372036854775807");
    let caller_token = f.user("ann").await.0;
    let read = f
        .call_with(Method::Get, "/queues/jobs", params, None, &caller_token)
        .await;
    assert_eq!(read.status, 400, "{}", read.body);
}
