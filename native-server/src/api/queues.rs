//! Usergrid's message queues (`/queues/{path}`): post, read by consumer with transactions,
//! commit, and subscriber queues that receive copies.

use super::entities::MAX_LIMIT;
use super::envelope::{Body, Reply};
use super::{Api, ApiError, Caller, now_ms};
use crate::store::{AppRecord, QueueRead};
use gridsocket_core::route::QueueRoute;
use gridsocket_core::{ApiRequest, Method, ResourcePath};
use serde_json::{Map, Value, json};

/// Most subscriber queues one queue may have: each post is copied to every one.
pub const MAX_SUBSCRIBERS: usize = 100;
/// Most messages one post may write, copies to subscriber queues included.
pub const MAX_COPIES: usize = 10_000;

/// Longest transaction timeout a queue read may ask for, ms (a day): larger numbers would
/// overflow the store's time arithmetic and mean "never" anyway.
pub const MAX_QUEUE_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// A queue read's `timeout` parameter, ms: absent is `default`, and a value is a whole number
/// up to [`MAX_QUEUE_TIMEOUT_MS`].
pub fn queue_timeout(param: Option<&str>, default: u64) -> Result<u64, ApiError> {
    let Some(text) = param else {
        return Ok(default);
    };
    text.parse::<u64>()
        .ok()
        .filter(|t| *t <= MAX_QUEUE_TIMEOUT_MS)
        .ok_or_else(|| {
            ApiError::IllegalArgument(format!(
                "timeout must be a whole number of ms from 0 to {MAX_QUEUE_TIMEOUT_MS}, got {text:?}"
            ))
        })
}

impl Api {
    /// Runs one queue operation.
    pub(super) async fn queue_call(
        &self,
        app: &AppRecord,
        caller: &Caller,
        request: &ApiRequest,
        route: QueueRoute,
    ) -> Reply {
        let body = match route {
            QueueRoute::List => {
                let queues = self.store.queues(&app.uuid).await?;
                let list: Vec<Value> = queues.into_iter().map(|q| json!({"path": q})).collect();
                json!({"path": "/queues", "queues": list})
            }
            QueueRoute::Post { queue } => self.queue_post(app, &queue, request).await?,
            QueueRoute::Read { queue } => self.queue_read(app, &queue, request).await?,
            QueueRoute::Commit {
                queue,
                transaction: id,
            } => {
                if !self.store.queue_commit(&app.uuid, &queue, &id).await? {
                    return Err(ApiError::NotFound(format!(
                        "transaction {id} not found: already committed, or timed out and redelivered"
                    )));
                }
                json!({"path": queue, "transaction": id})
            }
            QueueRoute::Subscribers { queue } => {
                let subs = self.store.queue_subscribers(&app.uuid, &queue).await?;
                json!({"path": queue, "subscribers": subs})
            }
            QueueRoute::Subscribe {
                queue,
                subscriber: other,
            } => self.queue_subscribe(app, caller, &queue, &other).await?,
            QueueRoute::Unsubscribe {
                queue,
                subscriber: other,
            } => {
                if !self
                    .store
                    .queue_subscribe(&app.uuid, &queue, &other, false)
                    .await?
                {
                    return Err(ApiError::NotFound(format!(
                        "{other} does not subscribe to {queue}"
                    )));
                }
                json!({"path": queue, "subscriber": other})
            }
        };
        Ok((200, Body::Json(body)))
    }

    /// Posts one message or an array of them, copied to every subscriber queue.
    async fn queue_post(
        &self,
        app: &AppRecord,
        queue: &str,
        request: &ApiRequest,
    ) -> Result<Value, ApiError> {
        let messages: Vec<Map<String, Value>> = match &request.body {
            Some(Value::Object(m)) => vec![m.clone()],
            Some(Value::Array(items)) if items.len() <= MAX_LIMIT => items
                .iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(m.clone()),
                    _ => Err(ApiError::BadBody(
                        "every message must be a JSON object".into(),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(ApiError::IllegalArgument(format!(
                    "at most {MAX_LIMIT} messages per request"
                )));
            }
            _ => {
                return Err(ApiError::BadBody(
                    "post a JSON object or an array of objects".into(),
                ));
            }
        };
        let subscribers = self.store.queue_subscribers(&app.uuid, queue).await?;
        let copies = messages.len() * (1 + subscribers.len());
        if copies > MAX_COPIES {
            return Err(ApiError::IllegalArgument(format!(
                "this post would write {copies} messages with its {} subscriber queues; at most {MAX_COPIES}",
                subscribers.len()
            )));
        }
        let posted = self
            .store
            .queue_post(&app.uuid, queue, &messages, now_ms())
            .await?;
        Ok(json!({"path": queue, "count": posted.len(), "messages": posted}))
    }

    /// Reads from the start (`pos=start`) or as a consumer, whose read opens a transaction
    /// per message when it asks for a `timeout`.
    async fn queue_read(
        &self,
        app: &AppRecord,
        queue: &str,
        request: &ApiRequest,
    ) -> Result<Value, ApiError> {
        let limit = match request.params.get("limit") {
            None => 10,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    ApiError::IllegalArgument("limit must be a positive whole number".into())
                })?
                .min(MAX_LIMIT),
        };
        let consumer = request.params.get("consumer").filter(|c| !c.is_empty());
        let read = match (consumer, request.params.get("pos")) {
            (Some(c), _) => QueueRead::Consumer {
                consumer: c.to_owned(),
                timeout_ms: queue_timeout(request.params.get("timeout"), 0)?,
            },
            (None, Some("start")) => QueueRead::Start,
            _ => {
                return Err(ApiError::IllegalArgument(
                    "You must specify a valid position or query: consumer=ID or pos=start".into(),
                ));
            }
        };
        let messages: Vec<Value> = self
            .store
            .queue_read(&app.uuid, queue, &read, limit, now_ms())
            .await?
            .into_iter()
            .map(|m| m.message)
            .collect();
        let last = messages.last().map(|m| m["uuid"].clone());
        let mut body = json!({"path": queue, "messages": messages});
        if let Some(last) = last {
            body["last"] = last;
        }
        if let Some(c) = consumer {
            body["consumer"] = Value::String(c.to_owned());
        }
        Ok(body)
    }

    /// Makes `other` a subscriber of `queue`: every later post to `queue` is copied there.
    async fn queue_subscribe(
        &self,
        app: &AppRecord,
        caller: &Caller,
        queue: &str,
        other: &str,
    ) -> Result<Value, ApiError> {
        if other == queue || other == "/" {
            return Err(ApiError::IllegalArgument(
                "a queue cannot subscribe to itself or to /".into(),
            ));
        }
        // Copies of what is posted to `queue` go into `other`: that needs the right to read
        // `queue` (the copies show its messages) and to post to `other`.
        let source = ResourcePath::parse(&format!("/queues{queue}"))?;
        self.check_access(app, caller, Method::Get, &source).await?;
        let target = ResourcePath::parse(&format!("/queues{other}"))?;
        self.check_access(app, caller, Method::Post, &target)
            .await?;
        let now = self.store.queue_subscribers(&app.uuid, queue).await?;
        if now.len() >= MAX_SUBSCRIBERS && !now.iter().any(|s| s == other) {
            return Err(ApiError::IllegalArgument(format!(
                "{queue} has {MAX_SUBSCRIBERS} subscriber queues, the most one queue may have"
            )));
        }
        self.store
            .queue_subscribe(&app.uuid, queue, other, true)
            .await?;
        Ok(json!({"path": queue, "subscriber": other}))
    }
}
