//! Listening sockets and worker threads: bind the listeners, start one
//! thread per worker with its own executor and reactor, accept there, and
//! hand each connection to the thread's [`Service`].
//!
//! Each worker thread has its own listening socket per listener
//! (`SO_REUSEPORT`, so the kernel spreads connections across workers
//! without a shared accept queue). What serves the connections is made on
//! the thread by the caller (`worker.rs` when serving): this module knows
//! sockets, threads, a connection cap and what each listener speaks
//! ([`Scheme`]), not routes, plugins, certificates or configuration.

use crate::net::{self, tcp, Timer};
use smol::future::FutureExt;
use smol::LocalExecutor;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What a worker thread serves its connections with: made on the thread,
/// used only there.
pub trait Service: 'static {
    /// Serves one connection accepted on a listener speaking `scheme`
    /// until it ends (the TLS handshake first on an HTTPS listener).
    async fn serve(&self, stream: net::TcpStream, peer: SocketAddr, scheme: Scheme);
    /// Most client connections open at once, across all workers; more are
    /// refused with a 503.
    fn max_connections(&self) -> usize;
    /// Resolves when the process starts draining: stop accepting.
    async fn stopped(&self);
    /// Runs every [`HOUSEKEEPING`] on the thread (buffered access log
    /// lines go out).
    fn housekeeping(&self);
}

/// How often [`Service::housekeeping`] runs.
pub const HOUSEKEEPING: Duration = Duration::from_millis(200);

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

/// Starts one thread per entry of `sockets`; on each, `make(index,
/// executor)` makes the [`Service`] its connections are served with.
/// Returns once every worker has made it (and so started its plugins'
/// root contexts, `plugins/eager.rs`): a client that connects after the
/// `listening on` line finds every worker's plugins configured, as
/// Envoy's workers are before its listeners take connections.
///
/// # Errors
/// When a thread or its reactor cannot be made.
pub fn spawn_workers<S, F>(sockets: Vec<Vec<Listener>>, make: F) -> io::Result<()>
where
    S: Service,
    F: Fn(usize, Rc<LocalExecutor<'static>>) -> Rc<S> + Clone + Send + 'static,
{
    let (made_tx, made) = std::sync::mpsc::channel::<()>();
    let mut workers = 0;
    for (i, listeners) in sockets.into_iter().enumerate() {
        let make = make.clone();
        let made_tx = made_tx.clone();
        let reactor = net::prepare()?;
        // Workers run plugins: the plugin stack (`src/wasm/stack.rs`).
        crate::wasm::spawn_plugin_thread(format!("worker-{i}"), move || {
            let executor = Rc::new(LocalExecutor::new());
            let service = make(i, Rc::clone(&executor));
            let _ = made_tx.send(());
            drop(made_tx);
            run_worker(reactor, &executor, &service, listeners);
        })?;
        workers += 1;
    }
    drop(made_tx);
    // A worker that panicked while making its service drops its sender:
    // the loop ends early instead of waiting for it.
    for _ in 0..workers {
        if made.recv().is_err() {
            break;
        }
    }
    Ok(())
}

fn run_worker<S: Service>(
    reactor: net::Prepared,
    executor: &Rc<LocalExecutor<'static>>,
    service: &Rc<S>,
    listeners: Vec<Listener>,
) {
    let main = async {
        for Listener { socket, scheme } in listeners {
            match net::TcpListener::new(socket) {
                Ok(listener) => executor
                    .spawn(accept_loop(
                        listener,
                        scheme,
                        Rc::clone(service),
                        Rc::clone(executor),
                    ))
                    .detach(),
                Err(e) => log::error!("cannot register a listener: {e}"),
            }
        }
        loop {
            Timer::after(HOUSEKEEPING).await;
            service.housekeeping();
        }
    };
    reactor.block_on(executor.run(main));
}

async fn accept_loop<S: Service>(
    listener: net::TcpListener,
    scheme: Scheme,
    service: Rc<S>,
    executor: Rc<LocalExecutor<'static>>,
) {
    loop {
        let accepted = smol::future::or(async { Some(listener.accept().await) }, async {
            service.stopped().await;
            None
        });
        match accepted.await {
            None => return, // draining: the listening socket closes here
            Some(Ok((stream, peer))) => {
                let _ = stream.get_ref().set_nodelay(true);
                let limit = service.max_connections();
                if OPEN_CONNECTIONS.load(Ordering::Acquire) >= limit {
                    log::warn!(
                        "{peer}: refused: {limit} connections already open (max_connections)"
                    );
                    let _ = stream.get_ref().write(OVERLOADED);
                    continue;
                }
                let open = OpenConnection::new();
                let service = Rc::clone(&service);
                executor
                    .spawn(async move {
                        // A bug must cost one connection, never the worker.
                        let served =
                            std::panic::AssertUnwindSafe(service.serve(stream, peer, scheme));
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
