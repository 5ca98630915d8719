//! gridsocket's browser client. A compiling placeholder: the wasm-bindgen client over
//! `gridsocket-core` arrives with the browser-client issue.

/// The version of the protocol core this client is built on.
pub fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
