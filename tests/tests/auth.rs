//! Authentication over REST and at socket connect: grants, bad tokens, unknown apps.

use gridsocket_e2e::{Fixture, TestServer, WsClient, refused, rest};
use gridsocket_server::Settings;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_type_yields_a_working_token() {
    let f = Fixture::new().await;
    // Application client credentials.
    let (status, body) = rest(
        "POST",
        &f.app_url("/token"),
        None,
        Some(json!({"grant_type": "client_credentials", "client_id": f.client.0, "client_secret": f.client.1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["application"]["name"], "shop");
    let app_token = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = rest("GET", &f.app_url("/users"), Some(&app_token), None).await;
    assert_eq!((status, body["count"].clone()), (200, json!(2)));
    // Organization client credentials.
    let (status, body) = rest(
        "GET",
        &f.server.url("/management/orgs/acme/credentials"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (id, secret) = (
        body["credentials"]["client_id"].clone(),
        body["credentials"]["client_secret"].clone(),
    );
    let (status, body) = rest(
        "POST",
        &f.server.url("/management/token"),
        None,
        Some(json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let org_token = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = rest(
        "GET",
        &f.server.url("/management/orgs/acme/apps"),
        Some(&org_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["acme/shop"].is_string());
    // Client id and secret as query parameters on any call.
    let url = format!(
        "{}?client_id={}&client_secret={}",
        f.app_url("/users/jane"),
        f.client.0,
        f.client.1
    );
    let (status, _) = rest("GET", &url, None, None).await;
    assert_eq!(status, 200);
    // Email works as a login name, and the user is returned without any password.
    let (status, body) = rest(
        "POST",
        &f.app_url("/token"),
        None,
        Some(json!({"grant_type": "password", "username": "jane@acme.test", "password": "jane-password"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "jane");
    assert!(body["user"].get("password").is_none());
    assert!(!body.to_string().contains("jane-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused() {
    let f = Fixture::new().await;
    for (user, pass) in [("jane", "nope"), ("nobody", "jane-password")] {
        let (status, body) = rest(
            "POST",
            &f.app_url("/token"),
            None,
            Some(json!({"grant_type": "password", "username": user, "password": pass})),
        )
        .await;
        assert_eq!(
            (status, body["error"].clone()),
            (400, json!("invalid_grant")),
            "{body}"
        );
    }
    let (status, body) = rest(
        "POST",
        &f.app_url("/token"),
        None,
        Some(json!({"grant_type": "magic"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
    let (status, body) = rest("GET", &f.app_url("/users"), Some("not-a-token"), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("auth_bad_access_token"))
    );
    let (status, body) = rest(
        "GET",
        &format!(
            "{}?client_id={}&client_secret=wrong",
            f.app_url("/users"),
            f.client.0
        ),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client"))
    );
    // Only the superuser creates organizations.
    let (status, _) = rest(
        "POST",
        &f.server.url("/management/orgs"),
        Some(&f.admin_token),
        Some(json!({"organization": "evil", "username": "e", "email": "e@e", "password": "p"})),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_close_the_socket_with_4401() {
    let f = Fixture::new().await;
    let (frame, code) = refused(&f.ws_url("?access_token=forged")).await;
    assert_eq!(code, 4401);
    assert_eq!(frame["id"], Value::Null);
    assert_eq!(frame["status"], 401);
    assert_eq!(frame["body"]["error"], "auth_bad_access_token");
    assert!(frame["body"]["timestamp"].is_number());

    // A token that has expired: a 1 ms lifetime.
    let (status, body) = rest(
        "POST",
        &f.app_url("/token"),
        None,
        Some(json!({"grant_type": "password", "username": "jane", "password": "jane-password", "ttl": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let short = body["access_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (frame, code) = refused(&f.ws_url(&format!("?access_token={short}"))).await;
    assert_eq!(
        (code, frame["body"]["error"].clone()),
        (4401, json!("expired_token"))
    );
    let (status, body) = rest("GET", &f.app_url("/users/me"), Some(&short), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("expired_token"))
    );

    // A valid token of another application of the same org.
    let (status, _) = rest(
        "POST",
        &f.server.url("/management/orgs/acme/apps"),
        Some(&f.admin_token),
        Some(json!({"name": "other"})),
    )
    .await;
    assert_eq!(status, 200);
    let other = f.server.url("/acme/other");
    let (status, _) = rest(
        "POST",
        &format!("{other}/users"),
        Some(&f.admin_token),
        Some(json!({"username": "mallory", "password": "m-password"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = rest(
        "POST",
        &format!("{other}/token"),
        None,
        Some(json!({"grant_type": "password", "username": "mallory", "password": "m-password"})),
    )
    .await;
    let mallory = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = rest("GET", &f.app_url("/users"), Some(&mallory), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("unauthorized")),
        "{body}"
    );
    // The socket refuses it at connect: it would not be allowed anything here.
    let (frame, code) = refused(&f.ws_url(&format!("?access_token={mallory}"))).await;
    assert_eq!(
        (
            code,
            frame["status"].clone(),
            frame["body"]["error"].clone()
        ),
        (4401, json!(401), json!("unauthorized")),
        "{frame}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_org_or_app_closes_with_4404() {
    let f = Fixture::new().await;
    let (frame, code) = refused(
        &f.server
            .ws_url(&format!("/acme/nope?access_token={}", f.john)),
    )
    .await;
    assert_eq!(code, 4404);
    assert_eq!(frame["status"], 404);
    assert_eq!(frame["body"]["error"], "organization_application_not_found");
    let (status, body) = rest(
        "GET",
        &f.server.url("/acme/nope/users"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("organization_application_not_found"))
    );
    let (_, code) = refused(&f.server.ws_url("/")).await;
    assert_eq!(code, 4404);
    // A URL that cannot be read at all says so: 400, then 4400 (it was 4404, kept for what
    // does not exist).
    let (frame, code) = refused(
        &f.server
            .ws_url(&format!("/acme/shop/../shop?access_token={}", f.john)),
    )
    .await;
    assert_eq!(
        (
            code,
            frame["status"].clone(),
            frame["body"]["error"].clone()
        ),
        (4400, json!(400), json!("illegal_argument")),
        "{frame}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_by_header_and_client_params_on_the_socket() {
    let f = Fixture::new().await;
    let mut req = f.ws_url("").into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", f.jane).parse().unwrap(),
    );
    let mut ws = WsClient::from_request(req).await.unwrap();
    let me = ws
        .request(json!("h1"), "GET", "/users/me", None, None)
        .await;
    assert_eq!(me["body"]["entities"][0]["username"], "jane");

    let url = f.ws_url(&format!(
        "?client_id={}&client_secret={}",
        f.client.0, f.client.1
    ));
    let mut ws = WsClient::connect(&url).await.unwrap();
    let users = ws.request(json!(2), "GET", "/users", None, None).await;
    assert_eq!(
        (users["status"].clone(), users["body"]["count"].clone()),
        (json!(200), json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_may_sign_up_and_log_in_over_the_socket() {
    let f = Fixture::new().await;
    let mut ws = WsClient::connect(&f.ws_url("")).await.unwrap();
    let denied = ws.request(json!(1), "GET", "/users", None, None).await;
    assert_eq!(
        (denied["status"].clone(), denied["body"]["error"].clone()),
        (json!(401), json!("unauthorized"))
    );
    let signup = ws
        .request(
            json!(2),
            "POST",
            "/users",
            None,
            Some(json!({"username": "newbie", "password": "pw-newbie"})),
        )
        .await;
    assert_eq!(signup["status"], 200, "{signup}");
    let login = ws
        .request(
            json!(3),
            "POST",
            "/token",
            None,
            Some(json!({"grant_type": "password", "username": "newbie", "password": "pw-newbie"})),
        )
        .await;
    assert_eq!(login["status"], 200, "{login}");
    assert!(login["body"]["access_token"].is_string());
    // A guest socket opened on a resource it may not read is refused at once.
    let (frame, code) = refused(&f.ws_url("/users")).await;
    assert_eq!((code, frame["status"].clone()), (4401, json!(401)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_only_urls_use_the_default_org() {
    let temp = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.default_org = Some("acme".into());
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let (status, body) = rest("GET", &f.server.url("/shop/users/me"), Some(&f.john), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entities"][0]["username"], "john");
    let mut ws = WsClient::connect(&f.server.ws_url(&format!("/shop?access_token={}", f.john)))
        .await
        .unwrap();
    let welcome = ws.recv().await;
    assert_eq!(
        (welcome["id"].clone(), welcome["status"].clone()),
        (Value::Null, json!(200))
    );
    assert_eq!(welcome["body"]["organization"], "acme");
    assert_eq!(welcome["body"]["applicationName"], "shop");
    assert!(welcome["body"]["user"].is_string());
    assert!(welcome["body"]["expires_in"].as_i64().unwrap() > 3600);
    let me = ws.request(json!(1), "GET", "/users/me", None, None).await;
    assert_eq!(me["body"]["entities"][0]["username"], "john");
    // The org-qualified form still works.
    let mut ws = WsClient::connect(&f.ws_url(&format!("?access_token={}", f.john)))
        .await
        .unwrap();
    assert_eq!(
        ws.request(json!(1), "GET", "/users/me", None, None).await["status"],
        200
    );
}

/// The app-only form is not tried for an organization's name. A stranger found that an admin
/// of the default organization could make an app named like another organization, and then
/// took in that organization's requests for apps it does not have: a guest's sign-up at
/// `/rival/newapp/users` landed in the default organization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizations_name_is_never_read_as_an_app_of_the_default_org() {
    let temp = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.default_org = Some("acme".into());
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let (status, body) = rest(
        "POST",
        &f.server.url("/management/token"),
        None,
        Some(
            json!({"grant_type": "password", "username": gridsocket_e2e::SUPERUSER.0,
                    "password": gridsocket_e2e::SUPERUSER.1}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let su = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = rest(
        "POST",
        &f.server.url("/management/orgs"),
        Some(&su),
        Some(json!({"organization": "rival", "username": "rivalboss",
                    "email": "boss@rival.test", "password": "rival-password"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // acme (the default organization) makes an app named like the other organization.
    let (status, body) = rest(
        "POST",
        &f.server.url("/management/orgs/acme/apps"),
        Some(&f.admin_token),
        Some(json!({"name": "rival"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest(
        "POST",
        &f.server.url("/rival/newapp/users"),
        None,
        Some(json!({"username": "victim", "password": "victim-password"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("organization_application_not_found")),
        "{body}"
    );
    let mut ws = WsClient::connect(&f.server.ws_url("/rival/newapp"))
        .await
        .unwrap();
    let (frames, close) = ws.until_close().await;
    assert_eq!(
        frames[0]["body"]["error"],
        "organization_application_not_found"
    );
    assert_eq!(u16::from(close.unwrap().code), 4404);
    // The app-only form still reaches the default organization's other apps.
    let (status, body) = rest("GET", &f.server.url("/shop/users/me"), Some(&f.john), None).await;
    assert_eq!(status, 200, "{body}");
}
