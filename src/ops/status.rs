//! The status listener: Prometheus metrics (`metrics.rs`) at
//! `/apisix/prometheus/metrics`, liveness and readiness, and node health
//! (`/v1/healthcheck`, APISIX's Control API), on an address of its own
//! (`tinygate.status_listen`, off by default).

use super::metrics::exposition;
use crate::http::side::{spawn_side_server, SideBody, SideReply};
use crate::http::RequestHead;
use std::io;
use std::net::SocketAddr;

/// Binds `addr` and serves the status endpoints on their own thread.
///
/// # Errors
/// When `addr` cannot be bound.
pub fn start(addr: SocketAddr) -> io::Result<SocketAddr> {
    spawn_side_server("status listener", addr, answer)
}

fn answer(req: &RequestHead) -> SideReply {
    let path = req.target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (req.method.as_str(), path) {
        ("GET" | "HEAD", "/apisix/prometheus/metrics" | "/metrics") => {
            let pieces = SideBody::Pieces(Box::new(exposition()));
            (200, "text/plain; version=0.0.4", pieces)
        }
        ("GET" | "HEAD", "/status" | "/status/ready") => {
            (200, "application/json", whole(b"{\"status\":\"ok\"}\n"))
        }
        ("GET" | "HEAD", _) if path.starts_with("/v1/healthcheck") => {
            match crate::health::control_api(path) {
                Some((status, body)) => (status, "application/json", whole(body.as_bytes())),
                None => (404, "text/plain", whole(b"not found\n")),
            }
        }
        _ => (404, "text/plain", whole(b"not found\n")),
    };
    SideReply {
        status,
        content_type,
        body,
    }
}

fn whole(body: &[u8]) -> SideBody {
    SideBody::Whole(body.to_vec())
}
