//! What one worker thread owns: the gateway it serves, its plugin
//! instances, and the plugin work that is not tied to one request (ticks,
//! queue notifications, calls made from root contexts). Shared-nothing: nothing here is touched by another thread,
//! so the request path takes no lock.
//!
//! A plugin instance that traps or runs out of fuel is dropped and started
//! afresh on next use; requests that still held a context in it fail (as
//! their plugin's failure policy says, see `chain.rs`). A plugin that keeps
//! failing is restarted with backoff, per worker: the first failure is
//! restarted at once, the second waits [`RESTART_BACKOFF_BASE`], each next
//! one twice as long up to [`RESTART_BACKOFF_MAX`] (Envoy's `FAIL_RELOAD`
//! schedule); while it waits, every use is refused at once with a
//! [`Fault`], so a crash loop costs no CPU. The run of failures is forgotten
//! as soon as an instance completes a request or stays up for
//! [`HEALTHY_PERIOD`], so a plugin that fails now and then is always
//! restarted at once. When the configuration is reloaded, instances of
//! unchanged plugins are kept; instances of plugins no gateway in use still
//! has are dropped once the last request using them is done.

use crate::calls;
use crate::chain::Event;
use crate::gateway::Gateway;
use crate::live::Live;
use crate::net::{Flag, Timer};
use crate::ops::metrics::Stats;
use crate::wasm::{
    CallResponse, Effect, Exchange, ExchangeData, Fault, HttpCall, Plugin, PluginVm,
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

/// Wait before the instance that follows a second failure in a row; each
/// further failure doubles it (Envoy's `FAIL_RELOAD` base).
pub const RESTART_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest wait between two instances of a plugin that keeps failing.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// An instance that ran this long before failing was healthy: its failure
/// starts a new run instead of extending the backoff.
pub const HEALTHY_PERIOD: Duration = Duration::from_secs(10);

/// Identifies a plugin while any gateway holds it: its address.
pub type PluginKey = usize;

/// The key of `plugin`.
pub fn key(plugin: &Arc<Plugin>) -> PluginKey {
    Arc::as_ptr(plugin) as usize
}

/// Scripted answers to `proxy_http_call`s (`None`: the call fails), for a
/// worker that runs under `tinygate test`.
pub type CallAnswers = Rc<dyn Fn(&HttpCall) -> Option<CallResponse>>;

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
    /// Requests paused by a plugin, by (plugin, HTTP context): where to
    /// send what resumes or ends them.
    paused: RefCell<HashMap<(PluginKey, u32), Sender<Event>>>,
    /// Contexts whose `proxy_on_done` said "not yet": completed on
    /// `proxy_done`.
    pending_done: RefCell<HashSet<(PluginKey, u32)>>,
    /// Plugins with a running tick task.
    tickers: RefCell<HashSet<PluginKey>>,
    /// `proxy_on_queue_ready` notifications, from any thread.
    queue_ready: Sender<(PluginKey, u32, u32)>,
    /// This worker's counters for the status listener.
    stats: Arc<Mutex<Stats>>,
    /// Under `tinygate test`: where calls are answered instead of the
    /// network; timed ticks are then off (see [`Worker::script_calls`]).
    scripted: RefCell<Option<CallAnswers>>,
}

struct VmSlot {
    plugin: Arc<Plugin>,
    vm: Option<PluginVm>,
    generation: u64,
    /// When the current instance started.
    started: Option<Instant>,
    /// Failures in a row: instances that failed (or failed to start)
    /// without completing a request or living [`HEALTHY_PERIOD`].
    failures: u32,
    /// While backing off: no instance starts before this.
    retry_at: Option<Instant>,
}

impl VmSlot {
    /// Drops the instance after a failure (or records a failed start) and
    /// sets when the next one may start; returns that delay.
    fn record_failure(&mut self) -> Duration {
        if self.started.is_some_and(|t| t.elapsed() >= HEALTHY_PERIOD) {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.vm = None;
        self.started = None;
        let delay = restart_delay(self.failures);
        self.retry_at = (!delay.is_zero()).then(|| Instant::now() + delay);
        delay
    }
}

/// The wait before starting the instance that follows `failures` failures
/// in a row: none after one, then [`RESTART_BACKOFF_BASE`] doubling up to
/// [`RESTART_BACKOFF_MAX`].
fn restart_delay(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => RESTART_BACKOFF_BASE
            .saturating_mul(1 << (n - 2).min(16))
            .min(RESTART_BACKOFF_MAX),
    }
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
        let generation = self.live.generation();
        if self.gateway.borrow().0 != generation {
            let fresh = (generation, self.live.current());
            let old = std::mem::replace(&mut *self.gateway.borrow_mut(), fresh);
            self.retired.borrow_mut().push(old.1);
            self.collect_unused_vms();
        }
        Arc::clone(&self.gateway.borrow().1)
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

    /// Drops instances of plugins that no gateway in use still has.
    fn collect_unused_vms(&self) {
        let mut retired = self.retired.borrow_mut();
        retired.retain(|g| Arc::strong_count(g) > 1);
        let current = self.gateway.borrow();
        let in_use: Vec<PluginKey> = std::iter::once(&current.1)
            .chain(retired.iter())
            .flat_map(|g| g.plugins.iter().map(key))
            .collect();
        self.vms.borrow_mut().retain(|k, _| in_use.contains(k));
    }

    /// Runs `f` on this worker's instance of `plugin` (starting it if
    /// needed) if its generation is `expected` (any when `None`); replaces
    /// the instance if `f` broke it. Returns `f`'s value, the generation
    /// used, and what the plugin asked for during the call.
    ///
    /// # Errors
    /// `f`'s fault; a failed start; the instance holding the `expected`
    /// generation is gone; or the plugin is backing off after repeated
    /// failures (no instance is started then).
    pub fn with_vm<T>(
        &self,
        plugin: &Arc<Plugin>,
        expected: Option<u64>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, u64, Vec<Effect>), Fault> {
        let k = key(plugin);
        let mut vms = self.vms.borrow_mut();
        let slot = vms.entry(k).or_insert_with(|| VmSlot {
            plugin: Arc::clone(plugin),
            vm: None,
            generation: 0,
            started: None,
            failures: 0,
            retry_at: None,
        });
        // A context lives in one instance: if that instance was replaced
        // (or discarded and not yet replaced), the context is gone.
        if expected.is_some_and(|g| g != slot.generation || slot.vm.is_none()) {
            return Err(Fault {
                plugin: plugin.name().to_string(),
                hook: "proxy_on_context_create",
                reason: "its instance was restarted during this request".to_string(),
            });
        }
        if slot.vm.is_none() {
            let now = Instant::now();
            if let Some(wait) = slot.retry_at.and_then(|at| at.checked_duration_since(now)) {
                self.count(|s| s.vm_backoff_refused(plugin.name()));
                return Err(Fault {
                    plugin: plugin.name().to_string(),
                    hook: "instantiate",
                    reason: format!(
                        "restarting after {} failures in a row; next attempt in {} ms",
                        slot.failures,
                        wait.as_millis().max(1)
                    ),
                });
            }
            let mut vm = match PluginVm::start_on(Arc::clone(plugin), self.replica) {
                Ok(vm) => vm,
                Err(fault) => {
                    self.count(|s| s.plugin_failed(plugin.name()));
                    let delay = slot.record_failure();
                    log::warn!(
                        "plugin {:?}: instance failed to start ({} in a row); {}",
                        plugin.name(),
                        slot.failures,
                        next_start(delay)
                    );
                    return Err(fault);
                }
            };
            if slot.failures > 0 {
                self.count(|s| s.vm_restarted(plugin.name()));
                log::info!(
                    "plugin {:?}: fresh instance started after {} failure(s) in a row",
                    plugin.name(),
                    slot.failures
                );
            }
            slot.started = Some(now);
            slot.retry_at = None;
            let live = Arc::clone(&self.live);
            vm.set_call_targets(Arc::new(move |name: &str| {
                live.current()
                    .config
                    .routes
                    .upstreams
                    .iter()
                    .any(|u| u.id == name)
            }));
            let tx = self.queue_ready.clone();
            vm.set_queue_notifier(Arc::new(move |root, queue| {
                let _ = tx.try_send((k, root, queue));
            }));
            slot.vm = Some(vm);
            slot.generation = self.next_generation.get();
            self.next_generation.set(slot.generation + 1);
            self.pending_done.borrow_mut().retain(|(p, _)| *p != k);
        }
        let vm = slot.vm.as_mut().expect("plugin instance was just started");
        let result = f(vm);
        let effects = vm.take_effects();
        let ticks = !vm.tick_periods().is_empty();
        if vm.is_broken() {
            self.count(|s| s.plugin_failed(plugin.name()));
            let delay = slot.record_failure();
            log::warn!(
                "plugin {:?}: instance discarded after a failure ({} in a row); {}",
                plugin.name(),
                slot.failures,
                next_start(delay)
            );
        }
        let generation = slot.generation;
        drop(vms);
        if ticks {
            self.ensure_ticker(plugin);
        }
        result.map(|t| (t, generation, effects))
    }

    /// A request finished every hook of `plugin`'s instance `generation`
    /// without a fault: that instance is healthy, so a later failure of it
    /// is not "in a row" with earlier ones.
    pub fn completed(&self, plugin: &Arc<Plugin>, generation: u64) {
        if let Some(slot) = self.vms.borrow_mut().get_mut(&key(plugin)) {
            if slot.generation == generation && slot.vm.is_some() {
                slot.failures = 0;
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

    /// Counts a request that skipped `plugin` after it failed (`fail_open`).
    pub fn failed_open(&self, plugin: &Arc<Plugin>) {
        self.count(|s| s.failed_open(plugin.name()));
    }

    /// Updates this worker's counters.
    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Registers a paused request's event channel.
    pub fn pause(&self, plugin: &Arc<Plugin>, ctx: u32, events: Sender<Event>) {
        self.paused.borrow_mut().insert((key(plugin), ctx), events);
    }

    /// Forgets a paused request's event channel.
    pub fn unpause(&self, plugin: &Arc<Plugin>, ctx: u32) {
        self.paused.borrow_mut().remove(&(key(plugin), ctx));
    }

    /// Remembers that `ctx` finishes when the plugin calls `proxy_done`.
    pub fn await_done(&self, plugin: &Arc<Plugin>, ctx: u32) {
        self.pending_done.borrow_mut().insert((key(plugin), ctx));
    }

    /// Carries out what a plugin asked for that no paused request of the
    /// caller's handles: calls from root contexts, and resumes, resets,
    /// local responses and `proxy_done` aimed at other contexts.
    pub fn dispatch(&self, plugin: &Arc<Plugin>, effects: Vec<Effect>) {
        let k = key(plugin);
        for effect in effects {
            let context = match &effect {
                Effect::HttpCall(call) => call.context,
                Effect::Continue { context, .. }
                | Effect::Close { context, .. }
                | Effect::LocalResponse { context, .. }
                | Effect::Done { context } => *context,
            };
            let waiting = self.paused.borrow().get(&(k, context)).cloned();
            match (effect, waiting) {
                (Effect::HttpCall(call), Some(tx)) => self.spawn_call(call, tx),
                (Effect::HttpCall(call), None) => self.spawn_root_call(Arc::clone(plugin), call),
                (Effect::Done { context }, _) => self.complete(plugin, context),
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
    /// delivers the response to its root context.
    fn spawn_root_call(&self, plugin: Arc<Plugin>, call: HttpCall) {
        let Some(me) = self.me.upgrade() else { return };
        self.executor
            .spawn(async move {
                let response = me.perform(&call).await;
                let mut ex = Exchange::from(ExchangeData {
                    call_response: response,
                    ..ExchangeData::default()
                });
                match me.with_vm(&plugin, None, |vm| vm.on_http_call_response(&call, &mut ex)) {
                    Ok(((), _, effects)) => me.dispatch(&plugin, effects),
                    Err(fault) => log::warn!("{fault}"),
                }
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
        let periods = match self
            .vms
            .borrow()
            .get(&key(plugin))
            .and_then(|s| s.vm.as_ref())
        {
            Some(vm) => vm.tick_periods(),
            None => return 0,
        };
        let mut ran = 0;
        for (root, _) in periods {
            match self.with_vm_if_running(plugin, |vm| vm.on_tick(root)) {
                Some(Ok(effects)) => self.dispatch(plugin, effects),
                Some(Err(fault)) => log::warn!("{fault}"),
                None => break,
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
    fn complete(&self, plugin: &Arc<Plugin>, ctx: u32) {
        if !self.pending_done.borrow_mut().remove(&(key(plugin), ctx)) {
            return;
        }
        let mut ex = Exchange::default();
        match self.with_vm(plugin, None, |vm| vm.complete(ctx, &mut ex)) {
            Ok(((), _, effects)) => self.dispatch(plugin, effects),
            Err(fault) => log::warn!("{fault}"),
        }
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

    /// Calls `proxy_on_tick` for every root context of `plugin` whose
    /// period has passed, until no root context of a live instance has a
    /// tick period (a restarted instance re-arms ticks when its roots are
    /// configured again).
    async fn run_ticks(&self, plugin: &Arc<Plugin>) {
        let mut last: HashMap<u32, Instant> = HashMap::new();
        loop {
            let periods = {
                let vms = self.vms.borrow();
                match vms.get(&key(plugin)).and_then(|s| s.vm.as_ref()) {
                    Some(vm) => vm.tick_periods(),
                    None => return,
                }
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
            let now = Instant::now();
            for (root, period) in periods {
                let due = last
                    .get(&root)
                    .is_none_or(|t| now.duration_since(*t) + MIN_TICK / 2 >= period);
                if !due {
                    continue;
                }
                last.insert(root, now);
                match self.with_vm_if_running(plugin, |vm| vm.on_tick(root)) {
                    Some(Ok(effects)) => self.dispatch(plugin, effects),
                    Some(Err(fault)) => log::warn!("{fault}"),
                    None => return,
                }
            }
        }
    }

    /// Like [`Worker::with_vm`] but never starts an instance: `None` when
    /// the plugin has no running instance on this worker.
    fn with_vm_if_running(
        &self,
        plugin: &Arc<Plugin>,
        f: impl FnOnce(&mut PluginVm) -> Result<(), Fault>,
    ) -> Option<Result<Vec<Effect>, Fault>> {
        let generation = {
            let vms = self.vms.borrow();
            let slot = vms.get(&key(plugin))?;
            slot.vm.as_ref()?;
            slot.generation
        };
        Some(
            self.with_vm(plugin, Some(generation), f)
                .map(|((), _, effects)| effects),
        )
    }

    /// Delivers `proxy_on_queue_ready` for enqueues made on any thread.
    async fn deliver_queue_notifications(&self, rx: Receiver<(PluginKey, u32, u32)>) {
        while let Ok((k, root, queue)) = rx.recv().await {
            let plugin = self.vms.borrow().get(&k).map(|s| Arc::clone(&s.plugin));
            let Some(plugin) = plugin else { continue };
            match self.with_vm_if_running(&plugin, |vm| vm.on_queue_ready(root, queue)) {
                Some(Ok(effects)) => self.dispatch(&plugin, effects),
                Some(Err(fault)) => log::warn!("{fault}"),
                None => {}
            }
        }
    }
}

/// Says when the next instance starts, for the log.
fn next_start(delay: Duration) -> String {
    if delay.is_zero() {
        "a fresh one starts on next use".to_string()
    } else {
        format!("backing off: next start in {} ms", delay.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_the_second_failure_in_a_row() {
        let secs = |n| restart_delay(n).as_secs();
        let table: Vec<u64> = (1..=9).map(secs).collect();
        assert_eq!(table, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(restart_delay(u32::MAX), RESTART_BACKOFF_MAX);
    }
}
