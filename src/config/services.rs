//! `services` (what routes share through `service_id`: an upstream,
//! plugins, hosts, `enable_websocket`), and the two named sets of plugin
//! entries, `plugin_configs` (through `plugin_config_id`) and
//! `global_rules` (for every routed request). Each item is parsed on its
//! own; how routes inherit from them is `merge.rs`'s.

use super::merge::GlobalRuleEntries;
use super::plugin_entries::route_plugins;
use super::route::host_match;
use super::tree::{Obj, Problems};
use super::upstream::upstream;
use super::{DeclaredPlugin, HostMatch, RoutePlugin, Upstream};
use std::collections::HashMap;
use std::sync::Arc;

/// One `services[]` item.
#[derive(Debug)]
pub(super) struct Service {
    pub upstream: Option<Arc<Upstream>>,
    pub plugins: Vec<RoutePlugin>,
    /// `hosts`: routes without their own hosts take these.
    pub hosts: Vec<HostMatch>,
    pub enable_websocket: Option<bool>,
}

/// One `plugin_configs[]` item: its plugin entries.
#[derive(Debug)]
pub(super) struct PluginConfig {
    pub plugins: Vec<RoutePlugin>,
}

/// One service; `None` when it has errors.
pub(super) fn service(
    o: &Obj,
    id: &str,
    upstreams: &HashMap<String, Arc<Upstream>>,
    plugins: &[DeclaredPlugin],
    p: &mut Problems,
) -> Option<Service> {
    let before = p.len();
    o.only(
        &[
            "id",
            "name",
            "desc",
            "labels",
            "plugins",
            "upstream",
            "upstream_id",
            "hosts",
            "enable_websocket",
            "script",
        ],
        p,
    );
    if o.has("script") {
        p.at(&o.path_of("script"), "not supported by tinygate (Lua)");
    }
    let _ = (o.str("name", p), o.str("desc", p), o.obj("labels", p));
    let upstream = own_upstream(o, format!("service {id}"), upstreams, p);
    let hosts = o
        .strings("hosts", p)
        .map(|list| list.iter().filter_map(|h| host_match(h, o, p)).collect())
        .unwrap_or_default();
    let enable_websocket = o.bool("enable_websocket", p);
    let plugins = o
        .obj("plugins", p)
        .map(|list| route_plugins(&list, plugins, p))
        .unwrap_or_default();
    (p.len() == before).then_some(Service {
        upstream,
        plugins,
        hosts,
        enable_websocket,
    })
}

/// A route's or service's own upstream, `owner` naming it in logs: the
/// one `upstream_id` names when there is one, else the inline `upstream`.
/// Both may be written: APISIX takes `upstream_id` then (its
/// `init.lua` looks the id up before it reads `upstream`), after
/// validating both, and so does tinygate, with a warning that the inline
/// one is not used.
pub(super) fn own_upstream(
    o: &Obj,
    owner: String,
    upstreams: &HashMap<String, Arc<Upstream>>,
    p: &mut Problems,
) -> Option<Arc<Upstream>> {
    let inline = o
        .value("upstream")
        .and_then(|v| Obj::new(v, o.path_of("upstream"), p))
        .and_then(|u| upstream(&u, owner, p))
        .map(Arc::new);
    if !o.has("upstream_id") {
        return inline;
    }
    let named = named_upstream(o, upstreams, p);
    if inline.is_some() && named.is_some() {
        log::warn!(
            "{}: {}: upstream_id is used, not the inline upstream beside it (as in APISIX)",
            p.file(),
            o.path
        );
    }
    named
}

/// The upstream named by `upstream_id` in `o`, or a problem.
pub(super) fn named_upstream(
    o: &Obj,
    upstreams: &HashMap<String, Arc<Upstream>>,
    p: &mut Problems,
) -> Option<Arc<Upstream>> {
    let want = o.id("upstream_id", p)?;
    match upstreams.get(&want) {
        Some(u) => Some(Arc::clone(u)),
        None => {
            p.at(&o.path_of("upstream_id"), format!("no upstream {want:?}"));
            None
        }
    }
}

/// One plugin config; `None` when it has errors.
pub(super) fn plugin_config(
    o: &Obj,
    plugins: &[DeclaredPlugin],
    p: &mut Problems,
) -> Option<PluginConfig> {
    let before = p.len();
    o.only(&["id", "name", "desc", "labels", "plugins"], p);
    let _ = (o.str("name", p), o.str("desc", p), o.obj("labels", p));
    let entries = required_plugins(o, plugins, p);
    (p.len() == before).then_some(PluginConfig { plugins: entries })
}

/// One global rule; `None` when it has errors.
pub(super) fn global_rule(
    o: &Obj,
    id: &str,
    plugins: &[DeclaredPlugin],
    p: &mut Problems,
) -> Option<GlobalRuleEntries> {
    let before = p.len();
    o.only(&["id", "plugins"], p);
    let entries = required_plugins(o, plugins, p);
    (p.len() == before).then(|| GlobalRuleEntries {
        path: o.path_of("plugins"),
        id: id.to_string(),
        plugins: entries,
    })
}

/// `plugins`, which plugin configs and global rules must have (it may be
/// empty, as in APISIX's schema).
fn required_plugins(o: &Obj, plugins: &[DeclaredPlugin], p: &mut Problems) -> Vec<RoutePlugin> {
    if !o.has("plugins") {
        p.at(&o.path, "missing key plugins");
        return Vec::new();
    }
    o.obj("plugins", p)
        .map(|list| route_plugins(&list, plugins, p))
        .unwrap_or_default()
}
