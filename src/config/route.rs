//! One entry of `routes`: its match keys (`uri`, `host`, `methods`,
//! `remote_addrs`, `vars`, `priority`), `status`, `timeout`, and which
//! upstream, service, plugin config and plugin entries it uses. It must not
//! know how the document around it is laid out.

use super::merge::route_with_inherited;
use super::plugin_entries::route_plugins;
use super::reuse::Named;
use super::services::own_upstream;
use super::tree::{index, Obj, Problems};
use super::upstream::timeouts;
use super::{HostMatch, Route, RouteRules, UriMatch};
use crate::expr::IpMatcher;
use crate::http::uri::{normalize_path, PathOptions};
use crate::yaml::kind;
use serde_yaml::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The HTTP methods APISIX accepts in `methods`.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];
/// Route keys APISIX has and tinygate does not implement: Lua code.
const LUA_ROUTE_KEYS: &[&str] = &["filter_func", "script"];

/// One route, with what it inherits from its service and plugin config
/// merged in; `None` when it has errors. The bool is false for `status: 0`.
pub(super) fn route(
    o: &Obj,
    i: usize,
    named: &Named,
    rules: RouteRules,
    p: &mut Problems,
) -> Option<(Route, bool)> {
    let plugins = rules.plugins;
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
        "remote_addr",
        "remote_addrs",
        "vars",
        "priority",
        "upstream",
        "upstream_id",
        "service_id",
        "plugins",
        "plugin_config_id",
        "enable_websocket",
        "status",
        "timeout",
    ];
    for key in LUA_ROUTE_KEYS {
        if o.has(key) {
            p.at(&o.path_of(key), "not supported by tinygate (Lua)");
        }
    }
    known.extend_from_slice(LUA_ROUTE_KEYS);
    o.only(&known, p);

    let id = o.id("id", p).unwrap_or_else(|| format!("arr_{}", i + 1));
    let uris = exactly_one(o, "uri", "uris", p, true)
        .map(|list| {
            list.iter()
                .filter_map(|u| uri_match(u, rules.paths, o, p))
                .collect()
        })
        .unwrap_or_default();
    let hosts: Vec<HostMatch> = exactly_one(o, "host", "hosts", p, false)
        .map(|list| list.iter().filter_map(|h| host_match(h, o, p)).collect())
        .unwrap_or_default();
    let remote_addrs = remote_addrs(o, p);
    let vars = o.value("vars").and_then(|v| match crate::expr::compile(v) {
        Ok(expr) => Some(expr),
        Err(e) => {
            p.at(&format!("{}{}", o.path_of("vars"), e.path), e.message);
            None
        }
    });
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
    let enable_websocket = o.bool("enable_websocket", p);
    let _ = (o.str("name", p), o.str("desc", p), o.obj("labels", p));

    let own_upstream = own_upstream(o, format!("route {id}"), &named.upstreams, p);
    let service = lookup(o, "service_id", "service", &named.services, p);
    let plugin_config = lookup(
        o,
        "plugin_config_id",
        "plugin config",
        &named.plugin_configs,
        p,
    );
    let own_plugins = o
        .obj("plugins", p)
        .map(|list| route_plugins(&list, plugins, p))
        .unwrap_or_default();
    if !["upstream", "upstream_id", "plugins", "service_id"]
        .iter()
        .any(|key| o.has(key))
    {
        p.at(
            &o.path,
            "needs an upstream, an upstream_id, a service_id or plugins",
        );
    }
    if p.len() > before {
        return None;
    }
    // APISIX's merge_service_route: the route's own upstream and hosts win,
    // the service's fill in; the router takes the service's hosts too.
    let upstream = own_upstream.or_else(|| service.and_then(|s| s.upstream.clone()));
    let hosts = match (hosts.is_empty(), service) {
        (true, Some(s)) => s.hosts.clone(),
        _ => hosts,
    };
    let timeout = route_timeout
        .or_else(|| upstream.as_ref().map(|u| u.timeout))
        .unwrap_or_default();
    let plugins = route_with_inherited(
        own_plugins,
        plugin_config.map_or(&[], |c| c.plugins.as_slice()),
        service.map_or(&[], |s| s.plugins.as_slice()),
        plugins,
    );
    Some((
        Route {
            id,
            uris,
            hosts,
            methods,
            priority,
            upstream,
            plugins,
            timeout,
            service_id: o.id("service_id", p),
            vars,
            remote_addrs,
            enable_websocket: enable_websocket
                .or_else(|| service.and_then(|s| s.enable_websocket))
                .unwrap_or(false),
        },
        enabled,
    ))
}

/// The item `key` names in `items` (`what` for messages), or a problem.
fn lookup<'a, T>(
    o: &Obj,
    key: &str,
    what: &str,
    items: &'a HashMap<String, Arc<T>>,
    p: &mut Problems,
) -> Option<&'a Arc<T>> {
    let want = o.id(key, p)?;
    let found = items.get(&want);
    if found.is_none() {
        p.at(&o.path_of(key), format!("no {what} {want:?}"));
    }
    found
}

/// `remote_addr` or `remote_addrs` (at most one): IPs and CIDR ranges.
fn remote_addrs(o: &Obj, p: &mut Problems) -> Option<IpMatcher> {
    let list = exactly_one(o, "remote_addr", "remote_addrs", p, false)?;
    let key = if o.has("remote_addr") {
        "remote_addr"
    } else {
        "remote_addrs"
    };
    match IpMatcher::parse(list.iter().map(String::as_str)) {
        Ok(m) => Some(m),
        Err(e) => {
            p.at(&o.path_of(key), e);
            None
        }
    }
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

/// A route's `uri`, normalised as request paths are before routing
/// (`http::uri::normalize_path` with `config.yaml`'s path options): a
/// route is compared with paths in their normal form, so `/%61dmin/*`,
/// `/a//b` or `/x/../admin` written as they are could never match. A uri
/// whose spelling tinygate answers with a 400 (a `..` above the root, a
/// control byte, a malformed escape, an escaped slash under
/// `reject_request`) is an error.
fn uri_match(uri: &str, paths: PathOptions, o: &Obj, p: &mut Problems) -> Option<UriMatch> {
    if !uri.starts_with('/') || uri.len() > 4096 {
        p.at(
            &o.path,
            format!("uri {uri:?} must start with / and be at most 4096 bytes"),
        );
        return None;
    }
    let (path, prefix) = match uri.strip_suffix('*') {
        Some(path) => (path, true),
        None => (uri, false),
    };
    let normal = if prefix {
        // A prefix may end inside a segment (`/a/.` is for `/a/.well-known`):
        // normalised as if a character followed, so that a partial last
        // segment is not taken for a dot segment.
        normalize_path(&format!("{path}x"), paths).map(|n| n[..n.len() - 1].to_string())
    } else {
        normalize_path(path, paths).map(|n| n.into_owned())
    };
    let normal = match normal {
        Ok(normal) => normal,
        Err(e) => {
            p.at(
                &o.path,
                format!(
                    "uri {uri:?}: {}: a request with that path gets a 400, so the route could never match",
                    e.reason()
                ),
            );
            return None;
        }
    };
    if normal != path {
        log::info!(
            "{}: {}: uri {uri:?} is routed as {:?} (request paths are normalised before routing)",
            p.file(),
            o.path,
            if prefix {
                format!("{normal}*")
            } else {
                normal.clone()
            }
        );
    }
    Some(if prefix {
        UriMatch::Prefix(normal)
    } else {
        UriMatch::Exact(normal)
    })
}

pub(super) fn host_match(host: &str, o: &Obj, p: &mut Problems) -> Option<HostMatch> {
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
