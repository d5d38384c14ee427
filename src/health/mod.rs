//! Upstream node health, APISIX's `checks`: one state per (upstream, node),
//! shared by every worker, updated by active probes and by what the proxy
//! sees (passive checks), read by the balancers.
//!
//! - [`target`]: the state machine of one node (lua-resty-healthcheck's
//!   counters and thresholds) in one atomic word.
//! - [`checks`]: what a check is ([`Checks`]), the settings `config`
//!   parses an upstream's `checks` into.
//! - This file: the registry of the upstreams being served. A configuration
//!   that is being built looks its nodes' states up here ([`targets`]), so
//!   a node still configured after a reload keeps its state (and its
//!   requests in flight); [`watch`] makes a configuration's upstreams the
//!   ones that are checked and shown, and drops the others. The caller
//!   describes each upstream in plain terms ([`UpstreamToWatch`]).
//! - [`active`]: the checker, one thread for the whole process that probes
//!   the nodes of every upstream with `checks.active` on its intervals.
//! - [`control`]: `GET /v1/healthcheck` (APISIX's Control API shape) and
//!   the `apisix_upstream_status` metric.
//!
//! Passive checks: [`report_response`] and [`report_failure`] count what
//! the proxy saw on a node.
//!
//! It knows upstreams, nodes and probes; not routes, plugins, how a
//! request is forwarded, nor the configuration they come from (`config`
//! sits above and hands over what this needs).

mod active;
mod checks;
mod control;
mod target;

pub use checks::{ActiveCheck, Checks, Counting, Probe};
pub use control::{answer as control_api, prometheus_lines};
pub use target::{Health, Report, Target};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One node of a watched upstream.
#[derive(Debug)]
struct WatchedNode {
    target: Arc<Target>,
    /// Where probes go: the node's address, or `checks.active.port`.
    probe_addr: SocketAddr,
    /// The `Host` of HTTP probes and the `hostname` the Control API shows.
    hostname: String,
    /// The `Host` header of probes, when not `hostname`.
    host_header: Option<String>,
}

/// An upstream of the configuration being served.
#[derive(Debug)]
struct Watched {
    /// APISIX's resource key: `/upstreams/<id>`, `/routes/<id>`.
    name: String,
    checks: Option<Arc<Checks>>,
    nodes: Vec<WatchedNode>,
}

/// The upstreams of the configuration being served.
#[derive(Default)]
struct Served {
    /// Every upstream by name: where a new configuration finds the state
    /// of its nodes.
    by_name: HashMap<String, Arc<Watched>>,
    /// Those with `checks`, routes' first (APISIX's order): what is probed
    /// and shown.
    checked: Vec<Arc<Watched>>,
}

static REGISTRY: Mutex<Option<Served>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Option<Served>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The upstream called `name` being served, with or without `checks`.
fn find(name: &str) -> Option<Arc<Watched>> {
    registry().as_ref()?.by_name.get(name).cloned()
}

/// The upstreams with `checks` being served.
fn checked() -> Vec<Arc<Watched>> {
    registry()
        .as_ref()
        .map(|s| s.checked.clone())
        .unwrap_or_default()
}

/// APISIX's name for the checker of an upstream with this tinygate id:
/// `/upstreams/<id>` for a named one, `/routes/<id>` (`/services/<id>`)
/// for one written inline, as APISIX's standalone mode keys them.
pub fn resource_key(upstream_id: &str) -> String {
    for (prefix, kind) in [("route ", "routes"), ("service ", "services")] {
        if let Some(id) = upstream_id.strip_prefix(prefix) {
            return format!("/{kind}/{id}");
        }
    }
    format!("/upstreams/{upstream_id}")
}

/// The shared state of each node at `addrs` of the upstream called `name`
/// ([`resource_key`]): the one being served for a node still configured,
/// a fresh (healthy) one otherwise.
pub fn targets(name: &str, addrs: &[SocketAddr]) -> Vec<Arc<Target>> {
    let watched = registry()
        .as_ref()
        .and_then(|s| s.by_name.get(name).cloned());
    let current: HashMap<SocketAddr, Arc<Target>> = watched
        .iter()
        .flat_map(|w| w.nodes.iter())
        .map(|n| (n.target.addr, Arc::clone(&n.target)))
        .collect();
    addrs
        .iter()
        .map(|addr| {
            current
                .get(addr)
                .cloned()
                .unwrap_or_else(|| Arc::new(Target::new(*addr)))
        })
        .collect()
}

/// An upstream of the configuration about to be served, as [`watch`]
/// needs it.
pub struct UpstreamToWatch<'a> {
    /// tinygate's id of the upstream (`route 7` for one written inline),
    /// named as [`resource_key`] says.
    pub id: &'a str,
    /// `checks`, when it has them.
    pub checks: Option<&'a Arc<Checks>>,
    /// The `Host` its requests are sent with when it replaces the
    /// client's (`pass_host: rewrite`'s `upstream_host`).
    pub rewritten_host: Option<&'a str>,
    /// Its nodes, in the order of their positions in the balancer.
    pub nodes: Vec<NodeToWatch<'a>>,
}

/// A node of an [`UpstreamToWatch`].
pub struct NodeToWatch<'a> {
    /// Its shared state, as [`targets`] gave it.
    pub target: &'a Arc<Target>,
    /// `host:port` as written (a domain in it is the `Host` of probes).
    pub authority: &'a str,
}

/// Makes `upstreams` the ones being served: their nodes are checked and
/// shown; upstreams and nodes no longer configured are forgotten. The first
/// of each name counts, and those with `checks` are probed and shown in
/// the order given (APISIX lists routes' first). Starts the checker on
/// first use.
pub fn watch<'a>(upstreams: impl IntoIterator<Item = UpstreamToWatch<'a>>) {
    let mut served = Served::default();
    for up in upstreams {
        let name = resource_key(up.id);
        if served.by_name.contains_key(&name) {
            continue;
        }
        let watched = Arc::new(watched_upstream(name.clone(), &up));
        if watched.checks.is_some() {
            served.checked.push(Arc::clone(&watched));
        }
        served.by_name.insert(name, watched);
    }
    let any_checked = !served.checked.is_empty();
    *registry() = Some(served);
    if any_checked {
        active::start();
    }
}

fn watched_upstream(name: String, up: &UpstreamToWatch) -> Watched {
    let active = up.checks.map(|c| &c.active);
    let nodes = up
        .nodes
        .iter()
        .map(|node| {
            let addr = node.target.addr;
            let port = active.and_then(|a| a.port).unwrap_or(addr.port());
            let host = node_host(node.authority);
            let domain = host
                .parse::<std::net::IpAddr>()
                .is_err()
                .then(|| host.to_string());
            // As APISIX's `compute_targets`: `upstream_host` when the Host is
            // rewritten, else the node's domain; the shown hostname is
            // `checks.active.host` or the node's host.
            let host_header = up.rewritten_host.map(str::to_string).or(domain);
            WatchedNode {
                target: Arc::clone(node.target),
                probe_addr: SocketAddr::new(addr.ip(), port),
                hostname: active
                    .and_then(|a| a.host.clone())
                    .unwrap_or_else(|| addr.ip().to_string()),
                host_header,
            }
        })
        .collect();
    Watched {
        name,
        checks: up.checks.cloned(),
        nodes,
    }
}

/// The host part of a node's `host:port` (IPv6 without brackets).
fn node_host(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// What a response from `node` of the upstream `upstream_id`, checked
/// by `checks`, says about it (passive check): its status counts when
/// `checks.passive` is configured.
pub fn report_response(checks: &Checks, upstream_id: &str, node: &Target, status: u16) {
    if !checks.passive_statuses {
        return;
    }
    if let Some(report) = classify_status(&checks.passive, status) {
        record(upstream_id, node, report, &checks.passive);
    }
}

/// A connection to `node` of the upstream `upstream_id`, checked by
/// `checks`, failed (`Report::TcpFailure`) or timed out
/// (`Report::Timeout`) while proxying (passive check): counted against
/// `checks.passive`'s thresholds, or their defaults.
pub fn report_failure(checks: &Checks, upstream_id: &str, node: &Target, report: Report) {
    record(upstream_id, node, report, &checks.passive);
}

/// How a status counts: a healthy one is a success, an unhealthy one (or
/// none: 0) a failure, others do not count (lua-resty-healthcheck).
fn classify_status(counting: &Counting, status: u16) -> Option<Report> {
    if counting.healthy_statuses.contains(&status) {
        Some(Report::Success)
    } else if status == 0 || counting.unhealthy_statuses.contains(&status) {
        Some(Report::HttpFailure)
    } else {
        None
    }
}

/// The threshold `counting` sets for `report`.
fn threshold(counting: &Counting, report: Report) -> u8 {
    match report {
        Report::Success => counting.successes,
        Report::HttpFailure => counting.http_failures,
        Report::TcpFailure => counting.tcp_failures,
        Report::Timeout => counting.timeouts,
    }
}

/// Counts a passive report against `node`, logging a change of state.
fn record(upstream_id: &str, node: &Target, report: Report, counting: &Counting) {
    let limit = threshold(counting, report);
    if let Some(((_, to), count)) = node.report(report, limit) {
        log_transition(
            &resource_key(upstream_id),
            node.addr,
            to,
            report,
            count,
            limit,
            "passive",
        );
    }
}

/// One warning per node that changes between usable and not.
fn log_transition(
    name: &str,
    addr: SocketAddr,
    to: Health,
    report: Report,
    count: u8,
    limit: u8,
    how: &str,
) {
    let what = match report {
        Report::Success => "successes",
        Report::HttpFailure => "HTTP failures",
        Report::TcpFailure => "TCP failures",
        Report::Timeout => "timeouts",
    };
    log::warn!(
        "upstream {name}: node {addr} is now {} ({count}/{limit} {what}, {how} check)",
        to.name()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_keys_follow_apisix_standalone() {
        assert_eq!(resource_key("backend"), "/upstreams/backend");
        assert_eq!(resource_key("route 7"), "/routes/7");
        assert_eq!(resource_key("service s"), "/services/s");
    }

    #[test]
    fn statuses_count_as_apisix_passive_defaults_say() {
        let c = Counting::passive_defaults();
        assert_eq!(classify_status(&c, 204), Some(Report::Success));
        assert_eq!(classify_status(&c, 503), Some(Report::HttpFailure));
        assert_eq!(classify_status(&c, 0), Some(Report::HttpFailure));
        assert_eq!(classify_status(&c, 404), None);
        assert_eq!(classify_status(&c, 502), None);
    }

    #[test]
    fn node_hosts() {
        assert_eq!(node_host("a.example:80"), "a.example");
        assert_eq!(node_host("[::1]:80"), "::1");
        assert_eq!(node_host("10.0.0.1:8080"), "10.0.0.1");
    }
}
