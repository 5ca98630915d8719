//! REST glue: HTTP/1.1 requests in, [`Api::handle_rest`] responses out.

use crate::api::ApiResponse;
use crate::config::Settings;
use crate::metrics::Via;
use crate::net::assets;
use crate::net::tls::Conn;
use crate::realtime::Realtime;
use bytes::Bytes;
use gridsocket_core::{Method, Params};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Where a REST connection is, for its two timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request, since then.
    Idle(Instant),
    /// Reading a request's head, since its first byte.
    Head(Instant),
    /// A request is being served.
    Busy,
}

/// A connection's phase, shared by its IO (which sees the first byte of a request) and its
/// service (which sees requests start and end).
struct PhaseCell(Mutex<Phase>);

impl PhaseCell {
    fn set(&self, phase: Phase) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    fn get(&self) -> Phase {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived: an idle connection is now reading a request's head.
    fn on_bytes(&self) {
        let mut phase = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
        }
    }
}

/// Ends the connection's request; it is idle from now on, even if the request's future is
/// dropped.
struct Serving(Arc<PhaseCell>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.set(Phase::Idle(Instant::now()));
    }
}

/// The connection's IO, telling its [`PhaseCell`] when a request's first bytes arrive.
struct Watched<T> {
    inner: T,
    phase: Arc<PhaseCell>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.on_bytes();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Returns when the connection has waited too long: idle past the keep-alive timeout, or
/// reading a request's head past the header timeout. Checked a few times per timeout, so a
/// connection ends at most a quarter of a timeout late.
async fn expiry(phase: &PhaseCell, header: Duration, idle: Duration) {
    let tick = (header.min(idle) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let over = match phase.get() {
            Phase::Idle(since) => since.elapsed() > idle,
            Phase::Head(since) => since.elapsed() > header,
            Phase::Busy => false,
        };
        if over {
            return;
        }
    }
}

/// Request bodies the REST port holds at once, all connections together, in KiB: each body
/// reserves its `Content-Length` (or, without one, the most it may be) before it is read, so
/// thousands of connections each sending a large body cannot exhaust memory. A write keeps its
/// body's room until it ends, also when its caller stopped waiting (see [`handle`]).
pub struct BodyBudget(Arc<tokio::sync::Semaphore>);

impl BodyBudget {
    /// A budget of `bytes` (`--max-body-bytes-total`).
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget(Arc::new(tokio::sync::Semaphore::new((bytes / 1024).max(1))))
    }

    /// Reserves room for a body of at most `bytes`; `None`: the server is holding too many
    /// bodies now (the client is told to retry rather than kept waiting with its connection).
    fn reserve(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).ok()?;
        self.0.clone().try_acquire_many_owned(kib).ok()
    }
}

/// Serves one HTTP connection until it closes, waits too long, or the server shuts down.
pub async fn serve_connection(
    stream: Conn,
    peer: IpAddr,
    realtime: Arc<Realtime>,
    settings: Arc<Settings>,
    bodies: Arc<BodyBudget>,
    cancel: CancellationToken,
) {
    let phase = Arc::new(PhaseCell(Mutex::new(Phase::Idle(Instant::now()))));
    let (header_timeout, idle_timeout) = (
        Duration::from_secs(settings.http_header_timeout_secs.max(1)),
        Duration::from_secs(settings.http_idle_timeout_secs.max(1)),
    );
    let io = Watched {
        inner: stream,
        phase: phase.clone(),
    };
    let serving = phase.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let (realtime, settings, bodies) = (realtime.clone(), settings.clone(), bodies.clone());
        serving.set(Phase::Busy);
        let done = Serving(serving.clone());
        async move {
            let _done = done;
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if !settings.origin_allowed(origin.as_deref()) {
                return Ok::<_, Infallible>(error(
                    403,
                    "origin_not_allowed",
                    "this origin is not in the server's allowed origins",
                ));
            }
            let mut resp = handle(req, peer, &realtime, &settings, &bodies).await;
            // With an allow-list, name the one origin instead of `*`.
            if let Some(o) = origin.filter(|_| !settings.allowed_origins.is_empty())
                && let Ok(v) = HeaderValue::from_str(&o)
            {
                let h = resp.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            Ok(resp)
        }
    });
    // A client may close its side once its request is sent: the request still runs (a write
    // to its end), and its answer goes nowhere. Without half-close, reading that end dropped
    // the request wherever it stood, so a complete write was run or not by a race.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .half_close(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        // Dropping the connection closes it: an idle one loses nothing, a half-sent request
        // is abandoned.
        _ = expiry(&phase, header_timeout, idle_timeout) => {
            tracing::debug!("http connection timed out");
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// How long `/healthz` waits for the database.
const HEALTH_WAIT: Duration = Duration::from_secs(1);

fn json_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

fn error(status: u16, code: &str, description: &str) -> Response<Full<Bytes>> {
    error_after(status, code, description, Duration::ZERO)
}

/// An error answered after `took`, in Usergrid's shape, as the API's errors are: with when
/// (`timestamp`, ms since the epoch) and how long it took (`duration`, ms).
fn error_after(
    status: u16,
    code: &str,
    description: &str,
    took: Duration,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": code,
        "error_description": description,
        "timestamp": crate::api::now_ms(),
        "duration": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    });
    json_response(status, body.to_string())
}

async fn handle(
    req: Request<Incoming>,
    peer: IpAddr,
    realtime: &Realtime,
    settings: &Settings,
    bodies: &BodyBudget,
) -> Response<Full<Bytes>> {
    if req.method() == hyper::Method::OPTIONS {
        // CORS preflight: browsers may call the API from any origin with a bearer token.
        let mut resp = json_response(204, String::new());
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        return resp;
    }
    let Some(method) = Method::from_http(req.method().as_str()) else {
        return error(
            405,
            "unsupported_rest_operation",
            "use GET, POST, PUT or DELETE",
        );
    };
    let path = req.uri().path().to_owned();
    if settings.demo
        && method == Method::Get
        && let Some(resp) = demo_asset(&path, settings).await
    {
        return resp;
    }
    if method == Method::Get && path == "/status" {
        return json_response(
            200,
            serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}).to_string(),
        );
    }
    // Readiness: a node that cannot reach its database within a second is taken out by the
    // balancer's health check (its requests would only fail); `/status` says it runs.
    if method == Method::Get && path == "/healthz" {
        let store = realtime.api().store().ping();
        // What failed stays in the log: the body is public.
        let (status, state, store) = match tokio::time::timeout(HEALTH_WAIT, store).await {
            Ok(Ok(())) => (200, "ok", "ok"),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "health check: the database failed");
                (503, "unavailable", "failed")
            }
            Err(_) => (503, "unavailable", "no answer"),
        };
        let mut resp = json_response(
            status,
            serde_json::json!({"status": state, "version": env!("CARGO_PKG_VERSION"),
                               "store": store})
            .to_string(),
        );
        if status == 503 {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return resp;
    }
    if method == Method::Get && path == "/metrics" {
        let metrics = realtime.api().metrics();
        metrics.connections.set(realtime.hub().connections() as i64);
        metrics
            .subscriptions
            .set(realtime.hub().subscriptions() as i64);
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        metrics.tasks.set(tasks as i64);
        let mut resp = Response::new(Full::new(Bytes::from(metrics.render())));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return resp;
    }
    if !settings.role.serves_rest() {
        return error(
            404,
            "not_served_here",
            "this node is a gateway: it serves the WebSocket API, /status, /healthz and \
             /metrics; the REST API is on the api nodes",
        );
    }
    let params = Params::from_query_string(req.uri().query().unwrap_or(""));
    let header_text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let authorization = header_text(header::AUTHORIZATION).map(str::to_owned);
    let content_type = header_text(header::CONTENT_TYPE);
    let is_form =
        content_type.is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let api = realtime.api();
    // An entity with an asset answers a GET that prefers another type with its bytes.
    if method == Method::Get && assets::wants_bytes(header_text(header::ACCEPT)) {
        let found = api.asset_of(&path, &params, authorization.as_deref(), Some(peer));
        match tokio::time::timeout(settings.request_timeout(), found).await {
            Ok(Ok(Some(asset))) => return assets::response(asset, req.headers()),
            Ok(Ok(None)) => {}
            Ok(Err(refused)) => return json_response(refused.status, refused.body),
            Err(_) => return error(504, "request_timeout", "the asset was not read in time"),
        }
    }
    let boundary = matches!(method, Method::Post | Method::Put)
        .then(|| assets::form_boundary(content_type))
        .flatten();
    let limit = match boundary {
        Some(_) => settings.max_asset_bytes + assets::FORM_OVERHEAD,
        None => settings.max_frame_bytes,
    };
    // HTTP/1.1: a body is as long as its Content-Length says, chunked (then as long as it may
    // be), or empty.
    let declared = match header_text(header::CONTENT_LENGTH) {
        Some(n) => n.trim().parse::<usize>().unwrap_or(usize::MAX),
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => limit,
        None => 0,
    };
    if declared > limit {
        return error(
            413,
            "request_entity_too_large",
            &format!("the body is larger than {limit} bytes"),
        );
    }
    // A body that never finishes arriving must not hold the connection: it has as long as
    // a request has to run.
    let deadline = tokio::time::Instant::now() + settings.request_timeout();
    let room = if declared == 0 {
        None
    } else {
        let Some(room) = bodies.reserve(declared) else {
            let mut resp = error(
                503,
                "server_busy",
                "the server is reading as many request bodies as it holds at once; retry",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        };
        Some(room)
    };
    let collect = Limited::new(req.into_body(), limit).collect();
    let Ok(collected) = tokio::time::timeout_at(deadline, collect).await else {
        return error(
            408,
            "request_timeout",
            &format!(
                "the body did not arrive within {} s",
                settings.request_timeout_secs
            ),
        );
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                413,
                "request_entity_too_large",
                &format!("the body is larger than {limit} bytes, or the upload broke off"),
            );
        }
    };
    // What changes something: any method but GET, and a GET of a queue (it moves the
    // consumer's position), as the socket counts them.
    let changes =
        method != Method::Get || path.split('/').any(|s| s.eq_ignore_ascii_case("queues"));
    let started = std::time::Instant::now();
    let call: Pin<Box<dyn Future<Output = ApiResponse> + Send + 'static>> = match boundary {
        Some(boundary) => match assets::read_form(bytes, boundary).await {
            Ok((fields, file)) => {
                let api = api.clone();
                Box::pin(async move {
                    api.handle_upload(
                        method,
                        &path,
                        params,
                        fields,
                        file,
                        authorization.as_deref(),
                        Some(peer),
                    )
                    .await
                })
            }
            Err(why) => return error(400, "illegal_argument", &why),
        },
        None => {
            let api = api.clone();
            let body = parse_body(&bytes, is_form);
            Box::pin(async move {
                api.handle_rest(
                    method,
                    &path,
                    params,
                    body,
                    authorization.as_deref(),
                    Some(peer),
                )
                .await
            })
        }
    };
    // A write runs to its end on a task of its own, whether or not its caller is still
    // waiting (past the timeout below, or gone): dropped partway, a POST of many entities
    // would stand half done. The socket runs its writes the same way; reads are simply
    // dropped. The write keeps its body's room in the budget until it ends, so writes whose
    // callers stopped waiting are bounded in bytes with every body being read.
    let call = if changes {
        let task = api.spawn_lasting(async move {
            let _room = room;
            call.await
        });
        Box::pin(async move { task.await.ok() })
            as Pin<Box<dyn Future<Output = Option<ApiResponse>> + Send>>
    } else {
        Box::pin(async move {
            let _room = room;
            Some(call.await)
        })
    };
    // A request waits at most as long over REST as over the socket.
    let Ok(answered) = tokio::time::timeout(settings.request_timeout(), call).await else {
        api.metrics().observe_request(Via::Rest, 504, started);
        return error_after(
            504,
            "request_timeout",
            &gridsocket_core::wire::request_timeout_description(
                settings.request_timeout(),
                changes,
            ),
            started.elapsed(),
        );
    };
    let Some(ApiResponse {
        status,
        body,
        retry_after,
    }) = answered
    else {
        return error(500, "internal_error", "the request failed");
    };
    api.metrics().observe_request(Via::Rest, status, started);
    let mut resp = json_response(status, body);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The demo page's files: `/demo/` and `/demo/{file}.{ext}` from the demo folder,
/// `/demo/pkg/…` from the built package, `/demo/config.json` made here. Anything else (such as
/// `/demo/chatapp/…`, the API of the demo app) is not an asset.
async fn demo_asset(path: &str, settings: &Settings) -> Option<Response<Full<Bytes>>> {
    let rest = path
        .strip_prefix("/demo/")
        .or((path == "/demo").then_some(""))?;
    if rest == "config.json" {
        let ws = settings.public_ws_url.clone().unwrap_or_default();
        let body = serde_json::json!({"ws": ws, "org": crate::demo::ORG, "app": crate::demo::APP});
        return Some(json_response(200, body.to_string()));
    }
    let (dir, file) = match rest {
        "" | "index.html" => (&settings.demo_dir, "index.html".to_owned()),
        _ if rest.starts_with("pkg/") => (&settings.demo_pkg_dir, rest["pkg/".len()..].to_owned()),
        _ if !rest.contains('/') && rest.contains('.') => (&settings.demo_dir, rest.to_owned()),
        _ => return None,
    };
    // The same path checks as API paths: no `..`, no encoded slashes.
    let segments = gridsocket_core::path::split_segments(&file).ok()?;
    let full = segments.iter().fold(dir.clone(), |p, s| p.join(s));
    let content_type = match full.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    let resp = match tokio::fs::read(&full).await {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(_) if dir == &settings.demo_pkg_dir => error(
            404,
            "not_built",
            "the JavaScript package is not built: run ./scripts/build-wasm.sh",
        ),
        Err(_) => error(404, "not_found", &format!("no demo file {rest:?}")),
    };
    Some(resp)
}

/// The request body as JSON: nothing, a JSON document, or a form turned into an object.
fn parse_body(bytes: &[u8], is_form: bool) -> Result<Option<Value>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Usergrid's own examples post JSON with curl's default form content type: a body that
    // looks like JSON is read as JSON.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if is_form && !matches!(first, Some(b'{' | b'[')) {
        let text =
            std::str::from_utf8(bytes).map_err(|_| "the form body is not UTF-8".to_owned())?;
        let params = Params::from_query_string(text);
        let map: Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        return Ok(Some(Value::Object(map)));
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| format!("the body is not valid JSON: {e}"))
}
