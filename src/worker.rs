//! What one worker thread owns: the gateway it serves, its plugin
//! instances, and the plugin work that is not tied to one request (ticks,
//! queue notifications, calls made from root contexts). Shared-nothing:
//! nothing here is touched by another thread, so the request path takes no
//! lock.
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
//! which stops their ticks and queue notifications. Instances check
//! `proxy_http_call` targets against this worker's gateway, the one
//! `calls.rs` resolves them with, through a weak reference: no lock.

use crate::gateway::Gateway;
use crate::live::Live;
use crate::net::{Flag, Timer};
use crate::ops::metrics::Stats;
use crate::plugins::calls;
use crate::plugins::chain::Event;
use crate::plugins::restarts::Health;
use crate::wasm::{
    CallResponse, CallTargets, Effect, Exchange, ExchangeData, Fault, FaultKind, HttpCall, Plugin,
    PluginVm,
};
use smol::channel::{Receiver, Sender};
use smol::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Access log bytes a worker gathers before writing them out.
const ACCESS_LOG_BUFFER: usize = 32 * 1024;

/// Shortest tick period honoured (`proxy_set_tick_period_milliseconds`).
const MIN_TICK: Duration = Duration::from_millis(10);

/// Identifies a plugin while any gateway holds it: its address.
pub type PluginKey = usize;

/// Identifies a root context inside a plugin's instances: a route's plugin
/// entry (`RoutePlugin::key`).
pub type RootKey = u64;

/// The key of `plugin`.
pub fn key(plugin: &Arc<Plugin>) -> PluginKey {
    Arc::as_ptr(plugin) as usize
}

/// The root context a call serves: a route's plugin entry. Its failures
/// are charged to it.
#[derive(Clone, Copy, Debug)]
pub struct RootRef<'a> {
    /// `RoutePlugin::key`: names the root context inside the instance.
    pub key: RootKey,
    /// The route's id, for logs and metrics.
    pub route: &'a str,
}

/// Scripted answers to `proxy_http_call`s (`None`: the call fails), for a
/// worker that runs under `tinygate test`.
pub type CallAnswers = Rc<dyn Fn(&HttpCall) -> Option<CallResponse>>;

/// Names a context of one instance: (plugin, instance generation, id).
type ContextKey = (PluginKey, u64, u32);

/// A `proxy_on_queue_ready` to deliver: (plugin, generation, root, queue).
type QueueReady = (PluginKey, u64, u32, u32);

/// One worker thread's state.
pub struct Worker {
    me: Weak<Worker>,
    live: Arc<Live>,
    executor: Rc<LocalExecutor<'static>>,
    /// The engine replica this worker's plugin instances run on.
    replica: usize,
    /// Set when the process starts draining (the `stop` channel closes);
    /// what connections wait on, so that no request touches the channel
    /// every worker shares.
    drain: Flag,
    /// The gateway this worker last fetched, and its generation.
    gateway: RefCell<(u64, Arc<Gateway>)>,
    /// Gateways replaced while requests may still be using them.
    retired: RefCell<Vec<Arc<Gateway>>>,
    /// This worker's instance of each plugin, started on first use.
    vms: RefCell<HashMap<PluginKey, VmSlot>>,
    /// Closed when the process starts draining.
    stop: Receiver<()>,
    /// Counter of instance generations.
    next_generation: Cell<u64>,
    /// Access log lines not yet written out.
    access_buf: crate::ops::access_log::Buffer,
    /// Requests paused by a plugin, by HTTP context: where to send what
    /// resumes or ends them.
    paused: RefCell<HashMap<ContextKey, Sender<Event>>>,
    /// Contexts whose `proxy_on_done` said "not yet": completed on
    /// `proxy_done`.
    pending_done: RefCell<HashSet<ContextKey>>,
    /// Plugins with a running tick task.
    tickers: RefCell<HashSet<PluginKey>>,
    /// `proxy_on_queue_ready` notifications, from any thread.
    queue_ready: Sender<QueueReady>,
    /// This worker's counters for the status listener.
    stats: Arc<Mutex<Stats>>,
    /// Under `tinygate test`: where calls are answered instead of the
    /// network; timed ticks are then off (see [`Worker::script_calls`]).
    scripted: RefCell<Option<CallAnswers>>,
}

/// One plugin on this worker: its instance and the failure records of its
/// root contexts.
struct VmSlot {
    plugin: Arc<Plugin>,
    vm: Option<PluginVm>,
    generation: u64,
    /// The route whose failure ended the last instance (or its start): the
    /// next instance to start is a restart that route caused.
    replaces: Option<Box<str>>,
    /// Root contexts that failed lately, by key (settled ones are dropped).
    health: HashMap<RootKey, Health>,
    /// Root contexts in the instance, as last counted in the gauge.
    roots: usize,
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
enum Blame<'a> {
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

impl Worker {
    /// A worker whose plugin instances run on engine replica `replica`.
    pub fn new(
        live: Arc<Live>,
        stop: Receiver<()>,
        executor: Rc<LocalExecutor<'static>>,
        replica: usize,
    ) -> Rc<Worker> {
        let gateway = (live.generation(), live.current());
        let (queue_ready, queue_rx) = smol::channel::unbounded();
        let worker = Rc::new_cyclic(|me| Worker {
            me: me.clone(),
            live,
            executor,
            replica,
            drain: Flag::default(),
            gateway: RefCell::new(gateway),
            retired: RefCell::new(Vec::new()),
            vms: RefCell::new(HashMap::new()),
            stop,
            next_generation: Cell::new(1),
            access_buf: crate::ops::access_log::Buffer::register(),
            paused: RefCell::new(HashMap::new()),
            pending_done: RefCell::new(HashSet::new()),
            tickers: RefCell::new(HashSet::new()),
            queue_ready,
            stats: crate::ops::metrics::register(),
            scripted: RefCell::new(None),
        });
        let w = Rc::clone(&worker);
        worker
            .executor
            .spawn(async move { w.deliver_queue_notifications(queue_rx).await })
            .detach();
        let w = Rc::clone(&worker);
        worker
            .executor
            .spawn(async move {
                let _ = w.stop.recv().await;
                w.drain.set();
            })
            .detach();
        worker
    }

    /// The configuration to serve the next request with.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.refresh();
        Arc::clone(&self.gateway.borrow().1)
    }

    /// Takes up a new configuration if `live` has one (one atomic load
    /// when not), and collects what the gateways no request uses any more
    /// held: instances of plugins and root contexts of plugin entries that
    /// left the configuration.
    fn refresh(&self) {
        let generation = self.live.generation();
        if self.gateway.borrow().0 != generation {
            let fresh = (generation, self.live.current());
            let old = std::mem::replace(&mut *self.gateway.borrow_mut(), fresh);
            self.retired.borrow_mut().push(old.1);
            self.point_call_targets();
        } else if !self
            .retired
            .borrow()
            .iter()
            .any(|g| Arc::strong_count(g) == 1)
        {
            return;
        }
        self.collect();
    }

    /// True once the process is draining: finish, don't take more.
    pub fn stopping(&self) -> bool {
        self.stop.is_closed()
    }

    /// Resolves when the process starts draining.
    pub async fn stopped(&self) {
        self.drain.wait().await;
    }

    /// Counts one finished request in the metrics and writes it to the
    /// access log, if that is on.
    pub fn record_request(&self, gateway: &Gateway, record: &crate::ops::access_log::Record) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(record);
        let main = &gateway.config.main;
        if main.access_log == crate::ops::access_log::Target::Off {
            return;
        }
        self.access_buf
            .append(record, main.access_log_format, ACCESS_LOG_BUFFER);
    }

    /// Writes out buffered access log lines.
    pub fn flush_access_log(&self) {
        self.access_buf.flush();
    }

    /// Drops retired gateways no request uses, then what only they held:
    /// instances of plugins no gateway in use has, the failure records and
    /// root contexts of plugin entries none has (a root context is deleted
    /// once its last request ends: see [`PluginVm::retire_root`]).
    fn collect(&self) {
        let dropped: Vec<Arc<Gateway>> = {
            let mut retired = self.retired.borrow_mut();
            let (kept, dropped) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|g| Arc::strong_count(g) > 1);
            *retired = kept;
            dropped
        };
        let current = Arc::clone(&self.gateway.borrow().1);
        let retired = self.retired.borrow().clone();
        let in_use: Vec<&Arc<Gateway>> = std::iter::once(&current).chain(&retired).collect();
        let plugins: HashSet<PluginKey> = in_use
            .iter()
            .flat_map(|g| g.plugins.iter().map(key))
            .collect();
        let entries: HashSet<(PluginKey, RootKey)> = in_use
            .iter()
            .flat_map(|g| g.plugin_entries().map(|(p, rp)| (key(p), rp.key)))
            .collect();
        let mut to_retire = Vec::new();
        self.vms.borrow_mut().retain(|&k, slot| {
            if !plugins.contains(&k) {
                self.count_roots(slot, 0);
                return false;
            }
            slot.health.retain(|&root, _| entries.contains(&(k, root)));
            if let Some(vm) = &slot.vm {
                for root in vm.roots_to_retire(|root| entries.contains(&(k, root))) {
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

    /// Makes every running instance check `proxy_http_call` targets
    /// against this worker's gateway, the one calls are resolved with.
    fn point_call_targets(&self) {
        for slot in self.vms.borrow_mut().values_mut() {
            if let Some(vm) = &mut slot.vm {
                vm.set_call_targets(self.call_targets());
            }
        }
    }

    /// The upstream ids `proxy_http_call` may name: those of this worker's
    /// gateway (without holding it, and without a lock).
    fn call_targets(&self) -> CallTargets {
        let gateway = Arc::downgrade(&self.gateway.borrow().1);
        Arc::new(move |name: &str| {
            gateway
                .upgrade()
                .is_some_and(|g| g.config.routes.upstreams.iter().any(|u| u.id == name))
        })
    }

    /// Sets the root contexts `slot`'s instance has to `now`, in the gauge.
    fn count_roots(&self, slot: &mut VmSlot, now: usize) {
        if slot.roots != now {
            let (was, name) = (slot.roots, slot.plugin.name());
            self.count(|s| s.root_contexts_changed(name, was, now));
            slot.roots = now;
        }
    }

    /// Runs `f` for root context `root` of `plugin` on this worker's
    /// instance, starting the instance if there is none (the first request
    /// of a route, or the first after a failure discarded the last one).
    /// Returns `f`'s value, the instance's generation (which names the
    /// contexts `f` made in it) and what the plugin asked for.
    ///
    /// # Errors
    /// A [`FaultKind::Backoff`] fault without running anything while `root`
    /// backs off after repeated failures; a failed start; or `f`'s fault.
    /// Failed starts, faults that break the instance and rejected
    /// configurations are charged to `root`.
    pub fn start_context<T>(
        &self,
        plugin: &Arc<Plugin>,
        root: RootRef<'_>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, u64, Vec<Effect>), Fault> {
        let k = key(plugin);
        let generation = {
            let mut vms = self.vms.borrow_mut();
            let slot = vms.entry(k).or_insert_with(|| VmSlot {
                plugin: Arc::clone(plugin),
                vm: None,
                generation: 0,
                replaces: None,
                health: HashMap::new(),
                roots: 0,
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
            slot.generation
        };
        self.run(plugin, generation, Blame::Entry(root), f)
            .map(|(t, effects)| (t, generation, effects))
    }

    /// Runs `f` on instance `generation` of `plugin`, where the caller's
    /// context lives, for root context `root`.
    ///
    /// # Errors
    /// A [`FaultKind::ContextGone`] fault when that instance was discarded
    /// (another request's failure broke it); or `f`'s fault, charged to
    /// `root` if it broke the instance.
    pub fn with_context<T>(
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
    pub fn completed(&self, plugin: &Arc<Plugin>, root: RootKey) {
        let mut vms = self.vms.borrow_mut();
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
    pub fn is_live(&self, plugin: &Arc<Plugin>, generation: u64) -> bool {
        self.vms
            .borrow()
            .get(&key(plugin))
            .is_some_and(|slot| slot.generation == generation && slot.vm.is_some())
    }

    /// Counts a request of `route` that skipped `plugin` after it failed
    /// (`fail_open`).
    pub fn failed_open(&self, plugin: &Arc<Plugin>, route: &str) {
        self.count(|s| s.failed_open(plugin.name(), route));
    }

    /// Counts a request of `route` that failed because another request's
    /// failure discarded the instance holding its context of `plugin`.
    pub fn failed_collaterally(&self, plugin: &Arc<Plugin>, route: &str) {
        self.count(|s| s.collateral_failure(plugin.name(), route));
    }

    /// Updates this worker's counters.
    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Registers a paused request's event channel.
    pub fn pause(&self, plugin: &Arc<Plugin>, generation: u64, ctx: u32, events: Sender<Event>) {
        self.paused
            .borrow_mut()
            .insert((key(plugin), generation, ctx), events);
    }

    /// Forgets a paused request's event channel.
    pub fn unpause(&self, plugin: &Arc<Plugin>, generation: u64, ctx: u32) {
        self.paused
            .borrow_mut()
            .remove(&(key(plugin), generation, ctx));
    }

    /// Remembers that `ctx` finishes when the plugin calls `proxy_done`.
    pub fn await_done(&self, plugin: &Arc<Plugin>, generation: u64, ctx: u32) {
        self.pending_done
            .borrow_mut()
            .insert((key(plugin), generation, ctx));
    }

    /// Carries out what instance `generation` of a plugin asked for that no
    /// paused request of the caller's handles: calls from root contexts,
    /// and resumes, resets, local responses and `proxy_done` aimed at other
    /// contexts.
    pub fn dispatch(&self, plugin: &Arc<Plugin>, generation: u64, effects: Vec<Effect>) {
        let k = key(plugin);
        for effect in effects {
            let context = match &effect {
                Effect::HttpCall(call) => call.context,
                Effect::Continue { context, .. }
                | Effect::Close { context, .. }
                | Effect::LocalResponse { context, .. }
                | Effect::Done { context } => *context,
            };
            let waiting = self.paused.borrow().get(&(k, generation, context)).cloned();
            match (effect, waiting) {
                (Effect::HttpCall(call), Some(tx)) => self.spawn_call(call, tx),
                (Effect::HttpCall(call), None) => {
                    self.spawn_root_call(Arc::clone(plugin), generation, call);
                }
                (Effect::Done { context }, _) => self.complete(plugin, generation, context),
                (effect, Some(tx)) => {
                    let _ = tx.try_send(Event::from_effect(effect));
                }
                (effect, None) => log::debug!(
                    "plugin {:?}: {effect:?} for a context that is not paused; ignored",
                    plugin.name()
                ),
            }
        }
    }

    /// Performs `call` and sends its outcome to a paused request.
    pub fn spawn_call(&self, call: HttpCall, to: Sender<Event>) {
        let Some(me) = self.me.upgrade() else { return };
        self.executor
            .spawn(async move {
                let response = me.perform(&call).await;
                let _ = to.send(Event::CallDone(Box::new((call, response)))).await;
            })
            .detach();
    }

    /// Performs a call made outside any request (e.g. from `on_tick`) and
    /// delivers the response to its root context, if its instance is still
    /// the live one.
    fn spawn_root_call(&self, plugin: Arc<Plugin>, generation: u64, call: HttpCall) {
        let Some(me) = self.me.upgrade() else { return };
        self.executor
            .spawn(async move {
                let response = me.perform(&call).await;
                let mut ex = Exchange::from(ExchangeData {
                    call_response: response,
                    ..ExchangeData::default()
                });
                let blame = Blame::Context(call.root);
                let delivered = me.run(&plugin, generation, blame, |vm| {
                    vm.on_http_call_response(&call, &mut ex)
                });
                me.settle_root_call(&plugin, generation, delivered);
            })
            .detach();
    }

    /// Makes this worker a test bench (`tinygate test`): `proxy_http_call`s
    /// are answered by `answers` instead of the network, and ticks no
    /// longer run on a timer, only through [`Worker::tick_now`].
    pub fn script_calls(&self, answers: CallAnswers) {
        *self.scripted.borrow_mut() = Some(answers);
    }

    /// Calls `proxy_on_tick` once, now, for every root context of `plugin`
    /// that has a tick period (the test runner's "advance time"); returns
    /// how many ran.
    pub fn tick_now(&self, plugin: &Arc<Plugin>) -> usize {
        let Some((generation, periods)) = self.tick_periods(plugin) else {
            return 0;
        };
        let mut ran = 0;
        for (root, _) in periods {
            let ticked = self.run(plugin, generation, Blame::Context(root), |vm| {
                vm.on_tick(root)
            });
            if !self.settle_root_call(plugin, generation, ticked) {
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
        for events in self.paused.borrow().values() {
            events.close();
        }
    }

    /// Performs `call` over the network, or answers it from the script.
    async fn perform(&self, call: &HttpCall) -> Option<CallResponse> {
        let scripted = self.scripted.borrow().clone();
        match scripted {
            Some(answer) => answer(call),
            None => calls::perform(self, call).await,
        }
    }

    /// `proxy_done` arrived for a context whose `on_done` said "not yet".
    fn complete(&self, plugin: &Arc<Plugin>, generation: u64, ctx: u32) {
        let waiting = (key(plugin), generation, ctx);
        if !self.pending_done.borrow_mut().remove(&waiting) {
            return;
        }
        let mut ex = Exchange::default();
        let completed = self.run(plugin, generation, Blame::Context(ctx), |vm| {
            vm.complete(ctx, &mut ex)
        });
        self.settle_root_call(plugin, generation, completed);
    }

    /// Dispatches the effects of a call made outside any request, or logs
    /// its fault. Returns false when the instance is gone.
    fn settle_root_call(
        &self,
        plugin: &Arc<Plugin>,
        generation: u64,
        result: Result<((), Vec<Effect>), Fault>,
    ) -> bool {
        match result {
            Ok(((), effects)) => self.dispatch(plugin, generation, effects),
            Err(fault) if fault.kind == FaultKind::ContextGone => return false,
            Err(fault) if fault.kind == FaultKind::UnknownContext => log::debug!("{fault}"),
            Err(fault) => log::warn!("{fault}"),
        }
        true
    }

    /// Starts the tick task of `plugin` on this worker if it has none.
    fn ensure_ticker(&self, plugin: &Arc<Plugin>) {
        if self.scripted.borrow().is_some() || !self.tickers.borrow_mut().insert(key(plugin)) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let plugin = Arc::clone(plugin);
        self.executor
            .spawn(async move {
                me.run_ticks(&plugin).await;
                me.tickers.borrow_mut().remove(&key(&plugin));
            })
            .detach();
    }

    /// The live instance of `plugin` and the tick period of each of its
    /// root contexts that has one.
    fn tick_periods(&self, plugin: &Arc<Plugin>) -> Option<(u64, Vec<(u32, Duration)>)> {
        let vms = self.vms.borrow();
        let slot = vms.get(&key(plugin))?;
        Some((slot.generation, slot.vm.as_ref()?.tick_periods()))
    }

    /// Calls `proxy_on_tick` for every root context of `plugin` whose
    /// period has passed, until no root context of a live instance has a
    /// tick period (a restarted instance re-arms ticks when its roots are
    /// configured again).
    async fn run_ticks(&self, plugin: &Arc<Plugin>) {
        let mut last: HashMap<(u64, u32), Instant> = HashMap::new();
        loop {
            let Some((_, periods)) = self.tick_periods(plugin) else {
                return;
            };
            if periods.is_empty() || self.stopping() {
                return;
            }
            let step = periods
                .iter()
                .map(|(_, p)| (*p).max(MIN_TICK))
                .min()
                .unwrap_or(MIN_TICK);
            Timer::after(step).await;
            // A reload may have retired root contexts: they tick no more.
            self.refresh();
            let Some((generation, periods)) = self.tick_periods(plugin) else {
                return;
            };
            let now = Instant::now();
            last.retain(|&(g, root), _| g == generation && periods.iter().any(|p| p.0 == root));
            for (root, period) in periods {
                let due = last
                    .get(&(generation, root))
                    .is_none_or(|t| now.duration_since(*t) + MIN_TICK / 2 >= period);
                if !due {
                    continue;
                }
                last.insert((generation, root), now);
                let ticked = self.run(plugin, generation, Blame::Context(root), |vm| {
                    vm.on_tick(root)
                });
                if !self.settle_root_call(plugin, generation, ticked) {
                    break;
                }
            }
        }
    }

    /// Delivers `proxy_on_queue_ready` for enqueues made on any thread.
    async fn deliver_queue_notifications(&self, rx: Receiver<QueueReady>) {
        while let Ok((k, generation, root, queue)) = rx.recv().await {
            self.refresh();
            let plugin = self.vms.borrow().get(&k).map(|s| Arc::clone(&s.plugin));
            let Some(plugin) = plugin else { continue };
            let delivered = self.run(&plugin, generation, Blame::Context(root), |vm| {
                vm.on_queue_ready(root, queue)
            });
            self.settle_root_call(&plugin, generation, delivered);
        }
    }

    /// Starts an instance of `slot`'s plugin, wired to this worker.
    fn start_instance(&self, k: PluginKey, slot: &mut VmSlot) -> Result<(), Fault> {
        let mut vm = PluginVm::start_on(Arc::clone(&slot.plugin), self.replica)?;
        vm.set_call_targets(self.call_targets());
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        let tx = self.queue_ready.clone();
        vm.set_queue_notifier(Arc::new(move |root, queue| {
            let _ = tx.try_send((k, generation, root, queue));
        }));
        slot.vm = Some(vm);
        slot.generation = generation;
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

    /// Runs `f` on instance `generation` of `plugin`; a fault that breaks
    /// the instance discards it and is charged, with a rejected
    /// configuration, to the root context `blame` names.
    fn run<T>(
        &self,
        plugin: &Arc<Plugin>,
        generation: u64,
        blame: Blame<'_>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, Vec<Effect>), Fault> {
        let k = key(plugin);
        let mut vms = self.vms.borrow_mut();
        let Some(slot) = vms
            .get_mut(&k)
            .filter(|s| s.generation == generation && s.vm.is_some())
        else {
            return Err(context_gone(plugin));
        };
        let vm = slot.vm.as_mut().expect("checked to be running");
        let (root_key, route) = match blame {
            Blame::Entry(root) => (Some(root.key), Some(root.route)),
            Blame::Context(ctx) => (vm.root_key_of(ctx), None),
        };
        let result = f(vm);
        let effects = vm.take_effects();
        let ticks = !vm.tick_periods().is_empty();
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
        if ticks {
            self.ensure_ticker(plugin);
        }
        result.map(|t| (t, effects))
    }

    /// Drops the instance of `slot` after a failure on `route`: paused
    /// requests that had a context in it are woken to fail, and contexts
    /// waiting for `proxy_done` in it are forgotten.
    fn discard(&self, k: PluginKey, slot: &mut VmSlot, route: &str) {
        slot.vm = None;
        slot.replaces = Some(route.into());
        let generation = slot.generation;
        self.paused.borrow_mut().retain(|&(p, g, _), events| {
            let gone = p == k && g == generation;
            if gone {
                let _ = events.try_send(Event::Gone);
            }
            !gone
        });
        self.pending_done
            .borrow_mut()
            .retain(|&(p, g, _)| p != k || g != generation);
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

    /// The id of the route whose plugin entry is root context `root`, in
    /// the gateways in use (for logs and metrics of calls made outside a
    /// request).
    fn route_of(&self, root: Option<RootKey>) -> String {
        let current = Arc::clone(&self.gateway.borrow().1);
        let retired = self.retired.borrow();
        let found = root.and_then(|root| {
            std::iter::once(&current)
                .chain(retired.iter())
                .find_map(|g| g.route_of(root))
                .map(str::to_owned)
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
