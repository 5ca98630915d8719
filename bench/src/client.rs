//! Talking to the server: logging in, opening sockets from spread source addresses, and
//! reading the few fields the scenarios need from frames without a full JSON parse.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Why the bench could not talk to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `scheme://host:port/...`.
    #[error("bad URL {0:?}: expected scheme://host:port")]
    Url(String),
    /// TCP or the WebSocket handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The WebSocket upgrade was refused or broke.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// An HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The server answered something unexpected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A shard process of the cluster run could not be started, failed, or answered out of
    /// its protocol.
    #[error("client process {shard}: {detail}")]
    Shard {
        /// Which shard.
        shard: usize,
        /// What went wrong.
        detail: String,
    },
    /// A local tool or pipe the run needs (`psql`, a shard's stdin) failed.
    #[error("{what}: {source}")]
    Local {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// The server under test and the account the bench uses.
#[derive(Clone, Debug)]
pub struct Target {
    /// REST address.
    pub http: SocketAddr,
    /// WebSocket addresses: one server's, or every gateway's of a cluster.
    pub ws: Vec<SocketAddr>,
    /// Organization.
    pub org: String,
    /// Application.
    pub app: String,
    /// How many loopback source addresses to spread sockets over (127.0.0.2, …).
    pub sources: usize,
}

/// Parses `http://127.0.0.1:8080` or `ws://127.0.0.1:8088` into a socket address.
pub fn parse_addr(url: &str) -> Result<SocketAddr, ClientError> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .trim_end_matches('/');
    rest.parse().map_err(|_| ClientError::Url(url.to_owned()))
}

static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

/// Opens a TCP connection from the next loopback source address, so that many thousands of
/// sockets do not run out of ephemeral ports on one address.
pub async fn tcp(target: &Target, to: SocketAddr) -> Result<TcpStream, ClientError> {
    let err = |source| ClientError::Connect { addr: to, source };
    let socket = TcpSocket::new_v4().map_err(err)?;
    if to.ip().is_loopback() && target.sources > 0 {
        let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % target.sources;
        let ip = Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8);
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .map_err(err)?;
    }
    let stream = socket.connect(to).await.map_err(err)?;
    stream.set_nodelay(true).map_err(err)?;
    Ok(stream)
}

/// A WebSocket to `path_and_query` on the server (small read buffer: thousands are open).
pub async fn websocket(
    target: &Target,
    path_and_query: &str,
) -> Result<WebSocketStream<TcpStream>, ClientError> {
    websocket_via(target, 0, path_and_query).await
}

/// A WebSocket connection to gateway `n` (modulo their number).
pub async fn websocket_via(
    target: &Target,
    n: usize,
    path_and_query: &str,
) -> Result<WebSocketStream<TcpStream>, ClientError> {
    let addr = target.ws[n % target.ws.len().max(1)];
    let stream = tcp(target, addr).await?;
    let url = format!("ws://{addr}{path_and_query}");
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// One keep-alive HTTP/1.1 connection to the REST port.
pub async fn http(target: &Target) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    http_to(target, target.http).await
}

/// One keep-alive HTTP/1.1 connection to `addr` (the REST port, or a monitoring port).
pub async fn http_to(
    target: &Target,
    addr: SocketAddr,
) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let stream = tcp(target, addr).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and returns its status and body.
pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), ClientError> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Logs in with the password grant and returns an access token.
pub async fn login(target: &Target, username: &str, password: &str) -> Result<String, ClientError> {
    let mut sender = http(target).await?;
    let body =
        serde_json::json!({"grant_type": "password", "username": username, "password": password});
    let req = hyper::Request::post(format!("/{}/{}/token", target.org, target.app))
        .header("host", target.http.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
    let (status, body) = exchange(&mut sender, req).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| ClientError::Unexpected(String::from_utf8_lossy(&body).into_owned()))?;
    match value.get("access_token").and_then(|t| t.as_str()) {
        Some(token) if status == 200 => Ok(token.to_owned()),
        _ => Err(ClientError::Unexpected(format!("login: {status} {value}"))),
    }
}

/// Logs an organization admin in (`/management/token`) and returns an access token.
pub async fn admin_login(
    target: &Target,
    username: &str,
    password: &str,
) -> Result<String, ClientError> {
    let mut sender = http(target).await?;
    let body =
        serde_json::json!({"grant_type": "password", "username": username, "password": password});
    let (status, value) = json_request(
        &mut sender,
        target,
        "POST",
        "/management/token",
        None,
        &body,
    )
    .await?;
    match value.get("access_token").and_then(|t| t.as_str()) {
        Some(token) if status == 200 => Ok(token.to_owned()),
        _ => Err(ClientError::Unexpected(format!(
            "admin login: {status} {value}"
        ))),
    }
}

/// Sends a JSON request (with `token` as its bearer, if any) and returns the status and the
/// JSON answer.
pub async fn json_request(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), ClientError> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", target.http.to_string())
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
    let (status, body) = exchange(sender, req).await?;
    let value = serde_json::from_slice(&body)
        .map_err(|_| ClientError::Unexpected(String::from_utf8_lossy(&body).into_owned()))?;
    Ok((status, value))
}

/// Users created per request (the server takes at most 1,000).
const USERS_PER_REQUEST: usize = 100;
/// Connections taking users' tokens at once.
const TOKEN_CONNECTIONS: usize = 8;

/// Creates users named `names` as an admin (`admin` is an organization admin's token), without
/// passwords, and takes a token for each through `GET /users/{u}/token`; their tokens in the
/// order of `names`. No password is hashed on either side, so thousands take seconds where
/// logging each in would take minutes.
pub async fn users_with_tokens(
    target: &Target,
    admin: &str,
    names: &[String],
) -> Result<Vec<String>, ClientError> {
    let app = format!("/{}/{}", target.org, target.app);
    let mut sender = http(target).await?;
    for chunk in names.chunks(USERS_PER_REQUEST) {
        let users: Vec<serde_json::Value> = chunk
            .iter()
            .map(|n| serde_json::json!({"username": n}))
            .collect();
        let (status, body) = json_request(
            &mut sender,
            target,
            "POST",
            &format!("{app}/users"),
            Some(admin),
            &serde_json::Value::Array(users),
        )
        .await?;
        if status != 200 {
            return Err(ClientError::Unexpected(format!(
                "creating users: {status} {body}"
            )));
        }
    }
    let per = names.len().div_ceil(TOKEN_CONNECTIONS).max(1);
    let takers = names.chunks(per).map(|chunk| {
        let app = app.clone();
        async move {
            let mut sender = http(target).await?;
            let mut tokens = Vec::with_capacity(chunk.len());
            for name in chunk {
                let req = hyper::Request::get(format!("{app}/users/{name}/token"))
                    .header("host", target.http.to_string())
                    .header("authorization", format!("Bearer {admin}"))
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| ClientError::Unexpected(e.to_string()))?;
                let (status, body) = exchange(&mut sender, req).await?;
                let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
                    ClientError::Unexpected(String::from_utf8_lossy(&body).into_owned())
                })?;
                match value.get("access_token").and_then(|t| t.as_str()) {
                    Some(token) if status == 200 => tokens.push(token.to_owned()),
                    _ => {
                        return Err(ClientError::Unexpected(format!(
                            "{name}'s token: {status} {value}"
                        )));
                    }
                }
            }
            Ok::<_, ClientError>(tokens)
        }
    });
    let mut tokens = Vec::with_capacity(names.len());
    for part in futures_util::future::try_join_all(takers).await? {
        tokens.extend(part);
    }
    Ok(tokens)
}

/// `GET path` on `addr` over a fresh connection, answered with JSON (NATS's `/varz`).
pub async fn get_json(
    target: &Target,
    addr: SocketAddr,
    path: &str,
) -> Result<serde_json::Value, ClientError> {
    let mut sender = http_to(target, addr).await?;
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
    let (status, body) = exchange(&mut sender, req).await?;
    match serde_json::from_slice(&body) {
        Ok(value) if status == 200 => Ok(value),
        _ => Err(ClientError::Unexpected(format!(
            "GET {addr}{path}: {status} {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}

/// The unsigned integer right after `key` (a quoted key with its colon, `"id":`) in `text`.
pub fn field_u64(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

/// The `id` and `status` of a response frame (`{"id":7,"status":200,…}`).
pub fn response_id_status(text: &str) -> Option<(u64, u16)> {
    let id = field_u64(text, "{\"id\":")?;
    let status = field_u64(text, ",\"status\":")?;
    Some((id, u16::try_from(status).ok()?))
}

/// A text frame's text; `Err` with why the socket ended (its close frame, or the error);
/// `Ok(None)` for any other frame, to be skipped.
pub fn text_or_end(
    msg: Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
) -> Result<Option<tokio_tungstenite::tungstenite::Utf8Bytes>, String> {
    use tokio_tungstenite::tungstenite::Message;
    match msg {
        Ok(Message::Text(t)) => Ok(Some(t)),
        Ok(Message::Close(frame)) => Err(frame.map_or("closed".into(), |f| {
            format!("{} {}", u16::from(f.code), f.reason)
        })),
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_without_parsing_everything() {
        let frame = r#"{"id":42,"status":200,"body":{"x":1}}"#;
        assert_eq!(response_id_status(frame), Some((42, 200)));
        let event = r#"{"event":"create","seq":9,"entity":{"bench_n":17,"bench_t":123456}}"#;
        assert_eq!(field_u64(event, "\"bench_n\":"), Some(17));
        assert_eq!(field_u64(event, "\"bench_t\":"), Some(123456));
        assert_eq!(field_u64(event, "\"missing\":"), None);
        assert_eq!(response_id_status(r#"{"id":null,"status":200}"#), None);
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_addr("ws://127.0.0.1:8088/").ok(),
            Some("127.0.0.1:8088".parse().unwrap())
        );
        assert!(parse_addr("localhost").is_err());
    }
}
