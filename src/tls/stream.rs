//! One byte stream type for every connection tinygate makes or accepts:
//! plain TCP, or TLS over it (server side for HTTPS listeners, client side
//! for HTTPS upstreams and etcd), and for the scripted ones of
//! `tinygate test`. The HTTP code reads and writes it without
//! knowing which.
//!
//! futures-rustls does the record layer: it implements the futures-io
//! traits smol uses over any stream that does, so it runs on the reactor's
//! sockets as they are.

use super::Duplex;
use crate::net::tcp::TcpStream;
use smol::io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Plain TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    /// An accepted HTTPS client connection.
    Server(Box<futures_rustls::server::TlsStream<TcpStream>>),
    /// A connection to an HTTPS upstream or etcd.
    Client(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// A scripted stream (`tinygate test`): no socket underneath.
    Other(Box<dyn Duplex>),
}

impl Stream {
    /// The TCP socket underneath, if there is one.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Server(s) => Some(s.get_ref().0),
            Stream::Client(s) => Some(s.get_ref().0),
            Stream::Other(_) => None,
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s).poll_flush(cx),
            Stream::Client(s) => Pin::new(s).poll_flush(cx),
            Stream::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Server(s) => Pin::new(s).poll_close(cx),
            Stream::Client(s) => Pin::new(s).poll_close(cx),
            Stream::Other(s) => Pin::new(s).poll_close(cx),
        }
    }
}
