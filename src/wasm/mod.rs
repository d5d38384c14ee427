//! The proxy-wasm host: runs Envoy/APISIX/Kong-style plugins in the wasmi
//! interpreter. This file is the whole API the proxy sees.
//!
//! Lifecycle: build one [`Engine`] per process; [`Plugin::load`] each
//! configured `.wasm` once (compiled, checked, shared via `Arc` by all
//! threads); on each worker thread [`PluginVm::start`] one VM per plugin and
//! keep it. Per (route, plugin conf) pair call [`PluginVm::configure`] (it is
//! cached); per request [`PluginVm::create_http_context`], then the header
//! hooks with the request's [`Exchange`], then [`PluginVm::finish`]. On any
//! [`Fault`] with [`PluginVm::is_broken`], drop the VM and start a new one.
//!
//! What the proxy must do in return:
//! - honour [`Exchange::local_response`]: once a plugin has set it, send that
//!   reply and ignore a `Continue` the plugin returns afterwards (spec: a
//!   local response stops the filter chain);
//! - decide what [`Action::Pause`] without a local response means: nothing
//!   can resume a stream yet (no `proxy_http_call`), and APISIX simply goes
//!   on;
//! - call [`PluginVm::finish`] for every context it created, or the plugin
//!   keeps that context's state;
//! - use new VMs after a configuration reload: root contexts are kept per
//!   `configure` key for the VM's lifetime;
//! - build with wasmi's `auto-dispatch` feature: without it a debug build
//!   overflows the native stack on any long-running plugin call.
//!
//! Layout: `plugin.rs` (engine, load, linking), `vm.rs` (instance and
//! lifecycle), `exports.rs` (callbacks the module exports), `host.rs` (the
//! store data host functions see), `abi/` (one file per spec area of `env`
//! host functions), `wasi.rs`, `memory.rs` (guest memory), `pairs.rs` (the
//! header-map wire format), `shared.rs` (process-wide shared data, queues,
//! metrics), `types.rs` (the spec's enums). Only this directory imports
//! wasmi; it knows nothing about sockets, HTTP framing, routing or config
//! files.

mod abi;
mod exports;
mod host;
mod memory;
mod pairs;
mod pending;
mod plugin;
mod shared;
mod types;
mod vm;
mod wasi;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::headers::HeaderMap;

// The whole API is exported even where the proxy does not use it yet
// (`LoadError` by name, the metrics export).
#[allow(unused_imports)]
pub use plugin::{
    Engine, LoadError, Plugin, PluginSpec, DEFAULT_FUEL_PER_CALLBACK, DEFAULT_MEMORY_LIMIT,
};
#[allow(unused_imports)]
pub use shared::metrics_snapshot;
#[allow(unused_imports)]
pub use types::MetricKind;
pub use vm::PluginVm;

/// The per-request data plugins can see and edit. The proxy owns it and
/// lends it to the VM for the duration of each hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
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
    /// serialized path (segments joined by NUL).
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
    /// Request headers, with `:method`, `:path` and `:authority`.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    pub timeout: std::time::Duration,
}

/// Something a plugin asked for during a call that the proxy carries out
/// afterwards; drained with [`PluginVm::take_effects`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(dead_code)] // constructed by the host functions once they record effects
pub enum Effect {
    /// `proxy_http_call` succeeded: perform the call.
    HttpCall(HttpCall),
    /// `proxy_continue_stream` (or 0.1.0 `continue_request`/`_response`).
    Continue { context: u32, response: bool },
    /// `proxy_close_stream`: reset the stream.
    Close { context: u32, response: bool },
    /// `proxy_send_local_response` for a context whose exchange was not
    /// lent to this call (e.g. from a tick).
    LocalResponse {
        context: u32,
        response: LocalResponse,
    },
    /// `proxy_done`: the context finished after `proxy_on_done` said false.
    Done { context: u32 },
}

/// Which optional stream hooks a plugin exports (the proxy calls body and
/// trailer hooks only when some plugin on the route has them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamHooks {
    pub request_body: bool,
    pub response_body: bool,
    pub request_trailers: bool,
    pub response_trailers: bool,
}

/// Delivers `proxy_on_queue_ready` across threads: called (from any
/// thread) with (root context id, queue id) when an item is enqueued on a
/// queue a root context of this VM registered.
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

/// What a headers hook returned (`proxy_action_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// 0: go on with the next plugin / upstream.
    Continue,
    /// Any other value: stop iteration (pausing is not supported yet).
    Pause,
}

/// A plugin failed in a hook: it trapped, ran out of fuel, exited, returned
/// `false` from `proxy_on_vm_start`/`proxy_on_configure`, or the hook was
/// called with an unknown context id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The plugin's name.
    pub plugin: String,
    /// The export that failed, e.g. `proxy_on_request_headers`.
    pub hook: &'static str,
    /// What happened.
    pub reason: String,
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
