//! Wire types: the JSON frames that cross the socket, and the request they carry.
//!
//! A request frame is `{"id", "method", "path", "params"?, "body"?}`; a response frame is
//! `{"id", "status", "body"}` where `body` is byte for byte what the REST API returns for the
//! same request. See `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt::{self, Write as _};

/// The id a client puts on a request frame; echoed verbatim on the response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FrameId {
    /// A JSON number, echoed as it was written.
    Number(serde_json::Number),
    /// A JSON string.
    Text(String),
}

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameId::Number(n) => write!(f, "{n}"),
            FrameId::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// The operation a request asks for: the REST verbs, carried over the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// Read an entity, a collection page, a queue or a feed.
    Get,
    /// Create an entity, a connection, a message, a token.
    Post,
    /// Update (merge) an entity.
    Put,
    /// Delete an entity or a connection.
    Delete,
}

impl Method {
    /// The HTTP method name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// The Usergrid `action` of a response: the method name in lower case.
    pub fn action(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }

    /// Parses an HTTP method name; `None` for methods the API does not serve.
    pub fn from_http(name: &str) -> Option<Method> {
        match name {
            "GET" => Some(Method::Get),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }
}

/// Query parameters of a request, in order, each name possibly repeated.
///
/// REST gets them from the URL query string, the socket from the frame's `params` object; both
/// end up here so the service layer sees one shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// Appends one `name=value` pair.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bytes of every name and value: what holding the parameters costs, at least.
    pub fn text_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// A yes-or-no parameter: `Some(false)` when absent, `None` when it is anything but one
    /// `true` or `false` (a JSON boolean, or the same word as a URL writes it).
    pub fn flag(&self, name: &str) -> Option<bool> {
        let mut values = self.get_all(name);
        match (values.next(), values.next()) {
            (None, _) => Some(false),
            (Some("true"), None) => Some(true),
            (Some("false"), None) => Some(false),
            _ => None,
        }
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses an `application/x-www-form-urlencoded` string (a URL query).
    pub fn from_query_string(query: &str) -> Self {
        let mut params = Params::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.push(form_decode(name), form_decode(value));
        }
        params
    }

    /// Builds params from a frame's `params` object: strings, numbers and booleans become
    /// strings, arrays become repeated values; `null` is skipped.
    pub fn from_json(map: &Map<String, Value>) -> Result<Self, FrameError> {
        let mut params = Params::new();
        for (name, value) in map {
            match value {
                Value::Array(items) => {
                    for item in items {
                        params.push(name, scalar_param(name, item)?);
                    }
                }
                Value::Null => {}
                other => params.push(name, scalar_param(name, other)?),
            }
        }
        Ok(params)
    }
}

fn scalar_param(name: &str, value: &Value) -> Result<String, FrameError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(FrameError::BadParam(name.to_owned())),
    }
}

fn form_decode(s: &str) -> String {
    let plus_free = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_free)
        .decode_utf8_lossy()
        .into_owned()
}

/// One API call, whether it came over REST or the socket: what the service layer executes.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiRequest {
    /// The verb.
    pub method: Method,
    /// The path relative to the application (`/users/johndoe`), not yet parsed.
    pub path: String,
    /// Query parameters (`ql`, `limit`, `cursor`, …).
    pub params: Params,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

impl ApiRequest {
    /// True for a request that changes nothing: a GET, except of a queue (a queue read moves
    /// the consumer's position and opens transactions).
    pub fn is_read_only(&self) -> bool {
        self.method == Method::Get && !self.path.trim_start_matches('/').starts_with("queues")
    }
}

/// What a request frame asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A REST call (GET, POST, PUT, DELETE).
    Api(ApiRequest),
    /// `SUBSCRIBE`: watch a path and get its changes pushed.
    Subscribe {
        /// The path to watch.
        path: String,
        /// `ql` filter, `snapshot`, `consumer`, …
        params: Params,
        /// Resume after this log position.
        since: Option<u64>,
    },
    /// `UNSUBSCRIBE`: by subscription id, or every subscription of a path.
    Unsubscribe {
        /// The path whose subscriptions end.
        path: Option<String>,
        /// The subscription that ends.
        subscription: Option<String>,
    },
    /// `AUTH`: replace the connection's token (in-band refresh).
    Auth {
        /// The new token.
        access_token: String,
    },
    /// `PRESENCE`: join the presence of a path (or change this connection's state there), or
    /// leave it.
    Presence {
        /// The path whose presence is joined or left.
        path: String,
        /// Join with a state, or leave.
        action: PresenceAction,
    },
    /// `BROADCAST`: an ephemeral message to whoever watches a path now (never stored).
    Broadcast {
        /// The path whose subscribers and present connections get it.
        path: String,
        /// The message: any JSON value but `null`.
        body: Value,
        /// `"params":{"echo":true}`: the sender gets its own message too.
        echo: bool,
    },
}

/// What a `PRESENCE` frame asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum PresenceAction {
    /// `"body":{"state":{…}}` (or no body: an empty state): be present with this state, or
    /// change it when already present.
    Join {
        /// A JSON object.
        state: Value,
    },
    /// `"body":{"leave":true}`: stop being present.
    Leave,
}

/// A request frame from a client, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestFrame {
    /// The client's id, echoed on the response.
    pub id: FrameId,
    /// What it asks for.
    pub command: Command,
    /// The client's id for this write (`write_id`), the same on every resend of it: the server
    /// applies a write once per application and write id, and answers a repeat with the first
    /// answer (see `docs/PROTOCOL.md`, "Writes sent again"). `None` when the frame has none.
    pub write_id: Option<String>,
}

/// Longest `write_id` a frame may carry, in bytes.
pub const MAX_WRITE_ID_LEN: usize = 128;

/// Every method a frame may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum FrameMethod {
    Get,
    Post,
    Put,
    Delete,
    Subscribe,
    Unsubscribe,
    Auth,
    Presence,
    Broadcast,
}

impl FrameMethod {
    fn parse(name: &str) -> Option<FrameMethod> {
        Some(match name {
            "GET" => FrameMethod::Get,
            "POST" => FrameMethod::Post,
            "PUT" => FrameMethod::Put,
            "DELETE" => FrameMethod::Delete,
            "SUBSCRIBE" => FrameMethod::Subscribe,
            "UNSUBSCRIBE" => FrameMethod::Unsubscribe,
            "AUTH" => FrameMethod::Auth,
            "PRESENCE" => FrameMethod::Presence,
            "BROADCAST" => FrameMethod::Broadcast,
            _ => return None,
        })
    }
}

/// Why a text frame is not a valid request; sent back as a 400 `invalid_frame` error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is not JSON at all; the client should send one JSON object per text frame.
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    /// The frame is JSON but not an object.
    #[error("frame must be a JSON object")]
    NotObject,
    /// The object has no usable `id`.
    #[error("missing or invalid \"id\": it must be a string or a number")]
    BadId,
    /// `method` is missing or not one the protocol knows.
    #[error(
        "missing or unknown \"method\": expected GET, POST, PUT, DELETE, SUBSCRIBE, UNSUBSCRIBE, AUTH, PRESENCE or BROADCAST"
    )]
    BadMethod,
    /// `path` is missing or not a string.
    #[error("missing or invalid \"path\": it must be a string")]
    BadPath,
    /// `path` holds a query string; a frame's parameters go in `params`.
    #[error("\"path\" may not hold a query string (\"?…\"): send parameters in \"params\"")]
    QueryInPath,
    /// `since` is not a non-negative whole number.
    #[error("\"since\" must be a non-negative whole number (a seq from an earlier event)")]
    BadSince,
    /// `UNSUBSCRIBE` names neither a path nor a subscription.
    #[error("UNSUBSCRIBE needs \"path\" or \"subscription\" (a string)")]
    BadUnsubscribe,
    /// `AUTH` has no token.
    #[error("AUTH needs \"body\": {{\"access_token\": \"…\"}}")]
    BadAuth,
    /// `PRESENCE` has a body that is neither `{"state":{…}}` nor `{"leave":true}`.
    #[error("PRESENCE needs \"body\": {{\"state\": {{…}}}} (a JSON object) or {{\"leave\": true}}")]
    BadPresence,
    /// `BROADCAST` has no body.
    #[error("BROADCAST needs a \"body\" (any JSON value but null)")]
    BadBroadcast,
    /// `params` is not an object.
    #[error("\"params\" must be an object")]
    BadParams,
    /// One parameter has a value that is not a string, number, boolean or array of those.
    #[error("parameter {0:?} must be a string, number, boolean or an array of those")]
    BadParam(String),
    /// A binary frame arrived; the protocol is JSON text only.
    #[error("binary frames are not supported: send JSON text frames")]
    Binary,
    /// `write_id` is not a non-empty string of at most [`MAX_WRITE_ID_LEN`] bytes.
    #[error("\"write_id\" must be a non-empty string of at most 128 bytes")]
    BadWriteId,
    /// An option of the method has a value of the wrong kind (`"echo": "yes"`).
    #[error("{field:?} must be {expected}")]
    BadOption {
        /// Where it is in the frame: `params.echo`.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

impl FrameError {
    /// The field of the frame that is wrong (`path`, `params.echo`), when one is; the
    /// rejection's body names it in `field`.
    pub fn field(&self) -> Option<String> {
        Some(match self {
            FrameError::BadId => "id".into(),
            FrameError::BadMethod => "method".into(),
            FrameError::BadPath | FrameError::QueryInPath => "path".into(),
            FrameError::BadSince => "since".into(),
            FrameError::BadAuth => "body.access_token".into(),
            FrameError::BadPresence | FrameError::BadBroadcast => "body".into(),
            FrameError::BadParams => "params".into(),
            FrameError::BadParam(name) => format!("params.{name}"),
            FrameError::BadWriteId => "write_id".into(),
            FrameError::BadOption { field, .. } => (*field).into(),
            FrameError::NotJson(_)
            | FrameError::NotObject
            | FrameError::BadUnsubscribe
            | FrameError::Binary => return None,
        })
    }
}

/// A yes-or-no option among `params`, or the error naming it.
fn flag_option(params: &Params, name: &str, field: &'static str) -> Result<bool, FrameError> {
    params.flag(name).ok_or(FrameError::BadOption {
        field,
        expected: "true or false",
    })
}

/// A rejected frame: the error, and the frame's id if it could be read.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedFrame {
    /// The id of the frame, when it had a readable one.
    pub id: Option<FrameId>,
    /// What was wrong.
    pub error: FrameError,
}

/// The fast path: a well-formed frame deserializes straight into this.
#[derive(Deserialize)]
struct WellFormed {
    id: FrameId,
    method: FrameMethod,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    params: Option<Map<String, Value>>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    write_id: Option<String>,
}

impl WellFormed {
    fn into_command(self) -> Result<Command, FrameError> {
        // Every method alike: a `?` would otherwise become part of a name (a presence, a
        // broadcast's target, a subscription's path) that nothing else ever calls it.
        if self.path.as_deref().is_some_and(|p| p.contains('?')) {
            return Err(FrameError::QueryInPath);
        }
        let params = match &self.params {
            Some(map) => Params::from_json(map)?,
            None => Params::new(),
        };
        let api = |method| match self.path.clone() {
            Some(path) => Ok(Command::Api(ApiRequest {
                method,
                path,
                params: params.clone(),
                body: self.body.clone(),
            })),
            None => Err(FrameError::BadPath),
        };
        match self.method {
            FrameMethod::Get => api(Method::Get),
            FrameMethod::Post => api(Method::Post),
            FrameMethod::Put => api(Method::Put),
            FrameMethod::Delete => api(Method::Delete),
            FrameMethod::Subscribe => {
                flag_option(&params, "snapshot", "params.snapshot")?;
                Ok(Command::Subscribe {
                    path: self.path.ok_or(FrameError::BadPath)?,
                    params,
                    since: self.since,
                })
            }
            FrameMethod::Unsubscribe => {
                if self.path.is_none() && self.subscription.is_none() {
                    return Err(FrameError::BadUnsubscribe);
                }
                Ok(Command::Unsubscribe {
                    path: self.path,
                    subscription: self.subscription,
                })
            }
            FrameMethod::Auth => match self
                .body
                .as_ref()
                .and_then(|b| b.get("access_token"))
                .and_then(Value::as_str)
            {
                Some(t) if !t.is_empty() => Ok(Command::Auth {
                    access_token: t.to_owned(),
                }),
                _ => Err(FrameError::BadAuth),
            },
            FrameMethod::Presence => Ok(Command::Presence {
                action: presence_action(self.body)?,
                path: self.path.ok_or(FrameError::BadPath)?,
            }),
            FrameMethod::Broadcast => Ok(Command::Broadcast {
                echo: flag_option(&params, "echo", "params.echo")?,
                body: self
                    .body
                    .filter(|b| !b.is_null())
                    .ok_or(FrameError::BadBroadcast)?,
                path: self.path.ok_or(FrameError::BadPath)?,
            }),
        }
    }
}

/// Reads a `PRESENCE` body: `{"leave":true}`, `{"state":{…}}`, or none (an empty state). A
/// `null` is as good as absent (`{"state":null}` is `{}`, `{"leave":false}` joins), but a key
/// of neither name is refused: a misspelt `"stat"` would otherwise join with an empty state.
fn presence_action(body: Option<Value>) -> Result<PresenceAction, FrameError> {
    let mut body = match body {
        None | Some(Value::Null) => {
            return Ok(PresenceAction::Join {
                state: Value::Object(Map::new()),
            });
        }
        Some(Value::Object(map)) => map,
        Some(_) => return Err(FrameError::BadPresence),
    };
    if body.keys().any(|k| k != "leave" && k != "state") {
        return Err(FrameError::BadPresence);
    }
    match body.get("leave") {
        Some(Value::Bool(true)) => return Ok(PresenceAction::Leave),
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => return Err(FrameError::BadPresence),
    }
    match body.remove("state") {
        None | Some(Value::Null) => Ok(PresenceAction::Join {
            state: Value::Object(Map::new()),
        }),
        Some(state @ Value::Object(_)) => Ok(PresenceAction::Join { state }),
        Some(_) => Err(FrameError::BadPresence),
    }
}

/// Decodes one text frame into a request, or says precisely what is wrong with it.
pub fn decode_request(text: &str) -> Result<RequestFrame, RejectedFrame> {
    if let Ok(mut frame) = serde_json::from_str::<WellFormed>(text) {
        let id = frame.id.clone();
        let write_id = frame.write_id.take();
        if write_id
            .as_ref()
            .is_some_and(|w| w.is_empty() || w.len() > MAX_WRITE_ID_LEN)
        {
            return Err(RejectedFrame {
                id: Some(id),
                error: FrameError::BadWriteId,
            });
        }
        return match frame.into_command() {
            Ok(command) => Ok(RequestFrame {
                id,
                command,
                write_id,
            }),
            Err(error) => Err(RejectedFrame {
                id: Some(id),
                error,
            }),
        };
    }
    // Slow path, only for bad frames: find the id and the first thing that is wrong.
    let value: Value = serde_json::from_str(text).map_err(|e| RejectedFrame {
        // serde_json refuses a frame nested past its recursion limit, or broken anywhere; its
        // id is still read where it stands, so the client's call ends with this answer instead
        // of waiting out its timeout.
        id: crate::json::first_member(text, "id")
            .and_then(|raw| serde_json::from_str::<FrameId>(raw).ok()),
        error: FrameError::NotJson(e.to_string()),
    })?;
    let Value::Object(obj) = value else {
        return Err(RejectedFrame {
            id: None,
            error: FrameError::NotObject,
        });
    };
    let id = match obj.get("id") {
        Some(Value::Number(n)) => Some(FrameId::Number(n.clone())),
        Some(Value::String(s)) => Some(FrameId::Text(s.clone())),
        _ => None,
    };
    let reject = |error| RejectedFrame {
        id: id.clone(),
        error,
    };
    if id.is_none() {
        return Err(reject(FrameError::BadId));
    }
    if obj
        .get("method")
        .and_then(Value::as_str)
        .and_then(FrameMethod::parse)
        .is_none()
    {
        return Err(reject(FrameError::BadMethod));
    }
    if !matches!(obj.get("path"), None | Some(Value::String(_))) {
        return Err(reject(FrameError::BadPath));
    }
    match obj.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            Params::from_json(map).map_err(reject)?;
        }
        Some(_) => return Err(reject(FrameError::BadParams)),
    }
    if !matches!(obj.get("since"), None | Some(Value::Null))
        && obj.get("since").and_then(Value::as_u64).is_none()
    {
        return Err(reject(FrameError::BadSince));
    }
    if !matches!(
        obj.get("subscription"),
        None | Some(Value::Null) | Some(Value::String(_))
    ) {
        return Err(reject(FrameError::BadUnsubscribe));
    }
    if !matches!(
        obj.get("write_id"),
        None | Some(Value::Null) | Some(Value::String(_))
    ) {
        return Err(reject(FrameError::BadWriteId));
    }
    // Every field checked above is fine, so serde's complaint was about something else.
    Err(reject(FrameError::NotJson("unexpected frame shape".into())))
}

/// Encodes a response frame around a body that is already JSON text (`id: None` is `null`,
/// for frames that answer no request).
///
/// The body is spliced in unchanged, so a socket response carries exactly the bytes the REST
/// API would have sent for the same request.
pub fn encode_response(id: Option<&FrameId>, status: u16, body_json: &str) -> String {
    let mut out = String::with_capacity(body_json.len() + 40);
    out.push_str("{\"id\":");
    write_id(&mut out, id);
    let _ = write!(out, ",\"status\":{status},\"body\":");
    out.push_str(body_json);
    out.push('}');
    out
}

/// Encodes the 400 reply to a frame that is not a valid request: `invalid_frame`, and the
/// wrong field when there is one (`"field": "params.echo"`).
pub fn encode_rejection(rejected: &RejectedFrame) -> String {
    let description = rejected.error.to_string();
    let body = match rejected.error.field() {
        Some(field) => serde_json::json!({
            "error": "invalid_frame", "error_description": description, "field": field
        })
        .to_string(),
        None => error_body_json("invalid_frame", &description),
    };
    let mut out = String::with_capacity(body.len() + 40);
    out.push_str("{\"id\":");
    write_id(&mut out, rejected.id.as_ref());
    out.push_str(",\"status\":400,\"body\":");
    out.push_str(&body);
    out.push('}');
    out
}

/// What a `504 request_timeout` says, over REST and the socket alike: how long the request
/// had, and, for a write, that it goes on to its end.
pub fn request_timeout_description(timeout: std::time::Duration, write: bool) -> String {
    format!(
        "the request did not finish within {} ms{}",
        timeout.as_millis(),
        if write {
            "; the write goes on to its end"
        } else {
            ""
        }
    )
}

/// A Usergrid error body `{"error", "error_description"}` as JSON text.
pub fn error_body_json(error: &str, description: &str) -> String {
    serde_json::json!({ "error": error, "error_description": description }).to_string()
}

fn write_id(out: &mut String, id: Option<&FrameId>) {
    match id {
        Some(FrameId::Number(n)) => {
            let _ = write!(out, "{n}");
        }
        Some(FrameId::Text(s)) => out.push_str(&Value::String(s.clone()).to_string()),
        None => out.push_str("null"),
    }
}

/// How many bytes `value` takes as compact JSON, counted without building the text: sizes
/// are checked against limits before anything is copied.
pub fn json_size<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail, and a serde_json value always serializes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_full_request() {
        let f = decode_request(
            r#"{"id":7,"method":"GET","path":"/users","params":{"ql":"select *","limit":5,"x":[1,"a"]}}"#,
        )
        .unwrap();
        assert_eq!(f.id, FrameId::Number(7.into()));
        let Command::Api(req) = f.command else {
            panic!("an API call")
        };
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.params.get("limit"), Some("5"));
        assert_eq!(req.params.get_all("x").collect::<Vec<_>>(), ["1", "a"]);
    }

    #[test]
    fn decodes_realtime_commands() {
        let f = decode_request(
            r#"{"id":7,"method":"SUBSCRIBE","path":"/books","params":{"ql":"select * where price < 10"},"since":42}"#,
        )
        .unwrap();
        assert!(
            matches!(f.command, Command::Subscribe { since: Some(42), ref path, .. } if path == "/books")
        );
        let f = decode_request(r#"{"id":8,"method":"UNSUBSCRIBE","subscription":"s1"}"#).unwrap();
        assert!(matches!(
            f.command,
            Command::Unsubscribe {
                subscription: Some(_),
                path: None
            }
        ));
        let f = decode_request(r#"{"id":9,"method":"AUTH","body":{"access_token":"t"}}"#).unwrap();
        assert_eq!(
            f.command,
            Command::Auth {
                access_token: "t".into()
            }
        );
        for (frame, error) in [
            (r#"{"id":1,"method":"SUBSCRIBE"}"#, FrameError::BadPath),
            (r#"{"id":1,"method":"GET"}"#, FrameError::BadPath),
            (
                r#"{"id":1,"method":"SUBSCRIBE","path":"/a","since":-1}"#,
                FrameError::BadSince,
            ),
            (
                r#"{"id":1,"method":"SUBSCRIBE","path":"/a","since":"x"}"#,
                FrameError::BadSince,
            ),
            (
                r#"{"id":1,"method":"UNSUBSCRIBE"}"#,
                FrameError::BadUnsubscribe,
            ),
            (r#"{"id":1,"method":"AUTH","body":{}}"#, FrameError::BadAuth),
            (r#"{"id":1,"method":"AUTH"}"#, FrameError::BadAuth),
        ] {
            assert_eq!(decode_request(frame).unwrap_err().error, error, "{frame}");
        }
    }

    #[test]
    fn decodes_presence_and_broadcast() {
        let f = decode_request(
            r#"{"id":1,"method":"PRESENCE","path":"/groups/lobby","body":{"state":{"typing":true}}}"#,
        )
        .unwrap();
        assert_eq!(
            f.command,
            Command::Presence {
                path: "/groups/lobby".into(),
                action: PresenceAction::Join {
                    state: serde_json::json!({"typing": true})
                }
            }
        );
        let f = decode_request(r#"{"id":1,"method":"PRESENCE","path":"/a"}"#).unwrap();
        assert!(matches!(
            f.command,
            Command::Presence { action: PresenceAction::Join { ref state }, .. } if state == &serde_json::json!({})
        ));
        let f = decode_request(r#"{"id":1,"method":"PRESENCE","path":"/a","body":{"leave":true}}"#)
            .unwrap();
        assert!(matches!(
            f.command,
            Command::Presence {
                action: PresenceAction::Leave,
                ..
            }
        ));
        let f = decode_request(
            r#"{"id":2,"method":"BROADCAST","path":"/a","params":{"echo":true},"body":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(
            f.command,
            Command::Broadcast {
                path: "/a".into(),
                body: serde_json::json!({"x": 1}),
                echo: true
            }
        );
        let f = decode_request(r#"{"id":2,"method":"BROADCAST","path":"/a","body":"hi"}"#).unwrap();
        assert!(matches!(f.command, Command::Broadcast { echo: false, .. }));
        for (frame, error) in [
            (r#"{"id":1,"method":"PRESENCE"}"#, FrameError::BadPath),
            (
                r#"{"id":1,"method":"PRESENCE","path":"/a","body":{"state":3}}"#,
                FrameError::BadPresence,
            ),
            (
                r#"{"id":1,"method":"PRESENCE","path":"/a","body":[]}"#,
                FrameError::BadPresence,
            ),
            (
                r#"{"id":1,"method":"PRESENCE","path":"/a","body":{"leave":"yes"}}"#,
                FrameError::BadPresence,
            ),
            (
                r#"{"id":1,"method":"PRESENCE","path":"/a","body":{"stat":{"x":1}}}"#,
                FrameError::BadPresence,
            ),
            (
                r#"{"id":1,"method":"BROADCAST","path":"/a"}"#,
                FrameError::BadBroadcast,
            ),
            (
                r#"{"id":1,"method":"BROADCAST","path":"/a","body":null}"#,
                FrameError::BadBroadcast,
            ),
            (
                r#"{"id":1,"method":"BROADCAST","body":{}}"#,
                FrameError::BadPath,
            ),
        ] {
            assert_eq!(decode_request(frame).unwrap_err().error, error, "{frame}");
        }
    }

    #[test]
    fn a_query_string_in_the_path_is_refused_for_every_method() {
        for method in [
            "GET",
            "POST",
            "PUT",
            "DELETE",
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "PRESENCE",
            "BROADCAST",
        ] {
            let frame =
                format!(r#"{{"id":3,"method":"{method}","path":"/groups/lobby?x=1","body":{{}}}}"#);
            let r = decode_request(&frame).unwrap_err();
            assert_eq!(
                (r.id, r.error),
                (Some(FrameId::Number(3.into())), FrameError::QueryInPath),
                "{method}"
            );
        }
        // Escaped, it is a character of a name like any other (and names refuse it).
        assert!(decode_request(r#"{"id":1,"method":"GET","path":"/books/a%3Fb"}"#).is_ok());
    }

    #[test]
    fn options_of_the_wrong_kind_are_refused_naming_the_field() {
        for (frame, field) in [
            (
                r#"{"id":1,"method":"BROADCAST","path":"/a","params":{"echo":"yes"},"body":1}"#,
                "params.echo",
            ),
            (
                r#"{"id":1,"method":"BROADCAST","path":"/a","params":{"echo":1},"body":1}"#,
                "params.echo",
            ),
            (
                r#"{"id":1,"method":"BROADCAST","path":"/a","params":{"echo":[true,true]},"body":1}"#,
                "params.echo",
            ),
            (
                r#"{"id":1,"method":"SUBSCRIBE","path":"/a","params":{"snapshot":"yes"}}"#,
                "params.snapshot",
            ),
        ] {
            let r = decode_request(frame).unwrap_err();
            assert_eq!(r.id, Some(FrameId::Number(1.into())), "{frame}");
            assert_eq!(r.error.field().as_deref(), Some(field), "{frame}");
            let v: Value = serde_json::from_str(&encode_rejection(&r)).unwrap();
            assert_eq!(
                (
                    v["status"].clone(),
                    v["body"]["error"].clone(),
                    v["body"]["field"].clone()
                ),
                (
                    serde_json::json!(400),
                    serde_json::json!("invalid_frame"),
                    serde_json::json!(field)
                ),
                "{frame}"
            );
        }
        // Booleans, or the same words as a URL writes them; absent is false.
        for (echo, expected) in [
            ("true", true),
            ("false", false),
            (r#""true""#, true),
            ("null", false),
        ] {
            let frame = format!(
                r#"{{"id":1,"method":"BROADCAST","path":"/a","params":{{"echo":{echo}}},"body":1}}"#
            );
            let f = decode_request(&frame).unwrap();
            assert!(
                matches!(f.command, Command::Broadcast { echo, .. } if echo == expected),
                "{echo}"
            );
        }
        assert!(
            decode_request(
                r#"{"id":1,"method":"SUBSCRIBE","path":"/a","params":{"snapshot":false}}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn carries_a_write_id() {
        let f = decode_request(r#"{"id":1,"method":"POST","path":"/a","body":{},"write_id":"w1"}"#)
            .unwrap();
        assert_eq!(f.write_id.as_deref(), Some("w1"));
        let f = decode_request(r#"{"id":1,"method":"GET","path":"/a"}"#).unwrap();
        assert_eq!(f.write_id, None);
        for frame in [
            r#"{"id":1,"method":"POST","path":"/a","write_id":""}"#,
            r#"{"id":1,"method":"POST","path":"/a","write_id":7}"#,
        ] {
            assert_eq!(
                decode_request(frame).unwrap_err().error,
                FrameError::BadWriteId,
                "{frame}"
            );
        }
        let long = format!(
            r#"{{"id":1,"method":"POST","path":"/a","write_id":"{}"}}"#,
            "w".repeat(129)
        );
        assert_eq!(
            decode_request(&long).unwrap_err().error,
            FrameError::BadWriteId
        );
    }

    #[test]
    fn rejects_with_the_id_when_readable() {
        let r = decode_request(r#"{"id":"a","method":"PATCH","path":"/x"}"#).unwrap_err();
        assert_eq!(r.id, Some(FrameId::Text("a".into())));
        assert_eq!(r.error, FrameError::BadMethod);
        let r = decode_request("{nope").unwrap_err();
        assert_eq!(r.id, None);
        assert!(matches!(r.error, FrameError::NotJson(_)));
        let r = decode_request(r#"{"id":1,"method":"GET","path":3}"#).unwrap_err();
        assert_eq!(r.error, FrameError::BadPath);
        let r =
            decode_request(r#"{"id":1,"method":"GET","path":"/a","params":{"q":{}}}"#).unwrap_err();
        assert_eq!(r.error, FrameError::BadParam("q".into()));
        let r = decode_request(r#"{"method":"GET","path":"/a"}"#).unwrap_err();
        assert_eq!(r.error, FrameError::BadId);
        let r = decode_request("[1]").unwrap_err();
        assert_eq!(r.error, FrameError::NotObject);
    }

    /// A frame serde_json will not read (nested past its recursion limit, or broken after the
    /// id) is still answered under its id, whatever its method and wherever the id stands.
    #[test]
    fn a_frame_too_deep_or_broken_is_rejected_under_its_id() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for method in ["GET", "POST", "SUBSCRIBE", "PRESENCE", "BROADCAST", "AUTH"] {
            for (frame, id) in [
                (
                    format!(r#"{{"id":"7","method":"{method}","path":"/users","body":{deep}}}"#),
                    FrameId::Text("7".into()),
                ),
                (
                    format!(
                        r#"{{"method":"{method}","params":{{"a":{deep}}},"id":8,"path":"/a"}}"#
                    ),
                    FrameId::Number(8.into()),
                ),
                (
                    format!(r#"{{"id":9,"method":"{method}","path":"/a","body":{{"#),
                    FrameId::Number(9.into()),
                ),
            ] {
                let r = decode_request(&frame).unwrap_err();
                assert_eq!(r.id, Some(id), "{method}");
                assert!(matches!(r.error, FrameError::NotJson(_)), "{:?}", r.error);
            }
        }
        let r = decode_request(&format!(r#"{{"id":{deep}}}"#)).unwrap_err();
        assert_eq!(r.id, None, "an id that is no string or number is no id");
    }

    #[test]
    fn encodes_frames() {
        let id = FrameId::Text("q\"1".into());
        assert_eq!(
            encode_response(Some(&id), 200, "{}"),
            r#"{"id":"q\"1","status":200,"body":{}}"#
        );
        let r = RejectedFrame {
            id: None,
            error: FrameError::Binary,
        };
        let v: Value = serde_json::from_str(&encode_rejection(&r)).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["status"], 400);
        assert_eq!(v["body"]["error"], "invalid_frame");
    }

    #[test]
    fn parses_query_strings() {
        let p = Params::from_query_string("ql=select+*+where+a%3D1&limit=2&flag");
        assert_eq!(p.get("ql"), Some("select * where a=1"));
        assert_eq!(p.get("flag"), Some(""));
    }
}
