//! The connection under a WebSocket, split in the two halves [`crate::socket`] needs: the
//! stream tungstenite reads frames from, and a writer for the socket's task. A plain TCP
//! connection is shared, so that pushers can also write to it directly; a TLS one is split
//! (only its task encrypts and writes).

use crate::socket::Socket;
use crate::tls::Conn;
use bytes::Bytes;
use gridsocket_core::Instant;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
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
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
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
pub type Writer = Either<SharedTcp, WriteHalf<Box<TlsStream<TcpStream>>>>;

/// The stream tungstenite runs on. During the handshake its writes go to the connection;
/// once the socket exists they join the socket's outgoing frames in order (after the
/// handshake tungstenite writes only pongs and its reply to the peer's close).
pub struct Wire {
    read: Either<SharedTcp, ReadHalf<Box<TlsStream<TcpStream>>>>,
    handshake_writer: Option<Writer>,
    socket: Option<Arc<Socket>>,
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
            handshake_writer: Some(write),
            socket: None,
        };
        (wire, direct)
    }

    /// Ends the handshake phase: later writes go to `socket`; returns the task's writer.
    pub fn attach(&mut self, socket: Arc<Socket>) -> Option<Writer> {
        self.socket = Some(socket);
        self.handshake_writer.take()
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
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
