//! Default roles, narrowed roles, user permissions, and `/users/me`.

use gridsocket_e2e::{Fixture, rest};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_get_the_guest_role() {
    let f = Fixture::new().await;
    let (status, body) = rest("GET", &f.app_url("/users"), None, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("unauthorized"))
    );
    // As Usergrid: a `me` that names nobody is a path that names nothing.
    let (status, body) = rest("GET", &f.app_url("/users/me"), None, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("service_resource_not_found"))
    );
    let (status, body) = rest(
        "POST",
        &f.app_url("/users"),
        None,
        Some(json!({"username": "walkin", "password": "pw"})),
    )
    .await;
    assert_eq!(status, 200, "guests may sign up: {body}");
    let (status, _) = rest(
        "POST",
        &f.app_url("/books"),
        None,
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_roles_apply_at_once_even_to_open_sockets() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    let before = ws
        .request(
            json!(1),
            "POST",
            "/books",
            None,
            Some(json!({"name": "before"})),
        )
        .await;
    assert_eq!(before["status"], 200);
    // Users may not change roles.
    let (status, body) = rest(
        "POST",
        &f.app_url("/roles/default/permissions"),
        Some(&f.john),
        Some(json!({"permission": "get:/**"})),
    )
    .await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    // The admin narrows the default role to reading books.
    f.remove_default_grant().await;
    let (status, body) = rest(
        "POST",
        &f.app_url("/roles/default/permissions"),
        Some(&f.admin_token),
        Some(json!({"permission": "get:/books/**"})),
    )
    .await;
    assert_eq!(
        (status, body["data"].clone()),
        (200, json!(["get:/books/**"]))
    );
    let (_, body) = rest(
        "GET",
        &f.app_url("/roles/default/permissions"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(body["data"], json!(["get:/books/**"]));

    let denied = ws
        .request(
            json!(2),
            "POST",
            "/books",
            None,
            Some(json!({"name": "after"})),
        )
        .await;
    assert_eq!(
        (denied["status"].clone(), denied["body"]["error"].clone()),
        (json!(403), json!("forbidden"))
    );
    let (status, _) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.john),
        Some(json!({"name": "after"})),
    )
    .await;
    assert_eq!(status, 403);
    let read = ws
        .request(json!(3), "GET", "/books/before", None, None)
        .await;
    assert_eq!(read["status"], 200);
    let others = ws.request(json!(4), "GET", "/users/jane", None, None).await;
    assert_eq!(others["status"], 403);
    let me = ws.request(json!(5), "GET", "/users/me", None, None).await;
    assert_eq!(me["status"], 200, "a user may always read themself");

    // A permission for one user only.
    let (status, body) = rest(
        "POST",
        &f.app_url("/users/john/permissions"),
        Some(&f.admin_token),
        Some(json!({"permission": "post:/books"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let allowed = ws
        .request(
            json!(6),
            "POST",
            "/books",
            None,
            Some(json!({"name": "granted"})),
        )
        .await;
    assert_eq!(allowed["status"], 200);
    let (status, _) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.jane),
        Some(json!({"name": "not-jane"})),
    )
    .await;
    assert_eq!(status, 403);
    // Permissions through a group.
    rest(
        "POST",
        &f.app_url("/groups"),
        Some(&f.admin_token),
        Some(json!({"path": "editors"})),
    )
    .await;
    rest(
        "POST",
        &f.app_url("/groups/editors/permissions"),
        Some(&f.admin_token),
        Some(json!({"permission": "post,put:/books/**"})),
    )
    .await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/groups/editors/users/jane"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        "POST",
        &f.app_url("/books"),
        Some(&f.jane),
        Some(json!({"name": "by-jane"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest(
        "POST",
        &f.app_url("/roles/default/permissions"),
        Some(&f.admin_token),
        Some(json!({"permission": "fly:/x"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("illegal_argument"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_change_only_with_the_old_one() {
    let f = Fixture::new().await;
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/me"),
        Some(&f.john),
        Some(json!({"password": "x"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("illegal_argument"))
    );
    // Only an app admin sets a password without the old one.
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/jane/password"),
        Some(&f.john),
        Some(json!({"newpassword": "stolen"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("required_property_not_found"))
    );
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/john/password"),
        Some(&f.john),
        Some(json!({"oldpassword": "wrong", "newpassword": "n"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("auth_invalid_username_or_password"))
    );
    let (status, body) = rest(
        "PUT",
        &f.app_url("/users/john/password"),
        Some(&f.john),
        Some(json!({"oldpassword": "john-password", "newpassword": "new-pw"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    f.login("john", "new-pw").await;
    // Revoking tokens ends every session of the user.
    let (status, _) = rest(
        "PUT",
        &f.app_url("/users/john/revoketokens"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest("GET", &f.app_url("/users/me"), Some(&f.john), None).await;
    assert_eq!(status, 401);
}
