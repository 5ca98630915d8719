//! Usergrid permissions: `get,put,post,delete:/users/${user}/**`.
//!
//! A permission grants some verbs on the paths its Ant-style pattern matches: `*` is any one
//! segment (or, inside a segment, any run of characters), `**` any number of segments, and
//! `${user}` the caller's own uuid or username.

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
}

/// One parsed permission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    ops: u8,
    pattern: Vec<String>,
}

/// Who is asking, for `${user}` in patterns.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The user's uuid.
    pub uuid: &'a str,
    /// The user's username.
    pub username: &'a str,
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
        let pattern = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        Ok(Permission { ops, pattern })
    }

    /// True when the pattern has `segment` literally (not through a wildcard).
    pub fn names(&self, segment: &str) -> bool {
        self.pattern.iter().any(|p| p.eq_ignore_ascii_case(segment))
    }

    /// True when this permission lets `caller` do `method` on the path of `segments`.
    pub fn allows(&self, method: Method, segments: &[String], caller: Option<Caller<'_>>) -> bool {
        self.ops & op_bit(method) != 0 && match_segments(&self.pattern, segments, caller)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [(1, "get"), (2, "put"), (4, "post"), (8, "delete")]
            .iter()
            .filter(|(bit, _)| self.ops & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{}:/{}", names.join(","), self.pattern.join("/"))
    }
}

fn match_segments(pattern: &[String], path: &[String], caller: Option<Caller<'_>>) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..], caller))
        }
        Some((p, rest)) => match path.split_first() {
            None => false,
            Some((seg, path_rest)) => {
                segment_matches(p, seg, caller) && match_segments(rest, path_rest, caller)
            }
        },
    }
}

fn segment_matches(pattern: &str, segment: &str, caller: Option<Caller<'_>>) -> bool {
    let segment = segment.to_ascii_lowercase();
    if pattern.contains("${user}") {
        let Some(c) = caller else { return false };
        return [c.uuid, c.username].iter().any(|who| {
            glob(
                &pattern.replace("${user}", &who.to_ascii_lowercase()),
                &segment,
            )
        });
    }
    glob(pattern, &segment)
}

/// `*` matches any run of characters within one segment.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
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
    fn bad_permissions() {
        assert_eq!(Permission::parse("get"), Err(PermissionError::Shape));
        assert_eq!(
            Permission::parse("fly:/x"),
            Err(PermissionError::UnknownOp("fly".into()))
        );
        assert_eq!(Permission::parse("get:x"), Err(PermissionError::Path));
    }
}
