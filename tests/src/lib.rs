//! Helpers for gridsocket's end-to-end tests: a real server on ephemeral loopback ports with a
//! temporary data dir, a REST client, and a WebSocket client that speaks the JSON frames.

pub mod cluster;
pub mod process;

use futures_util::{SinkExt, StreamExt};
use gridsocket_server::{Server, Settings};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The superuser every test server is started with.
pub const SUPERUSER: (&str, &str) = ("root", "root-password");
/// How long a test waits for any one frame or response.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in this process.
pub struct TestServer {
    /// REST address.
    pub http: SocketAddr,
    /// WebSocket address.
    pub ws: SocketAddr,
    /// The data dir (kept for restarts).
    pub data_dir: PathBuf,
    /// The service layer, for tests that need to reach inside (log pruning).
    pub service: std::sync::Arc<gridsocket_server::realtime::Realtime>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on a fresh temporary data dir.
    pub async fn start() -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut s = Self::start_with(Settings::ephemeral(temp.path().to_path_buf())).await;
        s._temp = Some(temp);
        s
    }

    /// Starts a server with given settings (the superuser is always set). Under
    /// `GRIDSOCKET_TEST_STORE=postgres` a server without a store of its own gets a PostgreSQL
    /// schema named after its data dir, so a restart on the same dir finds its data again.
    pub async fn start_with(mut settings: Settings) -> TestServer {
        settings.superuser = Some(format!("{}:{}", SUPERUSER.0, SUPERUSER.1));
        if settings.store.is_none() && postgres_selected() {
            settings.store = Some(postgres_schema_for(&settings.data_dir).await);
        }
        let data_dir = settings.data_dir.clone();
        let server = Server::bind(settings).await.expect("server starts");
        let (http, ws) = (server.http_addr(), server.ws_addr());
        let service = server.realtime();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestServer {
            http,
            ws,
            data_dir,
            service,
            shutdown: Some(tx),
            task: Some(task),
            _temp: None,
        }
    }

    /// Stops the server gracefully and returns its temp dir so a restart can reuse it.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self._temp.take()
    }

    /// A REST URL for a path (`/management/token`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// A WebSocket URL for a path.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.ws)
    }
}

/// A REST call; returns the status and the JSON body (`Null` when empty).
pub async fn rest(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("REST request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("REST body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("REST body is not JSON ({e}): {text}"))
    };
    (status, value)
}

/// An organization with one app, its admin, and two users, made through the public API.
pub struct Fixture {
    /// The server.
    pub server: TestServer,
    /// Organization name.
    pub org: String,
    /// Application name.
    pub app: String,
    /// Admin token (full access to the app).
    pub admin_token: String,
    /// The app's client id and secret.
    pub client: (String, String),
    /// Token of user `john`.
    pub john: String,
    /// Token of user `jane`.
    pub jane: String,
}

impl Fixture {
    /// Starts a server and creates org `acme`, app `shop`, users john and jane.
    pub async fn new() -> Fixture {
        Self::on(TestServer::start().await).await
    }

    /// Creates the fixture's data on a running server.
    pub async fn on(server: TestServer) -> Fixture {
        let seeded = seed_acme(&server.url("")).await;
        Fixture {
            server,
            org: "acme".into(),
            app: "shop".into(),
            admin_token: seeded.admin_token,
            client: seeded.client,
            john: seeded.john,
            jane: seeded.jane,
        }
    }

    /// `/{org}/{app}{path}` on the REST port.
    pub fn app_url(&self, path: &str) -> String {
        self.server
            .url(&format!("/{}/{}{path}", self.org, self.app))
    }

    /// `ws://…/{org}/{app}{path_and_query}`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        self.server
            .ws_url(&format!("/{}/{}{path_and_query}", self.org, self.app))
    }

    /// Takes the default role's catch-all grant (`get,put,post,delete:/**`) away, as the
    /// admin: users keep only what other grants give them.
    pub async fn remove_default_grant(&self) {
        let (status, body) = rest(
            "DELETE",
            &format!(
                "{}?permission=get,put,post,delete:/**",
                self.app_url("/roles/default/permissions")
            ),
            Some(&self.admin_token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Creates a user (as admin) and returns a fresh token for them.
    pub async fn create_user(&self, username: &str, password: &str) -> String {
        create_user(&self.app_url(""), &self.admin_token, username, password).await
    }

    /// Logs a user in and returns the token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        login(&self.app_url(""), username, password).await
    }

    /// Opens a socket on the app as `token` and reads its welcome frame.
    pub async fn socket(&self, token: &str) -> WsClient {
        let mut ws = WsClient::connect(&self.ws_url(&format!("?access_token={token}")))
            .await
            .expect("socket opens");
        let welcome = ws.recv().await;
        assert_eq!(
            (welcome["id"].clone(), welcome["status"].clone()),
            (Value::Null, json!(200)),
            "{welcome}"
        );
        assert_eq!(welcome["body"]["connected"], true, "{welcome}");
        ws
    }
}

/// A WebSocket client that speaks gridsocket frames.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for something else.
    backlog: VecDeque<Value>,
}

impl WsClient {
    /// Connects to a URL.
    pub async fn connect(url: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(WsClient {
            stream,
            backlog: VecDeque::new(),
        })
    }

    /// Connects with a prepared handshake request (custom headers).
    pub async fn from_request(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let (stream, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(WsClient {
            stream,
            backlog: VecDeque::new(),
        })
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("send text");
    }

    /// Sends a raw message.
    pub async fn send_message(&mut self, msg: Message) {
        self.stream.send(msg).await.expect("send message");
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// The next JSON frame (from the backlog first).
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame within the wait")
                .expect("socket still open")
                .expect("frame readable");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("frames are JSON");
                }
                Message::Close(c) => panic!("socket closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next event frame (`{"event": …}`); responses met on the way wait in the backlog.
    pub async fn next_event(&mut self) -> Value {
        if let Some(pos) = self.backlog.iter().position(|v| v.get("event").is_some()) {
            return self.backlog.remove(pos).expect("position is valid");
        }
        loop {
            let v = self.recv_wire().await;
            if v.get("event").is_some() {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Subscribes and returns the confirmation body (panics on an error status).
    pub async fn subscribe(
        &mut self,
        id: Value,
        path: &str,
        params: Option<Value>,
        since: Option<u64>,
    ) -> Value {
        let mut frame = json!({"id": id, "method": "SUBSCRIBE", "path": path});
        if let Some(p) = params {
            frame["params"] = p;
        }
        if let Some(s) = since {
            frame["since"] = json!(s);
        }
        self.send_json(&frame).await;
        let reply = self.response_to(&id).await;
        assert_eq!(reply["status"], 200, "subscribe to {path}: {reply}");
        reply["body"].clone()
    }

    /// Waits up to `wait` for another frame; `None` if none came.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("frames are JSON"));
                }
                Ok(Some(Ok(Message::Close(c)))) => panic!("socket closed: {c:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("socket failed: {e}"),
                Ok(None) => panic!("socket ended"),
            }
        }
    }

    /// Sends a request frame and returns the response with the same id (other frames wait in
    /// the backlog).
    pub async fn request(
        &mut self,
        id: Value,
        method: &str,
        path: &str,
        params: Option<Value>,
        body: Option<Value>,
    ) -> Value {
        let mut frame = json!({"id": id, "method": method, "path": path});
        if let Some(p) = params {
            frame["params"] = p;
        }
        if let Some(b) = body {
            frame["body"] = b;
        }
        self.send_json(&frame).await;
        self.response_to(&id).await
    }

    /// Waits for the response whose id is `id`.
    pub async fn response_to(&mut self, id: &Value) -> Value {
        if let Some(pos) = self
            .backlog
            .iter()
            .position(|v| v.get("id") == Some(id) && v.get("status").is_some())
        {
            return self.backlog.remove(pos).expect("position is valid");
        }
        loop {
            let v = self.recv_wire().await;
            if v.get("id") == Some(id) && v.get("status").is_some() {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Reads until the server closes; returns every JSON frame before the close and the close
    /// frame itself.
    pub async fn until_close(&mut self) -> (Vec<Value>, Option<CloseFrame>) {
        let mut frames: Vec<Value> = self.backlog.drain(..).collect();
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("the server closes within the wait");
            match next {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("JSON"))
                }
                Some(Ok(Message::Close(c))) => return (frames, c),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (frames, None),
            }
        }
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Connects to `url` and expects the connection refused: exactly one error frame, then a
/// close. Answers the frame and the close code.
pub async fn refused(url: &str) -> (Value, u16) {
    let mut ws = WsClient::connect(url)
        .await
        .expect("the handshake itself succeeds");
    let (frames, close) = ws.until_close().await;
    assert_eq!(frames.len(), 1, "exactly one error frame: {frames:?}");
    let code = u16::from(close.expect("a close frame").code);
    (frames[0].clone(), code)
}

/// A response body without the fields that differ between two identical requests.
pub fn stable(mut body: Value) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.remove("timestamp");
        obj.remove("duration");
    }
    body
}

/// The `gridsocket` binary next to this test executable (built by `cargo build --workspace`).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir layout: target/<profile>/deps/<test>");
    let bin = dir.join(format!("gridsocket{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The database the PostgreSQL runs use (`GRIDSOCKET_TEST_PG`, or the local one).
pub fn postgres_url() -> String {
    std::env::var("GRIDSOCKET_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// True when the suite runs against PostgreSQL (`GRIDSOCKET_TEST_STORE=postgres`).
pub fn postgres_selected() -> bool {
    std::env::var("GRIDSOCKET_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// Schemas the tests made are dropped by a later run once they are this old.
const STALE_SCHEMA_SECS: i64 = 3600;

/// A store URL for a fresh (or, for the same `data_dir`, the same) schema of the test
/// database. Panics, failing the test, when PostgreSQL cannot be reached.
pub async fn postgres_schema_for(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    let schema = format!("gs_test_{:016x}", h.finish());
    postgres_schema(&schema).await
}

/// A store URL for the named schema of the test database, created if needed and recorded so
/// that a later run drops it.
pub async fn postgres_schema(schema: &str) -> String {
    let base = postgres_url();
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed for this run: {e}"));
    tokio::spawn(conn);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Tests start in parallel: one at a time past this point (the lock ends with the session).
    client
        .batch_execute(
            "SELECT pg_advisory_lock(7426351);
             CREATE TABLE IF NOT EXISTS public.gs_test_schemas(
                 name TEXT PRIMARY KEY, created BIGINT NOT NULL)",
        )
        .await
        .expect("test schema registry");
    let stale = client
        .query(
            "DELETE FROM public.gs_test_schemas WHERE created < $1 RETURNING name",
            &[&(now - STALE_SCHEMA_SECS)],
        )
        .await
        .expect("stale test schemas");
    for row in stale {
        let name: String = row.get(0);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
            .await;
    }
    client
        .execute(
            "INSERT INTO public.gs_test_schemas VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&schema, &now],
        )
        .await
        .expect("register test schema");
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await
        .expect("create test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// True on CI, where a service a test needs must be there: its absence fails the test.
fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether a service the test needs answers; `None` means skip (never on CI, where a missing
/// service fails the test instead).
async fn require_service(name: &str, url: &str, reachable: bool) -> Option<()> {
    if reachable {
        return Some(());
    }
    assert!(
        !on_ci(),
        "{name} at {url} is needed and CI=true: it must be running"
    );
    eprintln!("skipped: {name} is not reachable at {url} (CI would fail here)");
    None
}

/// PostgreSQL's URL, if it answers (see [`require_service`]).
pub async fn require_postgres() -> Option<String> {
    let url = postgres_url();
    let ok = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .is_ok();
    require_service("PostgreSQL", &url, ok).await.map(|()| url)
}

/// The NATS URL (`GRIDSOCKET_TEST_NATS`, or the local server), if it answers.
pub async fn require_nats() -> Option<String> {
    let url = std::env::var("GRIDSOCKET_TEST_NATS")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let addr = url.trim_start_matches("nats://").to_owned();
    let ok = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&addr))
        .await
        .is_ok_and(|r| r.is_ok());
    require_service("NATS", &url, ok).await.map(|()| url)
}

/// What [`seed_acme`] made.
pub struct Seeded {
    /// Admin token of org `acme` (full access to app `shop`).
    pub admin_token: String,
    /// The app's client id and secret.
    pub client: (String, String),
    /// Token of user `john`.
    pub john: String,
    /// Token of user `jane`.
    pub jane: String,
}

/// Creates org `acme` (admin `boss`), app `shop` and users john and jane through the REST API
/// at `base` (`http://host:port`), as the superuser the test servers start with.
pub async fn seed_acme(base: &str) -> Seeded {
    let (status, body) = rest(
        "POST",
        &format!("{base}/management/token"),
        None,
        Some(json!({"grant_type": "password", "username": SUPERUSER.0, "password": SUPERUSER.1})),
    )
    .await;
    assert_eq!(status, 200, "superuser login: {body}");
    let su = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = rest(
        "POST",
        &format!("{base}/management/orgs"),
        Some(&su),
        Some(
            json!({"organization": "acme", "username": "boss", "email": "boss@acme.test",
                    "password": "boss-password"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "create org: {body}");
    let (status, body) = rest(
        "POST",
        &format!("{base}/management/token"),
        None,
        Some(json!({"grant_type": "password", "username": "boss", "password": "boss-password"})),
    )
    .await;
    assert_eq!(status, 200, "admin login: {body}");
    let admin_token = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = rest(
        "POST",
        &format!("{base}/management/orgs/acme/apps"),
        Some(&admin_token),
        Some(json!({"name": "shop"})),
    )
    .await;
    assert_eq!(status, 200, "create app: {body}");
    let client = (
        body["credentials"]["client_id"]
            .as_str()
            .expect("client id")
            .to_owned(),
        body["credentials"]["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    );
    let app = format!("{base}/acme/shop");
    let john = create_user(&app, &admin_token, "john", "john-password").await;
    let jane = create_user(&app, &admin_token, "jane", "jane-password").await;
    Seeded {
        admin_token,
        client,
        john,
        jane,
    }
}

/// Creates a user in the app at `app` (`http://host:port/{org}/{app}`) as `admin` and returns
/// a fresh token for them.
pub async fn create_user(app: &str, admin: &str, username: &str, password: &str) -> String {
    let (status, body) = rest(
        "POST",
        &format!("{app}/users"),
        Some(admin),
        Some(json!({"username": username, "password": password,
                    "email": format!("{username}@acme.test")})),
    )
    .await;
    assert_eq!(status, 200, "create user: {body}");
    login(app, username, password).await
}

/// Logs a user of the app at `app` in and returns the token.
pub async fn login(app: &str, username: &str, password: &str) -> String {
    let (status, body) = rest(
        "POST",
        &format!("{app}/token"),
        None,
        Some(json!({"grant_type": "password", "username": username, "password": password})),
    )
    .await;
    assert_eq!(status, 200, "login: {body}");
    body["access_token"].as_str().expect("token").to_owned()
}
