//! Connections to upstream nodes: connect with a timeout, and keep idle
//! keep-alive connections per node for reuse.
//!
//! One `Pool` belongs to one worker thread (no lock). A pooled connection
//! is only ever one whose previous response was read completely, and it is
//! checked for a close by the peer before it is handed out again. This
//! module knows sockets and addresses, not routes, plugins or HTTP.

use crate::http::ReadBuf;
use crate::net::{with_timeout, TcpStream};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Idle connections kept per node (APISIX's keepalive_pool.size is 320
/// per worker process; we keep fewer because each worker is a thread).
const MAX_IDLE_PER_NODE: usize = 64;

/// How long an idle connection may wait in the pool (APISIX's default
/// keepalive_pool.idle_timeout).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An open connection to an upstream node with its read buffer: a TCP
/// stream when serving, another byte stream under `tinygate test`.
pub struct Conn<S = TcpStream> {
    pub stream: S,
    pub buf: ReadBuf,
    /// True when it came from the pool (it may have been closed by the
    /// peer in the meantime, so a failure before any response byte is
    /// worth one retry on a fresh connection).
    pub reused: bool,
}

/// Idle keep-alive connections of one worker, by node address.
#[derive(Default)]
pub struct Pool {
    idle: HashMap<SocketAddr, Vec<(Conn, Instant)>>,
}

impl Pool {
    /// A live idle connection to `addr`, if one is pooled.
    pub fn take(&mut self, addr: SocketAddr) -> Option<Conn> {
        let list = self.idle.get_mut(&addr)?;
        while let Some((mut conn, since)) = list.pop() {
            if since.elapsed() < IDLE_TIMEOUT && is_idle_and_open(&conn.stream) {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly.
    pub fn put(&mut self, addr: SocketAddr, conn: Conn) {
        if conn.buf.has_data() {
            return; // unexpected bytes after a complete response
        }
        let list = self.idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_NODE {
            list.push((conn, Instant::now()));
        }
    }
}

/// True when nothing is waiting to be read: no early data and no close.
/// Usually the reactor knows; otherwise a peek asks the kernel.
fn is_idle_and_open(stream: &TcpStream) -> bool {
    if stream.is_drained() {
        return true;
    }
    let mut probe = [0u8; 1];
    match stream.get_ref().peek(&mut probe) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

/// Opens a new connection to `addr` within `timeout`.
///
/// # Errors
/// `TimedOut` when the timeout passes, otherwise the connect error.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
    let stream = with_timeout(timeout, TcpStream::connect(addr)).await?;
    stream.get_ref().set_nodelay(true)?;
    Ok(Conn {
        stream,
        buf: ReadBuf::new(),
        reused: false,
    })
}
