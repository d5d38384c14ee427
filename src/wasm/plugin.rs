//! Loading plugins: the [`Engine`] (wasmi engines plus the host function
//! table), [`PluginSpec`] and [`Plugin`], a module compiled once per engine
//! replica, and [`LoadError`].
//!
//! An engine has one replica per worker thread: each replica is a wasmi
//! engine of its own, and a worker's VMs run only on its replica, so no
//! call into a plugin touches state (wasmi's stack cache lock, reference
//! counts) that another worker touches too.
//!
//! Owns the wasmi configuration (fuel metering, eager compilation; module
//! limits are `limits.rs`'s), the ABI
//! marker check, the memory-size check, and the per-plugin `Linker`: the
//! shared host functions plus a warn-once stub for every function import the
//! host does not define (one it defines with another signature is refused). Knows nothing about
//! sockets, HTTP framing, routing or config files: the proxy hands it a
//! `PluginSpec` it has already parsed.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmi::{CompilationMode, Config, EnforcedLimits, ExternType, Linker, Module, Store};

use super::abi::{self, stubs, HostFuncs, HostTypes};
use super::exports;
use super::host::HostState;
use super::limits;
use super::types::AbiVersion;
use super::wasi;

/// CPU budget of one call into a plugin, in wasmi fuel (about one unit per
/// executed instruction, plus what host calls charge: see
/// `memory::HOST_CALL_FUEL`). Measured on the reference machine (2 cores,
/// release build), 20 M fuel lasts 22 ms of `loop br 0`, 31 ms of a loop of
/// wasm calls, 12-20 ms of loops of host calls and 11-23 ms of
/// `memory.fill`/`memory.copy` loops: an infinite loop is stopped within
/// ~30 ms. Real plugins use a tiny fraction: the Rust-SDK fixtures need
/// about 1 k fuel per request hook and 70 k to parse a JSON configuration;
/// a hook making 40 host calls used 100 k. Debug builds run ~150x slower.
pub const DEFAULT_FUEL_PER_CALLBACK: u64 = 20_000_000;

/// Start functions (`_initialize` + `main`, or `_start`, and the wasm start
/// section) run once per VM and initialize a whole language runtime, so they
/// get this many times the per-callback budget.
pub(crate) const START_FUEL_FACTOR: u64 = 10;

/// Default cap on a plugin's linear memory: `memory.grow` past it returns -1.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// Bytes in a wasm page (custom page sizes are disabled).
const PAGE_SIZE: u64 = 64 * 1024;

/// The wasmi engines plugins compile and run with (one replica per worker
/// thread), plus the host functions every plugin is linked against. Cheap
/// to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    replicas: Vec<Replica>,
    /// The signature of every host function, by (module, name).
    host_types: HostTypes,
}

/// One wasmi engine and its host functions.
struct Replica {
    wasmi: wasmi::Engine,
    linker: Linker<HostState>,
}

impl Engine {
    /// An engine with one replica: fuel metering on, the module limits of
    /// `limits.rs` (checked before compiling) instead of wasmi's strict
    /// ones, eager compilation (so no hook pays for compiling), and every
    /// host function.
    pub fn new() -> Engine {
        Engine::with_replicas(1)
    }

    /// An engine with `n` replicas (at least one), one per worker thread.
    pub fn with_replicas(n: usize) -> Engine {
        let mut host_types = HashMap::new();
        let replicas = (0..n.max(1))
            .map(|_| {
                let wasmi = wasmi::Engine::new(&wasmi_config());
                let mut linker = Linker::new(&wasmi);
                let mut probe = Store::new(
                    &wasmi,
                    HostState::new(
                        Arc::new(PluginInfo::new(PluginSpec::default(), AbiVersion::V0_2_1)),
                        0,
                    ),
                );
                let mut funcs = HostFuncs {
                    linker: &mut linker,
                    probe: &mut probe,
                    types: &mut host_types,
                };
                abi::add_to_linker(&mut funcs);
                wasi::add_to_linker(&mut funcs);
                Replica { wasmi, linker }
            })
            .collect();
        Engine {
            inner: Arc::new(EngineInner {
                replicas,
                host_types,
            }),
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

fn wasmi_config() -> Config {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .enforced_limits(EnforcedLimits::default()) // `limits::check` instead
        .compilation_mode(CompilationMode::Eager);
    config
}

/// What the configuration says about one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSpec {
    /// The plugin's name, used in logs (`wasm::<name>`) and errors.
    pub name: String,
    /// The `.wasm` file.
    pub file: PathBuf,
    /// Order among the plugins of a route; the proxy sorts by it.
    pub priority: i64,
    /// Root id (exposed later as the `plugin_root_id` property).
    pub root_id: String,
    /// The `VM_CONFIGURATION` buffer read in `proxy_on_vm_start`.
    pub vm_config: Vec<u8>,
    /// The only environment the plugin sees through WASI `environ_*`.
    pub env: Vec<(String, String)>,
    /// CPU budget for every single call into the plugin, in fuel.
    pub fuel_per_callback: u64,
    /// Linear memory may not grow past this many bytes.
    pub memory_limit: usize,
}

impl Default for PluginSpec {
    fn default() -> Self {
        PluginSpec {
            name: String::new(),
            file: PathBuf::new(),
            priority: 0,
            root_id: String::new(),
            vm_config: Vec::new(),
            env: Vec::new(),
            fuel_per_callback: DEFAULT_FUEL_PER_CALLBACK,
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

/// The facts about a plugin that host functions need.
pub(crate) struct PluginInfo {
    pub(crate) spec: PluginSpec,
    pub(crate) abi: AbiVersion,
    /// `wasm::<name>`.
    pub(crate) log_target: String,
}

impl PluginInfo {
    fn new(spec: PluginSpec, abi: AbiVersion) -> PluginInfo {
        let log_target = format!("wasm::{}", spec.name);
        PluginInfo {
            spec,
            abi,
            log_target,
        }
    }
}

/// A compiled plugin: shared (via `Arc`) by the [`super::PluginVm`]s of all
/// worker threads, each of which runs it on its own engine replica.
pub struct Plugin {
    pub(crate) info: Arc<PluginInfo>,
    /// The module compiled and linked for each replica of the engine.
    compiled: Vec<Compiled>,
    /// `module.name` of every import linked to a stub.
    pub(crate) stubbed: Vec<String>,
    /// Identifies the file's contents, so another plugin loaded from the
    /// same bytes can share the compiled modules.
    content_id: ContentId,
    /// Set once a root context's start reached outside its instance
    /// ([`Plugin::starts_on_load`]).
    reaches_out_at_start: AtomicBool,
}

/// The plugin's module on one engine replica.
pub(crate) struct Compiled {
    pub(crate) wasmi: wasmi::Engine,
    pub(crate) module: Module,
    pub(crate) linker: Linker<HostState>,
}

impl Plugin {
    /// Reads and compiles `spec.file`, checks that it is a proxy-wasm module
    /// (an ABI marker export, callbacks with the spec's signatures, an
    /// exported memory whose initial size fits `spec.memory_limit`), and
    /// prepares its `Linker`.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] naming the file and the reason.
    pub fn load(engine: &Engine, spec: PluginSpec) -> Result<Plugin, LoadError> {
        Plugin::load_sharing(engine, spec, &[])
    }

    /// Like [`Plugin::load`], but when one of `loaded` (on the same engine)
    /// was read from a file with the same contents, its compiled modules are
    /// shared instead of compiled again: several plugin entries (names,
    /// confs, limits) over one `.wasm` cost its code once.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] naming the file and the reason.
    pub fn load_sharing(
        engine: &Engine,
        spec: PluginSpec,
        loaded: &[Arc<Plugin>],
    ) -> Result<Plugin, LoadError> {
        let fail = |reason: String| LoadError {
            plugin: spec.name.clone(),
            file: spec.file.clone(),
            reason,
        };
        let bytes =
            std::fs::read(&spec.file).map_err(|e| fail(format!("cannot read file: {e}")))?;
        let content_id = content_id(&bytes);
        let shared = loaded
            .iter()
            .find(|p| p.content_id == content_id && p.is_on(engine))
            .map(|p| &p.compiled);
        let first = &engine.inner.replicas[0];
        if shared.is_none() {
            limits::check(&bytes).map_err(fail)?;
        }
        let module = match shared {
            Some(compiled) => compiled[0].module.clone(),
            None => Module::new(&first.wasmi, &bytes)
                .map_err(|e| fail(format!("invalid wasm module: {e}")))?,
        };
        let abi = exports::abi_version(&module).ok_or_else(|| {
            let names: Vec<&str> = AbiVersion::MARKERS.iter().map(|(name, _)| *name).collect();
            fail(format!(
                "not a proxy-wasm module: it exports none of {}",
                names.join(", ")
            ))
        })?;
        exports::check(&module).map_err(fail)?;
        check_memory(&module, spec.memory_limit).map_err(fail)?;
        let (linker, stubbed) = link(engine, first, &module, &spec.name).map_err(fail)?;
        let mut compiled = vec![Compiled {
            wasmi: first.wasmi.clone(),
            module,
            linker,
        }];
        // The other replicas compile the same bytes, already checked.
        for (i, replica) in engine.inner.replicas.iter().enumerate().skip(1) {
            let module = match shared {
                Some(compiled) => compiled[i].module.clone(),
                None => Module::new(&replica.wasmi, &bytes)
                    .map_err(|e| fail(format!("invalid wasm module: {e}")))?,
            };
            let (linker, _) = link(engine, replica, &module, &spec.name).map_err(fail)?;
            compiled.push(Compiled {
                wasmi: replica.wasmi.clone(),
                module,
                linker,
            });
        }
        if exports::allocator_name(&compiled[0].module).is_none() {
            log::warn!(target: &format!("wasm::{}", spec.name), "exports neither proxy_on_memory_allocate nor malloc: host calls that return data will fail");
        }
        log::debug!(
            "plugin {:?} loaded from {}: ABI {abi:?}",
            spec.name,
            spec.file.display()
        );
        Ok(Plugin {
            info: Arc::new(PluginInfo::new(spec, abi)),
            compiled,
            stubbed,
            content_id,
            reaches_out_at_start: AtomicBool::new(false),
        })
    }

    /// True once a root context of this plugin, on any thread, did at its
    /// start (`proxy_on_vm_start`, `proxy_on_configure`) what others can
    /// see: set a tick period, wrote shared data or a shared queue, or made
    /// an HTTP call. Workers then start its root contexts when they take a
    /// configuration up, as Envoy does, instead of on first use
    /// (`plugins/eager.rs`): for a plugin whose start only reads its
    /// configuration the two cannot be told apart but by memory.
    pub fn starts_on_load(&self) -> bool {
        self.reaches_out_at_start.load(Ordering::Relaxed)
    }

    /// Records that a root context's start reached outside its instance.
    pub(crate) fn reached_out_at_start(&self) {
        self.reaches_out_at_start.store(true, Ordering::Relaxed);
    }

    /// True when this plugin was compiled by `engine`'s replicas.
    fn is_on(&self, engine: &Engine) -> bool {
        self.compiled.len() == engine.inner.replicas.len()
            && self
                .compiled
                .iter()
                .zip(&engine.inner.replicas)
                .all(|(c, r)| wasmi::Engine::same(&c.wasmi, &r.wasmi))
    }

    /// The module compiled for replica `replica` of the engine (wrapping
    /// around, so any index is valid).
    pub(crate) fn compiled(&self, replica: usize) -> &Compiled {
        &self.compiled[replica % self.compiled.len()]
    }

    /// What identifies the contents of the file it was loaded from.
    pub fn content_id(&self) -> ContentId {
        self.content_id
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.info.spec.name
    }

    /// The plugin's priority.
    #[allow(dead_code)] // API: the proxy may sort plugins by it
    pub fn priority(&self) -> i64 {
        self.info.spec.priority
    }

    /// The spec it was loaded from.
    pub fn spec(&self) -> &PluginSpec {
        &self.info.spec
    }
}

/// What identifies a plugin file's contents: its length and a hash. Plugin
/// files come from the operator, so a deliberate collision is not a
/// concern; an accidental one between two different modules of the same
/// length is vanishingly rare.
pub type ContentId = (usize, u64);

/// The [`ContentId`] of the file at `path`; `None` when it cannot be read
/// (loading it reports why).
pub fn file_content_id(path: &std::path::Path) -> Option<ContentId> {
    std::fs::read(path).ok().map(|bytes| content_id(&bytes))
}

fn content_id(bytes: &[u8]) -> ContentId {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    (bytes.len(), h.finish())
}

/// The module must export its memory (every host call passes pointers into
/// it), import none, and start no bigger than the limit.
fn check_memory(module: &Module, limit: usize) -> Result<(), String> {
    let Some(ExternType::Memory(memory)) = module.get_export("memory") else {
        return Err("does not export its linear memory as \"memory\"".to_owned());
    };
    let initial = memory.minimum().saturating_mul(PAGE_SIZE);
    if initial > limit as u64 {
        return Err(format!(
            "initial memory of {initial} bytes exceeds the plugin's memory limit of {limit} bytes"
        ));
    }
    Ok(())
}

/// The engine's linker plus a stub for every function import it does not
/// define, and the stubbed names. A function it defines but with another
/// signature is an error.
fn link(
    engine: &Engine,
    replica: &Replica,
    module: &Module,
    plugin: &str,
) -> Result<(Linker<HostState>, Vec<String>), String> {
    let mut linker = replica.linker.clone();
    let mut stubbed = Vec::new();
    linker.allow_shadowing(true);
    for import in module.imports() {
        let (module_name, name) = (import.module(), import.name());
        let ExternType::Func(ty) = import.ty() else {
            return Err(format!("imports {module_name}.{name}, which is not a function; tinygate provides only functions"));
        };
        match engine
            .inner
            .host_types
            .get(&(module_name.to_owned(), name.to_owned()))
        {
            Some(host_ty) if host_ty == ty => continue,
            // A known function with another signature is a module built
            // against a different ABI: calling through a stub would only
            // hide that, so it is refused at load (issue #4).
            Some(host_ty) => {
                return Err(format!(
                    "imports {module_name}.{name} as {ty:?}, but the proxy-wasm ABI defines it as {host_ty:?}"
                ))
            }
            None => {
                log::debug!(target: &format!("wasm::{plugin}"), "stubbing unknown import {module_name}.{name}")
            }
        }
        let stub = stubs::unknown_import(plugin, module_name, name, ty);
        linker
            .func_new(module_name, name, ty.clone(), stub)
            .map_err(|e| format!("cannot link {module_name}.{name}: {e}"))?;
        stubbed.push(format!("{module_name}.{name}"));
    }
    Ok((linker, stubbed))
}

/// Why a plugin could not be loaded.
#[derive(Debug)]
pub struct LoadError {
    plugin: String,
    file: PathBuf,
    reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {:?}: {}: {}",
            self.plugin,
            self.file.display(),
            self.reason
        )
    }
}

impl std::error::Error for LoadError {}
