//! The Usergrid response envelope and error body, rendered once as JSON text so that REST and
//! the socket send the same bytes.

use super::error::ApiError;
use crate::store::{AppRecord, Direction, Entity};
use gridsocket_core::Params;
use serde::Serialize;
use serde_json::{Map, Value};

/// A response body: the Usergrid envelope, or plain JSON (token grants).
pub(crate) enum Body {
    Envelope(Box<Envelope>),
    Json(Value),
}

pub(crate) type Reply = Result<(u16, Body), ApiError>;

/// Query parameters that are never echoed back (Usergrid's `IGNORE_QP`).
const HIDDEN_PARAMS: &[&str] = &[
    "client_id",
    "client_secret",
    "password",
    "username",
    "access_token",
    "client_credentials",
    "fb_access_token",
    "fq_access_token",
    "ping_access_token",
    "token",
];

/// The `params` echo: each name with its values, secrets left out.
pub fn params_echo(params: &Params) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in params.iter() {
        if HIDDEN_PARAMS.contains(&name) {
            continue;
        }
        let slot = out
            .entry(name.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = slot {
            values.push(Value::String(value.to_owned()));
        }
    }
    out
}

/// A success response, Usergrid field order.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// `get`, `post`, `put`, `delete` or a special action.
    pub action: String,
    /// The application's uuid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// The echoed query parameters.
    pub params: Map<String, Value>,
    /// The path inside the application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The full URI of the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The entities read or written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<Value>>,
    /// Rows of a `select a, b` query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<Value>>,
    /// Non-entity results (permissions, management data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Client credentials, on the endpoints that reveal them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Value>,
    /// When the response was made, ms since the epoch.
    pub timestamp: i64,
    /// How long the request took, ms.
    pub duration: u64,
    /// The organization's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The application's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Where the next page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// How many entities a collection read returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

impl Envelope {
    /// An envelope for a call inside an application.
    pub fn for_app(
        action: &str,
        app: &AppRecord,
        base_url: &str,
        path: &str,
        params: &Params,
    ) -> Envelope {
        Envelope {
            action: action.to_owned(),
            application: Some(app.uuid.clone()),
            params: params_echo(params),
            path: Some(path.to_owned()),
            uri: Some(format!("{base_url}/{}/{}{path}", app.org_name, app.name)),
            organization: Some(app.org_name.clone()),
            application_name: Some(app.name.clone()),
            ..Envelope::default()
        }
    }
}

/// An entity as the API shows it: its properties plus `metadata` with its path.
pub fn render_entity(entity: Entity, access_path: &str) -> Value {
    render_entity_with(entity, access_path, &[])
}

/// Relations that are collections of their owner (`metadata.collections`), not connections.
const COLLECTION_RELATIONS: &[&str] =
    &["users", "groups", "roles", "devices", "activities", "feed"];

/// An entity with `metadata.connections` and `metadata.connecting` too, as Usergrid's
/// `importEntity` shows them: for each verb leading out of it (`relations`' outbound names)
/// or into it, the path that lists those entities.
pub(crate) fn render_entity_with(
    entity: Entity,
    access_path: &str,
    relations: &[(Direction, &str)],
) -> Value {
    let self_path = [access_path, "/", &entity.uuid].concat();
    let verbs = |direction: Direction, infix: &str| -> Option<Value> {
        let map: Map<String, Value> = relations
            .iter()
            .filter(|(d, r)| *d == direction && !COLLECTION_RELATIONS.contains(r))
            .map(|(_, r)| {
                (
                    (*r).to_owned(),
                    Value::String([&self_path, infix, r].concat()),
                )
            })
            .collect();
        (!map.is_empty()).then_some(Value::Object(map))
    };
    let connections = verbs(Direction::Outbound, "/");
    let connecting = verbs(Direction::Inbound, "/connecting/");
    let mut out = render(entity, self_path);
    if let Some(Value::Object(metadata)) = out.get_mut("metadata") {
        if let Some(c) = connections {
            metadata.insert("connections".into(), c);
        }
        if let Some(c) = connecting {
            metadata.insert("connecting".into(), c);
        }
    }
    out
}

fn render(entity: Entity, self_path: String) -> Value {
    let mut out = entity.data;
    let mut metadata = Map::new();
    let collections: &[&str] = match entity.collection.as_str() {
        "users" => &[
            "activities",
            "devices",
            "feed",
            "groups",
            "roles",
            "following",
            "followers",
        ],
        "groups" => &["activities", "feed", "roles", "users"],
        "roles" => &["groups", "users"],
        _ => &[],
    };
    if !collections.is_empty() {
        let map: Map<String, Value> = collections
            .iter()
            .map(|c| {
                (
                    (*c).to_owned(),
                    Value::String([&self_path, "/", c].concat()),
                )
            })
            .collect();
        metadata.insert("collections".into(), Value::Object(map));
    }
    metadata.insert("path".into(), Value::String(self_path));
    out.insert("metadata".into(), Value::Object(metadata));
    Value::Object(out)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
    /// Seconds to wait before retrying (`Retry-After` over REST), when the error has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    timestamp: i64,
    duration: u64,
}

/// The Usergrid error body for an error, as JSON text.
pub fn error_json(err: &ApiError, timestamp: i64, duration: u64) -> String {
    serde_json::to_string(&ErrorBody {
        error: err.code(),
        error_description: err.description(),
        retry_after: err.retry_after(),
        timestamp,
        duration,
    })
    .unwrap_or_else(|_| String::from(r#"{"error":"internal_error"}"#))
}
