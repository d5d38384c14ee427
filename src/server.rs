//! Listeners and worker threads.
//!
//! Each worker thread owns a single-threaded executor, its own listening
//! socket per listener (`SO_REUSEPORT`, so the kernel spreads connections
//! across workers without a shared accept queue), and a [`Worker`] with its
//! plugin instances and connection pool. Nothing on the request path is
//! shared between threads except the read-only gateway. This module knows
//! sockets and threads, not routes or plugins.

use crate::live::Live;
use crate::proxy;
use crate::reactor::{self, net, Timer};
use crate::worker::Worker;
use rustix::net::{sockopt, AddressFamily, SocketType};
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

/// Stack for worker threads: wasmi runs plugin calls on the caller's
/// stack and needs more than the 2 MiB default for real plugins. Only the
/// pages actually touched count towards memory use.
const WORKER_STACK: usize = 16 << 20;

/// Pending connections the kernel queues per listening socket.
const BACKLOG: i32 = 1024;

/// Opens one listening socket per worker for every address in `listen`.
/// Port 0 is resolved once, so all workers share the same real port.
/// Returns `sockets[worker][listener]` and the bound addresses.
///
/// # Errors
/// The address that could not be bound, and why.
pub fn bind_all(
    listen: &[SocketAddr],
    workers: usize,
) -> io::Result<(Vec<Vec<TcpListener>>, Vec<SocketAddr>)> {
    let mut per_worker: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(listen.len());
    for &addr in listen {
        let first = bind_reuseport(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let real = first.local_addr()?;
        per_worker[0].push(first);
        for sockets in per_worker.iter_mut().skip(1) {
            let next = bind_reuseport(real)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {real}: {e}")))?;
            sockets.push(next);
        }
        bound.push(real);
    }
    Ok((per_worker, bound))
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::STREAM, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(TcpListener::from(fd))
}

/// Starts one thread per entry of `sockets`, each serving what `live`
/// holds. Closing the sender of `stop` makes every worker stop accepting
/// and close idle connections (the process then drains).
pub fn spawn_workers(
    live: &Arc<Live>,
    sockets: Vec<Vec<TcpListener>>,
    stop: &smol::channel::Receiver<()>,
) -> io::Result<()> {
    for (i, listeners) in sockets.into_iter().enumerate() {
        let live = Arc::clone(live);
        let stop = stop.clone();
        let reactor = reactor::prepare()?;
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .stack_size(WORKER_STACK)
            .spawn(move || run_worker(i, reactor, live, listeners, stop))?;
    }
    Ok(())
}

fn run_worker(
    index: usize,
    reactor: reactor::Prepared,
    live: Arc<Live>,
    listeners: Vec<TcpListener>,
    stop: smol::channel::Receiver<()>,
) {
    let executor = Rc::new(LocalExecutor::new());
    let worker = Worker::new(live, stop, Rc::clone(&executor), index);
    let main = async {
        for listener in listeners {
            match net::TcpListener::new(listener) {
                Ok(listener) => executor
                    .spawn(accept_loop(
                        listener,
                        Rc::clone(&worker),
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
    worker: Rc<Worker>,
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
                executor
                    .spawn(async move {
                        // A bug must cost one connection, never the worker.
                        let served = std::panic::AssertUnwindSafe(proxy::serve_connection(
                            &worker, stream, peer,
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

/// A small server beside the proxy (the demo upstream, the status
/// listener): what it answers to one request.
pub struct SideReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Binds `addr` and answers every request with `answer`, on a thread of
/// its own (`name`), keeping connections alive; request bodies are read
/// and dropped.
///
/// # Errors
/// When `addr` cannot be bound.
pub fn spawn_side_server(
    name: &'static str,
    addr: SocketAddr,
    answer: fn(&crate::http::RequestHead) -> SideReply,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("{name} on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let reactor = reactor::prepare()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let executor = Rc::new(LocalExecutor::new());
            reactor.block_on(executor.run(async {
                let Ok(listener) = net::TcpListener::new(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    executor.spawn(serve_side(stream, answer)).detach();
                }
            }));
        })?;
    Ok(bound)
}

async fn serve_side(stream: net::TcpStream, answer: fn(&crate::http::RequestHead) -> SideReply) {
    use crate::http::{self, BodyReader, Head, ReadBuf};
    use smol::io::AsyncWriteExt;
    let mut buf = ReadBuf::new();
    while let Ok(Head::Complete(n)) = buf.read_head(&mut &stream, 64 * 1024).await {
        let parsed = http::parse::parse_request_head(&buf.data()[..n]);
        buf.consume(n);
        let Ok(req) = parsed else { return };
        let mut body = BodyReader::new(req.framing);
        while let Ok(n) = body.next(&mut buf, &mut &stream).await {
            if n == 0 {
                break;
            }
            buf.consume(n);
        }
        let reply = answer(&req);
        let mut out = Vec::with_capacity(256 + reply.body.len());
        http::write_status_line(&mut out, reply.status);
        http::write_header(&mut out, b"content-type", reply.content_type.as_bytes());
        out.extend_from_slice(b"content-length: ");
        http::push_decimal(&mut out, reply.body.len() as u64);
        out.extend_from_slice(b"\r\n\r\n");
        if req.method != "HEAD" {
            out.extend_from_slice(reply.body.as_bytes());
        }
        if (&stream).write_all(&out).await.is_err() {
            return;
        }
    }
}
