//! Errors crossing into JavaScript: real `Error` objects with `status` and `code`.

use js_sys::Reflect;
use serde_json::Value;
use wasm_bindgen::JsValue;

fn error(status: u16, code: &str, message: &str, body: Option<&Value>) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name("GridsocketError");
    let _ = Reflect::set(&e, &"status".into(), &JsValue::from_f64(status as f64));
    let _ = Reflect::set(&e, &"code".into(), &JsValue::from_str(code));
    if let Some(b) = body {
        let _ = Reflect::set(&e, &"body".into(), &super::to_js(b));
    }
    e.into()
}

/// An error the client raised itself (no response from the server): status 0.
pub(crate) fn client_error(code: &str, message: &str) -> JsValue {
    error(0, code, message, None)
}

/// A server response with an error status: `code` is the Usergrid `error`, the message its
/// `error_description`.
pub(crate) fn response_error(status: u16, body: &Value) -> JsValue {
    let code = body.get("error").and_then(Value::as_str).unwrap_or("error");
    let message = body
        .get("error_description")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("request failed with status {status}"));
    error(status, code, &message, Some(body))
}
