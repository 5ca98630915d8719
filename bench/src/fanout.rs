//! `fanout`: N sockets subscribed to one collection, one writer posting to it at a set rate or
//! as fast as the server acknowledges. Measures delivered events/s, latency from the writer's
//! POST to each receipt, and every lost or repeated event.
//!
//! `broadcast` is the same run with `BROADCAST` in place of `POST`: the message goes to the
//! subscribers without the store, the change log or the dispatcher's matching.

use crate::bits::EventBits;
use crate::client::{self, ClientError, Target};
use crate::measure::{self, CpuWindow};
use crate::report::{Goal, Row};
use crate::{Run, clock_micros, latency_rows};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// How fast the writer posts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Events per second, evenly spaced.
    PerSecond(f64),
    /// As fast as the server acknowledges, with a window of posts in flight.
    Max,
}

/// One fan-out run: `subscribers@rate` on the command line (`1000@max`, `10000@10`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FanoutCase {
    /// Subscribed sockets.
    pub subscribers: usize,
    /// Writer rate.
    pub rate: Rate,
}

impl std::str::FromStr for FanoutCase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, rate) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?}: expected SUBSCRIBERS@RATE, e.g. 1000@max"))?;
        let subscribers = n.parse().map_err(|_| format!("{n:?} is not a count"))?;
        let rate = match rate {
            "max" => Rate::Max,
            r => match r.parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() => Rate::PerSecond(v),
                _ => return Err(format!("{r:?}: a rate is events/s or `max`")),
            },
        };
        Ok(FanoutCase { subscribers, rate })
    }
}

/// How the writer's messages reach the subscribers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    /// `POST`: stored, logged, matched and dispatched as a create event (`fanout`).
    Store,
    /// `BROADCAST`: straight to the path's subscribers, never stored (`broadcast`).
    Broadcast,
}

impl Source {
    /// The scenario's name in the results.
    pub fn scenario(self) -> &'static str {
        match self {
            Source::Store => "fanout",
            Source::Broadcast => "broadcast",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Source::Store => "POST",
            Source::Broadcast => "BROADCAST",
        }
    }
}

/// Posts in flight when the writer runs at full speed.
const MAX_RATE_WINDOW: usize = 64;

/// What one subscriber saw.
struct Seen {
    distinct: u64,
    repeated: u64,
    in_window: u64,
    latency: Histogram<u64>,
    closed: Option<String>,
    bits: EventBits,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            distinct: 0,
            repeated: 0,
            in_window: 0,
            latency: crate::latency_histogram(),
            closed: None,
            bits: EventBits::default(),
        }
    }
}

/// Shared between the subscribers and the run.
struct Shared {
    distinct: AtomicU64,
    /// Events written before this (µs since start) are warm-up: not in latency figures.
    measure_from_us: u64,
    window: (Instant, Instant),
}

/// Runs one case and returns its rows and its delivered events/s.
pub async fn run(
    run: &Run,
    token: &str,
    case: FanoutCase,
    source: Source,
) -> Result<(Vec<Row>, f64), ClientError> {
    let target = &run.target;
    let scenario = source.scenario();
    let collection = format!(
        "bench{}x{}{}",
        std::process::id(),
        clock_micros(),
        match source {
            Source::Store => "messages",
            Source::Broadcast => "broadcasts",
        }
    );
    let gateways = match target.ws.len() {
        1 => String::new(),
        n => format!(" on {n} gateways"),
    };
    let (who, writer, what) = match source {
        Source::Store => ("subscribers", "writer", "events"),
        Source::Broadcast => ("receivers", "sender", "messages"),
    };
    let setup = format!(
        "{} {who}{gateways}, {}",
        case.subscribers,
        match case.rate {
            Rate::Max => format!("{writer} at max rate"),
            Rate::PerSecond(r) => format!("{} {what}/s", crate::report::human(r)),
        }
    );
    // 1. Subscribers, each by connecting straight to the collection's URL.
    let subscribe_url = format!(
        "/{}/{}/{collection}?access_token={token}",
        target.org, target.app
    );
    // Memory per subscriber, idle and under this run's traffic (one node: a cluster spreads
    // the subscribers, and `cluster` reports each gateway's).
    let rss_pid = run.server_pid.filter(|_| target.ws.len() == 1);
    let rss_before = rss_pid.and_then(measure::rss_bytes);
    let mut pending = FuturesUnordered::new();
    let mut sockets = Vec::with_capacity(case.subscribers);
    for i in 0..case.subscribers {
        pending.push(subscribe(target, i, &subscribe_url));
        if pending.len() >= 256 || i + 1 == case.subscribers {
            while let Some(ws) = pending.next().await {
                sockets.push(ws?);
            }
        }
    }
    let rss_idle = rss_pid.and_then(measure::rss_bytes);
    let warm_end = Instant::now() + run.warmup;
    let window = (warm_end, warm_end + run.duration);
    let shared = Arc::new(Shared {
        distinct: AtomicU64::new(0),
        measure_from_us: clock_micros() + run.warmup.as_micros() as u64,
        window,
    });
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let task = tokio::spawn(read_events(ws, shared.clone(), seen.clone()));
            (task, seen)
        })
        .collect();

    // 2. The writer, for warm-up plus the measured window.
    let writer_url = format!("/{}/{}?access_token={token}", target.org, target.app);
    let writer = client::websocket(target, &writer_url).await?;
    let cpu_start = tokio::spawn({
        let pids = run.server_pids();
        async move {
            tokio::time::sleep_until(window.0.into()).await;
            let cpu = CpuWindow::start(pids);
            tokio::time::sleep_until(window.1.into()).await;
            cpu.finish()
        }
    });
    let posted = write(writer, &collection, source, case.rate, window.1, 0).await?;
    let rss_traffic = rss_pid.and_then(measure::rss_bytes);
    let cpu = cpu_start
        .await
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;

    // 3. Let the last events arrive, then stop the subscribers.
    let expected = posted * case.subscribers as u64;
    let drain_until = Instant::now() + Duration::from_secs(10);
    while shared.distinct.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latency = crate::latency_histogram();
    let (mut lost, mut repeated, mut in_window, mut closed) = (0u64, 0u64, 0u64, 0u64);
    let mut close_reasons = std::collections::BTreeSet::new();
    for (task, seen) in readers {
        // Aborting drops the socket; the server sees the disconnect.
        task.abort();
        let _ = task.await;
        let seen = std::mem::take(&mut *lock(&seen));
        lost += posted.saturating_sub(seen.distinct);
        repeated += seen.repeated;
        in_window += seen.in_window;
        let _ = latency.add(&seen.latency);
        if let Some(why) = seen.closed {
            closed += 1;
            close_reasons.insert(why);
        }
    }
    let limited = cpu.limiter(run.server_cores, run.client_cores);
    let delivered = in_window as f64 / run.duration.as_secs_f64();
    let mut rows = vec![
        Row::new(
            scenario,
            &setup,
            match source {
                Source::Store => "events posted",
                Source::Broadcast => "messages broadcast",
            },
            posted as f64,
            None,
            &limited,
        ),
        Row::new(
            scenario,
            &setup,
            "delivered events/s",
            delivered,
            (source == Source::Store
                && case.rate == Rate::Max
                && case.subscribers == 1000
                && !run.is_cluster())
            .then_some(Goal::AtLeast(800_000.0 * run.server_cores)),
            &limited,
        ),
    ];
    // The goals are fan-out's, per server core; a cluster's figures are reported without them.
    let p99_goal = source == Source::Store
        && matches!(case.rate, Rate::PerSecond(r) if r <= 10.0)
        && case.subscribers >= 10_000
        && !run.is_cluster();
    // "Low load": a few subscribers at a low rate, the latency of the path itself. With a
    // thousand subscribers one core needs ~10 ms just to write to them all, so that run's p50
    // is reported without this goal (BENCHMARKS.md).
    let p50_goal = source == Source::Store
        && matches!(case.rate, Rate::PerSecond(r) if r <= 10.0)
        && case.subscribers <= 10
        && !run.is_cluster();
    rows.extend(latency_rows(
        scenario,
        &setup,
        &latency,
        &[50.0, 99.0],
        Some(&|p| match p {
            50.0 if p50_goal => Some(Goal::AtMost(2.0)),
            99.0 if p99_goal => Some(Goal::AtMost(100.0)),
            _ => None,
        }),
    ));
    rows.push(Row::must_be_zero(
        scenario,
        &setup,
        "lost events",
        lost,
        &limited,
    ));
    rows.push(Row::must_be_zero(
        scenario,
        &setup,
        "duplicated events",
        repeated,
        &limited,
    ));
    let per_subscriber = |after: Option<u64>| {
        let grown = after?.saturating_sub(rss_before?);
        Some(grown as f64 / case.subscribers.max(1) as f64)
    };
    for (when, after) in [("idle", rss_idle), ("at the end of the run", rss_traffic)] {
        if let Some(bytes) = per_subscriber(after) {
            rows.push(Row::new(
                scenario,
                &setup,
                &format!("server RSS bytes per subscriber, {when}"),
                bytes,
                None,
                "memory",
            ));
        }
    }
    if closed > 0 {
        let reasons: Vec<_> = close_reasons.into_iter().collect();
        rows.push(Row::new(
            scenario,
            &setup,
            "subscribers closed by the server",
            closed as f64,
            None,
            &reasons.join(", "),
        ));
    }
    Ok((rows, delivered))
}

async fn subscribe(
    target: &Target,
    n: usize,
    url: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, ClientError> {
    let mut ws = client::websocket_via(target, n, url).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t)))
            if t.contains("\"status\":200") && t.contains("\"subscription\"") =>
        {
            Ok(ws)
        }
        other => Err(ClientError::Unexpected(format!(
            "subscription refused: {other:?}"
        ))),
    }
}

/// Reads events until the socket ends or the task is aborted; what it saw stays in `seen`,
/// which the run reads after aborting it. (One task per socket, nothing else to wait on: at
/// ten thousand sockets the client's cost per event decides whether it keeps up.)
async fn read_events(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    shared: Arc<Shared>,
    seen: Arc<Mutex<Seen>>,
) {
    while let Some(msg) = ws.next().await {
        let text = match crate::client::text_or_end(msg) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(why) => {
                lock(&seen).closed = Some(why);
                return;
            }
        };
        let now = Instant::now();
        let now_us = clock_micros();
        let (Some(n), Some(t)) = (
            client::field_u64(&text, "\"bench_n\":"),
            client::field_u64(&text, "\"bench_t\":"),
        ) else {
            continue;
        };
        let mut seen = lock(&seen);
        if !seen.bits.mark(n) {
            seen.repeated += 1;
            continue;
        }
        seen.distinct += 1;
        shared.distinct.fetch_add(1, Ordering::Relaxed);
        if now >= shared.window.0 && now < shared.window.1 {
            seen.in_window += 1;
        }
        if t >= shared.measure_from_us {
            let _ = seen.latency.record(now_us.saturating_sub(t).max(1));
        }
    }
    lock(&seen).closed = Some("connection ended".into());
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// Posts (or broadcasts) until `until`, numbering the events' `bench_n` from `first`; returns
/// how many the server acknowledged with 200 (an error if it refused any).
pub async fn write(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    collection: &str,
    source: Source,
    rate: Rate,
    until: Instant,
    first: u64,
) -> Result<u64, ClientError> {
    let (mut sink, mut stream) = ws.split();
    // The welcome frame.
    let _ = stream.next().await;
    let method = source.method();
    let frame = |n: u64| {
        format!(
            r#"{{"id":{n},"method":"{method}","path":"/{collection}","body":{{"bench_n":{n},"bench_t":{}}}}}"#,
            clock_micros()
        )
    };
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // The first refusal's answer, to say why.
    let first_refusal = Arc::new(Mutex::new(None::<String>));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(match rate {
        Rate::Max => MAX_RATE_WINDOW,
        Rate::PerSecond(_) => 10_000,
    }));
    let reader = tokio::spawn({
        let (acked, failed, in_flight) = (acked.clone(), failed.clone(), in_flight.clone());
        let first_refusal = first_refusal.clone();
        async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(t) = msg
                    && let Some((_, status)) = client::response_id_status(&t)
                {
                    if status == 200 {
                        acked.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_refusal.lock().unwrap_or_else(|p| p.into_inner());
                        if first.is_none() {
                            *first = Some(t.chars().take(300).collect());
                        }
                    }
                    in_flight.add_permits(1);
                }
            }
        }
    });
    let mut n = first;
    let mut tick = match rate {
        Rate::PerSecond(r) => Some(tokio::time::interval(Duration::from_secs_f64(1.0 / r))),
        Rate::Max => None,
    };
    while Instant::now() < until {
        if let Some(tick) = tick.as_mut() {
            tick.tick().await;
        }
        let permit = tokio::select! {
            p = in_flight.acquire() => p,
            _ = tokio::time::sleep_until(until.into()) => break,
        };
        permit
            .map_err(|e| ClientError::Unexpected(e.to_string()))?
            .forget();
        sink.send(Message::text(frame(n))).await?;
        n += 1;
    }
    // Wait for the answers to every post.
    let answered_by = Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n - first
        && Instant::now() < answered_by
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = sink.close().await;
    reader.abort();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        let why = first_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        return Err(ClientError::Unexpected(format!(
            "{failed} of {} {method}s failed; the first answer: {why}",
            n - first
        )));
    }
    Ok(acked.load(Ordering::Relaxed))
}
