//! The route's plugins for one request: one HTTP context per plugin in this
//! worker's instances, and every hook of the stream run through them in
//! priority order (APISIX order, in every phase).
//!
//! A plugin may pause the stream (return `Pause`); the request then waits,
//! without blocking the worker, for what resumes it: `proxy_continue_stream`,
//! a local response, or the answer to a `proxy_http_call` it made (whose
//! response callback runs with this request's exchange lent). A paused
//! stream has a time limit.
//!
//! A plugin that fails (its instance trapped, ran out of fuel or memory,
//! could not start or configure, the route's root context is backing off
//! after repeated failures, or the instance holding this request's context
//! was discarded after another request's failure) fails the request under
//! `fail_closed`, the default (`503`, as APISIX answers in the request and
//! header phases). The last case is counted as a collateral failure of
//! this request's route. Under `fail_open` it is skipped for the
//! rest of that request, which goes on as if the plugin had returned
//! `Continue`; each such failure is logged once, with plugin, hook, route
//! and reason. Once the response head has gone out, a failure fails the
//! request whatever the policy, and the proxy closes the connection rather
//! than send a body edited only in part. A plugin that resets the stream or
//! keeps it paused too long is not failing: that ends the request under
//! either policy. This module knows plugins and the exchange, not sockets.

use super::{Plugins, RootKey, RootRef};
use crate::config::{FailurePolicy, Route};
use crate::gateway::Gateway;
use crate::wasm::{
    Action, CallResponse, Effect, Exchange, Fault, FaultKind, HttpCall, LocalResponse, Plugin,
    StreamHooks,
};
use smol::channel::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

/// How long a plugin may keep a stream paused.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the plugins decided about a request or response.
pub enum Verdict {
    Continue,
    /// A plugin answered itself (`proxy_send_local_response`).
    Respond(LocalResponse),
    /// A plugin failed, reset the stream, or stayed paused too long.
    Fail(Fault),
}

/// What the plugins decided about a piece of body.
pub enum BodyVerdict {
    /// Every plugin let it through: forward the (possibly edited) body.
    Continue,
    /// Plugin `i` wants more: keep buffering and call again from `i`.
    Buffer(usize),
    Respond(LocalResponse),
    Fail(Fault),
}

/// What can wake a paused request.
#[derive(Debug)]
pub enum Event {
    /// A `proxy_http_call` it made finished (`None`: failed or timed out).
    CallDone(Box<(HttpCall, Option<CallResponse>)>),
    /// `proxy_continue_stream` for its context.
    Continue,
    /// `proxy_close_stream` for its context.
    Close,
    /// A local response sent for its context from another callback.
    Respond(LocalResponse),
    /// Its context went with an instance another request's failure
    /// discarded.
    Gone,
    /// A `proxy_http_call` made for its context from another callback: the
    /// request performs it with its own configuration.
    Call(HttpCall),
}

impl Event {
    pub fn from_effect(effect: Effect) -> Event {
        match effect {
            Effect::Continue { .. } => Event::Continue,
            Effect::LocalResponse { response, .. } => Event::Respond(response),
            Effect::HttpCall(call) => Event::Call(call),
            Effect::Close { .. } | Effect::Done { .. } => Event::Close,
        }
    }
}

/// Which phase a hook belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
}

/// One plugin's context in this request.
struct Context {
    plugin: Arc<Plugin>,
    /// The instance the context lives in.
    generation: u64,
    /// The route's plugin entry: the root context this one belongs to.
    key: RootKey,
    id: u32,
    policy: FailurePolicy,
    /// The plugin failed open: skipped for the rest of the request.
    skipped: bool,
}

/// The route's plugins for one request.
pub struct Chain<'w> {
    plugins: &'w Plugins,
    /// The configuration the request was routed with: calls are checked
    /// and resolved with it.
    gateway: &'w Gateway,
    contexts: Vec<Context>,
    /// The route's id, for logs.
    route: Box<str>,
    /// Set once the response head went out: failures can no longer be
    /// skipped.
    response_started: bool,
    /// Set once a plugin answered locally: later `Continue`s are ignored.
    answered: bool,
    /// The optional hooks some plugin of the route exports.
    pub hooks: StreamHooks,
}

impl<'w> Chain<'w> {
    /// Creates an HTTP context in every plugin of `route` (configuring the
    /// route's root context on first use); a `fail_open` plugin that fails
    /// to is left out of the chain.
    ///
    /// # Errors
    /// The first `fail_closed` plugin that fails to start or configure,
    /// with the chain so far (whose contexts the caller still finishes).
    pub fn start(
        plugins: &'w Plugins,
        gateway: &'w Gateway,
        route: &Route,
    ) -> Result<Chain<'w>, Box<(Chain<'w>, Fault)>> {
        // Global rules' plugins first, then the route's: in every phase
        // (each hook runs the contexts in this order), as APISIX runs
        // global rules before the route's plugins in each phase.
        let global = &gateway.config.routes.global_plugins;
        let mut chain = Chain {
            plugins,
            gateway,
            contexts: Vec::with_capacity(global.len() + route.plugins.len()),
            route: route.id.as_str().into(),
            response_started: false,
            answered: false,
            hooks: StreamHooks::default(),
        };
        for rp in global.iter().chain(&route.plugins) {
            let plugin = &gateway.plugins[rp.plugin];
            let root = RootRef {
                key: rp.key,
                route: &route.id,
                gateway,
            };
            let created = plugins.start_context(plugin, root, |vm| {
                let root = vm.configure(rp.key, &rp.conf)?;
                let hooks = vm.stream_hooks();
                vm.create_http_context(root).map(|ctx| (ctx, hooks))
            });
            match created {
                Ok(((id, hooks), generation, effects)) => {
                    plugins.dispatch(plugin, generation, gateway, effects);
                    chain.hooks.request_body |= hooks.request_body;
                    chain.hooks.response_body |= hooks.response_body;
                    chain.hooks.request_trailers |= hooks.request_trailers;
                    chain.hooks.response_trailers |= hooks.response_trailers;
                    chain.contexts.push(Context {
                        plugin: Arc::clone(plugin),
                        generation,
                        key: rp.key,
                        id,
                        policy: rp.policy,
                        skipped: false,
                    });
                }
                Err(fault) if rp.policy == FailurePolicy::FailOpen => {
                    log_fail_open(&fault, &chain.route);
                    plugins.failed_open(plugin, &chain.route);
                }
                Err(fault) => return Err(Box::new((chain, fault))),
            }
        }
        Ok(chain)
    }

    /// The response head went out: from now on a failing plugin fails the
    /// request whatever its policy (the proxy then closes the connection).
    pub fn response_started(&mut self) {
        self.response_started = true;
    }

    /// `proxy_on_request_headers` in every plugin, in order.
    pub async fn on_request_headers(&mut self, ex: &mut Exchange, end_of_stream: bool) -> Verdict {
        for i in 0..self.contexts.len() {
            let verdict = self
                .run(
                    i,
                    Phase::Request,
                    ex,
                    "proxy_on_request_headers",
                    |vm, ctx, ex| vm.on_request_headers(ctx, ex, end_of_stream),
                )
                .await;
            match verdict {
                Verdict::Continue => {}
                Verdict::Respond(local) => return self.respond_from(i, local, ex).await,
                fail => return fail,
            }
        }
        Verdict::Continue
    }

    /// `proxy_on_response_headers` in every plugin, in order.
    pub async fn on_response_headers(&mut self, ex: &mut Exchange, end_of_stream: bool) -> Verdict {
        match self
            .response_headers_upto(self.contexts.len(), ex, end_of_stream)
            .await
        {
            // The local response replaces the upstream's: its status and
            // headers go out, not the upstream's around its body.
            Verdict::Respond(local) => {
                ex.response_headers = local_response_headers(&local);
                Verdict::Respond(local)
            }
            other => other,
        }
    }

    /// `proxy_on_request_body` from plugin `from` on, with the body in
    /// `ex.request_body` (cumulative while a plugin buffers).
    pub async fn on_request_body(
        &mut self,
        ex: &mut Exchange,
        end_of_stream: bool,
        from: usize,
    ) -> BodyVerdict {
        self.body(Phase::Request, ex, end_of_stream, from).await
    }

    /// `proxy_on_response_body`, like [`Chain::on_request_body`].
    pub async fn on_response_body(
        &mut self,
        ex: &mut Exchange,
        end_of_stream: bool,
        from: usize,
    ) -> BodyVerdict {
        self.body(Phase::Response, ex, end_of_stream, from).await
    }

    /// `proxy_on_request_trailers` in every plugin.
    pub async fn on_request_trailers(&mut self, ex: &mut Exchange) -> Verdict {
        self.every_plugin(
            Phase::Request,
            ex,
            "proxy_on_request_trailers",
            |vm, ctx, ex| vm.on_request_trailers(ctx, ex),
        )
        .await
    }

    /// `proxy_on_response_trailers` in every plugin.
    pub async fn on_response_trailers(&mut self, ex: &mut Exchange) -> Verdict {
        self.every_plugin(
            Phase::Response,
            ex,
            "proxy_on_response_trailers",
            |vm, ctx, ex| vm.on_response_trailers(ctx, ex),
        )
        .await
    }

    /// Runs `hook` in every plugin, in order, until one does not continue.
    async fn every_plugin(
        &mut self,
        phase: Phase,
        ex: &mut Exchange,
        hook: &'static str,
        f: fn(&mut crate::wasm::PluginVm, u32, &mut Exchange) -> Result<Action, Fault>,
    ) -> Verdict {
        for i in 0..self.contexts.len() {
            let verdict = self.run(i, phase, ex, hook, f).await;
            if !matches!(verdict, Verdict::Continue) {
                return verdict;
            }
        }
        Verdict::Continue
    }

    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` in every plugin
    /// (a plugin whose `on_done` says "not yet" is completed when it calls
    /// `proxy_done`). A context whose instance was discarded is gone, and
    /// the failure that discarded it was already logged.
    pub fn finish(self, ex: &mut Exchange) {
        for c in &self.contexts {
            if !self.plugins.is_live(&c.plugin, c.generation) {
                log::debug!(
                    "plugin {:?}: context {} went with its discarded instance",
                    c.plugin.name(),
                    c.id
                );
                continue;
            }
            let finished = self
                .plugins
                .with_context(&c.plugin, c.generation, self.root(c), |vm| {
                    vm.finish(c.id, ex)
                });
            match finished {
                Ok((done, effects)) => {
                    if !done {
                        self.plugins.await_done(&c.plugin, c.generation, c.id);
                    }
                    self.plugins
                        .dispatch(&c.plugin, c.generation, self.gateway, effects);
                    if !c.skipped {
                        self.plugins.completed(&c.plugin, c.key);
                    }
                }
                Err(fault) => log::warn!("route {:?}: {fault}", self.route),
            }
        }
    }

    async fn response_headers_upto(
        &mut self,
        upto: usize,
        ex: &mut Exchange,
        end_of_stream: bool,
    ) -> Verdict {
        for i in 0..upto {
            if self.contexts[i].skipped {
                continue;
            }
            let verdict = self
                .run(
                    i,
                    Phase::Response,
                    ex,
                    "proxy_on_response_headers",
                    |vm, ctx, ex| vm.on_response_headers(ctx, ex, end_of_stream),
                )
                .await;
            if !matches!(verdict, Verdict::Continue) {
                return verdict;
            }
        }
        Verdict::Continue
    }

    /// Plugin `i` answered locally during the request phase: the plugins
    /// that saw the request, the one that answered included, see the local
    /// response's headers, as Envoy encodes a local reply through every
    /// filter that decoded the request (the Rust SDK's `http_headers`
    /// example logs its own answer's headers there) and APISIX runs every
    /// plugin's `header_filter` on a `core.response.exit`.
    async fn respond_from(&mut self, i: usize, local: LocalResponse, ex: &mut Exchange) -> Verdict {
        ex.response_headers = local_response_headers(&local);
        match Box::pin(self.response_headers_upto(i + 1, ex, local.body.is_empty())).await {
            Verdict::Continue => Verdict::Respond(local),
            other => other,
        }
    }

    async fn body(
        &mut self,
        phase: Phase,
        ex: &mut Exchange,
        end_of_stream: bool,
        from: usize,
    ) -> BodyVerdict {
        let hook = match phase {
            Phase::Request => "proxy_on_request_body",
            Phase::Response => "proxy_on_response_body",
        };
        for i in from..self.contexts.len() {
            let c = &self.contexts[i];
            if c.skipped {
                continue;
            }
            let result = self
                .plugins
                .with_context(&c.plugin, c.generation, self.root(c), |vm| match phase {
                    Phase::Request => vm.on_request_body(c.id, ex, end_of_stream),
                    Phase::Response => vm.on_response_body(c.id, ex, end_of_stream),
                });
            let (action, effects) = match result {
                Ok(ran) => ran,
                Err(fault) => match self.fail_open(i, fault) {
                    None => continue,
                    Some(fault) => return BodyVerdict::Fail(fault),
                },
            };
            if let Some(local) = self.take_local(ex) {
                return BodyVerdict::Respond(local);
            }
            let calls = effects.iter().any(
                |e| matches!(e, Effect::HttpCall(call) if call.context == self.contexts[i].id),
            );
            if action == Action::Pause && !end_of_stream && !calls {
                // Envoy semantics: buffer, and call again with the
                // cumulative body once more of it has arrived.
                self.dispatch(i, effects);
                return BodyVerdict::Buffer(i);
            }
            let verdict = self.settle(i, phase, ex, action, effects, hook).await;
            match verdict {
                Verdict::Continue => {}
                Verdict::Respond(local) => return BodyVerdict::Respond(local),
                Verdict::Fail(fault) => return BodyVerdict::Fail(fault),
            }
        }
        BodyVerdict::Continue
    }

    /// Runs one hook of plugin `i`, then waits out a pause.
    async fn run(
        &mut self,
        i: usize,
        phase: Phase,
        ex: &mut Exchange,
        hook: &'static str,
        f: impl FnOnce(&mut crate::wasm::PluginVm, u32, &mut Exchange) -> Result<Action, Fault>,
    ) -> Verdict {
        let c = &self.contexts[i];
        if c.skipped {
            return Verdict::Continue;
        }
        let id = c.id;
        let result = self
            .plugins
            .with_context(&c.plugin, c.generation, self.root(c), |vm| f(vm, id, ex));
        match result {
            Ok((action, effects)) => self.settle(i, phase, ex, action, effects, hook).await,
            Err(fault) => self.fail_verdict(i, fault),
        }
    }

    /// Plugin `i` failed: `Continue` if it fails open (see
    /// [`Chain::fail_open`]), else the failure.
    fn fail_verdict(&mut self, i: usize, fault: Fault) -> Verdict {
        match self.fail_open(i, fault) {
            None => Verdict::Continue,
            Some(fault) => Verdict::Fail(fault),
        }
    }

    /// Plugin `i` failed. Under `fail_open`, before the response started:
    /// logs it, skips the plugin for the rest of the request and returns
    /// `None`. Otherwise returns the fault, for the request to fail with.
    fn fail_open(&mut self, i: usize, fault: Fault) -> Option<Fault> {
        let c = &mut self.contexts[i];
        if fault.kind == FaultKind::ContextGone {
            self.plugins.failed_collaterally(&c.plugin, &self.route);
        }
        if c.policy != FailurePolicy::FailOpen || self.response_started {
            return Some(fault);
        }
        log_fail_open(&fault, &self.route);
        c.skipped = true;
        self.plugins.failed_open(&c.plugin, &self.route);
        None
    }

    /// Decides what a hook's result means; on `Pause`, waits for what
    /// resumes the stream.
    async fn settle(
        &mut self,
        i: usize,
        phase: Phase,
        ex: &mut Exchange,
        action: Action,
        effects: Vec<Effect>,
        hook: &'static str,
    ) -> Verdict {
        if let Some(local) = self.take_local(ex) {
            self.dispatch(i, effects);
            return Verdict::Respond(local);
        }
        if action == Action::Continue
            && !effects
                .iter()
                .any(|e| matches!(e, Effect::HttpCall(c) if c.context == self.contexts[i].id))
        {
            return match self.apply(i, effects, None) {
                Some(Verdict::Continue) | None => Verdict::Continue,
                Some(other) => other,
            };
        }
        if action == Action::Continue {
            // A call was made but the stream was not paused: the response
            // callback still runs, on the root context, after this request
            // has moved on.
            self.dispatch(i, effects);
            return Verdict::Continue;
        }
        self.wait(i, phase, ex, effects, hook).await
    }

    /// Waits while plugin `i` keeps the stream paused.
    async fn wait(
        &mut self,
        i: usize,
        phase: Phase,
        ex: &mut Exchange,
        effects: Vec<Effect>,
        hook: &'static str,
    ) -> Verdict {
        let (tx, rx) = smol::channel::unbounded();
        let plugin = Arc::clone(&self.contexts[i].plugin);
        let (generation, id) = (self.contexts[i].generation, self.contexts[i].id);
        log::debug!(
            "route {:?}: plugin {:?} paused the request in {hook}",
            self.route,
            plugin.name()
        );
        self.plugins.pause(&plugin, generation, id, tx.clone());
        let verdict = self
            .wait_events(i, phase, ex, effects, hook, &tx, &rx)
            .await;
        self.plugins.unpause(&plugin, generation, id);
        verdict
    }

    #[allow(clippy::too_many_arguments)]
    async fn wait_events(
        &mut self,
        i: usize,
        phase: Phase,
        ex: &mut Exchange,
        effects: Vec<Effect>,
        hook: &'static str,
        tx: &Sender<Event>,
        rx: &Receiver<Event>,
    ) -> Verdict {
        if let Some(v) = self.apply(i, effects, Some(tx)) {
            return v;
        }
        let plugin = Arc::clone(&self.contexts[i].plugin);
        let generation = self.contexts[i].generation;
        loop {
            let next = smol::future::or(async { rx.recv().await.ok() }, async {
                crate::net::Timer::after(PAUSE_TIMEOUT).await;
                None
            });
            let Some(event) = next.await else {
                return Verdict::Fail(Fault {
                    plugin: plugin.name().to_string(),
                    hook,
                    kind: FaultKind::PauseTimeout,
                    reason: format!(
                        "kept the {} paused for more than {PAUSE_TIMEOUT:?}",
                        if phase == Phase::Request {
                            "request"
                        } else {
                            "response"
                        }
                    ),
                });
            };
            match event {
                Event::Continue => return Verdict::Continue,
                Event::Respond(local) => {
                    self.answered = true;
                    return Verdict::Respond(local);
                }
                Event::Close => return Verdict::Fail(reset(&plugin)),
                Event::Call(call) => self.plugins.spawn_call(call, self.gateway, tx.clone()),
                Event::Gone => {
                    let gone = Fault {
                        plugin: plugin.name().to_string(),
                        hook,
                        kind: FaultKind::ContextGone,
                        reason: "its instance was discarded after another request's failure \
                                 while the stream was paused"
                            .to_string(),
                    };
                    return self.fail_verdict(i, gone);
                }
                Event::CallDone(done) => {
                    let (call, response) = *done;
                    ex.call_response = response;
                    let c = &self.contexts[i];
                    let result =
                        self.plugins
                            .with_context(&plugin, generation, self.root(c), |vm| {
                                vm.on_http_call_response(&call, ex)
                            });
                    ex.call_response = None;
                    let effects = match result {
                        Ok(((), effects)) => effects,
                        Err(fault) => return self.fail_verdict(i, fault),
                    };
                    if let Some(local) = self.take_local(ex) {
                        self.dispatch(i, effects);
                        return Verdict::Respond(local);
                    }
                    if let Some(v) = self.apply(i, effects, Some(tx)) {
                        return v;
                    }
                }
            }
        }
    }

    /// Carries out effects of plugin `i`'s last call: those about this
    /// request's context decide the verdict (calls it made are performed
    /// and reported to `waiting`); the rest go to the worker.
    fn apply(
        &mut self,
        i: usize,
        effects: Vec<Effect>,
        waiting: Option<&Sender<Event>>,
    ) -> Option<Verdict> {
        let id = self.contexts[i].id;
        let plugin = Arc::clone(&self.contexts[i].plugin);
        let mut verdict = None;
        let mut others = Vec::new();
        for effect in effects {
            match effect {
                Effect::HttpCall(call) if call.context == id && waiting.is_some() => {
                    let tx = waiting.expect("checked is_some").clone();
                    self.plugins.spawn_call(call, self.gateway, tx);
                }
                Effect::Continue { context, .. } if context == id => {
                    verdict.get_or_insert(Verdict::Continue);
                }
                Effect::Close { context, .. } if context == id => {
                    verdict = Some(Verdict::Fail(reset(&plugin)));
                }
                Effect::LocalResponse { context, response } if context == id => {
                    self.answered = true;
                    verdict = Some(Verdict::Respond(response));
                }
                other => others.push(other),
            }
        }
        self.dispatch(i, others);
        verdict
    }

    /// Hands effects of plugin `i`'s last call to the worker.
    fn dispatch(&self, i: usize, effects: Vec<Effect>) {
        let c = &self.contexts[i];
        self.plugins
            .dispatch(&c.plugin, c.generation, self.gateway, effects);
    }

    /// The root context `c` belongs to, for the worker to charge failures.
    fn root<'a>(&'a self, c: &Context) -> RootRef<'a> {
        RootRef {
            key: c.key,
            route: &self.route,
            gateway: self.gateway,
        }
    }

    /// The local response a plugin just set, unless one was already sent.
    fn take_local(&mut self, ex: &mut Exchange) -> Option<LocalResponse> {
        let local = ex.local_response.take()?;
        if self.answered {
            return None;
        }
        self.answered = true;
        Some(local)
    }
}

/// The fault of a stream the plugin reset (`proxy_close_stream`).
fn reset(plugin: &Plugin) -> Fault {
    Fault {
        plugin: plugin.name().to_string(),
        hook: "proxy_close_stream",
        kind: FaultKind::Reset,
        reason: "the plugin reset the stream".to_string(),
    }
}

/// The one log line of a plugin failure that a request skips.
fn log_fail_open(fault: &Fault, route: &str) {
    log::warn!(
        "plugin {:?} failed in {} on route {route:?}: {}; failing open",
        fault.plugin,
        fault.hook,
        fault.reason
    );
}

/// The response map plugins see for a local response, and the one sent:
/// its status and fields, and for a body its length and, when the plugin
/// gave none, `content-type: text/plain`, as Envoy's local replies have
/// them (and APISIX's, whose nginx has `default_type text/plain`).
pub fn local_response_headers(local: &LocalResponse) -> crate::http::HeaderMap {
    let mut map = crate::http::HeaderMap::with_capacity(local.headers.len() + 3);
    map.add(b":status", local.status.to_string().as_bytes());
    for (k, v) in &local.headers {
        map.add(k, v);
    }
    if !local.body.is_empty() {
        if map.get(b"content-type").is_none() {
            map.add(b"content-type", b"text/plain");
        }
        map.add(b"content-length", local.body.len().to_string().as_bytes());
    }
    map
}
