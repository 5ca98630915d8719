//! `presence`: W watchers present on one group, and N other users who each join the group and
//! leave it in turn, one change at a time at a set rate (100 changes/s by default). Each user
//! joins and leaves once, so a run is 2N changes, whatever `--duration` says. Measures latency
//! from a joiner's `PRESENCE` frame to each watcher's event, the server's CPU per change, and
//! every lost or repeated event.
//!
//! Presence is per user, so every joiner and watcher is a user of its own, created for the
//! run (by an organization admin) and logged in: Argon2 twice per user, which makes the setup
//! of the full run take a minute or two.

use crate::client::{self, ClientError, Target};
use crate::measure::CpuWindow;
use crate::report::{Goal, Row};
use crate::{Run, clock_micros, latency_rows};
use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// One presence run.
#[derive(Clone, Copy, Debug)]
pub struct PresenceCase {
    /// Users who join and leave.
    pub joiners: usize,
    /// Users present throughout.
    pub watchers: usize,
    /// Changes per second.
    pub rate: f64,
}

/// The p99 goal, join (or leave) to event, with a thousand watchers at 100 changes/s.
const P99_GOAL_MS: f64 = 50.0;
/// Socket setups under way at once.
const SETUP_CONCURRENCY: usize = 8;

type Ws = WebSocketStream<TcpStream>;

/// Shared between the driver and the watchers.
struct Shared {
    /// The names' common start: `{prefix}j{i}` joins and leaves, `{prefix}w{i}` watches.
    prefix: String,
    /// When change `n` was sent (µs since start; 0 until it is). Change `2i` is joiner `i`'s
    /// join, `2i + 1` its leave.
    sent_us: Vec<AtomicU64>,
    /// Changes before this one are warm-up: not in the latency figures.
    measure_from: usize,
    /// Events of joiners delivered to watchers, each counted once.
    delivered: AtomicU64,
}

/// What one watcher saw of the joiners.
struct Seen {
    bits: Vec<u64>,
    distinct: u64,
    repeated: u64,
    /// Events that are neither a joiner's join nor its leave (an update, a stranger).
    unexpected: u64,
    latency: Histogram<u64>,
    closed: Option<String>,
}

impl Seen {
    fn new(changes: usize) -> Seen {
        Seen {
            bits: vec![0; changes.div_ceil(64)],
            distinct: 0,
            repeated: 0,
            unexpected: 0,
            latency: crate::latency_histogram(),
            closed: None,
        }
    }

    /// Marks change `n`; false if it was seen before.
    fn mark(&mut self, n: usize) -> bool {
        let (word, bit) = (n / 64, n % 64);
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        fresh
    }
}

/// Runs the case and returns its rows. `admin` is an organization admin's token.
pub async fn run(run: &Run, admin: &str, case: PresenceCase) -> Result<Vec<Row>, ClientError> {
    let target = &run.target;
    let rate = if case.rate.is_finite() && case.rate > 0.0 {
        case.rate
    } else {
        return Err(ClientError::Unexpected(format!(
            "a presence rate is changes/s above 0, not {}",
            case.rate
        )));
    };
    let setup = format!(
        "{} users join and leave one group, {} watch, {} changes/s",
        case.joiners,
        case.watchers,
        crate::report::human(rate)
    );
    let prefix = format!("bench{}t{}", std::process::id(), clock_micros());
    let group = format!("{prefix}group");
    let changes = 2 * case.joiners;
    // The first seconds' changes warm up, but never more than half of them.
    let warm = ((run.warmup.as_secs_f64() * rate) as usize).min(changes / 2);

    // 1. The group and the users, each logged in.
    let mut http = client::http(target).await?;
    let app = format!("/{}/{}", target.org, target.app);
    let (status, body) = client::json_request(
        &mut http,
        target,
        "POST",
        &format!("{app}/groups"),
        Some(admin),
        &json!({"path": group}),
    )
    .await?;
    if status != 200 {
        return Err(ClientError::Unexpected(format!(
            "creating the group: {status} {body}"
        )));
    }
    eprintln!(
        "    creating {} users, a token for each",
        case.joiners + case.watchers
    );
    let names: Vec<String> = (0..case.watchers)
        .map(|i| format!("{prefix}w{i}"))
        .chain((0..case.joiners).map(|i| format!("{prefix}j{i}")))
        .collect();
    let tokens = client::users_with_tokens(target, admin, &names).await?;
    let (watcher_tokens, joiner_tokens) = tokens.split_at(case.watchers);

    // 2. The watchers: present on the group and reading from the moment they join (the
    // others' joins come to each one already present).
    eprintln!("    {} watchers join", case.watchers);
    let shared = Arc::new(Shared {
        prefix: prefix.clone(),
        sent_us: (0..changes).map(|_| AtomicU64::new(0)).collect(),
        measure_from: warm,
        delivered: AtomicU64::new(0),
    });
    let path = format!("/groups/{group}");
    let mut watchers = Vec::with_capacity(case.watchers);
    let mut pending = FuturesUnordered::new();
    for (i, token) in watcher_tokens.iter().enumerate() {
        pending.push(present(target, i, token, &path));
        if pending.len() >= SETUP_CONCURRENCY || i + 1 == case.watchers {
            while let Some(ws) = pending.next().await {
                let seen = Arc::new(Mutex::new(Seen::new(changes)));
                let task = tokio::spawn(watch(ws?, shared.clone(), seen.clone()));
                watchers.push((task, seen));
            }
        }
    }

    // 3. The joiners' sockets, connected but not present; their answers are counted.
    let answered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut sinks = Vec::with_capacity(case.joiners);
    let mut readers = Vec::with_capacity(case.joiners);
    for (i, token) in joiner_tokens.iter().enumerate() {
        let ws = connect(target, case.watchers + i, token).await?;
        let (sink, stream) = ws.split();
        sinks.push(sink);
        readers.push(tokio::spawn(read_answers(
            stream,
            answered.clone(),
            refused.clone(),
        )));
    }

    // 4. One change every 1/rate s: joiner i joins, then leaves, then joiner i + 1 joins.
    eprintln!("    {changes} changes at {rate}/s");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut cpu = None;
    let mut measured_from = Instant::now();
    for n in 0..changes {
        tick.tick().await;
        if n == warm {
            cpu = Some(CpuWindow::start(run.server_pids()));
            measured_from = Instant::now();
        }
        send_change(&mut sinks[n / 2], n, &path, &shared).await?;
    }
    // 5. Every answer and every event, or ten seconds.
    let expected = (changes * case.watchers) as u64;
    let drain_until = Instant::now() + Duration::from_secs(10);
    while (answered.load(Ordering::Relaxed) < changes as u64
        || shared.delivered.load(Ordering::Relaxed) < expected)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let measured_secs = measured_from.elapsed().as_secs_f64();
    let (cpu_use, cpu_seconds) = match &cpu {
        Some(c) => (c.finish(), c.server_seconds()),
        None => Default::default(),
    };
    for r in readers {
        r.abort();
    }
    drop(sinks);
    let refused = std::mem::take(&mut *refused.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(first) = refused.first() {
        return Err(ClientError::Unexpected(format!(
            "{} presence changes refused; the first: {first}",
            refused.len()
        )));
    }

    let mut latency = crate::latency_histogram();
    let (mut lost, mut repeated, mut unexpected, mut closed) = (0u64, 0u64, 0u64, 0u64);
    let mut close_reasons = std::collections::BTreeSet::new();
    for (task, seen) in watchers {
        task.abort();
        let _ = task.await;
        let seen = lock(&seen);
        lost += (changes as u64).saturating_sub(seen.distinct);
        repeated += seen.repeated;
        unexpected += seen.unexpected;
        let _ = latency.add(&seen.latency);
        if let Some(why) = &seen.closed {
            closed += 1;
            close_reasons.insert(why.clone());
        }
    }
    let limited = cpu_use.limiter(run.server_cores, run.client_cores);
    let measured = (changes - warm) as f64;
    let mut rows = vec![Row::new(
        "presence",
        &setup,
        "presence changes",
        changes as f64,
        None,
        &limited,
    )];
    let goal = case.watchers >= 1000 && rate >= 100.0 && !run.is_cluster();
    rows.extend(latency_rows(
        "presence",
        &setup,
        &latency,
        &[50.0, 99.0],
        Some(&|p| (p == 99.0 && goal).then_some(Goal::AtMost(P99_GOAL_MS))),
    ));
    if let Some(seconds) = cpu_seconds {
        rows.push(Row::new(
            "presence",
            &setup,
            "server CPU µs per change",
            seconds / measured.max(1.0) * 1e6,
            None,
            &limited,
        ));
    }
    rows.push(Row::new(
        "presence",
        &setup,
        "delivered events/s",
        measured * case.watchers as f64 / measured_secs.max(1e-9),
        None,
        &limited,
    ));
    for (metric, value) in [
        ("lost events", lost),
        ("duplicated events", repeated),
        ("unexpected events", unexpected),
    ] {
        rows.push(Row::must_be_zero("presence", &setup, metric, value, ""));
    }
    if closed > 0 {
        let reasons: Vec<_> = close_reasons.into_iter().collect();
        rows.push(Row::new(
            "presence",
            &setup,
            "watchers closed by the server",
            closed as f64,
            None,
            &reasons.join(", "),
        ));
    }
    Ok(rows)
}

/// A socket of the app (not subscribed to anything) through gateway `n`, past its welcome.
async fn connect(target: &Target, n: usize, token: &str) -> Result<Ws, ClientError> {
    let url = format!("/{}/{}?access_token={token}", target.org, target.app);
    let mut ws = client::websocket_via(target, n, &url).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"connected\":true") => Ok(ws),
        other => Err(ClientError::Unexpected(format!(
            "socket refused: {other:?}"
        ))),
    }
}

/// Watcher `n`'s socket, present on `path` (the others' joins before its own answer are in
/// its snapshot, and skipped).
async fn present(target: &Target, n: usize, token: &str, path: &str) -> Result<Ws, ClientError> {
    let mut ws = connect(target, n, token).await?;
    let join = json!({"id": 1, "method": "PRESENCE", "path": path, "body": {"state": {}}});
    ws.send(Message::text(join.to_string())).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg?
            && let Some((1, status)) = client::response_id_status(&t)
        {
            if status == 200 {
                return Ok(ws);
            }
            return Err(ClientError::Unexpected(format!("watcher's join: {t}")));
        }
    }
    Err(ClientError::Unexpected(
        "a watcher's socket ended before its join was answered".into(),
    ))
}

/// Sends change `n`: joiner `n / 2` joins (`n` even) or leaves, timestamped as it goes.
async fn send_change(
    sink: &mut SplitSink<Ws, Message>,
    n: usize,
    path: &str,
    shared: &Shared,
) -> Result<(), ClientError> {
    let body = if n.is_multiple_of(2) {
        json!({"state": {"n": n}})
    } else {
        json!({"leave": true})
    };
    let frame = json!({"id": n, "method": "PRESENCE", "path": path, "body": body});
    shared.sent_us[n].store(clock_micros().max(1), Ordering::Relaxed);
    sink.send(Message::text(frame.to_string())).await?;
    Ok(())
}

/// Counts a joiner's answers; keeps what a refusal said.
async fn read_answers(
    mut stream: futures_util::stream::SplitStream<Ws>,
    answered: Arc<AtomicU64>,
    refused: Arc<Mutex<Vec<String>>>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        if let Message::Text(t) = msg
            && let Some((_, status)) = client::response_id_status(&t)
        {
            if status != 200 {
                refused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(t.chars().take(200).collect());
            }
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads a watcher's events until the socket ends or the task is aborted.
async fn watch(mut ws: Ws, shared: Arc<Shared>, seen: Arc<Mutex<Seen>>) {
    let joiner = format!("\"username\":\"{}j", shared.prefix);
    let watcher = format!("\"username\":\"{}w", shared.prefix);
    while let Some(msg) = ws.next().await {
        let text = match crate::client::text_or_end(msg) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(why) => {
                lock(&seen).closed = Some(why);
                return;
            }
        };
        let now_us = clock_micros();
        if !text.starts_with("{\"event\":\"presence\"") || text.contains(&watcher) {
            // Another watcher joining while the run is set up.
            continue;
        }
        let kind = if text.contains("\"kind\":\"join\"") {
            Some(0)
        } else if text.contains("\"kind\":\"leave\"") {
            Some(1)
        } else {
            None
        };
        let i = text
            .find(&joiner)
            .and_then(|at| client::field_u64(&text[at..], &joiner));
        let mut seen = lock(&seen);
        let (Some(i), Some(kind)) = (i, kind) else {
            seen.unexpected += 1;
            continue;
        };
        let n = 2 * i as usize + kind;
        if n >= shared.sent_us.len() {
            seen.unexpected += 1;
            continue;
        }
        if !seen.mark(n) {
            seen.repeated += 1;
            continue;
        }
        seen.distinct += 1;
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        let sent = shared.sent_us[n].load(Ordering::Relaxed);
        if n >= shared.measure_from && sent > 0 {
            let _ = seen.latency.record(now_us.saturating_sub(sent).max(1));
        }
    }
    lock(&seen).closed = Some("connection ended".into());
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}
