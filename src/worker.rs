//! What one worker thread owns: the gateway it serves, its plugin
//! instances, and its upstream connection pool. Shared-nothing: nothing
//! here is touched by another thread, so the request path takes no lock.
//!
//! Also the per-request plugin chain: the route's plugins, in priority
//! order, each with its HTTP context inside this worker's instance of the
//! plugin. A plugin instance that traps or runs out of fuel is dropped and
//! started afresh on next use; requests that still held a context in it
//! fail closed. When the configuration is reloaded, instances of unchanged
//! plugins are kept; instances of plugins no gateway in use still has are
//! dropped once the last request using them is done.

use crate::config::Route;
use crate::gateway::Gateway;
use crate::live::Live;
use crate::upstream::Pool;
use crate::wasm::{Action, Exchange, Fault, LocalResponse, Plugin, PluginVm};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

/// Access log bytes a worker gathers before writing them out.
const ACCESS_LOG_BUFFER: usize = 32 * 1024;

/// One worker thread's state.
pub struct Worker {
    live: Arc<Live>,
    /// The gateway this worker last fetched, and its generation.
    gateway: RefCell<(u64, Arc<Gateway>)>,
    /// Gateways replaced while requests may still be using them.
    retired: RefCell<Vec<Arc<Gateway>>>,
    /// This worker's instance of each plugin, keyed by the plugin's
    /// address (stable while any gateway holds it), started on first use,
    /// with a generation that changes whenever the instance is replaced.
    vms: RefCell<HashMap<usize, VmSlot>>,
    pub pool: RefCell<Pool>,
    /// Closed when the process starts draining.
    stop: smol::channel::Receiver<()>,
    /// Counter of instance generations.
    next_generation: Cell<u64>,
    /// Access log lines not yet written out.
    access_buf: RefCell<Vec<u8>>,
}

struct VmSlot {
    vm: Option<PluginVm>,
    generation: u64,
}

/// What the plugins decided about a request or response.
pub enum Verdict {
    Continue,
    /// A plugin answered itself (`proxy_send_local_response`).
    Respond(LocalResponse),
    /// A plugin failed: fail closed.
    Fail(Fault),
}

fn key(plugin: &Arc<Plugin>) -> usize {
    Arc::as_ptr(plugin) as usize
}

impl Worker {
    pub fn new(live: Arc<Live>, stop: smol::channel::Receiver<()>) -> Worker {
        let gateway = (live.generation(), live.current());
        Worker {
            live,
            gateway: RefCell::new(gateway),
            retired: RefCell::new(Vec::new()),
            vms: RefCell::new(HashMap::new()),
            pool: RefCell::new(Pool::default()),
            stop,
            next_generation: Cell::new(1),
            access_buf: RefCell::new(Vec::new()),
        }
    }

    /// Records one finished request in the access log, if it is on.
    pub fn log_access(&self, gateway: &Gateway, record: &crate::access_log::Record) {
        let main = &gateway.config.main;
        if main.access_log == crate::access_log::Target::Off {
            return;
        }
        let mut buf = self.access_buf.borrow_mut();
        crate::access_log::format_into(&mut buf, record, main.access_log_format);
        if buf.len() >= ACCESS_LOG_BUFFER {
            crate::access_log::flush(&mut buf);
        }
    }

    /// Writes out buffered access log lines.
    pub fn flush_access_log(&self) {
        crate::access_log::flush(&mut self.access_buf.borrow_mut());
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
        let _ = self.stop.recv().await;
    }

    /// Drops instances of plugins that no gateway in use still has.
    fn collect_unused_vms(&self) {
        let mut retired = self.retired.borrow_mut();
        retired.retain(|g| Arc::strong_count(g) > 1);
        let current = self.gateway.borrow();
        let in_use: Vec<usize> = std::iter::once(&current.1)
            .chain(retired.iter())
            .flat_map(|g| g.plugins.iter().map(key))
            .collect();
        self.vms.borrow_mut().retain(|k, _| in_use.contains(k));
    }

    /// Runs `f` on this worker's instance of `plugin` (starting it if
    /// needed) if its generation is `expected` (any when `None`); replaces
    /// the instance if `f` broke it. Returns the generation used.
    fn with_vm<T>(
        &self,
        plugin: &Arc<Plugin>,
        expected: Option<u64>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, u64), Fault> {
        let mut vms = self.vms.borrow_mut();
        let slot = vms.entry(key(plugin)).or_insert(VmSlot {
            vm: None,
            generation: 0,
        });
        if expected.is_some_and(|g| g != slot.generation) {
            return Err(Fault {
                plugin: plugin.name().to_string(),
                hook: "proxy_on_context_create",
                reason: "its instance was restarted during this request".to_string(),
            });
        }
        if slot.vm.is_none() {
            slot.vm = Some(PluginVm::start(Arc::clone(plugin))?);
            slot.generation = self.next_generation.get();
            self.next_generation.set(slot.generation + 1);
        }
        let vm = slot.vm.as_mut().expect("plugin instance was just started");
        let result = f(vm);
        if vm.is_broken() {
            log::warn!(
                "plugin {:?}: instance discarded after a failure; a fresh one starts on next use",
                plugin.name()
            );
            slot.vm = None;
        }
        result.map(|t| (t, slot.generation))
    }
}

/// The route's plugins for one request, with their HTTP contexts.
pub struct Chain<'w> {
    worker: &'w Worker,
    /// (plugin, instance generation, context id), in run order.
    contexts: Vec<(Arc<Plugin>, u64, u32)>,
    /// Set once a plugin answered locally: later `Continue`s are ignored.
    answered: bool,
}

impl<'w> Chain<'w> {
    /// Creates an HTTP context in every plugin of `route` (configuring the
    /// route's root context on first use).
    ///
    /// # Errors
    /// The first plugin that fails to start or configure.
    pub fn start(
        worker: &'w Worker,
        gateway: &Gateway,
        route: &Route,
    ) -> Result<Chain<'w>, (Chain<'w>, Fault)> {
        let mut chain = Chain {
            worker,
            contexts: Vec::with_capacity(route.plugins.len()),
            answered: false,
        };
        for rp in &route.plugins {
            let plugin = &gateway.plugins[rp.plugin];
            let created = worker.with_vm(plugin, None, |vm| {
                let root = vm.configure(rp.key, &rp.conf)?;
                vm.create_http_context(root)
            });
            match created {
                Ok((ctx, generation)) => {
                    chain.contexts.push((Arc::clone(plugin), generation, ctx));
                }
                Err(fault) => return Err((chain, fault)),
            }
        }
        Ok(chain)
    }

    /// Runs `proxy_on_request_headers` in every plugin, in order, until one
    /// answers or fails.
    pub fn on_request_headers(&mut self, ex: &mut Exchange, end_of_stream: bool) -> Verdict {
        for i in 0..self.contexts.len() {
            let (plugin, generation, ctx) = &self.contexts[i];
            let (generation, ctx) = (*generation, *ctx);
            let result = self.worker.with_vm(plugin, Some(generation), |vm| {
                vm.on_request_headers(ctx, ex, end_of_stream)
            });
            match self.judge(result, ex) {
                Verdict::Continue => {}
                Verdict::Respond(local) => {
                    // Plugins that already saw the request see the local
                    // response's headers too, as Envoy's encoder path does.
                    return self.respond_from(i, local, ex);
                }
                fail => return fail,
            }
        }
        Verdict::Continue
    }

    /// Runs `proxy_on_response_headers` in every plugin, in order.
    pub fn on_response_headers(&mut self, ex: &mut Exchange, end_of_stream: bool) -> Verdict {
        self.response_headers_upto(self.contexts.len(), ex, end_of_stream)
    }

    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` in every plugin.
    pub fn finish(self, ex: &mut Exchange) {
        for (plugin, generation, ctx) in &self.contexts {
            let ctx = *ctx;
            if let Err(fault) = self
                .worker
                .with_vm(plugin, Some(*generation), |vm| vm.finish(ctx, ex))
            {
                log::warn!("{fault}");
            }
        }
    }

    fn response_headers_upto(
        &mut self,
        upto: usize,
        ex: &mut Exchange,
        end_of_stream: bool,
    ) -> Verdict {
        for i in 0..upto {
            let (plugin, generation, ctx) = &self.contexts[i];
            let (generation, ctx) = (*generation, *ctx);
            let result = self.worker.with_vm(plugin, Some(generation), |vm| {
                vm.on_response_headers(ctx, ex, end_of_stream)
            });
            match self.judge(result, ex) {
                Verdict::Continue => {}
                other => return other,
            }
        }
        Verdict::Continue
    }

    /// Plugin `i` answered locally during the request phase.
    fn respond_from(&mut self, i: usize, local: LocalResponse, ex: &mut Exchange) -> Verdict {
        ex.response_headers = local_response_headers(&local);
        match self.response_headers_upto(i, ex, local.body.is_empty()) {
            Verdict::Continue => Verdict::Respond(local),
            other => other,
        }
    }

    fn judge(&mut self, result: Result<(Action, u64), Fault>, ex: &mut Exchange) -> Verdict {
        match result {
            Err(fault) => Verdict::Fail(fault),
            Ok(_) if !self.answered && ex.local_response.is_some() => {
                self.answered = true;
                Verdict::Respond(ex.local_response.take().expect("checked is_some"))
            }
            Ok((Action::Continue, _)) => Verdict::Continue,
            Ok((Action::Pause, _)) => {
                // Pausing without a local response needs proxy_continue_stream,
                // which is not wired into the request path yet.
                log::debug!("a plugin paused a stream; continuing");
                Verdict::Continue
            }
        }
    }
}

/// The response map plugins see for a local response.
pub fn local_response_headers(local: &LocalResponse) -> crate::headers::HeaderMap {
    let mut map = crate::headers::HeaderMap::with_capacity(local.headers.len() + 1);
    map.add(b":status", local.status.to_string().as_bytes());
    for (k, v) in &local.headers {
        map.add(k, v);
    }
    map
}
