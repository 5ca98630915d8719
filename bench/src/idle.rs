//! `idle`: N authenticated sockets, each subscribed to its user's inbox, then left alone.
//! Measures the server's resident memory per connection, read from `/proc`. The sockets are
//! all one user's, or each a user of its own (`--idle-distinct`): a user's grants and caller
//! are shared between its sockets, so the second is what an app of many users pays.

use crate::Run;
use crate::client::{self, ClientError, Target};
use crate::measure::{self, CpuWindow};
use crate::report::{Goal, Row};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Runs with `connections` sockets, socket `i` as user `users[i % users.len()]` (a username
/// and its token); returns its rows.
pub async fn run(
    run: &Run,
    users: &[(String, String)],
    connections: usize,
) -> Result<Vec<Row>, ClientError> {
    let target = &run.target;
    let setup = match users.len() {
        1 => format!("{connections} subscribed sockets"),
        n => format!("{connections} subscribed sockets of {n} users"),
    };
    let Some(pid) = run.server_pid else {
        return Err(ClientError::Unexpected(
            "idle needs --server-pid to read the server's memory".into(),
        ));
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = measure::rss_bytes(pid).unwrap_or(0);
    let client_before = measure::rss_bytes(std::process::id()).unwrap_or(0);
    let urls: Vec<String> = users
        .iter()
        .map(|(username, token)| {
            format!(
                "/{}/{}/users/{username}/inbox?access_token={token}",
                target.org, target.app
            )
        })
        .collect();
    let cpu = CpuWindow::start(vec![pid]);
    let started = std::time::Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = Vec::with_capacity(connections);
    let mut pending = FuturesUnordered::new();
    for i in 0..connections {
        pending.push(open(target, &urls[i % urls.len()]));
        if pending.len() >= 256 || i + 1 == connections {
            while let Some(ws) = pending.next().await {
                holders.push(tokio::spawn(hold(ws?, stop_rx.clone())));
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let limited = cpu.finish().limiter(run.server_cores, run.client_cores);
    // Let the server settle (tasks finish their first poll, buffers shrink), then read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = measure::rss_bytes(pid).unwrap_or(0);
    let client_after = measure::rss_bytes(std::process::id()).unwrap_or(0);
    let per_conn = after.saturating_sub(before) as f64 / connections.max(1) as f64;
    let _ = stop_tx.send(true);
    let mut alive = 0u64;
    for h in holders {
        if h.await.unwrap_or(false) {
            alive += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = measure::rss_bytes(pid).unwrap_or(0);
    let goal = (connections >= 10_000).then_some(Goal::AtMost(8192.0));
    Ok(vec![
        Row::new(
            "idle",
            &setup,
            "server RSS bytes per connection",
            per_conn,
            goal,
            "memory",
        ),
        Row::new(
            "idle",
            &setup,
            "server RSS MiB with the sockets open",
            after as f64 / 1048576.0,
            None,
            "",
        ),
        Row::new(
            "idle",
            &setup,
            "server RSS MiB after they closed",
            after_close as f64 / 1048576.0,
            None,
            "",
        ),
        Row::new(
            "idle",
            &setup,
            "client RSS bytes per connection",
            client_after.saturating_sub(client_before) as f64 / connections.max(1) as f64,
            None,
            "",
        ),
        Row::new(
            "idle",
            &setup,
            "connects/s",
            connections as f64 / connect_secs.max(1e-9),
            None,
            &limited,
        ),
        Row::new(
            "idle",
            &setup,
            "sockets still open at the end",
            alive as f64,
            Some(Goal::AtLeast(connections as f64)),
            "",
        )
        .must_hold(),
    ])
}

async fn open(
    target: &Target,
    url: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, ClientError> {
    let mut ws = client::websocket(target, url).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"status\":200") => Ok(ws),
        other => Err(ClientError::Unexpected(format!(
            "inbox subscription refused: {other:?}"
        ))),
    }
}

/// Keeps a socket open (answering pings) until told to stop; true if it was still open.
async fn hold(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return true;
            }
        }
    }
}
