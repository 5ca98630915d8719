//! The process: opens the store, binds both listeners, accepts until shutdown.

use crate::api::Api;
use crate::bus::{BusError, NatsBus};
use crate::config::{Role, Settings};
use crate::demo;
use crate::net::ws::{Accepted, Admission};
use crate::net::{http as rest, ws};
use crate::realtime::Realtime;
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened (bad data dir, corrupt or read-only file, unreachable or
    /// refusing database).
    #[error("cannot open the store at {place}: {source}")]
    Store {
        /// The data dir or database URL (without its password).
        place: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// A listener could not bind (port in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The demo data could not be created.
    #[error("cannot create the demo data: {0}")]
    Demo(String),
    /// `--store` names no store this server has.
    #[error("unsupported store {0:?}: expected postgres://user@host:port/db")]
    StoreUrl(String),
    /// The bus could not be joined.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    /// A gateway or API node was started without the shared store and bus it needs.
    #[error("--role {0} needs --store postgres://… and --bus nats://…: nodes share nothing else")]
    Role(&'static str),
}

/// A database URL as it may be logged: without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Opens the store the settings name: the embedded one by default.
async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    match settings.store.as_deref() {
        None => {
            // Opening may wait for a server that is still letting go of the data dir.
            let dir = settings.data_dir.clone();
            tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
                .await
                .unwrap_or_else(|e| Err(StoreError::Backend(Box::new(e))))
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|source| StartError::Store {
                    place: settings.data_dir.display().to_string(),
                    source,
                })
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            PostgresStore::connect(url)
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|source| StartError::Store {
                    place: redact(url),
                    source,
                })
        }
        Some(other) => Err(StartError::StoreUrl(redact(other))),
    }
}

/// A bound, ready server.
pub struct Server {
    http: TcpListener,
    tls: Option<TlsAcceptor>,
    /// Absent on an API-only node.
    ws: Option<TcpListener>,
    bus: Option<NatsBus>,
    realtime: Arc<Realtime>,
    settings: Arc<Settings>,
}

impl Server {
    /// Opens the store, joins the bus and binds the listeners of the node's role; with
    /// `--demo`, seeds the demo data.
    pub async fn bind(mut settings: Settings) -> Result<Server, StartError> {
        if settings.role != Role::All && (settings.store.is_none() || settings.bus.is_none()) {
            return Err(StartError::Role(match settings.role {
                Role::Gateway => "gateway",
                _ => "api",
            }));
        }
        let store = open_store(&settings).await?;
        Self::bind_with_store(store, {
            if settings.demo && settings.default_org.is_none() {
                settings.default_org = Some(demo::ORG.into());
            }
            settings
        })
        .await
    }

    /// Binds with a given store.
    pub async fn bind_with_store(
        store: Arc<dyn Store>,
        mut settings: Settings,
    ) -> Result<Server, StartError> {
        let bind = |addr: SocketAddr| async move {
            listen(addr).map_err(|source| StartError::Bind { addr, source })
        };
        let tls =
            crate::net::tls::acceptor(settings.tls_cert.as_deref(), settings.tls_key.as_deref())?;
        let http = bind(settings.http_addr).await?;
        let ws = if settings.role.serves_sockets() {
            Some(bind(settings.ws_addr).await?)
        } else {
            None
        };
        let http_addr = http.local_addr().map_err(|source| StartError::Bind {
            addr: settings.http_addr,
            source,
        })?;
        let config = settings.api_config(format!("http://{http_addr}"));
        // The API keeps only the superuser password's hash; the settings forget the text.
        settings.superuser = None;
        check_open_files(&settings);
        let api = Api::new(store, config);
        let realtime = Realtime::new(api.clone(), settings.realtime_config());
        let bus = match &settings.bus {
            Some(url) => {
                Some(NatsBus::connect(url, &settings.bus_subject, api.metrics().clone()).await?)
            }
            None => None,
        };
        // What the API signals reaches this node's realtime layer, then the other nodes.
        let outbox = bus.as_ref().map(|(_, outbox)| outbox.clone());
        let local = Arc::downgrade(&realtime);
        api.send_signals_to(Box::new(move |signal| {
            if let Some(realtime) = local.upgrade() {
                realtime.apply_signal(&signal);
            }
            if let Some(outbox) = &outbox {
                outbox.send(signal);
            }
        }));
        // Presence messages and broadcasts go straight to the bus: they are never stored.
        if let Some((_, outbox)) = &bus {
            let presence = outbox.clone();
            realtime
                .presence()
                .send_to_bus(Box::new(move |msg| presence.send_presence(msg)));
            let broadcasts = outbox.clone();
            realtime.send_broadcasts_to(Box::new(move |b| broadcasts.send_broadcast(b)));
        }
        let bus = bus.map(|(bus, _)| bus);
        if settings.public_ws_url.is_none()
            && let Some(Ok(addr)) = ws.as_ref().map(TcpListener::local_addr)
        {
            let scheme = if tls.is_some() { "wss" } else { "ws" };
            settings.public_ws_url = Some(format!("{scheme}://{addr}"));
        }
        if settings.demo {
            demo::seed(&api)
                .await
                .map_err(|e| StartError::Demo(e.to_string()))?;
        }
        Ok(Server {
            http,
            tls,
            ws,
            bus,
            realtime,
            settings: Arc::new(settings),
        })
    }

    /// Where REST listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.settings.http_addr)
    }

    /// Where the WebSocket API listens (on an API-only node: the address it would use).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(self.settings.ws_addr)
    }

    /// True when both ports speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What this node serves.
    pub fn role(&self) -> Role {
        self.settings.role
    }

    /// The realtime layer, and through it the API (for embedding and tests).
    pub fn realtime(&self) -> Arc<Realtime> {
        self.realtime.clone()
    }

    /// Serves until `shutdown` completes, then tells the other nodes on the bus that this
    /// node's presence is gone, closes every socket with 1012 (reconnect) and waits a little
    /// for requests in flight to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let http_task = tokio::spawn(accept_http(
            self.http,
            self.tls.clone(),
            self.realtime.clone(),
            self.settings.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        // A gateway dispatches the log to its sockets; an API node has none.
        let (ws_task, dispatcher) = match self.ws {
            Some(ws) => (
                Some(tokio::spawn(accept_ws(
                    ws,
                    self.tls.clone(),
                    self.realtime.clone(),
                    self.settings.clone(),
                    cancel.clone(),
                    tracker.clone(),
                ))),
                Some(tokio::spawn(self.realtime.clone().run_dispatcher(
                    self.settings.dispatch_poll(),
                    cancel.clone(),
                ))),
            ),
            None => (None, None),
        };
        let bus = self.bus.map(|bus| {
            let realtime = self.realtime.clone();
            let apply = move |received: crate::bus::Received<'_>| match received {
                crate::bus::Received::Signal(signal) => {
                    realtime.api().apply_signal(signal);
                    realtime.apply_signal(signal);
                }
                crate::bus::Received::Presence(msg) => realtime.presence().handle_message(msg),
                crate::bus::Received::Broadcast(b) => realtime.handle_broadcast(b),
            };
            tokio::spawn(bus.run(apply, cancel.clone()))
        });
        // Every node keeps the presence book: a gateway for its sockets, an API node for
        // `GET …/presence` (a replica of the gateways', over the bus).
        let presence = tokio::spawn(self.realtime.clone().run_presence(cancel.clone()));
        let pruner = tokio::spawn(prune_log(
            self.realtime.clone(),
            Duration::from_secs(self.settings.log_retention_secs),
            cancel.clone(),
        ));
        shutdown.await;
        tracing::info!("shutting down");
        // Before anything stops: the bye goes out ahead of the sockets' closes, and the bus
        // publishes it before it stops.
        self.realtime.presence().shutdown();
        cancel.cancel();
        // Each socket answers what it has in flight, then closes with 1012.
        self.realtime.hub().drain_all();
        for task in [dispatcher, ws_task, bus, Some(presence)]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        let _ = pruner.await;
        let _ = http_task.await;
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within 5 s");
        }
        // Writes whose callers stopped waiting, and writes' answers on their way to the store.
        if !self
            .realtime
            .api()
            .finish_lasting(Duration::from_secs(5))
            .await
        {
            tracing::warn!("some writes did not finish within 5 s more");
        }
    }
}

/// File descriptors the process needs beside its connections: the store, the log, the bus,
/// the listeners, connections still being accepted or refused.
const SPARE_FILES: u64 = 256;

/// Raises the process's open-file limit to its hard limit, and warns when that still cannot
/// hold every connection the settings allow: past it, accepts fail on both ports and the REST
/// port stops answering while sockets hold the rest.
fn check_open_files(settings: &Settings) {
    let wanted = (settings.max_connections + settings.max_http_connections) as u64 + SPARE_FILES;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let have = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    };
    if have < wanted {
        tracing::warn!(
            open_files = have,
            wanted,
            "the open-file limit is lower than --max-connections plus --max-http-connections \
             plus {SPARE_FILES}: lower those, or raise the limit (ulimit -n, LimitNOFILE)"
        );
    }
}

/// Refused socket connections told why at once (a handshake and an error frame each); more
/// are closed without a word, so that refusals cannot hold the process's file descriptors.
const REFUSALS_EXPLAINED_AT_ONCE: usize = 64;

/// How long a refused connection has for its handshake and its error frame.
const REFUSAL_HANDSHAKE: Duration = Duration::from_secs(2);

/// Connections the kernel queues for accepting. After a restart every client reconnects at
/// once; the default of 128 would drop most of those SYNs and leave clients waiting a second
/// or more for their retry. The kernel caps it at `net.core.somaxconn`.
const ACCEPT_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Open sockets per client address, for `--max-connections-per-ip`.
#[derive(Default)]
struct AddressSlots {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// What an accepted socket holds until it ends: an admitted one its places in the
/// connection limits, a refused one its turn at being told why.
type Held = (
    Option<(
        Option<tokio::sync::OwnedSemaphorePermit>,
        Option<AddressSlot>,
    )>,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

// Every idle socket's task is this future in a tokio cell: over the budget, the cell takes
// 1,024 bytes instead of 512 (see `ws::TASK_FUTURE_BUDGET`). Checked as the server builds.
const _: () = {
    const fn future_size<A, F>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    assert!(future_size(ws::serve_socket::<Held>) <= ws::TASK_FUTURE_BUDGET);
};

/// One socket's place in its address's count; gives it back when dropped.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    ip: std::net::IpAddr,
}

impl AddressSlots {
    /// A place for one more socket from `ip`, unless it already has `max` (0: no limit).
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<AddressSlot> {
        let ip = crate::api::auth::client_of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Forgets changes older than the retention, once a minute.
async fn prune_log(service: Arc<Realtime>, retention: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => service.prune_log(retention).await,
            _ = cancel.cancelled() => return,
        }
    }
}

async fn accept_http(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Realtime>,
    settings: Arc<Settings>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(settings.max_http_connections));
    let per_address = Arc::new(AddressSlots::default());
    let bodies = Arc::new(rest::BodyBudget::new(settings.max_body_bytes_total));
    loop {
        // At the limit, stop accepting until a connection ends (the kernel queues the rest).
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = cancel.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        // One address may not hold the port: past its share, a connection is closed at once
        // and its place goes back.
        let Some(slot) = per_address.take(peer.ip(), settings.max_http_connections_per_ip) else {
            drop((stream, permit));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (service, settings, cancel) = (service.clone(), settings.clone(), cancel.clone());
        let (tls, bodies) = (tls.clone(), bodies.clone());
        tracker.spawn(async move {
            let timeout = settings.handshake_timeout();
            if let Some(conn) = crate::net::tls::wrap(stream, tls.as_ref(), timeout).await {
                rest::serve_connection(conn, peer.ip(), service, settings, bodies, cancel).await;
            }
            drop((permit, slot));
        });
    }
}

async fn accept_ws(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Realtime>,
    settings: Arc<Settings>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let per_address = Arc::new(AddressSlots::default());
    let explaining = Arc::new(Semaphore::new(REFUSALS_EXPLAINED_AT_ONCE));
    let session_config = Arc::new(settings.session_config());
    let bounds = ws::socket::Bounds::new(
        settings.backlog_limits(),
        settings.max_body_bytes_total,
        service.api().metrics().clone(),
    );
    let alarms = Arc::new(ws::alarms::Alarms::default());
    tracker.spawn(alarms.clone().ring(cancel.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        // The address's share first: a flood from one address is refused before it can take
        // a place of the server's, and never locks out another address.
        let slot = per_address.take(peer.ip(), settings.max_connections_per_ip);
        let permit = slot
            .as_ref()
            .and_then(|_| limit.clone().try_acquire_owned().ok());
        let admission = match (&slot, &permit) {
            (None, _) => Admission::AddressFull,
            (_, None) => Admission::ServerFull,
            _ => Admission::Admitted,
        };
        // A refused connection gives its places back at once; it is only told why, and only
        // while few others are being told: a flood of refused connections is closed at once
        // rather than holding a file descriptor each through its handshake.
        let places = (admission == Admission::Admitted).then_some((permit, slot));
        let (explained, handshake) = match admission {
            Admission::Admitted => (None, settings.handshake_timeout()),
            _ => match explaining.clone().try_acquire_owned() {
                Ok(turn) => (Some(turn), REFUSAL_HANDSHAKE),
                Err(_) => {
                    drop(stream);
                    continue;
                }
            },
        };
        let held: Held = (places, explained);
        tracker.spawn(ws::serve_socket(Box::new(Accepted {
            stream,
            peer: peer.ip(),
            tls: tls.clone(),
            handshake,
            realtime: service.clone(),
            settings: settings.clone(),
            alarms: alarms.clone(),
            config: session_config.clone(),
            bounds: bounds.clone(),
            admission,
            held,
        })));
    }
}
