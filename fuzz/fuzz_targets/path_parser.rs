//! Any text as a resource path and as a connect URL, routed with every method and decided
//! for a guest and a user. No input may panic, and a parsed path never keeps a `..` segment or
//! an encoded slash.
#![no_main]

use gridsocket_core::access::{AccessPath, Decision, Found, Identity, decide};
use gridsocket_core::path::{ConnectPath, ResourcePath};
use gridsocket_core::route::AppRoute;
use gridsocket_core::{Method, Permission};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = ResourcePath::parse(text) {
        for segment in &path.segments {
            assert!(
                segment != ".." && segment != "." && !segment.contains('/'),
                "{text:?}"
            );
        }
        let grants: Vec<Permission> = ["get,put,post,delete:/**", "get:/users/${user}/**", "post:/groups/*/users/*"]
            .iter()
            .filter_map(|p| Permission::parse(p).ok())
            .collect();
        let me = Identity { uuid: "00000000-0000-7000-8000-000000000001", username: "me*" };
        for method in [Method::Get, Method::Put, Method::Post, Method::Delete] {
            let _ = AppRoute::parse(&path, method);
            for who in [None, Some(me)] {
                let Ok(mut access) = AccessPath::new(&path, who) else { continue };
                if decide(&access, method, who, &grants) == Decision::Lookup {
                    for (i, l) in access.lookups().into_iter().enumerate() {
                        let found = (i % 2 == 0).then(|| Found {
                            collection: l.collection.clone().unwrap_or_else(|| "things".into()),
                            uuid: format!("00000000-0000-7000-8000-{i:012}"),
                            name: Some(text.chars().take(8).collect()),
                        });
                        access.resolve(l.slot, found);
                    }
                    assert_ne!(decide(&access, method, who, &grants), Decision::Lookup, "{text:?}");
                }
            }
        }
    }
    if let Ok(connect) = ConnectPath::parse(text) {
        let _ = connect.candidates();
    }
});
