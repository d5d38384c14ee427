//! What one load of the routes document hands to the next, so that a
//! reload costs what changed (issue #20): every valid item by its identity
//! (its text in the routes file, its value in etcd: see `sections.rs`),
//! with the items it referred to ([`Known`]). It knows items and their
//! references, not what an item means.
//!
//! The next load takes an item over as it is, the same `Arc` and so the
//! same balancer (its cursor), health states and plugin entry keys (so the
//! same root contexts), when its identity is unchanged, every item it
//! refers to by id is the very object it referred to before (an upstream
//! that changed rebuilds the routes and services that use it, and only
//! those), its default id (`arr_<n>`, from its position) would be the same,
//! the plugin list of `config.yaml` is the same, and its validation read
//! nothing but its text: an upstream (named, or inline in a route or a
//! service) with a node given by host name, or with TLS (certificates that
//! may be `file:` paths, CAs from `config.yaml`), is validated again at
//! every load, so DNS and files are read again; a named upstream whose
//! nodes resolve as before and that has no TLS is then kept as it was, so
//! what refers to it is still taken over. Every other item is validated
//! as at start-up, and then keeps the keys of its plugin entries whose
//! plugin and conf are unchanged from the route of the same id (a global
//! rule's, from the global rules), as every load has since #14.3: a root
//! context lives as long as its (route, plugin, conf).
//!
//! Only valid items are known: an invalid one is validated again at every
//! load, so its problems are reported with its current position.

use super::services::{PluginConfig, Service};
use super::{FailurePolicy, Route, RoutePlugin, RouteRules, Routes, Upstream};
use crate::http::uri::PathOptions;
use serde_yaml::{Mapping, Value};
use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

/// How a load may use the configuration being served.
#[derive(Clone, Copy)]
pub enum Reuse<'a> {
    /// Not at all: start-up, `-t`.
    Nothing,
    /// Unchanged items are taken over as they are; the others keep the
    /// keys of their unchanged plugin entries.
    Items(&'a Routes),
}

/// What recognises an item across loads: its text, and a hash of it
/// computed once.
#[derive(Clone, Copy)]
pub struct Identity<'t> {
    pub text: &'t [u8],
    hash: u64,
    /// Already compared equal to a known item's text of its section.
    matched: bool,
}

impl<'t> Identity<'t> {
    pub fn of(text: &'t [u8]) -> Identity<'t> {
        // SipHash with fixed keys: the same text hashes alike in every
        // load; a collision only costs a validation (the text is compared).
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        Identity {
            text,
            hash: h.finish(),
            matched: false,
        }
    }

    /// The same identity, known to match a known item's text (by
    /// [`Takeover::may_take`]): it is not compared again.
    pub fn matched(self) -> Identity<'t> {
        Identity {
            matched: true,
            ..self
        }
    }
}

/// A map keyed by `u64`s that are hashes or unique counters already: a
/// multiplication spreads them over the table (hashbrown reads the top
/// bits), instead of hashing them again with SipHash.
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<SpreadU64>>;

/// The hasher of [`KeyMap`]: Fibonacci hashing of one `u64`.
#[derive(Default)]
pub struct SpreadU64(u64);

impl Hasher for SpreadU64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The valid items of one load, by identity.
#[derive(Default)]
pub struct Known {
    /// `(name, priority, failure_policy)` of each plugin of `config.yaml`,
    /// in order: what the items' plugin entries were validated against.
    plugins: Vec<(String, i64, FailurePolicy)>,
    /// How routes' `uri`s were normalised (`config.yaml`'s path options).
    paths: PathOptions,
    upstreams: Shelf<Arc<Upstream>>,
    services: Shelf<Arc<Service>>,
    plugin_configs: Shelf<Arc<PluginConfig>>,
    /// Routes, with whether they are enabled (`status`).
    routes: Shelf<(Arc<Route>, bool)>,
    /// The identity hash of the valid item at each place (etcd key), by
    /// the hash of the place's name.
    places: KeyMap<u64>,
    /// How many items the load took over, and validated.
    counts: (usize, usize),
    /// Where (`routes[3]`) the load found an invalid version of an item
    /// and served the last valid one from the same place instead.
    served_before: Vec<String>,
}

impl Known {
    /// How many items the load took over unchanged, and validated.
    pub fn counts(&self) -> (usize, usize) {
        self.counts
    }

    /// Where the load served the last valid version of an item in place
    /// of an invalid one (paths such as `routes[3]`).
    pub fn served_before(&self) -> &[String] {
        &self.served_before
    }

    /// The item validated with `identity`, if its validation read only its
    /// text (a hash match is checked against the text).
    fn usable<T: OnShelf>(&self, identity: Identity) -> Option<&Arc<Kept<T>>> {
        let kept = T::shelf(self).get(&identity.hash)?;
        let same = identity.matched || *kept.identity == *identity.text;
        (!kept.outside && same).then_some(kept)
    }
}

/// The kinds of items a [`Known`] keeps, each on its own shelf.
pub(super) trait OnShelf: Sized {
    fn shelf(known: &Known) -> &Shelf<Self>;
    fn shelf_mut(known: &mut Known) -> &mut Shelf<Self>;
}

macro_rules! on_shelf {
    ($t:ty, $field:ident) => {
        impl OnShelf for $t {
            fn shelf(known: &Known) -> &Shelf<Self> {
                &known.$field
            }
            fn shelf_mut(known: &mut Known) -> &mut Shelf<Self> {
                &mut known.$field
            }
        }
    };
}
on_shelf!(Arc<Upstream>, upstreams);
on_shelf!(Arc<Service>, services);
on_shelf!(Arc<PluginConfig>, plugin_configs);
on_shelf!((Arc<Route>, bool), routes);

impl fmt::Debug for Known {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Known({} upstreams, {} services, {} plugin configs, {} routes)",
            self.upstreams.len(),
            self.services.len(),
            self.plugin_configs.len(),
            self.routes.len()
        )
    }
}

/// Items of one kind by the hash of their identity.
pub(super) type Shelf<T> = KeyMap<Arc<Kept<T>>>;

/// One valid item and what it was validated with.
pub(super) struct Kept<T> {
    /// Its identity's text, compared on a hash match.
    identity: Box<[u8]>,
    /// Its place (etcd key), if it has one.
    place: Option<Box<str>>,
    /// Its id (given, or `arr_<n>`).
    pub id: String,
    /// Its index in its list when its id came from it (`arr_<n>`).
    position: Option<usize>,
    /// The items it referred to by id, as they were.
    refs: Vec<Ref>,
    /// Its validation read DNS or files: it is validated again each load.
    outside: bool,
    pub value: T,
}

/// An item referred to by id, held so that "the same object" stays
/// meaningful (an address alone could be reused by a new object).
pub(super) enum Ref {
    Upstream(String, Arc<Upstream>),
    Service(String, Arc<Service>),
    PluginConfig(String, Arc<PluginConfig>),
}

/// The items a load has validated so far, by id: what later items refer
/// to.
#[derive(Default)]
pub(super) struct Named {
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub services: HashMap<String, Arc<Service>>,
    pub plugin_configs: HashMap<String, Arc<PluginConfig>>,
}

impl Named {
    /// What `item` refers to through `upstream_id`, `service_id` and
    /// `plugin_config_id`, as found now (a valid item finds each).
    fn refs_of(&self, item: &Mapping) -> Vec<Ref> {
        let mut refs = Vec::new();
        if let Some((id, u)) = find(item, "upstream_id", &self.upstreams) {
            refs.push(Ref::Upstream(id, u));
        }
        if let Some((id, s)) = find(item, "service_id", &self.services) {
            refs.push(Ref::Service(id, s));
        }
        if let Some((id, c)) = find(item, "plugin_config_id", &self.plugin_configs) {
            refs.push(Ref::PluginConfig(id, c));
        }
        refs
    }

    /// True when every item in `refs` is still the object named so.
    fn holds(&self, refs: &[Ref]) -> bool {
        refs.iter().all(|r| match r {
            Ref::Upstream(id, u) => self
                .upstreams
                .get(id)
                .is_some_and(|now| Arc::ptr_eq(u, now)),
            Ref::Service(id, s) => self.services.get(id).is_some_and(|now| Arc::ptr_eq(s, now)),
            Ref::PluginConfig(id, c) => self
                .plugin_configs
                .get(id)
                .is_some_and(|now| Arc::ptr_eq(c, now)),
        })
    }
}

/// The object `item`'s `key` names in `named`, with the id as written
/// (a string, or an integer as APISIX allows).
fn find<T>(item: &Mapping, key: &str, named: &HashMap<String, Arc<T>>) -> Option<(String, Arc<T>)> {
    let id = match item.get(key)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let found = Arc::clone(named.get(&id)?);
    Some((id, found))
}

/// True when validating `up` read more than its text: a node's host name
/// was resolved, or TLS settings (files, `config.yaml`'s CAs) apply.
pub(super) fn reads_outside(up: &Upstream) -> bool {
    let by_name = |authority: &str| {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_err()
    };
    up.tls.is_some()
        || up.checks.as_ref().is_some_and(|c| c.active.tls.is_some())
        || up.nodes.iter().any(|n| by_name(&n.authority))
}

/// One load's use of the configuration being served, and the [`Known`]
/// it hands to the next.
pub(super) struct Takeover<'a> {
    /// Items that may be taken over: `None` unless [`Reuse::Items`] and the
    /// same plugin list.
    items: Option<&'a Known>,
    /// Where rebuilt plugin entries find their keys.
    previous: Option<&'a Routes>,
    by_id: OnceCell<HashMap<&'a str, &'a Route>>,
    /// Items validated or taken over by this load.
    next: Known,
}

impl<'a> Takeover<'a> {
    pub fn new(reuse: Reuse<'a>, rules: RouteRules) -> Takeover<'a> {
        let plugins: Vec<(String, i64, FailurePolicy)> = rules
            .plugins
            .iter()
            .map(|d| (d.name.clone(), d.priority, d.failure_policy))
            .collect();
        let paths = rules.paths;
        let (items, previous) = match reuse {
            Reuse::Nothing => (None, None),
            Reuse::Items(r) => {
                let same = r.known.plugins == plugins && r.known.paths == paths;
                (same.then_some(&r.known), Some(r))
            }
        };
        Takeover {
            items,
            previous,
            by_id: OnceCell::new(),
            next: Known {
                plugins,
                paths,
                ..Known::default()
            },
        }
    }

    /// True when an item of `section` with this identity may be taken over
    /// (then its text need not be parsed now).
    pub fn may_take(&self, section: &str, identity: Identity) -> bool {
        let Some(known) = self.items else {
            return false;
        };
        match section {
            "upstreams" => known.usable::<Arc<Upstream>>(identity).is_some(),
            "services" => known.usable::<Arc<Service>>(identity).is_some(),
            "plugin_configs" => known.usable::<Arc<PluginConfig>>(identity).is_some(),
            "routes" => known.usable::<(Arc<Route>, bool)>(identity).is_some(),
            _ => false,
        }
    }

    /// The item at `position` with `identity` as the last load validated
    /// it, if it may be taken over now; also known to the next load then.
    pub fn take<T: OnShelf>(
        &mut self,
        identity: Option<Identity>,
        position: usize,
        named: &Named,
    ) -> Option<Arc<Kept<T>>> {
        let identity = identity?;
        let kept = Arc::clone(self.items?.usable::<T>(identity)?);
        let usable = kept.position.is_none_or(|at| at == position) && named.holds(&kept.refs);
        if !usable {
            return None;
        }
        self.next.counts.0 += 1;
        self.shelve(identity.hash, &kept);
        Some(kept)
    }

    /// The last valid version of the item at `place` (an etcd key), found
    /// invalid now at `path`, if it may serve on: what it refers to is
    /// unchanged and its validation read only its text. APISIX does the
    /// same with a watched etcd value that fails its checks
    /// (`config_etcd.lua`: the old value stays).
    pub fn fall_back<T: OnShelf>(
        &mut self,
        place: Option<&str>,
        path: &str,
        position: usize,
        named: &Named,
    ) -> Option<Arc<Kept<T>>> {
        let place = place?;
        let known = self.items?;
        let hash = known.places.get(&Identity::of(place.as_bytes()).hash)?;
        let kept = Arc::clone(T::shelf(known).get(hash)?);
        let usable = kept.place.as_deref() == Some(place)
            && !kept.outside
            && kept.position.is_none_or(|at| at == position)
            && named.holds(&kept.refs);
        if !usable {
            return None;
        }
        self.next.served_before.push(path.to_string());
        self.shelve(*hash, &kept);
        Some(kept)
    }

    /// Puts `kept` on the next load's shelf, and at its place.
    fn shelve<T: OnShelf>(&mut self, hash: u64, kept: &Arc<Kept<T>>) {
        if let Some(place) = &kept.place {
            let at = Identity::of(place.as_bytes()).hash;
            self.next.places.insert(at, hash);
        }
        T::shelf_mut(&mut self.next).insert(hash, Arc::clone(kept));
    }

    /// What this load hands to the next.
    pub fn finish(self) -> Known {
        self.next
    }

    /// Remembers an item this load validated, for the next load.
    #[allow(clippy::too_many_arguments)]
    pub fn keep<T: OnShelf>(
        &mut self,
        identity: Option<Identity>,
        place: Option<&str>,
        item: &Mapping,
        id: &str,
        position: usize,
        named: &Named,
        outside: bool,
        value: T,
    ) {
        self.next.counts.1 += 1;
        let Some(identity) = identity else {
            return;
        };
        let positional = item.get("id").is_none_or(Value::is_null);
        let kept = Kept {
            identity: identity.text.into(),
            place: place.map(Into::into),
            id: id.to_string(),
            position: positional.then_some(position),
            refs: named.refs_of(item),
            outside,
            value,
        };
        self.shelve(identity.hash, &Arc::new(kept));
    }

    /// The upstream the last load validated with `identity`, when `now`
    /// (the same text validated again, as one that reads DNS is) resolved
    /// to the same nodes and has no TLS: the old one serves on, with its
    /// balancer, and what refers to it can still be taken over.
    pub fn same_upstream(
        &self,
        identity: Option<Identity>,
        now: &Upstream,
    ) -> Option<Arc<Upstream>> {
        let identity = identity?;
        let kept = self.items?.upstreams.get(&identity.hash)?;
        let old = &kept.value;
        let same = *kept.identity == *identity.text
            && now.tls.is_none()
            && old.tls.is_none()
            && now.checks.as_ref().is_none_or(|c| c.active.tls.is_none())
            && now.nodes.len() == old.nodes.len()
            && now
                .nodes
                .iter()
                .zip(&old.nodes)
                .all(|(a, b)| a.addr == b.addr);
        same.then(|| Arc::clone(old))
    }

    /// Gives each plugin entry of a route validated again the key it had
    /// in the route of the same id, if its plugin and conf are the same.
    fn adopt_keys(&self, route: &mut Route) {
        let Some(previous) = self.previous else {
            return;
        };
        if route.plugins.is_empty() {
            return;
        }
        let by_id = self.by_id.get_or_init(|| {
            previous
                .routes
                .iter()
                .map(|r| (r.id.as_str(), &**r))
                .collect()
        });
        if let Some(old) = by_id.get(route.id.as_str()) {
            adopt(&mut route.plugins, &old.plugins);
        }
    }

    /// [`Takeover::adopt_keys`], trying first the route at `position` in
    /// the configuration being served: where a changed route usually is,
    /// found without indexing every route by id.
    pub fn adopt_keys_at(&self, route: &mut Route, position: usize) {
        let Some(previous) = self.previous else {
            return;
        };
        match previous.routes.get(position) {
            Some(old) if old.id == route.id => adopt(&mut route.plugins, &old.plugins),
            _ => self.adopt_keys(route),
        }
    }

    /// Gives each global rule's plugin entry the key it had, if its plugin
    /// and conf are the same.
    pub fn adopt_global_keys(&self, entries: &mut [RoutePlugin]) {
        if let Some(previous) = self.previous {
            adopt(entries, &previous.global_plugins);
        }
    }
}

/// Gives each entry of `now` the key of the entry of `before` with the
/// same plugin and conf; each old key goes to one entry at most.
fn adopt(now: &mut [RoutePlugin], before: &[RoutePlugin]) {
    let mut taken = vec![false; before.len()];
    for rp in now {
        let old = before
            .iter()
            .enumerate()
            .find(|(i, old)| !taken[*i] && old.name == rp.name && old.conf == rp.conf);
        if let Some((i, old)) = old {
            taken[i] = true;
            rp.key = old.key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_routes_skipping_invalid, DeclaredPlugin};
    use crate::wasm::{PluginSpec, DEFAULT_FUEL_PER_CALLBACK, DEFAULT_MEMORY_LIMIT};

    /// Plugins `p` and `q`, in that order, `p` with `priority`.
    fn plugins(priority: i64) -> Vec<DeclaredPlugin> {
        ["p", "q"]
            .iter()
            .map(|name| PluginSpec {
                name: name.to_string(),
                file: format!("{name}.wasm").into(),
                priority: if *name == "p" { priority } else { 0 },
                root_id: String::new(),
                vm_config: Vec::new(),
                env: Vec::new(),
                fuel_per_callback: DEFAULT_FUEL_PER_CALLBACK,
                memory_limit: DEFAULT_MEMORY_LIMIT,
            })
            .map(DeclaredPlugin::from)
            .collect()
    }

    /// `text` loaded with `reuse`; every item valid.
    fn load(text: &str, reuse: Reuse) -> Routes {
        load_with(text, reuse, &plugins(0))
    }

    fn load_with(text: &str, reuse: Reuse, plugins: &[DeclaredPlugin]) -> Routes {
        let (routes, problems) = parse_routes_skipping_invalid(
            "apisix.yaml",
            text,
            RouteRules::with_plugins(plugins),
            reuse,
        )
        .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        routes
    }

    fn route<'r>(routes: &'r Routes, id: &str) -> &'r Arc<Route> {
        routes.routes.iter().find(|r| r.id == id).expect("route")
    }

    fn same_route(a: &Routes, b: &Routes, id: &str) -> bool {
        Arc::ptr_eq(route(a, id), route(b, id))
    }

    /// The key of `plugin`'s entry on route `id`.
    fn key_of(routes: &Routes, id: &str, plugin: &str) -> u64 {
        let entries = &route(routes, id).plugins;
        entries
            .iter()
            .find(|rp| rp.name == plugin)
            .expect("entry")
            .key
    }

    const UPSTREAMS: &str = "upstreams:
  - {id: u1, nodes: {\"127.0.0.1:1\": 1}}
  - {id: u2, nodes: {\"127.0.0.1:2\": 1}}
";

    #[test]
    fn only_changed_items_are_validated_again() {
        let text = |b_uri: &str| {
            format!(
                "{UPSTREAMS}routes:
  - {{id: a, uri: /a, upstream_id: u1, plugins: {{p: {{conf: x}}}}}}
  - {{id: b, uri: {b_uri}, upstream_id: u2, plugins: {{p: {{conf: x}}}}}}
  - {{id: c, uri: /c, upstream: {{nodes: {{\"127.0.0.1:3\": 1}}}}}}
#END
"
            )
        };
        let old = load(&text("/b"), Reuse::Nothing);
        let new = load(&text("/bee"), Reuse::Items(&old));
        assert!(same_route(&old, &new, "a"));
        assert!(same_route(&old, &new, "c"), "an inline upstream by address");
        assert!(!same_route(&old, &new, "b"));
        assert_eq!(new.items_taken_over(), (4, 1), "u1, u2, a, c; b");
        // The changed route keeps its unchanged plugin entry's key, so its
        // root context; every upstream is the same object, balancer and all.
        assert_eq!(key_of(&new, "b", "p"), key_of(&old, "b", "p"));
        assert!(old
            .upstreams
            .iter()
            .zip(&new.upstreams)
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        // Start-up takes nothing over.
        assert_eq!(old.items_taken_over(), (0, 5));
    }

    #[test]
    fn a_changed_upstream_rebuilds_what_refers_to_it_and_nothing_else() {
        let text = |u1_port: u16| {
            format!(
                "upstreams:
  - {{id: u1, nodes: {{\"127.0.0.1:{u1_port}\": 1}}}}
  - {{id: u2, nodes: {{\"127.0.0.1:2\": 1}}}}
services:
  - {{id: s1, upstream_id: u1}}
  - {{id: s2, upstream_id: u2}}
routes:
  - {{id: a, uri: /a, upstream_id: u1}}
  - {{id: b, uri: /b, upstream_id: u2}}
  - {{id: c, uri: /c, service_id: s1}}
  - {{id: d, uri: /d, service_id: s2}}
#END
"
            )
        };
        let old = load(&text(1), Reuse::Nothing);
        let new = load(&text(9), Reuse::Items(&old));
        assert!(!same_route(&old, &new, "a"));
        assert!(!same_route(&old, &new, "c"), "through its service");
        assert!(same_route(&old, &new, "b"));
        assert!(same_route(&old, &new, "d"));
        assert_eq!(new.items_taken_over(), (4, 4), "u2, s2, b, d; u1, s1, a, c");
        assert_eq!(
            route(&new, "a").upstream.as_ref().unwrap().nodes[0]
                .addr
                .port(),
            9
        );
        assert_eq!(
            route(&new, "c").upstream.as_ref().unwrap().nodes[0]
                .addr
                .port(),
            9
        );
    }

    #[test]
    fn plugin_entries_keep_their_keys_while_route_plugin_and_conf_are_the_same() {
        let old = load(
            &format!(
                "{UPSTREAMS}routes:
  - {{id: a, uri: /a, upstream_id: u1, plugins: {{p: {{conf: x}}, q: {{conf: x}}}}}}
  - {{id: b, uri: /b, upstream_id: u1, plugins: {{p: {{conf: y}}}}}}
#END
"
            ),
            Reuse::Nothing,
        );
        let new = load(
            &format!(
                "{UPSTREAMS}routes:
  - {{id: b, uri: /bee, upstream_id: u1, plugins: {{p: {{conf: z}}}}}}
  - {{id: a, uri: /a, upstream_id: u2, plugins: {{p: {{conf: x}}, q: {{conf: x}}}}}}
  - {{id: c, uri: /c, upstream_id: u1, plugins: {{p: {{conf: x}}}}}}
#END
"
            ),
            Reuse::Items(&old),
        );
        // Same route, plugin and conf: the old key, whatever else changed.
        assert_eq!(key_of(&new, "a", "p"), key_of(&old, "a", "p"));
        assert_eq!(key_of(&new, "a", "q"), key_of(&old, "a", "q"));
        // A new conf, or the same conf on another route: a key of its own.
        assert_ne!(key_of(&new, "b", "p"), key_of(&old, "b", "p"));
        assert_ne!(key_of(&new, "c", "p"), key_of(&old, "a", "p"));
    }

    #[test]
    fn items_named_by_position_or_read_differently_are_validated_again() {
        let text = |first: &str| {
            format!("{UPSTREAMS}routes:\n{first}  - {{uri: /x, upstream_id: u1}}\n#END\n")
        };
        let old = load(&text(""), Reuse::Nothing);
        assert_eq!(old.routes[0].id, "arr_1");
        // Moved to the second place: its id is arr_2 now.
        let new = load(
            &text("  - {id: a, uri: /a, upstream_id: u1}\n"),
            Reuse::Items(&old),
        );
        assert_eq!(new.routes[1].id, "arr_2");
        assert_eq!(new.items_taken_over(), (2, 2));
        // Another plugin list in config.yaml: every item is validated again.
        let again = load_with(&text(""), Reuse::Items(&old), &plugins(5));
        assert_eq!(again.items_taken_over(), (0, 3));
    }

    #[test]
    fn an_upstream_by_host_name_is_resolved_again_and_kept_when_the_same() {
        let text = |b_uri: &str| {
            format!(
                "upstreams:
  - {{id: named, nodes: {{\"localhost:1\": 1}}}}
routes:
  - {{id: a, uri: /a, upstream_id: named}}
  - {{id: b, uri: {b_uri}, upstream: {{nodes: {{\"localhost:2\": 1}}}}}}
#END
"
            )
        };
        let old = load(&text("/b"), Reuse::Nothing);
        let new = load(&text("/b"), Reuse::Items(&old));
        // Resolved again, to the same address: the same upstream serves on,
        // so the route using it is taken over. The route with an inline
        // upstream by name is validated again.
        assert!(Arc::ptr_eq(&old.upstreams[0], &new.upstreams[0]));
        assert!(same_route(&old, &new, "a"));
        assert!(!same_route(&old, &new, "b"));
        assert_eq!(new.items_taken_over(), (1, 2), "a; named, b");
    }

    #[test]
    fn a_document_that_cannot_be_cut_is_read_whole_and_nothing_is_taken_over() {
        // A flow mapping at the top: the cut declines, the parser reads it.
        let text = "{upstreams: [{id: u1, nodes: {\"127.0.0.1:1\": 1}}], \
                    routes: [{id: a, uri: /a, upstream_id: u1, plugins: {p: {conf: x}}}]}\n#END\n";
        let old = load(text, Reuse::Nothing);
        let new = load(text, Reuse::Items(&old));
        assert!(!same_route(&old, &new, "a"));
        assert_eq!(new.items_taken_over(), (0, 2));
        assert_eq!(key_of(&new, "a", "p"), key_of(&old, "a", "p"));
    }

    #[test]
    fn spread_keys_fill_the_table_evenly() {
        // Sequential keys (plugin entry keys are a counter) land in
        // different buckets: the top bits differ.
        let top = |k: u64| {
            let mut h = SpreadU64::default();
            h.write_u64(k);
            h.finish() >> 57
        };
        let distinct: std::collections::HashSet<u64> = (1..=64).map(top).collect();
        assert!(distinct.len() > 32, "{distinct:?}");
    }
}
