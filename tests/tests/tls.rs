//! TLS: given a certificate and key, REST is `https://` and the socket `wss://`; plain
//! connections to those ports get nowhere.

use futures_util::{SinkExt, StreamExt};
use gridsocket_e2e::TestServer;
use gridsocket_server::Settings;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_tungstenite::tungstenite::Message;

/// A client trusting only `cert`.
fn connector(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(cert.cert.der().clone())
        .expect("root certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls(connector: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// One HTTPS request; returns the status and the JSON body.
async fn https(
    connector: &TlsConnector,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut s = tls(connector, addr).await;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    // The server may end the TLS session without close_notify after `Connection: close`.
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_certificate_and_nothing_in_the_clear() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let temp = tempfile::tempdir().expect("temp dir");
    let (cert_path, key_path) = (temp.path().join("cert.pem"), temp.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let mut settings = Settings::ephemeral(temp.path().join("data"));
    settings.tls_cert = Some(cert_path);
    settings.tls_key = Some(key_path);
    settings.demo = true;
    let server = TestServer::start_with(settings).await;
    let tls_client = connector(&cert);

    let (status, body) = https(&tls_client, server.http, "GET", "/status", None).await;
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    let (status, body) = https(
        &tls_client,
        server.http,
        "POST",
        "/demo/chatapp/token",
        Some(json!({"grant_type": "password", "username": "johndoe", "password": "password"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token").to_owned();

    let stream = tls(&tls_client, server.ws).await;
    let url = format!("wss://localhost/demo/chatapp?access_token={token}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("wss handshake");
    let welcome: Value = match ws.next().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("expected the welcome, got {other:?}"),
    };
    assert_eq!(welcome["body"]["connected"], true);
    ws.send(Message::text(
        json!({"id": 1, "method": "GET", "path": "/users/me"}).to_string(),
    ))
    .await
    .expect("send");
    let reply: Value = match ws.next().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("expected the answer, got {other:?}"),
    };
    assert_eq!(
        reply["body"]["entities"][0]["username"], "johndoe",
        "{reply}"
    );

    // Plain text to a TLS port is not served.
    let plain = reqwest::get(format!("http://{}/status", server.http)).await;
    assert!(plain.is_err() || !plain.expect("response").status().is_success());
    let plain_ws =
        tokio_tungstenite::connect_async(format!("ws://{}/demo/chatapp", server.ws)).await;
    assert!(
        plain_ws.is_err(),
        "a plain socket was upgraded on the TLS port"
    );
}

#[tokio::test]
async fn a_key_without_a_certificate_or_a_bad_file_stops_the_start_with_a_clear_error() {
    let temp = tempfile::tempdir().expect("temp dir");
    let garbage = temp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let mut settings = Settings::ephemeral(temp.path().join("data"));
    settings.tls_key = Some(garbage.clone());
    let err = gridsocket_server::Server::bind(settings.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("--tls-cert and --tls-key"),
        "{err}"
    );
    settings.tls_cert = Some(garbage);
    let err = gridsocket_server::Server::bind(settings)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("garbage.pem"), "{err}");
}
