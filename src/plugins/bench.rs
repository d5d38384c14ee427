//! What `tinygate test` does with a worker's plugins that serving never
//! does: move time on, give up on requests nothing can resume, and create
//! a route's root contexts before its first request. Reached only through
//! [`Plugins::bench`], which a host made in [`Mode::Scripted`] has: the
//! production host has no such controls.
//!
//! [`Mode::Scripted`]: super::Mode::Scripted

use super::supervisor::Blame;
use super::{Plugins, RootRef};
use crate::config::Route;
use crate::gateway::Gateway;
use crate::wasm::Plugin;
use std::sync::Arc;

/// The test bench's controls over a scripted plugin host.
pub struct Bench<'a> {
    plugins: &'a Plugins,
}

impl<'a> Bench<'a> {
    pub(super) fn new(plugins: &'a Plugins) -> Bench<'a> {
        Bench { plugins }
    }

    /// Calls `proxy_on_tick` once, now, for every root context of `plugin`
    /// that has a tick period (the test runner's "advance time"); returns
    /// how many ran.
    pub fn tick(&self, plugin: &Arc<Plugin>) -> usize {
        let plugins = self.plugins;
        let Some((generation, periods)) = plugins.tick_periods(plugin) else {
            return 0;
        };
        let mut ran = 0;
        for (root, _) in periods {
            let ticked = plugins.run(plugin, generation, Blame::Context(root), |vm| {
                vm.on_tick(root)
            });
            if !plugins.settle_root_call(plugin, generation, ticked) {
                break;
            }
            ran += 1;
        }
        ran
    }

    /// Ends every pause now, as if it had lasted `chain::PAUSE_TIMEOUT`:
    /// the paused requests fail as they would then (the test runner does
    /// not wait 30 s for a request nothing can resume).
    pub fn expire_pauses(&self) {
        self.plugins.streams.expire_pauses();
    }

    /// Creates the root contexts of `route` of `gateway`, as its first
    /// request would, so that ticks before that request reach them. A
    /// failure is charged as it would be then, and left for the request to
    /// meet.
    pub fn configure(&self, gateway: &Gateway, route: &Route) {
        let plugins = self.plugins;
        for rp in &route.plugins {
            let plugin = &gateway.plugins[rp.plugin];
            let root = RootRef {
                key: rp.key,
                route: &route.id,
                gateway,
            };
            let configured =
                plugins.start_context(plugin, root, |vm| vm.configure(rp.key, &rp.conf));
            if let Ok((_, generation, effects)) = configured {
                plugins.dispatch(plugin, generation, gateway, effects);
            }
        }
    }
}
