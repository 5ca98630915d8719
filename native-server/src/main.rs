//! `gridsocket`: the command line of the server.

use clap::{Parser, Subcommand};
use gridsocket_server::{Server, Settings, demo};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc: the server allocates many small, short-lived buffers per request and event;
/// measured here it spends markedly less time in the allocator than glibc's malloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gridsocket: the realtime WebSocket API of a Usergrid-style Backend-as-a-Service.
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve(settings) = Cli::parse().command;
    let demo = settings.demo;
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
    if role.serves_rest() {
        println!("  REST       http://{http}");
    } else {
        println!("  Ops        http://{http}  (/status, /healthz, /metrics)");
    }
    if role.serves_sockets() {
        println!("  WebSocket  ws://{ws}");
    }
    if demo {
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
        println!(
            "  Log in:   curl -s 'http://{http}/{}/{}/token' -H 'content-type: application/json' \\",
            demo::ORG,
            demo::APP
        );
        println!(
            "              -d '{{\"grant_type\":\"password\",\"username\":\"johndoe\",\"password\":\"{}\"}}'",
            demo::USER_PASSWORD
        );
        if role.serves_sockets() {
            println!(
                "  Connect:  ws://{ws}/{}/{}?access_token=TOKEN",
                demo::ORG,
                demo::APP
            );
            println!("  Send:     {{\"id\":1,\"method\":\"GET\",\"path\":\"/users/me\"}}");
        }
        println!(
            "  Admin:    {} / {} at POST http://{http}/management/token",
            demo::ADMIN.0,
            demo::ADMIN.1
        );
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
