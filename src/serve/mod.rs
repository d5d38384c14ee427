//! Serving: listening sockets, worker threads and the connections they
//! accept, and the main thread's signals once serving (`signals.rs`).
//!
//! Each worker thread owns a single-threaded executor, its own listening
//! socket per listener (`SO_REUSEPORT`, so the kernel spreads connections
//! across workers without a shared accept queue), and a [`Worker`] with its
//! plugin instances and connection pool. Nothing on the request path is
//! shared between threads except the read-only gateway. This module knows
//! sockets, threads and TLS handshakes, not routes or plugins.
//!
//! On an HTTPS listener (`apisix.ssl.listen`) a connection is first a TLS
//! handshake with the gateway's acceptor (the `ssls` certificates current
//! when it starts), bounded by `client_header_timeout`; a handshake that
//! fails costs that connection only and is logged (rate-limited, see
//! `tls/failures.rs`). After it, the connection is served exactly as a
//! plain one, knowing what the handshake settled.

pub mod signals;

use crate::live::Live;
use crate::net::{self, tcp, Timer};
use crate::proxy;
use crate::tls::{self, HandshakeError, TlsInfo};
use crate::worker::Worker;
use smol::future::FutureExt;
use smol::LocalExecutor;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Client connections open right now, across all workers (for draining).
pub static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Counts one open connection for as long as it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> OpenConnection {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::AcqRel);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sent (best effort, without waiting) to a connection over the cap.
const OVERLOADED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Pending connections the kernel queues per listening socket.
const BACKLOG: i32 = 1024;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `apisix.node_listen`.
    Http,
    /// `apisix.ssl.listen`: TLS first, with the `ssls` certificates.
    Https,
}

/// A listening address and what it speaks.
pub type Endpoint = (SocketAddr, Scheme);

/// One worker's listening socket.
pub struct Listener {
    socket: TcpListener,
    scheme: Scheme,
}

/// Opens one listening socket per worker for every address in `listen`.
/// Port 0 is resolved once, so all workers share the same real port.
/// Returns `sockets[worker][listener]` and the bound addresses.
///
/// # Errors
/// The address that could not be bound, and why.
pub fn bind_all(
    listen: &[Endpoint],
    workers: usize,
) -> io::Result<(Vec<Vec<Listener>>, Vec<Endpoint>)> {
    let mut per_worker: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(listen.len());
    for &(addr, scheme) in listen {
        let first = tcp::bind_reuseport(addr, BACKLOG)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let real = first.local_addr()?;
        per_worker[0].push(Listener {
            socket: first,
            scheme,
        });
        for sockets in per_worker.iter_mut().skip(1) {
            let next = tcp::bind_reuseport(real, BACKLOG)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {real}: {e}")))?;
            sockets.push(Listener {
                socket: next,
                scheme,
            });
        }
        bound.push((real, scheme));
    }
    Ok((per_worker, bound))
}

/// Starts one thread per entry of `sockets`, each serving what `live`
/// holds. Closing the sender of `stop` makes every worker stop accepting
/// and close idle connections (the process then drains).
pub fn spawn_workers(
    live: &Arc<Live>,
    sockets: Vec<Vec<Listener>>,
    stop: &smol::channel::Receiver<()>,
) -> io::Result<()> {
    for (i, listeners) in sockets.into_iter().enumerate() {
        let live = Arc::clone(live);
        let stop = stop.clone();
        let reactor = net::prepare()?;
        // Workers run plugins: the plugin stack (`src/wasm/stack.rs`).
        crate::wasm::spawn_plugin_thread(format!("worker-{i}"), move || {
            run_worker(i, reactor, live, listeners, stop)
        })?;
    }
    Ok(())
}

fn run_worker(
    index: usize,
    reactor: net::Prepared,
    live: Arc<Live>,
    listeners: Vec<Listener>,
    stop: smol::channel::Receiver<()>,
) {
    let executor = Rc::new(LocalExecutor::new());
    let worker = Worker::new(live, stop, Rc::clone(&executor), index);
    let sockets = Rc::new(proxy::Sockets::default());
    let sweeper = Rc::clone(&sockets);
    executor
        .spawn(async move { sweeper.sweep_idle().await })
        .detach();
    let main = async {
        for Listener { socket, scheme } in listeners {
            match net::TcpListener::new(socket) {
                Ok(listener) => executor
                    .spawn(accept_loop(
                        listener,
                        scheme,
                        Rc::clone(&worker),
                        Rc::clone(&sockets),
                        Rc::clone(&executor),
                    ))
                    .detach(),
                Err(e) => log::error!("cannot register a listener: {e}"),
            }
        }
        // Buffered access log lines go out at least every 200 ms.
        loop {
            Timer::after(Duration::from_millis(200)).await;
            worker.flush_access_log();
        }
    };
    reactor.block_on(executor.run(main));
}

async fn accept_loop(
    listener: net::TcpListener,
    scheme: Scheme,
    worker: Rc<Worker>,
    sockets: Rc<proxy::Sockets>,
    executor: Rc<LocalExecutor<'static>>,
) {
    loop {
        let accepted = smol::future::or(async { Some(listener.accept().await) }, async {
            worker.stopped().await;
            None
        });
        match accepted.await {
            None => return, // draining: the listening socket closes here
            Some(Ok((stream, peer))) => {
                let _ = stream.get_ref().set_nodelay(true);
                let limit = worker.gateway().config.main.limits.max_connections;
                if OPEN_CONNECTIONS.load(Ordering::Acquire) >= limit {
                    log::warn!(
                        "{peer}: refused: {limit} connections already open (max_connections)"
                    );
                    let _ = stream.get_ref().write(OVERLOADED);
                    continue;
                }
                let open = OpenConnection::new();
                let worker = Rc::clone(&worker);
                let sockets = Rc::clone(&sockets);
                executor
                    .spawn(async move {
                        // A bug must cost one connection, never the worker.
                        let served = std::panic::AssertUnwindSafe(serve_client(
                            &worker, &sockets, stream, peer, scheme,
                        ));
                        if served.catch_unwind().await.is_err() {
                            log::error!("{peer}: connection aborted by an internal error");
                        }
                        drop(open);
                    })
                    .detach();
            }
            Some(Err(e)) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning, and keep serving what is open.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one accepted connection: the TLS handshake first on an HTTPS
/// listener, then the requests.
async fn serve_client(
    worker: &Worker,
    sockets: &proxy::Sockets,
    tcp: net::TcpStream,
    peer: SocketAddr,
    scheme: Scheme,
) {
    let local = tcp.get_ref().local_addr().ok();
    let (stream, tls) = match scheme {
        Scheme::Http => (tls::Stream::from(tcp), None),
        Scheme::Https => match handshake(worker, tcp).await {
            Ok((stream, info)) => (stream, Some(Arc::new(info))),
            Err(e) => return tls::log_handshake_failure(peer, &e),
        },
    };
    let connection = proxy::Connection {
        stream,
        peer,
        local,
        tls,
        pinned_route: None,
    };
    proxy::serve_connection(worker, sockets, connection).await;
}

/// The TLS handshake of a client of an HTTPS listener, with the
/// certificates of the gateway being served, within
/// `client_header_timeout` (nginx bounds its handshake by
/// `client_header_timeout` too).
///
/// # Errors
/// Why it failed, for the log.
async fn handshake(
    worker: &Worker,
    tcp: net::TcpStream,
) -> Result<(tls::Stream, TlsInfo), HandshakeError> {
    let gateway = worker.gateway();
    let timeout = gateway.config.main.limits.client_header_timeout;
    smol::future::or(gateway.acceptor.accept(tcp), async {
        Timer::after(timeout).await;
        let e = io::Error::new(io::ErrorKind::TimedOut, "timed out");
        Err(HandshakeError::Failed(e))
    })
    .await
}
