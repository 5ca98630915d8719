//! Who may do what, decided on canonical paths.
//!
//! A request's path can name one resource in many ways: `/user/JaneDoe/inbox`,
//! `/users/janedoe/feed`, `/users/{jane's uuid}/feed` and `/users/jane@example.com/feed` are one
//! feed. Access is never decided on the text a client sent. An [`AccessPath`] is the path in
//! canonical form: collections plural and lower-case, each relation by one name (`inbox` is
//! `feed`, `followers` is `connecting/following`), a relation's target always with its
//! collection, and every entity by identity (uuid and current name, see
//! [`permission::Segment`]). The rules that depend on who owns a resource (a user's feed is
//! private, a user changes only themself, group membership is not self-service) compare uuids,
//! never names.
//!
//! Deciding is sans-IO, like the sessions: [`decide`] answers [`Decision::Allow`],
//! [`Decision::Deny`], or [`Decision::Lookup`] when the answer depends on entities the host has
//! not looked up yet. The host then resolves every [`AccessPath::lookups`] entry with
//! [`AccessPath::resolve`] and asks again; the second answer is never `Lookup`. Most checks
//! (any caller whose grants cover the path with wildcards, such as the default role's `/**`)
//! are decided without a lookup.

use crate::inflector::collection_name;
use crate::path::{EntityRef, QueuePart, Resource, ResourcePath};
use crate::permission::{self, Permission, Segment};
use crate::wire::Method;
use serde::{Deserialize, Serialize};

/// Who is asking: an application user (`None` is a guest). Admins are not asked about: they
/// may do everything in their applications.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// The user's uuid.
    pub uuid: &'a str,
    /// The user's current username.
    pub username: &'a str,
}

impl<'a> From<Identity<'a>> for permission::Caller<'a> {
    fn from(id: Identity<'a>) -> Self {
        permission::Caller {
            uuid: id.uuid,
            username: id.username,
        }
    }
}

/// Why a request was refused, for the error's description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// No grant covers the request.
    #[error("no permission to {method} {path}")]
    NoGrant {
        /// The method.
        method: &'static str,
        /// The canonical path.
        path: String,
    },
    /// Another user's feed (inbox), which only a grant naming `feed` opens.
    #[error("the feed of {owner} is private to its owner")]
    PrivateFeed {
        /// The feed's owner, `/users/{uuid}`.
        owner: String,
    },
    /// A change to another user, which only that user or an app admin may make.
    #[error("only the user or an application admin may change or delete {user}")]
    OtherUser {
        /// The user, `/users/{uuid}`.
        user: String,
    },
    /// A write under another user (their activities, connections, devices), which only a
    /// grant naming that relation opens.
    #[error(
        "{path} belongs to another user: only they, an application admin, or a grant naming {relation:?} may change it"
    )]
    OtherUsersData {
        /// The canonical path.
        path: String,
        /// The relation.
        relation: String,
    },
    /// A change of a group's members.
    #[error("changing the members of a group needs an application admin or a grant on {path}")]
    Membership {
        /// The membership path, `/groups/{uuid}/users[/{uuid}]`.
        path: String,
    },
    /// A change to a group itself (its name, its removal), which changes what its members
    /// may do.
    #[error("changing or deleting {group} needs an application admin or a grant on /groups/…")]
    Group {
        /// The group, `/groups/{g}`.
        group: String,
    },
    /// Roles and permissions, which only an application's admins change.
    #[error("only the application's admins may change roles and permissions")]
    Security,
    /// `/users/me` without a user's token.
    #[error("/users/me needs a user's access token")]
    NoUser,
}

/// The answer of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse, for this reason.
    Deny(Denial),
    /// Look up [`AccessPath::lookups`], resolve them, and ask again.
    Lookup,
}

/// An entity of the path the host may have to look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Which entity of the path (for [`AccessPath::resolve`]).
    pub slot: usize,
    /// Its collection, when the path names or implies it; otherwise it is a uuid of any
    /// collection.
    pub collection: Option<String>,
    /// How the path names it: a uuid, or a name (which, for users, may be an email).
    pub entity: EntityRef,
}

/// What an entity slot turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its collection.
    pub collection: String,
    /// Its uuid.
    pub uuid: String,
    /// Its current name, if it has one.
    pub name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Slot {
    /// Index of the entity's segment in the path; the collection's is the one before.
    index: usize,
    collection: Option<String>,
    entity: EntityRef,
    state: SlotState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum SlotState {
    Unresolved,
    /// Looked up and found: its uuid.
    Found(String),
    /// Looked up: no such entity.
    Missing,
}

/// What the path names, for the rules that depend on ownership.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Shape {
    Collection(String),
    Entity {
        collection: String,
        slot: usize,
    },
    Related {
        collection: String,
        owner: usize,
        relation: String,
        inbound: bool,
        target: Option<usize>,
    },
    /// Queues, the token and credentials endpoints: grants only.
    Other,
}

/// A path in canonical form, with what access depends on; see the module documentation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessPath {
    segments: Vec<Segment>,
    /// Each segment as error messages show it: entities as the path named them.
    shown: Vec<String>,
    slots: Vec<Slot>,
    shape: Shape,
}

/// An [`AccessPath`] kept for a long time (a subscription's, re-checked whenever grants
/// change), encoded in one allocation of about a hundred bytes: as a tree of segments, names
/// and slots it takes a dozen allocations and several times the memory, which every
/// subscription of an idle socket would carry.
#[derive(Clone, Debug)]
pub struct KeptAccessPath(Box<[u8]>);

impl KeptAccessPath {
    /// The path, decoded; `None` only if these bytes did not come from [`AccessPath::keep`].
    pub fn path(&self) -> Option<AccessPath> {
        let mut path: AccessPath = postcard::from_bytes(&self.0).ok()?;
        for slot in &mut path.slots {
            if let SlotState::Found(uuid) = &mut slot.state
                && uuid.is_empty()
                && let Some(Segment::Entity { uuid: same, .. }) = path.segments.get(slot.index)
            {
                uuid.clone_from(same);
            }
        }
        for (shown, segment) in path.shown.iter_mut().zip(&path.segments) {
            if shown.is_empty() {
                shown.push_str(canonical_text(segment)?);
            }
        }
        Some(path)
    }

    /// The bytes it takes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a kept path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The text a segment is shown as when the path wrote it in canonical form: a literal's, or
/// an entity's name.
fn canonical_text(segment: &Segment) -> Option<&str> {
    match segment {
        Segment::Literal(text) => Some(text),
        Segment::Entity { name, .. } => name.as_deref(),
        Segment::Unresolved => None,
    }
}

/// The collection a relation's targets live in when the path names only the target.
/// These are the built-in collections of Usergrid's `User` and `Group` entities, so a
/// target there may be named by name (`/users/fred/devices/iphone`).
pub fn implied_target_collection(owner_collection: &str, relation: &str) -> Option<&'static str> {
    match (owner_collection, relation) {
        (_, "following") => Some("users"),
        ("groups" | "roles", "users") => Some("users"),
        ("users", "groups") => Some("groups"),
        ("users" | "groups", "roles") => Some("roles"),
        ("users", "devices") => Some("devices"),
        ("users" | "groups", "activities" | "feed") => Some("activities"),
        _ => None,
    }
}

impl AccessPath {
    /// The canonical form of a parsed path. `me` is the caller, for `/users/me`; a guest's
    /// `/users/me` is [`Denial::NoUser`].
    pub fn new(path: &ResourcePath, me: Option<Identity<'_>>) -> Result<AccessPath, Denial> {
        let mut out = AccessPath {
            segments: Vec::with_capacity(path.segments.len() + 2),
            shown: Vec::with_capacity(path.segments.len() + 2),
            slots: Vec::new(),
            shape: Shape::Other,
        };
        match &path.resource {
            // A query in place of an entity reads the collection first; what follows is
            // decided for each entity it selects, as its own path.
            Resource::Collection { collection } | Resource::Matching { collection, .. } => {
                out.literal(collection);
                out.shape = Shape::Collection(collection.clone());
            }
            Resource::Entity { collection, entity } => {
                out.literal(collection);
                let slot = out.push_entity(Some(collection), entity, me)?;
                out.shape = Shape::Entity {
                    collection: collection.clone(),
                    slot,
                };
            }
            Resource::Related {
                collection,
                entity,
                relation,
                inbound,
                target,
            } => {
                out.literal(collection);
                let owner = out.push_entity(Some(collection), entity, me)?;
                if *inbound {
                    out.literal("connecting");
                }
                out.literal(relation);
                let target = match target {
                    None => None,
                    Some(t) => {
                        let coll = t.collection.clone().or_else(|| {
                            implied_target_collection(collection, relation).map(str::to_owned)
                        });
                        if let Some(c) = &coll {
                            out.literal(&collection_name(c));
                        }
                        Some(out.push_entity(coll.as_deref(), &t.entity, me)?)
                    }
                };
                out.shape = Shape::Related {
                    collection: collection.clone(),
                    owner,
                    relation: relation.clone(),
                    inbound: *inbound,
                    target,
                };
            }
            Resource::Queue { queue, part } => {
                out.literal("queues");
                for s in queue.split('/').filter(|s| !s.is_empty()) {
                    out.literal(s);
                }
                match part {
                    QueuePart::Messages => {}
                    QueuePart::Transaction(id) => {
                        out.literal("transactions");
                        out.literal(id);
                    }
                    QueuePart::Subscribers(other) => {
                        out.literal("subscribers");
                        for s in other.iter().flat_map(|o| o.split('/')) {
                            if !s.is_empty() {
                                out.literal(s);
                            }
                        }
                    }
                    QueuePart::Properties => out.literal("properties"),
                }
            }
            Resource::Token => out.literal("token"),
            Resource::Credentials => out.literal("credentials"),
        }
        Ok(out)
    }

    /// The path encoded, for keeping long (a subscription's): see [`KeptAccessPath`].
    ///
    /// Text the path holds twice is kept once: a found entity's uuid (its slot's and its
    /// segment's), and a segment shown as its canonical form (a literal, an entity's name).
    /// The second copy is kept empty, and [`KeptAccessPath::path`] restores it; neither is
    /// ever empty in a path.
    pub fn keep(&self) -> KeptAccessPath {
        let mut compact = self.clone();
        for slot in &mut compact.slots {
            if let SlotState::Found(uuid) = &mut slot.state
                && let Some(Segment::Entity { uuid: same, .. }) = compact.segments.get(slot.index)
                && same == uuid
            {
                uuid.clear();
            }
        }
        for (shown, segment) in compact.shown.iter_mut().zip(&compact.segments) {
            if canonical_text(segment) == Some(shown.as_str()) {
                shown.clear();
            }
        }
        // Every field has a known length: encoding cannot fail.
        let bytes = postcard::to_allocvec(&compact).unwrap_or_default();
        // A copy of exactly its length, not `into_boxed_slice`: shrinking in place leaves an
        // allocator's block of the vector's capacity (mimalloc keeps any block at least twice
        // the new size), ~90 bytes more for every subscription kept.
        KeptAccessPath(Box::from(bytes.as_slice()))
    }

    /// The canonical path of an entity the host has in hand (no lookup needed).
    pub fn entity(collection: &str, uuid: &str, name: Option<&str>) -> AccessPath {
        AccessPath {
            segments: vec![Segment::literal(collection), Segment::entity(uuid, name)],
            shown: vec![collection.to_owned(), uuid.to_owned()],
            slots: vec![Slot {
                index: 1,
                collection: Some(collection.to_owned()),
                entity: EntityRef::Uuid(uuid.to_ascii_lowercase()),
                state: SlotState::Found(uuid.to_ascii_lowercase()),
            }],
            shape: Shape::Entity {
                collection: collection.to_owned(),
                slot: 0,
            },
        }
    }

    /// The canonical path of `{path}/{word}`, for a permission a path carries beside its own
    /// (`broadcast`: who may send ephemeral messages on it). `word` is a literal, never read
    /// as an entity's name, so no entity named like it changes the answer; and the path is
    /// judged by the rules of what it is under: beneath an entity as that entity's relation
    /// (a user's is theirs alone), beneath a relation as that relation (another user's feed
    /// stays theirs), beneath a collection or a queue by the grants alone.
    pub fn beneath(&self, word: &str) -> AccessPath {
        let mut out = self.clone();
        out.literal(word);
        out.shape = match &self.shape {
            Shape::Entity { collection, slot } => Shape::Related {
                collection: collection.clone(),
                owner: *slot,
                relation: word.to_ascii_lowercase(),
                inbound: false,
                target: None,
            },
            Shape::Related { .. } => self.shape.clone(),
            Shape::Collection(_) | Shape::Other => Shape::Other,
        };
        out
    }

    fn literal(&mut self, text: &str) {
        self.segments.push(Segment::literal(text));
        self.shown.push(text.to_ascii_lowercase());
    }

    fn push_entity(
        &mut self,
        collection: Option<&str>,
        entity: &EntityRef,
        me: Option<Identity<'_>>,
    ) -> Result<usize, Denial> {
        let collection = collection.map(collection_name);
        // A target of no known collection still has one: its place is kept.
        if collection.is_none() {
            self.segments.push(Segment::Unresolved);
            self.shown.push("*".into());
        }
        let index = self.segments.len();
        let (segment, state) = match entity {
            EntityRef::Me => {
                let me = me.ok_or(Denial::NoUser)?;
                (
                    Segment::entity(me.uuid, Some(me.username)),
                    SlotState::Found(me.uuid.to_ascii_lowercase()),
                )
            }
            _ => (Segment::Unresolved, SlotState::Unresolved),
        };
        self.segments.push(segment);
        self.shown.push(entity.to_string());
        self.slots.push(Slot {
            index,
            collection,
            entity: entity.clone(),
            state,
        });
        Ok(self.slots.len() - 1)
    }

    /// The entities still to look up.
    pub fn lookups(&self) -> Vec<Lookup> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SlotState::Unresolved)
            .map(|(slot, s)| Lookup {
                slot,
                collection: s.collection.clone(),
                entity: s.entity.clone(),
            })
            .collect()
    }

    /// Records what a lookup found (`None`: no such entity). A missing entity named by name
    /// keeps its name, so grants on a name it does not have yet still apply (a PUT to a free
    /// name creates it).
    pub fn resolve(&mut self, slot: usize, found: Option<Found>) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        match found {
            Some(f) => {
                if s.collection.is_none() {
                    self.segments[s.index - 1] = Segment::literal(&f.collection);
                    self.shown[s.index - 1] = f.collection.clone();
                    s.collection = Some(f.collection.clone());
                }
                self.segments[s.index] = Segment::entity(&f.uuid, f.name.as_deref());
                s.state = SlotState::Found(f.uuid.to_ascii_lowercase());
            }
            None => {
                self.segments[s.index] = match &s.entity {
                    EntityRef::Name(n) => Segment::literal(n),
                    EntityRef::Uuid(u) => Segment::literal(u),
                    EntityRef::Me => Segment::Unresolved,
                };
                s.state = SlotState::Missing;
            }
        }
    }

    /// The canonical path's segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The uuid of an entity slot, once looked up and found.
    pub fn uuid(&self, slot: usize) -> Option<&str> {
        match &self.slots.get(slot)?.state {
            SlotState::Found(u) => Some(u),
            _ => None,
        }
    }

    /// The first entity of the path that was looked up and does not exist, shown as the path
    /// up to it (`/users/newguy`). The access rules let a missing entity through to what a
    /// handler does with it (a PUT to a free name creates it); what has no handler to answer
    /// 404, such as a presence, asks this.
    pub fn missing(&self) -> Option<String> {
        self.slots
            .iter()
            .find(|s| s.state == SlotState::Missing)
            .map(|s| self.text_of(0..s.index + 1))
    }

    fn resolved(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .is_some_and(|s| s.state != SlotState::Unresolved)
    }

    /// The path as error messages show it: canonical, with each entity as the request named
    /// it (so it tells nothing the request did not say).
    pub fn shown(&self) -> String {
        self.text()
    }

    /// The path as error messages show it.
    fn text(&self) -> String {
        self.text_of(0..self.shown.len())
    }

    fn text_of(&self, range: std::ops::Range<usize>) -> String {
        self.shown[range].iter().map(|s| format!("/{s}")).collect()
    }
}

/// Whether `method` on `path` is allowed for `who` (a guest: `None`) holding `grants`. See the
/// module documentation for the rules and the lookup protocol.
pub fn decide(
    path: &AccessPath,
    method: Method,
    who: Option<Identity<'_>>,
    grants: &[Permission],
) -> Decision {
    let write = method != Method::Get;
    let is_me = |slot: usize| {
        who.is_some_and(|w| {
            path.uuid(slot)
                .is_some_and(|u| u.eq_ignore_ascii_case(w.uuid))
        })
    };
    let caller = who.map(permission::Caller::from);
    let check = Check {
        path,
        method,
        caller,
        grants,
    };
    let plain = || check.grant(path.segments(), &|_| true, || path.text());
    match &path.shape {
        // Roles and permissions are the application's security settings.
        Shape::Collection(c) | Shape::Entity { collection: c, .. } if write && c == "roles" => {
            Decision::Deny(Denial::Security)
        }
        Shape::Related {
            collection,
            relation,
            ..
        } if write
            && (collection == "roles" || relation == "roles" || relation == "permissions") =>
        {
            Decision::Deny(Denial::Security)
        }
        // Only admins change or delete users in bulk.
        Shape::Collection(c) if c == "users" && matches!(method, Method::Put | Method::Delete) => {
            Decision::Deny(Denial::OtherUser {
                user: "/users".into(),
            })
        }
        // A group's name and existence decide its members' grants: changing them is like
        // changing its members. A free name may be created as any entity.
        Shape::Entity { collection, slot } if collection == "groups" && write => {
            if !path.resolved(*slot) {
                return Decision::Lookup;
            }
            if path.uuid(*slot).is_none() {
                return plain();
            }
            let explicit = |p: &Permission| p.literal_at(0) == Some("groups");
            match check.grant(path.segments(), &explicit, || path.text()) {
                Decision::Deny(_) => Decision::Deny(Denial::Group { group: path.text() }),
                other => other,
            }
        }
        // A user changes only themself, whatever the roles grant; and may always read
        // themself (Usergrid's implicit grant).
        Shape::Entity { collection, slot } if collection == "users" => {
            if write {
                if !path.resolved(*slot) {
                    return Decision::Lookup;
                }
                if path.uuid(*slot).is_some() && !is_me(*slot) {
                    return Decision::Deny(Denial::OtherUser { user: path.text() });
                }
                return plain();
            }
            match plain() {
                Decision::Deny(_) if !path.resolved(*slot) => Decision::Lookup,
                Decision::Deny(_) if is_me(*slot) => Decision::Allow,
                other => other,
            }
        }
        Shape::Related {
            collection,
            owner,
            relation,
            inbound,
            target,
        } => {
            let membership = !inbound
                && ((collection == "groups" && relation == "users")
                    || (collection == "users" && relation == "groups"));
            if write && membership {
                return check.membership(collection, *owner, *target);
            }
            let private_feed = collection == "users" && relation == "feed" && !inbound;
            // The feeds an entity is in (`…/connecting/feed`) are other people's inboxes:
            // only a grant naming `feed` lists them.
            if relation == "feed" && *inbound {
                return match check.grant(path.segments(), &|p| p.names("feed"), || path.text()) {
                    Decision::Deny(_) => Decision::Deny(Denial::PrivateFeed { owner: path.text() }),
                    other => other,
                };
            }
            // A group's activities are its members': taking one out of the group, or out of
            // its feed, needs an admin or a grant naming that relation.
            if collection == "groups"
                && method == Method::Delete
                && matches!(relation.as_str(), "activities" | "feed")
            {
                return match check.grant(path.segments(), &|p| p.names(relation), || path.text()) {
                    Decision::Deny(_) => Decision::Deny(Denial::OtherUsersData {
                        path: path.text(),
                        relation: relation.clone(),
                    }),
                    other => other,
                };
            }
            let others_data = collection == "users" && write;
            if !(private_feed || others_data) {
                return plain();
            }
            if !path.resolved(*owner) {
                return Decision::Lookup;
            }
            // Their own, or no such user (the handler answers 404 if the grants let it).
            if is_me(*owner) || path.uuid(*owner).is_none() {
                return plain();
            }
            // The default role's `/**` does not open another user's feed or data: a grant
            // must name the relation.
            match check.grant(path.segments(), &|p| p.names(relation), || path.text()) {
                Decision::Deny(_) if private_feed => Decision::Deny(Denial::PrivateFeed {
                    owner: path.text_of(0..2),
                }),
                Decision::Deny(_) => Decision::Deny(Denial::OtherUsersData {
                    path: path.text(),
                    relation: relation.clone(),
                }),
                other => other,
            }
        }
        _ => plain(),
    }
}

/// One question to [`decide`].
struct Check<'a> {
    path: &'a AccessPath,
    method: Method,
    caller: Option<permission::Caller<'a>>,
    grants: &'a [Permission],
}

impl Check<'_> {
    /// Allowed if a grant passing `filter` allows `segments`; a lookup if one could once the
    /// path's entities are known.
    fn grant(
        &self,
        segments: &[Segment],
        filter: &dyn Fn(&Permission) -> bool,
        shown: impl FnOnce() -> String,
    ) -> Decision {
        let candidates = || self.grants.iter().filter(|p| filter(p));
        if candidates().any(|p| p.allows(self.method, segments, self.caller)) {
            return Decision::Allow;
        }
        let unresolved = self
            .path
            .slots
            .iter()
            .any(|s| s.state == SlotState::Unresolved);
        if unresolved && candidates().any(|p| p.may_allow(self.method, segments, self.caller)) {
            return Decision::Lookup;
        }
        Decision::Deny(Denial::NoGrant {
            method: self.method.as_str(),
            path: shown(),
        })
    }

    /// A change of a group's members, from either side (`/groups/g/users/u`,
    /// `/users/u/groups/g`): only a grant on `/groups/{g}/users…` that names `groups` and
    /// `users` literally allows it.
    fn membership(&self, collection: &str, owner: usize, target: Option<usize>) -> Decision {
        let path = self.path;
        let (group, user) = if collection == "groups" {
            (Some(owner), target)
        } else {
            (target, Some(owner))
        };
        let seg = |slot: Option<usize>| match slot {
            Some(s) => {
                let i = path.slots[s].index;
                (path.segments[i].clone(), path.shown[i].clone())
            }
            None => (Segment::Unresolved, "*".to_owned()),
        };
        let (group_seg, group_shown) = seg(group);
        let mut membership = vec![
            Segment::literal("groups"),
            group_seg,
            Segment::literal("users"),
        ];
        if user.is_some() {
            membership.push(seg(user).0);
        }
        let shown = format!("/groups/{group_shown}/users");
        let explicit =
            |p: &Permission| p.literal_at(0) == Some("groups") && p.literal_at(2) == Some("users");
        match self.grant(&membership, &explicit, || shown.clone()) {
            Decision::Deny(_) => Decision::Deny(Denial::Membership { path: shown }),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
