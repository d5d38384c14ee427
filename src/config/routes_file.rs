//! The routes file (`apisix.yaml`) as a document: its sections, the `#END`
//! marker, `${{VAR}}` substitution, and the strict (start-up, `-t`) and
//! skipping (reload, etcd) ways of validating it. What one item holds is
//! parsed in `route.rs`, `upstream.rs`, `services.rs` and
//! `plugin_entries.rs`; how routes inherit, in `merge.rs`.

use super::merge::{global_plugins, GlobalRuleEntries};
use super::route::{route, Named};
use super::services::{global_rule, plugin_config, service, PluginConfig, Service};
use super::tree::{index, Obj, Problems};
use super::upstream::upstream;
use super::{env_vars, parse_yaml, ConfigError, DeclaredPlugin, Route, RoutePlugin, Upstream};
use serde_yaml::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// Top-level sections of APISIX's standalone file that tinygate does not
/// implement: present and non-empty is an error, so nothing is silently lost.
const UNSUPPORTED_SECTIONS: &[&str] = &[
    "consumers",
    "plugin_metadata",
    "plugins",
    "stream_routes",
    "protos",
];

/// Everything served from one version of the routes file.
#[derive(Debug, Default)]
pub struct Routes {
    /// Enabled routes (`status: 0` ones are dropped), in file order, each
    /// with its service and plugin config merged in.
    pub routes: Vec<Route>,
    /// Named upstreams, in file order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// `ssls`: certificates for HTTPS listeners.
    #[allow(dead_code)] // read by the HTTPS wiring (issue #18 B)
    pub ssls: super::Ssls,
    /// The plugins of all `global_rules`, sorted by descending priority:
    /// they run on every routed request, before the route's.
    pub global_plugins: Vec<RoutePlugin>,
}

/// Parses the text of a routes file strictly, as at start-up and in `-t`:
/// any problem fails the whole file. `label` names it in messages.
///
/// # Errors
/// Every problem found, each with `label` and key path.
pub fn parse_routes(
    label: &str,
    text: &str,
    plugins: &[DeclaredPlugin],
) -> Result<Routes, ConfigError> {
    parse_routes_and_document(label, text, plugins).map(|(routes, _)| routes)
}

/// [`parse_routes`], also giving the document after `${{VAR}}`
/// substitution (what `tinygate etcd put` writes).
///
/// # Errors
/// Every problem found, each with `label` and key path.
pub fn parse_routes_and_document(
    label: &str,
    text: &str,
    plugins: &[DeclaredPlugin],
) -> Result<(Routes, Value), ConfigError> {
    let doc = document(label, text)?;
    let (routes, problems) = parse_routes_document(label, &doc, plugins);
    if problems.is_empty() {
        Ok((routes, doc))
    } else {
        Err(ConfigError { problems })
    }
}

/// Parses the text of a routes file as APISIX does on reload: an invalid
/// item is skipped (its problems are returned), the rest applies.
///
/// # Errors
/// Problems with the file as a whole: no `#END`, an unset `${{VAR}}`,
/// invalid YAML, not a mapping.
pub fn parse_routes_skipping_invalid(
    label: &str,
    text: &str,
    plugins: &[DeclaredPlugin],
) -> Result<(Routes, Vec<String>), ConfigError> {
    let doc = document(label, text)?;
    Ok(parse_routes_document(label, &doc, plugins))
}

/// The text's YAML document, after the checks APISIX makes in this order:
/// `#END` on the raw text, then `${{VAR}}` substitution, then parsing.
fn document(label: &str, text: &str) -> Result<Value, ConfigError> {
    if !ends_with_end_marker(text) {
        return Err(ConfigError {
            problems: vec![format!(
                "{label}: missing valid end flag: the file must end with a line \"#END\""
            )],
        });
    }
    let text = env_vars::substitute(label, text).map_err(|problems| ConfigError { problems })?;
    let doc = parse_yaml(label, &text)?;
    if !(doc.is_mapping() || doc.is_null()) {
        return Err(ConfigError {
            problems: vec![format!(
                "{label}: expected a mapping with routes and upstreams"
            )],
        });
    }
    Ok(doc)
}

/// Validates a routes document that is already a tree (built from the JSON
/// values etcd holds) as APISIX does: invalid items are skipped and their
/// problems returned. No `#END` check: each etcd write is atomic, so there
/// is no half-written file to guard against.
pub fn parse_routes_document(
    label: &str,
    doc: &Value,
    plugins: &[DeclaredPlugin],
) -> (Routes, Vec<String>) {
    let mut p = Problems::new(label);
    let routes = parse(doc, plugins, &mut p);
    (routes, p.into_vec())
}

/// [`parse_routes_skipping_invalid`] for unit tests: every problem
/// returned, the valid items kept.
#[cfg(test)]
pub(super) fn parse_all(
    label: &str,
    text: &str,
    plugins: &[DeclaredPlugin],
) -> (Routes, Vec<String>) {
    let doc = document(label, text).unwrap_or_else(|e| panic!("{e}"));
    let mut p = Problems::new(label);
    let routes = parse(&doc, plugins, &mut p);
    (routes, p.into_vec())
}

/// APISIX requires `#END` at the very end (trailing white space allowed) so
/// that a half-written file is never loaded.
fn ends_with_end_marker(text: &str) -> bool {
    text.trim_end().ends_with("#END")
}

/// The document's items.
fn parse(doc: &Value, plugins: &[DeclaredPlugin], p: &mut Problems) -> Routes {
    let empty = Value::Mapping(Default::default());
    let doc = if doc.is_null() { &empty } else { doc };
    let Some(top) = Obj::new(doc, String::new(), p) else {
        return Routes::default();
    };
    let mut known = vec![
        "routes",
        "upstreams",
        "services",
        "plugin_configs",
        "global_rules",
        "ssls",
    ];
    known.extend_from_slice(UNSUPPORTED_SECTIONS);
    top.only(&known, p);
    for section in UNSUPPORTED_SECTIONS {
        match top.value(section) {
            Some(Value::Sequence(s)) if s.is_empty() => {}
            Some(_) => p.at(section, "not supported by tinygate yet"),
            None => {}
        }
    }

    // Each section refers only to those parsed before it.
    let upstreams: Vec<(String, Arc<Upstream>)> = with_ids(&top, "upstreams", p, |o, id, p| {
        upstream(o, id.to_string(), p).map(Arc::new)
    });
    let upstreams_by_id = upstreams.iter().map(|(id, u)| (id.as_str(), u)).collect();
    let services: Vec<(String, Service)> = with_ids(&top, "services", p, |o, id, p| {
        service(o, id, &upstreams_by_id, plugins, p)
    });
    let plugin_configs: Vec<(String, PluginConfig)> =
        with_ids(&top, "plugin_configs", p, |o, _, p| {
            plugin_config(o, plugins, p)
        });
    let rules: Vec<(String, GlobalRuleEntries)> = with_ids(&top, "global_rules", p, |o, id, p| {
        global_rule(o, id, plugins, p)
    });
    let global_plugins = global_plugins(rules.into_iter().map(|(_, r)| r).collect(), plugins, p);
    let named = Named {
        upstreams: upstreams_by_id,
        services: services.iter().map(|(id, s)| (id.as_str(), s)).collect(),
        plugin_configs: plugin_configs
            .iter()
            .map(|(id, c)| (id.as_str(), c))
            .collect(),
    };

    let mut routes = Vec::new();
    // Sets, not lists, here and in `with_ids`: a file with 10,000 routes is
    // checked for repeated ids in linear time (a list made start-up
    // quadratic).
    let mut ids: HashSet<String> = HashSet::new();
    if let Some(items) = top.seq("routes", p) {
        for (i, item) in items.iter().enumerate() {
            let Some(o) = Obj::new(item, index("routes", i), p) else {
                continue;
            };
            let Some((route, enabled)) = route(&o, i, &named, plugins, p) else {
                continue;
            };
            if !ids.insert(route.id.clone()) {
                p.at(
                    &o.path_of("id"),
                    format!("route id {:?} is used twice", route.id),
                );
                continue;
            }
            if enabled {
                routes.push(route);
            }
        }
    }
    let upstreams = upstreams.into_iter().map(|(_, u)| u).collect();
    let ssls = super::ssls::parse(&top, p);
    Routes {
        routes,
        upstreams,
        ssls,
        global_plugins,
    }
}

/// The valid items of a section whose items need an `id` (what others
/// refer to them by): `parse` makes each one, given its id; an item whose
/// id is missing or repeats an earlier one is a problem and skipped.
fn with_ids<T>(
    top: &Obj,
    section: &str,
    p: &mut Problems,
    mut parse: impl FnMut(&Obj, &str, &mut Problems) -> Option<T>,
) -> Vec<(String, T)> {
    let mut out: Vec<(String, T)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (i, item) in top.seq(section, p).into_iter().flatten().enumerate() {
        let path = index(section, i);
        let Some(o) = Obj::new(item, path.clone(), p) else {
            continue;
        };
        let Some(id) = o.id("id", p) else {
            if !o.has("id") {
                p.at(
                    &path,
                    format!("missing key id (items of {section} are referred to by id)"),
                );
            }
            continue;
        };
        if !seen.insert(id.clone()) {
            p.at(
                &o.path_of("id"),
                format!("id {id:?} is used twice in {section}"),
            );
            continue;
        }
        if let Some(item) = parse(&o, &id, p) {
            out.push((id, item));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostMatch, PassHost, UriMatch};
    use crate::wasm::{PluginSpec, DEFAULT_FUEL_PER_CALLBACK, DEFAULT_MEMORY_LIMIT};
    use std::time::Duration;

    fn plugins() -> Vec<DeclaredPlugin> {
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
            .map(DeclaredPlugin::from)
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
                "apisix.yaml: routes[1].upstream.timout: unknown key (expected one of: id, name, desc, labels, type, nodes, timeout, retries, retry_timeout, pass_host, upstream_host, scheme, keepalive_pool, hash_on, key, checks, tls)",
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
}
