//! Connections to upstream nodes: connect with a timeout (and the TLS
//! handshake of an HTTPS upstream), and keep idle keep-alive connections
//! per node for reuse.
//!
//! One `Pool` belongs to one worker thread (no lock). A pooled connection
//! is only ever one whose previous response was read completely. While it
//! waits, the worker's reactor watches it ([`sweep`]): when the node closes
//! it (or sends anything, which no idle connection may) or its idle time
//! runs out, it is closed at once, so connections the nodes closed never
//! pile up in `CLOSE-WAIT` waiting for the next request to their address.
//! It is checked again when it is handed out. A TLS connection is pooled
//! under its node and its server name, so it is only reused for the name
//! it was verified for (and anything readable on its socket while idle, a
//! `close_notify` included, closes it). An HTTPS upstream's (or health
//! check's) client settings and the connector made from them are an
//! [`UpstreamTls`]. This module knows sockets, addresses and TLS clients,
//! not routes, plugins or HTTP.

use crate::http::ReadBuf;
use crate::net::{with_timeout, TcpStream, Timer};
use crate::tls::{CertKey, ClientSettings, Connector, Roots, Stream};
use smol::io::AsyncRead;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
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

/// Where a connection goes: a node's address, and for an HTTPS upstream
/// its TLS client and the name to send (SNI) and verify.
#[derive(Clone, Copy)]
pub struct Dial<'a> {
    pub addr: SocketAddr,
    pub tls: Option<Tls<'a>>,
}

/// The TLS side of a [`Dial`].
#[derive(Clone, Copy)]
pub struct Tls<'a> {
    pub connector: &'a Connector,
    /// A DNS name or an IP address (verified against the certificate's
    /// IP addresses, and not sent as SNI).
    pub server_name: &'a str,
}

impl Dial<'_> {
    /// A plain connection to `addr`.
    #[cfg(test)]
    pub fn plain(addr: SocketAddr) -> Dial<'static> {
        Dial { addr, tls: None }
    }

    /// The pool's key: the address, and for TLS the client configuration
    /// and the server name (0 for plain connections).
    fn key(&self) -> PoolKey {
        let Some(tls) = &self.tls else {
            return (self.addr, 0);
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tls.connector.id().hash(&mut h);
        tls.server_name.hash(&mut h);
        (self.addr, h.finish() | 1)
    }
}

/// How to speak TLS to an upstream's nodes (an HTTPS upstream's `tls`, or
/// an `https` health check's): the settings, and the client made from
/// them once the trusted CAs are known.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// `tls.verify` (default true): check the node's certificate against
    /// `apisix.ssl.ssl_trusted_certificate` (or the system store) for the
    /// name tinygate connects to.
    pub verify: bool,
    /// `tls.client_cert` + `tls.client_key`.
    pub client_cert: Option<CertKey>,
    /// The client configuration, shared by every connection to the nodes
    /// (with its session cache); made by [`UpstreamTls::prepare`].
    connector: OnceLock<Connector>,
}

impl PartialEq for UpstreamTls {
    /// The settings; the connector follows from them.
    fn eq(&self, other: &Self) -> bool {
        self.verify == other.verify && self.client_cert == other.client_cert
    }
}

impl UpstreamTls {
    /// Settings whose connector [`UpstreamTls::prepare`] makes later.
    pub fn new(verify: bool, client_cert: Option<CertKey>) -> UpstreamTls {
        UpstreamTls {
            verify,
            client_cert,
            connector: OnceLock::new(),
        }
    }

    /// Makes the connector, verifying against `roots`.
    ///
    /// # Errors
    /// Verification needs the system store and there is none (an image
    /// built FROM scratch has no CA certificates).
    pub fn prepare(&self, roots: &Roots) -> Result<(), String> {
        if self.connector.get().is_some() {
            return Ok(());
        }
        let connector = Connector::new(&ClientSettings {
            verify: self.verify,
            roots: roots.clone(),
            client_cert: self.client_cert.clone(),
        })?;
        let _ = self.connector.set(connector);
        Ok(())
    }

    /// The connector made by [`UpstreamTls::prepare`].
    pub fn connector(&self) -> Option<&Connector> {
        self.connector.get()
    }
}

/// A node's address, and a hash of the TLS client and server name (0 for
/// plain connections).
type PoolKey = (SocketAddr, u64);

/// An idle connection and what watches it.
struct Idle {
    conn: Conn<Stream>,
    since: Instant,
    /// Unique in this pool: what its waker reports.
    id: u64,
    /// Wakes the sweeper with `id` when the socket becomes readable.
    waker: Waker,
    /// False until the sweeper has polled it (registered `waker`).
    watched: bool,
}

/// Idle keep-alive connections of one worker, by [`Dial`].
#[derive(Default)]
pub struct Pool {
    idle: HashMap<PoolKey, Vec<Idle>>,
    next_id: u64,
    /// Ids of idle connections whose sockets became readable, and the
    /// sweeper to wake (shared with the wakers, which may fire anywhere).
    events: Arc<Events>,
    /// Some connection was pooled but is not watched yet.
    unwatched: bool,
}

#[derive(Default)]
struct Events {
    ready: Mutex<Vec<u64>>,
    sweeper: Mutex<Option<Waker>>,
}

/// The waker of one idle connection: records which one and wakes the
/// sweeper.
struct ConnWaker {
    id: u64,
    events: Arc<Events>,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.events.ready).push(self.id);
        self.events.wake_sweeper();
    }
}

impl Events {
    fn wake_sweeper(&self) {
        if let Some(w) = lock(&self.sweeper).as_ref() {
            w.wake_by_ref();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A live idle connection for `dial`, if one is pooled.
    pub fn take(&mut self, dial: &Dial<'_>) -> Option<Conn<Stream>> {
        let list = self.idle.get_mut(&dial.key())?;
        while let Some(Idle {
            mut conn, since, ..
        }) = list.pop()
        {
            if since.elapsed() < IDLE_TIMEOUT && conn.stream.tcp().is_some_and(is_idle_and_open) {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly; the
    /// sweeper starts watching it.
    pub fn put(&mut self, dial: &Dial<'_>, mut conn: Conn<Stream>) {
        if conn.buf.has_data() {
            return; // unexpected bytes after a complete response
        }
        // An idle connection holds no read buffer (it takes one again on
        // its next read).
        conn.buf.release();
        let id = self.next_id;
        self.next_id += 1;
        let list = self.idle.entry(dial.key()).or_default();
        if list.len() < MAX_IDLE_PER_NODE {
            let waker = Waker::from(Arc::new(ConnWaker {
                id,
                events: Arc::clone(&self.events),
            }));
            list.push(Idle {
                conn,
                since: Instant::now(),
                id,
                waker,
                watched: false,
            });
            self.unwatched = true;
            self.events.wake_sweeper();
        }
    }

    /// Idle connections.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// One round of the sweeper: registers new connections with the
    /// reactor, closes those whose sockets became readable (the node
    /// closed them, reset them, or sent unexpected bytes) and, when `now`
    /// is given, those idle past [`IDLE_TIMEOUT`]. Returns when the oldest
    /// remaining connection expires.
    fn sweep_once(&mut self, expired_by: Option<Instant>) -> Option<Instant> {
        let ready: Vec<u64> = std::mem::take(&mut *lock(&self.events.ready));
        let check_all = expired_by.is_some();
        if !(self.unwatched || !ready.is_empty() || check_all) {
            return self.oldest();
        }
        for list in self.idle.values_mut() {
            list.retain_mut(|idle| {
                if expired_by.is_some_and(|now| now >= idle.since + IDLE_TIMEOUT) {
                    return false;
                }
                if idle.watched && !ready.contains(&idle.id) {
                    return true;
                }
                idle.watched = true;
                (idle.conn.stream.tcp()).is_some_and(|tcp| still_idle(tcp, &idle.waker))
            });
        }
        self.idle.retain(|_, list| !list.is_empty());
        self.unwatched = false;
        self.oldest()
    }

    /// When the oldest idle connection expires.
    fn oldest(&self) -> Option<Instant> {
        self.idle
            .values()
            .filter_map(|list| list.first().map(|idle| idle.since + IDLE_TIMEOUT))
            .min()
    }
}

/// True while `stream` has nothing to read: no byte, no close, no error.
/// Registers `waker` with the reactor for the next event otherwise.
fn still_idle(stream: &TcpStream, waker: &Waker) -> bool {
    let mut cx = Context::from_waker(waker);
    let mut probe = [0u8; 1];
    let mut reader = stream;
    matches!(
        Pin::new(&mut reader).poll_read(&mut cx, &mut probe),
        Poll::Pending
    )
}

/// Watches `pool`'s idle connections for as long as it runs (a worker
/// spawns it once): closes each as soon as its node closes it or its idle
/// time is over, without waiting for a request to its address.
pub async fn sweep(pool: &RefCell<Pool>) {
    let events = Arc::clone(&pool.borrow().events);
    let mut timer: Option<(Instant, Timer)> = None;
    poll_fn(|cx| {
        *lock(&events.sweeper) = Some(cx.waker().clone());
        let mut expired_by = None;
        loop {
            let oldest = pool.borrow_mut().sweep_once(expired_by.take());
            let Some(at) = oldest else {
                timer = None;
                return Poll::Pending;
            };
            if timer.as_ref().is_none_or(|(armed, _)| *armed != at) {
                let wait = at.saturating_duration_since(Instant::now());
                timer = Some((at, Timer::after(wait)));
            }
            let fired = match &mut timer {
                Some((_, t)) => Pin::new(t).poll(cx).is_ready(),
                None => false,
            };
            if !fired {
                return Poll::Pending;
            }
            timer = None;
            expired_by = Some(Instant::now());
        }
    })
    .await
}

/// True when nothing is waiting to be read: no early data and no close
/// (for TLS, a `close_notify` is something to read too). Usually the
/// reactor knows; otherwise a peek asks the kernel.
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

/// Opens a new connection for `dial` within `timeout`, and makes its TLS
/// handshake within `timeout` again (nginx bounds the upstream handshake by
/// `proxy_connect_timeout` too).
///
/// # Errors
/// `TimedOut`, the connect error, or why the handshake failed (a
/// certificate that does not verify says why).
pub async fn dial(dial: &Dial<'_>, timeout: Duration) -> io::Result<Conn<Stream>> {
    let Conn { stream, buf, .. } = connect(dial.addr, timeout).await?;
    let stream = match &dial.tls {
        None => Stream::from(stream),
        Some(tls) => with_timeout(timeout, tls.connector.connect(stream, tls.server_name)).await?,
    };
    Ok(Conn {
        stream,
        buf,
        reused: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::AsyncWriteExt;
    use std::io::Read;

    /// A node closes two idle connections: the sweeper closes them on its
    /// side at once (no `CLOSE-WAIT` left), while a third stays pooled.
    #[test]
    fn idle_connections_the_node_closes_are_closed_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        crate::net::block_on(async {
            let pool = RefCell::new(Pool::default());
            let executor = smol::LocalExecutor::new();
            let _sweeper = executor.spawn(sweep(&pool));
            let mut accepted = Vec::new();
            for _ in 0..3 {
                let conn = dial(&Dial::plain(addr), Duration::from_secs(1))
                    .await
                    .unwrap();
                accepted.push(listener.accept().unwrap().0);
                pool.borrow_mut().put(&Dial::plain(addr), conn);
            }
            executor.run(Timer::after(Duration::from_millis(20))).await;
            assert_eq!(pool.borrow().len(), 3);
            // The node closes two; the third sends nothing.
            let kept = accepted.pop().unwrap();
            drop(accepted);
            let deadline = Instant::now() + Duration::from_secs(5);
            while pool.borrow().len() > 1 && Instant::now() < deadline {
                executor.run(Timer::after(Duration::from_millis(5))).await;
            }
            assert_eq!(pool.borrow().len(), 1, "closed connections left the pool");
            // Our side closed too: the node reads end of stream.
            let mut kept = kept;
            kept.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            assert!(
                kept.read(&mut [0u8; 1]).is_err(),
                "the open one is still open"
            );
            let mut conn = pool
                .borrow_mut()
                .take(&Dial::plain(addr))
                .expect("the open one");
            conn.stream.write_all(b"x").await.unwrap();
        })
        .unwrap();
    }

    #[test]
    fn the_sweeper_closes_what_a_node_sends_unasked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        crate::net::block_on(async {
            let pool = RefCell::new(Pool::default());
            let executor = smol::LocalExecutor::new();
            let _sweeper = executor.spawn(sweep(&pool));
            let conn = dial(&Dial::plain(addr), Duration::from_secs(1))
                .await
                .unwrap();
            let mut node = listener.accept().unwrap().0;
            pool.borrow_mut().put(&Dial::plain(addr), conn);
            executor.run(Timer::after(Duration::from_millis(20))).await;
            std::io::Write::write_all(&mut node, b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while pool.borrow().len() > 0 && Instant::now() < deadline {
                executor.run(Timer::after(Duration::from_millis(5))).await;
            }
            assert_eq!(pool.borrow().len(), 0);
            let mut end = [0u8; 1];
            node.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // Closed on our side: end of stream, or a reset since the
            // node's bytes were left unread.
            let closed = match node.read(&mut end) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            assert!(closed, "closed on our side");
        })
        .unwrap();
    }
}
