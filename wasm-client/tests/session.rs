//! The client in a real browser (headless Chromium, through wasm-bindgen-test) against the
//! real server: the web-sys WebSocket path, promises, callbacks and errors.
//!
//! `scripts/test.sh` starts a demo server and passes its WebSocket URL and a user's token at
//! compile time (`GRIDSOCKET_TEST_WS`, `GRIDSOCKET_TEST_TOKEN`); without them they fail and
//! say so.
#![cfg(target_arch = "wasm32")]

use gridsocket_wasm::Client;
use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const WS: Option<&str> = option_env!("GRIDSOCKET_TEST_WS");
const TOKEN: Option<&str> = option_env!("GRIDSOCKET_TEST_TOKEN");

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

fn configured() -> &'static str {
    assert!(
        WS.is_some(),
        "run through scripts/test.sh: GRIDSOCKET_TEST_WS is not set"
    );
    TOKEN.expect("run through scripts/test.sh: GRIDSOCKET_TEST_TOKEN is not set")
}

async fn connect(token: &str) -> Result<Client, JsValue> {
    let options = js_sys::Object::new();
    Reflect::set(&options, &"accessToken".into(), &token.into())?;
    let value = JsFuture::from(Client::connect(
        WS.unwrap_or_default(),
        Some(options.unchecked_into()),
    ))
    .await?;
    // The promise resolves to the client object wasm-bindgen created.
    Client::try_from_js_value(value)
}

#[wasm_bindgen_test]
async fn requests_and_errors_in_the_browser() {
    let token = configured();
    let client = connect(token).await.expect("connects");
    assert_eq!(client.state(), "open");
    let me = JsFuture::from(client.get("/users/me", JsValue::UNDEFINED))
        .await
        .expect("GET works");
    let user = js_sys::Array::from(&get(&me, "entities")).get(0);
    assert_eq!(
        get(&user, "username").as_string().as_deref(),
        Some("johndoe")
    );
    let err = JsFuture::from(client.get("/books/nothing-here", JsValue::UNDEFINED))
        .await
        .expect_err("404");
    assert!(err.is_instance_of::<js_sys::Error>());
    assert_eq!(get(&err, "status").as_f64(), Some(404.0));
    assert_eq!(
        get(&err, "code").as_string().as_deref(),
        Some("entity_not_found")
    );
    client.close();
}

#[wasm_bindgen_test]
async fn subscriptions_deliver_events_in_the_browser() {
    let token = configured();
    let client = connect(token).await.expect("connects");
    let mut resolve_first = None;
    let first = Promise::new(&mut |resolve, _| resolve_first = Some(resolve));
    let resolve_first = resolve_first.expect("executor ran");
    let callback = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let _ = resolve_first.call1(&JsValue::NULL, &e);
    });
    let cb: Function = callback.as_ref().clone().unchecked_into();
    let sub = JsFuture::from(client.subscribe("/browsernotes", None, cb.unchecked_into()))
        .await
        .expect("subscribes");
    let body = js_sys::JSON::parse(r#"{"text":"from the browser"}"#).expect("json");
    JsFuture::from(client.post("/browsernotes", body))
        .await
        .expect("POST works");
    let event = JsFuture::from(first).await.expect("an event");
    assert_eq!(get(&event, "type").as_string().as_deref(), Some("create"));
    assert_eq!(
        get(&get(&event, "entity"), "text").as_string().as_deref(),
        Some("from the browser")
    );
    assert!(get(&event, "seq").as_f64().is_some());
    let _ = sub;
    drop(callback);
    client.close();
}
