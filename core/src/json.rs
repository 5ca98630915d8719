//! A small JSON reader: the members of an object as raw text, and the few scalars the client
//! acts on.
//!
//! The browser client carries this instead of `serde_json`: it builds no trees and formats
//! no errors, which keeps the `.wasm` small (serde's error messages alone pull in float
//! formatting). Raw values are checked to be well-formed JSON, so the host can hand them to
//! `JSON.parse` as they are. The tests compare it with `serde_json`.
//!
//! The server's frame decoder uses [`first_member`] to find the `id` of a frame `serde_json`
//! refuses, so that even that frame is answered under its id.

use std::borrow::Cow;

/// How deep arrays and objects may nest inside a frame.
const MAX_DEPTH: usize = 128;

/// The members of a JSON object, in order: each key (unescaped) with its value as raw text.
/// `None` if `text` is not exactly one well-formed JSON object.
pub(crate) fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut r = Reader { s: text, i: 0 };
    r.ws();
    r.eat(b'{')?;
    let mut out = Vec::new();
    r.ws();
    if r.eat(b'}').is_none() {
        loop {
            r.ws();
            let key = r.string()?;
            r.ws();
            r.eat(b':')?;
            r.ws();
            let start = r.i;
            r.value(0)?;
            out.push((key, &text[start..r.i]));
            r.ws();
            if r.eat(b',').is_some() {
                continue;
            }
            r.eat(b'}')?;
            break;
        }
    }
    r.ws();
    (r.i == text.len()).then_some(out)
}

/// The elements of a JSON array, in order, each as raw text. `None` if `text` is not exactly
/// one well-formed JSON array.
pub(crate) fn elements(text: &str) -> Option<Vec<&str>> {
    let mut r = Reader { s: text, i: 0 };
    r.ws();
    r.eat(b'[')?;
    let mut out = Vec::new();
    r.ws();
    if r.eat(b']').is_none() {
        loop {
            r.ws();
            let start = r.i;
            r.value(1)?;
            out.push(&text[start..r.i]);
            r.ws();
            if r.eat(b',').is_some() {
                continue;
            }
            r.eat(b']')?;
            break;
        }
    }
    r.ws();
    (r.i == text.len()).then_some(out)
}

/// The raw value of the first member named `key` of the object `text` starts with, read
/// member by member up to it. Found even when the text breaks, or nests deeper than any
/// reader takes, after that member or inside the members before it: those are skipped by
/// their brackets and strings alone, in one pass without recursion, so no input can exhaust
/// the stack. The value found is well-formed JSON.
pub(crate) fn first_member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut r = Reader { s: text, i: 0 };
    r.ws();
    r.eat(b'{')?;
    loop {
        r.ws();
        let name = r.string()?;
        r.ws();
        r.eat(b':')?;
        r.ws();
        let start = r.i;
        if name == key {
            r.value(0)?;
            return Some(&text[start..r.i]);
        }
        r.skip()?;
        r.ws();
        r.eat(b',')?;
    }
}

/// The value of `key` among `members`, if present.
pub(crate) fn get<'a>(members: &[(Cow<'_, str>, &'a str)], key: &str) -> Option<&'a str> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// A raw value as a whole number (no sign, fraction or exponent), if it is one that fits.
pub(crate) fn as_u64(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.bytes().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A raw value as a string, if it is one.
pub(crate) fn as_str(raw: &str) -> Option<Cow<'_, str>> {
    let mut r = Reader { s: raw, i: 0 };
    let s = r.string()?;
    (r.i == raw.len()).then_some(s)
}

/// A raw value as a boolean, if it is one.
pub(crate) fn as_bool(raw: &str) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

struct Reader<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Skips one well-formed value.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b',').is_none() {
                        return self.eat(b'}');
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
            }
            b't' => self.word("true"),
            b'f' => self.word("false"),
            b'n' => self.word("null"),
            _ => self.number(),
        }
    }

    /// Passes over one value however deep it nests, without recursion, reading only its
    /// strings and brackets: what is inside is not checked (someone else reads it, or
    /// refuses it).
    fn skip(&mut self) -> Option<()> {
        if !matches!(self.peek()?, b'{' | b'[') {
            return self.value(0);
        }
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.checked_sub(1)?,
                _ => {}
            }
            self.i += 1;
            if depth == 0 {
                return Some(());
            }
        }
    }

    fn word(&mut self, w: &str) -> Option<()> {
        let end = self.i + w.len();
        (self.s.get(self.i..end)? == w).then(|| self.i = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// Reads a string literal; borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        let bytes = self.s.as_bytes();
        loop {
            match *bytes.get(self.i)? {
                b'"' => {
                    let s = self.s.get(start..self.i)?;
                    self.i += 1;
                    return Some(Cow::Borrowed(s));
                }
                b'\\' => break,
                b if b < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        let mut out = String::from(self.s.get(start..self.i)?);
        loop {
            match *bytes.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    self.i += 1;
                    let c = match *bytes.get(self.i)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair: `\uD83D\uDE00`.
                                if bytes.get(self.i + 1) != Some(&b'\\')
                                    || bytes.get(self.i + 2) != Some(&b'u')
                                {
                                    return None;
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            // `hex4` leaves `i` on the last digit; the push below moves on.
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    out.push(c);
                    self.i += 1;
                }
                b if b < 0x20 => return None,
                _ => {
                    // Copy one UTF-8 character.
                    let rest = self.s.get(self.i..)?;
                    let c = rest.chars().next()?;
                    out.push(c);
                    self.i += c.len_utf8();
                }
            }
        }
    }

    /// Reads the four hex digits after `\u` (`i` on the `u`); leaves `i` on the last one.
    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.i + 1..self.i + 5)?;
        let mut n = 0;
        for d in digits.chars() {
            n = n * 16 + d.to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn agrees(text: &str) {
        let ours = members(text);
        let theirs: Result<Value, _> = serde_json::from_str(text);
        match (ours, theirs) {
            (Some(m), Ok(Value::Object(obj))) => {
                assert_eq!(m.len(), obj.len(), "{text}");
                for (k, raw) in m {
                    let v: Value = serde_json::from_str(raw).unwrap_or_else(|_| panic!("{raw}"));
                    assert_eq!(Some(&v), obj.get(k.as_ref()), "{text}: {k}");
                }
            }
            (None, Err(_)) | (None, Ok(_)) => {}
            // `1e999`: JSON, which JavaScript reads as Infinity; serde_json refuses it.
            (Some(_), Err(e)) if e.to_string().starts_with("number out of range") => {}
            (Some(_), theirs) => panic!("accepted {text:?}, serde_json: {theirs:?}"),
        }
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{}"#,
            r#" { "a" : 1 , "b":[1,2,{"c":null}], "d":"x\"y\\z\u00e9\ud83d\ude00\n" } "#,
            r#"{"id":null,"status":200,"body":{"connected":true,"user":"u","expires_in":86399}}"#,
            r#"{"n":-0.5e+10,"m":0,"o":1E3,"p":[],"q":{},"r":false}"#,
            r#"{"é":"ü","k":"\/"}"#,
            // Not well-formed: refused.
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":[1 2]}"#,
            r#"{"a":1} x"#,
            r#"[1]"#,
            r#""s""#,
            "",
            "{",
            r#"{"a":"#,
            r#"{"a":"\u12"}"#,
        ] {
            agrees(text);
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(members(&deep).is_none(), "too deep");
    }

    /// Random mutations of real frames: wherever either reader accepts, both agree.
    #[test]
    fn agrees_with_serde_json_on_mutated_frames() {
        let seeds = [
            r#"{"id":null,"status":200,"body":{"connected":true,"user":"u-1","expires_in":86399}}"#,
            r#"{"event":"update","subscription":"s1","path":"/books","seq":58,"entity":{"uuid":"a","price":9.5,"tags":["x","y"],"n":null,"t":true}}"#,
            r#"{"id":7,"status":404,"body":{"error":"entity_not_found","error_description":"no \"book\" \u00e9\ud83d\ude00"}}"#,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"{}[]\",:.-+0123456789eEtrufalsn \\/u\"abc\x01";
        for _ in 0..20_000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize];
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() % bytes.len() as u64) as usize;
                let b = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => bytes[at] = b,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b),
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agrees(text);
                if let Ok(Value::Object(_)) = serde_json::from_str::<Value>(text) {
                    assert!(
                        members(text).is_some(),
                        "refused what serde_json reads: {text}"
                    );
                }
            }
        }
    }

    #[test]
    fn finds_a_member_before_and_past_what_breaks_the_object() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for (text, id) in [
            (format!(r#"{{"id":"7","body":{deep}}}"#), Some(r#""7""#)),
            (format!(r#"{{"body":{deep},"id":7}}"#), Some("7")),
            (
                format!(r#"{{"a":{{"id":1}},"id":-2.5e3,"b":{deep}"#),
                Some("-2.5e3"),
            ),
            (
                r#"{"s":"}]\"[{","id":{"x":[1]}}"#.to_owned(),
                Some(r#"{"x":[1]}"#),
            ),
            (r#"{"id":7 nope"#.to_owned(), Some("7")),
            // Broken before the id, or the id itself: not found.
            (r#"{"a":1 "id":7}"#.to_owned(), None),
            (format!(r#"{{"a":{}}}"#, "[".repeat(50)), None),
            (r#"{"id":tru}"#.to_owned(), None),
            (format!(r#"{{"id":{deep}}}"#), None),
            (r#"[{"id":7}]"#.to_owned(), None),
            (r#"{"a":{"id":7}}"#.to_owned(), None),
        ] {
            let shown = &text[..text.len().min(60)];
            assert_eq!(first_member(&text, "id"), id, "{shown}");
        }
    }

    #[test]
    fn reads_scalars() {
        assert_eq!(as_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(as_u64("18446744073709551616"), None);
        assert_eq!(as_u64("1.5"), None);
        assert_eq!(as_u64("-1"), None);
        assert_eq!(as_u64("null"), None);
        assert_eq!(as_str(r#""a\tb""#).as_deref(), Some("a\tb"));
        assert_eq!(as_str("null"), None);
        assert_eq!(as_bool("false"), Some(false));
        let m = members(r#"{"a":"x","b":2}"#).unwrap();
        assert_eq!(get(&m, "b"), Some("2"));
        assert_eq!(get(&m, "c"), None);
        assert_eq!(
            elements(r#" [ {"a":[1,2]} , "x", 3 ] "#),
            Some(vec![r#"{"a":[1,2]}"#, r#""x""#, "3"])
        );
        assert_eq!(elements("[]"), Some(vec![]));
        for bad in ["[1,]", "[1 2]", "{}", "[", "[1] x"] {
            assert_eq!(elements(bad), None, "{bad}");
        }
    }
}
