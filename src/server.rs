//! Listeners and worker threads.
//!
//! Each worker thread owns a single-threaded executor, its own listening
//! socket per listener (`SO_REUSEPORT`, so the kernel spreads connections
//! across workers without a shared accept queue), and a [`Worker`] with its
//! plugin instances and connection pool. Nothing on the request path is
//! shared between threads except the read-only [`Gateway`]. This module
//! knows sockets and threads, not routes or plugins.

use crate::gateway::Gateway;
use crate::proxy;
use crate::worker::Worker;
use rustix::net::{sockopt, AddressFamily, SocketType};
use smol::{Async, LocalExecutor, Timer};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

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

/// Starts one thread per entry of `sockets`, each serving `gateway`.
pub fn spawn_workers(
    gateway: Arc<Gateway>,
    sockets: Vec<Vec<TcpListener>>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (i, listeners) in sockets.into_iter().enumerate() {
        let gateway = Arc::clone(&gateway);
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || run_worker(gateway, listeners))?;
        handles.push(handle);
    }
    Ok(handles)
}

fn run_worker(gateway: Arc<Gateway>, listeners: Vec<TcpListener>) {
    let executor = Rc::new(LocalExecutor::new());
    let worker = Rc::new(Worker::new(gateway));
    let main = async {
        for listener in listeners {
            match Async::new(listener) {
                Ok(listener) => executor
                    .spawn(accept_loop(listener, Rc::clone(&worker), Rc::clone(&executor)))
                    .detach(),
                Err(e) => log::error!("cannot register a listener: {e}"),
            }
        }
        std::future::pending::<()>().await;
    };
    smol::block_on(executor.run(main));
}

async fn accept_loop(
    listener: Async<TcpListener>,
    worker: Rc<Worker>,
    executor: Rc<LocalExecutor<'static>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.get_ref().set_nodelay(true);
                let worker = Rc::clone(&worker);
                executor
                    .spawn(async move { proxy::serve_connection(&worker, stream, peer).await })
                    .detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning, and keep serving what is open.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}
