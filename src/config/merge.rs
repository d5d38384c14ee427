//! APISIX's precedence rules for plugin confs that come from several
//! places: a route's own `plugins`, its plugin config (`plugin_config_id`),
//! its service (`service_id`), and the global rules. It knows plugin entry
//! lists only, not where they were written.
//!
//! - Route over plugin config: a plugin both name runs with the route's
//!   conf (APISIX `plugin_config.merge` only adds what the route lacks).
//! - Route (with its plugin config) over service: the route's conf wins
//!   (APISIX `merge_service_route` copies the service, then the route's
//!   plugins over it).
//! - Global rules: all their plugins form one list; a plugin named in two
//!   global rules runs in neither (APISIX `merge_global_rules` logs an
//!   error and removes it).

use super::plugin_entries::copy_with_own_context;
use super::tree::Problems;
use super::{DeclaredPlugin, RoutePlugin};

/// A route's plugins after its plugin config and service are merged in,
/// sorted by descending priority (ties: route's, then plugin config's,
/// then service's, each in file order). Inherited entries get their own
/// root context per route.
pub(super) fn route_with_inherited(
    own: Vec<RoutePlugin>,
    plugin_config: &[RoutePlugin],
    service: &[RoutePlugin],
    plugins: &[DeclaredPlugin],
) -> Vec<RoutePlugin> {
    let mut out = own;
    for inherited in [plugin_config, service] {
        for rp in inherited {
            if !out.iter().any(|have| have.plugin == rp.plugin) {
                out.push(copy_with_own_context(rp));
            }
        }
    }
    crate::order::sort_by_cached_key(&mut out, |rp| {
        std::cmp::Reverse(plugins[rp.plugin].priority)
    });
    out
}

/// One global rule's plugins, with where they were written.
pub(super) struct GlobalRuleEntries {
    /// `global_rules[i].plugins`, for messages.
    pub path: String,
    pub id: String,
    pub plugins: Vec<RoutePlugin>,
}

/// The global rules' plugins as one list, sorted by descending priority
/// (ties keep file order). A plugin in two rules is a problem (at its
/// second place) and is left out of the list, as APISIX leaves it out.
pub(super) fn global_plugins(
    rules: Vec<GlobalRuleEntries>,
    plugins: &[DeclaredPlugin],
    p: &mut Problems,
) -> Vec<RoutePlugin> {
    let mut out: Vec<RoutePlugin> = Vec::new();
    let mut first_rule: Vec<(usize, String)> = Vec::new();
    let mut repeated: Vec<usize> = Vec::new();
    for rule in rules {
        for rp in rule.plugins {
            match first_rule.iter().find(|(plugin, _)| *plugin == rp.plugin) {
                Some((_, other)) => {
                    p.at(
                        &format!("{}.{}", rule.path, rp.name),
                        format!(
                            "plugin {:?} is also in global rule {other:?}: \
                             a plugin may be in one global rule only (APISIX runs it in neither)",
                            rp.name
                        ),
                    );
                    repeated.push(rp.plugin);
                }
                None => {
                    first_rule.push((rp.plugin, rule.id.clone()));
                    out.push(rp);
                }
            }
        }
    }
    out.retain(|rp| !repeated.contains(&rp.plugin));
    crate::order::sort_by_cached_key(&mut out, |rp| {
        std::cmp::Reverse(plugins[rp.plugin].priority)
    });
    out
}
