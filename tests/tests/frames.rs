//! Bad frames get a structured 400 and the socket stays usable; oversize frames close with 1009.

use gridsocket_e2e::{Fixture, TestServer, WsClient};
use gridsocket_server::Settings;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Every method a frame may carry.
const METHODS: [&str; 9] = [
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "AUTH",
    "PRESENCE",
    "BROADCAST",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_frame_is_answered_and_the_socket_survives() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    let cases: &[(&str, Value)] = &[
        ("not json at all", Value::Null),
        // Cut short after its id: answered under that id.
        (
            r#"{"id": 5, "method": "GET", "path": "/users/me""#,
            json!(5),
        ),
        ("[1, 2, 3]", Value::Null),
        ("42", Value::Null),
        (r#"{"method": "GET", "path": "/users/me"}"#, Value::Null),
        (
            r#"{"id": {"nested": 1}, "method": "GET", "path": "/x"}"#,
            Value::Null,
        ),
        (r#"{"id": 1, "method": "FLY", "path": "/x"}"#, json!(1)),
        (r#"{"id": 2, "method": "get", "path": "/x"}"#, json!(2)),
        (r#"{"id": "a", "method": "GET"}"#, json!("a")),
        (r#"{"id": 3, "method": "GET", "path": 7}"#, json!(3)),
        (
            r#"{"id": 4, "method": "GET", "path": "/x", "params": [1]}"#,
            json!(4),
        ),
        (
            r#"{"id": 5, "method": "GET", "path": "/x", "params": {"ql": {"a": 1}}}"#,
            json!(5),
        ),
        (r#"{"id": 6.5, "method": 1, "path": "/x"}"#, json!(6.5)),
        ("", Value::Null),
    ];
    for (i, (frame, id)) in cases.iter().enumerate() {
        ws.send_text(frame).await;
        let reply = ws.recv().await;
        assert_eq!(reply["status"], 400, "{frame}: {reply}");
        assert_eq!(reply["id"], *id, "{frame}");
        assert_eq!(reply["body"]["error"], "invalid_frame", "{frame}");
        assert!(
            reply["body"]["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        let ok = ws
            .request(json!(format!("ok-{i}")), "GET", "/users/me", None, None)
            .await;
        assert_eq!(ok["status"], 200, "socket still works after {frame}");
    }
    ws.send_message(Message::binary(vec![0u8, 159, 146, 150]))
        .await;
    let reply = ws.recv().await;
    assert_eq!(
        (reply["status"].clone(), reply["body"]["error"].clone()),
        (json!(400), json!("invalid_frame"))
    );
    // Well-formed frames with bad contents get the REST error for them.
    for (path, error) in [
        ("/users/..", "illegal_argument"),
        ("/users/a%2Fb", "illegal_argument"),
        ("/", "illegal_argument"),
    ] {
        let r = ws.request(json!(path), "GET", path, None, None).await;
        assert_eq!(
            (r["status"].clone(), r["body"]["error"].clone()),
            (json!(400), json!(error)),
            "{path}"
        );
    }
    let r = ws
        .request(
            json!("big"),
            "GET",
            "/users/me",
            Some(json!({"limit": 1e300})),
            None,
        )
        .await;
    assert_eq!(r["status"], 200, "unused parameters are ignored");
    let r = ws
        .request(
            json!("lim"),
            "GET",
            "/users",
            Some(json!({"limit": 1e300})),
            None,
        )
        .await;
    assert_eq!(r["status"], 400);
    let ok = ws
        .request(json!("end"), "GET", "/users/me", None, None)
        .await;
    assert_eq!(ok["status"], 200);
}

/// A frame nested past the JSON reader's recursion limit is answered under its id, whatever
/// its method and wherever the id stands in it: a client's call ends at once instead of
/// waiting out its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_nested_too_deep_is_answered_under_its_id() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for (n, method) in METHODS.into_iter().enumerate() {
        let first = format!(r#"{{"id":"{n}","method":"{method}","path":"/users","body":{deep}}}"#);
        let last =
            format!(r#"{{"method":"{method}","path":"/users","params":{{"a":{deep}}},"id":{n}}}"#);
        for (frame, id) in [(first, json!(n.to_string())), (last, json!(n))] {
            ws.send_text(&frame).await;
            let reply = ws.recv().await;
            assert_eq!(
                (
                    reply["id"].clone(),
                    reply["status"].clone(),
                    reply["body"]["error"].clone()
                ),
                (id, json!(400), json!("invalid_frame")),
                "{method}: {reply}"
            );
        }
    }
    let ok = ws
        .request(json!("ok"), "GET", "/users/me", None, None)
        .await;
    assert_eq!(ok["status"], 200, "the socket carries on");
}

/// A query string in a frame's `path` is refused alike for every method (its parameters go
/// in `params`): otherwise `?…` became part of a presence's, a broadcast's or a subscription's
/// name. Options of the wrong kind are refused too, each naming its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_in_the_path_and_options_of_the_wrong_kind_are_refused_naming_the_field() {
    let f = Fixture::new().await;
    let mut ws = f.socket(&f.john).await;
    for method in METHODS {
        let frame = json!({"id": method, "method": method, "path": "/groups/lobby?x=1",
                           "body": {"x": 1}});
        ws.send_json(&frame).await;
        let r = ws.response_to(&json!(method)).await;
        assert_eq!(
            (
                r["status"].clone(),
                r["body"]["error"].clone(),
                r["body"]["field"].clone()
            ),
            (json!(400), json!("invalid_frame"), json!("path")),
            "{method}: {r}"
        );
        assert!(
            r["body"]["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("params")),
            "{r}"
        );
    }
    for (n, (frame, field)) in [
        (
            json!({"method": "BROADCAST", "path": "/groups/lobby", "params": {"echo": "yes"}, "body": 1}),
            "params.echo",
        ),
        (
            json!({"method": "SUBSCRIBE", "path": "/books", "params": {"snapshot": 1}}),
            "params.snapshot",
        ),
        (
            json!({"method": "SUBSCRIBE", "path": "/books", "since": -1}),
            "since",
        ),
        (
            json!({"method": "PRESENCE", "path": "/groups/lobby", "body": {"leave": "yes"}}),
            "body",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut frame = frame;
        frame["id"] = json!(n);
        ws.send_json(&frame).await;
        let r = ws.response_to(&json!(n)).await;
        assert_eq!(
            (r["status"].clone(), r["body"]["error"].clone(), r["body"]["field"].clone()),
            (json!(400), json!("invalid_frame"), json!(field)),
            "{frame}: {r}"
        );
    }
    // A socket URL's `snapshot` is checked as well.
    let mut ws =
        WsClient::connect(&f.ws_url(&format!("/books?snapshot=yes&access_token={}", f.john)))
            .await
            .expect("socket opens");
    let r = ws.recv().await;
    assert_eq!(
        (r["status"].clone(), r["body"]["error"].clone()),
        (json!(400), json!("illegal_argument")),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_close_with_1009_and_others_are_unaffected() {
    let temp = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(temp.path().to_path_buf());
    settings.max_frame_bytes = 4096;
    let f = Fixture::on(TestServer::start_with(settings).await).await;
    let mut bystander = f.socket(&f.jane).await;
    let mut ws = f.socket(&f.john).await;
    let fits = format!(
        r#"{{"id":1,"method":"POST","path":"/notes","body":{{"text":"{}"}}}}"#,
        "x".repeat(3000)
    );
    ws.send_text(&fits).await;
    assert_eq!(ws.recv().await["status"], 200);
    let huge = format!(
        r#"{{"id":2,"method":"POST","path":"/notes","body":{{"text":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    ws.send_text(&huge).await;
    let (frames, close) = ws.until_close().await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(u16::from(close.expect("close frame").code), 1009);
    let still = bystander
        .request(json!(1), "GET", "/notes", None, None)
        .await;
    assert_eq!(
        still["body"]["count"], 1,
        "the oversize write was not applied"
    );
    // A fresh socket from the same client works.
    let mut again = WsClient::connect(&f.ws_url(&format!("?access_token={}", f.john)))
        .await
        .unwrap();
    assert_eq!(
        again
            .request(json!(1), "GET", "/users/me", None, None)
            .await["status"],
        200
    );
}
