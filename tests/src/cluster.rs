//! Several nodes on one PostgreSQL database and one NATS: a fresh deployment's shared parts,
//! and a proxy in front of NATS that cuts one node off the bus.

use crate::{postgres_schema, require_nats, require_postgres};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A fresh deployment's shared parts: a store URL on a new schema, the NATS URL and a bus
/// subject of its own. `None` (skip) when PostgreSQL or NATS is missing, which fails on CI.
pub async fn deployment(name: &str) -> Option<(String, String, String)> {
    let (Some(_), Some(nats)) = (require_postgres().await, require_nats().await) else {
        return None;
    };
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let store = postgres_schema(&format!("gs_test_{name}_{nonce:x}")).await;
    Some((store, nats, format!("gs-test-{nonce:x}")))
}

/// A TCP proxy in front of NATS whose connections can be cut: while cut it accepts and drops
/// every connection, as a broken network would.
pub struct NatsProxy {
    /// `nats://127.0.0.1:port`: give it to the node to cut off as its `--bus`.
    pub addr: String,
    cut: Arc<AtomicBool>,
    /// While set, connections stay open and nothing passes: a link that hangs.
    frozen: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

/// Copies `from` to `to` until either ends, holding what it read while `frozen` is set.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl NatsProxy {
    /// A proxy to the NATS at `upstream` (`nats://host:port`), passing everything through.
    pub async fn start(upstream: &str) -> NatsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = format!("nats://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream.trim_start_matches("nats://").to_owned();
        let cut = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (c, f, l) = (cut.clone(), frozen.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let (upstream, frozen) = (upstream.clone(), f.clone());
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&upstream).await {
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::select! {
                            () = forward(in_read, out_write, frozen.clone()) => {}
                            () = forward(out_read, in_write, frozen) => {}
                        }
                    }
                });
                l.lock().expect("links").push(task.abort_handle());
            }
        });
        NatsProxy {
            addr,
            cut,
            frozen,
            links,
        }
    }

    /// Holds every connection open while nothing passes, as a network that hangs: no end, no
    /// error, until [`thaw`].
    ///
    /// [`thaw`]: NatsProxy::thaw
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Lets what was held, and everything after it, through again.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// Drops every connection through the proxy and refuses new ones until [`restore`].
    ///
    /// [`restore`]: NatsProxy::restore
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
