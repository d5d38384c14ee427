//! What one worker thread serves its connections with: the plugins'
//! per-thread state ([`Worker`]: instances, ticks, calls) and the
//! proxy's node connections ([`Sockets`]: the keep-alive pool). A thin
//! joint: each connection goes to the request path's one door,
//! `proxy::serve_connection`.
//!
//! On an HTTPS listener (`apisix.ssl.listen`) a connection is first a TLS
//! handshake with the gateway's acceptor (the `ssls` certificates current
//! when it starts), bounded by `client_header_timeout`; a handshake that
//! fails costs that connection only and is logged (rate-limited, see
//! `tls/failures.rs`). After it, the connection is served exactly as a
//! plain one, knowing what the handshake settled.

use super::server::{Scheme, Service};
use crate::live::Live;
use crate::net::{TcpStream, Timer};
use crate::plugins::Mode;
use crate::proxy::{self, Sockets};
use crate::tls::{self, HandshakeError, TlsInfo};
use crate::worker::Worker;
use smol::channel::Receiver;
use smol::LocalExecutor;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// One worker thread's state for serving.
pub struct WorkerThread {
    plugins: Rc<Worker>,
    sockets: Rc<Sockets>,
}

impl WorkerThread {
    /// What [`spawn_workers`](super::spawn_workers) makes each worker
    /// thread's service with: the configuration `live` holds, on engine
    /// replica `index`; draining once `stop` closes.
    pub fn maker(
        live: &Arc<Live>,
        stop: &Receiver<()>,
    ) -> impl Fn(usize, Rc<LocalExecutor<'static>>) -> Rc<WorkerThread> + Clone + Send + 'static
    {
        let (live, stop) = (Arc::clone(live), stop.clone());
        move |index, executor: Rc<LocalExecutor<'static>>| {
            let sockets = Rc::new(Sockets::default());
            // Idle node connections are closed as soon as their node closes
            // them or their idle time is over.
            let sweeper = Rc::clone(&sockets);
            executor
                .spawn(async move { sweeper.sweep_idle().await })
                .detach();
            Rc::new(WorkerThread {
                plugins: Worker::new(
                    Arc::clone(&live),
                    stop.clone(),
                    executor,
                    index,
                    Mode::Serving,
                ),
                sockets,
            })
        }
    }
}

impl Service for WorkerThread {
    async fn serve(&self, tcp: TcpStream, peer: SocketAddr, scheme: Scheme) {
        let local = tcp.get_ref().local_addr().ok();
        let (stream, tls) = match scheme {
            Scheme::Http => (tls::Stream::from(tcp), None),
            // Boxed: the handshake's state (a whole rustls connection)
            // would otherwise be part of every connection's task, plain
            // or idle, for as long as it lives.
            Scheme::Https => match Box::pin(self.handshake(tcp)).await {
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
        proxy::serve_connection(&self.plugins, &*self.sockets, connection).await;
    }

    fn max_connections(&self) -> usize {
        self.plugins.gateway().config.main.limits.max_connections
    }

    async fn stopped(&self) {
        self.plugins.stopped().await;
    }

    fn housekeeping(&self) {
        self.plugins.flush_access_log();
        if crate::ops::memory::settle() {
            log::debug!("a burst ended: freed memory given back to the system");
        }
    }
}

impl WorkerThread {
    /// The TLS handshake of a client of an HTTPS listener, with the
    /// certificates of the gateway being served, within
    /// `client_header_timeout` (nginx bounds its handshake by
    /// `client_header_timeout` too).
    ///
    /// # Errors
    /// Why it failed, for the log.
    async fn handshake(&self, tcp: TcpStream) -> Result<(tls::Stream, TlsInfo), HandshakeError> {
        let gateway = self.plugins.gateway();
        let timeout = gateway.config.main.limits.client_header_timeout;
        smol::future::or(gateway.acceptor.accept(tcp), async {
            Timer::after(timeout).await;
            let e = io::Error::new(io::ErrorKind::TimedOut, "timed out");
            Err(HandshakeError::Failed(e))
        })
        .await
    }
}
