//! `query`: `ql` over a large collection. The bench loads it (POSTs over sockets, pipelined)
//! to each size asked for, then times each query form one request at a time over one socket:
//! equality, a range, `order by` with `limit 10`, `contains`, and a walk with cursors from
//! the first page to the last. It reports p50/p99 per form and the server's RSS above what it
//! held before loading. It also checks the answers (counts, order, a walk that visits every
//! entity once), so a fast wrong answer fails the run.

use crate::client::{self, ClientError, Target};
use crate::report::{Goal, Row};
use crate::{Run, latency_rows};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The collection the bench fills.
const COLLECTION: &str = "benchitems";
/// Sockets and requests in flight on each while loading.
const LOADERS: usize = 8;
const LOAD_DEPTH: usize = 64;
/// Distinct values of `k` (so `k = v` selects size / 1000 entities).
const KEYS: u64 = 1000;
/// Distinct words (so `contains` selects size / 500 entities).
const WORDS: u64 = 500;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Entity `i` of the collection.
fn item(i: u64) -> Value {
    json!({"n": i, "k": i % KEYS, "text": format!("item {i} w{}", i % WORDS)})
}

async fn open(target: &Target, token: &str) -> Result<Socket, ClientError> {
    let url = format!("/{}/{}?access_token={token}", target.org, target.app);
    let mut ws = client::websocket(target, &url).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"connected\":true") => Ok(ws),
        other => Err(ClientError::Unexpected(format!(
            "no welcome frame: {other:?}"
        ))),
    }
}

/// The response to request `id`, skipping anything else.
async fn response(ws: &mut Socket, id: u64) -> Result<Value, ClientError> {
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(&text)
            .map_err(|_| ClientError::Unexpected(format!("not JSON: {text}")))?;
        if v["id"] == json!(id) {
            return Ok(v);
        }
    }
    Err(ClientError::Unexpected("the socket closed".into()))
}

/// Loads entities `from..to`, spread over [`LOADERS`] pipelined sockets.
async fn load(target: &Target, token: &str, from: u64, to: u64) -> Result<(), ClientError> {
    let mut tasks = Vec::new();
    for w in 0..LOADERS as u64 {
        let (target, token) = (target.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ws = open(&target, &token).await?;
            let mine: Vec<u64> = (from..to).filter(|i| i % LOADERS as u64 == w).collect();
            let mut sent: HashMap<u64, ()> = HashMap::new();
            let mut next = mine.iter();
            let frame = |i: u64| {
                json!({"id": i, "method": "POST", "path": format!("/{COLLECTION}"), "body": item(i)})
                    .to_string()
            };
            for &i in next.by_ref().take(LOAD_DEPTH) {
                sent.insert(i, ());
                ws.feed(Message::text(frame(i))).await?;
            }
            ws.flush().await?;
            while !sent.is_empty() {
                let Some(msg) = ws.next().await else { break };
                let Message::Text(text) = msg? else { continue };
                let Some((id, status)) = client::response_id_status(&text) else {
                    continue;
                };
                if status != 200 {
                    return Err(ClientError::Unexpected(format!("POST {id}: {text}")));
                }
                sent.remove(&id);
                if let Some(&i) = next.next() {
                    sent.insert(i, ());
                    ws.send(Message::text(frame(i))).await?;
                }
            }
            let _ = ws.close(None).await;
            Ok::<(), ClientError>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| ClientError::Unexpected(format!("loader: {e}")))??;
    }
    Ok(())
}

/// One GET over the socket; its body and how long it took.
async fn get(
    ws: &mut Socket,
    id: &mut u64,
    params: Value,
) -> Result<(Value, Duration), ClientError> {
    *id += 1;
    let frame =
        json!({"id": *id, "method": "GET", "path": format!("/{COLLECTION}"), "params": params});
    let started = Instant::now();
    ws.send(Message::text(frame.to_string())).await?;
    let r = response(ws, *id).await?;
    let took = started.elapsed();
    if r["status"] != 200 {
        return Err(ClientError::Unexpected(format!(
            "GET {params}: {r}",
            params = frame["params"]
        )));
    }
    Ok((r["body"].clone(), took))
}

fn numbers(body: &Value, key: &str) -> Vec<u64> {
    body["entities"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e[key].as_u64()).collect())
        .unwrap_or_default()
}

/// Loads the collection to each size in turn and times every query form at each.
pub async fn run(run: &Run, token: &str, sizes: &[u64]) -> Result<Vec<Row>, ClientError> {
    let target = &run.target;
    let idle_rss = run.server_pid.and_then(crate::measure::rss_bytes);
    let mut rows = Vec::new();
    let mut loaded = 0u64;
    let mut id = 0u64;
    for &size in sizes {
        if size > loaded {
            eprintln!("  query: loading {} entities", size - loaded);
            let started = Instant::now();
            load(target, token, loaded, size).await?;
            let rate = (size - loaded) as f64 / started.elapsed().as_secs_f64();
            rows.push(Row::new(
                "query",
                format!("load to {size}"),
                "POST/s",
                rate,
                None,
                "",
            ));
            loaded = size;
        }
        // Opened after loading: an idle socket nobody reads would miss the server's pings.
        let mut ws = open(target, token).await?;
        let setup = |form: &str| format!("{form} at {size}");
        let until = Instant::now() + run.duration;
        let mut round = 0u64;
        let mut hists: HashMap<&str, hdrhistogram::Histogram<u64>> = HashMap::new();
        let mut peak_rss = 0u64;
        while Instant::now() < until || round < 3 {
            round += 1;
            let v = (round * 7919) % KEYS;
            let (body, t) = get(
                &mut ws,
                &mut id,
                json!({"ql": format!("select * where k = {v}"), "limit": 10}),
            )
            .await?;
            check(
                numbers(&body, "k").iter().all(|&k| k == v)
                    && numbers(&body, "k").len() == 10.min((size / KEYS) as usize),
                "k = v",
            )?;
            record(&mut hists, "equality k = v, limit 10", t);
            let lo = (round * 104_729) % size.saturating_sub(100).max(1);
            let (body, t) = get(&mut ws, &mut id, json!({"ql": format!("select * where n >= {lo} and n < {}", lo + 100), "limit": 10})).await?;
            check(
                numbers(&body, "n").iter().all(|&n| n >= lo && n < lo + 100),
                "range",
            )?;
            record(&mut hists, "range of 100, limit 10", t);
            let (body, t) = get(
                &mut ws,
                &mut id,
                json!({"ql": "select * order by n desc", "limit": 10}),
            )
            .await?;
            check(
                numbers(&body, "n").first() == Some(&(size - 1)),
                "order by n desc",
            )?;
            record(&mut hists, "order by n desc, limit 10", t);
            let w = round % WORDS;
            let (body, t) = get(
                &mut ws,
                &mut id,
                json!({"ql": format!("select * where text contains 'w{w}'"), "limit": 10}),
            )
            .await?;
            check(
                numbers(&body, "n").iter().all(|&n| n % WORDS == w),
                "contains",
            )?;
            record(&mut hists, "contains a word, limit 10", t);
            if let Some(rss) = run.server_pid.and_then(crate::measure::rss_bytes) {
                peak_rss = peak_rss.max(rss);
            }
        }
        // A walk with cursors, first page to last, in order, every entity once.
        let (mut cursor, mut seen, mut last) = (None::<String>, 0u64, None::<u64>);
        let mut deep: Vec<String> = Vec::new();
        let walk_started = Instant::now();
        loop {
            let mut params = json!({"ql": "select * order by n", "limit": 1000});
            if let Some(c) = &cursor {
                params["cursor"] = json!(c);
            }
            let (body, t) = get(&mut ws, &mut id, params).await?;
            record(&mut hists, "cursor walk, a page of 1000", t);
            let before = seen;
            for n in numbers(&body, "n") {
                check(
                    last.is_none_or(|l| n == l + 1) && (last.is_some() || n == 0),
                    "walk order",
                )?;
                last = Some(n);
                seen += 1;
            }
            match body["cursor"].as_str() {
                Some(c) => {
                    cursor = Some(c.to_owned());
                    // Every 20,000 entities, where more follow. (The walk's last pages pass
                    // over the collection for entities without `n`: they may hold none, and
                    // still carry a cursor.)
                    if seen > before && seen % 20_000 == 0 && seen < size {
                        deep.push(c.to_owned());
                    }
                }
                None => break,
            }
            if let Some(rss) = run.server_pid.and_then(crate::measure::rss_bytes) {
                peak_rss = peak_rss.max(rss);
            }
        }
        check(seen == size, "the walk visits every entity once")?;
        // A page of 10 from cursors all along the walk: a page costs the same at any depth.
        for _ in 0..5 {
            for (i, c) in deep.iter().enumerate() {
                let params = json!({"ql": "select * order by n", "limit": 10, "cursor": c});
                let (body, t) = get(&mut ws, &mut id, params).await?;
                let first = (i as u64 + 1) * 20_000;
                check(numbers(&body, "n").first() == Some(&first), "a deep page")?;
                record(&mut hists, "cursor page of 10 at any depth", t);
            }
        }
        rows.push(Row::new(
            "query",
            setup("cursor walk, whole collection"),
            "seconds",
            walk_started.elapsed().as_secs_f64(),
            None,
            "",
        ));
        let mut forms: Vec<(&str, hdrhistogram::Histogram<u64>)> = hists.drain().collect();
        forms.sort_by_key(|f| f.0);
        for (form, hist) in &forms {
            // The goals are for a million entities on one server core.
            let goal = move |p: f64| {
                let at_scale = size >= 1_000_000 && p == 50.0;
                match *form {
                    "order by n desc, limit 10" if at_scale => Some(Goal::AtMost(10.0)),
                    "contains a word, limit 10" | "cursor walk, a page of 1000" => None,
                    _ if at_scale => Some(Goal::AtMost(5.0)),
                    _ => None,
                }
            };
            rows.extend(latency_rows(
                "query",
                &setup(form),
                hist,
                &[50.0, 99.0],
                Some(&goal),
            ));
        }
        if let (Some(idle), true) = (idle_rss, peak_rss > 0) {
            let above = peak_rss.saturating_sub(idle) as f64 / (1 << 20) as f64;
            let goal = (size >= 1_000_000).then_some(Goal::AtMost(100.0));
            rows.push(Row::new(
                "query",
                setup("server RSS during queries"),
                "MB above idle",
                above,
                goal,
                "",
            ));
        }
        let _ = ws.close(None).await;
    }
    Ok(rows)
}

fn record(
    hists: &mut HashMap<&'static str, hdrhistogram::Histogram<u64>>,
    form: &'static str,
    took: Duration,
) {
    let h = hists.entry(form).or_insert_with(crate::latency_histogram);
    let _ = h.record(took.as_micros().max(1) as u64);
}

fn check(ok: bool, what: &str) -> Result<(), ClientError> {
    if ok {
        Ok(())
    } else {
        Err(ClientError::Unexpected(format!(
            "query: wrong answer ({what})"
        )))
    }
}
