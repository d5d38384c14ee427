//! [`PluginVm`]: one live instance of a plugin, and every call the host makes
//! into it, in the order of the spec's lifecycle (cpp-host's order):
//! start functions, root contexts (`on_context_create`, `on_vm_start`,
//! `on_configure`), HTTP contexts (`on_context_create`, the headers hooks,
//! then `on_done`, `on_log`, `on_delete`).
//!
//! Owns the wasmi `Store`, context ids, the per-key root contexts, refuelling
//! before each call, lending the proxy's [`Exchange`] to host functions for
//! the duration of a call, and turning traps into [`Fault`]s (after which
//! the VM is broken for good). It must not know how the proxy routes
//! requests or talks HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use wasmi::{Store, TrapCode, TypedFunc, WasmParams, WasmResults};

use super::exports::{Exports, HeadersHook};
use super::host::{ContextKind, Hook, HostState};
use super::plugin::{Plugin, START_FUEL_FACTOR};
use super::{Action, Exchange, Fault};

/// One instance of a plugin. Create one per plugin per worker thread and
/// reuse it for every request; drop it and start a new one once
/// [`PluginVm::is_broken`].
pub struct PluginVm {
    plugin: Arc<Plugin>,
    store: Store<HostState>,
    exports: Exports,
    /// Root context id per `configure` key.
    roots: HashMap<u64, u32>,
    last_context_id: u32,
    broken: bool,
    /// Fuel the last call into the guest consumed (for tests and traces).
    last_fuel_used: u64,
}

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
        let mut store = Store::new(plugin.engine.wasmi(), HostState::new(plugin.info.clone()));
        store.limiter(|state| &mut state.limits);
        let start_fuel = plugin
            .info
            .spec
            .fuel_per_callback
            .saturating_mul(START_FUEL_FACTOR);
        refuel(&mut store, start_fuel);
        let instance = plugin
            .linker
            .instantiate_and_start(&mut store, &plugin.module)
            .map_err(|e| fault(&plugin, "instantiate", &e))?;
        let exports = Exports::lookup(&instance, &store);
        let memory = instance.get_memory(&store, "memory");
        let state = store.data_mut();
        state.memory = memory;
        state.allocator = exports.allocator;
        let mut vm = PluginVm {
            plugin,
            store,
            exports,
            roots: HashMap::new(),
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

    /// The root context for one (route, plugin configuration) pair,
    /// identified by `key`, created on first use with
    /// `proxy_on_context_create(root, 0)`, `proxy_on_vm_start(root,
    /// vm_config.len())` and `proxy_on_configure(root, conf.len())`, with
    /// `conf` readable as `PLUGIN_CONFIGURATION`. Success is cached per key.
    ///
    /// # Errors
    ///
    /// A `false` from `proxy_on_vm_start` or `proxy_on_configure`, or a
    /// trap. Failures are not cached: the root context is deleted and the
    /// next call tries again with a new one.
    pub fn configure(&mut self, key: u64, conf: &[u8]) -> Result<u32, Fault> {
        self.check_usable("proxy_on_configure")?;
        if let Some(&root) = self.roots.get(&key) {
            return Ok(root);
        }
        let root = self.new_context(ContextKind::Root);
        match self.configure_root(root, conf) {
            Ok(()) => {
                self.roots.insert(key, root);
                Ok(root)
            }
            Err(fault) => {
                if !self.broken {
                    // Let the plugin forget the root; a fault here breaks the
                    // VM, which the first fault already explains.
                    let _ = self.delete_context(root, &mut Exchange::default());
                }
                self.store.data_mut().contexts.remove(&root);
                Err(fault)
            }
        }
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
        if self.store.data().contexts.get(&root) != Some(&ContextKind::Root) {
            return Err(self.fault_msg(HOOK, format!("unknown root context id {root}")));
        }
        let ctx = self.new_context(ContextKind::Http { root });
        if let Some(f) = self.exports.on_context_create {
            if let Err(fault) = self.call(
                HOOK,
                f,
                (ctx, root),
                Hook::Idle,
                ctx,
                &mut Exchange::default(),
            ) {
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
        let num_headers = exchange.request_headers.len();
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
        let num_headers = exchange.response_headers.len();
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

    /// Ends an HTTP context: `proxy_on_done` (its result is ignored for
    /// now), `proxy_on_log`, `proxy_on_delete`, each only if exported. The
    /// context id is released even if one of them traps.
    ///
    /// # Errors
    ///
    /// An unknown `ctx` (the VM stays usable), or a trap.
    pub fn finish(&mut self, ctx: u32, exchange: &mut Exchange) -> Result<bool, Fault> {
        const HOOK: &str = "proxy_on_done";
        self.check_usable(HOOK)?;
        if !matches!(
            self.store.data().contexts.get(&ctx),
            Some(ContextKind::Http { .. })
        ) {
            return Err(self.fault_msg(HOOK, format!("unknown HTTP context id {ctx}")));
        }
        let result = self.delete_context(ctx, exchange);
        self.store.data_mut().contexts.remove(&ctx);
        result.map(|()| true)
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
        let result = f.call(&mut self.store, params);
        self.note_fuel(hook, fuel);
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.i32_exit_status() == Some(0) => Ok(()),
            Err(e) => {
                self.broken = true;
                Err(fault(&self.plugin, hook, &e))
            }
        }
    }

    fn configure_root(&mut self, root: u32, conf: &[u8]) -> Result<(), Fault> {
        let exports = self.exports;
        let mut scratch = Exchange::default();
        if let Some(f) = exports.on_context_create {
            self.call(
                "proxy_on_context_create",
                f,
                (root, 0),
                Hook::Idle,
                root,
                &mut scratch,
            )?;
        }
        if let Some(f) = exports.on_vm_start {
            let size = len32(self.plugin.info.spec.vm_config.len());
            if self.call(
                "proxy_on_vm_start",
                f,
                (root, size),
                Hook::VmStart,
                root,
                &mut scratch,
            )? == 0
            {
                return Err(self.fault_msg(
                    "proxy_on_vm_start",
                    "returned false: the plugin rejected its VM configuration".into(),
                ));
            }
        }
        if let Some(f) = exports.on_configure {
            self.store.data_mut().plugin_configuration = conf.to_vec();
            if self.call(
                "proxy_on_configure",
                f,
                (root, len32(conf.len())),
                Hook::Configure,
                root,
                &mut scratch,
            )? == 0
            {
                return Err(self.fault_msg(
                    "proxy_on_configure",
                    "returned false: the plugin rejected its configuration".into(),
                ));
            }
        }
        Ok(())
    }

    fn headers_hook(
        &mut self,
        name: &'static str,
        hook: Option<HeadersHook>,
        ctx: u32,
        num_headers: usize,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        self.check_usable(name)?;
        if !matches!(
            self.store.data().contexts.get(&ctx),
            Some(ContextKind::Http { .. })
        ) {
            return Err(self.fault_msg(name, format!("unknown HTTP context id {ctx}")));
        }
        let num_headers = len32(num_headers);
        let action = match hook {
            None => return Ok(Action::Continue),
            Some(HeadersHook::V1(f)) => {
                self.call(name, f, (ctx, num_headers), Hook::Http, ctx, exchange)?
            }
            Some(HeadersHook::V2(f)) => self.call(
                name,
                f,
                (ctx, num_headers, u32::from(end_of_stream)),
                Hook::Http,
                ctx,
                exchange,
            )?,
        };
        Ok(if action == 0 {
            Action::Continue
        } else {
            Action::Pause
        })
    }

    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` for `ctx`.
    fn delete_context(&mut self, ctx: u32, exchange: &mut Exchange) -> Result<(), Fault> {
        let exports = self.exports;
        if let Some(f) = exports.on_done {
            self.call("proxy_on_done", f, ctx, Hook::Http, ctx, exchange)?;
        }
        if let Some(f) = exports.on_log {
            self.call("proxy_on_log", f, ctx, Hook::Http, ctx, exchange)?;
        }
        if let Some(f) = exports.on_delete {
            self.call("proxy_on_delete", f, ctx, Hook::Http, ctx, exchange)?;
        }
        Ok(())
    }

    /// Calls `f` with a full fuel tank, `exchange` lent to host functions
    /// and `hook`/`ctx` recorded for them; any error breaks the VM.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        f: TypedFunc<P, R>,
        params: P,
        hook: Hook,
        ctx: u32,
        exchange: &mut Exchange,
    ) -> Result<R, Fault> {
        self.check_usable(name)?;
        let fuel = self.plugin.info.spec.fuel_per_callback;
        refuel(&mut self.store, fuel);
        let state = self.store.data_mut();
        state.hook = hook;
        state.active_context = ctx;
        std::mem::swap(&mut state.exchange, exchange);
        let result = f.call(&mut self.store, params);
        self.note_fuel(name, fuel);
        let state = self.store.data_mut();
        std::mem::swap(&mut state.exchange, exchange);
        state.hook = Hook::Idle;
        state.active_context = 0;
        state.plugin_configuration = Vec::new();
        result.map_err(|e| {
            self.broken = true;
            fault(&self.plugin, name, &e)
        })
    }

    fn note_fuel(&mut self, hook: &str, budget: u64) {
        self.last_fuel_used = budget.saturating_sub(self.store.get_fuel().unwrap_or(0));
        log::trace!(target: self.store.data().log_target(), "{hook} used {} fuel", self.last_fuel_used);
    }

    /// Fuel consumed by the last call into the guest.
    #[cfg(test)]
    pub(crate) fn last_fuel_used(&self) -> u64 {
        self.last_fuel_used
    }

    fn check_usable(&self, hook: &'static str) -> Result<(), Fault> {
        if self.broken {
            return Err(self.fault_msg(hook, "the VM is broken by an earlier fault".into()));
        }
        Ok(())
    }

    /// A fresh context id (never 0, never one in use) registered as `kind`.
    fn new_context(&mut self, kind: ContextKind) -> u32 {
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

    fn fault_msg(&self, hook: &'static str, reason: String) -> Fault {
        Fault {
            plugin: self.plugin.name().to_owned(),
            hook,
            reason,
        }
    }
}

/// Sets the store's fuel. Metering is always on (see `plugin::wasmi_config`),
/// so this cannot fail; if it did, the store would keep whatever fuel it has,
/// which is never more than one budget.
fn refuel(store: &mut Store<HostState>, fuel: u64) {
    let _ = store.set_fuel(fuel);
}

/// A [`Fault`] describing the wasmi error `e` raised in `hook`.
fn fault(plugin: &Plugin, hook: &'static str, e: &wasmi::Error) -> Fault {
    let reason = if e.as_trap_code() == Some(TrapCode::OutOfFuel) {
        "exceeded its CPU budget (fuel)".to_owned()
    } else if let Some(code) = e.i32_exit_status() {
        format!("called proc_exit({code})")
    } else {
        format!("trapped: {e}")
    };
    Fault {
        plugin: plugin.name().to_owned(),
        hook,
        reason,
    }
}

/// A length as the `u32` the ABI passes (saturating: nothing the proxy
/// hands a plugin comes near 4 GiB).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
