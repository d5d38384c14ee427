//! The routes file (`apisix.yaml`) as a document: its sections, the `#END`
//! marker, `${{VAR}}` substitution, and the strict (start-up, `-t`) and
//! skipping (reload, etcd) ways of validating it. What one item holds is
//! parsed in `route.rs`, `upstream.rs`, `services.rs` and
//! `plugin_entries.rs`; how routes inherit, in `merge.rs`.

use super::merge::{global_plugins, GlobalRuleEntries};
use super::reuse::{reads_outside, Known, Named, OnShelf, Reuse, Takeover};
use super::route::route;
use super::sections::{ItemRef, Sections};
use super::services::{global_rule, plugin_config, service, PluginConfig, Service};
use super::tree::{index, join, unknown_keys, Obj, Problems};
use super::upstream::upstream;
use super::{env_vars, parse_yaml, ConfigError, DeclaredPlugin, Route, RoutePlugin, Upstream};
use crate::http::uri::PathOptions;
use serde_yaml::Value;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

/// Top-level sections of APISIX's standalone file that tinygate does not
/// implement: present and non-empty is an error, so nothing is silently lost.
const UNSUPPORTED_SECTIONS: &[&str] = &[
    "consumers",
    "consumer_groups",
    "plugin_metadata",
    "plugins",
    "stream_routes",
    "protos",
    "secrets",
];

/// Everything served from one version of the routes file.
#[derive(Debug, Default)]
pub struct Routes {
    /// Enabled routes (`status: 0` ones are dropped), in file order, each
    /// with its service and plugin config merged in. Shared with the next
    /// load when unchanged (see `reuse.rs`).
    pub routes: Vec<Arc<Route>>,
    /// Named upstreams, in file order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// `ssls`: certificates for HTTPS listeners.
    #[allow(dead_code)] // read by the HTTPS wiring (issue #18 B)
    pub ssls: super::Ssls,
    /// The plugins of all `global_rules`, sorted by descending priority:
    /// they run on every routed request, before the route's.
    pub global_plugins: Vec<RoutePlugin>,
    /// The valid items by identity, for the next load to take over.
    pub known: Known,
}

impl Routes {
    /// How many items of the document this load took over from the last
    /// one unchanged, and how many it validated.
    pub fn items_taken_over(&self) -> (usize, usize) {
        self.known.counts()
    }

    /// Where (`routes[3]`) this load found an invalid version of an item
    /// that has a place of its own (an etcd key), and served the last
    /// valid version from that place instead.
    pub fn items_served_before(&self) -> &[String] {
        self.known.served_before()
    }
}

/// What validating a routes file takes from `config.yaml`: the plugins its
/// entries may name, and how request paths are normalised before routing
/// (a route's `uri` is normalised the same way, so it is compared with
/// paths as they are routed).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteRules<'a> {
    pub plugins: &'a [DeclaredPlugin],
    pub paths: PathOptions,
}

impl<'a> RouteRules<'a> {
    /// These plugins, with the default path normalisation (for tests).
    #[cfg(test)]
    pub fn with_plugins(plugins: &'a [DeclaredPlugin]) -> RouteRules<'a> {
        RouteRules {
            plugins,
            paths: PathOptions::default(),
        }
    }
}

/// Parses the text of a routes file strictly, as at start-up and in `-t`:
/// any problem fails the whole file. `label` names it in messages.
///
/// # Errors
/// Every problem found, each with `label` and key path.
pub fn parse_routes(label: &str, text: &str, rules: RouteRules) -> Result<Routes, ConfigError> {
    let (routes, problems) = parse_routes_skipping_invalid(label, text, rules, Reuse::Nothing)?;
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(ConfigError { problems })
    }
}

/// [`parse_routes`], also giving the document after `${{VAR}}`
/// substitution (what `tinygate etcd put` writes).
///
/// # Errors
/// Every problem found, each with `label` and key path.
pub fn parse_routes_and_document(
    label: &str,
    text: &str,
    rules: RouteRules,
) -> Result<(Routes, Value), ConfigError> {
    let doc = document(label, text)?;
    let (routes, problems) = parse_routes_document(label, &doc, rules);
    if problems.is_empty() {
        Ok((routes, doc))
    } else {
        Err(ConfigError { problems })
    }
}

/// Parses the text of a routes file as APISIX does on reload: an invalid
/// item is skipped (its problems are returned), the rest applies. With
/// `reuse`, items unchanged since the configuration being served are
/// taken over from it (see `reuse.rs`).
///
/// # Errors
/// Problems with the file as a whole: no `#END`, an unset `${{VAR}}`,
/// invalid YAML, not a mapping.
pub fn parse_routes_skipping_invalid(
    label: &str,
    text: &str,
    rules: RouteRules,
    reuse: Reuse,
) -> Result<(Routes, Vec<String>), ConfigError> {
    let text = checked_text(label, text)?;
    let takeover = Takeover::new(reuse, rules);
    let doc = Sections::from_text(label, &text, |section, identity| {
        takeover.may_take(section, identity)
    })?;
    Ok(parse_sections(label, &doc, rules, takeover))
}

/// The text's YAML document, after the checks APISIX makes in this order:
/// `#END` on the raw text, then `${{VAR}}` substitution, then parsing.
fn document(label: &str, text: &str) -> Result<Value, ConfigError> {
    let text = checked_text(label, text)?;
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

/// The text after the `#END` check and `${{VAR}}` substitution.
fn checked_text<'t>(label: &str, text: &'t str) -> Result<Cow<'t, str>, ConfigError> {
    if !ends_with_end_marker(text) {
        return Err(ConfigError {
            problems: vec![format!(
                "{label}: missing valid end flag: the file must end with a line \"#END\""
            )],
        });
    }
    env_vars::substitute(label, text).map_err(|problems| ConfigError { problems })
}

/// Validates a routes document that is already a tree (built from the JSON
/// values etcd holds) as APISIX does: invalid items are skipped and their
/// problems returned. No `#END` check: each etcd write is atomic, so there
/// is no half-written file to guard against.
pub fn parse_routes_document(label: &str, doc: &Value, rules: RouteRules) -> (Routes, Vec<String>) {
    let sections = Sections::whole(Cow::Borrowed(doc));
    parse_sections(
        label,
        &sections,
        rules,
        Takeover::new(Reuse::Nothing, rules),
    )
}

/// Validates a routes document given as sections (etcd's items), taking
/// over unchanged items as `reuse` allows; invalid items are skipped and
/// their problems returned.
pub fn parse_routes_sections(
    label: &str,
    doc: &Sections,
    rules: RouteRules,
    reuse: Reuse,
) -> (Routes, Vec<String>) {
    parse_sections(label, doc, rules, Takeover::new(reuse, rules))
}

/// [`parse_routes_skipping_invalid`] for unit tests: every problem
/// returned, the valid items kept.
#[cfg(test)]
pub(super) fn parse_all(
    label: &str,
    text: &str,
    plugins: &[DeclaredPlugin],
) -> (Routes, Vec<String>) {
    parse_routes_skipping_invalid(
        label,
        text,
        RouteRules::with_plugins(plugins),
        Reuse::Nothing,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn parse_sections(
    label: &str,
    doc: &Sections,
    rules: RouteRules,
    takeover: Takeover,
) -> (Routes, Vec<String>) {
    let mut p = Problems::new(label);
    let routes = parse(doc, rules, takeover, &mut p);
    (routes, p.into_vec())
}

/// APISIX requires `#END` at the very end (trailing white space allowed) so
/// that a half-written file is never loaded.
fn ends_with_end_marker(text: &str) -> bool {
    text.trim_end().ends_with("#END")
}

/// The document's items.
fn parse(doc: &Sections, route_rules: RouteRules, mut t: Takeover, p: &mut Problems) -> Routes {
    let plugins = route_rules.plugins;
    let mut known = vec![
        "routes",
        "upstreams",
        "services",
        "plugin_configs",
        "global_rules",
        "ssls",
    ];
    known.extend_from_slice(UNSUPPORTED_SECTIONS);
    unknown_keys(doc.keys(), "", &known, p);
    for section in UNSUPPORTED_SECTIONS {
        if doc.has_content(section) {
            p.at(section, "not supported by tinygate yet");
        }
    }

    // Each section refers only to those parsed before it. An item validated
    // again is remembered for the next load with what it referred to.
    let mut named = Named::default();
    let upstreams = with_ids(
        doc,
        "upstreams",
        p,
        &mut t,
        |t, item, i, ask| taken::<Arc<Upstream>>(t, item, i, ask, &named),
        |t, item, i, o, id, p| {
            let up = upstream(o, id.to_string(), p)?;
            let outside = reads_outside(&up);
            let up = match t.same_upstream(item.identity(), &up) {
                Some(old) => old,
                None => Arc::new(up),
            };
            let kept = Arc::clone(&up);
            t.keep(
                item.identity(),
                item.name(),
                o.map,
                id,
                i,
                &named,
                outside,
                kept,
            );
            Some(up)
        },
    );
    named.upstreams = by_id(&upstreams);
    let services = with_ids(
        doc,
        "services",
        p,
        &mut t,
        |t, item, i, ask| taken::<Arc<Service>>(t, item, i, ask, &named),
        |t, item, i, o, id, p| {
            let s = Arc::new(service(o, id, &named.upstreams, plugins, p)?);
            let outside = inline_reads_outside(o, s.upstream.as_deref());
            let kept = Arc::clone(&s);
            t.keep(
                item.identity(),
                item.name(),
                o.map,
                id,
                i,
                &named,
                outside,
                kept,
            );
            Some(s)
        },
    );
    named.services = by_id(&services);
    let plugin_configs = with_ids(
        doc,
        "plugin_configs",
        p,
        &mut t,
        |t, item, i, ask| taken::<Arc<PluginConfig>>(t, item, i, ask, &named),
        |t, item, i, o, id, p| {
            let c = Arc::new(plugin_config(o, plugins, p)?);
            let kept = Arc::clone(&c);
            t.keep(
                item.identity(),
                item.name(),
                o.map,
                id,
                i,
                &named,
                false,
                kept,
            );
            Some(c)
        },
    );
    named.plugin_configs = by_id(&plugin_configs);
    // Global rules are few, and are validated at every load.
    let rules: Vec<(String, GlobalRuleEntries)> = with_ids(
        doc,
        "global_rules",
        p,
        &mut t,
        |_, _, _, _| None,
        |_, _, _, o, id, p| global_rule(o, id, plugins, p),
    );
    let mut global_plugins =
        global_plugins(rules.into_iter().map(|(_, r)| r).collect(), plugins, p);
    t.adopt_global_keys(&mut global_plugins);
    let routes = routes(doc, route_rules, &mut t, &named, p);
    let mut ssls_only = serde_yaml::Mapping::new();
    if let Some(ssls) = doc.value("ssls") {
        ssls_only.insert("ssls".into(), ssls.into_owned());
    }
    let ssls = super::ssls::parse(
        &Obj {
            map: &ssls_only,
            path: String::new(),
        },
        p,
    );
    Routes {
        routes,
        upstreams: upstreams.into_iter().map(|(_, u)| u).collect(),
        ssls,
        global_plugins,
        known: t.finish(),
    }
}

/// The enabled routes, each taken over or validated.
fn routes(
    doc: &Sections,
    rules: RouteRules,
    t: &mut Takeover,
    named: &Named,
    p: &mut Problems,
) -> Vec<Arc<Route>> {
    let mut valid: Vec<(usize, Arc<Route>, bool)> = Vec::new();
    for (i, item) in doc.items("routes", p).into_iter().flatten().enumerate() {
        if let Some(kept) = t.take::<(Arc<Route>, bool)>(item.identity(), i, named) {
            let (route, enabled) = &kept.value;
            valid.push((i, Arc::clone(route), *enabled));
            continue;
        }
        let path = index("routes", i);
        let validated = item_obj(item, path.clone(), p).and_then(|o| {
            let (mut route, enabled) = route(&o, i, named, rules, p)?;
            t.adopt_keys_at(&mut route, i);
            let route = Arc::new(route);
            let outside = inline_reads_outside(&o, route.upstream.as_deref());
            let kept = (Arc::clone(&route), enabled);
            t.keep(
                item.identity(),
                item.name(),
                o.map,
                &route.id,
                i,
                named,
                outside,
                kept,
            );
            Some((route, enabled))
        });
        let found = validated.or_else(|| {
            let kept = t.fall_back::<(Arc<Route>, bool)>(item.name(), &path, i, named)?;
            Some(kept.value.clone())
        });
        if let Some((route, enabled)) = found {
            valid.push((i, route, enabled));
        }
    }
    // A set, not a list, here and in `with_ids`: a file with 10,000 routes
    // is checked for repeated ids in linear time (a list made start-up
    // quadratic).
    let mut ids: HashSet<&str> = HashSet::with_capacity(valid.len());
    let mut first = vec![true; valid.len()];
    for (n, (i, route, _)) in valid.iter().enumerate() {
        if !ids.insert(route.id.as_str()) {
            p.at(
                &join(&index("routes", *i), "id"),
                format!("route id {:?} is used twice", route.id),
            );
            first[n] = false;
        }
    }
    valid
        .into_iter()
        .zip(first)
        .filter(|((_, _, enabled), first)| *enabled && *first)
        .map(|((_, route, _), _)| route)
        .collect()
}

/// True when `o` has its own `upstream` (not one it refers to or
/// inherits) and validating it read more than its text.
fn inline_reads_outside(o: &Obj, upstream: Option<&Upstream>) -> bool {
    o.has("upstream") && upstream.is_some_and(reads_outside)
}

/// `(id, item)` pairs as a map by id.
fn by_id<T>(items: &[(String, Arc<T>)]) -> std::collections::HashMap<String, Arc<T>> {
    items
        .iter()
        .map(|(id, item)| (id.clone(), Arc::clone(item)))
        .collect()
}

/// The item as a mapping at `path`, or a problem.
fn item_obj<'a>(item: ItemRef<'a>, path: String, p: &mut Problems) -> Option<Obj<'a>> {
    match item.value() {
        Some(v) => Obj::new(v, path, p),
        None if item.unread() => None,
        None => {
            p.at(&path, "cannot be read on its own any more");
            None
        }
    }
}

/// An item the last load validated, as `ask`ed: `(id, value)`.
fn taken<T: OnShelf + Clone>(
    t: &mut Takeover,
    item: ItemRef,
    position: usize,
    ask: Ask,
    named: &Named,
) -> Option<(String, T)> {
    let kept = match ask {
        Ask::Unchanged => t.take::<T>(item.identity(), position, named)?,
        Ask::InPlaceOf(path) => t.fall_back::<T>(item.name(), path, position, named)?,
    };
    Some((kept.id.clone(), kept.value.clone()))
}

/// What `with_ids` asks of an item the last load validated.
#[derive(Clone, Copy)]
enum Ask<'p> {
    /// The same item, if it may be taken over.
    Unchanged,
    /// The last valid version at the item's place, found invalid now at
    /// this path (see `Takeover::fall_back`).
    InPlaceOf(&'p str),
}

/// The valid items of a section whose items need an `id` (what others
/// refer to them by): `take` gives an item as the last load validated it,
/// `(id, item)`, as [`Ask`]ed; `parse` makes the others, given their id.
/// An item whose id is missing or repeats an earlier one is a problem and
/// skipped. `state` is handed to both.
fn with_ids<S, T>(
    doc: &Sections,
    section: &str,
    p: &mut Problems,
    state: &mut S,
    mut take: impl FnMut(&mut S, ItemRef, usize, Ask) -> Option<(String, T)>,
    mut parse: impl FnMut(&mut S, ItemRef, usize, &Obj, &str, &mut Problems) -> Option<T>,
) -> Vec<(String, T)> {
    let mut out: Vec<(String, T)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    'items: for (i, item) in doc.items(section, p).into_iter().flatten().enumerate() {
        let path = index(section, i);
        let repeated = |id: &str, p: &mut Problems| {
            p.at(
                &join(&path, "id"),
                format!("id {id:?} is used twice in {section}"),
            );
        };
        let mut found = take(state, item, i, Ask::Unchanged);
        // The id this item's own validation claimed, if it got that far.
        let mut claimed = None;
        if found.is_none() {
            let valid = 'valid: {
                let Some(o) = item_obj(item, path.clone(), p) else {
                    break 'valid None;
                };
                let Some(id) = o.id("id", p) else {
                    if !o.has("id") {
                        p.at(
                            &path,
                            format!("missing key id (items of {section} are referred to by id)"),
                        );
                    }
                    break 'valid None;
                };
                if !seen.insert(id.clone()) {
                    repeated(&id, p);
                    continue 'items;
                }
                claimed = Some(id.clone());
                parse(state, item, i, &o, &id, p).map(|v| (id, v))
            };
            found = valid.or_else(|| take(state, item, i, Ask::InPlaceOf(&path)));
        }
        let Some((id, value)) = found else {
            continue;
        };
        if claimed.as_ref() == Some(&id) || seen.insert(id.clone()) {
            out.push((id, value));
        } else {
            repeated(&id, p);
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
        match parse_routes("apisix.yaml", yaml, RouteRules::with_plugins(&plugins())) {
            Ok(r) => r,
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    fn check_err(yaml: &str, expected: &[&str]) {
        match parse_routes("apisix.yaml", yaml, RouteRules::with_plugins(&plugins())) {
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

    /// A route's `uri` is normalised as request paths are before routing,
    /// with `config.yaml`'s path options; a spelling a request gets a 400
    /// for is an error naming the route.
    #[test]
    fn route_uris_are_normalised_as_request_paths_are() {
        use crate::http::uri::EscapedSlashes;
        let merge = PathOptions::default();
        let keep = PathOptions {
            merge_slashes: false,
            ..merge
        };
        let unescape = PathOptions {
            escaped_slashes: EscapedSlashes::UnescapeAndForward,
            ..merge
        };
        let reject = PathOptions {
            escaped_slashes: EscapedSlashes::RejectRequest,
            ..merge
        };
        let exact = |s: &str| Ok(UriMatch::Exact(s.into()));
        let prefix = |s: &str| Ok(UriMatch::Prefix(s.into()));
        let never = "a request with that path gets a 400, so the route could never match";
        #[rustfmt::skip]
        let cases: &[(&str, PathOptions, Result<UriMatch, &str>)] = &[
            ("/admin/*",       merge,    prefix("/admin/")),
            ("/%61dmin/*",     merge,    prefix("/admin/")),
            ("/a//b",          merge,    exact("/a/b")),
            ("/a//b",          keep,     exact("/a//b")),
            ("//a/*",          merge,    prefix("/a/")),
            ("/x/../admin",    merge,    exact("/admin")),
            ("/x/%2e%2e/y",    merge,    exact("/y")),
            ("/a\\b",          merge,    exact("/a/b")),
            ("/caf%c3%a9",     merge,    exact("/caf%C3%A9")),
            ("/caf\u{e9}",       merge,    exact("/caf%C3%A9")),
            // A prefix may end inside a segment: not a dot segment.
            ("/a/.*",          merge,    prefix("/a/.")),
            ("/a/..*",         merge,    prefix("/a/..")),
            ("/a/./*",         merge,    prefix("/a/")),
            ("/a/b/../*",      merge,    prefix("/a/")),
            ("/x%2fy",         merge,    exact("/x%2Fy")),
            ("/x%2fy",         unescape, exact("/x/y")),
            ("/x%2fy",         reject,   Err("encoded slash or backslash in the path")),
            ("/../x",          merge,    Err("path climbs above the root")),
            ("/a/%00",         merge,    Err("control character in the path")),
            ("/a%zz",          merge,    Err("invalid percent-encoding in the path")),
            ("/a%2*",          merge,    Err("invalid percent-encoding in the path")),
        ];
        for (uri, paths, want) in cases {
            let yaml = format!(
                "routes:\n  - {{id: r, uri: {uri:?}, upstream: {{nodes: {{\"127.0.0.1:1\": 1}}}}}}\n#END\n"
            );
            let rules = RouteRules {
                plugins: &[],
                paths: *paths,
            };
            let got = parse_routes("apisix.yaml", &yaml, rules);
            match (want, got) {
                (Ok(want), Ok(r)) => assert_eq!(&r.routes[0].uris[0], want, "{uri}"),
                (Err(reason), Err(e)) => assert_eq!(
                    e.problems,
                    [format!(
                        "apisix.yaml: routes[0]: uri {uri:?}: {reason}: {never}"
                    )],
                    "{uri}"
                ),
                (want, got) => panic!("{uri}: want {want:?}, got {:?}", got.map(|r| r.routes)),
            }
        }
    }
}
