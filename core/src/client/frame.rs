//! The client's side of the wire: request frames written as JSON text, server frames read
//! without building JSON trees (bodies and entities stay raw text for the host to hand on).
//!
//! Kept apart from [`crate::wire`] (the server's decoder) because the browser client carries
//! this code: it reads only the fields it acts on, and never serializes a `serde_json::Value`.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A frame from the server, as far as the client reads it.
#[derive(Deserialize)]
pub(crate) struct ServerFrame<'a> {
    /// The request id a response answers; `null` for frames about the connection.
    #[serde(default)]
    pub(crate) id: Option<u64>,
    /// The status of a response.
    #[serde(default)]
    pub(crate) status: Option<u16>,
    /// The body of a response.
    #[serde(default, borrow)]
    pub(crate) body: Option<&'a RawValue>,
    /// The kind of an event (`create`, …, `revoked`).
    #[serde(default, borrow)]
    pub(crate) event: Option<Cow<'a, str>>,
    /// The server's id of the subscription an event belongs to.
    #[serde(default, borrow)]
    pub(crate) subscription: Option<Cow<'a, str>>,
    /// An event's log position.
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    /// An event's entity.
    #[serde(default, borrow)]
    pub(crate) entity: Option<&'a RawValue>,
    /// Why a subscription was revoked.
    #[serde(default, borrow)]
    pub(crate) reason: Option<Cow<'a, str>>,
}

/// The fields of a response body the client acts on (greeting, subscription, `AUTH`, errors).
#[derive(Deserialize, Default)]
pub(crate) struct BodyFields<'a> {
    #[serde(default, borrow)]
    pub(crate) subscription: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    #[serde(default)]
    pub(crate) recovered: Option<bool>,
    #[serde(default, borrow)]
    pub(crate) snapshot: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) user: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
    #[serde(default, borrow)]
    pub(crate) error: Option<Cow<'a, str>>,
}

impl<'a> BodyFields<'a> {
    /// Reads a body; one that is not an object reads as no fields.
    pub(crate) fn of(body: Option<&'a RawValue>) -> BodyFields<'a> {
        body.and_then(|b| serde_json::from_str(b.get()).ok())
            .unwrap_or_default()
    }
}

/// Whether an entity carries a queue `transaction` (a delivery that may repeat).
#[derive(Deserialize)]
pub(crate) struct Delivery {
    #[serde(default)]
    transaction: Option<serde::de::IgnoredAny>,
}

impl Delivery {
    /// True when `entity` is a queue message delivered in a transaction.
    pub(crate) fn is_delivery(entity: &RawValue) -> bool {
        serde_json::from_str::<Delivery>(entity.get()).is_ok_and(|d| d.transaction.is_some())
    }
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
        let f: ServerFrame<'_> = serde_json::from_str(
            r#"{"id":3,"status":200,"body":{"subscription":"s1","seq":5,"snapshot":{"count":1},"extra":[1,{"x":2.5}]}}"#,
        )
        .unwrap();
        assert_eq!(f.id, Some(3));
        let b = BodyFields::of(f.body);
        assert_eq!(b.subscription.as_deref(), Some("s1"));
        assert_eq!(b.seq, Some(5));
        assert_eq!(b.snapshot.map(RawValue::get), Some(r#"{"count":1}"#));
        let e: ServerFrame<'_> = serde_json::from_str(
            r#"{"event":"create","subscription":"s\u0031","path":"/a","seq":9,"entity":{"transaction":"t"}}"#,
        )
        .unwrap();
        assert_eq!(e.subscription.as_deref(), Some("s1"));
        assert!(Delivery::is_delivery(e.entity.unwrap()));
        let n: ServerFrame<'_> =
            serde_json::from_str(r#"{"id":null,"status":401,"body":"text"}"#).unwrap();
        assert_eq!(n.id, None);
        assert_eq!(BodyFields::of(n.body).error, None);
    }
}
