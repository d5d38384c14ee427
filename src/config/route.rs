//! One entry of `routes`: its match keys (`uri`, `host`, `methods`,
//! `priority`), `status`, `timeout`, and which upstream and plugin entries
//! it uses. It must not know how the document around it is laid out.

use super::plugin_entries::route_plugins;
use super::tree::{index, kind, Obj, Problems};
use super::upstream::{timeouts, upstream};
use super::{HostMatch, Route, Upstream, UriMatch};
use crate::wasm::PluginSpec;
use serde_yaml::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The HTTP methods APISIX accepts in `methods`.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
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

/// One route; `None` when it has errors. The bool is false for `status: 0`.
pub(super) fn route(
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
