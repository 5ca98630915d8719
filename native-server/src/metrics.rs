//! The server's Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which API a request came through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Via {
    /// HTTP.
    Rest,
    /// A WebSocket frame.
    Socket,
}

/// The labels of the request-duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Which API.
    pub via: Via,
}

/// The labels of the answer counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// Which API.
    pub via: Via,
    /// The answer's HTTP status (a few dozen at most).
    pub status: u16,
}

/// Seconds, from 100 µs to about 6.5 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Events waiting in one socket's queue when it drained them: 1 to 4096.
fn depth_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Every metric the server keeps, registered once; handles are cheap to clone and update.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections (set when scraped).
    pub connections: Gauge,
    /// Subscriptions on this node (set when scraped).
    pub subscriptions: Gauge,
    /// Tasks alive in the runtime (set when scraped): returns to its idle level when clients
    /// leave, whatever they were doing.
    pub tasks: Gauge,
    /// Event frames written to sockets.
    pub events_delivered: Counter,
    /// Sockets closed with 4008 because too many frames waited to be written to them.
    pub slow_consumer_closes: Counter,
    /// Bytes waiting, on all sockets together, for connections that could not take them at
    /// once (bounded by `--max-queued-bytes-total`).
    pub queued_bytes: Gauge,
    /// Bytes of requests sockets hold, all together: the frames of reads running or held
    /// behind a write, and of writes running, also those whose socket is gone (bounded by
    /// `--max-body-bytes-total`).
    pub request_bytes: Gauge,
    /// Bytes of messages sockets are still receiving, past their first 4 KiB, all together
    /// (bounded by `--max-body-bytes-total` of their own).
    pub unfinished_bytes: Gauge,
    /// How many frames waited for a socket that could not take them at once, each time its
    /// task wrote them (an idle socket is written directly and never counts here).
    pub queue_depth: Histogram,
    /// Request durations, by API.
    pub request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Answers, by API and status: failures (5xx) show here as they happen.
    pub responses: Family<ResponseLabels, Counter>,
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
            subscriptions: Gauge::default(),
            tasks: Gauge::default(),
            events_delivered: Counter::default(),
            slow_consumer_closes: Counter::default(),
            queued_bytes: Gauge::default(),
            request_bytes: Gauge::default(),
            unfinished_bytes: Gauge::default(),
            queue_depth: depth_histogram(),
            request_duration: Family::new_with_constructor(duration_histogram),
            responses: Family::default(),
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
            "subscriptions",
            "Subscriptions on this node",
            m.subscriptions.clone(),
        );
        registry.register("tasks", "Tasks alive in the runtime", m.tasks.clone());
        registry.register(
            "events_delivered",
            "Event frames written to sockets",
            m.events_delivered.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Sockets closed with 4008 because too many frames waited to be written to them",
            m.slow_consumer_closes.clone(),
        );
        registry.register(
            "queued_bytes",
            "Bytes waiting, on all sockets together, for connections that could not take them at once",
            m.queued_bytes.clone(),
        );
        registry.register(
            "socket_request_bytes",
            "Bytes of requests sockets hold, all together: reads running or held, writes running",
            m.request_bytes.clone(),
        );
        registry.register(
            "socket_unfinished_bytes",
            "Bytes of messages sockets are still receiving, past their first 4 KiB, all together",
            m.unfinished_bytes.clone(),
        );
        registry.register(
            "queue_depth",
            "Frames waiting for a socket that could not take them at once, each time its task wrote them",
            m.queue_depth.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request durations, by API (rest or socket)",
            m.request_duration.clone(),
        );
        registry.register(
            "responses",
            "Answers to API requests, by API and HTTP status",
            m.responses.clone(),
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
    /// Records a request's answer and how long it took.
    pub fn observe_request(&self, via: Via, status: u16, started: std::time::Instant) {
        self.request_duration
            .get_or_create(&RequestLabels { via })
            .observe(started.elapsed().as_secs_f64());
        self.responses
            .get_or_create(&ResponseLabels { via, status })
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
