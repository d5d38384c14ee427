//! The routes file (`apisix.yaml`): `routes` and `upstreams` in APISIX's
//! standalone format, ending with `#END`.

use super::main_file::json_bytes;
use super::tree::{index, kind, Obj, Problems};
use super::{
    parse_yaml, ConfigError, HostMatch, Node, PassHost, Route, RoutePlugin, Timeouts, Upstream,
    UriMatch,
};
use crate::balancer::Balancer;
use crate::wasm::PluginSpec;
use serde_yaml::Value;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The HTTP methods APISIX accepts in `methods`.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// Top-level sections of APISIX's standalone file that tinygate does not
/// implement: present and non-empty is an error, so nothing is silently lost.
const UNSUPPORTED_SECTIONS: &[&str] = &[
    "services",
    "plugin_configs",
    "global_rules",
    "consumers",
    "ssls",
    "plugin_metadata",
    "plugins",
    "stream_routes",
    "protos",
];

/// Route keys APISIX has and tinygate does not implement yet.
const UNSUPPORTED_ROUTE_KEYS: &[&str] = &[
    "remote_addr",
    "remote_addrs",
    "vars",
    "filter_func",
    "service_id",
    "plugin_config_id",
    "script",
    "enable_websocket",
];

/// Source of [`RoutePlugin::key`]s: unique for the life of the process, so a
/// reloaded conf never reuses an old root context.
static NEXT_PLUGIN_KEY: AtomicU64 = AtomicU64::new(1);

/// Routes and upstreams from one version of the routes file.
#[derive(Debug, Default)]
pub struct Routes {
    /// Enabled routes (`status: 0` ones are dropped), in file order.
    pub routes: Vec<Route>,
    /// Named upstreams, in file order.
    pub upstreams: Vec<Arc<Upstream>>,
}

/// Parses the text of a routes file strictly, as at start-up and in `-t`:
/// any problem fails the whole file. `label` names it in messages.
///
/// # Errors
/// Every problem found, each with `label` and key path.
pub fn parse_routes(
    label: &str,
    text: &str,
    plugins: &[PluginSpec],
) -> Result<Routes, ConfigError> {
    let (routes, problems) = parse_routes_skipping_invalid(label, text, plugins)?;
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(ConfigError { problems })
    }
}

/// Parses the text of a routes file as APISIX does on reload: an invalid
/// route or upstream is skipped (its problems are returned), the rest
/// applies.
///
/// # Errors
/// Problems with the file as a whole: no `#END`, invalid YAML, not a
/// mapping.
pub fn parse_routes_skipping_invalid(
    label: &str,
    text: &str,
    plugins: &[PluginSpec],
) -> Result<(Routes, Vec<String>), ConfigError> {
    if !ends_with_end_marker(text) {
        return Err(ConfigError {
            problems: vec![format!(
                "{label}: missing valid end flag: the file must end with a line \"#END\""
            )],
        });
    }
    let doc = parse_yaml(label, text)?;
    if !(doc.is_mapping() || doc.is_null()) {
        return Err(ConfigError {
            problems: vec![format!(
                "{label}: expected a mapping with routes and upstreams"
            )],
        });
    }
    let mut p = Problems::new(label);
    let routes = parse(&doc, plugins, &mut p);
    Ok((routes, p.into_vec()))
}

/// Validates a routes document that is already a tree (built from the JSON
/// values etcd holds) as APISIX does: invalid routes and upstreams are
/// skipped and their problems returned. No `#END` check: each etcd write is
/// atomic, so there is no half-written file to guard against.
pub fn parse_routes_document(
    label: &str,
    doc: &Value,
    plugins: &[PluginSpec],
) -> (Routes, Vec<String>) {
    let mut p = Problems::new(label);
    let routes = parse(doc, plugins, &mut p);
    (routes, p.into_vec())
}

/// APISIX requires `#END` at the very end (trailing white space allowed) so
/// that a half-written file is never loaded.
fn ends_with_end_marker(text: &str) -> bool {
    text.trim_end().ends_with("#END")
}

fn parse(doc: &Value, plugins: &[PluginSpec], p: &mut Problems) -> Routes {
    let empty = Value::Mapping(Default::default());
    let doc = if doc.is_null() { &empty } else { doc };
    let Some(top) = Obj::new(doc, String::new(), p) else {
        return Routes::default();
    };
    let mut known = vec!["routes", "upstreams"];
    known.extend_from_slice(UNSUPPORTED_SECTIONS);
    top.only(&known, p);
    for section in UNSUPPORTED_SECTIONS {
        match top.value(section) {
            Some(Value::Sequence(s)) if s.is_empty() => {}
            Some(_) => p.at(section, "not supported by tinygate yet"),
            None => {}
        }
    }

    let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
    if let Some(items) = top.seq("upstreams", p) {
        for (i, item) in items.iter().enumerate() {
            let path = index("upstreams", i);
            let Some(o) = Obj::new(item, path.clone(), p) else {
                continue;
            };
            let Some(id) = o.id("id", p) else {
                if !o.has("id") {
                    p.at(&path, "missing key id (routes refer to upstreams by id)");
                }
                continue;
            };
            if upstreams.iter().any(|u| u.id == id) {
                p.at(
                    &o.path_of("id"),
                    format!("upstream id {id:?} is used twice"),
                );
                continue;
            }
            if let Some(u) = upstream(&o, id, p) {
                upstreams.push(Arc::new(u));
            }
        }
    }

    let by_id: HashMap<&str, &Arc<Upstream>> =
        upstreams.iter().map(|u| (u.id.as_str(), u)).collect();
    let mut routes = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    if let Some(items) = top.seq("routes", p) {
        for (i, item) in items.iter().enumerate() {
            let Some(o) = Obj::new(item, index("routes", i), p) else {
                continue;
            };
            let Some((route, enabled)) = route(&o, i, &by_id, plugins, p) else {
                continue;
            };
            if ids.contains(&route.id) {
                p.at(
                    &o.path_of("id"),
                    format!("route id {:?} is used twice", route.id),
                );
                continue;
            }
            ids.push(route.id.clone());
            if enabled {
                routes.push(route);
            }
        }
    }
    Routes { routes, upstreams }
}

/// One route; `None` when it has errors. The bool is false for `status: 0`.
fn route(
    o: &Obj,
    i: usize,
    upstreams: &HashMap<&str, &Arc<Upstream>>,
    plugins: &[PluginSpec],
    p: &mut Problems,
) -> Option<(Route, bool)> {
    let before = p.len();
    let mut known = vec![
        "id",
        "name",
        "desc",
        "labels",
        "uri",
        "uris",
        "methods",
        "host",
        "hosts",
        "priority",
        "upstream",
        "upstream_id",
        "plugins",
        "status",
        "timeout",
    ];
    for key in UNSUPPORTED_ROUTE_KEYS {
        if o.has(key) {
            p.at(&o.path_of(key), "not supported by tinygate yet");
        }
    }
    known.extend_from_slice(UNSUPPORTED_ROUTE_KEYS);
    o.only(&known, p);

    let id = o.id("id", p).unwrap_or_else(|| format!("arr_{}", i + 1));
    let uris = exactly_one(o, "uri", "uris", p, true)
        .map(|list| list.iter().filter_map(|u| uri_match(u, o, p)).collect())
        .unwrap_or_default();
    let hosts = exactly_one(o, "host", "hosts", p, false)
        .map(|list| list.iter().filter_map(|h| host_match(h, o, p)).collect())
        .unwrap_or_default();
    let methods = o
        .seq("methods", p)
        .map(|items| methods(items, &o.path_of("methods"), p))
        .unwrap_or_default();
    let priority = o.int("priority", i64::MIN, i64::MAX, p).unwrap_or(0);
    let enabled = match o.int("status", 0, 1, p) {
        Some(s) => s == 1,
        None => true,
    };
    let route_timeout = o.obj("timeout", p).and_then(|t| timeouts(&t, p));

    let upstream = match (o.value("upstream"), o.value("upstream_id")) {
        (Some(_), Some(_)) => {
            p.at(&o.path, "give either upstream or upstream_id, not both");
            None
        }
        (Some(inline), None) => Obj::new(inline, o.path_of("upstream"), p)
            .and_then(|u| upstream(&u, format!("route {id}"), p))
            .map(Arc::new),
        (None, Some(_)) => {
            let want = o.id("upstream_id", p)?;
            match upstreams.get(want.as_str()) {
                Some(u) => Some(Arc::clone(u)),
                None => {
                    p.at(&o.path_of("upstream_id"), format!("no upstream {want:?}"));
                    None
                }
            }
        }
        (None, None) => None,
    };
    let route_plugins = o
        .obj("plugins", p)
        .map(|list| route_plugins(&list, plugins, p))
        .unwrap_or_default();
    if upstream.is_none() && !o.has("upstream") && !o.has("upstream_id") && !o.has("plugins") {
        p.at(&o.path, "needs an upstream, an upstream_id or plugins");
    }
    if p.len() > before {
        return None;
    }
    let timeout = route_timeout
        .or_else(|| upstream.as_ref().map(|u| u.timeout))
        .unwrap_or_default();
    Some((
        Route {
            id,
            uris,
            hosts,
            methods,
            priority,
            upstream,
            plugins: route_plugins,
            timeout,
        },
        enabled,
    ))
}

/// `uri`/`uris` (or `host`/`hosts`): exactly one of the two forms.
fn exactly_one(
    o: &Obj,
    single: &str,
    plural: &str,
    p: &mut Problems,
    required: bool,
) -> Option<Vec<String>> {
    match (o.has(single), o.has(plural)) {
        (true, true) => {
            p.at(
                &o.path,
                format!("give either {single} or {plural}, not both"),
            );
            None
        }
        (true, false) => o.str(single, p).map(|s| vec![s.to_string()]),
        (false, true) => o.strings(plural, p),
        (false, false) => {
            if required {
                p.at(&o.path, format!("missing key {single} (or {plural})"));
            }
            None
        }
    }
}

fn uri_match(uri: &str, o: &Obj, p: &mut Problems) -> Option<UriMatch> {
    if !uri.starts_with('/') || uri.len() > 4096 {
        p.at(
            &o.path,
            format!("uri {uri:?} must start with / and be at most 4096 bytes"),
        );
        return None;
    }
    Some(match uri.strip_suffix('*') {
        Some(prefix) => UriMatch::Prefix(prefix.to_string()),
        None => UriMatch::Exact(uri.to_string()),
    })
}

fn host_match(host: &str, o: &Obj, p: &mut Problems) -> Option<HostMatch> {
    let host = host.to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if let Some(rest) = host.strip_prefix("*.") {
        if valid(rest) {
            return Some(HostMatch::Suffix(format!(".{rest}")));
        }
    } else if valid(&host) {
        return Some(HostMatch::Exact(host));
    }
    p.at(
        &o.path,
        format!("host {host:?} is not a host name or a *.wildcard"),
    );
    None
}

fn methods(items: &[Value], path: &str, p: &mut Problems) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(m) if METHODS.contains(&m) => {
                if !out.iter().any(|x| x == m) {
                    out.push(m.to_string());
                }
            }
            Some(m) => p.at(
                &index(path, i),
                format!("{m:?} is not one of {}", METHODS.join(", ")),
            ),
            None => p.at(
                &index(path, i),
                format!("expected a method name, got {}", kind(item)),
            ),
        }
    }
    out
}

fn route_plugins(list: &Obj, plugins: &[PluginSpec], p: &mut Problems) -> Vec<RoutePlugin> {
    let mut out = Vec::new();
    for (name, v) in list.map {
        let Some(name) = name.as_str() else {
            p.at(&list.path, "plugin names must be strings");
            continue;
        };
        let path = super::tree::join(&list.path, name);
        let Some(index) = plugins.iter().position(|s| s.name == name) else {
            let known: Vec<&str> = plugins.iter().map(|s| s.name.as_str()).collect();
            p.at(
                &path,
                format!(
                    "no wasm plugin {name:?} in config.yaml wasm.plugins (declared: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            continue;
        };
        let Some(o) = Obj::new(v, path.clone(), p) else {
            continue;
        };
        o.only(&["conf", "_meta"], p);
        let conf = match o.value("conf") {
            Some(Value::String(s)) if !s.is_empty() => s.clone().into_bytes(),
            Some(v @ Value::Mapping(m)) if !m.is_empty() => json_bytes(v, &o.path_of("conf"), p),
            Some(other) => {
                p.at(
                    &o.path_of("conf"),
                    format!(
                        "expected a non-empty string or a non-empty mapping, got {}",
                        kind(other)
                    ),
                );
                continue;
            }
            None => {
                p.at(&path, "missing key conf");
                continue;
            }
        };
        out.push(RoutePlugin {
            plugin: index,
            name: name.to_string(),
            conf,
            key: NEXT_PLUGIN_KEY.fetch_add(1, Ordering::Relaxed),
        });
    }
    // APISIX runs higher priorities first; ties keep file order.
    out.sort_by_key(|rp| std::cmp::Reverse(plugins[rp.plugin].priority));
    out
}

fn upstream(o: &Obj, id: String, p: &mut Problems) -> Option<Upstream> {
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
        ],
        p,
    );
    if let Some(t) = o.str("type", p) {
        if t != "roundrobin" {
            p.at(
                &o.path_of("type"),
                format!("only roundrobin is supported, not {t:?}"),
            );
        }
    }
    for key in ["hash_on", "key", "checks"] {
        if o.has(key) {
            p.at(&o.path_of(key), "not supported by tinygate yet");
        }
    }
    if let Some(s) = o.str("scheme", p) {
        if s != "http" {
            p.at(
                &o.path_of("scheme"),
                format!("only http is supported, not {s:?}"),
            );
        }
    }
    if let Some(k) = o.obj("keepalive_pool", p) {
        k.only(&["size", "idle_timeout", "requests"], p);
    }
    let _ = o.seconds("retry_timeout", p);
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
    let weights: Vec<u32> = nodes.iter().map(|n| n.weight).collect();
    Some(Upstream {
        id,
        balancer: Balancer::new(&weights),
        nodes,
        timeout,
        retries,
        pass_host: pass_host?,
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
                if let Some(n) = node(host, port, weight, &node_path, p) {
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
                if o.has("priority") {
                    p.at(
                        &o.path_of("priority"),
                        "node priorities are not supported yet",
                    );
                }
                if let (Some(host), Some(weight)) = (host, weight) {
                    if let Some(n) = node(host, port, weight as u32, &o.path, p) {
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

fn node(host: &str, port: u16, weight: u32, path: &str, p: &mut Problems) -> Option<Node> {
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
    })
}

fn timeouts(t: &Obj, p: &mut Problems) -> Option<Timeouts> {
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
    use crate::wasm::{PluginSpec, DEFAULT_FUEL_PER_CALLBACK, DEFAULT_MEMORY_LIMIT};

    fn plugins() -> Vec<PluginSpec> {
        ["custom-response-header", "other"]
            .iter()
            .enumerate()
            .map(|(i, name)| PluginSpec {
                name: name.to_string(),
                file: format!("{name}.wasm").into(),
                priority: 100 * i as i64,
                root_id: String::new(),
                vm_config: Vec::new(),
                env: Vec::new(),
                fuel_per_callback: DEFAULT_FUEL_PER_CALLBACK,
                memory_limit: DEFAULT_MEMORY_LIMIT,
            })
            .collect()
    }

    fn check_ok(yaml: &str) -> Routes {
        match parse_routes("apisix.yaml", yaml, &plugins()) {
            Ok(r) => r,
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    fn check_err(yaml: &str, expected: &[&str]) {
        match parse_routes("apisix.yaml", yaml, &plugins()) {
            Ok(_) => panic!("expected errors {expected:?}"),
            Err(e) => assert_eq!(e.problems, expected),
        }
    }

    #[test]
    fn the_article_route_loads() {
        let r = check_ok(
            r#"
routes:
  - uri: /*
    upstream:
      type: roundrobin
      nodes:
        "127.0.0.1:1980": 1
    plugins:
      custom-response-header:
        conf: |
          {"headers": [{"name": "X-Go-Wasm", "value": "APISIX"}]}
#END
"#,
        );
        let route = &r.routes[0];
        assert_eq!(route.id, "arr_1");
        assert_eq!(route.uris, vec![UriMatch::Prefix("/".into())]);
        assert_eq!(route.plugins[0].name, "custom-response-header");
        assert!(String::from_utf8_lossy(&route.plugins[0].conf).contains("X-Go-Wasm"));
        let up = route.upstream.as_ref().unwrap();
        assert_eq!(up.nodes[0].addr, "127.0.0.1:1980".parse().unwrap());
        assert_eq!(up.id, "route arr_1");
    }

    #[test]
    fn object_conf_is_json_and_plugins_sort_by_priority() {
        let r = check_ok(
            r#"
routes:
  - id: 1
    uris: ["/a", "/b/*"]
    hosts: ["*.Example.com", "foo.org"]
    methods: [GET, POST]
    upstream_id: backend
    plugins:
      custom-response-header:
        conf:
          headers: [{name: X, value: "1"}]
      other:
        conf: "x"
upstreams:
  - id: backend
    nodes:
      - {host: 127.0.0.1, port: 8080, weight: 3}
      - {host: "::1", port: 8081, weight: 1}
    timeout: {connect: 1, send: 2, read: 0.5}
    pass_host: rewrite
    upstream_host: internal.example
#END
"#,
        );
        let route = &r.routes[0];
        assert_eq!(route.id, "1");
        assert_eq!(route.hosts[0], HostMatch::Suffix(".example.com".into()));
        assert_eq!(route.plugins[0].name, "other");
        assert_eq!(
            route.plugins[1].conf,
            br#"{"headers":[{"name":"X","value":"1"}]}"#.to_vec()
        );
        assert_eq!(route.timeout.read, Duration::from_millis(500));
        let up = route.upstream.as_ref().unwrap();
        assert_eq!(up.nodes[1].authority, "[::1]:8081");
        assert_eq!(up.pass_host, PassHost::Rewrite("internal.example".into()));
    }

    #[test]
    fn every_error_is_listed_with_its_path() {
        check_err(
            r#"
routes:
  - uri: /a
    upstream_id: api
  - uri: /b
    upstream:
      nodes: {"127.0.0.1:80": 1}
      timout: {connect: 1}
    plugins:
      missing: {conf: "x"}
  - id: 3
    methods: [GET, FETCH]
    upstream_id: backend
upstreams:
  - id: backend
    nodes: {"127.0.0.1:99999": 1}
#END
"#,
            &[
                "apisix.yaml: upstreams[0].nodes.\"127.0.0.1:99999\": expected host:port",
                "apisix.yaml: routes[0].upstream_id: no upstream \"api\"",
                "apisix.yaml: routes[1].upstream.timout: unknown key (expected one of: id, name, desc, labels, type, nodes, timeout, retries, retry_timeout, pass_host, upstream_host, scheme, keepalive_pool, hash_on, key, checks)",
                "apisix.yaml: routes[1].plugins.missing: no wasm plugin \"missing\" in config.yaml wasm.plugins (declared: custom-response-header, other)",
                "apisix.yaml: routes[2]: missing key uri (or uris)",
                "apisix.yaml: routes[2].methods[1]: \"FETCH\" is not one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, CONNECT, TRACE, PURGE",
                "apisix.yaml: routes[2].upstream_id: no upstream \"backend\"",
            ],
        );
    }

    #[test]
    fn missing_end_marker_is_refused() {
        check_err(
            "routes: []\n",
            &["apisix.yaml: missing valid end flag: the file must end with a line \"#END\""],
        );
    }

    #[test]
    fn disabled_routes_are_dropped() {
        let r = check_ok(
            "routes:\n  - {uri: /a, status: 0, upstream: {nodes: {\"127.0.0.1:1\": 1}}}\n#END\n",
        );
        assert!(r.routes.is_empty());
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a:1"), Some(("a", 1)));
        assert_eq!(split_host_port("a"), Some(("a", 80)));
        assert_eq!(split_host_port("[::1]:9"), Some(("::1", 9)));
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port("a:x"), None);
    }
}
