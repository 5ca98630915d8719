//! Assets: an entity's binary data, as Usergrid keeps it. A multipart `POST` or `PUT` whose
//! form has a `file` part writes the entity (the other fields are its properties) and stores
//! the bytes with it, in the store, so every node serves them; the entity's `file-metadata`
//! describes them (`content-type`, `content-length`, `checksum`, `etag`, `last-modified`). A
//! REST `GET` of the entity that asks for another type than JSON gets the bytes. Access is the
//! entity's. Over the socket, `file-metadata` is a property like any other; the bytes are REST
//! only.

use super::envelope::Body;
use super::{Api, ApiError, ApiResponse, now_ms};
use crate::api::auth::Credentials;
use crate::store::{Asset, EntityKey};
use gridsocket_core::path::{Resource, split_segments};
use gridsocket_core::{ApiRequest, Method, Params, ResourcePath};
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

/// The `file` part of a multipart upload.
#[derive(Clone, Debug)]
pub struct Upload {
    /// Its content type (`application/octet-stream` when the part names none).
    pub content_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// An entity's asset, for a REST answer.
#[derive(Clone, Debug)]
pub struct AssetReply {
    /// Its content type.
    pub content_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Its entity tag (the MD5 of the bytes, hex).
    pub etag: String,
    /// When it was stored, ms since the epoch.
    pub last_modified: i64,
}

/// What `file-metadata` says of `data`.
fn file_metadata(content_type: &str, data: &[u8], now: i64) -> Value {
    let digest = Md5::digest(data);
    let mut hex = String::with_capacity(32);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    json!({
        "content-type": content_type,
        "content-length": data.len(),
        "checksum": hex,
        "etag": hex,
        "last-modified": now,
    })
}

impl Api {
    /// A multipart `POST` or `PUT` of an entity: `fields` are its properties, `file` its
    /// asset. Answers what the JSON request would, with the entity's new `file-metadata`.
    #[allow(clippy::too_many_arguments)]
    pub async fn handle_upload(
        &self,
        method: Method,
        path: &str,
        params: Params,
        fields: Map<String, Value>,
        file: Option<Upload>,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> ApiResponse {
        let started = Instant::now();
        let result = self
            .upload(method, path, params, fields, file, authorization, peer)
            .await;
        self.respond(result, started)
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        method: Method,
        path: &str,
        params: Params,
        fields: Map<String, Value>,
        file: Option<Upload>,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> super::envelope::Reply {
        if let Some(f) = &file
            && f.data.len() > self.config.max_asset_bytes
        {
            return Err(ApiError::EntityTooLarge {
                size: f.data.len(),
                limit: self.config.max_asset_bytes,
            });
        }
        let segments = split_segments(path)?;
        if segments.first().map(String::as_str) == Some("management") {
            return Err(ApiError::NoSuchResource(
                "assets belong to entities of an application".into(),
            ));
        }
        let creds = Credentials::from_request(&params, authorization);
        let (app, caller, path) = self.rest_caller(path, &segments, &creds, peer).await?;
        let request = ApiRequest {
            method,
            path,
            params,
            body: Some(Value::Object(fields)),
        };
        // The entity is written as the JSON request would write it, with its access checks.
        let (status, body) = self.app_call(&app, &caller, &request).await?;
        let (Some(file), Body::Envelope(mut env)) = (file, body) else {
            return Err(ApiError::BadBody(
                "an upload is a multipart form with a `file` part, to an entity".into(),
            ));
        };
        let uuid = match env.entities.as_deref() {
            Some([one]) => one["uuid"].as_str().unwrap_or_default().to_owned(),
            _ => {
                return Err(ApiError::IllegalArgument(
                    "an asset belongs to one entity: upload to a collection or an entity".into(),
                ));
            }
        };
        let mut entity = self
            .store
            .entity(&app.uuid, None, EntityKey::Uuid(&uuid))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{uuid} not found")))?;
        let now = now_ms();
        entity.data.insert(
            "file-metadata".into(),
            file_metadata(&file.content_type, &file.data, now),
        );
        entity.data.insert("modified".into(), now.into());
        let asset = Asset {
            content_type: file.content_type,
            data: file.data,
        };
        if !self.store.put_asset(&app.uuid, &entity, &asset).await? {
            return Err(ApiError::NotFound(format!("{uuid} not found")));
        }
        self.signal(crate::signal::Signal::Changed {
            app: app.uuid.clone(),
        });
        env.entities = None;
        let env = self.with_entities(&app, *env, vec![entity]).await?;
        Ok((status, Body::Envelope(Box::new(env))))
    }

    /// The asset of the entity a REST `GET` names, checked as a `GET` of the entity. `Ok(None)`:
    /// the path names no single entity, or it has no asset: the JSON answer stands.
    pub async fn asset_of(
        &self,
        path: &str,
        params: &Params,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Option<AssetReply>, ApiResponse> {
        let started = Instant::now();
        let found = async {
            let segments = split_segments(path)?;
            if segments.first().map(String::as_str) == Some("management") {
                return Ok(None);
            }
            let creds = Credentials::from_request(params, authorization);
            let (app, caller, inside) = self.rest_caller(path, &segments, &creds, peer).await?;
            let parsed = ResourcePath::parse(&inside)?;
            let Resource::Entity { collection, entity } = &parsed.resource else {
                return Ok(None);
            };
            if parsed.matrix.is_some() {
                return Ok(None);
            }
            self.check_access(&app, &caller, Method::Get, &parsed)
                .await?;
            let key = super::entities::key_of(&caller, entity)?;
            let entity = self.load(&app, collection, &key).await?;
            let Some(asset) = self.store.asset(&app.uuid, &entity.uuid).await? else {
                return Ok(None);
            };
            let meta = entity.data.get("file-metadata");
            let etag = meta
                .and_then(|m| m.get("etag"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| entity.uuid.clone());
            let last_modified = meta
                .and_then(|m| m.get("last-modified"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            Ok(Some(AssetReply {
                content_type: asset.content_type,
                data: asset.data,
                etag,
                last_modified,
            }))
        };
        found
            .await
            .map_err(|e: ApiError| self.error_response(e, started))
    }
}

#[cfg(test)]
mod tests {
    use super::file_metadata;

    #[test]
    fn file_metadata_describes_the_bytes() {
        let m = file_metadata("image/jpeg", b"hello", 7);
        assert_eq!(m["content-type"], "image/jpeg");
        assert_eq!(m["content-length"], 5);
        assert_eq!(m["checksum"], "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(m["etag"], m["checksum"]);
        assert_eq!(m["last-modified"], 7);
    }
}
