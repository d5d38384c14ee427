//! What one worker thread owns: the gateway it serves, its plugin
//! instances, and its upstream connection pool. Shared-nothing: nothing
//! here is touched by another thread, so the request path takes no lock.
//!
//! Also the per-request plugin chain: the route's plugins, in priority
//! order, each with its HTTP context inside this worker's instance of the
//! plugin. A plugin instance that traps or runs out of fuel is dropped and
//! started afresh on next use; requests that still held a context in it
//! fail closed.

use crate::config::Route;
use crate::gateway::Gateway;
use crate::upstream::Pool;
use crate::wasm::{Action, Exchange, Fault, LocalResponse, PluginVm};
use std::cell::RefCell;
use std::sync::Arc;

/// One worker thread's state.
pub struct Worker {
    gateway: Arc<Gateway>,
    /// This worker's instance of each plugin (indexed like
    /// `gateway.plugins`), started on first use, with a generation number
    /// that changes whenever the instance is replaced.
    vms: RefCell<Vec<(Option<PluginVm>, u64)>>,
    pub pool: RefCell<Pool>,
}

/// What the plugins decided about a request or response.
pub enum Verdict {
    Continue,
    /// A plugin answered itself (`proxy_send_local_response`).
    Respond(LocalResponse),
    /// A plugin failed: fail closed.
    Fail(Fault),
}

impl Worker {
    pub fn new(gateway: Arc<Gateway>) -> Worker {
        let vms = gateway.plugins.iter().map(|_| (None, 0)).collect();
        Worker {
            gateway,
            vms: RefCell::new(vms),
            pool: RefCell::new(Pool::default()),
        }
    }

    /// The configuration this worker serves.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Runs `f` on this worker's instance of plugin `index` (starting it if
    /// needed) if its generation is `expected` (any when `None`); replaces
    /// the instance if `f` broke it. Returns the generation used.
    fn with_vm<T>(
        &self,
        index: usize,
        expected: Option<u64>,
        f: impl FnOnce(&mut PluginVm) -> Result<T, Fault>,
    ) -> Result<(T, u64), Fault> {
        let mut vms = self.vms.borrow_mut();
        let (slot, generation) = &mut vms[index];
        let plugin = &self.gateway.plugins[index];
        if expected.is_some_and(|g| g != *generation) {
            return Err(Fault {
                plugin: plugin.name().to_string(),
                hook: "proxy_on_context_create",
                reason: "its instance was restarted during this request".to_string(),
            });
        }
        if slot.is_none() {
            *slot = Some(PluginVm::start(Arc::clone(plugin))?);
            *generation += 1;
        }
        let vm = slot.as_mut().expect("plugin instance was just started");
        let result = f(vm);
        if vm.is_broken() {
            log::warn!(
                "plugin {:?}: instance discarded after a failure; a fresh one starts on next use",
                plugin.name()
            );
            *slot = None;
        }
        result.map(|t| (t, *generation))
    }
}

/// The route's plugins for one request, with their HTTP contexts.
pub struct Chain<'w> {
    worker: &'w Worker,
    /// (plugin index, instance generation, context id), in run order.
    contexts: Vec<(usize, u64, u32)>,
    /// Set once a plugin answered locally: later `Continue`s are ignored.
    answered: bool,
}

impl<'w> Chain<'w> {
    /// Creates an HTTP context in every plugin of `route` (configuring the
    /// route's root context on first use).
    ///
    /// # Errors
    /// The first plugin that fails to start or configure.
    pub fn start(worker: &'w Worker, route: &Route) -> Result<Chain<'w>, (Chain<'w>, Fault)> {
        let mut chain = Chain {
            worker,
            contexts: Vec::with_capacity(route.plugins.len()),
            answered: false,
        };
        for rp in &route.plugins {
            let created = worker.with_vm(rp.plugin, None, |vm| {
                let root = vm.configure(rp.key, &rp.conf)?;
                vm.create_http_context(root)
            });
            match created {
                Ok((ctx, generation)) => chain.contexts.push((rp.plugin, generation, ctx)),
                Err(fault) => return Err((chain, fault)),
            }
        }
        Ok(chain)
    }

    /// True when the route has no plugin.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// Runs `proxy_on_request_headers` in every plugin, in order, until one
    /// answers or fails.
    pub fn on_request_headers(&mut self, ex: &mut Exchange, end_of_stream: bool) -> Verdict {
        for i in 0..self.contexts.len() {
            let (plugin, generation, ctx) = self.contexts[i];
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
        for &(plugin, generation, ctx) in &self.contexts {
            if let Err(fault) = self
                .worker
                .with_vm(plugin, Some(generation), |vm| vm.finish(ctx, ex))
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
            let (plugin, generation, ctx) = self.contexts[i];
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
