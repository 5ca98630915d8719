//! Servers as child processes: for tests that kill them, restart them on the same data, or run
//! several against one database.

use crate::SUPERUSER;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The `gridsocket` binary, built now if it is missing or stale (cargo's lock is free while
/// tests run).
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            // Without what cargo set for this test: some build scripts would see it as a
            // change and rebuild their crates. CARGO_HOME and CARGO_TARGET_DIR are the
            // caller's, not cargo's: without the latter a second target tree is built from
            // scratch, and the binary used below (next to this test's) is not the one built.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy().into_owned();
                if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR")
                    || matches!(
                        key.as_str(),
                        "LD_LIBRARY_PATH" | "OUT_DIR" | "RUST_TEST_THREADS"
                    )
                {
                    build.env_remove(&key);
                }
            }
            let status = build
                // The same selection as scripts/test.sh builds, so that this is a no-op there.
                .args(["build", "--workspace", "--bins"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the server binary builds");
            // target/debug/deps/scale_out-… → target/debug/gridsocket
            let exe = std::env::current_exe().expect("test binary path");
            let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
            dir.join("gridsocket")
        })
        .clone()
}

/// One server process, killed (SIGKILL) when dropped.
pub struct Node {
    child: Child,
    /// `http://host:port` of its REST (or, on a gateway, ops) port.
    pub http: String,
    /// `ws://host:port`, unless it is an API node.
    pub ws: Option<String>,
    data: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts `gridsocket serve` with `args` on a fresh data dir, ephemeral ports and the test
    /// superuser, and waits until it prints its addresses.
    pub fn start(args: &[&str]) -> Node {
        Node::start_in(tempfile::tempdir().expect("temp dir"), args)
    }

    /// [`Node::start`] on a given data dir (a restart after a kill finds its data there).
    pub fn start_in(data: tempfile::TempDir, args: &[&str]) -> Node {
        Node::spawn(
            data,
            args,
            None,
            Some(&format!("{}:{}", SUPERUSER.0, SUPERUSER.1)),
        )
    }

    /// [`Node::start_in`] with another superuser (`NAME:PASSWORD`), or none.
    pub fn start_with_superuser(
        data: tempfile::TempDir,
        superuser: Option<&str>,
        args: &[&str],
    ) -> Node {
        Node::spawn(data, args, None, superuser)
    }

    /// [`Node::start`] logging everything (`RUST_LOG=debug`) to the file `log`.
    pub fn start_logging(args: &[&str], log: &std::path::Path) -> Node {
        let superuser = format!("{}:{}", SUPERUSER.0, SUPERUSER.1);
        Node::spawn(
            tempfile::tempdir().expect("temp dir"),
            args,
            Some(log),
            Some(&superuser),
        )
    }

    fn spawn(
        data: tempfile::TempDir,
        args: &[&str],
        log: Option<&std::path::Path>,
        superuser: Option<&str>,
    ) -> Node {
        let (level, stderr) = match log {
            Some(path) => (
                "debug",
                Stdio::from(std::fs::File::create(path).expect("log file")),
            ),
            None => ("warn", Stdio::inherit()),
        };
        let mut child = Command::new(server_binary())
            .arg("serve")
            .args(args)
            .args(["--http-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0"])
            .args(superuser.map(|s| format!("--superuser={s}")))
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("server starts");
        let stdout = child.stdout.take().expect("stdout");
        let (mut http, mut ws) = (None, None);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.expect("server output");
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("REST" | "Ops"), Some(url)) => http = Some(url.to_owned()),
                (Some("WebSocket"), Some(url)) => ws = Some(url.to_owned()),
                _ => {}
            }
            let want_ws = !args.windows(2).any(|w| w == ["--role", "api"]);
            if http.is_some() && (ws.is_some() || !want_ws) {
                break;
            }
        }
        // Keep reading so that the server never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Node {
            child,
            http: http.expect("the node printed its REST address"),
            ws,
            data: Some(data),
        }
    }

    /// Its WebSocket URL base (panics on an API node).
    pub fn ws(&self) -> &str {
        self.ws.as_deref().expect("a gateway")
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop with SIGTERM, as a service manager does, without waiting: it shuts down
    /// gracefully (see [`Node::wait`]).
    pub fn terminate(&self) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            panic!("pid {} does not fit a pid_t", self.child.id());
        };
        // SAFETY: kill only sends a signal to the process; the pid is our own child's, which
        // is not reaped before `wait` or `kill`, so it cannot name another process.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM reaches the node");
    }

    /// Waits for it to exit (after [`Node::terminate`]) and returns how it exited.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("the node's exit status")
    }

    /// Kills it and hands back its data dir, for a restart.
    pub fn kill_keeping_data(mut self) -> tempfile::TempDir {
        self.kill();
        self.data
            .take()
            .expect("the data dir is kept until the node is dropped")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One metric's value from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
