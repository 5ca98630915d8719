//! Any text as a resource path and as a connect URL. No input may panic, and a parsed path
//! never keeps a `..` segment or an encoded slash.
#![no_main]

use gridsocket_core::path::{ConnectPath, ResourcePath};
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
    }
    if let Ok(connect) = ConnectPath::parse(text) {
        let _ = connect.candidates();
    }
});
