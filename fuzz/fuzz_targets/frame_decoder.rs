//! Any text as a request frame: decoded on its own, then fed to a server session, whose
//! answers must be JSON. No input may panic.
#![no_main]

use gridsocket_core::server::{ServerConfig, ServerSession};
use gridsocket_core::wire::decode_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = decode_request(text);
    let now = std::time::Instant::now();
    let mut session = ServerSession::accept(ServerConfig::default(), now);
    session.handle_text(now, text);
    while session.poll_event().is_some() {}
    while let Some(frame) = session.poll_transmit() {
        if let Some(json) = frame.text() {
            assert!(
                serde_json::from_str::<serde_json::Value>(json).is_ok(),
                "{json}"
            );
        }
    }
});
