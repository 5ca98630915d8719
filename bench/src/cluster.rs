//! `cluster`: many subscribed sockets spread over a cluster's gateways and held by several
//! client processes (one process holds at most ~19.5k sockets here: the open-file limit),
//! then three phases over the same sockets:
//!
//! 1. **idle**: every gateway's RSS per socket, and what PostgreSQL and NATS do while
//!    nothing happens;
//! 2. **fanout**: a writer posts events at a low rate (1/s by default) to the collection
//!    every socket is subscribed to; latency from each POST to each receipt, and every lost
//!    or repeated event;
//! 3. **churn**: the same while sockets reconnect at a set rate, each to another gateway than
//!    the one it was on, and resume with the `seq` it last saw (`since`); time from dropping
//!    the socket to the resumed subscription's confirmation, and lost or repeated events.
//!
//! NATS's own counters (`/varz` of its monitoring port) give the messages the bus carried in
//! each phase, to check that it carries O(events), never O(deliveries).
//!
//! This process is the coordinator: it writes the events and reads the counters. Each shard
//! is this binary started again with `--shard`, which holds its share of the sockets and is
//! driven by one JSON [`Command`] a line on its stdin, answering one [`Reply`] a line on its
//! stdout. Latency crosses processes because event timestamps are on the machine's monotonic
//! clock ([`crate::clock_micros`]).

use crate::bits::EventBits;
use crate::client::{self, ClientError, Target};
use crate::fanout::{self, Rate, Source};
use crate::measure::{self, CpuWindow};
use crate::report::{Goal, Row};
use crate::{Run, clock_micros, latency_rows};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

/// The goal for one event to every socket of the cluster, p99.
const P99_GOAL_MS: f64 = 1_000.0;
/// How long a shard waits for the last events of a phase before counting what is missing as
/// lost: long enough for an overloaded cluster's late events to arrive.
const DRAIN: Duration = Duration::from_secs(90);
/// How long after the last event every event should have arrived; what arrives later is
/// counted as late (not lost).
const LATE: Duration = Duration::from_secs(15);
/// Connects (handshake, auth, subscribe) under way at once in one shard.
const CONNECTS_IN_FLIGHT: usize = 256;
/// Tries of one reconnect (each to the next gateway) before its socket is given up.
const RESUME_TRIES: u32 = 5;

/// What the cluster run needs besides [`Run`] (from the command line).
pub struct ClusterCase {
    /// Subscribed sockets in all.
    pub sockets: usize,
    /// Client processes holding them (0: one per gateway).
    pub shards: usize,
    /// Events per second in the fanout and churn phases.
    pub event_rate: f64,
    /// Reconnects per second, over all shards, in the churn phase.
    pub churn_rate: f64,
    /// How long the idle phase watches PostgreSQL and NATS.
    pub idle: Duration,
    /// Every gateway's process id, in the order of the WebSocket addresses.
    pub gateway_pids: Vec<u32>,
    /// NATS's monitoring address (`/varz`), when the run has its own server.
    pub nats_monitor: Option<SocketAddr>,
    /// That NATS server's process id, for its CPU.
    pub nats_pid: Option<u32>,
    /// PostgreSQL (a URL for `psql`) and the cluster's schema, for its table counters.
    pub postgres: Option<(String, String)>,
}

/// A command to a shard.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Command {
    /// Open `sockets` sockets to gateway `gateway`, each subscribed to `collection` by its URL.
    Open {
        token: String,
        collection: String,
        sockets: usize,
        gateway: usize,
    },
    /// How many sockets are still open, and why the others ended.
    Status,
    /// Reconnect `rate` sockets a second, round robin, for `secs`, each to the next gateway.
    Churn { rate: f64, secs: f64 },
    /// Count events `from..to` on every socket: wait for them (at most [`DRAIN`]), then say
    /// what is missing and repeated, with the latency of events `measure_from..to`.
    Tally {
        from: u64,
        to: u64,
        measure_from: u64,
    },
    /// Close every socket and end.
    Exit,
}

/// A shard's answer to a [`Command`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
enum Reply {
    Opened,
    Status {
        open: u64,
        ended: BTreeMap<String, u64>,
    },
    Churned {
        reconnects: u64,
        failed_tries: u64,
        given_up: u64,
        not_recovered: u64,
        /// Resume times in µs, as (value, count) pairs of a histogram.
        resume: Vec<(u64, u64)>,
    },
    Tallied {
        lost: u64,
        /// Deliveries missing [`LATE`] after the tally began (lost ones included).
        late: u64,
        /// How long the tally waited for the last of them, ms.
        waited_ms: u64,
        duplicated: u64,
        /// Delivery latencies in µs, as (value, count) pairs of a histogram.
        latency: Vec<(u64, u64)>,
    },
    Exited,
    Failed {
        error: String,
    },
}

fn histogram_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        let _ = h.record_n(value.max(1), count);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// The shard: a process holding its share of the sockets.

/// What one logical subscriber saw, across all the sockets it reconnected with.
#[derive(Default)]
struct Seen {
    bits: EventBits,
    /// `bench_n` of every event that came again.
    repeated: Vec<u64>,
    /// The `seq` to resume from: the last event's, or the subscription's own at first.
    last_seq: u64,
    /// Why its socket ended for good, if it did.
    ended: Option<String>,
}

/// One subscriber: its tally, and the bell that tells its task to reconnect.
#[derive(Default)]
struct Subscriber {
    seen: Mutex<Seen>,
    reconnect: Notify,
}

/// Reconnect figures of the churn phase.
struct ResumeStats {
    done: u64,
    failed_tries: u64,
    given_up: u64,
    not_recovered: u64,
    time: Histogram<u64>,
}

impl Default for ResumeStats {
    fn default() -> ResumeStats {
        ResumeStats {
            done: 0,
            failed_tries: 0,
            given_up: 0,
            not_recovered: 0,
            time: crate::latency_histogram(),
        }
    }
}

/// What a shard's subscriber tasks share.
struct ShardCtx {
    target: Target,
    /// The collection's path (`/benchNNNcluster`) for `SUBSCRIBE`.
    path: String,
    /// The application's URL with the token: where a reconnect goes before it subscribes.
    app_url: String,
    /// Delivery latency (µs) of each event, by its `bench_n`.
    latency: Mutex<BTreeMap<u64, Histogram<u64>>>,
    resume: Mutex<ResumeStats>,
}

impl ShardCtx {
    /// An event frame (or any other frame, ignored) reached subscriber `sub`.
    fn on_frame(&self, sub: &Subscriber, text: &str) {
        let (Some(n), Some(t)) = (
            client::field_u64(text, "\"bench_n\":"),
            client::field_u64(text, "\"bench_t\":"),
        ) else {
            return;
        };
        let now = clock_micros();
        {
            let mut seen = lock(&sub.seen);
            if let Some(seq) = client::field_u64(text, "\"seq\":") {
                seen.last_seq = seen.last_seq.max(seq);
            }
            if !seen.bits.mark(n) {
                seen.repeated.push(n);
                return;
            }
        }
        let mut latency = lock(&self.latency);
        let h = latency.entry(n).or_insert_with(crate::latency_histogram);
        let _ = h.record(now.saturating_sub(t).max(1));
    }
}

/// A shard: its sockets' subscribers, once opened.
struct Shard {
    target: Target,
    ctx: Option<Arc<ShardCtx>>,
    subscribers: Vec<Arc<Subscriber>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs this process as shard `index` of a cluster run: commands on stdin, replies on
/// stdout, until `exit` or the end of stdin (the coordinator ended).
pub async fn shard(target: Target, index: usize) -> Result<(), ClientError> {
    let local = |what: &str| {
        let what = format!("client process {index}: {what}");
        move |source| ClientError::Local { what, source }
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut shard = Shard {
        target,
        ctx: None,
        subscribers: Vec::new(),
        tasks: Vec::new(),
    };
    while let Some(line) = lines.next_line().await.map_err(local("stdin"))? {
        let (reply, exit) = match serde_json::from_str::<Command>(&line) {
            Ok(Command::Exit) => (Reply::Exited, true),
            Ok(cmd) => (
                shard.handle(cmd).await.unwrap_or_else(|e| Reply::Failed {
                    error: e.to_string(),
                }),
                false,
            ),
            Err(e) => (
                Reply::Failed {
                    error: format!("bad command {line:?}: {e}"),
                },
                false,
            ),
        };
        let mut text = serde_json::to_string(&reply)
            .map_err(|e| ClientError::Unexpected(format!("reply: {e}")))?;
        text.push('\n');
        stdout
            .write_all(text.as_bytes())
            .await
            .map_err(local("stdout"))?;
        stdout.flush().await.map_err(local("stdout"))?;
        if exit {
            break;
        }
    }
    for task in shard.tasks {
        task.abort();
    }
    Ok(())
}

impl Shard {
    async fn handle(&mut self, cmd: Command) -> Result<Reply, ClientError> {
        match cmd {
            Command::Open {
                token,
                collection,
                sockets,
                gateway,
            } => self.open(&token, &collection, sockets, gateway).await,
            Command::Status => Ok(self.status()),
            Command::Churn { rate, secs } => self.churn(rate, secs).await,
            Command::Tally {
                from,
                to,
                measure_from,
            } => Ok(self.tally(from, to, measure_from).await),
            Command::Exit => Ok(Reply::Exited),
        }
    }

    fn ctx(&self) -> Result<Arc<ShardCtx>, ClientError> {
        self.ctx
            .clone()
            .ok_or_else(|| ClientError::Unexpected("no sockets opened yet".into()))
    }

    async fn open(
        &mut self,
        token: &str,
        collection: &str,
        sockets: usize,
        gateway: usize,
    ) -> Result<Reply, ClientError> {
        let (org, app) = (&self.target.org, &self.target.app);
        let ctx = Arc::new(ShardCtx {
            target: self.target.clone(),
            path: format!("/{collection}"),
            app_url: format!("/{org}/{app}?access_token={token}"),
            latency: Mutex::new(BTreeMap::new()),
            resume: Mutex::new(ResumeStats::default()),
        });
        let url = format!("/{org}/{app}/{collection}?access_token={token}");
        let target = self.target.clone();
        let mut pending = FuturesUnordered::new();
        for i in 0..sockets {
            pending.push(subscribe_by_url(&target, gateway, &url));
            if pending.len() >= CONNECTS_IN_FLIGHT || i + 1 == sockets {
                while let Some(opened) = pending.next().await {
                    let (ws, seq) = opened?;
                    let sub = Arc::new(Subscriber::default());
                    lock(&sub.seen).last_seq = seq;
                    self.tasks
                        .push(tokio::spawn(hold(ctx.clone(), sub.clone(), ws, gateway)));
                    self.subscribers.push(sub);
                }
            }
        }
        self.ctx = Some(ctx);
        Ok(Reply::Opened)
    }

    fn status(&self) -> Reply {
        let mut ended = BTreeMap::new();
        let mut open = 0;
        for sub in &self.subscribers {
            match &lock(&sub.seen).ended {
                Some(why) => *ended.entry(why.clone()).or_insert(0) += 1,
                None => open += 1,
            }
        }
        Reply::Status { open, ended }
    }

    async fn churn(&self, rate: f64, secs: f64) -> Result<Reply, ClientError> {
        let ctx = self.ctx()?;
        *lock(&ctx.resume) = ResumeStats::default();
        let mut asked = 0u64;
        if rate > 0.0 && !self.subscribers.is_empty() {
            let until = Instant::now() + Duration::from_secs_f64(secs.max(0.0));
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            while Instant::now() < until {
                tick.tick().await;
                let sub = &self.subscribers[asked as usize % self.subscribers.len()];
                sub.reconnect.notify_one();
                asked += 1;
            }
        }
        // The last reconnects finish (or give up) before the figures are taken.
        let settle_by = Instant::now() + Duration::from_secs(10);
        loop {
            let finished = {
                let r = lock(&ctx.resume);
                r.done + r.given_up
            };
            if finished >= asked || Instant::now() >= settle_by {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = lock(&ctx.resume);
        Ok(Reply::Churned {
            reconnects: r.done,
            failed_tries: r.failed_tries,
            given_up: r.given_up,
            not_recovered: r.not_recovered,
            resume: histogram_pairs(&r.time),
        })
    }

    fn missing(&self, from: u64, to: u64) -> u64 {
        self.subscribers
            .iter()
            .map(|sub| {
                let seen = lock(&sub.seen);
                (from..to).filter(|n| !seen.bits.has(*n)).count() as u64
            })
            .sum()
    }

    async fn tally(&self, from: u64, to: u64, measure_from: u64) -> Reply {
        let started = Instant::now();
        let mut lost = self.missing(from, to);
        let mut late = None;
        while lost > 0 && started.elapsed() < DRAIN {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lost = self.missing(from, to);
            if late.is_none() && started.elapsed() >= LATE {
                late = Some(lost);
            }
        }
        let waited_ms = started.elapsed().as_millis() as u64;
        let duplicated = self
            .subscribers
            .iter()
            .map(|sub| {
                let seen = lock(&sub.seen);
                seen.repeated
                    .iter()
                    .filter(|n| (from..to).contains(*n))
                    .count() as u64
            })
            .sum();
        let mut latency = crate::latency_histogram();
        if let Some(ctx) = &self.ctx {
            for (_, h) in lock(&ctx.latency).range(measure_from..to) {
                let _ = latency.add(h);
            }
        }
        Reply::Tallied {
            lost,
            late: late.unwrap_or(0),
            waited_ms,
            duplicated,
            latency: histogram_pairs(&latency),
        }
    }
}

/// Connects to `url` on gateway `gateway` (a collection's URL: subscribed at once) and returns
/// the socket with the subscription's `seq`.
async fn subscribe_by_url(
    target: &Target,
    gateway: usize,
    url: &str,
) -> Result<(Ws, u64), ClientError> {
    let mut ws = client::websocket_via(target, gateway, url).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t)))
            if t.contains("\"status\":200") && t.contains("\"subscription\"") =>
        {
            let seq = client::field_u64(&t, "\"seq\":").unwrap_or(0);
            Ok((ws, seq))
        }
        other => Err(ClientError::Unexpected(format!(
            "subscription refused: {other:?}"
        ))),
    }
}

/// Reads one subscriber's events until its socket ends for good, reconnecting it to the next
/// gateway whenever its bell rings.
async fn hold(ctx: Arc<ShardCtx>, sub: Arc<Subscriber>, mut ws: Ws, mut gateway: usize) {
    let ended = loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(msg) = msg else { break "connection ended".to_owned() };
                match client::text_or_end(msg) {
                    Ok(Some(text)) => ctx.on_frame(&sub, &text),
                    Ok(None) => {}
                    Err(why) => break why,
                }
            }
            () = sub.reconnect.notified() => {
                // Dropped without a close handshake, as a client that lost its network: what
                // the gateway had sent and this socket had not read is gone with it.
                drop(ws);
                match resume(&ctx, &sub, &mut gateway).await {
                    Ok(new) => ws = new,
                    Err(why) => break why,
                }
            }
        }
    };
    lock(&sub.seen).ended = Some(ended);
}

/// Opens a socket to the gateway after `gateway` (moving `gateway` on) and resubscribes with
/// `since`, the `seq` last seen; retries on the next gateway, up to [`RESUME_TRIES`].
async fn resume(ctx: &ShardCtx, sub: &Subscriber, gateway: &mut usize) -> Result<Ws, String> {
    let started = Instant::now();
    let since = lock(&sub.seen).last_seq;
    let mut tries = 0;
    loop {
        *gateway = (*gateway + 1) % ctx.target.ws.len().max(1);
        match resubscribe(ctx, sub, *gateway, since).await {
            Ok((ws, recovered)) => {
                let mut r = lock(&ctx.resume);
                r.done += 1;
                if !recovered {
                    r.not_recovered += 1;
                }
                let _ = r.time.record((started.elapsed().as_micros() as u64).max(1));
                return Ok(ws);
            }
            Err(why) => {
                tries += 1;
                lock(&ctx.resume).failed_tries += 1;
                if tries >= RESUME_TRIES {
                    lock(&ctx.resume).given_up += 1;
                    return Err(format!("reconnect failed {tries} times: {why}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One try of [`resume`]: connect, `SUBSCRIBE` with `since`, and wait for the answer (events
/// that come first are the subscriber's too). Returns the socket and whether the server said
/// `recovered: true`.
async fn resubscribe(
    ctx: &ShardCtx,
    sub: &Subscriber,
    gateway: usize,
    since: u64,
) -> Result<(Ws, bool), String> {
    let mut ws = client::websocket_via(&ctx.target, gateway, &ctx.app_url)
        .await
        .map_err(|e| e.to_string())?;
    let frame = serde_json::json!({
        "id": 1, "method": "SUBSCRIBE", "path": ctx.path, "since": since
    });
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(msg) = ws.next().await {
        let Some(text) = client::text_or_end(msg)? else {
            continue;
        };
        match client::response_id_status(&text) {
            Some((1, 200)) => return Ok((ws, text.contains("\"recovered\":true"))),
            Some((1, status)) => return Err(format!("SUBSCRIBE answered {status}: {text}")),
            _ => ctx.on_frame(sub, &text),
        }
    }
    Err("connection ended before the SUBSCRIBE answer".into())
}

// ---------------------------------------------------------------------------------------
// The coordinator.

/// A running shard process and its pipes.
struct ShardProcess {
    index: usize,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ShardProcess {
    fn spawn(index: usize) -> Result<ShardProcess, ClientError> {
        let err = |detail: String| ClientError::Shard {
            shard: index,
            detail,
        };
        let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
        // The same arguments as this process (addresses, sources, threads), as a shard.
        let mut child = tokio::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .arg("--shard")
            .arg(index.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot start: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(err("no pipes".into()));
        };
        Ok(ShardProcess {
            index,
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn send(&mut self, cmd: &Command) -> Result<(), ClientError> {
        let mut text = serde_json::to_string(cmd).map_err(|e| ClientError::Shard {
            shard: self.index,
            detail: e.to_string(),
        })?;
        text.push('\n');
        self.stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|source| ClientError::Local {
                what: format!("client process {}: stdin", self.index),
                source,
            })
    }

    async fn recv(&mut self) -> Result<Reply, ClientError> {
        let err = |detail: String| ClientError::Shard {
            shard: self.index,
            detail,
        };
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err("ended".into()))?;
        match serde_json::from_str(&line) {
            Ok(Reply::Failed { error }) => Err(err(error)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(err(format!("bad reply {line:?}: {e}"))),
        }
    }
}

/// Sends each shard its command, then collects every reply (the shards work at once).
async fn ask_all(
    shards: &mut [ShardProcess],
    cmd: impl Fn(usize) -> Command,
) -> Result<Vec<Reply>, ClientError> {
    send_all(shards, cmd).await?;
    recv_all(shards).await
}

async fn send_all(
    shards: &mut [ShardProcess],
    cmd: impl Fn(usize) -> Command,
) -> Result<(), ClientError> {
    for (i, shard) in shards.iter_mut().enumerate() {
        shard.send(&cmd(i)).await?;
    }
    Ok(())
}

async fn recv_all(shards: &mut [ShardProcess]) -> Result<Vec<Reply>, ClientError> {
    let mut replies = Vec::with_capacity(shards.len());
    for shard in shards.iter_mut() {
        replies.push(shard.recv().await?);
    }
    Ok(replies)
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Unexpected(format!("client process answered {reply:?}"))
}

/// NATS's message and byte counters at one moment.
#[derive(Clone, Copy, Default)]
struct Varz {
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    /// Messages delivered on the nodes' `{subject}.signals` subscriptions: what events
    /// cause, without the presence heartbeats beside them.
    signals: u64,
}

impl Varz {
    fn since(self, before: Varz) -> Varz {
        Varz {
            in_msgs: self.in_msgs.saturating_sub(before.in_msgs),
            out_msgs: self.out_msgs.saturating_sub(before.out_msgs),
            in_bytes: self.in_bytes.saturating_sub(before.in_bytes),
            out_bytes: self.out_bytes.saturating_sub(before.out_bytes),
            signals: self.signals.saturating_sub(before.signals),
        }
    }
}

async fn varz(target: &Target, monitor: Option<SocketAddr>) -> Result<Option<Varz>, ClientError> {
    let Some(addr) = monitor else {
        return Ok(None);
    };
    let v = client::get_json(target, addr, "/varz").await?;
    let field = |name: &str| v.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
    // The server is the cluster's own (bench.sh): every `.signals` subscription is a node's.
    let subs = client::get_json(target, addr, "/subsz?subs=1&limit=100000").await?;
    let signals = subs
        .get("subscriptions_list")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|sub| {
            sub.get("subject")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|s| s.ends_with(".signals"))
        })
        .filter_map(|sub| sub.get("msgs").and_then(serde_json::Value::as_u64))
        .sum();
    Ok(Some(Varz {
        in_msgs: field("in_msgs"),
        out_msgs: field("out_msgs"),
        in_bytes: field("in_bytes"),
        out_bytes: field("out_bytes"),
        signals,
    }))
}

/// The cluster schema's table counters: (sequential + index scans, rows written).
async fn table_counters(
    postgres: &Option<(String, String)>,
) -> Result<Option<(u64, u64)>, ClientError> {
    let Some((url, schema)) = postgres else {
        return Ok(None);
    };
    // The schema is a name bench.sh made (`bench_PID`); anything else is refused before it
    // reaches the SQL text.
    if !schema
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ClientError::Unexpected(format!("schema name {schema:?}")));
    }
    let sql = format!(
        "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0), \
         coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) \
         FROM pg_stat_user_tables WHERE schemaname = '{schema}'"
    );
    match crate::measure::psql_numbers(url, &sql).await?[..] {
        [scans, writes] => Ok(Some((scans, writes))),
        ref other => Err(ClientError::Unexpected(format!("psql answered {other:?}"))),
    }
}

/// Runs the three phases; returns their rows.
pub async fn run(run: &Run, token: &str, case: &ClusterCase) -> Result<Vec<Row>, ClientError> {
    let target = &run.target;
    let gateways = target.ws.len();
    let n_shards = match case.shards {
        0 => gateways,
        n => n,
    }
    .min(case.sockets.max(1));
    let base = format!(
        "{} sockets on {gateways} gateways, {n_shards} client processes",
        case.sockets
    );
    let mut rows = Vec::new();
    let mut shards = (0..n_shards)
        .map(ShardProcess::spawn)
        .collect::<Result<Vec<_>, _>>()?;
    let shard_pids: Vec<u32> = shards.iter().filter_map(ShardProcess::pid).collect();
    let all_nodes = run.server_pids();
    let postgres_pids = || measure::processes_named("postgres");
    let pct = |c: Option<f64>| c.unwrap_or(0.0) * 100.0;
    if case.nats_monitor.is_none() {
        eprintln!(
            "  NATS counters not checked: no monitoring port (bench.sh starts its own \
             nats-server when /usr/sbin/nats-server or nats-server is there)"
        );
    }

    // 1. Open the sockets: shard i on gateway i (mod their number), each its share.
    let collection = format!("bench{}x{}cluster", std::process::id(), clock_micros());
    let share = |i: usize| case.sockets / n_shards + usize::from(i < case.sockets % n_shards);
    let on_gateway: Vec<usize> = (0..gateways)
        .map(|g| (0..n_shards).filter(|i| i % gateways == g).map(share).sum())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before: Vec<u64> = case
        .gateway_pids
        .iter()
        .map(|p| measure::rss_bytes(*p).unwrap_or(0))
        .collect();
    let connect_cpu = CpuWindow::start(all_nodes.clone());
    let connect_pg_cpu = CpuWindow::start(postgres_pids());
    let started = Instant::now();
    for reply in ask_all(&mut shards, |i| Command::Open {
        token: token.to_owned(),
        collection: collection.clone(),
        sockets: share(i),
        gateway: i % gateways,
    })
    .await?
    {
        if !matches!(reply, Reply::Opened) {
            return Err(unexpected(&reply));
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let connect_cpu = connect_cpu.finish();
    eprintln!("  {} sockets open in {connect_secs:.1} s", case.sockets);
    rows.push(Row::new(
        "cluster",
        format!("{base}, connecting"),
        "connects/s",
        case.sockets as f64 / connect_secs.max(1e-9),
        None,
        &format!(
            "nodes {:.0}%, PostgreSQL {:.0}% of a core",
            pct(connect_cpu.server),
            pct(connect_pg_cpu.finish().server)
        ),
    ));

    // 2. Idle: memory per socket per gateway, then what the cluster does with nothing to do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = format!("{base}, idle");
    let mut grown = 0u64;
    for (g, pid) in case.gateway_pids.iter().enumerate() {
        let after = measure::rss_bytes(*pid).unwrap_or(0);
        let before = rss_before.get(g).copied().unwrap_or(0);
        grown += after.saturating_sub(before);
        let sockets = on_gateway.get(g).copied().unwrap_or(0);
        rows.push(Row::new(
            "cluster",
            &idle,
            &format!("gateway {} RSS bytes per socket ({sockets} sockets)", g + 1),
            after.saturating_sub(before) as f64 / sockets.max(1) as f64,
            None,
            &format!("RSS {:.0} MiB", after as f64 / 1048576.0),
        ));
    }
    rows.push(Row::new(
        "cluster",
        &idle,
        "gateways' RSS growth MB in all",
        grown as f64 / 1e6,
        None,
        "",
    ));
    let client_rss: u64 = shard_pids
        .iter()
        .map(|p| measure::rss_bytes(*p).unwrap_or(0))
        .sum();
    rows.push(Row::new(
        "cluster",
        &idle,
        "client processes' RSS bytes per socket",
        client_rss as f64 / case.sockets.max(1) as f64,
        None,
        "",
    ));
    // A PostgreSQL backend flushes its table counters at most every 10 s while idle, so the
    // connects' reads would still be arriving in the window: it starts once they are in
    // (a shorter idle run, the smoke one, waits as long as it watches).
    tokio::time::sleep(case.idle.min(Duration::from_secs(10))).await;
    let varz0 = varz(target, case.nats_monitor).await?;
    let tables0 = table_counters(&case.postgres).await?;
    let nodes_cpu = CpuWindow::start(all_nodes.clone());
    let pg_cpu = CpuWindow::start(postgres_pids());
    let nats_cpu = case.nats_pid.map(|p| CpuWindow::start(vec![p]));
    let idle_started = Instant::now();
    tokio::time::sleep(case.idle).await;
    let idle_secs = idle_started.elapsed().as_secs_f64();
    rows.push(Row::new(
        "cluster",
        &idle,
        "API node and gateways: % of a core",
        pct(nodes_cpu.finish().server),
        None,
        "",
    ));
    rows.push(Row::new(
        "cluster",
        &idle,
        "PostgreSQL (every backend of the machine): % of a core",
        pct(pg_cpu.finish().server),
        None,
        "",
    ));
    if let Some(c) = nats_cpu {
        rows.push(Row::new(
            "cluster",
            &idle,
            "NATS: % of a core",
            pct(c.finish().server),
            None,
            "",
        ));
    }
    if let (Some(before), Some(after)) = (tables0, table_counters(&case.postgres).await?) {
        rows.push(Row::new(
            "cluster",
            &idle,
            "PostgreSQL table scans/s (the cluster's schema)",
            after.0.saturating_sub(before.0) as f64 / idle_secs,
            None,
            "",
        ));
        rows.push(Row::new(
            "cluster",
            &idle,
            "PostgreSQL rows written/s (the cluster's schema)",
            after.1.saturating_sub(before.1) as f64 / idle_secs,
            None,
            "",
        ));
    }
    // Messages out per second with nothing happening (the nodes' heartbeats): what each
    // event phase carries beyond it is the events' share.
    let mut idle_out_rate = 0.0;
    if let (Some(before), Some(after)) = (varz0, varz(target, case.nats_monitor).await?) {
        let d = after.since(before);
        idle_out_rate = d.out_msgs as f64 / idle_secs;
        rows.push(Row::new(
            "cluster",
            &idle,
            "NATS messages/s in / out",
            d.in_msgs as f64 / idle_secs,
            None,
            &format!("out {idle_out_rate:.1}/s"),
        ));
    }
    let mut open = 0u64;
    let mut ended = BTreeMap::new();
    for reply in ask_all(&mut shards, |_| Command::Status).await? {
        let Reply::Status { open: o, ended: e } = reply else {
            return Err(unexpected(&reply));
        };
        open += o;
        for (why, n) in e {
            *ended.entry(why).or_insert(0) += n;
        }
    }
    rows.push(
        Row::new(
            "cluster",
            &idle,
            "sockets still open",
            open as f64,
            Some(Goal::AtLeast(case.sockets as f64)),
            &ended
                .iter()
                .map(|(why, n)| format!("{n}: {why}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .must_hold(),
    );

    // 3. Fan-out, then 4. the same with churn: one collection, events numbered on.
    let writer_url = format!("/{}/{}?access_token={token}", target.org, target.app);
    let window = run.warmup + run.duration;
    let warm_events = (run.warmup.as_secs_f64() * case.event_rate).ceil() as u64;
    let mut next_n = 0u64;
    for churn in [false, true] {
        if churn && gateways < 2 {
            eprintln!("  churn skipped: a reconnect goes to another gateway, and there is one");
            continue;
        }
        let setup = if churn {
            format!(
                "{base}, {} event/s, {} reconnects/s",
                crate::report::human(case.event_rate),
                crate::report::human(case.churn_rate)
            )
        } else {
            format!("{base}, {} event/s", crate::report::human(case.event_rate))
        };
        eprintln!("  {setup}");
        let varz0 = varz(target, case.nats_monitor).await?;
        let phase_started = Instant::now();
        let writer = client::websocket(target, &writer_url).await?;
        let until = Instant::now() + window;
        let measured = tokio::spawn({
            let (nodes, shard_pids) = (all_nodes.clone(), shard_pids.clone());
            let warmup = run.warmup;
            async move {
                tokio::time::sleep(warmup).await;
                let nodes = CpuWindow::start(nodes);
                let clients = CpuWindow::start(shard_pids);
                let postgres = CpuWindow::start(postgres_pids());
                tokio::time::sleep_until(until.into()).await;
                [nodes, clients, postgres].map(|w| w.finish().server)
            }
        });
        if churn {
            let per_shard = case.churn_rate / n_shards as f64;
            send_all(&mut shards, |_| Command::Churn {
                rate: per_shard,
                secs: window.as_secs_f64(),
            })
            .await?;
        }
        let first = next_n;
        let posted = fanout::write(
            writer,
            &collection,
            Source::Store,
            Rate::PerSecond(case.event_rate),
            until,
            first,
        )
        .await?;
        next_n += posted;
        let [nodes_cpu, clients_cpu, postgres_cpu] = measured
            .await
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let limited = format!(
            "nodes {:.0}%, clients {:.0}%, PostgreSQL {:.0}% of a core",
            pct(nodes_cpu),
            pct(clients_cpu),
            pct(postgres_cpu)
        );
        if churn {
            let mut resume = crate::latency_histogram();
            let (mut reconnects, mut failed, mut given_up, mut not_recovered) = (0, 0, 0, 0);
            for reply in recv_all(&mut shards).await? {
                let Reply::Churned {
                    reconnects: r,
                    failed_tries,
                    given_up: g,
                    not_recovered: nr,
                    resume: pairs,
                } = reply
                else {
                    return Err(unexpected(&reply));
                };
                reconnects += r;
                failed += failed_tries;
                given_up += g;
                not_recovered += nr;
                add_pairs(&mut resume, &pairs);
            }
            rows.push(Row::new(
                "cluster",
                &setup,
                "reconnects/s (each to another gateway, resumed with since)",
                reconnects as f64 / window.as_secs_f64(),
                None,
                &format!("{reconnects} in {:.0} s", window.as_secs_f64()),
            ));
            rows.extend(latency_rows(
                "cluster",
                &format!("{setup}: resume, socket dropped → SUBSCRIBE answered"),
                &resume,
                &[50.0, 99.0],
                None,
            ));
            rows.push(Row::new(
                "cluster",
                &setup,
                "reconnect tries that failed",
                failed as f64,
                None,
                "",
            ));
            rows.push(Row::must_be_zero(
                "cluster",
                &setup,
                "resumes not recovered, or given up",
                not_recovered + given_up,
                "",
            ));
        }
        let (mut lost, mut duplicated, mut late, mut waited_ms) = (0u64, 0u64, 0u64, 0u64);
        let mut latency = crate::latency_histogram();
        for reply in ask_all(&mut shards, |_| Command::Tally {
            from: first,
            to: first + posted,
            measure_from: first + warm_events,
        })
        .await?
        {
            let Reply::Tallied {
                lost: l,
                late: t,
                waited_ms: w,
                duplicated: d,
                latency: pairs,
            } = reply
            else {
                return Err(unexpected(&reply));
            };
            lost += l;
            late += t;
            waited_ms = waited_ms.max(w);
            duplicated += d;
            add_pairs(&mut latency, &pairs);
        }
        rows.push(Row::new(
            "cluster",
            &setup,
            "events posted",
            posted as f64,
            None,
            &limited,
        ));
        rows.extend(latency_rows(
            "cluster",
            &setup,
            &latency,
            &[50.0, 99.0],
            Some(&|p| (p == 99.0 && !churn).then_some(Goal::AtMost(P99_GOAL_MS))),
        ));
        rows.push(Row::new(
            "cluster",
            &setup,
            &format!(
                "deliveries not arrived {} s after the last event",
                LATE.as_secs()
            ),
            late as f64,
            None,
            &format!(
                "lost unless they arrive within {} s; the last came after {:.1} s",
                DRAIN.as_secs(),
                waited_ms as f64 / 1000.0
            ),
        ));
        for (metric, value) in [("lost events", lost), ("duplicated events", duplicated)] {
            rows.push(Row::must_be_zero("cluster", &setup, metric, value, ""));
        }
        if let (Some(before), Some(after)) = (varz0, varz(target, case.nats_monitor).await?) {
            let d = after.since(before);
            let deliveries = posted as f64 * case.sockets as f64;
            let heartbeats = idle_out_rate * phase_started.elapsed().as_secs_f64();
            // O(events): a signal per event (or per batch of them) reaching each node, so at
            // most one message per node and event, however many sockets get it.
            let nodes = all_nodes.len().max(1) as f64;
            rows.push(Row::new(
                "cluster",
                &setup,
                "NATS signals delivered per event",
                d.signals as f64 / (posted.max(1) as f64),
                Some(Goal::AtMost(nodes)),
                &format!("{} signals to {nodes} nodes", d.signals),
            ));
            rows.push(Row::new(
                "cluster",
                &setup,
                "NATS messages out per event, beyond the idle rate",
                (d.out_msgs as f64 - heartbeats).max(0.0) / (posted.max(1) as f64),
                None,
                &format!(
                    "in {} / out {} msgs ({heartbeats:.0} at the idle rate), {} / {} bytes; \
                     {} deliveries",
                    d.in_msgs,
                    d.out_msgs,
                    d.in_bytes,
                    d.out_bytes,
                    crate::report::human(deliveries)
                ),
            ));
        }
    }

    let _ = ask_all(&mut shards, |_| Command::Exit).await;
    for mut shard in shards {
        let _ = shard.child.wait().await;
    }
    Ok(rows)
}
