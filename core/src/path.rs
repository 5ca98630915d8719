//! Usergrid resource paths: what a URL or a frame's `path` names.
//!
//! Two layers: [`ConnectPath`] reads the socket URL (`/{org}/{app}/…` or the app-only
//! `/{app}/…`), whose split can only be settled by asking which apps exist, so it offers both
//! readings; [`ResourcePath`] reads a path inside one application (`/users/me/feed`).

use crate::inflector::collection_name;
use crate::wire::Params;
use std::fmt;

/// Longest path segment accepted, in bytes after decoding.
pub const MAX_SEGMENT_LEN: usize = 1024;
/// Most segments accepted in one path.
pub const MAX_SEGMENTS: usize = 32;

/// Why a path cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// `.` or `..` segments are never resolved; send the canonical path.
    #[error("path segment {0:?} is not allowed")]
    DotSegment(String),
    /// A segment decoded to something with `/`, `\` or a control character.
    #[error("path segment {0:?} contains a forbidden character")]
    ForbiddenChar(String),
    /// A segment's percent-encoding is not UTF-8.
    #[error("path segment is not valid UTF-8 once decoded")]
    NotUtf8,
    /// A segment is longer than [`MAX_SEGMENT_LEN`].
    #[error("path segment is longer than {MAX_SEGMENT_LEN} bytes")]
    SegmentTooLong,
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("path has more than {MAX_SEGMENTS} segments")]
    TooDeep,
    /// The socket URL names no application.
    #[error("the URL must name an application: /{{org}}/{{app}}/… or /{{app}}/…")]
    NoApplication,
    /// The path is deeper than any resource the API serves.
    #[error("no resource at {0:?}")]
    Unsupported(String),
    /// The path names no resource at all (it is `/`).
    #[error("the path names no resource")]
    Empty,
}

/// Splits and percent-decodes a path; empty segments (`//`) are skipped.
pub fn split_segments(path: &str) -> Result<Vec<String>, PathError> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8)?
            .into_owned();
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment(seg));
        }
        if seg.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
            return Err(PathError::ForbiddenChar(seg));
        }
        if seg.len() > MAX_SEGMENT_LEN {
            return Err(PathError::SegmentTooLong);
        }
        out.push(seg);
        if out.len() > MAX_SEGMENTS {
            return Err(PathError::TooDeep);
        }
    }
    Ok(out)
}

/// What a segment's text must escape to be read back as the same segment.
const SEGMENT_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'%')
    .add(b'/')
    .add(b'\\')
    .add(b'?')
    .add(b'#')
    .add(b';')
    .add(b' ');

/// Joins decoded segments into a path that [`split_segments`] reads back as the same
/// segments (`/` first, each escaped where it must be).
pub fn join_segments<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for seg in segments {
        out.push('/');
        out.extend(percent_encoding::utf8_percent_encode(
            seg.as_ref(),
            SEGMENT_ESCAPES,
        ));
    }
    out
}

/// How one entity is named in a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EntityRef {
    /// By UUID (canonical lower-case form).
    Uuid(String),
    /// By name (a user's username, a group's path, any entity's `name`).
    Name(String),
    /// `users/me`: the user the token belongs to.
    Me,
}

impl EntityRef {
    /// Reads a path segment; `me` only means [`EntityRef::Me`] where `allow_me` is set (users).
    pub fn parse(segment: &str, allow_me: bool) -> EntityRef {
        if is_uuid(segment) {
            EntityRef::Uuid(segment.to_ascii_lowercase())
        } else if allow_me && segment == "me" {
            EntityRef::Me
        } else {
            EntityRef::Name(segment.to_owned())
        }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityRef::Uuid(u) => f.write_str(u),
            EntityRef::Name(n) => f.write_str(n),
            EntityRef::Me => f.write_str("me"),
        }
    }
}

/// True for the 8-4-4-4-12 hex form of a UUID.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The other end of a relation path: `/users/a/following/users/b` → `users`, `b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationTarget {
    /// The target's collection, when the path names it.
    pub collection: Option<String>,
    /// The target entity.
    pub entity: EntityRef,
}

/// What a path inside an application names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `/books`: a collection.
    Collection {
        /// Canonical (plural, lower-case) collection name.
        collection: String,
    },
    /// `/books/{uuid|name}`, `/users/me`.
    Entity {
        /// Canonical collection name.
        collection: String,
        /// Which entity.
        entity: EntityRef,
    },
    /// `/{coll}/{id}/{relation}[/{target coll}]/{target}`: connections (`following`, `likes`),
    /// linked collections (`groups/g/users`), `activities`, `feed` (alias `inbox`), `roles`,
    /// `permissions`.
    Related {
        /// Canonical collection of the owner.
        collection: String,
        /// The owner.
        entity: EntityRef,
        /// The relation name; `inbox` is read as `feed`, `connecting/{verb}` as inbound.
        relation: String,
        /// True for `connecting/{verb}` (and `followers`): entities pointing at the owner.
        inbound: bool,
        /// The related entity, when the path names one.
        target: Option<RelationTarget>,
    },
    /// `/queues[/{queue path}][/transactions/{id}|/subscribers[/{other}]|/properties]`.
    Queue {
        /// Normalized queue path (`/a/b`), `/` for the list of queues.
        queue: String,
        /// Which part of the queue.
        part: QueuePart,
    },
    /// `/{collection};ql=…/{rest}`: Usergrid's matrix form, a query in place of an entity.
    /// `rest` applies to each entity the query selects, as `/{collection}/{uuid}/{rest}`.
    /// (`/{collection};ql=…` alone is [`Resource::Collection`] with
    /// [`ResourcePath::matrix`].)
    Matching {
        /// Canonical collection name.
        collection: String,
        /// What follows the query, decoded.
        rest: Vec<String>,
    },
    /// `/token`: the application's token endpoint.
    Token,
    /// `/credentials`: the application's client id and secret.
    Credentials,
}

/// The part of a queue a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueuePart {
    /// The messages of the queue.
    Messages,
    /// One consumer transaction (`…/transactions/{id}`).
    Transaction(String),
    /// The queue's subscriber queues, or one of them.
    Subscribers(Option<String>),
    /// The queue's properties.
    Properties,
}

/// A parsed path inside one application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    /// The decoded segments, as given (a collection's matrix parameters left out).
    pub segments: Vec<String>,
    /// What they name.
    pub resource: Resource,
    /// Matrix parameters of the first segment (`/books;ql=select * where a=1;limit=5`):
    /// query parameters written into the path, as Usergrid reads them.
    pub matrix: Option<Params>,
}

/// Splits Usergrid's matrix parameters off the first segment of a raw path: `/users;ql=…/x`
/// is `/users/x` with `ql=…`. Only the first segment may carry them (no name may hold `;`).
fn split_matrix(path: &str) -> Result<(String, Option<Params>), PathError> {
    let mut raw = path.split('/').filter(|s| !s.is_empty());
    let Some(first) = raw.next() else {
        return Ok((path.to_owned(), None));
    };
    if raw.any(|s| s.contains(';')) {
        return Err(PathError::Unsupported(path.to_owned()));
    }
    let Some((name, matrix)) = first.split_once(';') else {
        return Ok((path.to_owned(), None));
    };
    let params = Params::from_query_string(&matrix.replace(';', "&"));
    let rest = path.trim_start_matches('/');
    let after = &rest[first.len()..];
    Ok((format!("/{name}{after}"), Some(params)))
}

impl ResourcePath {
    /// Parses a path relative to an application (`/users/johndoe`).
    pub fn parse(path: &str) -> Result<ResourcePath, PathError> {
        let (path, matrix) = split_matrix(path)?;
        let segments = split_segments(&path)?;
        let resource = match &matrix {
            None => Self::classify(&segments, &path)?,
            Some(_) => Self::classify_matching(&segments, &path)?,
        };
        Ok(ResourcePath {
            segments,
            resource,
            matrix,
        })
    }

    /// Builds the resource of already-split segments.
    pub fn from_segments(segments: Vec<String>) -> Result<ResourcePath, PathError> {
        let joined = format!("/{}", segments.join("/"));
        let resource = Self::classify(&segments, &joined)?;
        Ok(ResourcePath {
            segments,
            resource,
            matrix: None,
        })
    }

    /// What a path whose first segment carries a query names.
    fn classify_matching(segments: &[String], original: &str) -> Result<Resource, PathError> {
        let Some(first) = segments.first() else {
            return Err(PathError::Empty);
        };
        let lower = first.to_ascii_lowercase();
        if matches!(lower.as_str(), "queues" | "token" | "credentials") {
            return Err(PathError::Unsupported(original.to_owned()));
        }
        let collection = collection_name(&lower);
        Ok(match segments.len() {
            1 => Resource::Collection { collection },
            _ => Resource::Matching {
                collection,
                rest: segments[1..].to_vec(),
            },
        })
    }

    fn classify(segments: &[String], original: &str) -> Result<Resource, PathError> {
        let Some(first) = segments.first() else {
            return Err(PathError::Empty);
        };
        let lower = first.to_ascii_lowercase();
        match lower.as_str() {
            "queues" => return Ok(classify_queue(&segments[1..])),
            "token" if segments.len() == 1 => return Ok(Resource::Token),
            "credentials" if segments.len() == 1 => return Ok(Resource::Credentials),
            _ => {}
        }
        let collection = collection_name(&lower);
        let allow_me = collection == "users";
        match segments.len() {
            1 => Ok(Resource::Collection { collection }),
            2 => Ok(Resource::Entity {
                entity: EntityRef::parse(&segments[1], allow_me),
                collection,
            }),
            _ => {
                let entity = EntityRef::parse(&segments[1], allow_me);
                let mut rest = &segments[2..];
                let mut relation = rest[0].to_ascii_lowercase();
                let mut inbound = false;
                rest = &rest[1..];
                // Usergrid's `connections/{verb}` is `{verb}`: the word only says what follows.
                if relation == "connections"
                    && let Some(verb) = rest.first()
                {
                    relation = verb.to_ascii_lowercase();
                    rest = &rest[1..];
                }
                if relation == "connecting" {
                    let Some(verb) = rest.first() else {
                        return Err(PathError::Unsupported(original.to_owned()));
                    };
                    relation = verb.to_ascii_lowercase();
                    inbound = true;
                    rest = &rest[1..];
                } else if relation == "inbox" {
                    relation = "feed".into();
                } else if relation == "followers" {
                    relation = "following".into();
                    inbound = true;
                } else {
                    relation = linked_collection(relation);
                }
                let target = match rest {
                    [] => None,
                    [one] => Some(RelationTarget {
                        collection: None,
                        entity: EntityRef::parse(one, false),
                    }),
                    [coll, one] => {
                        let coll = collection_name(coll);
                        let allow_me = coll == "users";
                        Some(RelationTarget {
                            entity: EntityRef::parse(one, allow_me),
                            collection: Some(coll),
                        })
                    }
                    _ => return Err(PathError::Unsupported(original.to_owned())),
                };
                Ok(Resource::Related {
                    collection,
                    entity,
                    relation,
                    inbound,
                    target,
                })
            }
        }
    }
}

/// The entity collections a user or group links to by name (`/groups/g/users/u`): like any
/// collection, each has one name whatever the number it is written in (`/groups/g/user/u`).
/// Other relations are connection verbs (`likes`, `following`), which are never inflected.
const LINKED_COLLECTIONS: &[&str] = &["users", "groups", "roles", "devices", "activities"];

fn linked_collection(relation: String) -> String {
    let plural = collection_name(&relation);
    if LINKED_COLLECTIONS.contains(&plural.as_str()) {
        plural
    } else {
        relation
    }
}

fn classify_queue(rest: &[String]) -> Resource {
    let subscribers = rest
        .iter()
        .position(|s| s == "subscribers")
        .filter(|p| *p > 0);
    let (queue_segs, part) = match rest {
        [q @ .., t, id] if !q.is_empty() && t == "transactions" => {
            (q, QueuePart::Transaction(id.clone()))
        }
        _ if subscribers.is_some() => {
            let at = subscribers.unwrap_or_default();
            let other = &rest[at + 1..];
            let other = (!other.is_empty()).then(|| normalize_queue_path(&other.join("/")));
            (&rest[..at], QueuePart::Subscribers(other))
        }
        [q @ .., p] if !q.is_empty() && p == "properties" => (q, QueuePart::Properties),
        q => (q, QueuePart::Messages),
    };
    Resource::Queue {
        queue: format!("/{}", queue_segs.join("/")),
        part,
    }
}

/// Normalizes a queue path as Usergrid does: `"///a/b/"` → `"/a/b"`.
pub fn normalize_queue_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Which application a socket URL names; the host settles it against the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCandidate {
    /// Organization name, or `None` for the server's default organization.
    pub org: Option<String>,
    /// Application name.
    pub app: String,
    /// The resource path that follows, relative to the app (may be empty).
    pub rest: Vec<String>,
}

/// A socket URL: `/{org}/{app}[/…]` or `/{app}[/…]`, with its query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectPath {
    segments: Vec<String>,
    /// The URL's query parameters (`access_token`, `client_id`, …).
    pub params: Params,
}

impl ConnectPath {
    /// Parses the request target of the WebSocket upgrade (`/org/app/users?access_token=…`).
    pub fn parse(target: &str) -> Result<ConnectPath, PathError> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let segments = split_segments(path)?;
        if segments.is_empty() {
            return Err(PathError::NoApplication);
        }
        Ok(ConnectPath {
            segments,
            params: Params::from_query_string(query),
        })
    }

    /// The readings to try, in order (see [`app_candidates`]).
    pub fn candidates(&self) -> Vec<AppCandidate> {
        app_candidates(&self.segments)
    }
}

/// The applications a URL's `segments` (REST's or a socket's) may name, in the order to try:
/// `{org}/{app}` first, then `{app}` of the default org. None for no segments.
pub fn app_candidates(segments: &[String]) -> Vec<AppCandidate> {
    let mut out = Vec::with_capacity(2);
    if segments.len() >= 2 {
        out.push(AppCandidate {
            org: Some(segments[0].clone()),
            app: segments[1].clone(),
            rest: segments[2..].to_vec(),
        });
    }
    if let Some(first) = segments.first() {
        out.push(AppCandidate {
            org: None,
            app: first.clone(),
            rest: segments[1..].to_vec(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(p: &str) -> Resource {
        ResourcePath::parse(p).unwrap().resource
    }

    #[test]
    fn collections_and_entities() {
        assert_eq!(
            res("/Book"),
            Resource::Collection {
                collection: "books".into()
            }
        );
        assert_eq!(
            res("/users/me"),
            Resource::Entity {
                collection: "users".into(),
                entity: EntityRef::Me
            }
        );
        let uuid = "6E2C0E2A-0000-11E0-8000-000000000001";
        assert_eq!(
            res(&format!("/books/{uuid}")),
            Resource::Entity {
                collection: "books".into(),
                entity: EntityRef::Uuid(uuid.to_ascii_lowercase())
            }
        );
        assert_eq!(
            res("/books/me"),
            Resource::Entity {
                collection: "books".into(),
                entity: EntityRef::Name("me".into())
            }
        );
        assert_eq!(
            res("/people/John%20Doe"),
            Resource::Entity {
                collection: "people".into(),
                entity: EntityRef::Name("John Doe".into())
            }
        );
    }

    #[test]
    fn joined_segments_read_back_the_same() {
        let segs = ["books", "100% a;b", "x?y#z", "é"];
        let joined = join_segments(&segs);
        assert_eq!(split_segments(&joined).unwrap(), segs);
    }

    #[test]
    fn a_query_in_the_path() {
        let p = ResourcePath::parse("/Horses;ql=select%20*%20where%20a%3D1;limit=5").unwrap();
        assert_eq!(
            p.resource,
            Resource::Collection {
                collection: "horses".into()
            }
        );
        let m = p.matrix.expect("matrix");
        assert_eq!(m.get("ql"), Some("select * where a=1"));
        assert_eq!(m.get("limit"), Some("5"));
        let p = ResourcePath::parse("/users;ql=select * where username='x'/notifications").unwrap();
        assert_eq!(
            p.resource,
            Resource::Matching {
                collection: "users".into(),
                rest: vec!["notifications".into()]
            }
        );
        assert_eq!(p.segments, ["users", "notifications"]);
        assert_eq!(
            p.matrix.as_ref().and_then(|m| m.get("ql")),
            Some("select * where username='x'")
        );
        // Only the first segment, and never a queue or an endpoint.
        assert!(ResourcePath::parse("/users/x;ql=a/y").is_err());
        assert!(ResourcePath::parse("/queues;ql=a").is_err());
        assert_eq!(ResourcePath::parse("/books").unwrap().matrix, None);
    }

    #[test]
    fn connections_then_a_verb_is_the_verb() {
        let plain = res("/nodejs/a/foos/nodejs/b");
        assert_eq!(res("/nodejs/a/connections/foos/nodejs/b"), plain);
        assert_eq!(res("/nodejs/a/Connections/foos"), res("/nodejs/a/foos"));
        assert!(
            matches!(res("/nodejs/a/connections"), Resource::Related { ref relation, target: None, .. } if relation == "connections"),
            "alone, it is a relation of that name"
        );
    }

    #[test]
    fn relations_feed_and_inbox() {
        let feed = res("/users/johndoe/feed");
        assert_eq!(res("/users/johndoe/inbox"), feed);
        assert!(
            matches!(feed, Resource::Related { ref relation, inbound: false, target: None, .. } if relation == "feed")
        );
        match res("/users/a/following/users/b") {
            Resource::Related {
                relation, target, ..
            } => {
                assert_eq!(relation, "following");
                let t = target.unwrap();
                assert_eq!(t.collection.as_deref(), Some("users"));
                assert_eq!(t.entity, EntityRef::Name("b".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            res("/users/a/followers"),
            Resource::Related { inbound: true, .. }
        ));
        assert!(
            matches!(res("/users/a/connecting/likes"), Resource::Related { inbound: true, ref relation, .. } if relation == "likes")
        );
        assert!(ResourcePath::parse("/a/b/c/d/e/f").is_err());
        // Linked collections are collections: one name whatever the number.
        assert_eq!(res("/groups/g/user/u"), res("/groups/g/users/u"));
        assert_eq!(res("/users/u/Group"), res("/users/u/groups"));
        assert_eq!(res("/users/u/activity"), res("/users/u/activities"));
        assert!(
            matches!(res("/users/u/likes"), Resource::Related { ref relation, .. } if relation == "likes")
        );
    }

    #[test]
    fn queues() {
        assert_eq!(
            res("/queues/a/b"),
            Resource::Queue {
                queue: "/a/b".into(),
                part: QueuePart::Messages
            }
        );
        assert_eq!(
            res("/queues/a/transactions/t1"),
            Resource::Queue {
                queue: "/a".into(),
                part: QueuePart::Transaction("t1".into())
            }
        );
        assert_eq!(
            res("/queues/a/subscribers/b"),
            Resource::Queue {
                queue: "/a".into(),
                part: QueuePart::Subscribers(Some("/b".into()))
            }
        );
        assert_eq!(
            res("/queues/news/subscribers/inbox/john"),
            Resource::Queue {
                queue: "/news".into(),
                part: QueuePart::Subscribers(Some("/inbox/john".into()))
            }
        );
        assert_eq!(
            res("/queues"),
            Resource::Queue {
                queue: "/".into(),
                part: QueuePart::Messages
            }
        );
    }

    #[test]
    fn hostile_paths_are_rejected() {
        assert!(matches!(
            ResourcePath::parse("/users/../x"),
            Err(PathError::DotSegment(_))
        ));
        assert!(matches!(
            ResourcePath::parse("/users/a%2Fb"),
            Err(PathError::ForbiddenChar(_))
        ));
        assert!(matches!(
            ResourcePath::parse("/users/%2e%2e"),
            Err(PathError::DotSegment(_))
        ));
        assert!(matches!(
            ResourcePath::parse("/users/%ff"),
            Err(PathError::NotUtf8)
        ));
        assert!(matches!(ResourcePath::parse("/"), Err(PathError::Empty)));
        assert!(matches!(
            ResourcePath::parse(&"/a".repeat(40)),
            Err(PathError::TooDeep)
        ));
    }

    #[test]
    fn connect_paths_offer_both_readings() {
        let c = ConnectPath::parse("/chatapp/users/johndoe/inbox?access_token=abc").unwrap();
        assert_eq!(c.params.get("access_token"), Some("abc"));
        let cands = c.candidates();
        assert_eq!(cands[0].org.as_deref(), Some("chatapp"));
        assert_eq!(cands[0].app, "users");
        assert_eq!(cands[1].org, None);
        assert_eq!(cands[1].app, "chatapp");
        assert_eq!(cands[1].rest, ["users", "johndoe", "inbox"]);
        assert_eq!(ConnectPath::parse("/?x=1"), Err(PathError::NoApplication));
        assert_eq!(app_candidates(&["shop".to_owned()]).len(), 1);
        assert!(app_candidates(&[]).is_empty());
    }
}
