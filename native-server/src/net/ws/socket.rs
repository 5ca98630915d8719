//! One socket's state, shared by its task and by whoever pushes to it (the dispatcher, queue
//! pumps, revocations): the protocol session and the bytes it could not write yet.
//!
//! A push is applied to the session where it happens, and what the session then sends is
//! written to the connection at once if nothing is waiting before it: an event to an idle
//! plain-TCP socket costs one `send()` of bytes encoded once for every subscriber, and no task
//! wake-up. What the connection cannot take at once (the peer's buffers are full), and every
//! frame of a TLS socket (only its task can encrypt), waits in the socket's backlog for its
//! task. A backlog is bounded in frames and in bytes ([`BacklogLimits`]): past either, the
//! socket is a slow consumer and closes with 4008; it resumes with `since`, and nobody else
//! waits for it. A frame being written may exceed the byte bound by itself (one large answer
//! is not slowness); frames waiting behind it may not.

use crate::config::BacklogLimits;
use crate::metrics::Metrics;
use crate::realtime::push::{Push, SharedEvent, Sink};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use gridsocket_core::{Instant, OutFrame, ServerSession, close_code};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// Chunks of the backlog handed to one vectored write.
const WRITE_VECTORS: usize = 64;

/// The encoded WebSocket frame (a server frame: unmasked) of a text message.
pub fn text_frame(text: &str) -> Bytes {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let len = text.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + text.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(len, &mut out);
    out.extend_from_slice(text.as_bytes());
    out.into()
}

/// The encoded frame of anything the session sends.
fn encode(frame: OutFrame) -> Bytes {
    let frame = match frame {
        OutFrame::Text(text) => return text_frame(&text),
        OutFrame::Event(text) => return text_frame(&text),
        OutFrame::Ping => Frame::ping(Bytes::new()),
        OutFrame::Close { code, reason } => Frame::close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    };
    let mut out = Vec::with_capacity(frame.len());
    let _ = frame.format(&mut out);
    out.into()
}

/// A socket's shared state: see the module documentation.
pub struct Socket {
    state: Mutex<State>,
    /// Wakes the socket's task: something only it can do is waiting (a backlog to write, a
    /// close, a broken connection). A flag and a waker, not a `Notify`: the task then waits on
    /// it without a future of its own, which every idle socket would carry.
    woken: AtomicBool,
    waker: AtomicWaker,
    /// The connection, for writes from outside the task; `None` with TLS.
    direct: Option<Arc<TcpStream>>,
    bounds: Arc<Bounds>,
}

/// What every socket of a server shares: the bounds of what a socket holds (its backlog, the
/// requests it runs), and the metrics these count in. One pointer in each socket, not five
/// words.
pub struct Bounds {
    limits: BacklogLimits,
    /// Most bytes of requests all sockets hold at once (`--max-body-bytes-total`), counted in
    /// `metrics.request_bytes`.
    request_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Bounds {
    /// A server's, with every bound at least 1.
    pub fn new(limits: BacklogLimits, request_bytes: usize, metrics: Arc<Metrics>) -> Arc<Bounds> {
        Arc::new(Bounds {
            limits: BacklogLimits {
                events: limits.events.max(1),
                bytes: limits.bytes.max(1),
                total_bytes: limits.total_bytes.max(1),
            },
            request_bytes: request_bytes.max(1),
            metrics,
        })
    }

    /// Whether a request of `bytes` fits beside the requests every socket holds now. A frame
    /// larger than the whole budget fits when nothing else is held, so that a budget set below
    /// the frame limit still lets requests through one at a time.
    fn has_room_for(&self, bytes: usize) -> bool {
        let held = gauge_bytes(&self.metrics.request_bytes);
        held == 0 || held.saturating_add(bytes) <= self.request_bytes
    }

    /// Moves the count of requests' bytes held from `before` to `after`.
    fn count_requests(&self, before: usize, after: usize) {
        move_gauge(&self.metrics.request_bytes, before, after);
    }

    /// Whether the unfinished messages every socket holds are past their budget, which is
    /// as large as the requests' and apart from it: messages that never end take the room of
    /// other large messages still arriving, never that of the requests.
    fn unfinished_over_budget(&self) -> bool {
        gauge_bytes(&self.metrics.unfinished_bytes) > self.request_bytes
    }
}

/// How much of a message one socket may have received without finishing it, whatever the
/// budget: only a large message in progress is ever refused.
const UNFINISHED_ALONE: usize = 64 * 1024;

/// An unfinished message is counted once it is past this: the common small frame, read in
/// one go, touches no shared count until it is a request.
const UNFINISHED_COUNTED_FROM: usize = 4 * 1024;

/// A write's bytes, counted among the requests held until it ends: it may outlive its socket.
pub struct HeldWrite {
    bounds: Arc<Bounds>,
    bytes: usize,
}

impl Drop for HeldWrite {
    fn drop(&mut self) {
        self.bounds.count_requests(self.bytes, 0);
    }
}

/// The bytes a gauge of bytes counts now.
fn gauge_bytes(gauge: &Gauge) -> usize {
    usize::try_from(gauge.get()).unwrap_or(0)
}

/// Moves a gauge by the change from `before` to `after`.
fn move_gauge(gauge: &Gauge, before: usize, after: usize) {
    if after == before {
        // Nothing to write to a line every thread shares.
    } else if after > before {
        gauge.inc_by(i64::try_from(after - before).unwrap_or(i64::MAX));
    } else {
        gauge.dec_by(i64::try_from(before - after).unwrap_or(i64::MAX));
    }
}

/// What the lock guards.
pub struct State {
    /// The socket's protocol session.
    pub session: ServerSession,
    /// Encoded frames, or what is left of them, not yet written.
    backlog: Backlog,
    /// The backlog overflowed: the socket is closing as a slow consumer.
    slow: bool,
    /// A write failed: the connection is gone.
    broken: bool,
    /// Frames are being gathered for one write ([`Socket::push_corked`]).
    corked: bool,
    /// The session's read bytes as last counted in the server's request bytes (at most
    /// `u32::MAX`: 32 bits beside the flags fit the socket in its size class).
    reads_counted: u32,
}

/// Frames, or what is left of them, not yet written; oldest first. Held in a box only while
/// there are any: an idle socket's state carries one pointer for it, not 40 bytes, and an
/// emptied backlog keeps no memory ([`Backlog::release`]).
#[derive(Default)]
struct Backlog(Option<Box<Queued>>);

struct Queued {
    frames: VecDeque<Bytes>,
    /// The bytes in `frames`.
    bytes: usize,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.frames.is_empty())
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.frames.len())
    }

    /// The bytes waiting.
    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.bytes)
    }

    fn front(&self) -> Option<&Bytes> {
        self.0.as_ref()?.frames.front()
    }

    fn frames(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter().flat_map(|q| q.frames.iter())
    }

    fn push(&mut self, frame: Bytes) {
        let q = self.0.get_or_insert_with(|| {
            Box::new(Queued {
                frames: VecDeque::new(),
                bytes: 0,
            })
        });
        q.bytes += frame.len();
        q.frames.push_back(frame);
    }

    /// Takes `n` written bytes off the front.
    fn consume(&mut self, mut n: usize) {
        let Some(q) = self.0.as_mut() else {
            return;
        };
        q.bytes = q.bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = q.frames.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                q.frames.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }

    /// Keeps only the frame in progress.
    fn truncate_to_front(&mut self) {
        if let Some(q) = self.0.as_mut() {
            q.frames.truncate(1);
            q.bytes = q.frames.front().map_or(0, Bytes::len);
        }
    }

    /// Frees an emptied backlog's memory.
    fn release(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}

impl State {
    /// True when the socket's task should end: the session closed or the connection broke.
    pub fn is_finished(&self) -> bool {
        self.session.is_closed() || self.broken
    }

    /// True while frames wait to be written.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// True once the backlog overflowed.
    #[cfg(test)]
    pub fn is_slow(&self) -> bool {
        self.slow
    }
}

impl Socket {
    /// A socket around its session. `direct` is the plain TCP connection (writable from any
    /// thread); `None` for TLS.
    pub fn new(
        session: ServerSession,
        direct: Option<Arc<TcpStream>>,
        bounds: Arc<Bounds>,
    ) -> Socket {
        Socket {
            state: Mutex::new(State {
                session,
                backlog: Backlog::default(),
                slow: false,
                broken: false,
                corked: false,
                reads_counted: 0,
            }),
            woken: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            direct,
            bounds,
        }
    }

    /// Locks the state. A panic elsewhere while it was held leaves a usable session.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a pusher left the task something to do (a backlog, a close).
    pub async fn woken(&self) {
        std::future::poll_fn(|cx| self.poll_woken(cx)).await
    }

    /// Ready once a pusher left the task something to do (a backlog, a close) since the last
    /// time it was.
    fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Wakes the socket's task (see [`Socket::poll_woken`]).
    pub(super) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the socket was woken since this was last asked (its task asks through
    /// [`Socket::woken`]).
    #[cfg(test)]
    pub(super) fn take_wake(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Applies a push to the session and writes what it sends at once.
    pub fn push(&self, now: Instant, push: Push) {
        let mut st = self.lock();
        let wake_always = !matches!(
            push,
            Push::Event { .. } | Push::Delivery { .. } | Push::Ephemeral { .. }
        );
        let known = Self::apply(&mut st, now, push);
        self.transmit(&mut st, now, known.as_ref(), false);
        if wake_always || st.has_backlog() || st.is_finished() {
            drop(st);
            self.wake();
        }
    }

    /// Applies a push to the session and queues what it sends, to be written by
    /// [`Socket::uncork`]: one write for every event of a burst. True if the socket was not
    /// corked yet (the caller must uncork it).
    pub fn push_corked(&self, now: Instant, push: Push) -> bool {
        let mut st = self.lock();
        let known = Self::apply(&mut st, now, push);
        self.transmit(&mut st, now, known.as_ref(), true);
        !std::mem::replace(&mut st.corked, true)
    }

    /// Writes what [`Socket::push_corked`] queued, as far as the connection takes it now.
    pub fn uncork(&self) {
        let mut st = self.lock();
        st.corked = false;
        if let Some(tcp) = &self.direct {
            self.write_now(&mut st, tcp);
        }
        self.check_backlog(&mut st, Instant::now());
        if st.has_backlog() || st.is_finished() {
            drop(st);
            self.wake();
        }
    }

    /// Hands a push to the session; returns the pushed event, whose encoding is shared.
    fn apply(st: &mut State, now: Instant, push: Push) -> Option<Arc<SharedEvent>> {
        match push {
            Push::Event {
                subscription,
                seq,
                event,
            } => {
                st.session
                    .handle_push(now, subscription, seq, event.text().clone());
                Some(event)
            }
            Push::Delivery {
                subscription,
                event,
            } => {
                st.session
                    .handle_delivery(now, subscription, event.text().clone());
                Some(event)
            }
            Push::Ephemeral { event } => {
                st.session.handle_ephemeral(now, event.text().clone());
                Some(event)
            }
            Push::Complete {
                handle,
                status,
                body,
            } => {
                st.session.complete(now, handle, status, &body);
                None
            }
            Push::Revoke {
                subscription,
                reason,
            } => {
                st.session.revoke(now, subscription, reason);
                None
            }
            Push::RevokePresence { path, name, reason } => {
                st.session.revoke_presence(now, &path, &name, reason);
                None
            }
            Push::Close { code, reason } => {
                st.session.close(now, code, reason);
                None
            }
            Push::Drain => {
                st.session.drain(now);
                None
            }
        }
    }

    /// Writes (or, `corked`, queues) everything the session has to send. `known` is an event
    /// whose encoding is shared with other sockets.
    pub fn transmit(
        &self,
        st: &mut State,
        now: Instant,
        known: Option<&Arc<SharedEvent>>,
        corked: bool,
    ) {
        while let Some(frame) = st.session.poll_transmit() {
            if matches!(frame, OutFrame::Event(_)) {
                self.bounds.metrics.events_delivered.inc();
            }
            let bytes = match (frame, known) {
                (OutFrame::Event(text), Some(event)) if Arc::ptr_eq(&text, event.text()) => {
                    event.wire(text_frame)
                }
                (frame, _) => encode(frame),
            };
            self.send(st, now, bytes, corked);
        }
    }

    /// Writes everything the session has to send, in as few writes as the connection allows
    /// (the socket's task: many answers at once go out together).
    pub fn flush(&self, st: &mut State, now: Instant) {
        self.count_reads(st);
        self.transmit(st, now, None, true);
        if let Some(tcp) = &self.direct {
            self.write_now(st, tcp);
        }
        self.check_backlog(st, now);
    }

    /// Bytes from tungstenite itself (a pong, the reply to the peer's close), in order with
    /// everything else.
    pub fn send_raw(&self, now: Instant, bytes: Bytes) {
        let mut st = self.lock();
        self.send(&mut st, now, bytes, false);
        if st.has_backlog() {
            drop(st);
            self.wake();
        }
    }

    /// Writes `bytes` now if nothing waits before them, the socket is not corked and the
    /// connection takes them; otherwise queues what is left.
    fn send(&self, st: &mut State, now: Instant, mut bytes: Bytes, corked: bool) {
        if st.broken {
            return;
        }
        if !corked
            && !st.corked
            && st.backlog.is_empty()
            && let Some(tcp) = &self.direct
        {
            match tcp.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return,
                Ok(n) => {
                    let _ = bytes.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    st.broken = true;
                    return;
                }
            }
        }
        if st.slow {
            // Cut off: only what fits at once goes out on the way to the close.
            return;
        }
        let before = st.backlog.bytes();
        st.backlog.push(bytes);
        self.account(before, st.backlog.bytes());
        // Gathered frames are judged once the write they wait for has been tried.
        if !corked && !st.corked {
            self.check_backlog(st, now);
        }
    }

    /// Closes the socket as a slow consumer once its backlog is past a limit.
    fn check_backlog(&self, st: &mut State, now: Instant) {
        let Bounds {
            limits, metrics, ..
        } = &*self.bounds;
        let waiting_bytes = st.backlog.bytes() - st.backlog.front().map_or(0, Bytes::len);
        let all_sockets = gauge_bytes(&metrics.queued_bytes);
        let over = st.backlog.len() > limits.events
            || (st.backlog.len() > 1
                && (waiting_bytes > limits.bytes || all_sockets > limits.total_bytes));
        if !over || st.slow {
            return;
        }
        st.slow = true;
        metrics.slow_consumer_closes.inc();
        st.session.close(
            now,
            close_code::SLOW_CONSUMER,
            "slow consumer: resume with since",
        );
        // What waits behind the frame in progress is let go; the close follows that frame,
        // and the task writes what the connection takes of both at once.
        let before = st.backlog.bytes();
        st.backlog.truncate_to_front();
        while let Some(frame) = st.session.poll_transmit() {
            if matches!(frame, OutFrame::Close { .. }) {
                st.backlog.push(encode(frame));
            }
        }
        self.account(before, st.backlog.bytes());
    }

    /// Moves the server-wide count of waiting bytes with a socket's backlog, which went from
    /// `before` bytes to `after`.
    fn account(&self, before: usize, after: usize) {
        move_gauge(&self.bounds.metrics.queued_bytes, before, after);
    }

    /// Hands a text frame to the session: as a request only if the server has room for its
    /// bytes among the requests every socket holds, else the session answers it 503.
    pub fn take_text(&self, st: &mut State, now: Instant, text: &str) {
        if self.bounds.has_room_for(text.len()) {
            st.session.handle_text(now, text);
        } else {
            st.session.handle_text_when_busy(now, text);
        }
        self.count_reads(st);
    }

    /// Counts a write's bytes among the requests held, until the returned guard is dropped.
    pub fn hold_write(&self, bytes: usize) -> HeldWrite {
        self.bounds.count_requests(0, bytes);
        HeldWrite {
            bounds: self.bounds.clone(),
            bytes,
        }
    }

    /// The message the connection is receiving went from `before` bytes so far to `after`
    /// (0: it is finished, or the connection gone), counted among the unfinished messages: a
    /// client that starts messages and never ends them would otherwise hold up to a frame's
    /// limit on every socket. Past [`UNFINISHED_ALONE`], while all sockets' unfinished
    /// messages are past their budget, the socket closes with 1013 (try again later).
    pub fn unfinished_moved(&self, before: usize, after: usize) {
        let counted = |n: usize| if n > UNFINISHED_COUNTED_FROM { n } else { 0 };
        move_gauge(
            &self.bounds.metrics.unfinished_bytes,
            counted(before),
            counted(after),
        );
        if after > before {
            self.refuses_unfinished(after);
        }
    }

    /// Whether a message of which `unfinished` bytes arrived may not grow now: if so, the
    /// socket closes with 1013 (its task is woken for it), and nothing more is read.
    pub fn refuses_unfinished(&self, unfinished: usize) -> bool {
        let refused = unfinished > UNFINISHED_ALONE && self.bounds.unfinished_over_budget();
        if refused {
            self.lock().session.close(
                Instant::now(),
                close_code::TRY_AGAIN_LATER,
                "the server holds too many messages still arriving; send it again later",
            );
            self.wake();
        }
        refused
    }

    /// Brings the server's count of request bytes up to date with the session's reads.
    fn count_reads(&self, st: &mut State) {
        let now_held = u32::try_from(st.session.read_bytes()).unwrap_or(u32::MAX);
        if now_held != st.reads_counted {
            self.bounds
                .count_requests(st.reads_counted as usize, now_held as usize);
            st.reads_counted = now_held;
        }
    }

    /// Writes the backlog to `out` (the task's writer) until it is empty or `out` is full.
    /// Cancel-safe: what was written is off the backlog, what was not stays on it. Writes
    /// happen under the lock (they do not block), so that a pusher never writes in between.
    pub fn poll_write_backlog(
        &self,
        cx: &mut Context<'_>,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Poll<io::Result<()>> {
        let mut st = self.lock();
        if st.has_backlog() {
            self.bounds
                .metrics
                .queue_depth
                .observe(st.backlog.len() as f64);
        }
        loop {
            if st.broken {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if st.backlog.is_empty() {
                st.backlog.release();
                return Pin::new(&mut *out).poll_flush(cx);
            }
            let mut slices = [IoSlice::new(&[]); WRITE_VECTORS];
            let count = front_slices(&st.backlog, &mut slices);
            let written = ready!(Pin::new(&mut *out).poll_write_vectored(cx, &slices[..count]));
            match written {
                Ok(n) if n > 0 => self.consume(&mut st, n),
                Ok(_) => {
                    st.broken = true;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Err(e) => {
                    st.broken = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl Sink for Socket {
    fn push(&self, now: Instant, push: Push) {
        Socket::push(self, now, push);
    }

    fn push_corked(&self, now: Instant, push: Push) -> bool {
        Socket::push_corked(self, now, push)
    }

    fn uncork(&self) {
        Socket::uncork(self);
    }
}

impl Socket {
    /// Writes the backlog to a plain TCP connection as far as it takes it without waiting.
    fn write_now(&self, st: &mut State, tcp: &TcpStream) {
        while let Some(front) = st.backlog.front()
            && !st.broken
        {
            let written = match st.backlog.len() {
                1 => tcp.try_write(front),
                _ => {
                    let mut slices = [IoSlice::new(&[]); WRITE_VECTORS];
                    let count = front_slices(&st.backlog, &mut slices);
                    tcp.try_write_vectored(&slices[..count])
                }
            };
            match written {
                Ok(n) if n > 0 => self.consume(st, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                _ => st.broken = true,
            }
        }
        st.backlog.release();
    }

    /// Takes `n` written bytes off the front of a socket's backlog.
    fn consume(&self, st: &mut State, n: usize) {
        let before = st.backlog.bytes();
        st.backlog.consume(n);
        self.account(before, st.backlog.bytes());
    }
}

impl Drop for Socket {
    /// What it still held is no longer waiting.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let (waiting, reads) = (st.backlog.bytes(), st.reads_counted as usize);
        self.account(waiting, 0);
        self.bounds.count_requests(reads, 0);
    }
}

/// Points `slices` at the backlog's first chunks; returns how many.
fn front_slices<'a>(backlog: &'a Backlog, slices: &mut [IoSlice<'a>]) -> usize {
    let mut count = 0;
    for (slot, chunk) in slices.iter_mut().zip(backlog.frames()) {
        *slot = IoSlice::new(chunk);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ws::stream::SharedTcp;
    use futures_util::FutureExt;
    use gridsocket_core::{Params, ServerConfig, ServerEvent, SubscriptionId};
    use std::future::poll_fn;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn a_socket_fits_a_448_byte_block() {
        // Every socket's shared state is this plus an `Arc`'s two counts, in mimalloc's
        // 448-byte size class; at 449 it takes 512.
        assert!(std::mem::size_of::<Socket>() + 16 <= 448);
    }

    /// Every socket's requests count in one budget of bytes: a read's frame until it is
    /// answered, a write's while its guard lives (its task may outlive the socket). A request
    /// that would pass the budget is answered 503 and counts nothing.
    #[test]
    fn requests_past_the_servers_budget_of_request_bytes_are_answered_503() {
        let metrics = Arc::new(Metrics::default());
        let limits = BacklogLimits {
            events: 16,
            bytes: usize::MAX,
            total_bytes: usize::MAX,
        };
        let now = Instant::now();
        let session = ServerSession::accept(ServerConfig::default(), now);
        let socket = Socket::new(session, None, Bounds::new(limits, 100, metrics.clone()));
        let get = |id: u32| format!(r#"{{"id":{id},"method":"GET","path":"/books/dune"}}"#);
        let held = || metrics.request_bytes.get() as usize;
        let mut st = socket.lock();

        socket.take_text(&mut st, now, &get(1));
        let Some(ServerEvent::Request { handle, .. }) = st.session.poll_event() else {
            panic!("the first read did not start");
        };
        assert_eq!(held(), get(1).len());
        let write = socket.hold_write(40);
        assert_eq!(held(), get(1).len() + 40);

        // 42 + 40 held, and 42 more would pass 100.
        socket.take_text(&mut st, now, &get(2));
        assert!(
            st.session.poll_event().is_none(),
            "a request past the budget ran"
        );
        let answer: serde_json::Value = match st.session.poll_transmit() {
            Some(OutFrame::Text(text)) => serde_json::from_str(&text).expect("JSON"),
            other => panic!("expected an answer, got {other:?}"),
        };
        assert_eq!(
            (&answer["id"], &answer["status"], &answer["body"]["error"]),
            (
                &serde_json::json!(2),
                &serde_json::json!(503),
                &serde_json::json!("server_busy")
            )
        );
        assert_eq!(held(), get(1).len() + 40);

        // Answered, the read counts no more once the socket's loop comes round; the write's
        // bytes go when its guard does.
        assert!(st.session.complete(now, handle, 200, "{}"));
        socket.flush(&mut st, now);
        assert_eq!(held(), 40);
        drop(write);
        assert_eq!(held(), 0);

        // A frame larger than the whole budget runs when nothing else is held.
        let large = format!(
            r#"{{"id":3,"method":"GET","path":"/books/{}"}}"#,
            "d".repeat(100)
        );
        socket.take_text(&mut st, now, &large);
        assert!(matches!(
            st.session.poll_event(),
            Some(ServerEvent::Request { .. })
        ));
        assert_eq!(held(), large.len());
        // A socket that goes away takes its reads' bytes with it.
        drop(st);
        drop(socket);
        assert_eq!(held(), 0);
    }

    /// A connected pair: the server's end (shared) and the client's.
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        (Arc::new(server), client.expect("connect"))
    }

    /// A socket whose session has one confirmed subscription.
    async fn socket(max_events: usize) -> (Arc<Socket>, SubscriptionId, TcpStream) {
        socket_with(BacklogLimits {
            events: max_events,
            bytes: usize::MAX,
            total_bytes: usize::MAX,
        })
        .await
    }

    async fn socket_with(limits: BacklogLimits) -> (Arc<Socket>, SubscriptionId, TcpStream) {
        socket_counted_in(limits, Arc::new(Metrics::default())).await
    }

    /// A socket whose bytes count into `metrics`, as every socket of one server does.
    async fn socket_counted_in(
        limits: BacklogLimits,
        metrics: Arc<Metrics>,
    ) -> (Arc<Socket>, SubscriptionId, TcpStream) {
        let now = Instant::now();
        let mut session = ServerSession::accept(ServerConfig::default(), now);
        session.subscribe_on_connect(now, "/notes".into(), Params::default());
        let Some(ServerEvent::Subscribe {
            handle,
            subscription,
            ..
        }) = session.poll_event()
        else {
            panic!("no subscribe event");
        };
        session.confirm_subscription(now, handle, 0, "{}", Vec::new());
        while session.poll_transmit().is_some() {}
        let (server, client) = pair().await;
        let socket = Socket::new(session, Some(server), Bounds::new(limits, 1 << 20, metrics));
        (Arc::new(socket), subscription, client)
    }

    fn event(subscription: SubscriptionId, seq: u64, body: &str) -> (Push, Bytes) {
        let wire = text_frame(body);
        let push = Push::Event {
            subscription,
            seq,
            event: SharedEvent::new(body),
        };
        (push, wire)
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        client.read_exact(&mut buf).await.expect("read");
        buf
    }

    #[tokio::test]
    async fn an_event_to_an_idle_socket_is_written_by_the_pusher_without_waking_the_task() {
        let (socket, sub, mut client) = socket(16).await;
        let (push, wire) = event(sub, 1, r#"{"n":1}"#);
        socket.push(Instant::now(), push);
        assert_eq!(read_exactly(&mut client, wire.len()).await, wire);
        assert!(
            socket.woken().now_or_never().is_none(),
            "the task was woken"
        );
        // The session saw it: the same event again is not sent twice.
        let (again, _) = event(sub, 1, r#"{"n":1}"#);
        socket.push(Instant::now(), again);
        assert!(!socket.lock().has_backlog());
        let mut byte = [0u8; 1];
        assert!(
            client.try_read(&mut byte).is_err(),
            "a duplicate was written"
        );
    }

    #[tokio::test]
    async fn corked_events_wait_for_uncork_and_go_out_in_order() {
        let (socket, sub, mut client) = socket(16).await;
        let mut expected = Vec::new();
        for seq in 1..=3 {
            let (push, wire) = event(sub, seq, &format!(r#"{{"n":{seq}}}"#));
            let first = socket.push_corked(Instant::now(), push);
            assert_eq!(first, seq == 1, "only the first push corks the socket");
            expected.extend_from_slice(&wire);
        }
        let mut byte = [0u8; 1];
        assert!(client.try_read(&mut byte).is_err(), "written before uncork");
        socket.uncork();
        assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
        assert!(!socket.lock().has_backlog());
    }

    #[tokio::test]
    async fn a_peer_that_reads_late_gets_the_backlog_from_the_task_in_order() {
        let (socket, sub, mut client) = socket(100_000).await;
        // Big events until the connection stops taking them and a backlog forms.
        let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(64 * 1024));
        let mut expected = Vec::new();
        let mut seq = 0;
        while !socket.lock().has_backlog() {
            seq += 1;
            let (push, wire) = event(sub, seq, &body);
            socket.push(Instant::now(), push);
            expected.extend_from_slice(&wire);
        }
        for _ in 0..10 {
            seq += 1;
            let (push, wire) = event(sub, seq, &body);
            socket.push(Instant::now(), push);
            expected.extend_from_slice(&wire);
        }
        assert!(
            socket.woken().now_or_never().is_some(),
            "the task was not told"
        );
        let writer = socket.clone();
        let direct = socket.direct.clone().expect("plain TCP");
        let task = tokio::spawn(async move {
            let mut out = SharedTcp(direct);
            poll_fn(|cx| writer.poll_write_backlog(cx, &mut out)).await
        });
        let got = read_exactly(&mut client, expected.len()).await;
        assert!(
            got == expected,
            "bytes differ from the frames pushed, in order"
        );
        task.await.expect("task").expect("backlog written");
        assert!(!socket.lock().has_backlog());
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_is_cut_off_as_a_slow_consumer_with_a_bounded_backlog() {
        let (socket, sub, _client) = socket(8).await;
        let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(64 * 1024));
        for seq in 1..=2_000 {
            let (push, _) = event(sub, seq, &body);
            socket.push(Instant::now(), push);
            if socket.lock().is_slow() {
                break;
            }
        }
        let st = socket.lock();
        assert!(st.is_slow() && st.is_finished());
        assert!(st.backlog.len() <= 8);
        assert_eq!(socket.bounds.metrics.slow_consumer_closes.get(), 1);
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_is_cut_off_at_the_byte_bound() {
        let limit = 1 << 20;
        let (socket, sub, _client) = socket_with(BacklogLimits {
            events: 100_000,
            bytes: limit,
            total_bytes: usize::MAX,
        })
        .await;
        let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(64 * 1024));
        let mut pushed = 0;
        for seq in 1..=2_000 {
            let (push, _) = event(sub, seq, &body);
            socket.push(Instant::now(), push);
            pushed += 1;
            if socket.lock().is_slow() {
                break;
            }
        }
        let st = socket.lock();
        assert!(
            st.is_slow() && st.is_finished(),
            "cut off after {pushed} events"
        );
        // What the kernel took, plus at most the limit: then the backlog lets go of all but
        // the frame in progress.
        assert!(
            pushed * 64 * 1024 < 64 << 20,
            "{pushed} events before the cut"
        );
        assert!(st.backlog.len() <= 2 && st.backlog.bytes() <= 70 * 1024);
    }

    #[tokio::test]
    async fn many_slow_readers_are_cut_off_at_the_server_wide_bound() {
        let limits = BacklogLimits {
            events: 100_000,
            bytes: usize::MAX,
            total_bytes: 4 << 20,
        };
        let (first, sub, _a) = socket_with(limits).await;
        // A second socket counting into the same server-wide total.
        let (second, sub2, _b) = socket_counted_in(limits, first.bounds.metrics.clone()).await;
        let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(64 * 1024));
        for seq in 1..=2_000 {
            for (socket, sub) in [(&*first, sub), (&*second, sub2)] {
                let (push, _) = event(sub, seq, &body);
                socket.push(Instant::now(), push);
            }
            if first.lock().is_slow() && second.lock().is_slow() {
                break;
            }
        }
        assert!(first.lock().is_slow() && second.lock().is_slow());
        // Neither passed its own bound (there is none); together they passed the server's.
        let total = first.bounds.metrics.queued_bytes.get();
        assert!(total < 1 << 20, "what is left after the cut: {total} bytes");
        drop(second);
        let left = first.lock().backlog.bytes() as i64;
        assert_eq!(
            first.bounds.metrics.queued_bytes.get(),
            left,
            "a dropped socket holds nothing"
        );
    }

    #[tokio::test]
    async fn one_answer_larger_than_the_byte_bound_is_not_slowness() {
        let (socket, sub, mut client) = socket_with(BacklogLimits {
            events: 100,
            bytes: 64 * 1024,
            total_bytes: usize::MAX,
        })
        .await;
        let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(8 << 20));
        let (push, wire) = event(sub, 1, &body);
        socket.push(Instant::now(), push);
        assert!(!socket.lock().is_slow());
        let len = wire.len();
        let reader = tokio::spawn(async move { read_exactly(&mut client, len).await });
        let got = loop {
            if reader.is_finished() {
                break reader.await.expect("reader");
            }
            if let Some(tcp) = &socket.direct {
                let mut st = socket.lock();
                socket.write_now(&mut st, tcp);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(got, wire.to_vec());
        assert!(!socket.lock().is_slow());
    }
}
