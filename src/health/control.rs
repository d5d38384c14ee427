//! What the status listener shows of node health: APISIX's Control API
//! (`GET /v1/healthcheck`, `GET /v1/healthcheck/{routes,services,upstreams}/{id}`)
//! in its JSON shape, and the `apisix_upstream_status` gauge its
//! Prometheus exporter gives (1 healthy or mostly healthy, 0 not).
//!
//! Only upstreams with `checks` have a checker and are shown, as in APISIX
//! (which also waits for a first request; tinygate checks from the start).

use super::{checked, Watched};
use serde_json::{json, Value};
use std::fmt::Write as _;

/// The answer to a Control API request for `path`: `(status, JSON body)`;
/// `None` when `path` is not under `/v1/healthcheck`.
pub fn answer(path: &str) -> Option<(u16, String)> {
    let rest = path.strip_prefix("/v1/healthcheck")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let known = |kind: &str| matches!(kind, "routes" | "services" | "upstreams");
    let (status, body) = match segments.as_slice() {
        [] => {
            let all: Vec<Value> = checked().iter().filter_map(|w| checker(w)).collect();
            (200, Value::Array(all))
        }
        [kind, ..] if !known(kind) => (400, error(&format!("invalid src type {kind}"))),
        [kind] => (404, error(&format!("missing src id for src type {kind}"))),
        [kind, id] => {
            let name = format!("/{kind}/{id}");
            match super::find(&name).map(|w| checker(&w)) {
                Some(Some(info)) => (200, info),
                Some(None) => (404, error(&format!("no checker for {kind}[{id}]"))),
                None => (404, error(&format!("{kind}[{id}] not found"))),
            }
        }
        _ => (404, error("not found")),
    };
    Some((status, format!("{body}\n")))
}

fn error(message: &str) -> Value {
    json!({ "error_msg": message })
}

/// One checker as APISIX's `extra_checker_info` shows it; `None` without
/// `checks`.
fn checker(w: &Watched) -> Option<Value> {
    let checks = w.checks.as_ref()?;
    let nodes: Vec<Value> = w
        .nodes
        .iter()
        .map(|n| {
            let c = n.target.counters();
            json!({
                "ip": n.probe_addr.ip().to_string(),
                "port": n.probe_addr.port(),
                "hostname": n.hostname,
                "status": n.target.health().name(),
                "counter": {
                    "success": c.success,
                    "http_failure": c.http_failure,
                    "tcp_failure": c.tcp_failure,
                    "timeout_failure": c.timeout_failure,
                },
            })
        })
        .collect();
    Some(json!({
        "name": w.name,
        "type": checks.active.probe.name(),
        "nodes": nodes,
    }))
}

/// `apisix_upstream_status{name,ip,port}` for every checked node, in
/// Prometheus text format.
pub fn prometheus_lines() -> String {
    let mut out = String::from(
        "# HELP apisix_upstream_status Upstream status from health check\n\
         # TYPE apisix_upstream_status gauge\n",
    );
    for w in checked() {
        for n in &w.nodes {
            let _ = writeln!(
                out,
                "apisix_upstream_status{{name=\"{}\",ip=\"{}\",port=\"{}\"}} {}",
                label(&w.name),
                n.probe_addr.ip(),
                n.probe_addr.port(),
                u8::from(n.target.is_usable())
            );
        }
    }
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
