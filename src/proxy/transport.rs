//! The network behind the request path: where connections to nodes come
//! from and go back to, and who hears how a request ended early.
//!
//! Serving uses [`Sockets`]: the worker's keep-alive pool and new TCP
//! connections. `tinygate test` implements the same trait over a scripted
//! upstream (`runner/exec.rs`), so a test case runs every decision of the
//! request path and differs only here. The client side is the other half
//! of the network: the [`tls::Stream`] given to
//! [`serve_connection`](super::serve_connection), plain or TLS when
//! serving, a script (`Stream::Other`) under test.
//!
//! One stream type for both sides and the request path holding a
//! `&dyn Transport` mean the request path is compiled once, for serving
//! and `tinygate test` alike (a second copy was 90 KB of the binary). The
//! price per request is a virtual call to take an idle connection and one
//! to give it back; a new connection's future is boxed.

use super::answer::EarlyEnd;
use crate::tls::Stream;
use crate::upstream::{self, Conn, Dial, Pool};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

/// A connection being opened to a node (see [`Transport::connect`]).
pub(crate) type Connecting<'a> = Pin<Box<dyn Future<Output = io::Result<Conn<Stream>>> + 'a>>;

/// Where the request path gets connections to nodes.
pub(crate) trait Transport {
    /// An idle connection for `dial` kept from an earlier request, if any
    /// (it may have been closed by the node since: see `Conn::reused`).
    fn take_idle(&self, dial: &Dial<'_>) -> Option<Conn<Stream>>;

    /// A new connection for `dial` (with its TLS handshake for an HTTPS
    /// upstream), within `timeout`.
    ///
    /// # Errors
    /// `TimedOut` when the timeout passes, otherwise why the connection
    /// failed (refused, unreachable, a certificate that does not verify).
    fn connect<'a>(&'a self, dial: &'a Dial<'_>, timeout: Duration) -> Connecting<'a>;

    /// Takes back a connection whose response was read completely, for a
    /// later request with the same `dial`.
    fn release(&self, dial: &Dial<'_>, conn: Conn<Stream>);

    /// A request that plugins or the client ended before the node's answer
    /// was relayed (the answer is already logged and sent): serving has
    /// nothing more to do; the test runner records what the plugin did.
    fn ended_early(&self, _how: &EarlyEnd) {}
}

/// The network when serving: a worker thread's keep-alive pool, and new
/// TCP (and TLS) connections.
#[derive(Default)]
pub(crate) struct Sockets {
    pool: RefCell<Pool>,
}

impl Transport for Sockets {
    fn take_idle(&self, dial: &Dial<'_>) -> Option<Conn<Stream>> {
        self.pool.borrow_mut().take(dial)
    }

    fn connect<'a>(&'a self, dial: &'a Dial<'_>, timeout: Duration) -> Connecting<'a> {
        Box::pin(upstream::dial(dial, timeout))
    }

    fn release(&self, dial: &Dial<'_>, conn: Conn<Stream>) {
        self.pool.borrow_mut().put(dial, conn);
    }
}

impl Sockets {
    /// Watches the idle connections for as long as the worker runs,
    /// closing each as soon as its node closes it or its idle time is
    /// over (see [`upstream::sweep`]).
    pub(crate) async fn sweep_idle(&self) {
        upstream::sweep(&self.pool).await;
    }
}
