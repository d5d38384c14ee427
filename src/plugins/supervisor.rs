//! Instance supervision: one instance of each plugin per worker, started
//! on first use, discarded when a fault breaks it, and the failure record
//! of each root context that failed (`restarts.rs` says when it may run
//! again). Every call into an instance goes through [`Plugins::run`],
//! which charges a failure to the root context it happened in, counts and
//! logs it, and keeps the root contexts gauge.

use super::restarts::Health;
use super::{key, PluginKey, Plugins, RootKey, RootRef};
use crate::wasm::{CallTargets, Effect, Fault, FaultKind, Plugin, PluginVm};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker's instances, by plugin.
pub(super) struct Instances {
    /// The engine replica this worker's plugin instances run on.
    replica: usize,
    pub(super) slots: RefCell<HashMap<PluginKey, VmSlot>>,
    /// Counter of instance generations.
    next_generation: Cell<u64>,
}

/// One plugin on this worker: its instance and the failure records of its
/// root contexts.
pub(super) struct VmSlot {
    pub(super) plugin: Arc<Plugin>,
    pub(super) vm: Option<PluginVm>,
    pub(super) generation: u64,
    /// The route whose failure ended the last instance (or its start): the
    /// next instance to start is a restart that route caused.
    replaces: Option<Box<str>>,
    /// Root contexts that failed lately, by key (settled ones are dropped).
    pub(super) health: HashMap<RootKey, Health>,
    /// Root contexts in the instance, as last counted in the gauge.
    pub(super) roots: usize,
    /// The call targets the instance checks `proxy_http_call`s against
    /// (those of the configuration it last ran a call for).
    targets: Option<CallTargets>,
}

impl VmSlot {
    /// How much longer root context `key` backs off, and its failures in
    /// a row; `None` when it may run.
    fn backing_off(&self, key: RootKey, now: Instant) -> Option<(Duration, u32)> {
        let health = self.health.get(&key)?;
        Some((health.backing_off(now)?, health.failures()))
    }
}

/// Whose configuration a failure in a call is blamed on.
#[derive(Clone, Copy)]
pub(super) enum Blame<'a> {
    /// A route's plugin entry, named by the caller.
    Entry(RootRef<'a>),
    /// The root context of this context id (a root or an HTTP context).
    Context(u32),
}

/// What a failure charged to a root context did.
#[derive(Clone, Copy)]
enum Charge {
    /// A fault of this kind broke the instance, which was discarded.
    Discarded(FaultKind),
    /// A fault of this kind kept an instance from starting.
    Start(FaultKind),
    /// The plugin rejected its configuration (the instance is fine).
    Rejected,
}

impl Instances {
    pub(super) fn new(replica: usize) -> Instances {
        Instances {
            replica,
            slots: RefCell::new(HashMap::new()),
            next_generation: Cell::new(1),
        }
    }
}

impl Plugins {
    /// The generation of `plugin`'s live instance, started if there is
    /// none, for a call of root context `root`.
    ///
    /// # Errors
    /// A [`FaultKind::Backoff`] fault while `root` backs off; a failed
    /// start (charged to `root`).
    pub(super) fn enter(&self, plugin: &Arc<Plugin>, root: RootRef<'_>) -> Result<u64, Fault> {
        let k = key(plugin);
        let mut vms = self.instances.slots.borrow_mut();
        let slot = vms.entry(k).or_insert_with(|| VmSlot {
            plugin: Arc::clone(plugin),
            vm: None,
            generation: 0,
            replaces: None,
            health: HashMap::new(),
            roots: 0,
            targets: None,
        });
        if let Some((wait, failures)) = slot.backing_off(root.key, Instant::now()) {
            self.count(|s| s.vm_backoff_refused(plugin.name(), root.route));
            return Err(Fault {
                plugin: plugin.name().to_string(),
                hook: "proxy_on_context_create",
                kind: FaultKind::Backoff,
                reason: format!(
                    "not run: the route's root context backs off after {failures} \
                     failure(s) in a row; next attempt in {} ms",
                    wait.as_millis().max(1)
                ),
            });
        }
        if slot.vm.is_none() {
            if let Err(fault) = self.start_instance(k, slot) {
                slot.replaces = Some(root.route.into());
                let charge = Charge::Start(fault.kind);
                self.charge(slot, root.key, Some(root.route), charge);
                return Err(fault);
            }
        }
        Ok(slot.generation)
    }

    /// Runs `f` on instance `generation` of `plugin`; a fault that breaks
    /// the instance discards it and is charged, with a rejected
    /// configuration, to the root context `blame` names.
    pub(super) fn run<T>(
        &self,
        plugin: &Arc<Plugin>,
        generation: u64,
        blame: Blame<'_>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, Vec<Effect>), Fault> {
        let k = key(plugin);
        let mut vms = self.instances.slots.borrow_mut();
        let Some(slot) = vms
            .get_mut(&k)
            .filter(|s| s.generation == generation && s.vm.is_some())
        else {
            return Err(context_gone(plugin));
        };
        let vm = slot.vm.as_mut().expect("checked to be running");
        let (root_key, route, gateway) = match blame {
            Blame::Entry(root) => (Some(root.key), Some(root.route), Some(root.gateway)),
            Blame::Context(ctx) => (vm.root_key_of(ctx), None, None),
        };
        if let Some(targets) = self.configs.targets_unless(slot.targets.as_ref(), gateway) {
            vm.set_call_targets(Arc::clone(&targets));
            slot.targets = Some(targets);
        }
        let result = f(vm);
        let effects = vm.take_effects();
        let shortest_tick = vm.tick_periods().iter().map(|&(_, period)| period).min();
        let roots = vm.root_count();
        if vm.is_broken() {
            let route = route.map_or_else(|| self.route_of(root_key), str::to_owned);
            self.discard(k, slot, &route);
            self.count_roots(slot, 0);
            if let Some(root_key) = root_key {
                let kind = result.as_ref().err().map_or(FaultKind::Trap, |f| f.kind);
                self.charge(slot, root_key, Some(&route), Charge::Discarded(kind));
            }
        } else {
            if let (Some(route), true) = (route, roots > slot.roots) {
                log::info!(
                    "plugin {:?} on route {route:?}: root context configured",
                    plugin.name()
                );
            }
            self.count_roots(slot, roots);
            if let (Err(fault), Some(root_key)) = (&result, root_key) {
                if fault.kind == FaultKind::Rejected {
                    self.charge(slot, root_key, route, Charge::Rejected);
                }
            }
        }
        drop(vms);
        if let Some(shortest) = shortest_tick {
            self.ensure_ticker(plugin, shortest);
        }
        result.map(|t| (t, effects))
    }

    /// Starts an instance of `slot`'s plugin, wired to this worker.
    fn start_instance(&self, k: PluginKey, slot: &mut VmSlot) -> Result<(), Fault> {
        let mut vm = PluginVm::start_on(Arc::clone(&slot.plugin), self.instances.replica)?;
        let generation = self.instances.next_generation.get();
        self.instances.next_generation.set(generation + 1);
        let tx = self.ticks.queue_ready.clone();
        vm.set_queue_notifier(Arc::new(move |root, queue| {
            let _ = tx.try_send((k, generation, root, queue));
        }));
        slot.vm = Some(vm);
        slot.generation = generation;
        slot.targets = None;
        if let Some(route) = slot.replaces.take() {
            self.count(|s| s.vm_restarted(slot.plugin.name(), &route));
            log::info!(
                "plugin {:?}: fresh instance started (the last one ended with a failure on \
                 route {route:?})",
                slot.plugin.name()
            );
        }
        Ok(())
    }

    /// Drops the instance of `slot` after a failure on `route`: paused
    /// requests that had a context in it are woken to fail, and contexts
    /// waiting for `proxy_done` in it are forgotten.
    fn discard(&self, k: PluginKey, slot: &mut VmSlot, route: &str) {
        slot.vm = None;
        slot.replaces = Some(route.into());
        self.streams.forget_instance(k, slot.generation);
    }

    /// Charges a failure to root context `root` (of route `route`, looked
    /// up when `None`): counts it, logs it, and sets its backoff.
    fn charge(&self, slot: &mut VmSlot, root: RootKey, route: Option<&str>, what: Charge) {
        let now = Instant::now();
        let health = slot.health.entry(root).or_insert_with(|| Health::new(now));
        let delay = health.failed(now);
        let failures = health.failures();
        let route = route.map_or_else(|| self.route_of(Some(root)), str::to_owned);
        let (kind, what) = match what {
            Charge::Discarded(kind) => (
                kind,
                "instance discarded after a failure (other routes get a fresh instance on \
                 their next request)",
            ),
            Charge::Start(kind) => (kind, "instance failed to start"),
            Charge::Rejected => (FaultKind::Rejected, "configuration rejected"),
        };
        self.count(|s| s.plugin_failed(slot.plugin.name(), &route, kind.name()));
        let next = if delay.is_zero() {
            "its next request tries again".to_string()
        } else {
            format!(
                "backing off: its requests fail at once for {} ms",
                delay.as_millis()
            )
        };
        log::warn!(
            "plugin {:?} on route {route:?}: {what} ({failures} in a row); {next}",
            slot.plugin.name()
        );
    }

    /// Sets the root contexts `slot`'s instance has to `now`, in the gauge.
    pub(super) fn count_roots(&self, slot: &mut VmSlot, now: usize) {
        if slot.roots != now {
            let (was, name) = (slot.roots, slot.plugin.name());
            self.count(|s| s.root_contexts_changed(name, was, now));
            slot.roots = now;
        }
    }

    /// The id of the route whose plugin entry is root context `root`, in
    /// the gateways in use (for logs and metrics of calls made outside a
    /// request).
    pub(super) fn route_of(&self, root: Option<RootKey>) -> String {
        let found = root.and_then(|root| {
            self.configs
                .in_use()
                .iter()
                .find_map(|g| g.route_of(root).map(str::to_owned))
        });
        found.unwrap_or_else(|| "(none)".to_string())
    }
}

/// The fault of a request whose context went with a discarded instance.
#[cold]
fn context_gone(plugin: &Plugin) -> Fault {
    Fault {
        plugin: plugin.name().to_string(),
        hook: "proxy_on_context_create",
        kind: FaultKind::ContextGone,
        reason: "its instance was discarded after another request's failure".to_string(),
    }
}
