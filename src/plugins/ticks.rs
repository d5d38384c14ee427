//! Ticks and queue notifications: one tick task per plugin with a root
//! context that set a tick period (`proxy_set_tick_period_milliseconds`),
//! and the delivery of `proxy_on_queue_ready` for enqueues made on any
//! thread. Both take up reloads first, so a retired root context stops
//! ticking without waiting for a request. Under `tinygate test` there are
//! no timers: the bench moves time on ([`Bench::tick`]).
//!
//! [`Bench::tick`]: super::Bench::tick

use super::supervisor::Blame;
use super::{key, Mode, PluginKey, Plugins};
use crate::net::Timer;
use crate::wasm::Plugin;
use smol::channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest tick period honoured (`proxy_set_tick_period_milliseconds`).
const MIN_TICK: Duration = Duration::from_millis(10);

/// A `proxy_on_queue_ready` to deliver: (plugin, generation, root, queue).
pub(super) type QueueReady = (PluginKey, u64, u32, u32);

/// The tick tasks running, and where queue notifications arrive.
pub(super) struct Ticks {
    /// Plugins with a running tick task, and how to wake it.
    tickers: RefCell<HashMap<PluginKey, Rc<Ticker>>>,
    /// `proxy_on_queue_ready` notifications, from any thread.
    pub(super) queue_ready: Sender<QueueReady>,
    /// Set when the process drains: tick tasks end.
    pub(super) stopped: Cell<bool>,
}

/// A plugin's tick task, as the instance's callers see it.
struct Ticker {
    /// How long it sleeps between two looks at its root contexts' periods.
    step: Cell<Duration>,
    /// Wakes it early: a root context's period became shorter than `step`
    /// (a root context configured later, by a reload or a request, must
    /// not wait for the sleep of a slower one).
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl Ticks {
    /// No tick task yet, and the receiving end of queue notifications.
    pub(super) fn new() -> (Ticks, Receiver<QueueReady>) {
        let (queue_ready, rx) = smol::channel::unbounded();
        let ticks = Ticks {
            tickers: RefCell::new(HashMap::new()),
            queue_ready,
            stopped: Cell::new(false),
        };
        (ticks, rx)
    }
}

impl Plugins {
    /// Starts the tick task of `plugin` on this worker if it has none, or
    /// wakes it if it sleeps longer than `shortest`, the shortest tick
    /// period of the instance's root contexts.
    pub(super) fn ensure_ticker(&self, plugin: &Arc<Plugin>, shortest: Duration) {
        if matches!(self.mode, Mode::Scripted(_)) {
            return;
        }
        if let Some(ticker) = self.ticks.tickers.borrow().get(&key(plugin)) {
            if shortest.max(MIN_TICK) < ticker.step.get() {
                let _ = ticker.wake.try_send(());
            }
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let (wake, woken) = smol::channel::bounded(1);
        let ticker = Rc::new(Ticker {
            step: Cell::new(shortest.max(MIN_TICK)),
            wake,
            woken,
        });
        let mine = Rc::clone(&ticker);
        self.ticks.tickers.borrow_mut().insert(key(plugin), ticker);
        let plugin = Arc::clone(plugin);
        self.executor
            .spawn(async move {
                me.run_ticks(&plugin, &mine).await;
                me.ticks.tickers.borrow_mut().remove(&key(&plugin));
            })
            .detach();
    }

    /// The live instance of `plugin` and the tick period of each of its
    /// root contexts that has one.
    pub(super) fn tick_periods(&self, plugin: &Arc<Plugin>) -> Option<(u64, Vec<(u32, Duration)>)> {
        let vms = self.instances.slots.borrow();
        let slot = vms.get(&key(plugin))?;
        Some((slot.generation, slot.vm.as_ref()?.tick_periods()))
    }

    /// Calls `proxy_on_tick` for every root context of `plugin` whose
    /// period has passed, until no root context of a live instance has a
    /// tick period (a restarted instance re-arms ticks when its roots are
    /// configured again).
    async fn run_ticks(&self, plugin: &Arc<Plugin>, ticker: &Ticker) {
        let mut last: HashMap<(u64, u32), Instant> = HashMap::new();
        loop {
            let Some((_, periods)) = self.tick_periods(plugin) else {
                return;
            };
            if periods.is_empty() || self.ticks.stopped.get() {
                return;
            }
            let step = periods
                .iter()
                .map(|(_, p)| (*p).max(MIN_TICK))
                .min()
                .unwrap_or(MIN_TICK);
            ticker.step.set(step);
            smol::future::or(
                async {
                    Timer::after(step).await;
                },
                async {
                    let _ = ticker.woken.recv().await;
                },
            )
            .await;
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
    pub(super) async fn deliver_queue_notifications(&self, rx: Receiver<QueueReady>) {
        while let Ok((k, generation, root, queue)) = rx.recv().await {
            self.refresh();
            let plugin = self
                .instances
                .slots
                .borrow()
                .get(&k)
                .map(|s| Arc::clone(&s.plugin));
            let Some(plugin) = plugin else { continue };
            let delivered = self.run(&plugin, generation, Blame::Context(root), |vm| {
                vm.on_queue_ready(root, queue)
            });
            self.settle_root_call(&plugin, generation, delivered);
        }
    }
}
