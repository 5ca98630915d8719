//! `gridsocket serve --demo`: an organization, a chat app and a few users to try things with.

use crate::api::{Api, ApiError};
use gridsocket_core::{ApiRequest, Method, Params};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The demo organization.
pub const ORG: &str = "demo";
/// The demo application.
pub const APP: &str = "chatapp";
/// The demo users; each has the password [`USER_PASSWORD`].
pub const USERS: &[(&str, &str)] = &[
    ("johndoe", "John Doe"),
    ("janedoe", "Jane Doe"),
    ("alice", "Alice"),
    ("bob", "Bob"),
];
/// Password of every demo user.
pub const USER_PASSWORD: &str = "password";
/// The demo admin's name and password.
pub const ADMIN: (&str, &str) = ("demo", "demo-admin");
/// The group every demo user is in: the demo's chat room.
pub const ROOM: &str = "lobby";

/// Creates what is missing of the demo data; running it again changes nothing.
pub async fn seed(service: &Api) -> Result<(), ApiError> {
    let org = service
        .bootstrap_org(ORG, ADMIN.0, "demo@example.com", ADMIN.1)
        .await?;
    let app = match service.find_app(Some(ORG), APP).await? {
        Some(app) => app,
        None => {
            service.create_app(&org, APP).await?;
            service
                .find_app(Some(ORG), APP)
                .await?
                .ok_or_else(|| ApiError::AppNotFound(format!("{ORG}/{APP}")))?
        }
    };
    let call = |method, path: String, body| ApiRequest {
        method,
        path,
        params: Params::new(),
        body,
    };
    for (username, name) in USERS {
        let exists = service
            .admin_request(&app, call(Method::Get, format!("/users/{username}"), None))
            .await
            .status
            == 200;
        if !exists {
            let body = json!({"username": username, "name": name, "password": USER_PASSWORD,
                              "email": format!("{username}@example.com")});
            service
                .admin_request(&app, call(Method::Post, "/users".into(), Some(body)))
                .await;
        }
    }
    service
        .admin_request(
            &app,
            call(
                Method::Put,
                format!("/groups/{ROOM}"),
                Some(json!({"title": "Lobby"})),
            ),
        )
        .await;
    for (username, _) in USERS {
        service
            .admin_request(
                &app,
                call(
                    Method::Post,
                    format!("/groups/{ROOM}/users/{username}"),
                    None,
                ),
            )
            .await;
    }
    Ok(())
}

/// The file that shows a folder is the demo page's.
pub const PAGE_FILE: &str = "index.html";
/// The file that shows a folder is the built JavaScript package the page imports.
pub const PACKAGE_FILE: &str = "index.js";

/// The folder `dir` names when it holds `file`: an absolute `dir` as it is; a relative one
/// (the defaults, `web-demo` and `wasm-client/pkg`, are relative to the repository) under
/// the working directory, else under the source tree this binary was built from, else under
/// the binary's folder or one of its parents (`target/release/gridsocket` in a checkout, or
/// `bin/gridsocket` beside `web-demo/` in an unpacked release). `None` when none holds it:
/// the server would answer every demo file 404, so it must not advertise the page.
pub fn locate(dir: &Path, file: &str) -> Option<PathBuf> {
    let holds = |d: &Path| d.join(file).is_file();
    if dir.is_absolute() {
        return holds(dir).then(|| dir.to_path_buf());
    }
    let mut bases = vec![PathBuf::new()];
    bases.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf),
    );
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    bases.into_iter().map(|b| b.join(dir)).find(|d| holds(d))
}
