//! Assets over HTTP: reading a multipart upload's form, deciding whether a `GET` asks for an
//! entity's bytes rather than its JSON, and answering with them (`Range`, `If-None-Match`).

use crate::api::{AssetReply, Upload};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value};
use std::time::{Duration, UNIX_EPOCH};

/// Room a multipart form takes beyond its file: boundaries, part headers, small fields.
pub const FORM_OVERHEAD: usize = 64 * 1024;

/// The boundary of a `multipart/form-data` body, if the content type says it is one.
pub fn form_boundary(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?;
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    multer::parse_boundary(ct).ok()
}

/// Reads a multipart form: its `file` part is the upload, every other part a property
/// (text; a part that is JSON is read as JSON).
pub async fn read_form(
    body: Bytes,
    boundary: String,
) -> Result<(Map<String, Value>, Option<Upload>), String> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    let mut file = None;
    loop {
        let part = match form.next_field().await {
            Ok(Some(part)) => part,
            Ok(None) => break,
            Err(e) => return Err(format!("the multipart form cannot be read: {e}")),
        };
        let name = part.name().unwrap_or_default().to_owned();
        let content_type = part.content_type().map(|m| m.essence_str().to_owned());
        let data = part
            .bytes()
            .await
            .map_err(|e| format!("the multipart form cannot be read: {e}"))?;
        if name == "file" {
            file = Some(Upload {
                content_type: content_type.unwrap_or_else(|| "application/octet-stream".into()),
                data: data.to_vec(),
            });
            continue;
        }
        let text = String::from_utf8(data.to_vec())
            .map_err(|_| format!("the form field {name:?} is not UTF-8 text"))?;
        let value = match content_type.as_deref() {
            Some("application/json") => serde_json::from_str(&text)
                .map_err(|e| format!("the form field {name:?} is not valid JSON: {e}"))?,
            _ => Value::String(text),
        };
        fields.insert(name, value);
    }
    Ok((fields, file))
}

/// True when a `GET`'s `Accept` prefers something other than JSON (an `<img>`'s
/// `image/avif,…,*/*`, an SDK's `image/jpeg`): then an entity with an asset answers with its
/// bytes. No `Accept`, `*/*` or JSON first keeps the JSON answer.
pub fn wants_bytes(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    // The first type of the highest quality.
    let mut best: Option<(f32, &str)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let kind = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if !kind.is_empty() && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, kind));
        }
    }
    match best {
        Some((_, kind)) => {
            let kind = kind.to_ascii_lowercase();
            !matches!(
                kind.as_str(),
                "*/*" | "application/*" | "application/json" | "application/javascript"
            )
        }
        None => false,
    }
}

/// True for the types a browser opens as a document that can run script: HTML, and XML of
/// any kind (XHTML and SVG are `+xml`).
fn renders_as_page(content_type: &str) -> bool {
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(kind.as_str(), "text/html" | "text/xml" | "application/xml") || kind.ends_with("+xml")
}

/// The answer carrying an asset: all of it, the range asked for (206, or 416), or 304 when
/// the client's copy is current.
pub fn response(asset: AssetReply, request: &HeaderMap) -> Response<Full<Bytes>> {
    let etag = format!("\"{}\"", asset.etag);
    let modified =
        UNIX_EPOCH + Duration::from_millis(u64::try_from(asset.last_modified).unwrap_or(0));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified))
        .header(header::ACCEPT_RANGES, "bytes")
        // Any user may upload a file of any type, and it is served from the API's origin, which
        // is the demo's and may be an app's: a page uploaded as HTML or SVG must not run there
        // with the origin's storage (its tokens). Sandboxed, a document is of no origin and runs
        // no script; `nosniff` keeps the type the uploader declared from being guessed at.
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if renders_as_page(&asset.content_type) {
        // Browsers without CSP's sandbox would still run it: these download instead.
        builder = builder.header(header::CONTENT_DISPOSITION, "attachment");
    }
    if fresh {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default();
    }
    let len = asset.data.len();
    let content_type = HeaderValue::from_str(&asset.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    builder = builder.header(header::CONTENT_TYPE, content_type);
    let range = request
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| byte_range(r, len));
    match range {
        None => builder
            .status(StatusCode::OK)
            .body(Full::new(Bytes::from(asset.data)))
            .unwrap_or_default(),
        Some(Some((start, end))) => {
            let part = Bytes::from(asset.data).slice(start..=end);
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
                .body(Full::new(part))
                .unwrap_or_default()
        }
        Some(None) => builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Full::new(Bytes::new()))
            .unwrap_or_default(),
    }
}

/// The inclusive byte range a `Range` header asks of `len` bytes (one range: `bytes=a-b`,
/// `bytes=a-`, `bytes=-n`); `None` when it asks for none of them.
fn byte_range(header: &str, len: usize) -> Option<(usize, usize)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (from, to) = spec.split_once('-')?;
    let (from, to) = (from.trim(), to.trim());
    let last = len - 1;
    match (from.is_empty(), to.is_empty()) {
        (true, false) => {
            let n: usize = to.parse().ok()?;
            (n > 0).then(|| (len.saturating_sub(n), last))
        }
        (false, _) => {
            let start: usize = from.parse().ok()?;
            let end = if to.is_empty() {
                last
            } else {
                to.parse::<usize>().ok()?.min(last)
            };
            (start <= end).then_some((start, end))
        }
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_wanted_when_something_else_comes_first() {
        assert!(wants_bytes(Some("image/jpeg")));
        assert!(wants_bytes(Some("image/avif,image/webp,*/*;q=0.8")));
        assert!(wants_bytes(Some("application/octet-stream")));
        assert!(!wants_bytes(None));
        assert!(!wants_bytes(Some("*/*")));
        assert!(!wants_bytes(Some("application/json, text/plain, */*")));
        assert!(!wants_bytes(Some("text/html;q=0.5, application/json")));
    }

    #[test]
    fn ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(byte_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(byte_range("bytes=-200", 100), Some((0, 99)));
        assert_eq!(byte_range("bytes=100-", 100), None);
        assert_eq!(byte_range("bytes=5-2", 100), None);
        assert_eq!(byte_range("bytes=0-1,5-6", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
        assert_eq!(byte_range("bytes=18446744073709551616-", 100), None);
    }
}
