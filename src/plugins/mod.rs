//! The plugin layer of a worker: everything between the proxy-wasm host
//! (`wasm/`) and the request path (`proxy/`). [`Plugins`] is one worker
//! thread's plugin host: its instances and their supervision
//! (`supervisor.rs`, with `restarts.rs`), the configurations it serves and
//! what a reload retires (`configs.rs`), what plugins ask for outside a
//! request and paused requests (`effects.rs`), ticks and queue
//! notifications (`ticks.rs`), root contexts started when a
//! configuration is taken up (`eager.rs`). A request runs its route's plugins through
//! a [`chain::Chain`]; `proxy_http_call`s are performed by `calls.rs`.
//! What `tinygate test` does that serving never does is chosen when the
//! host is made ([`Mode`]) and reached through [`Plugins::bench`].
//!
//! Shared-nothing: nothing here is touched by another thread, so the
//! request path takes no contended lock. The process-wide `Live` is read
//! through one atomic generation number; its mutex is taken only when that
//! changed, once per reload per worker (`configs.rs`). The counters' mutex
//! is this worker's (a scrape is the only other taker). It knows plugins,
//! configurations and the exchange, not client connections (`proxy/`) or
//! threads (`serve/`), and imports neither (nor `worker.rs`).
//!
//! Plugin failures are blamed on the route's configuration, not on the
//! plugin: every call into an instance runs for one root context (a route's
//! plugin entry, `RoutePlugin::key`), and a failure is charged to that root
//! context. An instance that traps, runs out of fuel or memory, or exits is
//! discarded at once (its memory can no longer be trusted) and the next
//! request of any route gets a fresh instance of the compiled module.
//! Requests that still held a context in the discarded instance fail as
//! their plugin's failure policy says (see `chain.rs`) and are counted as
//! collateral failures of their own route. Only the root context whose own
//! requests keep failing backs off (see `restarts.rs`): while it does, its
//! requests get the failure policy at once, without running the plugin.
//! Failed instance starts and rejected configurations (`false` from
//! `proxy_on_vm_start` or `proxy_on_configure`) are charged the same way,
//! to the root context that asked for them.
//!
//! When the configuration is reloaded, instances of unchanged plugins are
//! kept, and so are the root contexts of unchanged plugin entries (their
//! keys carry over). Once no request uses the old configuration any more,
//! instances of plugins it alone had are dropped, and root contexts of
//! entries it alone had are retired (deleted after their last request),
//! which stops their ticks and queue notifications. A request's
//! `proxy_http_call`s are checked (by its instance) against the
//! configuration the request was routed with and resolved with it
//! (`calls.rs`), even when a reload replaced it while the request was
//! paused; calls from root contexts use the worker's current one.

mod bench;
mod calls;
pub mod chain;
mod configs;
mod eager;
mod effects;
mod restarts;
mod supervisor;
mod ticks;

use crate::gateway::Gateway;
use crate::live::Live;
use crate::ops::metrics::Stats;
use crate::wasm::{CallResponse, Effect, Fault, HttpCall, Plugin, PluginVm};
pub use bench::Bench;
use configs::Configs;
use effects::Streams;
use smol::LocalExecutor;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use supervisor::{Blame, Instances};
use ticks::Ticks;

/// Identifies a plugin while any gateway holds it: its address.
type PluginKey = usize;

/// Identifies a root context inside a plugin's instances: a route's plugin
/// entry (`RoutePlugin::key`).
type RootKey = u64;

/// The key of `plugin`.
fn key(plugin: &Arc<Plugin>) -> PluginKey {
    Arc::as_ptr(plugin) as usize
}

/// The root context a call serves: a route's plugin entry, in the
/// configuration its request was routed with. Its failures are charged to
/// it.
#[derive(Clone, Copy)]
struct RootRef<'a> {
    /// `RoutePlugin::key`: names the root context inside the instance.
    key: RootKey,
    /// The route's id, for logs and metrics.
    route: &'a str,
    /// The configuration the request was routed with: the call's
    /// `proxy_http_call` targets are checked against it and resolved with
    /// it.
    gateway: &'a Gateway,
}

/// Scripted answers to `proxy_http_call`s (`None`: the call fails), for a
/// worker that runs under `tinygate test`.
pub type CallAnswers = Rc<dyn Fn(&HttpCall) -> Option<CallResponse>>;

/// How a worker's plugins meet the world, chosen at construction.
pub enum Mode {
    /// Serving: calls go to the network, ticks run on timers.
    Serving,
    /// Under `tinygate test`: calls are answered by the script, and time
    /// only moves when the test bench says so ([`Plugins::bench`]).
    Scripted(CallAnswers),
}

/// One worker thread's plugin host (see the module doc).
pub struct Plugins {
    me: Weak<Plugins>,
    executor: Rc<LocalExecutor<'static>>,
    /// The configurations this worker serves: current and retired.
    configs: Configs,
    /// Its instance of each plugin, and their failure records.
    instances: Instances,
    /// Paused requests and contexts waiting for `proxy_done`.
    streams: Streams,
    /// Tick tasks and queue notifications.
    ticks: Ticks,
    /// This worker's counters for the status listener.
    stats: Arc<Mutex<Stats>>,
    mode: Mode,
}

impl Plugins {
    /// The plugin host of a worker whose instances run on engine replica
    /// `replica`, whose tasks run on `executor`, and which counts into
    /// `stats`.
    pub fn new(
        live: Arc<Live>,
        executor: Rc<LocalExecutor<'static>>,
        replica: usize,
        stats: Arc<Mutex<Stats>>,
        mode: Mode,
    ) -> Rc<Plugins> {
        let (ticks, queue_rx) = Ticks::new();
        let changes = matches!(mode, Mode::Serving).then(|| live.watch());
        let plugins = Rc::new_cyclic(|me| Plugins {
            me: me.clone(),
            executor,
            configs: Configs::new(live),
            instances: Instances::new(replica),
            streams: Streams::default(),
            ticks,
            stats,
            mode,
        });
        let p = Rc::clone(&plugins);
        plugins
            .executor
            .spawn(async move { p.deliver_queue_notifications(queue_rx).await })
            .detach();
        if let Some(changes) = changes {
            // Before the worker takes its first connection.
            plugins.start_roots();
            let p = Rc::clone(&plugins);
            plugins
                .executor
                .spawn(async move { p.start_roots_of_each_configuration(changes).await })
                .detach();
        }
        plugins
    }

    /// The configuration to serve the next request with (see
    /// `configs.rs`: taking up a new one retires what the old held).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.refresh();
        self.configs.current()
    }

    /// Runs `f` for root context `root` of `plugin` on this worker's
    /// instance, starting the instance if there is none (the first request
    /// of a route, or the first after a failure discarded the last one).
    /// Returns `f`'s value, the instance's generation (which names the
    /// contexts `f` made in it) and what the plugin asked for.
    ///
    /// # Errors
    /// A `FaultKind::Backoff` fault without running anything while `root`
    /// backs off after repeated failures; a failed start; or `f`'s fault.
    /// Failed starts, faults that break the instance and rejected
    /// configurations are charged to `root`.
    fn start_context<T>(
        &self,
        plugin: &Arc<Plugin>,
        root: RootRef<'_>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, u64, Vec<Effect>), Fault> {
        let generation = self.enter(plugin, root)?;
        self.run(plugin, generation, Blame::Entry(root), f)
            .map(|(t, effects)| (t, generation, effects))
    }

    /// Runs `f` on instance `generation` of `plugin`, where the caller's
    /// context lives, for root context `root`.
    ///
    /// # Errors
    /// A `FaultKind::ContextGone` fault when that instance was discarded
    /// (another request's failure broke it); or `f`'s fault, charged to
    /// `root` if it broke the instance.
    fn with_context<T>(
        &self,
        plugin: &Arc<Plugin>,
        generation: u64,
        root: RootRef<'_>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, Vec<Effect>), Fault> {
        self.run(plugin, generation, Blame::Entry(root), f)
    }

    /// A request of root context `root` finished every hook of `plugin`
    /// without a fault: its run of failures ends.
    fn completed(&self, plugin: &Arc<Plugin>, root: RootKey) {
        let mut vms = self.instances.slots.borrow_mut();
        let Some(slot) = vms.get_mut(&key(plugin)) else {
            return;
        };
        if slot.health.is_empty() {
            return;
        }
        if let Some(health) = slot.health.get_mut(&root) {
            health.succeeded();
            if health.is_settled(Instant::now()) {
                slot.health.remove(&root);
            }
        }
    }

    /// True while instance `generation` of `plugin` is this worker's live
    /// one (contexts in any other are gone).
    fn is_live(&self, plugin: &Arc<Plugin>, generation: u64) -> bool {
        self.instances
            .slots
            .borrow()
            .get(&key(plugin))
            .is_some_and(|slot| slot.generation == generation && slot.vm.is_some())
    }

    /// Counts a request of `route` that skipped `plugin` after it failed
    /// (`fail_open`).
    fn failed_open(&self, plugin: &Arc<Plugin>, route: &str) {
        self.count(|s| s.failed_open(plugin.name(), route));
    }

    /// Counts a request of `route` that failed because another request's
    /// failure discarded the instance holding its context of `plugin`.
    fn failed_collaterally(&self, plugin: &Arc<Plugin>, route: &str) {
        self.count(|s| s.collateral_failure(plugin.name(), route));
    }

    /// Updates this worker's counters.
    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The process is draining: tick tasks end.
    pub fn stop(&self) {
        self.ticks.stopped.set(true);
    }

    /// The test bench's controls, for a [`Mode::Scripted`] host.
    pub fn bench(&self) -> Option<Bench<'_>> {
        matches!(self.mode, Mode::Scripted(_)).then(|| Bench::new(self))
    }
}
