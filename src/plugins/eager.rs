//! Root contexts started when a worker takes up a configuration, before
//! any request needs them, as Envoy starts them when it loads its
//! configuration: each worker starts its instance of the plugin and
//! creates and configures the root context of each of its plugin entries
//! (`proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`)
//! at start and after each reload (only the entries that are new: the
//! others keep their root contexts). Only for plugins whose start does
//! what others can see ([`Plugin::starts_on_load`]: a tick period, shared
//! data or queues, an HTTP call), which the configuration check finds
//! before the workers start; the others start on first use, which no
//! plugin can tell apart, and an idle worker holds no instance of them.
//!
//! Plugins are written for that order. A plugin that sets a tick period in
//! `proxy_on_configure` ticks from the start, with no traffic (the Go
//! SDK's `helloworld` and `dispatch_call_on_tick`); one that registers a
//! shared queue there can be resolved by others at once (`shared_queue`);
//! one that initialises shared data in `proxy_on_vm_start` does it on
//! every worker before the first request, not when a worker's first
//! request comes and resets what other workers counted meanwhile
//! (`shared_data`). APISIX configures on a route's first request in each
//! nginx worker; a plugin cannot tell the two apart by anything but time,
//! so Envoy's order serves plugins of both.
//!
//! A worker with no traffic learns of a reload through [`Live::watch`].
//! Failures are charged to the entry as a request's would be (a route
//! whose plugin cannot start backs off, as after a failed request) and
//! logged; a worker's requests later try again as usual. Under
//! `tinygate test` nothing starts early: each case configures on its
//! first request, as it always has.
//!
//! [`Live::watch`]: crate::live::Live::watch
//! [`Plugin::starts_on_load`]: crate::wasm::Plugin::starts_on_load

use super::{Plugins, RootRef};
use crate::wasm::FaultKind;
use smol::channel::Receiver;

/// Where a global rule's entry is named in logs and metrics.
const GLOBAL_RULE: &str = "(a global rule)";

impl Plugins {
    /// Starts the root contexts of each configuration that replaces the
    /// one served, as `changes` says.
    pub(super) async fn start_roots_of_each_configuration(&self, changes: Receiver<()>) {
        while changes.recv().await.is_ok() && !self.ticks.stopped.get() {
            self.refresh();
            self.start_roots();
        }
    }

    /// Creates and configures, in this worker's instances, the root context
    /// of every plugin entry of the current configuration that has none.
    pub(super) fn start_roots(&self) {
        let gateway = self.configs.current();
        let entries = gateway.plugin_entries();
        for (route, plugin, rp) in entries.filter(|(_, plugin, _)| plugin.starts_on_load()) {
            let root = RootRef {
                key: rp.key,
                route: route.unwrap_or(GLOBAL_RULE),
                gateway: &gateway,
            };
            match self.start_context(plugin, root, |vm| vm.configure(rp.key, &rp.conf)) {
                Ok((_, generation, effects)) => {
                    self.dispatch(plugin, generation, &gateway, effects);
                }
                // Refused without running: its failures were logged.
                Err(fault) if fault.kind == FaultKind::Backoff => {}
                Err(fault) => log::warn!(
                    "route {:?}: {fault} (starting its root context at configuration load)",
                    root.route
                ),
            }
        }
    }
}
