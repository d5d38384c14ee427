//! Non-blocking TCP sockets on the thread's [`Reactor`](super::reactor::Reactor):
//! a listener that accepts, and a stream that implements `AsyncRead` and
//! `AsyncWrite`.
//!
//! Every operation is tried first; only when the kernel says it would
//! block does the task wait for the next edge-triggered event. A read or
//! write that moves fewer bytes than asked also shows the socket is
//! drained (or full), so the next attempt waits for an event instead of
//! costing a system call that would fail. Sockets belong to the thread
//! that made them (they are neither `Send` nor `Sync`).

use super::reactor::{current, Direction, Reactor, Source};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use smol::io::{AsyncRead, AsyncWrite};
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

fn no_reactor() -> io::Error {
    io::Error::other("socket used outside net::block_on")
}

/// A registration that ends with its socket.
struct Registration {
    reactor: Rc<Reactor>,
    source: Rc<Source>,
}

impl Registration {
    fn new(fd: impl rustix::fd::AsFd) -> io::Result<Registration> {
        let reactor = current().ok_or_else(no_reactor)?;
        let source = reactor.register(fd)?;
        Ok(Registration { reactor, source })
    }
}

/// Runs `op` when `dir` may be ready; parks the task when it is not.
/// `drained` says from `op`'s result that the direction has nothing more
/// for now (a short read or write).
fn poll_io<T>(
    dir: &Direction,
    cx: &Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
    drained: impl Fn(&T) -> bool,
) -> Poll<io::Result<T>> {
    loop {
        if dir.is_exhausted() {
            dir.park(cx);
            return Poll::Pending;
        }
        match op() {
            Ok(done) => {
                if drained(&done) {
                    dir.exhaust();
                }
                return Poll::Ready(Ok(done));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dir.exhaust(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// True when a read or write of `len` bytes moved only `n` (but some):
/// the socket was drained, or its buffer filled. End of stream (0) is not:
/// reading again must see it again.
fn short(n: usize, len: usize) -> bool {
    n > 0 && n < len
}

/// A listening socket.
pub struct TcpListener {
    io: std::net::TcpListener,
    reg: Registration,
}

impl TcpListener {
    /// Takes over a bound, listening socket.
    ///
    /// # Errors
    /// Outside `block_on`, or when it cannot be made non-blocking.
    pub fn new(io: std::net::TcpListener) -> io::Result<TcpListener> {
        io.set_nonblocking(true)?;
        let reg = Registration::new(&io)?;
        Ok(TcpListener { io, reg })
    }

    /// Accepts the next connection.
    ///
    /// # Errors
    /// As `accept(2)` (out of descriptors and the like).
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) =
            poll_fn(|cx| poll_io(&self.reg.source.read, cx, || self.io.accept(), |_| false))
                .await?;
        Ok((TcpStream::new(stream)?, peer))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.reg.reactor.deregister(&self.reg.source, &self.io);
    }
}

/// A connected TCP stream.
pub struct TcpStream {
    io: std::net::TcpStream,
    reg: Registration,
}

impl TcpStream {
    /// Takes over a connected socket.
    ///
    /// # Errors
    /// Outside `block_on`, or when it cannot be made non-blocking.
    pub fn new(io: std::net::TcpStream) -> io::Result<TcpStream> {
        io.set_nonblocking(true)?;
        let reg = Registration::new(&io)?;
        Ok(TcpStream { io, reg })
    }

    /// Connects to `addr` (without a timeout: callers bound it).
    ///
    /// # Errors
    /// The connect error (refused, unreachable, ...).
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let family = if addr.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let fd = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        let io = std::net::TcpStream::from(fd);
        let reg = Registration::new(&io)?;
        let stream = TcpStream { io, reg };
        // Writable (or failed) once the handshake is over.
        let write = &stream.reg.source.write;
        write.exhaust();
        poll_fn(|cx| {
            if write.is_exhausted() {
                write.park(cx);
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        if let Some(e) = stream.io.take_error()? {
            return Err(e);
        }
        stream.io.peer_addr()?; // not connected after all: says why
        Ok(stream)
    }

    pub fn get_ref(&self) -> &std::net::TcpStream {
        &self.io
    }

    /// True when a read drained the socket and no readiness event came
    /// since: nothing arrived, not even a close. Known without a system
    /// call; false says nothing either way.
    pub fn is_drained(&self) -> bool {
        self.reg.source.read.is_exhausted()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.reg.reactor.deregister(&self.reg.source, &self.io);
    }
}

impl AsyncRead for &TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let me = *self;
        let len = buf.len();
        poll_io(
            &me.reg.source.read,
            cx,
            || (&me.io).read(buf),
            |&n| short(n, len),
        )
    }
}

impl AsyncWrite for &TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = *self;
        let len = buf.len();
        poll_io(
            &me.reg.source.write,
            cx,
            || (&me.io).write(buf),
            |&n| short(n, len),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(Shutdown::Write))
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self).poll_close(cx)
    }
}

/// A listening socket on `addr` with `SO_REUSEPORT`, so that several
/// threads can each have their own accept queue on one address.
///
/// # Errors
/// When the socket cannot be made, bound or put to listen.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::STREAM, None)?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::block_on;
    use smol::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn echo_over_loopback_with_a_large_write_and_eof() {
        block_on(async {
            let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = bound.local_addr().unwrap();
            let listener = TcpListener::new(bound).unwrap();
            let executor = smol::LocalExecutor::new();
            let server = executor.spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let mut all = Vec::new();
                (&stream).read_to_end(&mut all).await.unwrap();
                (&stream).write_all(&all).await.unwrap();
                all.len()
            });
            let client = async {
                let stream = TcpStream::connect(addr).await.unwrap();
                // Larger than the socket buffers: writes must wait.
                let sent: Vec<u8> = (0..8_000_000u32).map(|i| i as u8).collect();
                (&stream).write_all(&sent).await.unwrap();
                (&stream).close().await.unwrap();
                let mut back = Vec::new();
                (&stream).read_to_end(&mut back).await.unwrap();
                assert!(back == sent, "echo differs");
            };
            executor.run(client).await;
            assert_eq!(executor.run(server).await, 8_000_000);
        })
        .unwrap();
    }

    #[test]
    fn connect_to_a_closed_port_fails() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let err = block_on(TcpStream::connect(addr))
            .unwrap()
            .err()
            .expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn sockets_need_block_on() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(TcpListener::new(free).is_err());
    }
}
