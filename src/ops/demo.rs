//! The built-in demo upstream: a tiny HTTP server that answers every
//! request with 200 and a text echo of what it received, so the shipped
//! configuration works on a fresh machine with nothing else running.
//! Turned on by `tinygate.demo_upstream: ip:port`; not for production.

use crate::http::side::{spawn_side_server, SideBody, SideReply};
use crate::http::RequestHead;
use std::io;
use std::net::SocketAddr;

/// Binds `addr` and serves the demo upstream on its own thread.
///
/// # Errors
/// When `addr` cannot be bound.
pub fn start(addr: SocketAddr) -> io::Result<SocketAddr> {
    spawn_side_server("demo upstream", addr, answer)
}

/// 200 with the request line and headers echoed back.
fn answer(req: &RequestHead) -> SideReply {
    let mut text = format!(
        "hello from the tinygate demo upstream\n\n{} {}\n",
        req.method, req.target
    );
    for (k, v) in &req.headers {
        text.push_str(&format!(
            "{}: {}\n",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        ));
    }
    SideReply {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: SideBody::Whole(text.into_bytes()),
    }
}
