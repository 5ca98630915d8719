//! The client's side of the wire: request frames written as JSON text, server frames read
//! without building JSON trees (bodies and entities stay raw text for the host to hand on).
//!
//! Kept apart from [`crate::wire`] (the server's decoder) because the browser client carries
//! this code: it reads only the fields it acts on, with [`crate::json`], not `serde_json`.

use crate::json::{as_bool, as_str, as_u64, get, members};
use std::borrow::Cow;

/// A frame from the server, as far as the client reads it. Raw values are JSON text.
pub(crate) struct ServerFrame<'a> {
    /// The request id a response answers; `None` for frames about the connection.
    pub(crate) id: Option<u64>,
    /// The status of a response.
    pub(crate) status: Option<u16>,
    /// The body of a response.
    pub(crate) body: Option<&'a str>,
    /// The kind of an event (`create`, …, `revoked`).
    pub(crate) event: Option<Cow<'a, str>>,
    /// The server's id of the subscription an event belongs to.
    pub(crate) subscription: Option<Cow<'a, str>>,
    /// An event's log position.
    pub(crate) seq: Option<u64>,
    /// An event's entity.
    pub(crate) entity: Option<&'a str>,
    /// Why a subscription or a presence was revoked.
    pub(crate) reason: Option<Cow<'a, str>>,
    /// The name of the presence a `revoked` event ends.
    pub(crate) presence: Option<Cow<'a, str>>,
    /// The presence name of a `presence` or `broadcast` event.
    pub(crate) path: Option<Cow<'a, str>>,
    /// A `presence` event's change: `join`, `leave` or `update`.
    pub(crate) kind: Option<Cow<'a, str>>,
    /// The numbering a `presence` event's `seq` counts in.
    pub(crate) epoch: Option<Cow<'a, str>>,
    /// A `presence` event's user, `{"uuid","username"}`.
    pub(crate) user: Option<&'a str>,
    /// A `presence` event's connections of the user after the change.
    pub(crate) connections: Option<&'a str>,
    /// A `broadcast` event's sender, `{"uuid","username"}`.
    pub(crate) from: Option<&'a str>,
}

impl<'a> ServerFrame<'a> {
    /// Reads a frame; `None` if it is not a JSON object.
    pub(crate) fn read(text: &'a str) -> Option<ServerFrame<'a>> {
        let m = members(text)?;
        Some(ServerFrame {
            id: get(&m, "id").and_then(as_u64),
            status: get(&m, "status")
                .and_then(as_u64)
                .map(|s| u16::try_from(s).unwrap_or(500)),
            body: get(&m, "body"),
            event: get(&m, "event").and_then(as_str),
            subscription: get(&m, "subscription").and_then(as_str),
            seq: get(&m, "seq").and_then(as_u64),
            entity: get(&m, "entity"),
            reason: get(&m, "reason").and_then(as_str),
            presence: get(&m, "presence").and_then(as_str),
            path: get(&m, "path").and_then(as_str),
            kind: get(&m, "kind").and_then(as_str),
            epoch: get(&m, "epoch").and_then(as_str),
            user: get(&m, "user"),
            connections: get(&m, "connections"),
            from: get(&m, "from"),
        })
    }
}

/// The fields of a response body the client acts on (greeting, subscription, `AUTH`, errors,
/// a presence's snapshot).
#[derive(Default)]
pub(crate) struct BodyFields<'a> {
    pub(crate) subscription: Option<Cow<'a, str>>,
    pub(crate) seq: Option<u64>,
    pub(crate) recovered: Option<bool>,
    pub(crate) snapshot: Option<&'a str>,
    pub(crate) user: Option<Cow<'a, str>>,
    pub(crate) expires_in: Option<u64>,
    pub(crate) error: Option<Cow<'a, str>>,
    pub(crate) max_in_flight: Option<u64>,
    pub(crate) max_frame_bytes: Option<u64>,
    /// A subscription's presence name (broadcasts to its path carry it).
    pub(crate) name: Option<Cow<'a, str>>,
    /// A presence snapshot's name, numbering and users.
    pub(crate) path: Option<Cow<'a, str>>,
    pub(crate) epoch: Option<Cow<'a, str>>,
    pub(crate) users: Option<&'a str>,
}

impl<'a> BodyFields<'a> {
    /// Reads a body; one that is not an object reads as no fields.
    pub(crate) fn of(body: Option<&'a str>) -> BodyFields<'a> {
        let Some(m) = body.and_then(members) else {
            return BodyFields::default();
        };
        BodyFields {
            subscription: get(&m, "subscription").and_then(as_str),
            seq: get(&m, "seq").and_then(as_u64),
            recovered: get(&m, "recovered").and_then(as_bool),
            snapshot: get(&m, "snapshot"),
            user: get(&m, "user").and_then(as_str),
            expires_in: get(&m, "expires_in").and_then(as_u64),
            error: get(&m, "error").and_then(as_str),
            max_in_flight: get(&m, "max_in_flight").and_then(as_u64),
            max_frame_bytes: get(&m, "max_frame_bytes").and_then(as_u64),
            name: get(&m, "name").and_then(as_str),
            path: get(&m, "path").and_then(as_str),
            epoch: get(&m, "epoch").and_then(as_str),
            users: get(&m, "users"),
        }
    }
}

/// True when `entity` is a queue message delivered in a transaction (a delivery may repeat).
pub(crate) fn is_delivery(entity: &str) -> bool {
    members(entity).is_some_and(|m| get(&m, "transaction").is_some_and(|t| t != "null"))
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a whole number.
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
}

/// The members of a JSON object's text without its braces (`{"a":1}` → `"a":1`), or `None`
/// for an empty object or text that is not an object.
pub(crate) fn object_members(object: &str) -> Option<&str> {
    let inner = object.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    (!inner.is_empty()).then_some(inner)
}

/// Starts a request frame: `{"id":N,"method":"M"`.
pub(crate) fn start_frame(id: u64, method: &str) -> String {
    let mut f = String::with_capacity(96);
    f.push_str("{\"id\":");
    push_u64(&mut f, id);
    f.push_str(",\"method\":");
    push_str(&mut f, method);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_json_strings_and_numbers() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\n\u{1}é");
        let mut n = String::new();
        push_u64(&mut n, 0);
        push_u64(&mut n, 18446744073709551615);
        assert_eq!(n, "018446744073709551615");
        assert_eq!(object_members(" { \"a\" : 1 } "), Some("\"a\" : 1"));
        assert_eq!(object_members("{ }"), None);
        assert_eq!(object_members("[1]"), None);
    }

    #[test]
    fn reads_frames_without_trees() {
        let f = ServerFrame::read(
            r#"{"id":3,"status":200,"body":{"subscription":"s1","seq":5,"snapshot":{"count":1},"extra":[1,{"x":2.5}]}}"#,
        )
        .unwrap();
        assert_eq!(f.id, Some(3));
        let b = BodyFields::of(f.body);
        assert_eq!(b.subscription.as_deref(), Some("s1"));
        assert_eq!(b.seq, Some(5));
        assert_eq!(b.snapshot, Some(r#"{"count":1}"#));
        let e = ServerFrame::read(
            r#"{"event":"create","subscription":"s\u0031","path":"/a","seq":9,"entity":{"transaction":"t"}}"#,
        )
        .unwrap();
        assert_eq!(e.subscription.as_deref(), Some("s1"));
        assert!(is_delivery(e.entity.unwrap()));
        assert!(!is_delivery(r#"{"transaction":null}"#));
        let n = ServerFrame::read(r#"{"id":null,"status":401,"body":"text"}"#).unwrap();
        assert_eq!(n.id, None);
        assert_eq!(BodyFields::of(n.body).error, None);
        assert!(ServerFrame::read("[1]").is_none());
    }
}
