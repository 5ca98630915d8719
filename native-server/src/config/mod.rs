//! Server settings, from flags or environment variables (`gridsocket serve --help`).

mod file;

pub use file::{ConfigFileError, config_file_env};

use crate::api::ApiConfig;
use crate::realtime::RealtimeConfig;
use gridsocket_core::{QueryLimits, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The read buffer per socket: tungstenite's default (128 KiB, zero-filled) would cost that
/// much memory for every idle connection, and even 256 bytes is 6 % of an idle socket's
/// budget (issue 20). A larger frame grows the buffer to fit while it is read. Reads of the
/// connection itself go through a buffer of the thread's (`net::ws::stream::Wire`), so a
/// frame longer than this costs no extra `recv()`, only more copies out of that buffer.
pub(crate) const READ_BUFFER: usize = 64;

/// How much may wait for a socket's connection before it is a slow consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacklogLimits {
    /// Most frames (events and answers), `--max-queued-events`.
    pub events: usize,
    /// Most bytes behind the frame being written, `--max-queued-bytes`.
    pub bytes: usize,
    /// Most bytes waiting on all sockets together, `--max-queued-bytes-total`: past it, a
    /// socket with anything behind its frame in progress is a slow consumer.
    pub total_bytes: usize,
}

/// Which APIs a node serves. Any mix of nodes works against one shared store and bus.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// REST and the WebSocket API: the single-node default.
    All,
    /// Only the WebSocket API, with the realtime dispatcher.
    Gateway,
    /// Only the REST API.
    Api,
}

impl Role {
    /// True if this node accepts WebSocket connections (and so dispatches events).
    pub fn serves_sockets(self) -> bool {
        matches!(self, Role::All | Role::Gateway)
    }

    /// True if this node serves the REST API.
    pub fn serves_rest(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
}

/// How log lines are written (to stderr).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything `gridsocket serve` can be told.
#[derive(clap::Args, Clone, Debug)]
pub struct Settings {
    /// A TOML file of settings, keyed by flag name (`max_frame_bytes = 65536`). Flags and
    /// environment variables override it.
    #[arg(long, env = "GRIDSOCKET_CONFIG")]
    pub config: Option<PathBuf>,
    /// `text` or `json` log lines on stderr.
    #[arg(long, env = "GRIDSOCKET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Address of the REST API.
    #[arg(long, env = "GRIDSOCKET_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Address of the WebSocket API.
    #[arg(long, env = "GRIDSOCKET_WS_ADDR", default_value = "127.0.0.1:8088")]
    pub ws_addr: SocketAddr,
    /// Directory of the embedded store; one server at a time may use it.
    #[arg(long, env = "GRIDSOCKET_DATA_DIR", default_value = "./gridsocket-data")]
    pub data_dir: PathBuf,
    /// A shared store instead of the embedded one: `postgres://user@host:port/db` (add
    /// `?options=-csearch_path%3Dschema` for a schema other than `public`). Every node of one
    /// deployment names the same database.
    #[arg(long, env = "GRIDSOCKET_STORE")]
    pub store: Option<String>,
    /// The message bus between nodes: `nats://host:port` (comma-separated for a cluster).
    /// Without it, changes are signalled inside this process only.
    #[arg(long, env = "GRIDSOCKET_BUS")]
    pub bus: Option<String>,
    /// Subject prefix on the bus; nodes of one deployment share it, other deployments on the
    /// same NATS pick their own.
    #[arg(long, env = "GRIDSOCKET_BUS_SUBJECT", default_value = "gridsocket")]
    pub bus_subject: String,
    /// What this node serves: `all` (REST and WebSocket), `gateway` (WebSocket only; its
    /// HTTP port answers /status, /healthz and /metrics), `api` (REST only).
    #[arg(long, env = "GRIDSOCKET_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// How often, in ms, the dispatcher reads every watched application's log even without a
    /// signal: the longest an event waits while the bus is down.
    #[arg(long, env = "GRIDSOCKET_DISPATCH_POLL_MS", default_value_t = 500)]
    pub dispatch_poll_ms: u64,
    /// Bootstrap superuser as NAME:PASSWORD; it can create organizations.
    #[arg(long, env = "GRIDSOCKET_SUPERUSER")]
    pub superuser: Option<String>,
    /// Organization served by the app-only URL form `/{app}/…`.
    #[arg(long, env = "GRIDSOCKET_DEFAULT_ORG")]
    pub default_org: Option<String>,
    /// Base URL put in responses' `uri` field (default: http://HTTP_ADDR).
    #[arg(long, env = "GRIDSOCKET_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Create the demo organization, app and users, make `demo` the default org, and serve
    /// the demo page at http://HTTP_ADDR/demo/.
    #[arg(long)]
    pub demo: bool,
    /// Folder of the demo page.
    #[arg(long, env = "GRIDSOCKET_DEMO_DIR", default_value = "web-demo")]
    pub demo_dir: PathBuf,
    /// Folder of the built JavaScript package (scripts/build-wasm.sh).
    #[arg(
        long,
        env = "GRIDSOCKET_DEMO_PKG_DIR",
        default_value = "wasm-client/pkg"
    )]
    pub demo_pkg_dir: PathBuf,
    /// WebSocket URL the demo page connects to (default: ws://WS_ADDR).
    #[arg(long, env = "GRIDSOCKET_PUBLIC_WS_URL")]
    pub public_ws_url: Option<String>,
    /// Most WebSocket connections at once; more are closed with 1013.
    #[arg(long, env = "GRIDSOCKET_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// Most WebSocket connections from one client address; more are closed with 1013. 0: no
    /// limit. (Behind a load balancer every client has the balancer's address: raise it.)
    #[arg(
        long,
        env = "GRIDSOCKET_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1_000
    )]
    pub max_connections_per_ip: usize,
    /// Most requests one socket may start per second (bursts of one second's worth); more are
    /// answered 429 `rate_limited`. 0: no limit.
    #[arg(
        long,
        env = "GRIDSOCKET_MAX_REQUESTS_PER_SEC",
        default_value_t = 10_000
    )]
    pub max_requests_per_sec: u32,
    /// Largest presence state of one connection (`PRESENCE`'s `state`), in bytes of compact
    /// JSON; larger ones are answered 413 `state_too_large`.
    #[arg(
        long,
        env = "GRIDSOCKET_MAX_PRESENCE_STATE_BYTES",
        default_value_t = 1024
    )]
    pub max_presence_state_bytes: usize,
    /// Largest `BROADCAST` body, in bytes of compact JSON; larger ones are answered 413
    /// `broadcast_too_large`.
    #[arg(long, env = "GRIDSOCKET_MAX_BROADCAST_BYTES", default_value_t = 8 * 1024)]
    pub max_broadcast_bytes: usize,
    /// Most `BROADCAST`s one socket may send per second (bursts of one second's worth); more
    /// are answered 429 `rate_limited`. 0: no limit of their own.
    #[arg(long, env = "GRIDSOCKET_MAX_BROADCASTS_PER_SEC", default_value_t = 20)]
    pub max_broadcasts_per_sec: u32,
    /// Largest entity (its JSON) a POST or PUT may store, in bytes; larger ones are answered
    /// 413 `entity_too_large`.
    #[arg(long, env = "GRIDSOCKET_MAX_ENTITY_BYTES", default_value_t = 256 * 1024)]
    pub max_entity_bytes: usize,
    /// Largest asset (an entity's binary data, uploaded as a multipart `file` part), in bytes;
    /// larger is 413 `entity_too_large`.
    #[arg(long, env = "GRIDSOCKET_MAX_ASSET_BYTES", default_value_t = 10 << 20)]
    pub max_asset_bytes: usize,
    /// Request bodies the REST port holds at once, all connections together, in bytes: each
    /// reserves its Content-Length (or, chunked, its most) before it is read; past it, 503
    /// `server_busy` with `Retry-After`. The socket port has a budget of its own of this size,
    /// for the requests its sockets hold (each counts its frame's length), answered the same.
    #[arg(long, env = "GRIDSOCKET_MAX_BODY_BYTES_TOTAL", default_value_t = 128 << 20)]
    pub max_body_bytes_total: usize,
    /// Deepest nesting of parentheses and `not` in a `ql`; deeper is 400 `query_parse`.
    #[arg(long, env = "GRIDSOCKET_MAX_QUERY_DEPTH", default_value_t = gridsocket_core::query::MAX_DEPTH)]
    pub max_query_depth: usize,
    /// Most comparisons in a `ql`; more is 400 `query_parse`.
    #[arg(long, env = "GRIDSOCKET_MAX_QUERY_TERMS", default_value_t = gridsocket_core::query::MAX_TERMS)]
    pub max_query_terms: usize,
    /// Seconds a query that filters or orders may run; longer is 504 `query_timeout`.
    #[arg(long, env = "GRIDSOCKET_QUERY_TIMEOUT_SECS", default_value_t = 5)]
    pub query_timeout_secs: u64,
    /// Most entities that do not match a collection query may read for one page: a filter
    /// the property index cannot narrow reads entities one by one, and past this many it is
    /// 400 `query_too_expensive`.
    #[arg(long, env = "GRIDSOCKET_MAX_QUERY_ROWS", default_value_t = 100_000)]
    pub max_query_rows: usize,
    /// Most concurrent REST connections; more wait to be accepted.
    #[arg(long, env = "GRIDSOCKET_MAX_HTTP_CONNECTIONS", default_value_t = 4_096)]
    pub max_http_connections: usize,
    /// Most REST connections from one client address; more are closed at once. 0: no limit.
    /// (Behind a load balancer every client has the balancer's address: raise it.)
    #[arg(
        long,
        env = "GRIDSOCKET_MAX_HTTP_CONNECTIONS_PER_IP",
        default_value_t = 256
    )]
    pub max_http_connections_per_ip: usize,
    /// Seconds a REST client has to send a request's headers once it has started them;
    /// slower connections are closed.
    #[arg(
        long,
        env = "GRIDSOCKET_HTTP_HEADER_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub http_header_timeout_secs: u64,
    /// Seconds a kept-alive REST connection may wait for its next request before it is
    /// closed.
    #[arg(long, env = "GRIDSOCKET_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub http_idle_timeout_secs: u64,
    /// Seconds a new socket has to finish its TLS and WebSocket handshakes and be
    /// authenticated; slower connections are closed.
    #[arg(long, env = "GRIDSOCKET_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Failed password logins allowed per username per minute (bursts of that many); more
    /// are answered 429 `too_many_attempts` with `Retry-After`. 0: no limit.
    #[arg(long, env = "GRIDSOCKET_LOGIN_FAILURES_PER_USER", default_value_t = 5)]
    pub login_failures_per_user: u32,
    /// Failed logins and client-credential grants allowed per client address per minute;
    /// more are answered 429 `too_many_attempts`. 0: no limit.
    #[arg(long, env = "GRIDSOCKET_LOGIN_FAILURES_PER_IP", default_value_t = 20)]
    pub login_failures_per_ip: u32,
    /// Users one client address may sign up per minute (bursts of that many); more are
    /// answered 429 `too_many_attempts`. Application admins are not counted. 0: no limit.
    #[arg(long, env = "GRIDSOCKET_SIGNUPS_PER_IP", default_value_t = 20)]
    pub signups_per_ip: u32,
    /// Password hashes and checks (Argon2id, about 19 MiB of memory each) that run at once;
    /// more wait their turn. Hashing new passwords (sign-ups, changes) takes at most all but
    /// one of them, so logins always have a turn.
    #[arg(long, env = "GRIDSOCKET_MAX_PASSWORD_CHECKS", default_value_t = 4)]
    pub max_password_checks: usize,
    /// Largest WebSocket message and REST body, in bytes.
    #[arg(long, env = "GRIDSOCKET_MAX_FRAME_BYTES", default_value_t = 1 << 20)]
    pub max_frame_bytes: usize,
    /// Most requests executing at once on one socket; more are answered 429.
    #[arg(long, env = "GRIDSOCKET_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Seconds a request may run before the socket answers 504.
    #[arg(long, env = "GRIDSOCKET_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Most subscriptions per socket; more are answered 429.
    #[arg(long, env = "GRIDSOCKET_MAX_SUBSCRIPTIONS", default_value_t = 1_000)]
    pub max_subscriptions: usize,
    /// Bytes of paths and parameters (a `ql`, …) one socket's subscriptions may hold
    /// together; a subscription past it is answered 429.
    #[arg(long, env = "GRIDSOCKET_MAX_SUBSCRIPTION_BYTES", default_value_t = 256 << 10)]
    pub max_subscription_bytes: usize,
    /// Events queued for one socket before it counts as a slow consumer (closed with 4008).
    #[arg(long, env = "GRIDSOCKET_MAX_QUEUED_EVENTS", default_value_t = 4_096)]
    pub max_queued_events: usize,
    /// Bytes (answers and events together) queued for one socket, behind the frame being
    /// written, before it counts as a slow consumer (closed with 4008).
    #[arg(long, env = "GRIDSOCKET_MAX_QUEUED_BYTES", default_value_t = 4 << 20)]
    pub max_queued_bytes: usize,
    /// Most bytes waiting on all sockets together for connections that cannot take them at
    /// once; past it, every socket with anything waiting behind its frame in progress closes
    /// with 4008, so that many slow readers cannot exhaust the server's memory.
    #[arg(long, env = "GRIDSOCKET_MAX_QUEUED_BYTES_TOTAL", default_value_t = 256 << 20)]
    pub max_queued_bytes_total: usize,
    /// Seconds of silence before a socket is pinged; twice that and it is closed. 0: never.
    #[arg(long, env = "GRIDSOCKET_PING_INTERVAL_SECS", default_value_t = 25)]
    pub ping_interval_secs: u64,
    /// Seconds a socket whose token expired has to send AUTH before it is closed with 4401.
    #[arg(long, env = "GRIDSOCKET_AUTH_GRACE_SECS", default_value_t = 30)]
    pub auth_grace_secs: u64,
    /// How long the change log keeps changes for resuming subscriptions, seconds.
    #[arg(long, env = "GRIDSOCKET_LOG_RETENTION_SECS", default_value_t = 86_400)]
    pub log_retention_secs: u64,
    /// Browser origins allowed to open sockets and call REST (`https://app.example.com`),
    /// comma-separated; empty: any. A request from another origin gets 403
    /// `origin_not_allowed`; clients that send no `Origin` (not browsers) are not affected.
    #[arg(long, env = "GRIDSOCKET_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain: with --tls-key, both ports speak TLS (`https://`, `wss://`).
    #[arg(long, env = "GRIDSOCKET_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "GRIDSOCKET_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Lifetime of access tokens, seconds.
    #[arg(long, env = "GRIDSOCKET_TOKEN_TTL_SECS", default_value_t = 86_400)]
    pub token_ttl_secs: u64,
}

impl Settings {
    /// Settings for tests and embedding: every default as the command line has it (each is
    /// written once, in its flag), on ephemeral loopback ports, with data in `data_dir`.
    pub fn ephemeral(data_dir: PathBuf) -> Settings {
        /// The command line with nothing on it.
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        let mut settings = <Defaults as clap::Parser>::try_parse_from(["gridsocket"])
            .map(|d| d.settings)
            // Every setting has a default, so an empty command line always parses; should a
            // bad environment variable break it, the process has no settings to go on.
            .unwrap_or_else(|e| panic!("the default settings do not parse: {e}"));
        settings.http_addr = "127.0.0.1:0".parse().expect("literal address");
        settings.ws_addr = "127.0.0.1:0".parse().expect("literal address");
        settings.data_dir = data_dir;
        settings
    }

    /// The superuser as `(name, password)`, if it is set and well formed.
    pub fn superuser_pair(&self) -> Option<(String, String)> {
        let s = self.superuser.as_deref()?;
        let (name, pass) = s.split_once(':')?;
        (!name.is_empty() && !pass.is_empty()).then(|| (name.to_owned(), pass.to_owned()))
    }

    /// Whether a request with this `Origin` header (if any) may be served.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                self.allowed_origins.is_empty()
                    || self
                        .allowed_origins
                        .iter()
                        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
            }
        }
    }

    /// How often the dispatcher reads the log without a signal.
    pub fn dispatch_poll(&self) -> Duration {
        Duration::from_millis(self.dispatch_poll_ms.max(10))
    }

    /// How long a request may run.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The API's settings; `base_url` is where REST answers (for the `uri` of responses).
    pub fn api_config(&self, base_url: String) -> ApiConfig {
        ApiConfig {
            base_url: self
                .public_url
                .clone()
                .unwrap_or(base_url)
                .trim_end_matches('/')
                .to_owned(),
            default_org: self.default_org.clone(),
            superuser: self.superuser_pair(),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            max_entity_bytes: self.max_entity_bytes,
            max_asset_bytes: self.max_asset_bytes,
            query_limits: QueryLimits {
                max_depth: self.max_query_depth,
                max_terms: self.max_query_terms,
                ..QueryLimits::default()
            },
            query_timeout: Duration::from_secs(self.query_timeout_secs.max(1)),
            max_query_rows: self.max_query_rows.max(1),
            login_failures_per_user: self.login_failures_per_user,
            login_failures_per_ip: self.login_failures_per_ip,
            signups_per_ip: self.signups_per_ip,
            max_password_checks: self.max_password_checks,
        }
    }

    /// The realtime layer's settings: a resume replays at most half of what a socket may
    /// queue, since a replay is sent at once.
    pub fn realtime_config(&self) -> RealtimeConfig {
        RealtimeConfig {
            max_replay_bytes: self.max_queued_bytes / 2,
            max_presence_state_bytes: self.max_presence_state_bytes,
        }
    }

    /// The protocol session's settings for each socket.
    pub fn session_config(&self) -> ServerConfig {
        ServerConfig {
            max_frame_len: self.max_frame_bytes,
            max_in_flight: self.max_in_flight,
            request_timeout: self.request_timeout(),
            max_subscriptions: self.max_subscriptions,
            max_subscription_bytes: self.max_subscription_bytes,
            max_queued_events: self.max_queued_events,
            ping_interval: (self.ping_interval_secs > 0)
                .then(|| Duration::from_secs(self.ping_interval_secs)),
            auth_grace: Duration::from_secs(self.auth_grace_secs),
            max_requests_per_sec: (self.max_requests_per_sec > 0)
                .then_some(self.max_requests_per_sec),
            max_broadcast_bytes: self.max_broadcast_bytes,
            max_broadcasts_per_sec: (self.max_broadcasts_per_sec > 0)
                .then_some(self.max_broadcasts_per_sec),
        }
    }

    /// How much may wait for one socket before it is a slow consumer.
    pub fn backlog_limits(&self) -> BacklogLimits {
        BacklogLimits {
            events: self.max_queued_events,
            bytes: self.max_queued_bytes,
            total_bytes: self.max_queued_bytes_total,
        }
    }

    /// The WebSocket layer's settings.
    pub fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(self.max_frame_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
    }

    /// How long a new socket has for its handshakes and authentication.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }
}
