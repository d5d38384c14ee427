//! The status listener: Prometheus metrics (`metrics.rs`) at
//! `/apisix/prometheus/metrics`, liveness and readiness, and node health
//! (`/v1/healthcheck`, APISIX's Control API), on an address of its own
//! (`tinygate.status_listen`, off by default).

use super::metrics::prometheus_text;
use crate::http::side::{spawn_side_server, SideReply};
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
            (200, "text/plain; version=0.0.4", prometheus_text())
        }
        ("GET" | "HEAD", "/status" | "/status/ready") => {
            (200, "application/json", b"{\"status\":\"ok\"}\n".to_vec())
        }
        ("GET" | "HEAD", _) if path.starts_with("/v1/healthcheck") => {
            match crate::health::control_api(path) {
                Some((status, body)) => (status, "application/json", body.into_bytes()),
                None => (404, "text/plain", b"not found\n".to_vec()),
            }
        }
        _ => (404, "text/plain", b"not found\n".to_vec()),
    };
    SideReply {
        status,
        content_type,
        body,
    }
}
