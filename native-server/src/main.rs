//! `gridsocket`: the command line of the server.

use clap::{CommandFactory, Parser, Subcommand};
use gridsocket_server::config::{ConfigFileError, LogFormat, config_file_env};
use gridsocket_server::{Server, Settings, demo};
use std::collections::HashMap;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc: the server allocates many small, short-lived buffers per request and event;
/// mimalloc's per-thread free lists suit that pattern better than glibc's arenas.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gridsocket: the realtime WebSocket API of a Usergrid-style Backend-as-a-Api.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: REST on --http-addr, WebSocket on --ws-addr.
    Serve(Settings),
}

fn main() -> ExitCode {
    // A settings file becomes environment variables before the flags are read (and before
    // any thread exists), so flags and the real environment override it.
    if let Err(e) = load_config_file() {
        eprintln!("gridsocket: {e}");
        return ExitCode::FAILURE;
    }
    let Command::Serve(settings) = Cli::parse().command;
    // tungstenite logs whole frames at trace level, and frames carry tokens and passwords:
    // the `log` crate it logs through is built without its trace level (Cargo.toml), so no
    // RUST_LOG can bring those lines back.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a file or a log collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(serve(settings)),
        Err(e) => {
            eprintln!("gridsocket: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Finds `--config FILE` (or `GRIDSOCKET_CONFIG`) and sets the variables it implies.
fn load_config_file() -> Result<(), ConfigFileError> {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_owned).or_else(|| {
            (a == "--config")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(path) = from_args.or_else(|| std::env::var("GRIDSOCKET_CONFIG").ok()) else {
        return Ok(());
    };
    let cli = Cli::command();
    let known: HashMap<String, String> = cli
        .find_subcommand("serve")
        .map(|serve| {
            serve
                .get_arguments()
                .filter_map(|a| {
                    let env = a.get_env()?.to_str()?.to_owned();
                    Some((a.get_long()?.to_owned(), env))
                })
                .collect()
        })
        .unwrap_or_default();
    for (key, value) in config_file_env(std::path::Path::new(&path), &known)? {
        if std::env::var_os(&key).is_none() {
            // SAFETY: called first thing in `main`, before the runtime or any other thread
            // exists, so nothing reads the environment concurrently.
            unsafe { std::env::set_var(key, value) };
        }
    }
    Ok(())
}

async fn serve(mut settings: Settings) -> ExitCode {
    let demo = settings.demo;
    // Only a page that is there is advertised; what is missing is said once, on stderr.
    let mut demo_page = false;
    if demo && settings.role.serves_rest() {
        match demo::locate(&settings.demo_dir, demo::PAGE_FILE) {
            Some(dir) => {
                settings.demo_dir = dir;
                demo_page = true;
            }
            None => eprintln!(
                "gridsocket: warning: the demo page is not served: no {} in {:?} (under the working directory, the source tree or the binary's folders); pass --demo-dir",
                demo::PAGE_FILE,
                settings.demo_dir
            ),
        }
        match demo::locate(&settings.demo_pkg_dir, demo::PACKAGE_FILE) {
            Some(dir) => settings.demo_pkg_dir = dir,
            None if demo_page => eprintln!(
                "gridsocket: warning: the demo page cannot start: the JavaScript package is not built (no {} in {:?}); run ./scripts/build-wasm.sh, or pass --demo-pkg-dir",
                demo::PACKAGE_FILE,
                settings.demo_pkg_dir
            ),
            None => {}
        }
    }
    let server = match Server::bind(settings).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gridsocket: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (http, ws) = (server.http_addr(), server.ws_addr());
    let role = server.role();
    println!("gridsocket {} ready", env!("CARGO_PKG_VERSION"));
    let (h, w) = if server.is_tls() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    if role.serves_rest() {
        println!("  REST       {h}://{http}");
    } else {
        println!("  Ops        {h}://{http}  (/status, /healthz, /metrics)");
    }
    if role.serves_sockets() {
        println!("  WebSocket  {w}://{ws}");
    }
    if demo {
        if demo_page {
            println!("  Demo       {h}://{http}/demo/");
        }
        println!();
        println!(
            "Demo organization {:?}, app {:?}; users {} (password {:?}).",
            demo::ORG,
            demo::APP,
            demo::USERS
                .iter()
                .map(|(u, _)| *u)
                .collect::<Vec<_>>()
                .join(", "),
            demo::USER_PASSWORD
        );
        // Logging in is REST's: a gateway's HTTP port does not serve it.
        if role.serves_rest() {
            println!(
                "  Log in:   curl -s '{h}://{http}/{}/{}/token' -H 'content-type: application/json' \\",
                demo::ORG,
                demo::APP
            );
            println!(
                "              -d '{{\"grant_type\":\"password\",\"username\":\"johndoe\",\"password\":\"{}\"}}'",
                demo::USER_PASSWORD
            );
        }
        if role.serves_sockets() {
            println!(
                "  Connect:  {w}://{ws}/{}/{}?access_token=TOKEN",
                demo::ORG,
                demo::APP
            );
            println!("  Send:     {{\"id\":1,\"method\":\"GET\",\"path\":\"/users/me\"}}");
        }
        if role.serves_rest() {
            println!(
                "  Admin:    {} / {} at POST {h}://{http}/management/token",
                demo::ADMIN.0,
                demo::ADMIN.1
            );
        }
    }
    server.run(shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
