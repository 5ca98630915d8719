//! What the operating system says about a process: CPU time, resident memory, allowed CPUs.
//! Read from `/proc`, so it works for the server without its cooperation.

use crate::client::ClientError;
use std::time::Instant;

/// CPU seconds (user + system) a process has used so far, or `None` when it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// The processes whose command name is `name` (every PostgreSQL backend, say).
pub fn processes_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// CPU seconds used by all of `pids`; `None` if there are none or one cannot be read.
fn total_cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Resident set size of a process in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// The CPUs a process may run on (`0`, `0-1`), as the kernel lists them.
pub fn allowed_cpus(pid: u32) -> Option<String> {
    status_field(pid, "Cpus_allowed_list:").map(|s| s.trim().to_owned())
}

fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::to_owned)
}

/// CPU use of the server and of this client over one measured window.
pub struct CpuWindow {
    server: Vec<u32>,
    started: Instant,
    server_cpu: Option<f64>,
    client_cpu: Option<f64>,
}

/// How busy each side was during a window, in cores (1.0 = one core fully used).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CpuUse {
    /// Server cores busy, if the server's pid is known.
    pub server: Option<f64>,
    /// Client (this process) cores busy.
    pub client: Option<f64>,
}

impl CpuWindow {
    /// Starts a window now, counting the CPU of every process in `server`.
    pub fn start(server: Vec<u32>) -> CpuWindow {
        CpuWindow {
            server_cpu: total_cpu_seconds(&server),
            server,
            started: Instant::now(),
            client_cpu: cpu_seconds(std::process::id()),
        }
    }

    /// CPU seconds the server processes used since `start`.
    pub fn server_seconds(&self) -> Option<f64> {
        self.server_cpu
            .zip(total_cpu_seconds(&self.server))
            .map(|(a, b)| b - a)
    }

    /// Ends the window: average cores used by each side since `start`.
    pub fn finish(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let server_now = total_cpu_seconds(&self.server);
        let client_now = cpu_seconds(std::process::id());
        CpuUse {
            server: self.server_cpu.zip(server_now).map(|(a, b)| (b - a) / wall),
            client: self.client_cpu.zip(client_now).map(|(a, b)| (b - a) / wall),
        }
    }
}

impl CpuUse {
    /// Which side bounded the run: the one whose CPUs were (nearly) saturated.
    pub fn limiter(&self, server_cores: f64, client_cores: f64) -> String {
        let busy = |used: Option<f64>, cores: f64| used.is_some_and(|u| u >= 0.85 * cores);
        let pct = |u: Option<f64>| u.map_or("?".to_owned(), |u| format!("{:.0}%", u * 100.0));
        let verdict = match (
            busy(self.server, server_cores),
            busy(self.client, client_cores),
        ) {
            (true, true) => "both CPUs",
            (true, false) => "server CPU",
            (false, true) => "client CPU",
            (false, false) => "neither CPU (latency or I/O)",
        };
        format!(
            "{verdict}; server {} client {}",
            pct(self.server),
            pct(self.client)
        )
    }
}

/// Raises this process's open-file limit to its hard limit; returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur
}

/// The numbers of the one row `sql` answers, read through `psql` from the database at `url`
/// (the bench's own queries of PostgreSQL's statistics, never the server's data).
pub async fn psql_numbers(url: &str, sql: &str) -> Result<Vec<u64>, ClientError> {
    let out = tokio::process::Command::new("psql")
        .args(["-Atq", url, "-c", sql])
        .output()
        .await
        .map_err(|source| ClientError::Local {
            what: "psql".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Result<Vec<u64>, _> = text.trim().split('|').map(str::parse).collect();
    match numbers {
        Ok(numbers) if out.status.success() => Ok(numbers),
        _ => Err(ClientError::Unexpected(format!(
            "psql: {} {}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// The transactions the database at `url` has ended so far (committed or rolled back), as
/// its statistics say: what a window's writes cost it in transactions. (PostgreSQL passes a
/// backend's counts on at most once a second, so a window of several seconds is needed.)
pub async fn transactions(url: &str) -> Result<u64, ClientError> {
    let sql = "SELECT xact_commit + xact_rollback FROM pg_stat_database \
               WHERE datname = current_database()";
    match psql_numbers(url, sql).await?[..] {
        [n] => Ok(n),
        ref other => Err(ClientError::Unexpected(format!("psql answered {other:?}"))),
    }
}
