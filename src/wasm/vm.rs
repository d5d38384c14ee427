//! [`PluginVm`]: one live instance of a plugin, and the calls the host makes
//! into it for start-up, root contexts and the life of an HTTP context, in
//! the order of the spec's lifecycle (cpp-host's order): start functions,
//! root contexts (`on_context_create`, `on_vm_start`, `on_configure`), HTTP
//! contexts (`on_context_create`, the headers hooks, then `on_done`,
//! `on_log`, `on_delete`). The stream callbacks that come after the headers
//! (bodies, trailers, call responses, ticks, queues) are in `callbacks.rs`.
//!
//! Owns the wasmi `Store`, context ids, the per-key root contexts, refuelling
//! before each call, lending the proxy's [`Exchange`] to host functions for
//! the duration of a call (and recording whose it is), and turning traps
//! into [`Fault`]s (after which the VM is broken for good). It must not know
//! how the proxy routes requests or talks HTTP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmi::{Store, TrapCode, TypedFunc, WasmParams, WasmResults};

use super::exports::{Exports, HeadersHook};
use super::host::{ContextKind, Hook, HostState};
use super::plugin::{Plugin, START_FUEL_FACTOR};
use super::roots::Roots;
use super::{shared, Action, Exchange, Fault, FaultKind};

/// One instance of a plugin. Create one per plugin per worker thread and
/// reuse it for every request; drop it and start a new one once
/// [`PluginVm::is_broken`].
pub struct PluginVm {
    pub(super) plugin: Arc<Plugin>,
    pub(super) store: Store<HostState>,
    pub(super) exports: Exports,
    /// Root contexts, per `configure` key (see `roots.rs`).
    pub(super) roots: Roots,
    last_context_id: u32,
    broken: bool,
    /// Fuel the last call into the guest consumed (for tests and traces).
    last_fuel_used: u64,
}

/// What a call into the guest sees: the running hook, the context it starts
/// as effective, and the context whose exchange is lent (`None`: the
/// exchange passed along is a scratch one).
#[derive(Clone, Copy)]
pub(super) struct Lend {
    pub(super) hook: Hook,
    pub(super) context: u32,
    pub(super) owner: Option<u32>,
}

impl Lend {
    /// A callback of HTTP context `ctx` with that stream's exchange.
    pub(super) fn stream(ctx: u32) -> Lend {
        Lend {
            hook: Hook::Stream,
            context: ctx,
            owner: Some(ctx),
        }
    }

    /// A callback for `ctx` with no exchange of its own.
    pub(super) fn bare(hook: Hook, ctx: u32) -> Lend {
        Lend {
            hook,
            context: ctx,
            owner: None,
        }
    }
}

/// The export `finish` calls first.
pub(super) const ON_DONE: &str = "proxy_on_done";

impl PluginVm {
    /// Instantiates the plugin (running a wasm start section), then calls
    /// `_initialize` followed by `main(0, 0)` (or `__main_void()`) if
    /// exported, else `_start`. `proc_exit(0)` during start is a clean exit;
    /// any other exit code or trap fails.
    ///
    /// # Errors
    ///
    /// A [`Fault`] naming the start function that failed.
    pub fn start(plugin: Arc<Plugin>) -> Result<PluginVm, Fault> {
        PluginVm::start_on(plugin, 0)
    }

    /// Like [`PluginVm::start`], on replica `replica` of the engine (a
    /// worker's own; any index is valid).
    ///
    /// # Errors
    /// As [`PluginVm::start`].
    pub fn start_on(plugin: Arc<Plugin>, replica: usize) -> Result<PluginVm, Fault> {
        /// Names VMs in the process-wide shared-queue registry.
        static NEXT_VM_UID: AtomicU64 = AtomicU64::new(1);
        let uid = NEXT_VM_UID.fetch_add(1, Ordering::Relaxed);
        let compiled = plugin.compiled(replica);
        let mut store = Store::new(&compiled.wasmi, HostState::new(plugin.info.clone(), uid));
        store.limiter(|state| &mut state.limits);
        let start_fuel = plugin
            .info
            .spec
            .fuel_per_callback
            .saturating_mul(START_FUEL_FACTOR);
        refuel(&mut store, start_fuel);
        let instance = compiled
            .linker
            .instantiate_and_start(&mut store, &compiled.module)
            .map_err(|e| {
                fault(
                    &plugin,
                    "instantiate",
                    &e,
                    store.data().limits.memory_refused,
                )
            })?;
        let exports = Exports::lookup(&instance, &store);
        let memory = instance.get_memory(&store, "memory");
        let state = store.data_mut();
        state.memory = memory;
        state.allocator = exports.allocator;
        let mut vm = PluginVm {
            plugin,
            store,
            exports,
            roots: Roots::default(),
            last_context_id: 0,
            broken: false,
            last_fuel_used: 0,
        };
        vm.run_start(start_fuel)?;
        log::debug!(target: vm.store.data().log_target(), "VM started; stubbed imports: {:?}", vm.plugin.stubbed);
        Ok(vm)
    }

    /// The plugin this VM runs.
    #[allow(dead_code)] // API for the proxy
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// A new HTTP context under `root` (an id [`PluginVm::configure`]
    /// returned): `proxy_on_context_create(ctx, root)`. Ids are unique
    /// within this VM.
    ///
    /// # Errors
    ///
    /// An unknown `root` (the VM stays usable), or a trap.
    pub fn create_http_context(&mut self, root: u32) -> Result<u32, Fault> {
        const HOOK: &str = "proxy_on_context_create";
        self.check_usable(HOOK)?;
        self.check_root(HOOK, root)?;
        let ctx = self.new_context(ContextKind::Http { root });
        if let Some(f) = self.exports.on_context_create {
            let lend = Lend::bare(Hook::Idle, ctx);
            if let Err(fault) = self.invoke(HOOK, f, (ctx, root), lend) {
                self.store.data_mut().contexts.remove(&ctx);
                return Err(fault);
            }
        }
        Ok(ctx)
    }

    /// `proxy_on_request_headers(ctx, num_headers, end_of_stream)` (or the
    /// 0.1.0 form without `end_of_stream`), with `exchange` lent to the
    /// plugin. A module that does not export it continues.
    ///
    /// # Errors
    ///
    /// An unknown `ctx` (the VM stays usable), or a trap.
    pub fn on_request_headers(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        let num_headers = len32(exchange.request_headers.len());
        let hook = self.exports.on_request_headers;
        self.headers_hook(
            "proxy_on_request_headers",
            hook,
            ctx,
            num_headers,
            exchange,
            end_of_stream,
        )
    }

    /// `proxy_on_response_headers`, like [`PluginVm::on_request_headers`].
    ///
    /// # Errors
    ///
    /// An unknown `ctx` (the VM stays usable), or a trap.
    pub fn on_response_headers(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        let num_headers = len32(exchange.response_headers.len());
        let hook = self.exports.on_response_headers;
        self.headers_hook(
            "proxy_on_response_headers",
            hook,
            ctx,
            num_headers,
            exchange,
            end_of_stream,
        )
    }

    /// Ends an HTTP context: `proxy_on_done`, then, if it returned true (or
    /// is not exported, or the plugin called `proxy_done` during it),
    /// `proxy_on_log` and `proxy_on_delete`, and `Ok(true)`: the context is
    /// gone.
    ///
    /// `Ok(false)` means the plugin is not done yet (it waits for something,
    /// typically an HTTP call). The context stays alive, readable and
    /// switchable-to, until the proxy calls [`PluginVm::complete`], which it
    /// does after an [`super::Effect::Done`] for this context (the plugin's
    /// `proxy_done`) or after a timeout of its own.
    ///
    /// # Errors
    ///
    /// An unknown `ctx` or one already waiting (the VM stays usable), or a
    /// trap (the context is released).
    pub fn finish(&mut self, ctx: u32, exchange: &mut Exchange) -> Result<bool, Fault> {
        self.check_usable(ON_DONE)?;
        self.check_stream(ON_DONE, ctx)?;
        self.with_lent(exchange, |vm| vm.finish_lent(ctx))
    }

    /// [`PluginVm::finish`] once the stream's exchange is lent: `on_done`,
    /// `on_log` and `on_delete` share one loan.
    fn finish_lent(&mut self, ctx: u32) -> Result<bool, Fault> {
        let done = match self.exports.on_done {
            None => true,
            Some(f) => {
                self.store.data_mut().in_on_done = Some((ctx, false));
                let result = self.invoke(ON_DONE, f, ctx, Lend::stream(ctx));
                let called_done = self
                    .store
                    .data_mut()
                    .in_on_done
                    .take()
                    .is_some_and(|(_, called)| called);
                match result {
                    Ok(done) => done != 0 || called_done,
                    Err(fault) => {
                        self.store.data_mut().contexts.remove(&ctx);
                        return Err(fault);
                    }
                }
            }
        };
        if !done {
            self.store.data_mut().awaiting_done.insert(ctx, false);
            return Ok(false);
        }
        self.delete_stream(ctx)?;
        Ok(true)
    }

    /// Ends a context [`PluginVm::finish`] left waiting: `proxy_on_log`,
    /// then `proxy_on_delete`. The context id is released even if one of
    /// them traps.
    ///
    /// # Errors
    ///
    /// A `ctx` that is not waiting (the VM stays usable), or a trap.
    pub fn complete(&mut self, ctx: u32, exchange: &mut Exchange) -> Result<(), Fault> {
        const HOOK: &str = "proxy_on_log";
        self.check_usable(HOOK)?;
        if self.store.data_mut().awaiting_done.remove(&ctx).is_none() {
            return Err(self.fault_msg(
                HOOK,
                FaultKind::UnknownContext,
                format!("HTTP context {ctx} is not waiting for proxy_done"),
            ));
        }
        self.with_lent(exchange, |vm| vm.delete_stream(ctx))
    }

    /// True after any trap, fuel exhaustion or host-invariant failure: the
    /// proxy must drop this VM and start a fresh one.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Test access to guest memory (`ptr..ptr + len`, clamped to memory).
    #[cfg(test)]
    pub(crate) fn read_memory(&self, ptr: u32, len: u32) -> Vec<u8> {
        let mem = self
            .store
            .data()
            .memory
            .expect("tests use modules that export memory");
        let bytes = mem.data(&self.store);
        let start = (ptr as usize).min(bytes.len());
        let end = (ptr as usize + len as usize).min(bytes.len());
        bytes[start..end].to_vec()
    }

    /// Fuel consumed by the last call into the guest.
    #[cfg(test)]
    pub(crate) fn last_fuel_used(&self) -> u64 {
        self.last_fuel_used
    }

    /// Calls `f` with `exchange` lent to host functions as `lend` says (see
    /// [`PluginVm::invoke`]).
    pub(super) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        f: TypedFunc<P, R>,
        params: P,
        lend: Lend,
        exchange: &mut Exchange,
    ) -> Result<R, Fault> {
        self.with_lent(exchange, |vm| vm.invoke(name, f, params, lend))
    }

    /// Runs `body` with `exchange` moved into the store, where host
    /// functions see it, and moves it back afterwards. Between loans the
    /// store holds an empty exchange, which is what a call that lends none
    /// sees.
    pub(super) fn with_lent<R>(
        &mut self,
        exchange: &mut Exchange,
        body: impl FnOnce(&mut PluginVm) -> R,
    ) -> R {
        std::mem::swap(&mut self.store.data_mut().exchange, exchange);
        let result = body(self);
        std::mem::swap(&mut self.store.data_mut().exchange, exchange);
        result
    }

    /// Calls `f` with a full fuel tank, `lend` saying which hook runs, which
    /// context starts as effective and whose exchange the store holds (the
    /// caller lent it with [`PluginVm::with_lent`]; `None`: no exchange is
    /// lent). Any error breaks the VM, and the effects the failed call
    /// recorded are dropped (the proxy discards this VM and its streams
    /// anyway).
    pub(super) fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        f: TypedFunc<P, R>,
        params: P,
        lend: Lend,
    ) -> Result<R, Fault> {
        self.check_usable(name)?;
        let fuel = self.plugin.info.spec.fuel_per_callback;
        refuel(&mut self.store, fuel);
        let state = self.store.data_mut();
        let effects_before = state.effects.len();
        state.limits.memory_refused = false;
        state.hook = lend.hook;
        state.effective_context = lend.context;
        state.lent_to = lend.owner;
        let result = f.call(&mut self.store, params);
        self.note_fuel(name, fuel);
        let state = self.store.data_mut();
        // A line the callback left unfinished is its own.
        super::output::flush(state);
        state.hook = Hook::Idle;
        state.effective_context = 0;
        state.lent_to = None;
        state.plugin_configuration = Vec::new();
        result.map_err(|e| {
            state.effects.truncate(effects_before);
            self.broken = true;
            fault(&self.plugin, name, &e, state.limits.memory_refused)
        })
    }

    pub(super) fn check_usable(&self, hook: &'static str) -> Result<(), Fault> {
        if self.broken {
            return Err(self.broken_fault(hook));
        }
        Ok(())
    }

    /// What every call into a broken VM fails with (kept out of line: the
    /// checks run on every call, the fault almost never).
    #[cold]
    fn broken_fault(&self, hook: &'static str) -> Fault {
        self.fault_msg(
            hook,
            FaultKind::Broken,
            "the VM is broken by an earlier fault".into(),
        )
    }

    /// `root` must be a live root context.
    pub(super) fn check_root(&self, hook: &'static str, root: u32) -> Result<(), Fault> {
        if self.store.data().contexts.get(&root) != Some(&ContextKind::Root) {
            return Err(self.fault_msg(
                hook,
                FaultKind::UnknownContext,
                format!("unknown root context id {root}"),
            ));
        }
        Ok(())
    }

    /// `ctx` must be a live HTTP context that has not been finished.
    pub(super) fn check_stream(&self, hook: &'static str, ctx: u32) -> Result<(), Fault> {
        let state = self.store.data();
        if !state.is_http(ctx) || state.awaiting_done.contains_key(&ctx) {
            return Err(self.fault_msg(
                hook,
                FaultKind::UnknownContext,
                format!("unknown HTTP context id {ctx}"),
            ));
        }
        Ok(())
    }

    /// Calls a stream callback returning `proxy_action_t`, if exported.
    pub(super) fn action_hook<P: WasmParams>(
        &mut self,
        name: &'static str,
        f: Option<TypedFunc<P, u32>>,
        ctx: u32,
        params: P,
        exchange: &mut Exchange,
    ) -> Result<Action, Fault> {
        self.check_usable(name)?;
        self.check_stream(name, ctx)?;
        let Some(f) = f else {
            return Ok(Action::Continue);
        };
        let action = self.call(name, f, params, Lend::stream(ctx), exchange)?;
        // cpp-host treats any value but CONTINUE as stopping iteration.
        Ok(if action == 0 {
            Action::Continue
        } else {
            Action::Pause
        })
    }

    #[cold]
    pub(super) fn fault_msg(&self, hook: &'static str, kind: FaultKind, reason: String) -> Fault {
        Fault {
            plugin: self.plugin.name().to_owned(),
            hook,
            kind,
            reason,
        }
    }

    fn run_start(&mut self, fuel: u64) -> Result<(), Fault> {
        let exports = self.exports;
        if let Some(f) = exports.initialize {
            self.call_start("_initialize", f, (), fuel)?;
            if let Some(f) = exports.main {
                self.call_start("main", f, (0, 0), fuel)?;
            } else if let Some(f) = exports.main_void {
                self.call_start("__main_void", f, (), fuel)?;
            }
        } else if let Some(f) = exports.start {
            self.call_start("_start", f, (), fuel)?;
        }
        Ok(())
    }

    /// Runs a start function; `proc_exit(0)` counts as returning.
    fn call_start<P: WasmParams, R: WasmResults>(
        &mut self,
        hook: &'static str,
        f: TypedFunc<P, R>,
        params: P,
        fuel: u64,
    ) -> Result<(), Fault> {
        refuel(&mut self.store, fuel);
        self.store.data_mut().limits.memory_refused = false;
        let result = f.call(&mut self.store, params);
        self.note_fuel(hook, fuel);
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.i32_exit_status() == Some(0) => Ok(()),
            Err(e) => {
                self.broken = true;
                let memory_refused = self.store.data().limits.memory_refused;
                Err(fault(&self.plugin, hook, &e, memory_refused))
            }
        }
    }

    fn headers_hook(
        &mut self,
        name: &'static str,
        hook: Option<HeadersHook>,
        ctx: u32,
        num_headers: u32,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        match hook {
            Some(HeadersHook::V1(f)) => {
                self.action_hook(name, Some(f), ctx, (ctx, num_headers), exchange)
            }
            Some(HeadersHook::V2(f)) => {
                let params = (ctx, num_headers, u32::from(end_of_stream));
                self.action_hook(name, Some(f), ctx, params, exchange)
            }
            None => self.action_hook::<()>(name, None, ctx, (), exchange),
        }
    }

    /// `proxy_on_log`, `proxy_on_delete` for HTTP context `ctx`, whose
    /// exchange is lent; the context is released whatever happens, and its
    /// root context is deleted if it was retired and this was its last.
    fn delete_stream(&mut self, ctx: u32) -> Result<(), Fault> {
        let exports = self.exports;
        let mut result = Ok(());
        if let Some(f) = exports.on_log {
            result = self.invoke("proxy_on_log", f, ctx, Lend::stream(ctx));
        }
        if let (Ok(()), Some(f)) = (&result, exports.on_delete) {
            result = self.invoke("proxy_on_delete", f, ctx, Lend::stream(ctx));
        }
        let released = self.store.data_mut().contexts.remove(&ctx);
        if let (Ok(()), Some(ContextKind::Http { root })) = (&result, released) {
            if self.has_retiring_roots() {
                result = self.delete_root_if_idle(root);
            }
        }
        result
    }

    fn note_fuel(&mut self, hook: &str, budget: u64) {
        self.last_fuel_used = budget.saturating_sub(self.store.get_fuel().unwrap_or(0));
        log::trace!(target: self.store.data().log_target(), "{hook} used {} fuel", self.last_fuel_used);
    }

    /// A fresh context id (never 0, never one in use) registered as `kind`.
    pub(super) fn new_context(&mut self, kind: ContextKind) -> u32 {
        let contexts = &mut self.store.data_mut().contexts;
        loop {
            self.last_context_id = self.last_context_id.wrapping_add(1);
            let id = self.last_context_id;
            if id != 0 && !contexts.contains_key(&id) {
                contexts.insert(id, kind);
                return id;
            }
        }
    }
}

impl Drop for PluginVm {
    /// Takes this VM's queue registrations and notifier out of the
    /// process-wide registry, so enqueues stop notifying a dead VM (an
    /// earlier registrant of the queue, if any, is notified instead).
    fn drop(&mut self) {
        shared::forget_vm(self.store.data().vm_uid);
    }
}

/// Sets the store's fuel. Metering is always on (see `plugin::wasmi_config`),
/// so this cannot fail; if it did, the store would keep whatever fuel it has,
/// which is never more than one budget.
fn refuel(store: &mut Store<HostState>, fuel: u64) {
    let _ = store.set_fuel(fuel);
}

/// A [`Fault`] describing the wasmi error `e` raised in `hook`;
/// `memory_refused` says whether the memory limit refused a growth during
/// that call (the trap is then the plugin running out of memory).
#[cold]
fn fault(plugin: &Plugin, hook: &'static str, e: &wasmi::Error, memory_refused: bool) -> Fault {
    let (kind, reason) = if e.as_trap_code() == Some(TrapCode::OutOfFuel) {
        (FaultKind::Fuel, "exceeded its CPU budget (fuel)".to_owned())
    } else if let Some(code) = e.i32_exit_status() {
        (FaultKind::Exit(code), format!("called proc_exit({code})"))
    } else if memory_refused {
        let limit = plugin.info.spec.memory_limit;
        let reason = format!("ran out of memory (memory_limit {limit} bytes), then: {e}");
        (FaultKind::Memory, reason)
    } else {
        (FaultKind::Trap, format!("trapped: {e}"))
    };
    Fault {
        plugin: plugin.name().to_owned(),
        hook,
        kind,
        reason,
    }
}

/// A length as the `u32` the ABI passes (saturating: nothing the proxy
/// hands a plugin comes near 4 GiB).
pub(super) fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
