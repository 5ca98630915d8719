//! Which operation a request inside an application asks for: one parse of a method and a
//! [`ResourcePath`] into an [`AppRoute`], so that a host runs every request in one `match`,
//! and adding an endpoint is one variant and one arm.

use crate::path::{EntityRef, QueuePart, RelationTarget, Resource, ResourcePath};
use crate::wire::Method;

/// A request the API does not serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The path is served, but not with this method (405 `unsupported_service_operation`).
    #[error("{0} is not supported on this path")]
    MethodNotAllowed(&'static str),
    /// The path names nothing the API serves (404 `service_resource_not_found`).
    #[error("{0}")]
    NoSuchResource(&'static str),
}

/// The entity a relation starts from: `/{collection}/{entity}/…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Its collection (canonical).
    pub collection: String,
    /// How the path names it.
    pub entity: EntityRef,
}

/// What a request does with a user's, group's or role's permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionsOp {
    /// `GET`: list them.
    List,
    /// `POST` or `PUT` `{"permission": …}`: grant one.
    Grant,
    /// `DELETE ?permission=…`: revoke one.
    Revoke,
}

/// An operation on Usergrid's queues (`/queues/…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueRoute {
    /// `GET /queues`: the application's queues.
    List,
    /// `POST /queues/{q}`: post messages.
    Post {
        /// The queue path.
        queue: String,
    },
    /// `GET /queues/{q}?consumer=…|pos=start`: read messages.
    Read {
        /// The queue path.
        queue: String,
    },
    /// `DELETE /queues/{q}/transactions/{id}`: commit a consumer transaction.
    Commit {
        /// The queue path.
        queue: String,
        /// The transaction id.
        transaction: String,
    },
    /// `GET /queues/{q}/subscribers`: the queue's subscriber queues.
    Subscribers {
        /// The queue path.
        queue: String,
    },
    /// `POST`/`PUT /queues/{q}/subscribers/{other}`: copy the queue's messages to another.
    Subscribe {
        /// The queue path.
        queue: String,
        /// The subscriber queue.
        subscriber: String,
    },
    /// `DELETE /queues/{q}/subscribers/{other}`: stop copying.
    Unsubscribe {
        /// The queue path.
        queue: String,
        /// The subscriber queue.
        subscriber: String,
    },
}

/// One operation of the application API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppRoute {
    /// `GET`/`POST /token`: a token grant.
    Token,
    /// `/credentials`: the application's client id and secret (admins only).
    Credentials,
    /// `GET /{collection}`: a page of it.
    List {
        /// The collection.
        collection: String,
    },
    /// `POST /{collection}`: create one entity or many.
    Create {
        /// The collection.
        collection: String,
    },
    /// `PUT /{collection}`: with a `ql`, merge the body into every match (up to `limit`);
    /// without, create one entity, as Usergrid's `putCollection` calls `postCollection`.
    PutCollection {
        /// The collection.
        collection: String,
    },
    /// `DELETE /{collection}?ql=…`: delete a page of matches.
    DeleteMatching {
        /// The collection.
        collection: String,
    },
    /// `GET /{collection}/{entity}`.
    Get {
        /// The collection.
        collection: String,
        /// The entity.
        entity: EntityRef,
    },
    /// `PUT` (which creates a free name) or `POST /{collection}/{entity}`: merge properties.
    Update {
        /// The collection.
        collection: String,
        /// The entity.
        entity: EntityRef,
    },
    /// `DELETE /{collection}/{entity}`.
    Delete {
        /// The collection.
        collection: String,
        /// The entity.
        entity: EntityRef,
    },
    /// `GET /{users|groups}/{id}/{feed|activities}`: newest first.
    Feed {
        /// The user or group.
        owner: Owner,
        /// `feed` or `activities`.
        relation: String,
    },
    /// `POST /{users|groups}/{id}/activities`: post and deliver to the feeds.
    PostActivity {
        /// The user or group.
        owner: Owner,
    },
    /// `PUT`/`POST /users/{u}/password`.
    SetPassword {
        /// The user.
        user: Owner,
    },
    /// `PUT`/`POST /users/{u}/revoketoken?token=…`: revoke that one token.
    RevokeToken {
        /// The user.
        user: Owner,
    },
    /// `PUT`/`POST /users/{u}/revoketokens`.
    RevokeTokens {
        /// The user.
        user: Owner,
    },
    /// `GET /users/{u}/token`: an application admin takes a token for a user, without the
    /// user's password (Usergrid's `UserResource.getAccessToken`).
    UserToken {
        /// The user.
        user: Owner,
    },
    /// `/{users|groups|roles}/{id}/permissions`.
    Permissions {
        /// Whose permissions.
        owner: Owner,
        /// What to do with them.
        op: PermissionsOp,
    },
    /// `GET /{collection}/{id}/{relation}` (or `…/connecting/{verb}`): the related entities.
    Related {
        /// Where the relation starts.
        owner: Owner,
        /// The relation.
        relation: String,
        /// True for entities pointing at the owner.
        inbound: bool,
    },
    /// `POST /{collection}/{id}/{relation}` with a body: create an entity and relate it.
    CreateRelated {
        /// Where the relation starts.
        owner: Owner,
        /// The relation.
        relation: String,
    },
    /// `GET /{collection}/{id}/{relation}/[{collection}/]{target}`: the target, if related.
    GetRelated {
        /// Where the relation starts.
        owner: Owner,
        /// The relation.
        relation: String,
        /// True for a target pointing at the owner.
        inbound: bool,
        /// The other end.
        target: RelationTarget,
    },
    /// `POST …/{relation}/[{collection}/]{target}`: relate the two.
    Link {
        /// Where the relation starts.
        owner: Owner,
        /// The relation.
        relation: String,
        /// The other end.
        target: RelationTarget,
    },
    /// `PUT …/{relation}/[{collection}/]{target}`: update the target and relate the two; a
    /// target named by a free name is created, as Usergrid's `putItemByName` does.
    PutRelated {
        /// Where the relation starts.
        owner: Owner,
        /// The relation.
        relation: String,
        /// The other end.
        target: RelationTarget,
    },
    /// `DELETE …/{relation}/[{collection}/]{target}`: unrelate them.
    Unlink {
        /// Where the relation starts.
        owner: Owner,
        /// The relation.
        relation: String,
        /// The other end.
        target: RelationTarget,
    },
    /// `/queues/…`.
    Queue(QueueRoute),
    /// `/{collection};ql=…/{rest}`: `rest` for each entity the query selects (the host runs
    /// `/{collection}/{uuid}/{rest}` for each, every one checked as its own request).
    Matching {
        /// The collection queried.
        collection: String,
        /// What applies to each entity.
        rest: Vec<String>,
    },
}

/// A user's endpoints that are not relations (`/users/{u}/password`, …): never collections,
/// so that a POST there never stores its body (a password) as an entity.
pub const USER_ENDPOINTS: &[&str] = &[
    "password",
    "revoketoken",
    "revoketokens",
    "credentials",
    "token",
];

impl AppRoute {
    /// True for the operations whose answer carries credentials (a token, an application's
    /// secret): nothing may keep such an answer, such as the record of a write sent again.
    pub fn answers_with_credentials(&self) -> bool {
        matches!(
            self,
            AppRoute::Token | AppRoute::Credentials | AppRoute::UserToken { .. }
        )
    }

    /// The operation `method` asks for on `path`.
    pub fn parse(path: &ResourcePath, method: Method) -> Result<AppRoute, RouteError> {
        use Method::{Delete, Get, Post, Put};
        let not_allowed = || RouteError::MethodNotAllowed(method.as_str());
        Ok(match &path.resource {
            Resource::Token => AppRoute::Token,
            Resource::Credentials => AppRoute::Credentials,
            Resource::Queue { queue, part } => AppRoute::Queue(queue_route(queue, part, method)?),
            Resource::Matching { collection, rest } => AppRoute::Matching {
                collection: collection.clone(),
                rest: rest.clone(),
            },
            Resource::Collection { collection } => {
                let collection = collection.clone();
                match method {
                    Get => AppRoute::List { collection },
                    Post => AppRoute::Create { collection },
                    Delete => AppRoute::DeleteMatching { collection },
                    Put => AppRoute::PutCollection { collection },
                }
            }
            Resource::Entity { collection, entity } => {
                let (collection, entity) = (collection.clone(), entity.clone());
                match method {
                    Get => AppRoute::Get { collection, entity },
                    Put | Post => AppRoute::Update { collection, entity },
                    Delete => AppRoute::Delete { collection, entity },
                }
            }
            Resource::Related {
                collection,
                entity,
                relation,
                inbound,
                target,
            } => {
                let owner = Owner {
                    collection: collection.clone(),
                    entity: entity.clone(),
                };
                let (relation, inbound) = (relation.clone(), *inbound);
                let users = collection == "users";
                match (relation.as_str(), target, method) {
                    ("permissions", None, _) if !inbound => AppRoute::Permissions {
                        owner,
                        op: match method {
                            Get => PermissionsOp::List,
                            Post | Put => PermissionsOp::Grant,
                            Delete => PermissionsOp::Revoke,
                        },
                    },
                    // Usergrid takes POST for PUT on these.
                    ("password", None, Put | Post) if users => {
                        AppRoute::SetPassword { user: owner }
                    }
                    ("revoketokens", None, Put | Post) if users => {
                        AppRoute::RevokeTokens { user: owner }
                    }
                    ("revoketoken", None, Put | Post) if users => {
                        AppRoute::RevokeToken { user: owner }
                    }
                    ("token", None, Get) if users => AppRoute::UserToken { user: owner },
                    (r, _, _) if users && USER_ENDPOINTS.contains(&r) => return Err(not_allowed()),
                    ("feed" | "activities", None, _)
                        if !inbound && matches!(collection.as_str(), "users" | "groups") =>
                    {
                        match method {
                            Get => AppRoute::Feed { owner, relation },
                            Post if relation == "activities" => AppRoute::PostActivity { owner },
                            _ => return Err(not_allowed()),
                        }
                    }
                    (_, None, Get) => AppRoute::Related {
                        owner,
                        relation,
                        inbound,
                    },
                    (_, None, Post) if !inbound => AppRoute::CreateRelated { owner, relation },
                    (_, Some(t), Get) => AppRoute::GetRelated {
                        owner,
                        relation,
                        inbound,
                        target: t.clone(),
                    },
                    (_, Some(t), Post) if !inbound => AppRoute::Link {
                        owner,
                        relation,
                        target: t.clone(),
                    },
                    (_, Some(t), Put) if !inbound => AppRoute::PutRelated {
                        owner,
                        relation,
                        target: t.clone(),
                    },
                    (_, Some(t), Delete) if !inbound => AppRoute::Unlink {
                        owner,
                        relation,
                        target: t.clone(),
                    },
                    _ => return Err(not_allowed()),
                }
            }
        })
    }

    /// The entity a relation route starts from, which a host loads (or answers 404 for)
    /// before it says a method is not allowed there.
    pub fn owner_of(path: &ResourcePath) -> Option<Owner> {
        match &path.resource {
            Resource::Related {
                collection, entity, ..
            } => Some(Owner {
                collection: collection.clone(),
                entity: entity.clone(),
            }),
            _ => None,
        }
    }
}

fn queue_route(queue: &str, part: &QueuePart, method: Method) -> Result<QueueRoute, RouteError> {
    use Method::{Delete, Get, Post, Put};
    let q = || queue.to_owned();
    Ok(match (part, method) {
        (QueuePart::Messages, Get) if queue == "/" => QueueRoute::List,
        (QueuePart::Messages, Post) if queue != "/" => QueueRoute::Post { queue: q() },
        (QueuePart::Messages, Get) => QueueRoute::Read { queue: q() },
        (QueuePart::Transaction(id), Delete) => QueueRoute::Commit {
            queue: q(),
            transaction: id.clone(),
        },
        (QueuePart::Subscribers(None), Get) => QueueRoute::Subscribers { queue: q() },
        (QueuePart::Subscribers(Some(other)), Post | Put) => QueueRoute::Subscribe {
            queue: q(),
            subscriber: other.clone(),
        },
        (QueuePart::Subscribers(Some(other)), Delete) => QueueRoute::Unsubscribe {
            queue: q(),
            subscriber: other.clone(),
        },
        (QueuePart::Properties, _) => {
            return Err(RouteError::NoSuchResource(
                "queue properties are not served",
            ));
        }
        (_, m) => return Err(RouteError::MethodNotAllowed(m.as_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Result<AppRoute, RouteError> {
        AppRoute::parse(&ResourcePath::parse(path).expect("path"), method)
    }

    fn owner(collection: &str, name: &str) -> Owner {
        Owner {
            collection: collection.into(),
            entity: EntityRef::Name(name.into()),
        }
    }

    #[test]
    fn collections_and_entities() {
        use Method::*;
        assert_eq!(
            route(Get, "/Book"),
            Ok(AppRoute::List {
                collection: "books".into()
            })
        );
        assert_eq!(
            route(Post, "/books"),
            Ok(AppRoute::Create {
                collection: "books".into()
            })
        );
        assert_eq!(
            route(Delete, "/books"),
            Ok(AppRoute::DeleteMatching {
                collection: "books".into()
            })
        );
        assert_eq!(
            route(Put, "/books"),
            Ok(AppRoute::PutCollection {
                collection: "books".into()
            })
        );
        let dune = EntityRef::Name("dune".into());
        assert_eq!(
            route(Put, "/books/dune"),
            Ok(AppRoute::Update {
                collection: "books".into(),
                entity: dune.clone()
            })
        );
        assert_eq!(
            route(Post, "/books/dune"),
            Ok(AppRoute::Update {
                collection: "books".into(),
                entity: dune.clone()
            })
        );
        assert_eq!(
            route(Get, "/users/me"),
            Ok(AppRoute::Get {
                collection: "users".into(),
                entity: EntityRef::Me
            })
        );
        assert_eq!(
            route(Delete, "/books/dune"),
            Ok(AppRoute::Delete {
                collection: "books".into(),
                entity: dune
            })
        );
        assert_eq!(route(Put, "/token"), Ok(AppRoute::Token));
        assert_eq!(route(Delete, "/credentials"), Ok(AppRoute::Credentials));
    }

    #[test]
    fn a_users_endpoints() {
        use Method::*;
        for m in [Put, Post] {
            assert_eq!(
                route(m, "/users/john/password"),
                Ok(AppRoute::SetPassword {
                    user: owner("users", "john")
                })
            );
            assert_eq!(
                route(m, "/users/john/revoketokens"),
                Ok(AppRoute::RevokeTokens {
                    user: owner("users", "john")
                })
            );
            assert_eq!(
                route(m, "/users/john/revoketoken"),
                Ok(AppRoute::RevokeToken {
                    user: owner("users", "john")
                })
            );
        }
        assert_eq!(
            route(Get, "/users/john/token"),
            Ok(AppRoute::UserToken {
                user: owner("users", "john")
            })
        );
        for (m, p) in [
            (Get, "/users/john/password"),
            (Get, "/users/john/revoketoken"),
            (Post, "/users/john/credentials"),
            (Get, "/users/john/token/x"),
            (Post, "/users/john/token"),
            (Delete, "/users/john/token"),
        ] {
            assert_eq!(
                route(m, p),
                Err(RouteError::MethodNotAllowed(m.as_str())),
                "{p}"
            );
        }
        // Elsewhere they are relations like any other.
        assert!(matches!(
            route(Post, "/books/x/password"),
            Ok(AppRoute::CreateRelated { .. })
        ));
        assert_eq!(
            route(Delete, "/groups/g/permissions"),
            Ok(AppRoute::Permissions {
                owner: owner("groups", "g"),
                op: PermissionsOp::Revoke
            })
        );
    }

    #[test]
    fn feeds_and_relations() {
        use Method::*;
        assert_eq!(
            route(Get, "/users/john/inbox"),
            Ok(AppRoute::Feed {
                owner: owner("users", "john"),
                relation: "feed".into()
            })
        );
        assert_eq!(
            route(Post, "/groups/g/activities"),
            Ok(AppRoute::PostActivity {
                owner: owner("groups", "g")
            })
        );
        assert_eq!(
            route(Post, "/users/john/feed"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert!(matches!(
            route(Get, "/users/john/followers"),
            Ok(AppRoute::Related { inbound: true, .. })
        ));
        assert_eq!(
            route(Post, "/users/john/followers"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert!(matches!(
            route(Post, "/users/john/following/users/jane"),
            Ok(AppRoute::Link { .. })
        ));
        assert!(matches!(
            route(Delete, "/users/john/following/jane"),
            Ok(AppRoute::Unlink { .. })
        ));
        assert!(matches!(
            route(Get, "/users/john/connecting/likes/x"),
            Ok(AppRoute::GetRelated { inbound: true, .. })
        ));
        assert_eq!(
            route(Delete, "/users/john/connecting/likes/x"),
            Err(RouteError::MethodNotAllowed("DELETE"))
        );
        assert_eq!(
            route(Put, "/users/john/likes"),
            Err(RouteError::MethodNotAllowed("PUT"))
        );
        assert_eq!(
            AppRoute::owner_of(&ResourcePath::parse("/users/john/likes").expect("path")),
            Some(owner("users", "john"))
        );
    }

    #[test]
    fn queues() {
        use Method::*;
        assert_eq!(route(Get, "/queues"), Ok(AppRoute::Queue(QueueRoute::List)));
        assert_eq!(
            route(Post, "/queues"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            route(Post, "/queues/a/b"),
            Ok(AppRoute::Queue(QueueRoute::Post {
                queue: "/a/b".into()
            }))
        );
        assert_eq!(
            route(Get, "/queues/a"),
            Ok(AppRoute::Queue(QueueRoute::Read { queue: "/a".into() }))
        );
        assert_eq!(
            route(Delete, "/queues/a/transactions/t"),
            Ok(AppRoute::Queue(QueueRoute::Commit {
                queue: "/a".into(),
                transaction: "t".into()
            }))
        );
        assert_eq!(
            route(Put, "/queues/a/subscribers/b"),
            Ok(AppRoute::Queue(QueueRoute::Subscribe {
                queue: "/a".into(),
                subscriber: "/b".into()
            }))
        );
        assert_eq!(
            route(Get, "/queues/a/properties"),
            Err(RouteError::NoSuchResource(
                "queue properties are not served"
            ))
        );
        assert_eq!(
            route(Delete, "/queues/a"),
            Err(RouteError::MethodNotAllowed("DELETE"))
        );
    }
}
