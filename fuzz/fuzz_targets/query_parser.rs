//! Any text as a `ql` query: parsed, and if it parses, evaluated against an entity. No input
//! may panic or recurse without bound.
#![no_main]

use gridsocket_core::Query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = Query::parse(text) {
        let entity = serde_json::json!({
            "name": "dune", "price": 9, "tags": ["a", "b"], "author": {"name": "herbert"},
            "location": {"latitude": 1.5, "longitude": 2.5}, "created": 1_700_000_000_000u64
        });
        let _ = query.matches(&entity);
    }
});
