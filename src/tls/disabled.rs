//! The TLS API of a build without the `tls` feature: the same names, every
//! constructor refuses with [`DISABLED`](super::DISABLED), and [`Stream`]
//! is plain TCP. Keeps `config/`, `etcd/` and the proxy free of `cfg`s.

use super::{Duplex, SniTable, TlsInfo, Versions, DISABLED};
use crate::net::tcp::TcpStream;
use smol::io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Never made in this build.
#[derive(Debug, Clone, PartialEq)]
pub struct CertKey(());

/// Never made in this build.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCa(());

/// Only [`PairError::Cert`] with [`DISABLED`] in this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairError {
    Cert(String),
    Key(String),
    Mismatch,
}

impl std::fmt::Display for PairError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairError::Cert(m) | PairError::Key(m) => f.write_str(m),
            PairError::Mismatch => f.write_str("does not match cert"),
        }
    }
}

/// # Errors
/// Always: TLS is not built in.
pub fn load_pair(_: &str, _: &str) -> Result<CertKey, PairError> {
    Err(PairError::Cert(DISABLED.into()))
}

/// # Errors
/// Always: TLS is not built in.
pub fn load_client_ca(_: &str, _: u32) -> Result<ClientCa, String> {
    Err(DISABLED.into())
}

/// The system store, in name only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roots(());

impl Roots {
    /// # Errors
    /// Always: TLS is not built in.
    pub fn from_pem(_: &str) -> Result<Roots, String> {
        Err(DISABLED.into())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientSettings {
    pub verify: bool,
    pub roots: Roots,
    pub client_cert: Option<CertKey>,
}

/// Never made in this build.
#[derive(Debug, Clone)]
pub struct Connector(());

impl Connector {
    /// # Errors
    /// Always: TLS is not built in.
    pub fn new(_: &ClientSettings) -> Result<Connector, String> {
        Err(DISABLED.into())
    }

    pub fn id(&self) -> usize {
        0
    }

    /// # Errors
    /// Never called: no `Connector` exists.
    pub async fn connect(&self, _: TcpStream, _: &str) -> io::Result<Stream> {
        Err(io::Error::other(DISABLED))
    }
}

/// Never made in this build.
#[derive(Debug, Clone)]
pub struct ServerEntry(());

impl ServerEntry {
    /// # Errors
    /// Always: TLS is not built in.
    pub fn new(_: &[CertKey], _: Option<&ClientCa>, _: Versions) -> Result<Self, String> {
        Err(DISABLED.into())
    }
}

#[derive(Debug)]
pub enum HandshakeError {
    UnknownSni { sni: Option<String>, log: bool },
    Failed(io::Error),
}

/// Never made in this build (there are no entries to make it from).
pub struct Acceptor(());

impl Acceptor {
    pub fn new(_: SniTable, _: Vec<ServerEntry>) -> Acceptor {
        Acceptor(())
    }

    /// # Errors
    /// Always: TLS is not built in.
    pub async fn accept(&self, _: TcpStream) -> Result<(Stream, TlsInfo), HandshakeError> {
        Err(HandshakeError::Failed(io::Error::other(DISABLED)))
    }
}

/// Plain TCP, or a scripted stream (`tinygate test`).
pub enum Stream {
    Plain(TcpStream),
    Other(Box<dyn Duplex>),
}

impl Stream {
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
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
            Stream::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Other(s) => Pin::new(s).poll_close(cx),
        }
    }
}
