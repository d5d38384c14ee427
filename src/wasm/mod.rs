//! The proxy-wasm host: runs Envoy/APISIX/Kong-style plugins in the wasmi
//! interpreter. This file is the whole API the proxy sees.
//!
//! Lifecycle: build one [`Engine`] per process, with one replica per worker
//! thread ([`Engine::with_replicas`]); [`Plugin::load`] each configured
//! `.wasm` once (checked, compiled for every replica, shared via `Arc` by
//! all threads); on worker `i` [`PluginVm::start_on`] replica `i` one VM per
//! plugin,
//! give it [`PluginVm::set_call_targets`] and [`PluginVm::set_queue_notifier`],
//! and keep it. Per (route, plugin conf) pair call [`PluginVm::configure`]
//! (it is cached); per request [`PluginVm::create_http_context`], then the
//! headers, body and trailer hooks with the request's [`Exchange`], then
//! [`PluginVm::finish`]. On any [`Fault`] with [`PluginVm::is_broken`], drop
//! the VM and start a new one.
//!
//! What the proxy must do in return:
//! - after **every** call into a VM, drain [`PluginVm::take_effects`] and
//!   carry them out in order, and re-read [`PluginVm::tick_periods`];
//! - honour [`Exchange::local_response`] after any call that lent the
//!   exchange (hooks, [`PluginVm::on_http_call_response`], `finish`): once a
//!   plugin has set it, send that reply and ignore a `Continue` the plugin
//!   returns afterwards (spec: a local response stops the filter chain);
//!   [`Effect::LocalResponse`] is the same for a stream whose exchange was
//!   not lent (e.g. from a tick);
//! - on [`Action::Pause`], hold the stream: keep buffering the body and call
//!   the body hook again with the cumulative body (Envoy's
//!   StopIterationAndBuffer, up to a limit of the proxy's choosing), until
//!   an [`Effect::Continue`] for that context and direction resumes it; an
//!   [`Effect::Continue`] for a stream that is not paused is a no-op, and
//!   [`Effect::Close`] resets the stream;
//! - call the body and trailer hooks only for plugins whose
//!   [`PluginVm::stream_hooks`] say they have them;
//! - perform each [`Effect::HttpCall`] (an upstream id, else `host:port`;
//!   its `timeout` is never zero: a plugin's 0 became the host's default), then call
//!   [`PluginVm::on_http_call_response`] once per call with the exchange of
//!   `call.context` (an empty one for a root context or a finished stream)
//!   with `call_response` set, or `None` on failure or timeout. Answer
//!   every call exactly once, also when its stream is gone: the VM keeps a
//!   call pending until then and refuses new ones past 1024 pending. Drop
//!   the answers of calls made by a VM that has since been replaced;
//! - call [`PluginVm::on_tick`] every period of each root in
//!   [`PluginVm::tick_periods`], and [`PluginVm::on_queue_ready`] when the
//!   [`QueueNotifier`] fires (it runs on other threads: send the event to
//!   the VM's thread);
//! - call [`PluginVm::finish`] for every context it created, or the plugin
//!   keeps that context's state; when it returns `Ok(false)`, keep the
//!   exchange, and call [`PluginVm::complete`] after [`Effect::Done`] for
//!   that context, or after a timeout of its own;
//! - after a configuration reload, [`PluginVm::retire_root`] the roots
//!   whose key left the configuration ([`PluginVm::roots_to_retire`]):
//!   they are deleted once their last HTTP context ends;
//! - build with wasmi's `auto-dispatch` feature: without it a debug build
//!   overflows the native stack on any long-running plugin call.
//!
//! Layout: `plugin.rs` (engine, load, linking), `vm.rs` (instance, start-up,
//! contexts, lending), `roots.rs` (root contexts per key, retired on
//! reload), `callbacks.rs` (body, trailer, call-response, tick
//! and queue callbacks, effects), `exports.rs` (callbacks the module
//! exports), `host.rs` (the store data host functions see), `abi/` (one
//! file per spec area of `env` host functions), `wasi.rs`, `output.rs`
//! (what plugins write to stdout and stderr, a log line per line), `memory.rs`
//! (guest memory), `ids.rs` (maps keyed by
//! host-assigned ids), `pairs.rs` (the header-map wire format), `properties.rs`
//! (the property table), `shared.rs` (process-wide shared data and queues),
//! `metrics.rs` (plugin metrics and their Prometheus text), `types.rs` (the
//! spec's enums). Only this directory imports wasmi; it knows nothing about
//! sockets, HTTP framing, routing or config files.

mod abi;
mod callbacks;
mod exports;
mod host;
mod ids;
mod limits;
mod memory;
mod metric_cell;
mod metrics;
mod output;
mod pairs;
mod plugin;
mod properties;
mod roots;
mod shared;
mod stack;
mod types;
mod vm;
mod wasi;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::http::HeaderMap;

// The whole API is exported even where the proxy does not use it yet
// (`LoadError` by name, the metrics export).
#[allow(unused_imports)]
pub use metrics::{metrics_snapshot, metrics_text, set_serving_plugins};
#[allow(unused_imports)]
pub use plugin::{
    file_content_id, Engine, LoadError, Plugin, PluginSpec, DEFAULT_FUEL_PER_CALLBACK,
    DEFAULT_MEMORY_LIMIT,
};
pub use shared::shared_value;
pub use stack::{run_on_plugin_stack, spawn as spawn_plugin_thread};
#[allow(unused_imports)]
pub use types::MetricKind;
pub use vm::PluginVm;

/// The per-request data plugins can see and edit ([`ExchangeData`]). The
/// proxy owns it and lends it to the VM for the duration of each hook; it
/// is boxed so that lending moves a pointer, not the whole record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exchange(Box<ExchangeData>);

impl From<ExchangeData> for Exchange {
    fn from(data: ExchangeData) -> Exchange {
        Exchange(Box::new(data))
    }
}

impl std::ops::Deref for Exchange {
    type Target = ExchangeData;
    fn deref(&self) -> &ExchangeData {
        &self.0
    }
}

impl std::ops::DerefMut for Exchange {
    fn deref_mut(&mut self) -> &mut ExchangeData {
        &mut self.0
    }
}

/// What an [`Exchange`] holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeData {
    /// Request headers, with `:method`, `:path`, `:authority` and `:scheme`
    /// at the front.
    pub request_headers: HeaderMap,
    /// Response headers, with `:status` at the front.
    pub response_headers: HeaderMap,
    /// Set by `proxy_send_local_response`: the reply to send instead of
    /// forwarding (or instead of the upstream's response).
    pub local_response: Option<LocalResponse>,
    /// `HTTP_REQUEST_BODY`: the body bytes the proxy has not forwarded yet
    /// (the current chunk while streaming, everything once buffered).
    pub request_body: Vec<u8>,
    /// `HTTP_RESPONSE_BODY`, like `request_body`.
    pub response_body: Vec<u8>,
    /// `HTTP_REQUEST_TRAILERS` (chunked requests only).
    pub request_trailers: HeaderMap,
    /// `HTTP_RESPONSE_TRAILERS` (chunked responses only).
    pub response_trailers: HeaderMap,
    /// Facts about the stream, read through `proxy_get_property`.
    pub info: StreamInfo,
    /// Values set with `proxy_set_property` during this request, by
    /// serialized path (segments joined by NUL), at most one per path; they
    /// shadow the computed properties (see `properties.rs` for the table).
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
    /// The response being delivered by `proxy_on_http_call_response`
    /// (`None` when the call failed or timed out).
    pub call_response: Option<CallResponse>,
}

/// Facts about one stream for `proxy_get_property` (Envoy attributes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// The client (`source.address`, `source.port`, `remote_addr`).
    pub source: Option<std::net::SocketAddr>,
    /// The listener the client reached (`destination.*`).
    pub destination: Option<std::net::SocketAddr>,
    /// The TLS handshake of an HTTPS client (`connection.*`, `ssl_*`).
    pub tls: Option<std::sync::Arc<crate::tls::TlsInfo>>,
    /// `request.id`: unique per request.
    pub request_id: String,
    /// `route_name`: the route's id.
    pub route_name: String,
    /// `request.protocol`: `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'static str,
    /// `request.time`: when the request arrived, ns since the Unix epoch.
    pub start_time_ns: i64,
    /// `response.code`, once the response headers are known.
    pub response_code: Option<u16>,
}

/// An `proxy_http_call` response as the plugin reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallResponse {
    /// `HTTP_CALL_RESPONSE_HEADERS`, with `:status` first.
    pub headers: HeaderMap,
    /// `HTTP_CALL_RESPONSE_BODY`.
    pub body: Vec<u8>,
    /// `HTTP_CALL_RESPONSE_TRAILERS`.
    pub trailers: HeaderMap,
}

/// A request a plugin dispatched with `proxy_http_call`, for the proxy to
/// perform; its answer goes back through
/// [`PluginVm::on_http_call_response`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The id returned to the plugin.
    pub call_id: u32,
    /// The root context the response callback is delivered to.
    pub root: u32,
    /// The effective context when the call was made: an HTTP context id
    /// (the request that waits for it) or the root context id.
    pub context: u32,
    /// An upstream id from the routes file, or `host:port`.
    pub target: String,
    /// Request headers, with non-empty `:method`, `:path` and
    /// `:authority`; every field passed the response-splitting checks.
    pub headers: HeaderMap,
    /// Request body (at most 16 MiB).
    pub body: Vec<u8>,
    /// Request trailers (usually empty).
    pub trailers: HeaderMap,
    /// The plugin's timeout, or 30 s (`abi::calls::DEFAULT_CALL_TIMEOUT`)
    /// when it passed 0; never zero.
    pub timeout: std::time::Duration,
}

/// Something a plugin asked for during a call that the proxy carries out
/// afterwards; drained with [`PluginVm::take_effects`]. `context` is always
/// an HTTP context of the VM (the effective one when the plugin asked),
/// except for [`Effect::HttpCall`], whose `context` may be a root. Effects
/// recorded by a call that faulted are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `proxy_http_call` succeeded: perform the call.
    HttpCall(HttpCall),
    /// `proxy_continue_stream` (or 0.1.0 `continue_request`/`_response`):
    /// resume the request (`response: false`) or response side if paused.
    Continue { context: u32, response: bool },
    /// `proxy_close_stream`: reset the stream.
    Close { context: u32, response: bool },
    /// `proxy_send_local_response` for a context whose exchange was not
    /// lent to this call (e.g. from a tick).
    LocalResponse {
        context: u32,
        response: LocalResponse,
    },
    /// `proxy_done`: the context whose `proxy_on_done` returned false is
    /// done; call [`PluginVm::complete`]. Recorded at most once per context.
    Done { context: u32 },
}

/// Which optional stream hooks a plugin exports (the proxy calls body and
/// trailer hooks only when some plugin on the route has them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamHooks {
    /// `proxy_on_request_body`.
    pub request_body: bool,
    /// `proxy_on_response_body`.
    pub response_body: bool,
    /// `proxy_on_request_trailers`.
    pub request_trailers: bool,
    /// `proxy_on_response_trailers`.
    pub response_trailers: bool,
}

/// Delivers `proxy_on_queue_ready` across threads: called (from any
/// thread, inside another VM's host call, never under a registry lock) with
/// (root context id, queue id) when an item is enqueued on a queue a root
/// context of this VM registered last. It must only pass the event on.
pub type QueueNotifier = std::sync::Arc<dyn Fn(u32, u32) + Send + Sync>;

/// Says whether `proxy_http_call` may target a name: an upstream id known
/// to the current configuration (`host:port` targets are always allowed).
pub type CallTargets = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A reply a plugin asked the proxy to send (`proxy_send_local_response`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalResponse {
    /// Always 200..=599 (anything else was turned into 500).
    pub status: u16,
    /// `status_code_details`, for logs (at most 1 KiB).
    pub details: Vec<u8>,
    /// Lower-case names; every pair passed the response-splitting checks;
    /// no pseudo-headers.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// At most 1 MiB.
    pub body: Vec<u8>,
}

/// What a stream hook returned (`proxy_action_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// 0: go on with the next plugin / upstream.
    Continue,
    /// Any other value: stop iteration until an [`Effect::Continue`] (or
    /// keep buffering the body and call the body hook again).
    Pause,
}

/// A plugin failed in a hook: it trapped, ran out of fuel or memory,
/// exited, returned `false` from `proxy_on_vm_start`/`proxy_on_configure`,
/// or the hook was called with an unknown context id. The proxy makes some
/// of its own (see [`FaultKind`]) for a plugin it did not run or that
/// misbehaved between calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The plugin's name.
    pub plugin: String,
    /// The export that failed, e.g. `proxy_on_request_headers`.
    pub hook: &'static str,
    /// What happened, decided where the fault was made: callers match on
    /// this, never on `reason`.
    pub kind: FaultKind,
    /// What happened, in words, for logs.
    pub reason: String,
}

/// What kind of failure a [`Fault`] is. The VM (`vm.rs`) makes `Trap`,
/// `Fuel`, `Memory` and `Exit`, after which the instance is broken
/// ([`PluginVm::is_broken`]), and `Rejected`, `UnknownContext` and `Broken`,
/// after which it is not. The proxy's plugin layer makes the others, about
/// plugins it did not run or that ended a stream between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A wasm trap: `unreachable` (a Rust panic), an out-of-bounds access,
    /// a stack overflow, or a host invariant the plugin broke.
    Trap,
    /// The call used up its CPU budget (`fuel`).
    Fuel,
    /// A trap after the plugin's `memory_limit` refused to grow its memory
    /// during the call (an allocator aborting, typically), or an instance
    /// whose memory does not fit the limit at all.
    Memory,
    /// `proc_exit` with this code (outside start-up, or non-zero in it).
    Exit(i32),
    /// `false` from `proxy_on_vm_start` or `proxy_on_configure`: the plugin
    /// rejected its configuration. The instance stays usable.
    Rejected,
    /// The host named a context or call this instance does not have (it
    /// was finished or deleted already). The instance stays usable.
    UnknownContext,
    /// A call into an instance an earlier fault broke.
    Broken,
    /// Not run: the route's root context is backing off after repeated
    /// failures.
    Backoff,
    /// The instance that held this request's context was discarded after
    /// another request's failure (collateral damage).
    ContextGone,
    /// The plugin kept the stream paused longer than the proxy allows.
    PauseTimeout,
    /// The plugin reset the stream (`proxy_close_stream`).
    Reset,
}

impl FaultKind {
    /// The kind's name in logs, metrics (`kind` label) and test files.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Fuel => "fuel",
            FaultKind::Memory => "memory",
            FaultKind::Exit(_) => "exit",
            FaultKind::Rejected => "rejected",
            FaultKind::UnknownContext => "unknown_context",
            FaultKind::Broken => "broken",
            FaultKind::Backoff => "backoff",
            FaultKind::ContextGone => "gone",
            FaultKind::PauseTimeout => "timeout",
            FaultKind::Reset => "reset",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {:?} failed in {}: {}",
            self.plugin, self.hook, self.reason
        )
    }
}

impl std::error::Error for Fault {}
