//! WebSocket glue: drives one socket's [`ServerSession`] with frames, finished requests and
//! time, and writes what it says; pushed events reach the session through its shared
//! [`Socket`], mostly without this task.

pub mod alarms;
pub mod socket;
pub mod stream;

use crate::api::{ApiResponse, Caller, SocketContext, now_ms};
use crate::config::Settings;
use crate::metrics::Via;
use crate::net::tls::{self, Conn};
use crate::net::ws::alarms::{Alarm, Alarms};
use crate::net::ws::socket::{Bounds, Socket, State};
use crate::net::ws::stream::{ConnWriter, Wire};
use crate::realtime::hub::{ConnHandle, ConnId};
use crate::realtime::{Realtime, SubscribeOk};
use crate::store::AppRecord;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use gridsocket_core::{
    Instant, RequestHandle, ServerConfig, ServerEvent, ServerSession, close_code,
};
use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What a spawned task hands back to the socket's loop.
enum Done {
    /// A read run in the socket's task (its answer inside).
    Read(Box<Done>),
    Response(RequestHandle, ApiResponse),
    Subscribed(RequestHandle, SubscribeOk),
    Authenticated(RequestHandle, Option<i64>),
}

/// Converts a wall-clock expiry (ms since the epoch) into the session's clock.
fn expiry_instant(expires_ms: Option<i64>) -> Option<Instant> {
    let ms = expires_ms?;
    let left = (ms - now_ms()).max(0) as u64;
    Some(Instant::now() + Duration::from_millis(left))
}

/// Whether a new connection fits the connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It fits.
    Admitted,
    /// The server is at `--max-connections`.
    ServerFull,
    /// Its address is at `--max-connections-per-ip`.
    AddressFull,
}

impl Admission {
    /// The error code and description a connection over a limit is told.
    fn refusal(self) -> Option<(&'static str, &'static str)> {
        match self {
            Admission::Admitted => None,
            Admission::ServerFull => Some((
                "too_many_connections",
                "the server is at its connection limit; retry with backoff",
            )),
            Admission::AddressFull => Some((
                "too_many_connections_from_address",
                "this address has as many sockets open as the server allows one address",
            )),
        }
    }
}

/// A connection the listener took, and all its task needs. One box: the task's future keeps
/// its arguments for as long as it lives, and this future's size is every socket's.
pub struct Accepted<H> {
    /// The connection.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: IpAddr,
    /// Set when the listener speaks TLS.
    pub tls: Option<TlsAcceptor>,
    /// How long the TLS and WebSocket handshakes and authentication may take; for a refused
    /// connection, the time it has to be told why.
    pub handshake: Duration,
    /// The node's realtime layer.
    pub realtime: Arc<Realtime>,
    /// The node's settings.
    pub settings: Arc<Settings>,
    /// The node's one timer for its sockets.
    pub alarms: Arc<Alarms>,
    /// The sessions' configuration, one for every socket.
    pub config: Arc<ServerConfig>,
    /// What every socket shares: the bounds of what it holds, and the metrics.
    pub bounds: Arc<Bounds>,
    /// Whether it fits the connection limits.
    pub admission: Admission,
    /// What it holds until it ends: its places in the connection limits, or its turn at being
    /// told it is refused.
    pub held: H,
}

/// Serves one WebSocket connection: the TLS and WebSocket handshakes, authentication, then
/// the socket's loop until either side ends it. One that does not fit the limits is closed
/// with 1013 right after the handshake, with an error frame saying which limit, all within
/// its handshake time. A server shutting down closes its sockets through the hub
/// ([`crate::realtime::hub::Hub::drain_all`]).
///
/// This future is the socket's task for as long as the socket lives, so it keeps only what
/// the loop needs: opening and finishing run boxed, their state freed once they are done.
pub async fn serve_socket<H: Send + 'static>(accepted: Box<Accepted<H>>) {
    let Accepted {
        stream,
        peer,
        tls,
        handshake,
        realtime,
        settings,
        alarms,
        config,
        bounds,
        admission,
        held,
    } = unbox(accepted);
    let deadline = tokio::time::Instant::now() + handshake;
    let refused = admission.refusal().is_some();
    let opening = open(
        stream, peer, tls, deadline, &realtime, settings, config, bounds, admission,
    );
    let Some((ws, writer, socket, link)) = Box::pin(opening).await else {
        return;
    };
    let mut opened = Opened {
        conn: Box::new(Connection { ws, writer }),
        alarm: Alarm::new(alarms, &socket),
        socket,
        link,
        realtime,
    };
    if refused {
        // Only told why, within its handshake time; the deadline is kept for this case only,
        // outside the loop every admitted socket's task holds.
        let _ = tokio::time::timeout_at(deadline, Box::pin(opened.serve())).await;
    } else {
        opened.serve().await;
    }
    drop(held);
}

/// Moves a value out of its box and frees the box now (moving out of `*boxed` in place would
/// free it only where `boxed` goes out of scope: for a socket's task, when the socket ends).
#[allow(clippy::boxed_local)] // The box is what this is for.
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// An accepted socket's connection, shared state, and place in the hub (`None` for a refused
/// connection, which only says why and closes).
type Accepting = (WebSocketStream<Wire>, ConnWriter, Arc<Socket>, Option<Link>);

/// An accepted socket, ready for its loop: everything its task holds for the socket's life,
/// in one place that its loop borrows (an `async fn` keeps each argument twice, once as
/// passed and once as bound).
struct Opened {
    /// Boxed, so that the task's cell fits 512 bytes (see [`TASK_FUTURE_BUDGET`]).
    conn: Box<Connection>,
    socket: Arc<Socket>,
    /// When the session next wants waking.
    alarm: Alarm,
    /// Who it is and its place in the hub; `None` for a refused connection.
    link: Option<Link>,
    realtime: Arc<Realtime>,
}

/// A socket's connection: tungstenite's stream, which reads frames (and writes pongs and
/// the reply to a close), and the half the task writes the backlog with.
struct Connection {
    ws: WebSocketStream<Wire>,
    writer: ConnWriter,
}

/// The most a socket's task future ([`serve_socket`]'s) may take, in bytes.
///
/// tokio aligns a task's cell to 128 bytes on x86-64, and the cell holds the future and 112
/// bytes of its own (header, scheduler, id, the tracker's token, the stage's tag, trailer;
/// measured on tokio 1.54: a 400-byte future gets a 512-byte cell, a 408-byte one 640).
/// mimalloc 3 serves such an aligned block without slack only where its size is a power of
/// two: a 512-byte cell takes 512 bytes, while a 640–896-byte one takes the size class
/// after its size plus 127 bytes of room to align in. Kept within this budget, a socket's
/// task and its boxed [`Connection`] take 512 + 384 bytes; with tungstenite's stream inline
/// (a 736-byte future) the task alone took 1,024.
pub(crate) const TASK_FUTURE_BUDGET: usize = 512 - 112;

impl Opened {
    /// Runs the socket's loop, takes it out of the hub, and sends its last frames.
    async fn serve(&mut self) {
        let ending = self.drive().await;
        self.alarm.unset();
        if let Some(link) = &self.link {
            let realtime = &self.realtime;
            realtime.hub().unregister(link.conn);
            // After the hub forgets it: a join still being checked then finds it gone.
            realtime.presence().leave_connection(link.conn);
        }
        let conn = &mut *self.conn;
        Box::pin(finish(&mut conn.ws, &mut conn.writer, &self.socket, ending)).await;
    }
}

/// An authenticated socket's identity and its place in the hub.
struct Link {
    app: Arc<AppRecord>,
    caller: Arc<Caller>,
    conn: ConnId,
}

/// The handshakes and authentication, until `deadline`; then the greeting, the shared
/// [`Socket`] and the hub's registration. `None`: a handshake failed or took too long (a
/// connection that never finishes them gives its places back).
#[allow(clippy::too_many_arguments)]
async fn open(
    stream: TcpStream,
    peer: IpAddr,
    tls: Option<TlsAcceptor>,
    deadline: tokio::time::Instant,
    realtime: &Realtime,
    settings: Arc<Settings>,
    config: Arc<ServerConfig>,
    bounds: Arc<Bounds>,
    admission: Admission,
) -> Option<Accepting> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let wrapped = tokio::time::timeout_at(deadline, tls::wrap(stream, tls.as_ref(), left));
    let stream = wrapped.await.ok().flatten()?;
    let Handshake {
        mut ws,
        direct,
        target,
        authorization,
    } = handshake(stream, &settings, deadline).await?;
    let now = Instant::now();
    let (session, context) = match admission.refusal() {
        Some((error, description)) => {
            let body = gridsocket_core::wire::error_body_json(error, description);
            let s = ServerSession::reject(config, now, 503, &body, close_code::TRY_AGAIN_LATER);
            (s, None)
        }
        None => {
            let api = realtime.api();
            let open = api.open_socket(&target, authorization.as_deref(), Some(peer));
            let opened = tokio::time::timeout_at(deadline, open)
                .await
                .unwrap_or_else(|_| Err(crate::api::ConnectRefusal::timed_out()));
            match opened {
                Ok(mut ctx) => {
                    let mut session = ServerSession::accept(config, now);
                    greet(&mut session, &mut ctx, &settings, now);
                    (session, Some(ctx))
                }
                Err(refusal) => {
                    let (status, code) = (refusal.status, refusal.close_code);
                    let s = ServerSession::reject(config, now, status, &refusal.body, code);
                    (s, None)
                }
            }
        }
    };
    let socket = Arc::new(Socket::new(session, direct, bounds));
    let writer = ws.get_mut().attach(socket.clone())?;
    let link = context.map(|ctx| Link {
        conn: realtime.hub().register(ConnHandle {
            socket: socket.clone(),
            admin: realtime.api().is_app_admin(&ctx.app, &ctx.caller),
            caller: ctx.caller.clone(),
            app: ctx.app.clone(),
        }),
        app: ctx.app,
        caller: ctx.caller,
    });
    Some((ws, writer, socket, link))
}

/// A connection whose WebSocket handshake succeeded, and what it asked for.
struct Handshake {
    ws: WebSocketStream<Wire>,
    /// The plain TCP connection, for pushers' direct writes (`None` under TLS).
    direct: Option<Arc<tokio::net::TcpStream>>,
    /// The request target: `/{org}/{app}[/resource]?query`.
    target: String,
    /// The `Authorization` header, if any.
    authorization: Option<String>,
}

/// Runs the WebSocket handshake until `deadline`, refusing an origin the settings do not
/// allow (403). `None`: it failed or timed out, and the connection is dropped.
async fn handshake(
    stream: Conn,
    settings: &Settings,
    deadline: tokio::time::Instant,
) -> Option<Handshake> {
    let mut target = String::new();
    let mut authorization = None;
    // The error type is tungstenite's, fixed by its callback signature.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        let origin = req.headers().get("origin").and_then(|v| v.to_str().ok());
        if !settings.origin_allowed(origin) {
            let body = gridsocket_core::wire::error_body_json(
                "origin_not_allowed",
                "this origin is not in the server's allowed origins",
            );
            let mut refusal = ErrorResponse::new(Some(body));
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(resp)
    };
    let (wire, direct) = Wire::new(stream);
    // Boxed: the handshake's state is large and short-lived; inline, it would size the
    // socket's task for as long as the socket lives.
    let handshake = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        wire,
        callback,
        Some(settings.ws_config()),
    ));
    let ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("websocket handshake timed out");
            return None;
        }
    };
    Some(Handshake {
        ws,
        direct,
        target,
        authorization,
    })
}

/// The first thing an accepted socket hears: the subscription its URL names (an inbox, a
/// queue), or a welcome saying who it is connected as and the socket's limits (so that a
/// client holds back what the server would refuse). The URL's resource and parameters are
/// handed on, not kept: the socket lives long, they are needed once.
fn greet(session: &mut ServerSession, ctx: &mut SocketContext, settings: &Settings, now: Instant) {
    session.set_token_expiry(now, expiry_instant(ctx.expires));
    match ctx.resource.take() {
        Some(path) => session.subscribe_on_connect(now, path, std::mem::take(&mut ctx.params)),
        None => {
            let body = serde_json::json!({
                "connected": true,
                "organization": ctx.app.org_name,
                "applicationName": ctx.app.name,
                "user": ctx.caller.user_uuid(),
                "expires_in": ctx.expires.map(|e| (e - now_ms()).max(0) / 1000),
                "max_in_flight": settings.max_in_flight,
                "max_frame_bytes": settings.max_frame_bytes,
            });
            session.welcome(now, &body.to_string());
        }
    }
}

/// Sends a finished socket's last frames (a close) if the peer takes them soon.
///
/// A slow consumer waits as long as any other: its backlog is down to the frame in progress
/// and the close, and the close can only follow what its connection already holds. A client
/// that reads again within [`FINAL_WRITE`] then finds 4008 ("resume with since") after its
/// last events, not a connection cut without a close.
async fn finish(
    ws: &mut WebSocketStream<Wire>,
    writer: &mut ConnWriter,
    socket: &Socket,
    ending: Ending,
) {
    if ending == Ending::PeerClosed {
        // tungstenite's reply to the peer's close joins the outgoing frames.
        let _ = ws.flush().await;
    }
    let rest = poll_fn(|cx| socket.poll_write_backlog(cx, writer));
    let _ = tokio::time::timeout(FINAL_WRITE, rest).await;
    let _ = writer.shutdown().await;
}

/// Turns of a socket's loop between two yields to the runtime.
const TURNS_BEFORE_YIELD: u32 = 16;

/// How long a closing socket's last frames may take to go out.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// Why a socket's loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The peer sent a close frame (tungstenite replies to it).
    PeerClosed,
    /// The session closed, the connection broke or went away.
    Done,
}

impl Opened {
    /// The socket's loop, until either side ends it.
    async fn drive(&mut self) -> Ending {
        // Requests in flight: reads run right here, other work in spawned tasks that answer
        // through a one-shot channel. Nothing is allocated while nothing is in flight; the
        // session caps how many there are (max_in_flight).
        let mut in_flight = InFlight::default();
        let mut turns: u32 = 0;
        loop {
            // What the session asks for and sends; written at once where the connection takes it.
            // (A new Vec each time: an idle socket keeps no capacity. In a block of its own:
            // the task would otherwise keep room for it while it waits.)
            let (deadline, backlog) = {
                let mut events = Vec::new();
                let waits = {
                    let mut st = self.socket.lock();
                    while let Some(event) = st.session.poll_event() {
                        events.push(event);
                    }
                    self.socket.flush(&mut st, Instant::now());
                    if st.is_finished() {
                        return Ending::Done;
                    }
                    (st.session.poll_timeout(), st.has_backlog())
                };
                for event in events {
                    handle_event(
                        event,
                        &self.realtime,
                        self.link.as_ref(),
                        &self.socket,
                        &mut in_flight,
                    );
                }
                waits
            };
            self.alarm.want(deadline);
            // Writes never wait on the connection, so a busy socket would otherwise run on
            // without giving other sockets and the runtime's IO polling a turn: yield now and then
            // (tokio resumes a yielded task only after it has polled for IO).
            turns += 1;
            if turns.is_multiple_of(TURNS_BEFORE_YIELD) {
                tokio::task::yield_now().await;
            }
            tokio::select! {
                // A peer that does not read leaves frames waiting: the socket goes on reading and
                // answering meanwhile, and closes as a slow consumer once too many wait.
                written = poll_fn(|cx| self.socket.poll_write_backlog(cx, &mut self.conn.writer)), if backlog => {
                    if written.is_err() {
                        return Ending::Done;
                    }
                }
                msg = self.conn.ws.next() => {
                    self.conn.ws.get_mut().message_done();
                    let mut st = self.socket.lock();
                    if let Some(ending) = read_message(&self.socket, &mut st, Instant::now(), msg) {
                        return ending;
                    }
                }
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let now = Instant::now();
                    let mut st = self.socket.lock();
                    complete(&mut st.session, now, done);
                    // Take every other answer that is ready too: one write for many responses.
                    while let Some(done) = in_flight.ready() {
                        complete(&mut st.session, now, done);
                    }
                }
                // A pusher left something only this task can do (a backlog, a close), or the
                // alarm rang.
                _ = self.socket.woken() => {
                    let now = Instant::now();
                    if self.alarm.rang(now) {
                        self.socket.lock().session.handle_timeout(now);
                    }
                }
            }
        }
    }
}

/// Hands what the connection read to the session. `Some`: the connection is over.
fn read_message(
    socket: &Socket,
    st: &mut State,
    now: Instant,
    msg: Option<Result<Message, WsError>>,
) -> Option<Ending> {
    let session = &mut st.session;
    match msg {
        Some(Ok(Message::Text(text))) => socket.take_text(st, now, text.as_str()),
        Some(Ok(Message::Binary(bytes))) => session.handle_binary(now, bytes.len()),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => session.handle_pong(now),
        Some(Ok(Message::Frame(_))) => {}
        Some(Ok(Message::Close(_))) => {
            session.handle_disconnect(now);
            return Some(Ending::PeerClosed);
        }
        None => {
            session.handle_disconnect(now);
            return Some(Ending::Done);
        }
        Some(Err(WsError::Capacity(e))) => {
            tracing::debug!(error = %e, "oversize frame");
            session.close(now, close_code::MESSAGE_TOO_BIG, "frame too large");
        }
        Some(Err(WsError::Utf8(e))) => {
            tracing::debug!(error = %e, "text frame is not UTF-8");
            session.close(now, close_code::INVALID_PAYLOAD, "text frame is not UTF-8");
        }
        Some(Err(WsError::Protocol(e))) => {
            tracing::debug!(error = %e, "websocket protocol error");
            session.close(now, close_code::PROTOCOL_ERROR, "websocket protocol error");
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "websocket read failed");
            session.handle_disconnect(now);
            return Some(Ending::Done);
        }
    }
    None
}

/// Hands a finished request's answer to the session. `None`: its task died without
/// answering, and the session's timeout answers it (504).
fn complete(session: &mut ServerSession, now: Instant, done: Option<Done>) {
    match done {
        None => {}
        Some(Done::Read(done)) => complete(session, now, Some(*done)),
        Some(Done::Response(handle, resp)) => {
            session.complete(now, handle, resp.status, &resp.body);
        }
        Some(Done::Subscribed(handle, ok)) => {
            session.confirm_subscription(now, handle, ok.position, &ok.body, ok.replay);
        }
        Some(Done::Authenticated(handle, expires)) => {
            session.set_token_expiry(now, expiry_instant(expires));
            let body = serde_json::json!({
                "action": "auth",
                "expires_in": expires.map(|e| (e - now_ms()).max(0) / 1000),
            });
            session.complete(now, handle, 200, &body.to_string());
        }
    }
}

/// The answer to one request in flight: `None` if its task died without answering.
type Answer = BoxFuture<'static, Option<Done>>;

/// Reads one socket runs at once; more wait their turn, in order. One socket's pipelined
/// queries then hold a few result pages in memory, not hundreds, and take a few of the
/// store's scan slots, not all of them.
const READS_AT_ONCE: usize = 2;

/// A socket's requests in flight: spawned work, and reads run in the socket's task.
#[derive(Default)]
struct InFlight {
    /// `None` while nothing runs: an idle socket carries one pointer for it, not ~70 bytes
    /// of empty queues in its task (nor the two allocations of an empty
    /// `FuturesUnordered`) for its whole life.
    busy: Option<Box<Busy>>,
    /// Ends when the socket's last presence or broadcast command is done.
    last_ephemeral: Option<oneshot::Receiver<()>>,
}

/// What runs for a socket while anything does.
struct Busy {
    running: FuturesUnordered<Answer>,
    /// Reads running; once at [`READS_AT_ONCE`], more wait in `waiting_reads`. Both are
    /// empty when `running` is: a waiting read starts as a running one ends.
    reads: usize,
    waiting_reads: std::collections::VecDeque<Answer>,
}

impl InFlight {
    /// Puts a presence or broadcast command in line behind the socket's last one: it waits
    /// for the first, and signals its own end on the second. A socket's state changes and
    /// broadcasts (typing, a cursor's moves) then take effect, and reach the others, in the
    /// order it sent them, though each checks access on a task of its own.
    fn in_line(&mut self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, next) = oneshot::channel();
        (self.last_ephemeral.replace(next), done)
    }

    /// A channel for spawned work to answer through.
    fn answer(&mut self) -> oneshot::Sender<Done> {
        let (tx, rx) = oneshot::channel();
        self.push(Box::pin(rx.map(Result::ok)));
        tx
    }

    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(|| {
            Box::new(Busy {
                running: FuturesUnordered::new(),
                reads: 0,
                waiting_reads: std::collections::VecDeque::new(),
            })
        })
    }

    fn push(&mut self, answer: Answer) {
        self.busy().running.push(answer);
    }

    fn push_read(&mut self, read: BoxFuture<'static, Done>) {
        let counted: Answer = Box::pin(read.map(|d| Some(Done::Read(Box::new(d)))));
        let busy = self.busy();
        if busy.reads < READS_AT_ONCE {
            busy.reads += 1;
            busy.running.push(counted);
        } else {
            busy.waiting_reads.push_back(counted);
        }
    }

    fn is_empty(&self) -> bool {
        self.busy.is_none()
    }

    /// The next answer; a finished read lets the next waiting one start.
    async fn next(&mut self) -> Option<Option<Done>> {
        let done = self.busy.as_mut()?.running.next().await;
        Some(self.finished(done?))
    }

    /// An answer ready now, if any.
    fn ready(&mut self) -> Option<Option<Done>> {
        let done = self.busy.as_mut()?.running.next().now_or_never()??;
        Some(self.finished(done))
    }

    fn finished(&mut self, done: Option<Done>) -> Option<Done> {
        let (done, read) = match done {
            Some(Done::Read(d)) => (Some(*d), true),
            other => (other, false),
        };
        if let Some(busy) = self.busy.as_mut() {
            if read {
                match busy.waiting_reads.pop_front() {
                    Some(next) => busy.running.push(next),
                    None => busy.reads -= 1,
                }
            }
            if busy.running.is_empty() {
                self.busy = None;
            }
        }
        done
    }
}

/// Starts the work an event asks for; results come back through `in_flight`.
fn handle_event(
    event: ServerEvent,
    realtime: &Arc<Realtime>,
    link: Option<&Link>,
    socket: &Socket,
    in_flight: &mut InFlight,
) {
    let Some(link) = link else {
        return;
    };
    let (realtime, app, caller, conn) = (
        realtime.clone(),
        link.app.clone(),
        link.caller.clone(),
        link.conn,
    );
    match event {
        ServerEvent::Request {
            handle,
            request,
            write_id,
            bytes,
        } => {
            let read_only = request.is_read_only();
            // A read's bytes are the session's to count; a write's are counted while it runs.
            let lasting = (!read_only).then(|| (realtime.api().clone(), socket.hold_write(bytes)));
            let work = async move {
                let started = std::time::Instant::now();
                let resp = crate::api::dedup::execute(
                    realtime.api(),
                    &app,
                    &caller,
                    request,
                    write_id,
                    started,
                )
                .await;
                realtime
                    .api()
                    .metrics()
                    .observe_request(Via::Socket, resp.status, started);
                Done::Response(handle, resp)
            };
            if let Some((api, held)) = lasting {
                let done = in_flight.answer();
                // The socket may be gone; the request's effects stand either way, and shutdown
                // waits for them.
                api.spawn_lasting(async move {
                    let _ = done.send(work.await);
                    drop(held);
                });
            } else {
                // A read changes nothing: it runs inside the socket's task, without a task of
                // its own and a channel back, and is simply dropped if the socket goes away.
                // (The session hands it over only once the writes sent before it are answered.)
                in_flight.push_read(Box::pin(work));
            }
        }
        ServerEvent::Subscribe {
            handle,
            subscription,
            path,
            params,
            since,
        } => {
            let done = in_flight.answer();
            tokio::spawn(async move {
                let result = realtime
                    .subscribe(&app, &caller, conn, subscription, &path, &params, since)
                    .await;
                let msg = match result {
                    Ok(ok) => Done::Subscribed(handle, ok),
                    Err(resp) => Done::Response(handle, resp),
                };
                if done.send(msg).is_err() {
                    realtime.hub().remove(&app.uuid, (conn, subscription));
                }
            });
        }
        ServerEvent::Unsubscribed { subscription } => {
            realtime.hub().remove(&app.uuid, (conn, subscription));
        }
        ServerEvent::Auth {
            handle,
            access_token,
        } => {
            let done = in_flight.answer();
            tokio::spawn(async move {
                let msg = match realtime.reauthenticate(&caller, &access_token).await {
                    Ok(expires) => Done::Authenticated(handle, expires),
                    Err(resp) => Done::Response(handle, resp),
                };
                let _ = done.send(msg);
            });
        }
        ServerEvent::Presence {
            handle,
            path,
            action,
        } => {
            // Answered by a push to this socket, in order with the presence's changes.
            let (before, done) = in_flight.in_line();
            tokio::spawn(async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                realtime
                    .presence_command(&app, &caller, conn, handle, &path, action)
                    .await;
                let _ = done.send(());
            });
        }
        ServerEvent::Broadcast {
            handle,
            path,
            body_json,
            echo,
        } => {
            let answered = in_flight.answer();
            let (before, done) = in_flight.in_line();
            tokio::spawn(async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                let resp = realtime
                    .broadcast(&app, &caller, conn, &path, &body_json, echo)
                    .await;
                let _ = answered.send(Done::Response(handle, resp));
                let _ = done.send(());
            });
        }
    }
}
