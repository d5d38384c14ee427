//! Logging and clocks: `proxy_log`, `proxy_get_log_level`,
//! `proxy_get_current_time_nanoseconds`.
//!
//! Plugin messages go to the `log` crate under the target
//! `wasm::<plugin name>`, prefixed with the active context id. `proxy_log`
//! never fails on a bad level (the Rust SDK panics on anything but `OK`):
//! unknown levels are clamped to `CRITICAL`. Knows nothing about HTTP.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmi::Caller;

use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::types::LogLevel;

/// Longest message logged from one call; the rest is cut off (the whole
/// range is still bounds-checked).
pub(crate) const MAX_LOG_MESSAGE: u32 = 64 * 1024;

pub(super) fn proxy_log(
    caller: &mut Caller<'_, HostState>,
    level: u32,
    msg_ptr: u32,
    msg_size: u32,
) -> HostResult {
    memory::check(caller, &[(msg_ptr, msg_size)])?;
    let level = LogLevel::clamped(level).to_log();
    if !log::log_enabled!(target: caller.data().log_target(), level) {
        return Ok(());
    }
    let shown = msg_size.min(MAX_LOG_MESSAGE);
    let bytes = memory::read(caller, msg_ptr, shown)?;
    let cut = if shown < msg_size {
        "… (truncated)"
    } else {
        ""
    };
    let state = caller.data();
    log::log!(
        target: state.log_target(),
        level,
        "[{}] {}{cut}",
        state.effective_context,
        String::from_utf8_lossy(&bytes)
    );
    Ok(())
}

pub(super) fn proxy_get_log_level(
    caller: &mut Caller<'_, HostState>,
    ret_level_ptr: u32,
) -> HostResult {
    let level = LogLevel::from_filter(log::max_level());
    Ok(memory::write_u32(caller, ret_level_ptr, level as u32)?)
}

pub(super) fn proxy_get_current_time_nanoseconds(
    caller: &mut Caller<'_, HostState>,
    ret_time_ptr: u32,
) -> HostResult {
    Ok(memory::write_u64(caller, ret_time_ptr, unix_nanos())?)
}

/// Nanoseconds since the Unix epoch (0 for a clock set before 1970).
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
