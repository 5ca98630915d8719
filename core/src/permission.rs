//! Usergrid permissions: `get,put,post,delete:/users/${user}/**`.
//!
//! A permission grants some verbs on the paths its Ant-style pattern matches: `*` is any one
//! segment (or, inside a segment, any run of characters), `**` any number of segments, and
//! `${user}` the caller's own uuid or username. A substituted value is literal text, whatever
//! it contains: a user named `*` matches the segment `*` only, never every segment.
//!
//! Patterns are matched against a canonical path of [`Segment`]s, never against the text a
//! client sent: collections plural and lower-case, each relation by one name, and entities by
//! identity. A pattern segment matches an entity when it matches the entity's uuid or its
//! current name, so `/users/jane`, `/user/JANE`, `/users/{jane's uuid}` and
//! `/users/jane@example.com` are one path to a permission. The host resolves names, uuids and
//! emails before it asks; an entity it has not looked up yet is [`Segment::Unresolved`], which
//! only a wildcard matches, so a check can be tried first without a lookup
//! ([`Permission::may_allow`] says whether a lookup could change the answer).

use crate::wire::Method;
use std::fmt;

/// A permission string that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionError {
    /// It has no `:` between the verbs and the path.
    #[error("permission must look like \"get,post:/path\"")]
    Shape,
    /// A verb other than get, put, post, delete (or `*`).
    #[error("unknown operation {0:?} in permission")]
    UnknownOp(String),
    /// The path does not start with `/`.
    #[error("permission path must start with '/'")]
    Path,
    /// The path has more segments than any path the API serves.
    #[error("permission path has more than {MAX_PATTERN_SEGMENTS} segments")]
    TooLong,
}

/// Most segments a permission's path may have (paths themselves have at most 32).
pub const MAX_PATTERN_SEGMENTS: usize = 40;

/// One segment of a canonical path, as permissions see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Segment {
    /// A fixed segment: a collection, a relation, a queue path segment (lower-case).
    Literal(String),
    /// An entity: a pattern segment matches it when it matches its uuid or its name
    /// (both lower-case).
    Entity {
        /// The entity's uuid.
        uuid: String,
        /// Its current name (a user's username, a group's path), if it has one.
        name: Option<String>,
    },
    /// An entity the host has not looked up: only `*` and `**` match it.
    Unresolved,
}

impl Segment {
    /// A fixed segment (lower-cased).
    pub fn literal(text: &str) -> Segment {
        Segment::Literal(text.to_ascii_lowercase())
    }

    /// An entity by uuid and current name (lower-cased).
    pub fn entity(uuid: &str, name: Option<&str>) -> Segment {
        Segment::Entity {
            uuid: uuid.to_ascii_lowercase(),
            name: name.map(str::to_ascii_lowercase),
        }
    }
}

impl fmt::Display for Segment {
    /// The segment as a path shows it: an entity by uuid.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Literal(t) => f.write_str(t),
            Segment::Entity { uuid, .. } => f.write_str(uuid),
            Segment::Unresolved => f.write_str("?"),
        }
    }
}

/// Who is asking, for `${user}` in patterns.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The user's uuid.
    pub uuid: &'a str,
    /// The user's current username.
    pub username: &'a str,
}

/// One piece of a pattern segment.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Star,
    User,
}

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    /// `**`: any number of segments.
    AnyDepth,
    /// Text, `*` and `${user}`.
    Glob(Vec<Piece>),
}

impl PatternSegment {
    fn parse(text: &str) -> PatternSegment {
        if text == "**" {
            return PatternSegment::AnyDepth;
        }
        let mut pieces = Vec::new();
        let mut text_run = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("${user}") {
                flush(&mut text_run, &mut pieces);
                pieces.push(Piece::User);
                rest = after;
            } else if let Some(after) = rest.strip_prefix('*') {
                flush(&mut text_run, &mut pieces);
                // `**` inside a segment is the same as `*`.
                if pieces.last() != Some(&Piece::Star) {
                    pieces.push(Piece::Star);
                }
                rest = after;
            } else {
                let c = rest.chars().next().unwrap_or_default();
                text_run.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        flush(&mut text_run, &mut pieces);
        PatternSegment::Glob(pieces)
    }

    /// The literal text of a segment without wildcards or `${user}`.
    fn literal(&self) -> Option<&str> {
        match self {
            PatternSegment::Glob(p) => match p.as_slice() {
                [Piece::Text(t)] => Some(t),
                _ => None,
            },
            PatternSegment::AnyDepth => None,
        }
    }
}

fn flush(run: &mut String, pieces: &mut Vec<Piece>) {
    if !run.is_empty() {
        pieces.push(Piece::Text(std::mem::take(run)));
    }
}

/// One parsed permission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    ops: u8,
    /// The path's segments as written (lower-case), for display.
    text: Vec<String>,
    pattern: Vec<PatternSegment>,
}

fn op_bit(method: Method) -> u8 {
    match method {
        Method::Get => 1,
        Method::Put => 2,
        Method::Post => 4,
        Method::Delete => 8,
    }
}

impl Permission {
    /// Parses `ops:path`; `*` as ops means all four.
    pub fn parse(text: &str) -> Result<Permission, PermissionError> {
        let (ops_text, path) = text.trim().split_once(':').ok_or(PermissionError::Shape)?;
        let mut ops = 0;
        for op in ops_text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            ops |= match op.to_ascii_lowercase().as_str() {
                "get" => 1,
                "put" => 2,
                "post" => 4,
                "delete" => 8,
                "*" => 15,
                _ => return Err(PermissionError::UnknownOp(op.to_owned())),
            };
        }
        if ops == 0 {
            return Err(PermissionError::Shape);
        }
        if !path.starts_with('/') {
            return Err(PermissionError::Path);
        }
        let mut text: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        // `**/**` means what `**` means, and matching stays linear in the path.
        text.dedup_by(|a, b| a == "**" && b == "**");
        if text.len() > MAX_PATTERN_SEGMENTS {
            return Err(PermissionError::TooLong);
        }
        let pattern = text.iter().map(|s| PatternSegment::parse(s)).collect();
        Ok(Permission { ops, text, pattern })
    }

    /// True when the pattern has `segment` literally (not through a wildcard or `${user}`).
    pub fn names(&self, segment: &str) -> bool {
        self.pattern
            .iter()
            .any(|p| p.literal().is_some_and(|l| l.eq_ignore_ascii_case(segment)))
    }

    /// The literal text of the pattern's segment at `index`, if it is one.
    pub fn literal_at(&self, index: usize) -> Option<&str> {
        self.pattern.get(index).and_then(PatternSegment::literal)
    }

    /// True when this permission grants `method`, whatever the path.
    pub fn grants(&self, method: Method) -> bool {
        self.ops & op_bit(method) != 0
    }

    /// True when this permission lets `caller` do `method` on the canonical path `path`.
    /// An [`Segment::Unresolved`] entity is matched only by a wildcard.
    pub fn allows(&self, method: Method, path: &[Segment], caller: Option<Caller<'_>>) -> bool {
        self.grants(method) && self.matches(path, caller, false)
    }

    /// True when this permission could let `caller` do `method` on `path` once its
    /// unresolved entities are looked up: false means no lookup can make it allow.
    pub fn may_allow(&self, method: Method, path: &[Segment], caller: Option<Caller<'_>>) -> bool {
        self.grants(method) && self.matches(path, caller, true)
    }

    /// Matches the path, segment by segment: `reach` has bit `j` set when the pattern read so
    /// far matches the path's first `j` segments (linear in pattern times path, whatever the
    /// `**`s).
    fn matches(&self, path: &[Segment], caller: Option<Caller<'_>>, optimistic: bool) -> bool {
        let n = path.len();
        if n >= 64 {
            return false;
        }
        let who = caller.map(|c| [c.uuid.to_ascii_lowercase(), c.username.to_ascii_lowercase()]);
        let who = who.as_ref().map(|w| [w[0].as_str(), w[1].as_str()]);
        let all: u64 = if n == 63 {
            u64::MAX
        } else {
            (1u64 << (n + 1)) - 1
        };
        let mut reach: u64 = 1;
        for seg in &self.pattern {
            if reach == 0 {
                return false;
            }
            reach = match seg {
                PatternSegment::AnyDepth => {
                    // Every position at or after the first one reached.
                    let lowest = reach & reach.wrapping_neg();
                    all & !(lowest - 1)
                }
                PatternSegment::Glob(pieces) => {
                    let mut next = 0;
                    for (j, segment) in path.iter().enumerate() {
                        if reach & (1 << j) != 0
                            && segment_matches(pieces, segment, who.as_ref(), optimistic)
                        {
                            next |= 1 << (j + 1);
                        }
                    }
                    next
                }
            };
        }
        reach & (1 << n) != 0
    }
}

fn segment_matches(
    pieces: &[Piece],
    segment: &Segment,
    who: Option<&[&str; 2]>,
    optimistic: bool,
) -> bool {
    match segment {
        Segment::Literal(text) => glob_with_user(pieces, text, who),
        Segment::Entity { uuid, name } => {
            glob_with_user(pieces, uuid, who)
                || name
                    .as_deref()
                    .is_some_and(|n| glob_with_user(pieces, n, who))
        }
        Segment::Unresolved => optimistic || pieces.iter().all(|p| *p == Piece::Star),
    }
}

/// Matches `text` with `${user}` standing for each of the caller's identities in turn.
fn glob_with_user(pieces: &[Piece], text: &str, who: Option<&[&str; 2]>) -> bool {
    if !pieces.contains(&Piece::User) {
        return glob(pieces, text, "");
    }
    who.is_some_and(|w| w.iter().any(|id| glob(pieces, text, id)))
}

/// Glob matching where only [`Piece::Star`] is a wildcard: the text of `${user}` (`user`) is
/// literal like any [`Piece::Text`].
fn glob(pieces: &[Piece], text: &str, user: &str) -> bool {
    // The pattern as literal chunks between stars.
    let mut chunks: Vec<String> = vec![String::new()];
    for piece in pieces {
        match piece {
            Piece::Star => chunks.push(String::new()),
            Piece::Text(t) => push_last(&mut chunks, t),
            Piece::User => push_last(&mut chunks, user),
        }
    }
    glob_chunks(&chunks, text)
}

fn push_last(chunks: &mut [String], text: &str) {
    if let Some(last) = chunks.last_mut() {
        last.push_str(text);
    }
}

/// `chunks` are the literal runs between stars: the first must start the text, the last end
/// it, and the others appear in order between (leftmost first is enough for `*`).
fn glob_chunks(chunks: &[String], text: &str) -> bool {
    let [first, middle @ .., last] = chunks else {
        return chunks.first().is_some_and(|only| only == text);
    };
    if text.len() < first.len() + last.len()
        || !text.starts_with(first.as_str())
        || !text.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in middle {
        match rest.find(mid.as_str()) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [(1, "get"), (2, "put"), (4, "post"), (8, "delete")]
            .iter()
            .filter(|(bit, _)| self.ops & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{}:/{}", names.join(","), self.text.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<Segment> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(Segment::literal)
            .collect()
    }

    #[test]
    fn default_roles() {
        let all = Permission::parse("get,put,post,delete:/**").unwrap();
        assert!(all.allows(Method::Delete, &segs("/books/x/y"), None));
        assert!(all.allows(Method::Get, &segs("/"), None));
        let guest = Permission::parse("post:/users").unwrap();
        assert!(guest.allows(Method::Post, &segs("/users"), None));
        assert!(!guest.allows(Method::Get, &segs("/users"), None));
        assert!(!guest.allows(Method::Post, &segs("/users/x"), None));
        let dev = Permission::parse("put:/devices/*").unwrap();
        assert!(dev.allows(Method::Put, &segs("/devices/abc"), None));
        assert!(!dev.allows(Method::Put, &segs("/devices/abc/x"), None));
        assert_eq!(dev.to_string(), "put:/devices/*");
    }

    #[test]
    fn user_substitution_and_globs() {
        let p = Permission::parse("get:/users/${user}/**").unwrap();
        let me = Caller {
            uuid: "u-1",
            username: "JohnDoe",
        };
        assert!(p.allows(Method::Get, &segs("/users/johndoe/feed"), Some(me)));
        assert!(p.allows(Method::Get, &segs("/users/U-1"), Some(me)));
        assert!(!p.allows(Method::Get, &segs("/users/jane/feed"), Some(me)));
        assert!(!p.allows(Method::Get, &segs("/users/johndoe"), None));
        let g = Permission::parse("get:/books/sf-*").unwrap();
        assert!(g.allows(Method::Get, &segs("/books/sf-dune"), None));
        assert!(!g.allows(Method::Get, &segs("/books/dune"), None));
    }

    #[test]
    fn a_username_is_never_a_pattern() {
        let own = Permission::parse("get,put,post,delete:/users/${user}/**").unwrap();
        for name in ["*", "e*", "**", "*e*", "?", "j?hn"] {
            let attacker = Caller {
                uuid: "u-9",
                username: name,
            };
            for victim in ["/users/john", "/users/eve/feed", "/users/x/activities"] {
                assert!(
                    !own.allows(Method::Put, &segs(victim), Some(attacker)),
                    "{name:?} must not match {victim}"
                );
            }
            // Only the literal segment the name spells.
            let literal = [Segment::literal("users"), Segment::literal(name)];
            assert!(own.allows(Method::Put, &literal, Some(attacker)));
        }
        // ${user} inside a segment stays literal too.
        let notes = Permission::parse("get:/notes/${user}-*").unwrap();
        let star = Caller {
            uuid: "u-9",
            username: "*",
        };
        assert!(!notes.allows(Method::Get, &segs("/notes/john-1"), Some(star)));
        assert!(notes.allows(Method::Get, &segs("/notes/*-1"), Some(star)));
    }

    #[test]
    fn entities_match_by_uuid_or_name() {
        let by_name = Permission::parse("get:/books/sf-*").unwrap();
        let dune = [
            Segment::literal("books"),
            Segment::entity("6e2c0e2a-0000-11e0-8000-000000000001", Some("SF-Dune")),
        ];
        assert!(by_name.allows(Method::Get, &dune, None));
        let by_uuid = Permission::parse("get:/books/6E2C0E2A-0000-11E0-8000-000000000001").unwrap();
        assert!(by_uuid.allows(Method::Get, &dune, None));
        let other = Permission::parse("get:/books/dune").unwrap();
        assert!(!other.allows(Method::Get, &dune, None));
        let own = Permission::parse("put:/users/${user}").unwrap();
        let me = Caller {
            uuid: "u-1",
            username: "john",
        };
        let renamed = [
            Segment::literal("users"),
            Segment::entity("u-1", Some("johnny")),
        ];
        assert!(own.allows(Method::Put, &renamed, Some(me)), "by uuid");
    }

    #[test]
    fn unresolved_entities_need_a_wildcard_or_a_lookup() {
        let path = [Segment::literal("books"), Segment::Unresolved];
        let any = Permission::parse("get:/books/*").unwrap();
        assert!(any.allows(Method::Get, &path, None));
        let deep = Permission::parse("get:/**").unwrap();
        assert!(deep.allows(Method::Get, &path, None));
        let named = Permission::parse("get:/books/sf-*").unwrap();
        assert!(!named.allows(Method::Get, &path, None));
        assert!(named.may_allow(Method::Get, &path, None));
        let elsewhere = Permission::parse("get:/films/*").unwrap();
        assert!(!elsewhere.may_allow(Method::Get, &path, None));
        assert!(!named.may_allow(Method::Put, &path, None));
    }

    #[test]
    fn many_double_stars_stay_cheap() {
        let p = Permission::parse(&format!("get:{}x", "/**/a".repeat(19))).unwrap();
        let path: Vec<Segment> = (0..32).map(|_| Segment::literal("a")).collect();
        assert!(!p.allows(Method::Get, &path, None));
        let q = Permission::parse("get:/**/**/**/b").unwrap();
        assert_eq!(q.to_string(), "get:/**/b");
        let mut path = path;
        path.push(Segment::literal("b"));
        assert!(q.allows(Method::Get, &path[1..], None));
    }

    #[test]
    fn literal_segments() {
        let p = Permission::parse("post,delete:/groups/staff/users/*").unwrap();
        assert_eq!(p.literal_at(0), Some("groups"));
        assert_eq!(p.literal_at(2), Some("users"));
        assert_eq!(p.literal_at(3), None);
        assert!(p.names("staff"));
        assert!(!p.names("*"));
    }

    #[test]
    fn bad_permissions() {
        assert_eq!(Permission::parse("get"), Err(PermissionError::Shape));
        assert_eq!(
            Permission::parse("fly:/x"),
            Err(PermissionError::UnknownOp("fly".into()))
        );
        assert_eq!(Permission::parse("get:x"), Err(PermissionError::Path));
        assert_eq!(
            Permission::parse(&format!("get:{}", "/a".repeat(41))),
            Err(PermissionError::TooLong)
        );
    }
}
