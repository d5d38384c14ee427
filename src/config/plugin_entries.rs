//! A route's `plugins` mapping: each entry names a wasm plugin declared in
//! `config.yaml` and carries its `conf`. It must not know about routes'
//! match keys or upstreams.

use super::main_file::json_bytes;
use super::tree::{Obj, Problems};
use super::{DeclaredPlugin, RoutePlugin};
use crate::yaml::kind;
use serde_yaml::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// Source of fresh [`RoutePlugin::key`]s: unique for the life of the
/// process, so a new entry never meets another's root context (`Gateway`
/// hands an unchanged entry its old key).
static NEXT_PLUGIN_KEY: AtomicU64 = AtomicU64::new(1);

/// The same plugin and conf under a new key: its own root context, as
/// APISIX gives one per route to a conf the route inherits from a service
/// or a plugin config.
pub(super) fn copy_with_own_context(rp: &RoutePlugin) -> RoutePlugin {
    RoutePlugin {
        plugin: rp.plugin,
        name: rp.name.clone(),
        conf: rp.conf.clone(),
        policy: rp.policy,
        key: NEXT_PLUGIN_KEY.fetch_add(1, Ordering::Relaxed),
    }
}

/// The entries of a `plugins` mapping (of a route, service, plugin config
/// or global rule), sorted by descending plugin priority.
pub(super) fn route_plugins(
    list: &Obj,
    plugins: &[DeclaredPlugin],
    p: &mut Problems,
) -> Vec<RoutePlugin> {
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
            policy: plugins[index].failure_policy,
            key: NEXT_PLUGIN_KEY.fetch_add(1, Ordering::Relaxed),
        });
    }
    // APISIX runs higher priorities first; ties keep file order.
    crate::order::sort_by_cached_key(&mut out, |rp| {
        std::cmp::Reverse(plugins[rp.plugin].priority)
    });
    out
}
