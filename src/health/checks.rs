//! What a health check is: an upstream's `checks` as the checker runs
//! them (APISIX's active and passive checks, with APISIX's defaults), the
//! types `config` parses `checks` into. It knows the settings, not the
//! YAML keys they come from (`config/checks.rs`) nor how they run
//! (`active.rs`, `mod.rs`).

use crate::upstream::UpstreamTls;
use std::time::Duration;

/// `checks` of an upstream. APISIX requires `active`; `passive` is
/// optional (its defaults still bound how failures seen while proxying
/// count, as in APISIX, where the checker uses them for retried failures).
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    pub active: ActiveCheck,
    pub passive: Counting,
    /// `passive` was written: response statuses count too, not only
    /// connection failures and timeouts.
    pub passive_statuses: bool,
}

/// How a check probes a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Connect, send a request, read its status line.
    Http,
    /// The same over TLS ([`ActiveCheck::tls`]).
    Https,
    /// Connect only.
    Tcp,
}

impl Probe {
    /// The name APISIX uses (`checks.active.type`).
    pub fn name(self) -> &'static str {
        match self {
            Probe::Http => "http",
            Probe::Https => "https",
            Probe::Tcp => "tcp",
        }
    }
}

/// `checks.active`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveCheck {
    /// `type`: `http` (default), `https` or `tcp`.
    pub probe: Probe,
    /// For `https`: `https_verify_certificate` (default true) against
    /// `apisix.ssl.ssl_trusted_certificate`, and the upstream's
    /// `tls.client_cert` when it has one (both set by `config`).
    pub tls: Option<UpstreamTls>,
    /// `timeout` (default 1 s): for each of connect, send and receive.
    pub timeout: Duration,
    /// `concurrency` (default 10): nodes of this upstream probed at once.
    pub concurrency: usize,
    /// `host`: the `Host` of probes (default: the node's host).
    pub host: Option<String>,
    /// `port`: probe this port instead of the node's.
    pub port: Option<u16>,
    /// `http_method` (default `GET`).
    pub http_method: String,
    /// `http_path` (default `/`).
    pub http_path: String,
    /// `http_req_body` (default empty; a body gets a `Content-Length`).
    pub http_req_body: String,
    /// `req_headers`: `"Name: value"` lines, split.
    pub req_headers: Vec<(String, String)>,
    /// `healthy.interval` (default 1 s): how often healthy nodes are probed.
    pub healthy_interval: Duration,
    /// `unhealthy.interval` (default 1 s): how often unhealthy ones are.
    pub unhealthy_interval: Duration,
    /// `healthy.*` and `unhealthy.*` thresholds and statuses.
    pub counting: Counting,
}

/// What counts as healthy or unhealthy, and how many in a row change a
/// node's state (0 turns that kind off; passive checks allow it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counting {
    /// `healthy.http_statuses`.
    pub healthy_statuses: Vec<u16>,
    /// `healthy.successes`.
    pub successes: u8,
    /// `unhealthy.http_statuses`.
    pub unhealthy_statuses: Vec<u16>,
    /// `unhealthy.http_failures`.
    pub http_failures: u8,
    /// `unhealthy.tcp_failures`.
    pub tcp_failures: u8,
    /// `unhealthy.timeouts`.
    pub timeouts: u8,
}

impl Counting {
    /// APISIX's defaults for `checks.active`.
    pub fn active_defaults() -> Counting {
        Counting {
            healthy_statuses: vec![200, 302],
            successes: 2,
            unhealthy_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 3,
        }
    }

    /// APISIX's defaults for `checks.passive`.
    pub fn passive_defaults() -> Counting {
        let mut healthy: Vec<u16> = (200..=208).collect();
        healthy.push(226);
        healthy.extend(300..=308);
        Counting {
            healthy_statuses: healthy,
            successes: 5,
            unhealthy_statuses: vec![429, 500, 503],
            http_failures: 5,
            tcp_failures: 2,
            timeouts: 7,
        }
    }
}
