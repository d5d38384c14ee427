//! `HostState`, the data every host function sees through `Caller::data`
//! (the wasmi `Store`'s `T`), and `HostError`, what host functions return.
//!
//! Owns the per-VM state that host functions read and edit: the lent
//! [`Exchange`], the context table, which hook is running (it decides which
//! buffers are readable), and the handles to the guest's memory and
//! allocator. It must not know how the proxy serves HTTP or how plugins are
//! configured; `vm.rs` fills it in around each call into the guest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use wasmi::{Memory, StoreLimits, StoreLimitsBuilder, TypedFunc};

use super::plugin::PluginInfo;
use super::types::Status;
use super::Exchange;

/// Why a host function did not return `OK`: a status for the guest, or a
/// trap that ends the call (an allocator trap, fuel running out, or
/// `proc_exit`). `abi::status` turns this into the `i32` the guest sees.
#[derive(Debug)]
pub(crate) enum HostError {
    Status(Status),
    Trap(wasmi::Error),
}

impl From<Status> for HostError {
    fn from(status: Status) -> Self {
        HostError::Status(status)
    }
}

/// The result type of every host function body.
pub(crate) type HostResult<T = ()> = Result<T, HostError>;

/// The callback currently running, which decides what the plugin may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// No call is in progress, or a start function runs.
    Idle,
    VmStart,
    Configure,
    Http,
}

/// What a live context id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContextKind {
    Root,
    Http { root: u32 },
}

/// The wasmi `Store` data of one [`super::PluginVm`].
pub(crate) struct HostState {
    /// The plugin's name, spec and ABI version.
    pub(crate) plugin: Arc<PluginInfo>,
    /// Memory and table caps, installed with `Store::limiter`.
    pub(crate) limits: StoreLimits,
    /// The guest's exported `memory`, once instantiated.
    pub(crate) memory: Option<Memory>,
    /// `proxy_on_memory_allocate`, else `malloc`, if exported.
    pub(crate) allocator: Option<TypedFunc<u32, u32>>,
    /// The request being processed, lent by the proxy for one call.
    pub(crate) exchange: Exchange,
    pub(crate) hook: Hook,
    /// The context the running callback was called for, or the one set by
    /// `proxy_set_effective_context`; prefixes `proxy_log` lines.
    pub(crate) active_context: u32,
    /// Every live context id.
    pub(crate) contexts: HashMap<u32, ContextKind>,
    /// `PLUGIN_CONFIGURATION`, readable during `proxy_on_configure` only.
    pub(crate) plugin_configuration: Vec<u8>,
    /// Unsupported calls already reported at warn for this VM.
    pub(crate) warned: HashSet<&'static str>,
}

/// Most table elements a plugin may grow its tables to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl HostState {
    pub(crate) fn new(plugin: Arc<PluginInfo>) -> HostState {
        let limits = StoreLimitsBuilder::new()
            .memory_size(plugin.spec.memory_limit)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(1)
            .build();
        HostState {
            plugin,
            limits,
            memory: None,
            allocator: None,
            exchange: Exchange::default(),
            hook: Hook::Idle,
            active_context: 0,
            contexts: HashMap::new(),
            plugin_configuration: Vec::new(),
            warned: HashSet::new(),
        }
    }

    /// The `log` target for this plugin's own messages.
    pub(crate) fn log_target(&self) -> &str {
        &self.plugin.log_target
    }
}
