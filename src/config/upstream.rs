//! One upstream, inline in a route or named in `upstreams`: its nodes,
//! balancing, timeouts, retries and `pass_host`. It must not know about
//! routes or where the upstream was written.

use super::tree::{index, Obj, Problems};
use super::{Node, PassHost, Timeouts, Upstream};
use crate::yaml::kind;
use serde_yaml::Value;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub(super) fn upstream(o: &Obj, id: String, p: &mut Problems) -> Option<Upstream> {
    let before = p.len();
    o.only(
        &[
            "id",
            "name",
            "desc",
            "labels",
            "type",
            "nodes",
            "timeout",
            "retries",
            "retry_timeout",
            "pass_host",
            "upstream_host",
            "scheme",
            "keepalive_pool",
            "hash_on",
            "key",
            "checks",
            "tls",
        ],
        p,
    );
    let (algorithm, hash_key) = super::balancing::balancing(o, p);
    let checks = o
        .obj("checks", p)
        .and_then(|c| super::checks::checks(&c, p));
    let tls = super::upstream_tls::parse(o, p);
    // An https check presents the upstream's client certificate, as its
    // requests do (a node that requires one would fail every probe).
    let mut checks = checks;
    if let (Some(check_tls), Some(tls)) =
        (checks.as_mut().and_then(|c| c.active.tls.as_mut()), &tls)
    {
        check_tls.client_cert.clone_from(&tls.client_cert);
    }
    if let Some(k) = o.obj("keepalive_pool", p) {
        k.only(&["size", "idle_timeout", "requests"], p);
        // APISIX's schema: size and requests ≥ 1, idle_timeout ≥ 0.
        let valid = [
            k.int("size", 1, i64::MAX, p).is_some() || !k.has("size"),
            k.int("requests", 1, i64::MAX, p).is_some() || !k.has("requests"),
            match k.value("idle_timeout") {
                None => true,
                Some(v) if v.as_f64().is_some_and(|t| t >= 0.0) => true,
                Some(_) => {
                    p.at(
                        &k.path_of("idle_timeout"),
                        "expected a number of seconds ≥ 0",
                    );
                    false
                }
            },
        ];
        if valid.iter().all(|v| *v) {
            log::warn!(
                "{}: {}: accepted but not applied: tinygate's own pool limits hold \
                 (docs/configuration.md, upstreams[].keepalive_pool)",
                p.file(),
                k.path
            );
        }
    }
    // APISIX: a number ≥ 0, where 0 means no limit.
    let retry_timeout = match o.value("retry_timeout").and_then(serde_yaml::Value::as_f64) {
        Some(0.0) => None,
        _ => o.seconds("retry_timeout", p).map(Duration::from_secs_f64),
    };
    let nodes = match o.value("nodes") {
        Some(v) => nodes(v, &o.path_of("nodes"), p),
        None => {
            p.at(&o.path, "missing key nodes");
            Vec::new()
        }
    };
    let timeout = o
        .obj("timeout", p)
        .and_then(|t| timeouts(&t, p))
        .unwrap_or_default();
    let retries = o.int("retries", 0, 1000, p).map(|n| n as u32);
    let pass_host = match o.str("pass_host", p).unwrap_or("pass") {
        "pass" => Some(PassHost::Pass),
        "node" => Some(PassHost::Node),
        "rewrite" => match o.str("upstream_host", p) {
            Some(h) if !h.is_empty() => Some(PassHost::Rewrite(h.to_string())),
            _ => {
                p.at(&o.path, "pass_host: rewrite needs upstream_host");
                None
            }
        },
        other => {
            p.at(
                &o.path_of("pass_host"),
                format!("expected pass, node or rewrite, got {other:?}"),
            );
            None
        }
    };
    if p.len() > before {
        return None;
    }
    Some(Upstream {
        hash_key,
        timeout,
        retries,
        retry_timeout,
        pass_host: pass_host?,
        tls,
        checks: checks.map(std::sync::Arc::new),
        ..Upstream::new(id, nodes, algorithm)
    })
}

/// `nodes`: a map `"host:port": weight` or a list of `{host, port, weight}`.
fn nodes(v: &Value, path: &str, p: &mut Problems) -> Vec<Node> {
    let mut out = Vec::new();
    match v {
        Value::Mapping(m) => {
            for (k, w) in m {
                let Some(hp) = k.as_str() else {
                    p.at(
                        path,
                        format!("node keys must be \"host:port\", got {}", kind(k)),
                    );
                    continue;
                };
                let node_path = format!("{path}.{hp:?}");
                let weight = match w.as_u64().and_then(|w| u32::try_from(w).ok()) {
                    Some(w) => w,
                    None => {
                        p.at(
                            &node_path,
                            format!("weight must be an integer ≥ 0, got {}", kind(w)),
                        );
                        continue;
                    }
                };
                let Some((host, port)) = split_host_port(hp) else {
                    p.at(&node_path, "expected host:port");
                    continue;
                };
                if let Some(n) = node(host, port, weight, 0, &node_path, p) {
                    out.push(n);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let Some(o) = Obj::new(item, index(path, i), p) else {
                    continue;
                };
                o.only(&["host", "port", "weight", "priority", "metadata"], p);
                let host = o.str("host", p);
                let port = o.int("port", 1, 65535, p).unwrap_or(80) as u16;
                let weight = o.int("weight", 0, i64::from(u32::MAX), p);
                for key in ["host", "weight"] {
                    if !o.has(key) {
                        p.at(&o.path, format!("missing key {key}"));
                    }
                }
                let priority = o.int("priority", i64::MIN, i64::MAX, p).unwrap_or(0);
                if let (Some(host), Some(weight)) = (host, weight) {
                    if let Some(n) = node(host, port, weight as u32, priority, &o.path, p) {
                        out.push(n);
                    }
                }
            }
        }
        other => p.at(
            path,
            format!(
                "expected a mapping of \"host:port\": weight or a list, got {}",
                kind(other)
            ),
        ),
    }
    if out.is_empty() && p.is_empty() {
        p.at(path, "no nodes");
    } else if !out.is_empty() && out.iter().all(|n| n.weight == 0) {
        p.at(path, "every node has weight 0");
    }
    out
}

/// `host:port`, `[v6]:port`, or a bare host (port 80, as APISIX).
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok()?)),
        Some(_) => None,
        None => Some((s, 80)),
    }
}

fn node(
    host: &str,
    port: u16,
    weight: u32,
    priority: i64,
    path: &str,
    p: &mut Problems,
) -> Option<Node> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => match (host, port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                p.at(path, format!("cannot resolve host {host:?}"));
                return None;
            }
        },
    };
    Some(Node {
        authority,
        addr,
        weight,
        priority,
    })
}

pub(super) fn timeouts(t: &Obj, p: &mut Problems) -> Option<Timeouts> {
    t.only(&["connect", "send", "read"], p);
    let mut out = Timeouts::default();
    for (key, slot) in [
        ("connect", &mut out.connect),
        ("send", &mut out.send),
        ("read", &mut out.read),
    ] {
        if let Some(s) = t.seconds(key, p) {
            *slot = Duration::from_secs_f64(s);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a:1"), Some(("a", 1)));
        assert_eq!(split_host_port("a"), Some(("a", 80)));
        assert_eq!(split_host_port("[::1]:9"), Some(("::1", 9)));
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port("a:x"), None);
    }
}
