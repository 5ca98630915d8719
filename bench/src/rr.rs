//! `rr`: request/response. The same GET of an entity by name over the socket (auth once at
//! connect, many requests in flight) and over REST (HTTP/1.1 keep-alive, the token sent with
//! every request as REST clients do).

use crate::client::{self, ClientError, Target};
use crate::measure::{self, CpuWindow};
use crate::report::{Goal, Row};
use crate::{Run, latency_rows};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::Full;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// What one `rr` run is.
#[derive(Clone, Copy, Debug)]
pub struct RrCase {
    /// Socket or REST.
    pub transport: Transport,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests in flight per connection (always 1 for REST).
    pub depth: usize,
    /// POST a new entity each time instead of the GET (the `write` scenario).
    pub post: bool,
}

/// How requests travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One WebSocket per connection, frames correlated by id.
    Ws,
    /// HTTP/1.1 keep-alive, one request at a time per connection.
    Rest,
}

/// What one connection counted inside the measured window.
struct Tally {
    done: u64,
    errors: u64,
    latency: Histogram<u64>,
}

/// Runs one case; returns its rows and the measured requests/s.
pub async fn run(
    run: &Run,
    token: &str,
    entity_path: &str,
    case: RrCase,
) -> Result<(Vec<Row>, f64), ClientError> {
    let target = &run.target;
    let warm_until = Instant::now() + run.warmup + Duration::from_millis(200);
    let until = warm_until + run.duration;
    let mut tasks = Vec::new();
    for n in 0..case.connections {
        let (target, token, path) = (target.clone(), token.to_owned(), entity_path.to_owned());
        tasks.push(tokio::spawn(async move {
            match case.transport {
                Transport::Ws => {
                    let socket = Socket {
                        // Writes spread over every node given; reads go to the first.
                        node: if case.post { n } else { 0 },
                        depth: case.depth,
                        post: case.post,
                    };
                    ws_conn(&target, &token, &path, socket, warm_until, until).await
                }
                Transport::Rest => rest_conn(&target, &token, &path, warm_until, until).await,
            }
        }));
    }
    tokio::time::sleep_until(warm_until.into()).await;
    let cpu = CpuWindow::start(run.server_pids());
    let db = run
        .database_cpu
        .then(|| CpuWindow::start(measure::processes_named("postgres")));
    let transactions_before = match (&run.database_url, case.post) {
        (Some(url), true) => Some(measure::transactions(url).await?),
        _ => None,
    };
    tokio::time::sleep_until(until.into()).await;
    let cpu = cpu.finish();
    let db = db.map(|w| w.finish());
    let transactions = match (&run.database_url, transactions_before) {
        (Some(url), Some(before)) => Some(measure::transactions(url).await?.saturating_sub(before)),
        _ => None,
    };
    let mut total = Tally {
        done: 0,
        errors: 0,
        latency: crate::latency_histogram(),
    };
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| ClientError::Unexpected(format!("connection task: {e}")))??;
        total.done += tally.done;
        total.errors += tally.errors;
        let _ = total.latency.add(&tally.latency);
    }
    let rate = total.done as f64 / run.duration.as_secs_f64();
    let name = match case.transport {
        Transport::Ws => "ws",
        Transport::Rest => "rest",
    };
    let setup = format!("{name} C={} depth={}", case.connections, case.depth);
    let limited = cpu.limiter(run.server_cores, run.client_cores);
    // The per-core goal: 50k/s at C=16 over the socket, on the server's one core.
    let goal = (!case.post
        && case.transport == Transport::Ws
        && case.connections == 16
        && case.depth == 1)
        .then_some(Goal::AtLeast(50_000.0 * run.server_cores));
    let scenario = if case.post { "write" } else { "rr" };
    let metric = if case.post { "POST/s" } else { "requests/s" };
    let mut rows = vec![Row::new(scenario, &setup, metric, rate, goal, &limited)];
    rows.extend(latency_rows(
        scenario,
        &setup,
        &total.latency,
        &[50.0, 99.0, 99.9],
        None,
    ));
    if let Some(cores) = db.and_then(|d| d.server) {
        // The database's CPU for the same window: what a write costs it, whichever node sent
        // it, is what decides how far more nodes take one application.
        rows.push(Row::new(
            scenario,
            &setup,
            "PostgreSQL cores",
            cores,
            None,
            "",
        ));
        if total.done > 0 {
            let per_k = cores * run.duration.as_secs_f64() * 1e6 / total.done as f64;
            rows.push(Row::new(scenario, &setup, "PG CPU ms/1k", per_k, None, ""));
        }
    }
    if let Some(transactions) = transactions.filter(|_| total.done > 0) {
        // Transactions per write: how well group commit batches them. Each transaction takes
        // the application's sequence row, commits and flushes the WAL once, so fewer per
        // write is less for the database to do per write.
        let per_k = transactions as f64 * 1000.0 / total.done as f64;
        rows.push(Row::new(
            scenario,
            &setup,
            "PG transactions/1k",
            per_k,
            None,
            "",
        ));
    }
    if total.errors > 0 {
        rows.push(Row::new(
            scenario,
            &setup,
            "errors",
            total.errors as f64,
            Some(Goal::AtMost(0.0)),
            &limited,
        ));
    }
    Ok((rows, rate))
}

/// One socket of a run.
#[derive(Clone, Copy)]
struct Socket {
    /// Which node it connects to (modulo their number).
    node: usize,
    /// Requests in flight.
    depth: usize,
    /// POSTs instead of GETs.
    post: bool,
}

async fn ws_conn(
    target: &Target,
    token: &str,
    path: &str,
    socket: Socket,
    warm_until: Instant,
    until: Instant,
) -> Result<Tally, ClientError> {
    let Socket { node, depth, post } = socket;
    let url = format!("/{}/{}?access_token={token}", target.org, target.app);
    let mut ws = client::websocket_via(target, node, &url).await?;
    // The welcome frame comes first.
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"connected\":true") => {}
        other => {
            return Err(ClientError::Unexpected(format!(
                "no welcome frame: {other:?}"
            )));
        }
    }
    let frame = |id: u64| {
        if post {
            format!(
                r#"{{"id":{id},"method":"POST","path":"{path}","body":{{"n":{id},"text":"a message"}}}}"#
            )
        } else {
            format!(r#"{{"id":{id},"method":"GET","path":"{path}"}}"#)
        }
    };
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(depth * 2);
    let mut next_id = 1u64;
    for _ in 0..depth {
        sent.insert(next_id, Instant::now());
        ws.feed(Message::text(frame(next_id))).await?;
        next_id += 1;
    }
    ws.flush().await?;
    let mut tally = Tally {
        done: 0,
        errors: 0,
        latency: crate::latency_histogram(),
    };
    while let Some(msg) = ws.next().await {
        let now = Instant::now();
        let Message::Text(text) = msg? else { continue };
        let Some((id, status)) = client::response_id_status(&text) else {
            return Err(ClientError::Unexpected(format!("not a response: {text}")));
        };
        let Some(started) = sent.remove(&id) else {
            return Err(ClientError::Unexpected(format!("unknown id {id}")));
        };
        if now >= warm_until && now < until {
            tally.done += 1;
            if status != 200 {
                tally.errors += 1;
            }
            let _ = tally
                .latency
                .record((now - started).as_micros().max(1) as u64);
        }
        if now >= until {
            if sent.is_empty() {
                break;
            }
            continue;
        }
        sent.insert(next_id, Instant::now());
        ws.send(Message::text(frame(next_id))).await?;
        next_id += 1;
    }
    let _ = ws.close(None).await;
    Ok(tally)
}

async fn rest_conn(
    target: &Target,
    token: &str,
    path: &str,
    warm_until: Instant,
    until: Instant,
) -> Result<Tally, ClientError> {
    let mut sender = client::http(target).await?;
    let uri = format!("/{}/{}{path}", target.org, target.app);
    let host = target.http.to_string();
    let auth = format!("Bearer {token}");
    let mut tally = Tally {
        done: 0,
        errors: 0,
        latency: crate::latency_histogram(),
    };
    loop {
        let started = Instant::now();
        if started >= until {
            break;
        }
        let req = hyper::Request::get(uri.as_str())
            .header("host", host.as_str())
            .header("authorization", auth.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let (status, _) = client::exchange(&mut sender, req).await?;
        let now = Instant::now();
        if now >= warm_until && now < until {
            tally.done += 1;
            if status != 200 {
                tally.errors += 1;
            }
            let _ = tally
                .latency
                .record((now - started).as_micros().max(1) as u64);
        }
    }
    Ok(tally)
}
