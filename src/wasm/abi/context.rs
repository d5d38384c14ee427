//! Context lifecycle and timers: `proxy_done`,
//! `proxy_set_effective_context`, `proxy_set_tick_period_milliseconds`.
//!
//! Owns only the host side of the context table that `vm.rs` maintains.
//! `proxy_on_tick` is not delivered yet, so setting a period is accepted and
//! ignored.

use wasmi::Caller;

use crate::wasm::host::{HostResult, HostState};
use crate::wasm::types::Status;

pub(super) fn proxy_done(_caller: &mut Caller<'_, HostState>) -> HostResult {
    // The proxy finishes every context right after `proxy_on_done`, so there
    // is never a context pending finalization to complete.
    Ok(())
}

pub(super) fn proxy_set_effective_context(
    caller: &mut Caller<'_, HostState>,
    context_id: u32,
) -> HostResult {
    let state = caller.data_mut();
    if !state.contexts.contains_key(&context_id) {
        return Err(Status::BadArgument.into());
    }
    state.active_context = context_id;
    Ok(())
}

pub(super) fn proxy_set_tick_period_milliseconds(
    caller: &mut Caller<'_, HostState>,
    period_ms: u32,
) -> HostResult {
    log::trace!(target: caller.data().log_target(), "tick period {period_ms} ms requested (ticks are not delivered yet)");
    Ok(())
}
