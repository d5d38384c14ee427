//! Context lifecycle and timers: `proxy_done`,
//! `proxy_set_effective_context`, `proxy_set_tick_period_milliseconds`.
//!
//! Owns only the host side of the context table that `vm.rs` maintains.
//! Every status here is OK except an unknown context id for
//! `proxy_set_effective_context` (BAD_ARGUMENT, which the Rust SDK accepts):
//! Envoy's NOT_FOUND from `proxy_done` for a context that is not waiting
//! would make the Rust SDK panic.

use std::time::Duration;

use wasmi::Caller;

use crate::wasm::host::{HostResult, HostState};
use crate::wasm::types::Status;
use crate::wasm::Effect;

/// Ends the effective context's wait after its `proxy_on_done` returned
/// false: records [`Effect::Done`] once, and the proxy then calls
/// `PluginVm::complete`. Called during that very `proxy_on_done`, it makes
/// the context done at once. Otherwise there is nothing to finish (Envoy
/// answers NOT_FOUND), so it is ignored.
pub(super) fn proxy_done(caller: &mut Caller<'_, HostState>) -> HostResult {
    let state = caller.data_mut();
    let ctx = state.effective_context;
    if let Some((running, called)) = &mut state.in_on_done {
        if *running == ctx {
            *called = true;
            return Ok(());
        }
    }
    match state.awaiting_done.get_mut(&ctx) {
        Some(signalled @ false) => {
            *signalled = true;
            state.effects.push(Effect::Done { context: ctx });
        }
        Some(true) => {}
        None => {
            log::debug!(target: state.log_target(), "[{ctx}] proxy_done: the context is not waiting; ignored")
        }
    }
    Ok(())
}

/// Any live root or HTTP context of this VM (including one waiting for
/// `proxy_done`) may become effective.
pub(super) fn proxy_set_effective_context(
    caller: &mut Caller<'_, HostState>,
    context_id: u32,
) -> HostResult {
    let state = caller.data_mut();
    if !state.contexts.contains_key(&context_id) {
        return Err(Status::BadArgument.into());
    }
    state.effective_context = context_id;
    Ok(())
}

/// Sets (0: clears) the tick period of the effective context's root, as
/// Envoy does; the proxy reads them with `PluginVm::tick_periods`.
pub(super) fn proxy_set_tick_period_milliseconds(
    caller: &mut Caller<'_, HostState>,
    period_ms: u32,
) -> HostResult {
    let state = caller.data_mut();
    let Some(root) = state.root_of(state.effective_context) else {
        state.warn_once(
            "set_tick_period_milliseconds",
            "proxy_set_tick_period_milliseconds outside any context: ignored",
        );
        return Ok(());
    };
    if period_ms == 0 {
        state.tick_periods.remove(&root);
    } else {
        let period = Duration::from_millis(u64::from(period_ms));
        state.tick_periods.insert(root, period);
    }
    Ok(())
}
