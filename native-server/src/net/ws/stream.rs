//! The connection under a WebSocket, split in the two halves [`Socket`] needs: the
//! stream tungstenite reads frames from, and a writer for the socket's task. A plain TCP
//! connection is shared, so that pushers can also write to it directly; a TLS one is split
//! (only its task encrypts and writes).

use crate::net::tls::Conn;
use crate::net::ws::socket::Socket;
use bytes::Bytes;
use gridsocket_core::Instant;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// A plain TCP connection shared by a socket's task and its pushers.
#[derive(Clone)]
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            let mut short = 0;
            // A read that leaves room in the buffer drained the socket (epoll is edge-triggered):
            // its readiness is cleared as a `WouldBlock` would, so the next poll waits for new
            // data instead of making a `recv()` that can only fail. Data that arrives meanwhile
            // is a new readiness event, which clearing does not erase. (tokio's own `TcpStream`
            // does the same; this stream is shared, so it reads through `try_io`.)
            let read = self.0.try_io(Interest::READABLE, || {
                let n = self.0.try_read(unfilled)?;
                if 0 < n && n < room {
                    short = n;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match read {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => {
                    buf.advance(short);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl SharedTcp {
    /// Runs `write` once the connection is writable, again after each `WouldBlock`.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match write(&self.0) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Closing is dropping: the last handle closes the connection.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The half a socket's task writes with.
pub type ConnWriter = Either<SharedTcp, WriteHalf<Box<TlsStream<TcpStream>>>>;

/// The stream tungstenite runs on. During the handshake its writes go to the connection;
/// once the socket exists they join the socket's outgoing frames in order (after the
/// handshake tungstenite writes only pongs and its reply to the peer's close).
///
/// A plain TCP connection is read into a buffer of the thread's, not of the socket's:
/// tungstenite reads 64 bytes at a time ([`crate::config`]'s read buffer), and what
/// one read brings beyond that waits in `unread`, which is allocated only while it holds
/// something. An idle socket holds no read buffer but tungstenite's small one, and a burst
/// of pipelined frames still costs one `recv()`.
pub struct Wire {
    read: Either<SharedTcp, ReadHalf<Box<TlsStream<TcpStream>>>>,
    /// Bytes read from the connection that tungstenite has not taken yet, from `taken` on.
    unread: Vec<u8>,
    taken: usize,
    handshake_writer: Option<ConnWriter>,
    socket: Option<Arc<Socket>>,
    /// Bytes handed to tungstenite since its last whole message, counted among the messages
    /// still arriving once the socket exists.
    unfinished: usize,
}

/// The size of a thread's read buffer: a `recv()` takes up to this much.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

impl Wire {
    /// Splits a connection. Also returns the plain TCP connection for direct writes.
    pub fn new(conn: Conn) -> (Wire, Option<Arc<TcpStream>>) {
        let (read, write, direct) = match conn {
            Either::Left(tcp) => {
                let tcp = SharedTcp(Arc::new(tcp));
                let direct = tcp.0.clone();
                (Either::Left(tcp.clone()), Either::Left(tcp), Some(direct))
            }
            Either::Right(tls) => {
                let (r, w) = tokio::io::split(tls);
                (Either::Right(r), Either::Right(w), None)
            }
        };
        let wire = Wire {
            read,
            unread: Vec::new(),
            taken: 0,
            handshake_writer: Some(write),
            socket: None,
            unfinished: 0,
        };
        (wire, direct)
    }

    /// Ends the handshake phase: later writes go to `socket`; returns the task's writer.
    pub fn attach(&mut self, socket: Arc<Socket>) -> Option<ConnWriter> {
        self.socket = Some(socket);
        self.handshake_writer.take()
    }

    /// tungstenite handed over a whole message: what it read of it is no longer unfinished.
    /// (What it read past the message's end, at most one read's worth, goes uncounted.)
    pub fn message_done(&mut self) {
        if let Some(socket) = &self.socket
            && self.unfinished > 0
        {
            socket.unfinished_moved(std::mem::take(&mut self.unfinished), 0);
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.message_done();
    }
}

impl Wire {
    /// Hands tungstenite what waits in `unread`, as much as it takes; frees `unread` once
    /// it is all taken.
    fn take_unread(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.unread.len() - self.taken);
        buf.put_slice(&self.unread[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.unread.len() {
            self.unread = Vec::new();
            self.taken = 0;
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(socket) = &this.socket
            && socket.refuses_unfinished(this.unfinished)
        {
            // The socket is closing, and its task was woken for it.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = this.read_into(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0
            && let Some(socket) = &this.socket
        {
            let before = this.unfinished;
            this.unfinished += n;
            socket.unfinished_moved(before, this.unfinished);
        }
        read
    }
}

impl Wire {
    /// Reads from the connection: what waits in `unread` first, then a large frame straight
    /// into tungstenite's buffer, else through the thread's buffer.
    fn read_into(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self;
        let tcp = match &mut this.read {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => return Pin::new(tls).poll_read(cx, buf),
        };
        if this.taken < this.unread.len() {
            this.take_unread(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            // A large frame being read: straight into tungstenite's buffer.
            return Pin::new(tcp).poll_read(cx, buf);
        }
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(tcp).poll_read(cx, &mut read))?;
            let filled = read.filled();
            let n = buf.remaining().min(filled.len());
            buf.put_slice(&filled[..n]);
            if n < filled.len() {
                this.unread = filled[n..].to_vec();
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match (&this.socket, &mut this.handshake_writer) {
            (Some(socket), _) => {
                socket.send_raw(Instant::now(), Bytes::copy_from_slice(buf));
                Poll::Ready(Ok(buf.len()))
            }
            (None, Some(w)) => Pin::new(w).poll_write(cx, buf),
            (None, None) => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match (&this.socket, &mut this.handshake_writer) {
            (None, Some(w)) => Pin::new(w).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket's task ends the connection itself, after its last frames.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_short_read_waits_for_new_data_without_losing_any() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut client, mut shared) = (
            client.expect("connect"),
            SharedTcp(Arc::new(accepted.expect("accept").0)),
        );
        let mut buf = [0u8; 64];
        for round in 0..50u8 {
            let sent = [round; 5];
            client.write_all(&sent).await.expect("write");
            let n = tokio::time::timeout(Duration::from_secs(5), shared.read(&mut buf))
                .await
                .expect("the data is read, not waited for forever")
                .expect("read");
            assert_eq!(&buf[..n], &sent);
            // Drained: the next read waits (no data, no error) instead of spinning.
            assert!(shared.read(&mut buf).now_or_never().is_none());
        }
        // A read that fills the buffer keeps the readiness: the rest comes without a new event.
        client.write_all(&[7u8; 100]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = shared.read(&mut buf).await.expect("read");
        assert_eq!(first, 64);
        let rest = shared
            .read(&mut buf)
            .now_or_never()
            .expect("ready")
            .expect("read");
        assert_eq!(rest, 36);
    }

    #[tokio::test]
    async fn frames_read_through_the_threads_buffer_arrive_whole_and_in_order() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client =
            WebSocketStream::from_raw_socket(client.expect("connect"), Role::Client, None).await;
        let (wire, _) = Wire::new(Either::Left(accepted.expect("accept").0));
        let config = WebSocketConfig::default().read_buffer_size(crate::config::READ_BUFFER);
        let mut server = WebSocketStream::from_raw_socket(wire, Role::Server, Some(config)).await;
        // Sizes around tungstenite's reads, the thread's buffer (16 KiB) and beyond, sent back
        // to back so that one `recv()` holds many frames and ends inside one.
        fn frame(i: usize) -> String {
            use crate::config::READ_BUFFER;
            let size = match i % 7 {
                0 => 1,
                1 => READ_BUFFER - 1,
                2 => READ_BUFFER + 1,
                3 => 3_000,
                4 => SCRATCH - 3,
                5 => SCRATCH * 3 + 11,
                _ => 90,
            };
            format!("{i}:").repeat(size / 2 + 1)[..size].to_owned()
        }
        let sender = tokio::spawn(async move {
            let mut client = client;
            for i in 0..300 {
                client.feed(Message::text(frame(i))).await.expect("feed");
            }
            client.flush().await.expect("flush");
            client
        });
        for i in 0..300 {
            let msg = tokio::time::timeout(Duration::from_secs(10), server.next())
                .await
                .expect("the frame arrives")
                .expect("open")
                .expect("a frame");
            assert_eq!(
                msg.into_text().expect("text").as_str(),
                frame(i),
                "frame {i}"
            );
        }
        drop(sender.await.expect("sender"));
        // Everything was taken: nothing waits, and nothing is kept for the idle socket.
        assert!(server.get_ref().unread.is_empty());
    }
}
