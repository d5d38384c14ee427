//! `HostState`, the data every host function sees through `Caller::data`
//! (the wasmi `Store`'s `T`), and `HostError`, what host functions return.
//!
//! Owns the per-VM state that host functions read and edit: the lent
//! [`Exchange`] and whose it is, the effective context, the context table,
//! which hook is running (it decides which buffers are readable), the
//! [`Effect`]s plugins leave for the proxy, the HTTP calls in flight, tick
//! periods, contexts waiting for `proxy_done`, the metric cells the VM has
//! used, and the handles to the guest's memory and allocator. It must not know how the proxy serves HTTP
//! or how plugins are configured; `vm.rs` fills it in around each call into
//! the guest.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::limits::{MAX_TABLES, MAX_TABLE_ELEMENTS};
use super::metrics::VmMetrics;
use wasmi::{Memory, ResourceLimiter, StoreLimits, StoreLimitsBuilder, TypedFunc};
use wasmi_core::LimiterError;

use super::ids::IdMap;
use super::plugin::PluginInfo;
use super::types::Status;
use super::{CallTargets, Effect, Exchange};

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
    /// No call is in progress, a start function runs, or a context is
    /// being created.
    Idle,
    VmStart,
    Configure,
    /// A callback of an HTTP stream (headers, body, trailers, done, log,
    /// delete).
    Stream,
    /// `proxy_on_http_call_response`: the call's response is readable.
    CallResponse,
    /// `proxy_on_tick` or `proxy_on_queue_ready`: no exchange is lent.
    Root,
}

/// What a live context id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContextKind {
    Root,
    Http { root: u32 },
}

/// An HTTP call dispatched and not yet answered: `(root, context)`.
pub(crate) type PendingCall = (u32, u32);

/// The wasmi `Store` data of one [`super::PluginVm`].
pub(crate) struct HostState {
    /// The plugin's name, spec and ABI version.
    pub(crate) plugin: Arc<PluginInfo>,
    /// Process-unique id of the VM, naming it in the shared-queue registry.
    pub(crate) vm_uid: u64,
    /// Memory and table caps, installed with `Store::limiter`.
    pub(crate) limits: Limits,
    /// The guest's exported `memory`, once instantiated.
    pub(crate) memory: Option<Memory>,
    /// `proxy_on_memory_allocate`, else `malloc`, if exported.
    pub(crate) allocator: Option<TypedFunc<u32, u32>>,
    /// The exchange lent by the proxy for one call (an empty one when none
    /// is lent).
    pub(crate) exchange: Exchange,
    /// The context whose exchange `exchange` is, if any.
    pub(crate) lent_to: Option<u32>,
    pub(crate) hook: Hook,
    /// The context the running callback was called for, or the one set by
    /// `proxy_set_effective_context`: host calls act on its behalf, and it
    /// prefixes `proxy_log` lines.
    pub(crate) effective_context: u32,
    /// Every live context id.
    pub(crate) contexts: IdMap<ContextKind>,
    /// `PLUGIN_CONFIGURATION`, readable during `proxy_on_configure` only.
    pub(crate) plugin_configuration: Vec<u8>,
    /// What plugins asked the proxy to do, in order, until `take_effects`.
    pub(crate) effects: Vec<Effect>,
    /// Tick period per root context (only non-zero ones).
    pub(crate) tick_periods: BTreeMap<u32, Duration>,
    /// Upstream ids `proxy_http_call` may target, besides `host:port`.
    pub(crate) call_targets: Option<CallTargets>,
    /// HTTP calls dispatched and not yet delivered, by call id.
    pub(crate) pending_calls: IdMap<PendingCall>,
    pub(crate) last_call_id: u32,
    /// HTTP contexts whose `proxy_on_done` returned false, and whether the
    /// plugin has called `proxy_done` for them since.
    pub(crate) awaiting_done: IdMap<bool>,
    /// The context whose `proxy_on_done` is running, and whether it called
    /// `proxy_done` itself.
    pub(crate) in_on_done: Option<(u32, bool)>,
    /// Warnings already given at warn level for this VM (later ones go to
    /// debug, so a plugin cannot flood the log).
    pub(crate) warned: HashSet<&'static str>,
    /// Guest calls made from host functions and not yet returned (the
    /// allocator, called to hand the plugin data): `memory::copy_out`
    /// bounds it.
    pub(crate) nested_guest_calls: u32,
    /// The metrics this VM defined or used, by id: recording through them
    /// takes no lock (`metrics.rs`).
    pub(crate) metrics: VmMetrics,
    /// Writes to what every VM of the process shares (shared data, shared
    /// queues), counted so that a root context's start can tell whether it
    /// reached outside its instance (`PluginVm::configure`).
    pub(crate) shared_writes: u64,
    /// Unfinished lines written to stdout and stderr (`output.rs`).
    pub(crate) output: super::output::Output,
}

/// The store's caps ([`StoreLimits`]), remembering whether they refused to
/// grow memory: a trap that follows in the same call is a
/// [`super::FaultKind::Memory`] (the guest's allocator gave up), decided
/// here rather than guessed from the trap's message.
pub(crate) struct Limits {
    caps: StoreLimits,
    /// Set when a memory growth was refused; `vm.rs` clears it before each
    /// call into the guest.
    pub(crate) memory_refused: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        self.memory_refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
    }
}

impl HostState {
    pub(crate) fn new(plugin: Arc<PluginInfo>, vm_uid: u64) -> HostState {
        let limits = StoreLimitsBuilder::new()
            .memory_size(plugin.spec.memory_limit)
            .table_elements(MAX_TABLE_ELEMENTS as usize)
            .tables(MAX_TABLES as usize)
            .instances(1)
            .memories(1)
            .build();
        let limits = Limits {
            caps: limits,
            memory_refused: false,
        };
        HostState {
            plugin,
            vm_uid,
            limits,
            memory: None,
            allocator: None,
            exchange: Exchange::default(),
            lent_to: None,
            hook: Hook::Idle,
            effective_context: 0,
            contexts: IdMap::default(),
            plugin_configuration: Vec::new(),
            effects: Vec::new(),
            tick_periods: BTreeMap::new(),
            call_targets: None,
            pending_calls: IdMap::default(),
            last_call_id: 0,
            awaiting_done: IdMap::default(),
            in_on_done: None,
            warned: HashSet::new(),
            nested_guest_calls: 0,
            metrics: VmMetrics::default(),
            shared_writes: 0,
            output: super::output::Output::default(),
        }
    }

    /// The `log` target for this plugin's own messages.
    pub(crate) fn log_target(&self) -> &str {
        &self.plugin.log_target
    }

    /// The root context of `ctx` (itself for a root), if `ctx` is live.
    pub(crate) fn root_of(&self, ctx: u32) -> Option<u32> {
        match self.contexts.get(&ctx)? {
            ContextKind::Root => Some(ctx),
            ContextKind::Http { root } => Some(*root),
        }
    }

    /// True if `ctx` is a live HTTP context.
    pub(crate) fn is_http(&self, ctx: u32) -> bool {
        matches!(self.contexts.get(&ctx), Some(ContextKind::Http { .. }))
    }

    /// The lent exchange if it belongs to the effective context and that is
    /// an HTTP stream: the only case in which stream headers, bodies,
    /// trailers and request properties exist for the plugin.
    pub(crate) fn stream_exchange(&self) -> Option<&Exchange> {
        let ctx = self.effective_context;
        (self.lent_to == Some(ctx) && self.is_http(ctx)).then_some(&self.exchange)
    }

    /// [`HostState::stream_exchange`], writable.
    pub(crate) fn stream_exchange_mut(&mut self) -> Option<&mut Exchange> {
        let ctx = self.effective_context;
        (self.lent_to == Some(ctx) && self.is_http(ctx)).then_some(&mut self.exchange)
    }

    /// Logs `msg` at warn the first time `key` is seen on this VM, at debug
    /// afterwards: plugin mistakes repeat on every request. Cold, so that
    /// the host functions that refuse a mistake do not inline it at every
    /// refusal (3.5 KB of the static binary once `proxy_http_call` was split).
    #[cold]
    pub(crate) fn warn_once(&mut self, key: &'static str, msg: impl fmt::Display) {
        let level = if self.warned.insert(key) {
            log::Level::Warn
        } else {
            log::Level::Debug
        };
        log::log!(target: self.log_target(), level, "[{}] {msg}", self.effective_context);
    }
}
