//! PLACEHOLDER for the stream API of issue 3 (bodies, trailers, calls,
//! ticks, queues, effects): signatures only, so the proxy can be written
//! against them. Replaced by the real implementation in `vm.rs`.
#![allow(unused_variables, dead_code)]

use super::{
    Action, CallTargets, Effect, Exchange, Fault, HttpCall, PluginVm, QueueNotifier, StreamHooks,
};
use std::time::Duration;

impl PluginVm {
    pub fn stream_hooks(&self) -> StreamHooks {
        StreamHooks::default()
    }
    pub fn on_request_body(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        Ok(Action::Continue)
    }
    pub fn on_response_body(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
        end_of_stream: bool,
    ) -> Result<Action, Fault> {
        Ok(Action::Continue)
    }
    pub fn on_request_trailers(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
    ) -> Result<Action, Fault> {
        Ok(Action::Continue)
    }
    pub fn on_response_trailers(
        &mut self,
        ctx: u32,
        exchange: &mut Exchange,
    ) -> Result<Action, Fault> {
        Ok(Action::Continue)
    }
    pub fn on_http_call_response(
        &mut self,
        call: &HttpCall,
        exchange: &mut Exchange,
    ) -> Result<(), Fault> {
        Ok(())
    }
    pub fn on_tick(&mut self, root: u32) -> Result<(), Fault> {
        Ok(())
    }
    pub fn on_queue_ready(&mut self, root: u32, queue_id: u32) -> Result<(), Fault> {
        Ok(())
    }
    pub fn take_effects(&mut self) -> Vec<Effect> {
        Vec::new()
    }
    pub fn tick_periods(&self) -> Vec<(u32, Duration)> {
        Vec::new()
    }
    pub fn set_call_targets(&mut self, targets: CallTargets) {}
    pub fn set_queue_notifier(&mut self, notify: QueueNotifier) {}
    pub fn complete(&mut self, ctx: u32, exchange: &mut Exchange) -> Result<(), Fault> {
        Ok(())
    }
}
