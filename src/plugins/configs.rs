//! The configurations a worker serves: the gateway it fetched last from
//! [`Live`] (one atomic load per request says whether there is a newer
//! one) and the gateways it replaced while requests may still use them.
//! Once no request uses a replaced gateway, what only it had is collected:
//! instances of plugins it alone had, failure records and root contexts of
//! plugin entries it alone had (a root context is retired, and deleted
//! after its last request: see `PluginVm::retire_root`).
//!
//! Each gateway in use comes with the `proxy_http_call` targets it knows
//! (its upstream ids, read through a weak reference: checking a target
//! never keeps a configuration alive and takes no lock). An instance
//! checks a request's calls against the configuration that request was
//! routed with, the one `calls.rs` then resolves them with.

use super::supervisor::Blame;
use super::{key, PluginKey, Plugins, RootKey};
use crate::gateway::Gateway;
use crate::live::Live;
use crate::wasm::CallTargets;
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

/// The gateways of one worker.
pub(super) struct Configs {
    live: Arc<Live>,
    /// The gateway this worker last fetched, and its generation.
    current: RefCell<(u64, Served)>,
    /// Gateways replaced while requests may still be using them.
    retired: RefCell<Vec<Served>>,
}

/// A gateway in use, and the call targets it knows.
#[derive(Clone)]
struct Served {
    gateway: Arc<Gateway>,
    targets: CallTargets,
}

/// What [`Configs::take_up`] found.
enum Change {
    None,
    /// A new gateway is current; the old one is retired.
    New,
    /// A retired gateway is no longer used by any request.
    Unused,
}

impl Configs {
    pub(super) fn new(live: Arc<Live>) -> Configs {
        let current = (live.generation(), Served::new(live.current()));
        Configs {
            live,
            current: RefCell::new(current),
            retired: RefCell::new(Vec::new()),
        }
    }

    /// The gateway to serve the next request with.
    pub(super) fn current(&self) -> Arc<Gateway> {
        Arc::clone(&self.current.borrow().1.gateway)
    }

    /// The current gateway and those retired that requests still use.
    pub(super) fn in_use(&self) -> Vec<Arc<Gateway>> {
        let retired = self.retired.borrow();
        let retired = retired.iter().map(|s| Arc::clone(&s.gateway));
        std::iter::once(self.current()).chain(retired).collect()
    }

    /// The call targets of `gateway` (the current one when `None`, or when
    /// no request uses `gateway` any more), unless they are `set` already.
    pub(super) fn targets_unless(
        &self,
        set: Option<&CallTargets>,
        gateway: Option<&Gateway>,
    ) -> Option<CallTargets> {
        let is = |s: &Served| gateway.is_none_or(|g| std::ptr::eq(&*s.gateway, g));
        let current = self.current.borrow();
        let retired = self.retired.borrow();
        let served = std::iter::once(&current.1)
            .chain(retired.iter())
            .find(|s| is(s))
            .unwrap_or(&current.1);
        match set {
            Some(set) if Arc::ptr_eq(set, &served.targets) => None,
            _ => Some(Arc::clone(&served.targets)),
        }
    }

    /// Takes up `live`'s gateway if it is newer than the current one.
    fn take_up(&self) -> Change {
        let generation = self.live.generation();
        if self.current.borrow().0 != generation {
            let fresh = (generation, Served::new(self.live.current()));
            let old = std::mem::replace(&mut *self.current.borrow_mut(), fresh);
            self.retired.borrow_mut().push(old.1);
            return Change::New;
        }
        let retired = self.retired.borrow();
        if retired.iter().any(|s| Arc::strong_count(&s.gateway) == 1) {
            return Change::Unused;
        }
        Change::None
    }

    /// Forgets the retired gateways no request uses; returns them.
    fn drop_unused(&self) -> Vec<Arc<Gateway>> {
        let mut retired = self.retired.borrow_mut();
        let (kept, dropped) = std::mem::take(&mut *retired)
            .into_iter()
            .partition(|s| Arc::strong_count(&s.gateway) > 1);
        *retired = kept;
        dropped.into_iter().map(|s| s.gateway).collect()
    }
}

impl Served {
    fn new(gateway: Arc<Gateway>) -> Served {
        let known = Arc::downgrade(&gateway);
        let targets: CallTargets = Arc::new(move |name: &str| {
            known
                .upgrade()
                .is_some_and(|g| g.config.routes.upstreams.iter().any(|u| u.id == name))
        });
        Served { gateway, targets }
    }
}

impl Plugins {
    /// Takes up a new configuration if `live` has one (one atomic load
    /// when not), and collects what the gateways no request uses any more
    /// held: instances of plugins and root contexts of plugin entries that
    /// left the configuration.
    pub(super) fn refresh(&self) {
        match self.configs.take_up() {
            Change::None => {}
            Change::New | Change::Unused => self.collect(),
        }
    }

    /// Drops retired gateways no request uses, then what only they held:
    /// instances of plugins no gateway in use has, the failure records and
    /// root contexts of plugin entries none has (a root context is deleted
    /// once its last request ends: see [`PluginVm::retire_root`]).
    ///
    /// [`PluginVm::retire_root`]: crate::wasm::PluginVm::retire_root
    fn collect(&self) {
        let dropped = self.configs.drop_unused();
        let in_use = self.configs.in_use();
        let plugins: HashSet<PluginKey> = in_use
            .iter()
            .flat_map(|g| g.plugins.iter().map(key))
            .collect();
        // Looked up in each gateway's index, root by root: a set of every
        // entry of 10,000 routes made each reload cost every worker ~10 ms.
        let in_use_entry = |k: PluginKey, root: RootKey| {
            in_use
                .iter()
                .any(|g| g.entry_plugin(root).is_some_and(|p| key(p) == k))
        };
        let mut to_retire = Vec::new();
        self.instances.slots.borrow_mut().retain(|&k, slot| {
            if !plugins.contains(&k) {
                self.count_roots(slot, 0);
                return false;
            }
            slot.health.retain(|&root, _| in_use_entry(k, root));
            if let Some(vm) = &slot.vm {
                for root in vm.roots_to_retire(|root| in_use_entry(k, root)) {
                    let route = vm
                        .root_key_of(root)
                        .and_then(|rk| dropped.iter().find_map(|g| g.route_of(rk)))
                        .map_or_else(|| "(a global rule)".to_string(), str::to_owned);
                    to_retire.push((Arc::clone(&slot.plugin), slot.generation, root, route));
                }
            }
            true
        });
        for (plugin, generation, root, route) in to_retire {
            log::info!(
                "plugin {:?} on route {route:?}: root context retired (its plugin entry \
                 left the configuration); deleted once its last request ends",
                plugin.name()
            );
            let retired = self.run(&plugin, generation, Blame::Context(root), |vm| {
                vm.retire_root(root)
            });
            self.settle_root_call(&plugin, generation, retired);
        }
    }
}
