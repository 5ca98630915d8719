//! Message queues: posting, consumers with transactions, acknowledgement and redelivery over
//! REST and over the socket, subscriber queues, and durability across a restart.

use gridsocket_e2e::{Fixture, TestServer, rest};
use gridsocket_server::Settings;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_in_transactions_over_rest() {
    let f = Fixture::new().await;
    let q = f.app_url("/queues/jobs/email");
    let (status, body) = rest(
        "POST",
        &q,
        Some(&f.john),
        Some(json!([{"to": "a"}, {"to": "b"}, {"to": "c"}])),
    )
    .await;
    assert_eq!((status, body["count"].clone()), (200, json!(3)), "{body}");
    let (status, body) = rest("GET", &q, Some(&f.john), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("illegal_argument")),
        "a read needs a position"
    );
    let (_, body) = rest("GET", &format!("{q}?pos=start"), Some(&f.john), None).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
    // A consumer without a timeout just moves its pointer.
    let (_, body) = rest(
        "GET",
        &format!("{q}?consumer=log&limit=2"),
        Some(&f.john),
        None,
    )
    .await;
    let tos: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, ["a", "b"]);
    let (_, body) = rest("GET", &format!("{q}?consumer=log"), Some(&f.john), None).await;
    assert_eq!(body["messages"][0]["to"], "c");
    // A consumer with a timeout gets transactions; what it does not commit comes back.
    let (_, body) = rest(
        "GET",
        &format!("{q}?consumer=w&timeout=300&limit=10"),
        Some(&f.john),
        None,
    )
    .await;
    let msgs = body["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 3);
    let tx: Vec<String> = msgs
        .iter()
        .map(|m| m["transaction"].as_str().unwrap().to_owned())
        .collect();
    for t in &tx[..2] {
        let (status, _) = rest(
            "DELETE",
            &format!("{q}/transactions/{t}"),
            Some(&f.john),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, body) = rest(
        "DELETE",
        &format!("{q}/transactions/{}", tx[0]),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("entity_not_found"))
    );
    let (_, body) = rest(
        "GET",
        &format!("{q}?consumer=w&timeout=300"),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(
        body["messages"].as_array().unwrap().len(),
        0,
        "hidden while the transaction is open"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, body) = rest(
        "GET",
        &format!("{q}?consumer=w&timeout=300"),
        Some(&f.john),
        None,
    )
    .await;
    let again = body["messages"].as_array().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["to"], "c");
    assert_ne!(
        again[0]["transaction"],
        json!(tx[2]),
        "a redelivery is a new transaction"
    );
    let (_, list) = rest("GET", &f.app_url("/queues"), Some(&f.john), None).await;
    assert_eq!(list["queues"], json!([{"path": "/jobs/email"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_queues_receive_copies() {
    let f = Fixture::new().await;
    let (status, _) = rest(
        "POST",
        &f.app_url("/queues/news/subscribers/inbox/john"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, subs) = rest(
        "GET",
        &f.app_url("/queues/news/subscribers"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(subs["subscribers"], json!(["/inbox/john"]));
    rest(
        "POST",
        &f.app_url("/queues/news"),
        Some(&f.jane),
        Some(json!({"headline": "hi"})),
    )
    .await;
    let (_, copy) = rest(
        "GET",
        &format!("{}?pos=start", f.app_url("/queues/inbox/john")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(copy["messages"][0]["headline"], "hi");
    let (status, _) = rest(
        "DELETE",
        &f.app_url("/queues/news/subscribers/inbox/john"),
        Some(&f.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    rest(
        "POST",
        &f.app_url("/queues/news"),
        Some(&f.jane),
        Some(json!({"headline": "later"})),
    )
    .await;
    let (_, copy) = rest(
        "GET",
        &format!("{}?pos=start", f.app_url("/queues/inbox/john")),
        Some(&f.john),
        None,
    )
    .await;
    assert_eq!(copy["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_consumers_ack_and_unacked_messages_come_back() {
    let f = Fixture::new().await;
    let mut worker = f.socket(&f.john).await;
    let reply = worker
        .subscribe(
            json!(1),
            "/queues/tasks",
            Some(json!({"consumer": "workers", "timeout": 400})),
            None,
        )
        .await;
    assert_eq!(reply["consumer"], "workers");
    // A plain subscriber sees every message, without transactions.
    let mut watcher = f.socket(&f.jane).await;
    watcher
        .subscribe(json!(1), "/queues/tasks", None, None)
        .await;
    rest(
        "POST",
        &f.app_url("/queues/tasks"),
        Some(&f.jane),
        Some(json!([{"n": 1}, {"n": 2}, {"n": 3}])),
    )
    .await;
    let mut tx = Vec::new();
    for n in 1..=3 {
        let e = worker.next_event().await;
        assert_eq!(
            (e["event"].clone(), e["entity"]["n"].clone()),
            (json!("create"), json!(n))
        );
        tx.push(e["entity"]["transaction"].as_str().unwrap().to_owned());
        let w = watcher.next_event().await;
        assert_eq!(w["entity"]["n"], n);
        assert!(w["entity"].get("transaction").is_none());
    }
    for t in &tx[..2] {
        let r = worker
            .request(
                json!(t),
                "DELETE",
                &format!("/queues/tasks/transactions/{t}"),
                None,
                None,
            )
            .await;
        assert_eq!(r["status"], 200, "{r}");
    }
    // Message 3 was not acknowledged: it comes again after the timeout, in a new transaction.
    let again = worker.next_event().await;
    assert_eq!(again["entity"]["n"], 3);
    assert_ne!(again["entity"]["transaction"], json!(tx[2]));
    let t = again["entity"]["transaction"].as_str().unwrap().to_owned();
    let r = worker
        .request(
            json!("ack3"),
            "DELETE",
            &format!("/queues/tasks/transactions/{t}"),
            None,
            None,
        )
        .await;
    assert_eq!(r["status"], 200);
    assert!(
        worker.try_recv(Duration::from_millis(700)).await.is_none(),
        "acknowledged messages stay gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_share_messages_and_survive_restarts() {
    let f = Fixture::new().await;
    let params = json!({"consumer": "pool", "timeout": 600});
    let mut a = f.socket(&f.john).await;
    a.subscribe(json!(1), "/queues/work", Some(params.clone()), None)
        .await;
    let mut b = f.socket(&f.jane).await;
    b.subscribe(json!(1), "/queues/work", Some(params.clone()), None)
        .await;
    let items: Vec<Value> = (0..20).map(|i| json!({"i": i})).collect();
    rest(
        "POST",
        &f.app_url("/queues/work"),
        Some(&f.admin_token),
        Some(Value::Array(items)),
    )
    .await;
    let mut seen = HashSet::new();
    let (mut from_a, mut from_b) = (0, 0);
    while seen.len() < 20 {
        tokio::select! {
            e = a.next_event() => { from_a += 1; assert!(seen.insert(e["entity"]["i"].as_u64().unwrap()), "one consumer per message"); }
            e = b.next_event() => { from_b += 1; assert!(seen.insert(e["entity"]["i"].as_u64().unwrap()), "one consumer per message"); }
        }
    }
    assert!(
        from_a > 0 && from_b > 0,
        "both consumers got work: {from_a} / {from_b}"
    );
    // Unacknowledged messages survive a restart and come to the consumer when it is back.
    let (john, app_url) = (f.john.clone(), f.app_url("/queues/work"));
    let ws_url = f.ws_url(&format!("?access_token={}", f.john));
    a.close().await;
    b.close().await;
    let temp = f.server.stop().await.unwrap();
    let server = TestServer::start_with(Settings::ephemeral(temp.path().to_path_buf())).await;
    let ws_url = ws_url.replace(
        &ws_url.split('/').nth(2).unwrap().to_owned(),
        &server.ws.to_string(),
    );
    let app_url = app_url.replace(
        &app_url.split('/').nth(2).unwrap().to_owned(),
        &server.http.to_string(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut again = gridsocket_e2e::WsClient::connect(&ws_url).await.unwrap();
    assert_eq!(
        again.recv().await["body"]["connected"],
        true,
        "the welcome comes first"
    );
    again
        .subscribe(json!(1), "/queues/work", Some(params), None)
        .await;
    let mut redelivered = HashSet::new();
    while redelivered.len() < 20 {
        let e = again.next_event().await;
        let t = e["entity"]["transaction"].as_str().unwrap().to_owned();
        redelivered.insert(e["entity"]["i"].as_u64().unwrap());
        let (status, _) = rest(
            "DELETE",
            &format!("{app_url}/transactions/{t}"),
            Some(&john),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    assert!(again.try_recv(Duration::from_millis(900)).await.is_none());
    server.stop().await;
}
