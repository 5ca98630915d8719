//! `gridsocket-bench`: drives a running gridsocket server over loopback and reports
//! request/response throughput (socket against REST), fan-out and broadcast delivery and
//! latency, presence changes' latency and cost, and memory per idle connection, each against
//! the project's goals. Every run is bounded in time and
//! count. `scripts/bench.sh` starts a server pinned to one core and runs this on the other.

mod bits;
mod client;
mod cluster;
mod fanout;
mod idle;
mod measure;
mod presence;
mod query;
mod report;
mod rr;

use clap::Parser;
use client::{ClientError, Target};
use fanout::{FanoutCase, Rate, Source};
use hdrhistogram::Histogram;
use report::{Goal, Row};
use rr::{RrCase, Transport};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Load generator for a running gridsocket server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Scenarios to run, in order: idle, rr, fanout, broadcast, presence, write, query (all,
    /// in that order, when none is named), and cluster (only when named: it needs a cluster
    /// of gateways, `scripts/bench.sh --cluster`).
    scenarios: Vec<String>,
    /// The server's REST address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// The server's WebSocket address; for a cluster, every gateway's, comma-separated (fanout
    /// spreads its subscribers over them; the other scenarios use the first).
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8088")]
    ws: Vec<String>,
    /// Organization of the app under test.
    #[arg(long, default_value = "demo")]
    org: String,
    /// Application under test.
    #[arg(long, default_value = "chatapp")]
    app: String,
    /// An admin of the app's organization (the `serve --demo` one works as it is): presence
    /// creates its users with it.
    #[arg(long, default_value = "demo")]
    admin_username: String,
    /// That admin's password.
    #[arg(long, default_value = "demo-admin")]
    admin_password: String,
    /// App user to log in as (the `serve --demo` users work as they are).
    #[arg(long, default_value = "johndoe")]
    username: String,
    /// That user's password.
    #[arg(long, default_value = "password")]
    password: String,
    /// The server's process id: its CPU use and memory are read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// For a cluster: the other nodes' process ids, whose CPU use counts as the server's.
    #[arg(long, value_delimiter = ',')]
    other_pids: Vec<u32>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of warm-up before each measured run. The first events to ten thousand freshly
    /// subscribed sockets are slower than the rest (BENCHMARKS.md): three seconds is thirty
    /// events each at 10 events/s.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Client worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Loopback source addresses (127.0.0.2, …) to spread sockets over, at most 250.
    #[arg(long, default_value_t = 16)]
    sources: usize,
    /// rr: connection counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    rr_connections: Vec<usize>,
    /// rr: requests in flight per socket (REST always has one).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    rr_depths: Vec<usize>,
    /// fanout: runs as SUBSCRIBERS@RATE (events/s or `max`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10@10,1000@10,1000@max,10000@10"
    )]
    fanout: Vec<FanoutCase>,
    /// broadcast: runs as RECEIVERS@RATE (messages/s or `max`), one sender; each `max` case is
    /// judged against fanout's case of the same size in the same run. (At `max` the sender
    /// outruns 10,000 receivers, as fanout's writer does: neither waits for delivery, and
    /// the backlog closes sockets as slow consumers. BENCHMARKS.md.)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000@10,1000@max,10000@10"
    )]
    broadcast: Vec<FanoutCase>,
    /// presence: users who each join the group and leave it, one change at a time.
    #[arg(long, default_value_t = 1000)]
    presence_users: usize,
    /// presence: users present on the group throughout, who get every change.
    #[arg(long, default_value_t = 1000)]
    presence_watchers: usize,
    /// presence: changes per second.
    #[arg(long, default_value_t = 100.0)]
    presence_rate: f64,
    /// query: collection sizes to load to and query at, in turn.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    query_sizes: Vec<u64>,
    /// idle: how many sockets to hold open.
    #[arg(long, default_value_t = 19_000)]
    idle: usize,
    /// idle: each socket a user of its own (made by the admin, each token taken through
    /// `/users/{u}/token`) instead of all the bench user's.
    #[arg(long)]
    idle_distinct: bool,
    /// Also report the CPU of the local PostgreSQL (every `postgres` process) in `write`.
    #[arg(long)]
    database_cpu: bool,
    /// cluster: subscribed sockets in all, spread over the gateways.
    #[arg(long, default_value_t = 95_000)]
    cluster_sockets: usize,
    /// cluster: client processes holding them (0: one per gateway). One process holds at
    /// most its open-file limit of sockets (~19.5k here).
    #[arg(long, default_value_t = 0)]
    cluster_clients: usize,
    /// cluster: events per second in the fanout and churn phases.
    #[arg(long, default_value_t = 1.0)]
    cluster_rate: f64,
    /// cluster: reconnects per second in the churn phase, over all client processes.
    #[arg(long, default_value_t = 1_000.0)]
    churn_rate: f64,
    /// cluster: seconds the idle phase watches PostgreSQL and NATS.
    #[arg(long, default_value_t = 30.0)]
    cluster_idle_secs: f64,
    /// cluster: every gateway's process id, in the order of `--ws`, for its memory.
    #[arg(long, value_delimiter = ',')]
    gateway_pids: Vec<u32>,
    /// cluster: NATS's monitoring address (`http://127.0.0.1:8222`), read for its counters.
    #[arg(long)]
    nats_monitor: Option<String>,
    /// cluster: that NATS server's process id, for its CPU.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// PostgreSQL's URL (for `psql`): `write` reads its transaction count; `cluster`, with
    /// `--pg-schema`, the cluster's schema's table counters, which show what the nodes read
    /// while idle.
    #[arg(long, requires = "pg_schema")]
    pg_url: Option<String>,
    /// cluster: the cluster's PostgreSQL schema.
    #[arg(long, requires = "pg_url")]
    pg_schema: Option<String>,
    /// Runs as client process N of a `cluster` run, driven over stdin by the run's own
    /// process (which starts it).
    #[arg(long, hide = true)]
    shard: Option<usize>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/gridsocket-bench/results.json")]
    json: PathBuf,
}

/// Settings every scenario shares.
pub struct Run {
    /// The server.
    pub target: Target,
    /// Its pid, for /proc readings.
    pub server_pid: Option<u32>,
    /// A cluster's other nodes, whose CPU counts as the server's.
    pub other_pids: Vec<u32>,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How many CPUs the server may use (its affinity), for the per-core goals.
    pub server_cores: f64,
    /// How many CPUs this client may use.
    pub client_cores: f64,
    /// Whether to read the local PostgreSQL's CPU use too.
    pub database_cpu: bool,
    /// The PostgreSQL the server uses, for its statistics (`--pg-url`).
    pub database_url: Option<String>,
}

impl Run {
    /// Every server process whose CPU use counts.
    pub fn server_pids(&self) -> Vec<u32> {
        self.server_pid
            .into_iter()
            .chain(self.other_pids.iter().copied())
            .collect()
    }

    /// True when the run drives several gateways: the per-core goals do not apply.
    pub fn is_cluster(&self) -> bool {
        self.target.ws.len() > 1 || !self.other_pids.is_empty()
    }
}

/// Microseconds on the machine's monotonic clock: the clock that event timestamps use. It is
/// the same clock in every process of the machine, so a writer in one process and the
/// subscribers of the cluster's shard processes measure one latency.
pub fn clock_micros() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// A latency histogram in microseconds, up to a minute.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// Rows for percentiles of a histogram, in milliseconds, with optional goals per percentile.
pub fn latency_rows(
    scenario: &str,
    setup: &str,
    hist: &Histogram<u64>,
    percentiles: &[f64],
    goals: Option<&dyn Fn(f64) -> Option<Goal>>,
) -> Vec<Row> {
    if hist.is_empty() {
        return Vec::new();
    }
    percentiles
        .iter()
        .map(|&p| {
            let ms = hist.value_at_quantile(p / 100.0) as f64 / 1000.0;
            let goal = goals.and_then(|g| g(p));
            Row::new(scenario, setup, &format!("p{p} ms"), ms, goal, "")
        })
        .collect()
}

fn cores(list: Option<String>) -> Option<f64> {
    let list = list?;
    let mut n = 0usize;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
            None => 1,
        };
    }
    Some(n as f64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gridsocket-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(index) = cli.shard {
        measure::raise_open_file_limit();
        let shard = target(&cli).map(|t| runtime.block_on(cluster::shard(t, index)));
        return match shard.and_then(|r| r) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gridsocket-bench client process {index}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run_all(&cli)) {
        Ok(rows) => {
            print!("{}", report::table(&rows));
            let missed = rows.iter().filter(|r| r.met == Some(false)).count();
            println!(
                "\n{} figures, {} goals met, {missed} missed",
                rows.len(),
                rows.iter().filter(|r| r.met == Some(true)).count()
            );
            if let Err(e) = write_json(&cli, &rows) {
                eprintln!("gridsocket-bench: cannot write {}: {e}", cli.json.display());
                return ExitCode::FAILURE;
            }
            println!("results: {}", cli.json.display());
            let broken: Vec<&Row> = rows.iter().filter(|r| r.is_broken()).collect();
            if broken.is_empty() {
                return ExitCode::SUCCESS;
            }
            for r in broken {
                eprintln!(
                    "gridsocket-bench: correctness goal missed: {} {} {} = {}",
                    r.scenario,
                    r.setup,
                    r.metric,
                    report::human(r.value)
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gridsocket-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_json(cli: &Cli, rows: &[Row]) -> std::io::Result<()> {
    if let Some(dir) = cli.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = serde_json::json!({
        "tool": concat!("gridsocket-bench ", env!("CARGO_PKG_VERSION")),
        "server_cpus": cli.server_pid.and_then(measure::allowed_cpus),
        "client_cpus": measure::allowed_cpus(std::process::id()),
        "client_threads": cli.threads,
        "duration_secs": cli.duration,
        "rows": rows,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    std::fs::write(&cli.json, text)
}

/// The server (or cluster) the command line names.
fn target(cli: &Cli) -> Result<Target, ClientError> {
    Ok(Target {
        http: client::parse_addr(&cli.http)?,
        ws: cli
            .ws
            .iter()
            .map(|w| client::parse_addr(w))
            .collect::<Result<_, _>>()?,
        org: cli.org.clone(),
        app: cli.app.clone(),
        sources: cli.sources.min(250),
    })
}

async fn run_all(cli: &Cli) -> Result<Vec<Row>, ClientError> {
    let open_files = measure::raise_open_file_limit();
    let run = Run {
        target: target(cli)?,
        server_pid: cli.server_pid,
        other_pids: cli.other_pids.clone(),
        warmup: Duration::from_secs_f64(cli.warmup.max(0.0)),
        duration: Duration::from_secs_f64(cli.duration.max(0.1)),
        server_cores: cores(cli.server_pid.and_then(measure::allowed_cpus)).unwrap_or(1.0),
        client_cores: (cli.threads.max(1) as f64)
            .min(cores(measure::allowed_cpus(std::process::id())).unwrap_or(f64::MAX)),
        database_cpu: cli.database_cpu,
        database_url: cli.pg_url.clone(),
    };
    eprintln!(
        "server pid {:?} on CPUs {:?}; client on CPUs {:?} with {} thread(s); open-file limit {open_files}",
        cli.server_pid,
        cli.server_pid.and_then(measure::allowed_cpus),
        measure::allowed_cpus(std::process::id()),
        cli.threads
    );
    let token = client::login(&run.target, &cli.username, &cli.password).await?;
    // idle first: it measures the server's memory growth per socket, which only means
    // something from a fresh server (the allocator keeps what earlier scenarios freed).
    let all = [
        "idle",
        "rr",
        "fanout",
        "broadcast",
        "presence",
        "write",
        "query",
    ];
    let chosen: Vec<&str> = if cli.scenarios.is_empty() {
        all.to_vec()
    } else {
        cli.scenarios.iter().map(String::as_str).collect()
    };
    let mut rows = Vec::new();
    // Delivered events/s of each fan-out and broadcast case, for comparing the two.
    let mut delivered: Vec<(Source, FanoutCase, f64)> = Vec::new();
    for scenario in chosen {
        eprintln!("running {scenario}");
        match scenario {
            "rr" => rows.extend(rr_runs(cli, &run, &token).await?),
            "fanout" | "broadcast" => {
                let (source, cases) = match scenario {
                    "fanout" => (Source::Store, &cli.fanout),
                    _ => (Source::Broadcast, &cli.broadcast),
                };
                for case in cases {
                    eprintln!("  {scenario} {case:?}");
                    let (r, rate) = fanout::run(&run, &token, *case, source).await?;
                    rows.extend(r);
                    delivered.push((source, *case, rate));
                }
            }
            "presence" => {
                let case = presence::PresenceCase {
                    joiners: cli.presence_users,
                    watchers: cli.presence_watchers,
                    rate: cli.presence_rate,
                };
                eprintln!("  presence {case:?}");
                let admin =
                    client::admin_login(&run.target, &cli.admin_username, &cli.admin_password)
                        .await?;
                rows.extend(presence::run(&run, &admin, case).await?);
            }
            "idle" => {
                let users = if cli.idle_distinct {
                    let admin =
                        client::admin_login(&run.target, &cli.admin_username, &cli.admin_password)
                            .await?;
                    let prefix = format!("idle{}t{}", std::process::id(), clock_micros());
                    let names: Vec<String> =
                        (0..cli.idle).map(|i| format!("{prefix}u{i}")).collect();
                    eprintln!("  idle: creating {} users, a token for each", names.len());
                    let tokens = client::users_with_tokens(&run.target, &admin, &names).await?;
                    names.into_iter().zip(tokens).collect()
                } else {
                    vec![(cli.username.clone(), token.clone())]
                };
                rows.extend(idle::run(&run, &users, cli.idle).await?);
            }
            "cluster" => {
                let case = cluster::ClusterCase {
                    sockets: cli.cluster_sockets,
                    shards: cli.cluster_clients,
                    event_rate: cli.cluster_rate.max(0.01),
                    churn_rate: cli.churn_rate.max(0.0),
                    idle: Duration::from_secs_f64(cli.cluster_idle_secs.max(0.0)),
                    gateway_pids: cli.gateway_pids.clone(),
                    nats_monitor: cli
                        .nats_monitor
                        .as_deref()
                        .map(client::parse_addr)
                        .transpose()?,
                    nats_pid: cli.nats_pid,
                    postgres: cli.pg_url.clone().zip(cli.pg_schema.clone()),
                };
                rows.extend(cluster::run(&run, &token, &case).await?);
            }
            "query" => rows.extend(query::run(&run, &token, &cli.query_sizes).await?),
            "write" => {
                // POSTs over the socket, each a new entity: the store's write path.
                for &depth in &cli.rr_depths {
                    let connections = if cli.rr_connections.contains(&16) {
                        16
                    } else {
                        cli.rr_connections.iter().copied().max().unwrap_or(16)
                    };
                    eprintln!("  write ws C={connections} depth={depth}");
                    let case = RrCase {
                        transport: Transport::Ws,
                        connections,
                        depth: depth.max(1),
                        post: true,
                    };
                    rows.extend(rr::run(&run, &token, "/benchwrites", case).await?.0);
                }
            }
            other => {
                return Err(ClientError::Unexpected(format!(
                    "unknown scenario {other:?}: use idle, rr, fanout, broadcast, presence, \
                     write, query or cluster"
                )));
            }
        }
    }
    rows.extend(broadcast_against_fanout(&run, &delivered));
    Ok(rows)
}

/// A broadcast skips the store, the change log and the matching a POST's event goes through,
/// so at full speed it delivers at least what fan-out does to as many receivers: one ratio
/// row per size both ran at `max`.
fn broadcast_against_fanout(run: &Run, delivered: &[(Source, FanoutCase, f64)]) -> Vec<Row> {
    let at_max = |source: Source, n: usize| {
        delivered
            .iter()
            .find(|(s, c, _)| *s == source && c.subscribers == n && c.rate == Rate::Max)
            .map(|(_, _, rate)| *rate)
    };
    delivered
        .iter()
        .filter(|(s, c, _)| *s == Source::Broadcast && c.rate == Rate::Max)
        .filter_map(|(_, c, broadcast)| {
            // A fan-out run that delivered nothing in its window has no rate to compare with.
            let fanout = at_max(Source::Store, c.subscribers).filter(|f| *f > 0.0)?;
            Some(Row::new(
                "broadcast",
                format!("{} receivers, sender at max rate", c.subscribers),
                "broadcast/fanout delivered events/s",
                broadcast / fanout,
                (!run.is_cluster()).then_some(Goal::AtLeast(1.0)),
                "",
            ))
        })
        .collect()
}

async fn rr_runs(cli: &Cli, run: &Run, token: &str) -> Result<Vec<Row>, ClientError> {
    let path = format!("/users/{}", cli.username);
    let mut rows = Vec::new();
    for &connections in &cli.rr_connections {
        let mut ws_rates = Vec::new();
        for &depth in &cli.rr_depths {
            eprintln!("  rr ws C={connections} depth={depth}");
            let case = RrCase {
                transport: Transport::Ws,
                connections,
                depth: depth.max(1),
                post: false,
            };
            let (r, rate) = rr::run(run, token, &path, case).await?;
            rows.extend(r);
            ws_rates.push((depth.max(1), rate));
        }
        eprintln!("  rr rest C={connections}");
        let case = RrCase {
            transport: Transport::Rest,
            connections,
            depth: 1,
            post: false,
        };
        let (r, rest_rate) = rr::run(run, token, &path, case).await?;
        rows.extend(r);
        // One ratio per socket depth, against REST on as many connections (REST has one
        // request in flight per connection whatever the client wants). The goal is on the
        // socket's throughput as the protocol is meant to be used, pipelined: its deepest run.
        // At depth 1 both transports pay the kernel's per-message cost (a send, a receive and
        // a wake-up per request, half of a socket request here) and the ratio is reported
        // without a goal (BENCHMARKS.md). With one connection neither side is busy (each
        // waits for the other's answer): that run measures latency, not throughput.
        let deepest = ws_rates.iter().map(|(d, _)| *d).max();
        for &(depth, ws_rate) in &ws_rates {
            let goal = (connections >= 16 && depth > 1 && Some(depth) == deepest)
                .then_some(Goal::AtLeast(2.0));
            rows.push(Row::new(
                "rr",
                format!("C={connections} socket depth={depth}"),
                "socket/REST throughput",
                ws_rate / rest_rate.max(1e-9),
                goal,
                "",
            ));
        }
    }
    Ok(rows)
}
