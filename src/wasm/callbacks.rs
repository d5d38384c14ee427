//! The callbacks of [`PluginVm`] beyond start-up and headers: body and
//! trailer hooks, HTTP call responses, ticks and queue notifications, plus
//! the hand-over of what plugins asked for in between ([`Effect`]s, tick
//! periods) and the proxy-supplied policies (`CallTargets`,
//! `QueueNotifier`).
//!
//! Owns which exchange each callback lends and which context starts out
//! effective (cpp-host's rules: call responses, ticks and queue
//! notifications go to the root context; the SDKs switch to the HTTP
//! context themselves with `proxy_set_effective_context`). Knows nothing
//! about how the proxy buffers bodies, performs calls or schedules ticks.

use std::time::Duration;

use super::host::Hook;
use super::vm::{len32, Lend};
use super::{
    shared, Action, CallTargets, Effect, Exchange, Fault, FaultKind, HttpCall, PluginVm,
    QueueNotifier, StreamHooks,
};

impl PluginVm {
    /// Which of the optional body and trailer hooks the module exports; the
    /// proxy needs to read bodies and trailers for a plugin only if it has
    /// them.
    pub fn stream_hooks(&self) -> StreamHooks {
        StreamHooks {
            request_body: self.exports.on_request_body.is_some(),
            response_body: self.exports.on_response_body.is_some(),
            request_trailers: self.exports.on_request_trailers.is_some(),
            response_trailers: self.exports.on_response_trailers.is_some(),
        }
    }

    /// `proxy_on_request_body(ctx, body_size, end_of_stream)` with
    /// `body_size = exchange.request_body.len()`; the plugin reads and edits
    /// `exchange.request_body` as `HTTP_REQUEST_BODY`. After a
    /// [`Action::Pause`] the proxy keeps buffering and calls again with the
    /// whole body so far (Envoy's cumulative `body_size`). A module that does
    /// not export it continues.
    ///
    /// # Errors
    ///
    /// An unknown `ctx` (the VM stays usable), or a trap.
    pub fn on_request_body(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        let params = (
            ctx,
            len32(exchange.request_body.len()),
            u32::from(end_of_stream),
        );
        let f = self.exports.on_request_body;
        self.action_hook("proxy_on_request_body", f, ctx, params, exchange)
    }

    /// `proxy_on_response_body`, like [`PluginVm::on_request_body`] with
    /// `exchange.response_body` (`HTTP_RESPONSE_BODY`).
    ///
    /// # Errors
    ///
    /// An unknown `ctx` (the VM stays usable), or a trap.
    pub fn on_response_body(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        let params = (
            ctx,
            len32(exchange.response_body.len()),
            u32::from(end_of_stream),
        );
        let f = self.exports.on_response_body;
        self.action_hook("proxy_on_response_body", f, ctx, params, exchange)
    }

    /// `proxy_on_request_trailers(ctx, num_trailers)`, with
    /// `exchange.request_trailers` as `HTTP_REQUEST_TRAILERS` (map type 1).
    ///
    /// # Errors
    ///
    /// An unknown `ctx` (the VM stays usable), or a trap.
    pub fn on_request_trailers(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
    ) -> Result<Action, Fault> {
        let params = (ctx, len32(exchange.request_trailers.len()));
        let f = self.exports.on_request_trailers;
        self.action_hook("proxy_on_request_trailers", f, ctx, params, exchange)
    }

    /// `proxy_on_response_trailers(ctx, num_trailers)`, with
    /// `exchange.response_trailers` as `HTTP_RESPONSE_TRAILERS` (map type 3).
    ///
    /// # Errors
    ///
    /// An unknown `ctx` (the VM stays usable), or a trap.
    pub fn on_response_trailers(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
    ) -> Result<Action, Fault> {
        let params = (ctx, len32(exchange.response_trailers.len()));
        let f = self.exports.on_response_trailers;
        self.action_hook("proxy_on_response_trailers", f, ctx, params, exchange)
    }

    /// Delivers the answer to `call` (an [`Effect::HttpCall`] of this VM):
    /// `proxy_on_http_call_response(call.root, call.call_id, num_headers,
    /// body_size, num_trailers)`, counted from `exchange.call_response` (all
    /// 0 when it is `None`: the call failed or timed out). During it the
    /// response is readable as `HTTP_CALL_RESPONSE_HEADERS`, `_BODY` and
    /// `_TRAILERS`, and `proxy_get_status` says whether the call succeeded.
    ///
    /// `exchange` must be the exchange of `call.context` (an empty one for a
    /// root-context call, or when that stream is gone): once the plugin
    /// switches to that context it may edit headers and bodies, send a local
    /// response (into `exchange.local_response`) or resume the stream (an
    /// [`Effect::Continue`]).
    ///
    /// # Errors
    ///
    /// A call this VM is not waiting for, e.g. one answered already or one
    /// dispatched by an earlier VM (the VM stays usable), or a trap.
    pub fn on_http_call_response(
        &mut self,
        call: &HttpCall,
        exchange: &mut Exchange,
    ) -> Result<(), Fault> {
        const HOOK: &str = "proxy_on_http_call_response";
        self.check_usable(HOOK)?;
        let state = self.store.data_mut();
        if state.pending_calls.get(&call.call_id) != Some(&(call.root, call.context)) {
            let reason = format!("no HTTP call {} is in flight", call.call_id);
            return Err(self.fault_msg(HOOK, FaultKind::UnknownContext, reason));
        }
        state.pending_calls.remove(&call.call_id);
        self.check_root(HOOK, call.root)?;
        let Some(f) = self.exports.on_http_call_response else {
            return Ok(());
        };
        let (headers, body, trailers) = exchange.call_response.as_ref().map_or((0, 0, 0), |r| {
            (
                len32(r.headers.len()),
                len32(r.body.len()),
                len32(r.trailers.len()),
            )
        });
        let lend = Lend {
            hook: Hook::CallResponse,
            context: call.root,
            owner: Some(call.context),
        };
        let params = (call.root, call.call_id, headers, body, trailers);
        self.call(HOOK, f, params, lend, exchange)
    }

    /// `proxy_on_tick(root)`, for a root in [`PluginVm::tick_periods`]. No
    /// exchange is lent.
    ///
    /// # Errors
    ///
    /// An unknown `root` (the VM stays usable), or a trap.
    pub fn on_tick(&mut self, root: u32) -> Result<(), Fault> {
        const HOOK: &str = "proxy_on_tick";
        self.check_usable(HOOK)?;
        self.check_root(HOOK, root)?;
        let Some(f) = self.exports.on_tick else {
            return Ok(());
        };
        let lend = Lend::bare(Hook::Root, root);
        self.invoke(HOOK, f, root, lend)
    }

    /// `proxy_on_queue_ready(root, queue_id)`, after the [`QueueNotifier`]
    /// reported an enqueue. No exchange is lent.
    ///
    /// # Errors
    ///
    /// An unknown `root` (the VM stays usable), or a trap.
    pub fn on_queue_ready(&mut self, root: u32, queue_id: u32) -> Result<(), Fault> {
        const HOOK: &str = "proxy_on_queue_ready";
        self.check_usable(HOOK)?;
        self.check_root(HOOK, root)?;
        let Some(f) = self.exports.on_queue_ready else {
            return Ok(());
        };
        let lend = Lend::bare(Hook::Root, root);
        self.invoke(HOOK, f, (root, queue_id), lend)
    }

    /// Drains what plugins asked for during earlier calls, in order. Call
    /// it after every call into the VM.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.store.data_mut().effects)
    }

    /// Every root context with a tick period (set with
    /// `proxy_set_tick_period_milliseconds`, usually in `on_configure`; 0
    /// removes it), by root id. Read it again after each call into the VM.
    pub fn tick_periods(&self) -> Vec<(u32, Duration)> {
        self.store
            .data()
            .tick_periods
            .iter()
            .map(|(&root, &period)| (root, period))
            .collect()
    }

    /// Which upstream ids `proxy_http_call` may target (`host:port` targets
    /// are always allowed). Without it only `host:port` works.
    pub fn set_call_targets(&mut self, targets: CallTargets) {
        self.store.data_mut().call_targets = Some(targets);
    }

    /// How to deliver `proxy_on_queue_ready` to this VM: every successful
    /// enqueue on a queue one of its root contexts registered (from any VM,
    /// on any thread) calls `notify(root, queue_id)`. It is called from
    /// inside other VMs' host calls, so it must only hand the event over
    /// (e.g. send it on a channel) and never block or call into a VM.
    pub fn set_queue_notifier(&mut self, notify: QueueNotifier) {
        shared::set_notifier(self.store.data().vm_uid, notify);
    }
}
