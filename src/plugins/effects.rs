//! What plugins ask for besides a request's own verdict: calls, resumes,
//! resets and local responses aimed at other contexts, and `proxy_done`.
//! Keeps the requests paused by a plugin (where to send what wakes them)
//! and the contexts whose `proxy_on_done` said "not yet"; performs calls
//! as tasks on the worker, so they never block another request, and
//! delivers answers to calls made outside a request to their root context.
//! A call's target is resolved with the configuration the call serves: a
//! request's calls with the gateway the request was routed with (the one
//! its instance checked the target against), other calls with the
//! worker's current one; never through the process-wide `Live`.

use super::calls;
use super::chain::Event;
use super::supervisor::Blame;
use super::{key, CallAnswers, Mode, PluginKey, Plugins};
use crate::gateway::Gateway;
use crate::wasm::{
    CallResponse, Effect, Exchange, ExchangeData, Fault, FaultKind, HttpCall, Plugin,
};
use smol::channel::Sender;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

/// Names a context of one instance: (plugin, instance generation, id).
type ContextKey = (PluginKey, u64, u32);

/// Streams the worker keeps track of between calls into their instance.
#[derive(Default)]
pub(super) struct Streams {
    /// Requests paused by a plugin, by HTTP context: where to send what
    /// resumes or ends them.
    paused: RefCell<HashMap<ContextKey, Sender<Event>>>,
    /// Contexts whose `proxy_on_done` said "not yet": completed on
    /// `proxy_done`.
    pending_done: RefCell<HashSet<ContextKey>>,
}

impl Streams {
    /// Instance `generation` of plugin `k` was discarded: paused requests
    /// that had a context in it are woken to fail, and contexts waiting
    /// for `proxy_done` in it are forgotten.
    pub(super) fn forget_instance(&self, k: PluginKey, generation: u64) {
        self.paused.borrow_mut().retain(|&(p, g, _), events| {
            let gone = p == k && g == generation;
            if gone {
                let _ = events.try_send(Event::Gone);
            }
            !gone
        });
        self.pending_done
            .borrow_mut()
            .retain(|&(p, g, _)| p != k || g != generation);
    }

    /// Ends every pause now (the test bench's expiry).
    pub(super) fn expire_pauses(&self) {
        for events in self.paused.borrow().values() {
            events.close();
        }
    }
}

/// How a call is performed (see [`Plugins::how_to_perform`]).
enum Perform {
    /// Over the network, to this target.
    Network(calls::Target),
    /// By the test script.
    Scripted(CallAnswers),
}

impl Perform {
    /// The call's response; `None` when it failed.
    async fn perform(self, call: &HttpCall) -> Option<CallResponse> {
        match self {
            Perform::Network(target) => calls::perform(target, call).await,
            Perform::Scripted(answer) => answer(call),
        }
    }
}

impl Plugins {
    /// Registers a paused request's event channel.
    pub(super) fn pause(
        &self,
        plugin: &Arc<Plugin>,
        generation: u64,
        ctx: u32,
        events: Sender<Event>,
    ) {
        self.streams
            .paused
            .borrow_mut()
            .insert((key(plugin), generation, ctx), events);
    }

    /// Forgets a paused request's event channel.
    pub(super) fn unpause(&self, plugin: &Arc<Plugin>, generation: u64, ctx: u32) {
        self.streams
            .paused
            .borrow_mut()
            .remove(&(key(plugin), generation, ctx));
    }

    /// Remembers that `ctx` finishes when the plugin calls `proxy_done`.
    pub(super) fn await_done(&self, plugin: &Arc<Plugin>, generation: u64, ctx: u32) {
        self.streams
            .pending_done
            .borrow_mut()
            .insert((key(plugin), generation, ctx));
    }

    /// Carries out what instance `generation` of a plugin asked for that no
    /// paused request of the caller's handles: calls from root contexts
    /// (resolved with `gateway`, the configuration the caller serves), and
    /// calls, resumes, resets, local responses and `proxy_done` aimed at
    /// other contexts (a paused request performs the calls of its context
    /// with its own configuration).
    pub(super) fn dispatch(
        &self,
        plugin: &Arc<Plugin>,
        generation: u64,
        gateway: &Gateway,
        effects: Vec<Effect>,
    ) {
        let k = key(plugin);
        for effect in effects {
            let context = match &effect {
                Effect::HttpCall(call) => call.context,
                Effect::Continue { context, .. }
                | Effect::Close { context, .. }
                | Effect::LocalResponse { context, .. }
                | Effect::Done { context } => *context,
            };
            let waiting = self
                .streams
                .paused
                .borrow()
                .get(&(k, generation, context))
                .cloned();
            match (effect, waiting) {
                (Effect::HttpCall(call), None) => {
                    self.spawn_root_call(Arc::clone(plugin), generation, gateway, call);
                }
                (Effect::Done { context }, _) => self.complete(plugin, generation, context),
                (effect, Some(tx)) => {
                    let _ = tx.try_send(Event::from_effect(effect));
                }
                (effect, None) => log::debug!(
                    "plugin {:?}: {effect:?} for a context that is not paused; ignored",
                    plugin.name()
                ),
            }
        }
    }

    /// Performs `call`, made by a paused request routed with `gateway`, and
    /// sends its outcome to that request.
    pub(super) fn spawn_call(&self, call: HttpCall, gateway: &Gateway, to: Sender<Event>) {
        let how = self.how_to_perform(gateway, &call);
        self.executor
            .spawn(async move {
                let response = how.perform(&call).await;
                let _ = to.send(Event::CallDone(Box::new((call, response)))).await;
            })
            .detach();
    }

    /// Performs a call made outside any request's pause (e.g. from
    /// `on_tick`) and delivers the response to its root context, if its
    /// instance is still the live one.
    fn spawn_root_call(
        &self,
        plugin: Arc<Plugin>,
        generation: u64,
        gateway: &Gateway,
        call: HttpCall,
    ) {
        let Some(me) = self.me.upgrade() else { return };
        let how = self.how_to_perform(gateway, &call);
        self.executor
            .spawn(async move {
                let response = how.perform(&call).await;
                let mut ex = Exchange::from(ExchangeData {
                    call_response: response,
                    ..ExchangeData::default()
                });
                let blame = Blame::Context(call.root);
                let delivered = me.run(&plugin, generation, blame, |vm| {
                    vm.on_http_call_response(&call, &mut ex)
                });
                me.settle_root_call(&plugin, generation, delivered);
            })
            .detach();
    }

    /// How `call` is performed: where it goes is decided now, with
    /// `gateway` (an upstream id's node is picked by its balancer), so the
    /// task performing it holds no configuration; under `tinygate test`
    /// the script answers it.
    fn how_to_perform(&self, gateway: &Gateway, call: &HttpCall) -> Perform {
        match &self.mode {
            Mode::Scripted(answers) => Perform::Scripted(Rc::clone(answers)),
            Mode::Serving => Perform::Network(calls::Target::of(gateway, &call.target)),
        }
    }

    /// `proxy_done` arrived for a context whose `on_done` said "not yet".
    fn complete(&self, plugin: &Arc<Plugin>, generation: u64, ctx: u32) {
        let waiting = (key(plugin), generation, ctx);
        if !self.streams.pending_done.borrow_mut().remove(&waiting) {
            return;
        }
        let mut ex = Exchange::default();
        let completed = self.run(plugin, generation, Blame::Context(ctx), |vm| {
            vm.complete(ctx, &mut ex)
        });
        self.settle_root_call(plugin, generation, completed);
    }

    /// Dispatches the effects of a call made outside any request, or logs
    /// its fault. Returns false when the instance is gone.
    pub(super) fn settle_root_call(
        &self,
        plugin: &Arc<Plugin>,
        generation: u64,
        result: Result<((), Vec<Effect>), Fault>,
    ) -> bool {
        match result {
            Ok(((), effects)) => {
                let gateway = self.configs.current();
                self.dispatch(plugin, generation, &gateway, effects);
            }
            Err(fault) if fault.kind == FaultKind::ContextGone => return false,
            Err(fault) if fault.kind == FaultKind::UnknownContext => log::debug!("{fault}"),
            Err(fault) => log::warn!("{fault}"),
        }
        true
    }
}
