//! The access rules on canonical paths, with a tiny in-memory directory for lookups.

use super::*;
use crate::path::is_uuid;

const JOHN: &str = "00000000-0000-7000-8000-00000000000a";
const JANE: &str = "00000000-0000-7000-8000-00000000000b";
const STAR: &str = "00000000-0000-7000-8000-00000000000c";
const STAFF: &str = "00000000-0000-7000-8000-0000000000aa";
const DUNE: &str = "00000000-0000-7000-8000-0000000000bb";

/// (collection, uuid, name, email)
const DIRECTORY: &[(&str, &str, &str, &str)] = &[
    ("users", JOHN, "john", "john@example.com"),
    ("users", JANE, "JaneDoe", "jane@example.com"),
    ("users", STAR, "*", "star@example.com"),
    ("groups", STAFF, "staff", ""),
    ("books", DUNE, "sf-dune", ""),
];

fn lookup(l: &Lookup) -> Option<Found> {
    DIRECTORY
        .iter()
        .find(|(coll, uuid, name, email)| {
            l.collection.as_deref().is_none_or(|c| c == *coll)
                && match &l.entity {
                    EntityRef::Uuid(u) => u == uuid,
                    EntityRef::Name(n) => {
                        n.eq_ignore_ascii_case(name)
                            || (*coll == "users" && n.eq_ignore_ascii_case(email))
                    }
                    EntityRef::Me => false,
                }
        })
        .map(|(coll, uuid, name, _)| Found {
            collection: (*coll).to_owned(),
            uuid: (*uuid).to_owned(),
            name: Some((*name).to_owned()),
        })
}

fn me(uuid: &'static str) -> Identity<'static> {
    let name = DIRECTORY
        .iter()
        .find(|d| d.1 == uuid)
        .map(|d| d.2)
        .unwrap_or("");
    Identity {
        uuid,
        username: name,
    }
}

fn grants(list: &[&str]) -> Vec<Permission> {
    list.iter().map(|p| Permission::parse(p).unwrap()).collect()
}

/// Decides as a host does: ask, look up if asked, ask again. Returns the decision and how
/// many lookups it took.
fn run(
    path: &str,
    method: Method,
    who: Option<Identity<'_>>,
    grants: &[Permission],
) -> (Decision, usize) {
    let parsed = ResourcePath::parse(path).unwrap();
    match AccessPath::new(&parsed, who) {
        Ok(access) => run_on(access, method, who, grants),
        Err(d) => (Decision::Deny(d), 0),
    }
}

/// [`run`] on a canonical path in hand.
fn run_on(
    mut access: AccessPath,
    method: Method,
    who: Option<Identity<'_>>,
    grants: &[Permission],
) -> (Decision, usize) {
    let path = access.shown();
    match decide(&access, method, who, grants) {
        Decision::Lookup => {
            let lookups = access.lookups();
            assert!(
                !lookups.is_empty(),
                "{path}: Lookup with nothing to look up"
            );
            for l in &lookups {
                access.resolve(l.slot, lookup(l));
            }
            let again = decide(&access, method, who, grants);
            assert_ne!(again, Decision::Lookup, "{path}: asked twice");
            (again, lookups.len())
        }
        other => (other, 0),
    }
}

fn canonical(path: &str, who: Option<Identity<'_>>) -> Vec<Segment> {
    let mut access = AccessPath::new(&ResourcePath::parse(path).unwrap(), who).unwrap();
    for l in access.lookups() {
        access.resolve(l.slot, lookup(&l));
    }
    access.segments().to_vec()
}

const DEFAULT: &[&str] = &["get,put,post,delete:/**"];

#[test]
fn every_alias_of_a_feed_is_one_path() {
    let aliases = [
        "/users/JaneDoe/feed",
        "/user/janedoe/inbox",
        "/USERS/JANEDOE/Feed",
        &format!("/users/{JANE}/feed"),
        &format!("/Users/{}/inbox", JANE.to_ascii_uppercase()),
        "/users/jane@example.com/feed",
        "/users/JANE@EXAMPLE.COM/inbox",
    ];
    let first = canonical(aliases[0], None);
    assert_eq!(first[1], Segment::entity(JANE, Some("janedoe")));
    for alias in aliases {
        assert_eq!(canonical(alias, None), first, "{alias}");
        let (d, _) = run(alias, Method::Get, Some(me(JOHN)), &grants(DEFAULT));
        assert!(
            matches!(d, Decision::Deny(Denial::PrivateFeed { .. })),
            "{alias}: {d:?}"
        );
        assert_eq!(
            run(alias, Method::Get, Some(me(JANE)), &grants(DEFAULT)).0,
            Decision::Allow
        );
        assert!(matches!(
            run(alias, Method::Get, None, &grants(DEFAULT)).0,
            Decision::Deny(_)
        ));
    }
    assert_eq!(canonical("/users/me/inbox", Some(me(JANE))), first);
    // A grant that names the feed opens it, by name or by uuid.
    for g in [
        "get:/users/janedoe/feed",
        "get:/users/*/feed",
        &format!("get:/users/{JANE}/feed"),
    ] {
        let (d, _) = run(
            "/user/JANE@example.com/inbox",
            Method::Get,
            Some(me(JOHN)),
            &grants(&[g]),
        );
        assert_eq!(d, Decision::Allow, "{g}");
    }
}

#[test]
fn wildcard_grants_need_no_lookup() {
    let g = grants(DEFAULT);
    for path in [
        "/books",
        "/books/dune",
        &format!("/books/{DUNE}"),
        "/groups/staff/feed",
        "/queues/a/b",
    ] {
        assert_eq!(
            run(path, Method::Get, Some(me(JOHN)), &g),
            (Decision::Allow, 0),
            "{path}"
        );
    }
    assert_eq!(
        run("/books/dune", Method::Put, Some(me(JOHN)), &g),
        (Decision::Allow, 0)
    );
    assert_eq!(
        run("/users/jane", Method::Get, Some(me(JOHN)), &g),
        (Decision::Allow, 0)
    );
    assert_eq!(
        run("/users/me/feed", Method::Get, Some(me(JOHN)), &g),
        (Decision::Allow, 0)
    );
    assert_eq!(
        run("/users/me/activities", Method::Post, Some(me(JOHN)), &g),
        (Decision::Allow, 0)
    );
}

#[test]
fn named_grants_apply_to_every_alias() {
    let g = grants(&["get:/books/sf-*"]);
    assert_eq!(
        run("/books/SF-Dune", Method::Get, None, &g).0,
        Decision::Allow
    );
    assert_eq!(
        run(&format!("/book/{DUNE}"), Method::Get, None, &g),
        (Decision::Allow, 1)
    );
    assert!(matches!(
        run("/books/other", Method::Get, None, &g).0,
        Decision::Deny(_)
    ));
    // Nothing could allow a PUT: no lookup.
    assert!(matches!(
        run(&format!("/books/{DUNE}"), Method::Put, None, &g),
        (Decision::Deny(_), 0)
    ));
}

#[test]
fn a_username_is_never_a_pattern() {
    let g = grants(&[
        "get,put:/users/${user}",
        "get,put,post,delete:/users/${user}/**",
    ]);
    let star = me(STAR);
    for (path, method) in [
        ("/users/john", Method::Put),
        ("/users/janedoe/activities", Method::Post),
        ("/users/janedoe/feed", Method::Get),
        (&format!("/users/{JOHN}"), Method::Delete),
    ] {
        let (d, _) = run(path, method, Some(star), &g);
        assert!(matches!(d, Decision::Deny(_)), "{path}: {d:?}");
    }
    assert_eq!(
        run("/users/me", Method::Put, Some(star), &g).0,
        Decision::Allow
    );
    assert_eq!(
        run("/users/*/activities", Method::Post, Some(star), &g).0,
        Decision::Allow
    );
}

#[test]
fn users_change_only_themselves() {
    let g = grants(DEFAULT);
    for m in [Method::Put, Method::Post, Method::Delete] {
        for path in [
            "/users/janedoe",
            "/user/JANE@example.com",
            &format!("/users/{JANE}"),
        ] {
            let (d, _) = run(path, m, Some(me(JOHN)), &g);
            assert!(
                matches!(d, Decision::Deny(Denial::OtherUser { .. })),
                "{m:?} {path}: {d:?}"
            );
        }
        assert_eq!(run("/users/me", m, Some(me(JOHN)), &g).0, Decision::Allow);
        assert_eq!(run("/users/john", m, Some(me(JOHN)), &g).0, Decision::Allow);
    }
    // A free name may be created where the grants allow it.
    assert_eq!(
        run("/users/newcomer", Method::Put, Some(me(JOHN)), &g).0,
        Decision::Allow
    );
    // Bulk changes of users are for admins.
    for m in [Method::Put, Method::Delete] {
        assert!(matches!(
            run("/users", m, Some(me(JOHN)), &g).0,
            Decision::Deny(Denial::OtherUser { .. })
        ));
    }
    assert_eq!(
        run("/users", Method::Post, None, &grants(&["post:/users"])).0,
        Decision::Allow
    );
    // Another user's activities, connections and devices need a grant naming them.
    for path in [
        "/users/janedoe/activities",
        "/users/janedoe/following/users/john",
        "/users/janedoe/devices",
    ] {
        let (d, _) = run(path, Method::Post, Some(me(JOHN)), &g);
        assert!(
            matches!(d, Decision::Deny(Denial::OtherUsersData { .. })),
            "{path}: {d:?}"
        );
    }
    let moderator = grants(&["get,put,post,delete:/**", "post:/users/*/activities"]);
    assert_eq!(
        run(
            "/users/janedoe/activities",
            Method::Post,
            Some(me(JOHN)),
            &moderator
        )
        .0,
        Decision::Allow
    );
}

#[test]
fn a_user_may_always_read_themself() {
    let g = grants(&["get:/books/**"]);
    assert_eq!(
        run("/users/me", Method::Get, Some(me(JOHN)), &g),
        (Decision::Allow, 0)
    );
    assert_eq!(
        run("/users/John", Method::Get, Some(me(JOHN)), &g),
        (Decision::Allow, 1)
    );
    assert!(matches!(
        run("/users/janedoe", Method::Get, Some(me(JOHN)), &g).0,
        Decision::Deny(_)
    ));
}

#[test]
fn group_membership_is_not_self_service() {
    let g = grants(DEFAULT);
    for (path, m) in [
        ("/users/me/groups/staff", Method::Post),
        ("/users/john/groups/staff", Method::Post),
        ("/groups/staff/users/john", Method::Post),
        ("/groups/staff/users/me", Method::Delete),
        (&format!("/groups/{STAFF}/users/{JOHN}"), Method::Post),
        ("/groups/staff/users", Method::Post),
        ("/users/me/groups", Method::Post),
    ] {
        let (d, _) = run(path, m, Some(me(JOHN)), &g);
        assert!(
            matches!(d, Decision::Deny(Denial::Membership { .. })),
            "{path}: {d:?}"
        );
    }
    assert_eq!(
        run("/users/me/groups", Method::Get, Some(me(JOHN)), &g).0,
        Decision::Allow
    );
    let moderator = grants(&["post,delete:/groups/staff/users/*"]);
    for path in [
        "/users/me/groups/staff",
        "/groups/staff/users/janedoe",
        &format!("/groups/{STAFF}/users/{JANE}"),
    ] {
        assert_eq!(
            run(path, Method::Post, Some(me(JOHN)), &moderator).0,
            Decision::Allow,
            "{path}"
        );
    }
    // `/**` names no group: it is not an explicit grant.
    let wide = grants(&["post:/**", "post:/*/*/*/*"]);
    assert!(matches!(
        run(
            "/groups/staff/users/john",
            Method::Post,
            Some(me(JOHN)),
            &wide
        )
        .0,
        Decision::Deny(_)
    ));
}

#[test]
fn roles_and_permissions_are_for_admins() {
    let g = grants(DEFAULT);
    for (path, m) in [
        ("/roles", Method::Post),
        ("/roles/default", Method::Put),
        ("/roles/default/permissions", Method::Post),
        ("/users/me/permissions", Method::Post),
        ("/groups/staff/permissions", Method::Delete),
        ("/users/me/roles/admin", Method::Post),
        ("/roles/admin/users/me", Method::Post),
    ] {
        assert_eq!(
            run(path, m, Some(me(JOHN)), &g).0,
            Decision::Deny(Denial::Security),
            "{path}"
        );
    }
    assert_eq!(
        run("/roles", Method::Get, Some(me(JOHN)), &g).0,
        Decision::Allow
    );
}

#[test]
fn relation_aliases_are_one_path() {
    let who = Some(me(JOHN));
    assert_eq!(
        canonical("/users/john/followers", who),
        canonical("/users/me/connecting/following", who)
    );
    assert_eq!(
        canonical("/users/me/following/janedoe", who),
        canonical("/user/John/following/users/JaneDoe", who)
    );
    assert_eq!(
        canonical(&format!("/users/me/following/{JANE}"), who),
        canonical("/users/me/following/user/jane@example.com", who)
    );
    // A target of no implied collection is found by uuid, and its collection joins the path.
    assert_eq!(
        canonical(&format!("/users/me/likes/{DUNE}"), who),
        canonical("/users/me/likes/books/sf-dune", who)
    );
    assert_eq!(
        canonical("/queues/A//b/", who),
        canonical("/queues/a/b", who)
    );
}

#[test]
fn guests_have_no_me() {
    assert_eq!(
        run("/users/me", Method::Get, None, &grants(DEFAULT)).0,
        Decision::Deny(Denial::NoUser)
    );
    assert!(is_uuid(JOHN));
}

#[test]
fn groups_change_only_by_admins_or_explicit_grants() {
    let g = grants(DEFAULT);
    for m in [Method::Put, Method::Post, Method::Delete] {
        for path in ["/groups/staff", &format!("/groups/{STAFF}"), "/group/STAFF"] {
            let (d, _) = run(path, m, Some(me(JOHN)), &g);
            assert!(
                matches!(d, Decision::Deny(Denial::Group { .. })),
                "{m:?} {path}: {d:?}"
            );
        }
    }
    assert_eq!(
        run("/groups/newgroup", Method::Put, Some(me(JOHN)), &g).0,
        Decision::Allow
    );
    assert_eq!(
        run("/groups", Method::Post, Some(me(JOHN)), &g).0,
        Decision::Allow
    );
    assert_eq!(
        run("/groups/staff", Method::Get, Some(me(JOHN)), &g).0,
        Decision::Allow
    );
    let keeper = grants(&["put,delete:/groups/staff"]);
    assert_eq!(
        run("/groups/staff", Method::Delete, Some(me(JOHN)), &keeper).0,
        Decision::Allow
    );
}

/// `{path}/broadcast`: a literal beneath the path, judged by the rules of what it is under,
/// never by an entity that happens to be named `broadcast`.
#[test]
fn broadcasting_is_a_permission_beneath_the_path() {
    let broadcast = |path: &str, who: Option<Identity<'static>>, g: &[Permission]| {
        let parsed = ResourcePath::parse(path).unwrap();
        let access = AccessPath::new(&parsed, who).unwrap().beneath("broadcast");
        run_on(access, Method::Post, who, g).0
    };
    // Signing up (`post:/users`) is not broadcasting on /users.
    let guest = grants(&["post:/users", "get:/groups/**"]);
    assert!(matches!(
        broadcast("/users", None, &guest),
        Decision::Deny(Denial::NoGrant { ref path, .. }) if path == "/users/broadcast"
    ));
    assert_eq!(
        broadcast("/users", None, &grants(&["post:/users/broadcast"])),
        Decision::Allow
    );
    let g = grants(DEFAULT);
    for path in [
        "/groups/staff",
        "/users",
        "/groups",
        "/books/sf-dune",
        "/queues/q",
    ] {
        assert_eq!(
            broadcast(path, Some(me(JOHN)), &g),
            Decision::Allow,
            "{path}"
        );
    }
    // A user's path is theirs alone, however it is written; and another's feed stays theirs.
    for path in [
        "/users/janedoe",
        "/user/JANE@example.com",
        "/users/janedoe/inbox",
    ] {
        let d = broadcast(path, Some(me(JOHN)), &g);
        assert!(
            matches!(
                d,
                Decision::Deny(Denial::OtherUsersData { .. } | Denial::PrivateFeed { .. })
            ),
            "{path}: {d:?}"
        );
    }
    assert_eq!(broadcast("/users/me", Some(me(JOHN)), &g), Decision::Allow);
    assert_eq!(
        broadcast("/users/john/feed", Some(me(JOHN)), &g),
        Decision::Allow
    );
    // A role may grant talking in groups without changing them, or the other way round.
    let talk = grants(&["post:/groups/*/broadcast"]);
    assert_eq!(
        broadcast("/groups/staff", Some(me(JOHN)), &talk),
        Decision::Allow
    );
    let edit = grants(&["post:/groups/*"]);
    assert!(matches!(
        broadcast("/groups/staff", Some(me(JOHN)), &edit),
        Decision::Deny(_)
    ));
}

#[test]
fn a_kept_path_decides_as_the_path_did_without_lookups_in_a_fraction_of_its_memory() {
    let paths = [
        "/users/JaneDoe/feed",
        "/users/jane@example.com/inbox",
        &format!("/users/{JOHN}/following/janedoe"),
        "/groups/staff/users/john",
        "/books/sf-dune",
        "/books",
        "/queues/jobs/mine/subscribers/other",
        "/users/me/devices",
    ];
    let grant_sets = [
        grants(DEFAULT),
        grants(&["get:/users/janedoe/**", "get:/books/*"]),
        grants(&[&format!("get:/groups/{STAFF}/**"), "get:/queues/**"]),
        Vec::new(),
    ];
    for path in paths {
        let who = Some(me(JOHN));
        let mut access = AccessPath::new(&ResourcePath::parse(path).unwrap(), who).unwrap();
        for l in access.lookups() {
            access.resolve(l.slot, lookup(&l));
        }
        let kept = access.keep();
        let back = kept.path().expect("decodes");
        assert!(back.lookups().is_empty(), "{path}: asks for lookups again");
        assert_eq!(back.segments(), access.segments(), "{path}");
        assert_eq!(back.shown(), access.shown(), "{path}");
        assert_eq!(format!("{back:?}"), format!("{access:?}"), "{path}");
        // Text held twice is kept once: shorter than the path's own encoding, and a uuid
        // found for a name kept once, not as both its slot's and its segment's.
        let whole = postcard::to_allocvec(&access).expect("encodes");
        assert!(
            kept.len() < whole.len(),
            "{path}: {} of {}",
            kept.len(),
            whole.len()
        );
        for slot in &access.slots {
            if let (SlotState::Found(uuid), EntityRef::Name(_)) = (&slot.state, &slot.entity) {
                let kept_bytes: &[u8] = &kept.0;
                let copies = kept_bytes
                    .windows(uuid.len())
                    .filter(|w| *w == uuid.as_bytes())
                    .count();
                assert_eq!(copies, 1, "{path}: {uuid} kept {copies} times");
            }
        }
        for method in [Method::Get, Method::Post, Method::Put, Method::Delete] {
            for (g, grants) in grant_sets.iter().enumerate() {
                assert_eq!(
                    decide(&back, method, who, grants),
                    decide(&access, method, who, grants),
                    "{path} {method:?} grants #{g}"
                );
            }
        }
        assert!(kept.len() < 400, "{path}: {} bytes kept", kept.len());
    }
    assert!(KeptAccessPath(Box::new([0xff, 0xff])).path().is_none());
}

#[test]
fn a_missing_entity_is_let_through_by_the_rules_and_named_by_missing() {
    // Another user's feed is private, but the feed of nobody is left to whoever answers for
    // it: the access rules allow it, and `missing` names what is not there.
    let john = Some(me(JOHN));
    let (decision, lookups) = run("/users/newguy/feed", Method::Get, john, &grants(DEFAULT));
    assert_eq!((decision, lookups), (Decision::Allow, 1));
    let resolved = |path: &str| {
        let mut access = AccessPath::new(&ResourcePath::parse(path).unwrap(), john).unwrap();
        for l in access.lookups() {
            access.resolve(l.slot, lookup(&l));
        }
        access.missing()
    };
    assert_eq!(
        resolved("/user/NewGuy/inbox").as_deref(),
        Some("/users/NewGuy")
    );
    assert_eq!(
        resolved("/groups/staff/users/nobody").as_deref(),
        Some("/groups/staff/users/users/nobody"),
        "a target with its collection, as the canonical form has it"
    );
    assert_eq!(resolved("/users/janedoe/feed"), None);
    assert_eq!(resolved("/users/me/feed"), None);
    assert_eq!(resolved("/books"), None);
    assert_eq!(resolved("/queues/jobs"), None);
    // Before any lookup nothing is known to be missing.
    let unlooked = AccessPath::new(&ResourcePath::parse("/users/newguy").unwrap(), john).unwrap();
    assert_eq!(unlooked.missing(), None);
}
