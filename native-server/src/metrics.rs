//! The server's Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every metric the server keeps, registered once; handles are cheap to clone and update.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections (set when scraped).
    pub connections: Gauge,
    /// 1 while the bus is connected, 0 while it is not (always 1 without a bus).
    pub bus_connected: Gauge,
    /// Times the bus connection was lost.
    pub bus_disconnects: Counter,
    /// Signals sent to other nodes.
    pub bus_published: Counter,
    /// Signals received from other nodes.
    pub bus_received: Counter,
    /// Signals not sent because the outgoing queue was full (the bus was down or slow); the
    /// dispatcher's poll and the resync after reconnecting cover for them.
    pub bus_dropped: Counter,
    /// Times this node re-read everything after it or another node was cut off from the bus.
    pub bus_resyncs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gridsocket");
        let m = Metrics {
            connections: Gauge::default(),
            bus_connected: Gauge::default(),
            bus_disconnects: Counter::default(),
            bus_published: Counter::default(),
            bus_received: Counter::default(),
            bus_dropped: Counter::default(),
            bus_resyncs: Counter::default(),
            registry: Registry::default(),
        };
        m.bus_connected.set(1);
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "bus_connected",
            "1 while the bus between nodes is connected",
            m.bus_connected.clone(),
        );
        registry.register(
            "bus_disconnects",
            "Times the bus connection was lost",
            m.bus_disconnects.clone(),
        );
        registry.register(
            "bus_published",
            "Signals sent to other nodes",
            m.bus_published.clone(),
        );
        registry.register(
            "bus_received",
            "Signals received from other nodes",
            m.bus_received.clone(),
        );
        registry.register(
            "bus_dropped",
            "Signals not sent because the outgoing queue was full",
            m.bus_dropped.clone(),
        );
        registry.register(
            "bus_resyncs",
            "Times this node re-read the log and grants after a bus outage",
            m.bus_resyncs.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
