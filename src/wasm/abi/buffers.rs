//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`,
//! `proxy_get_buffer_status`, and 0.1.0's `proxy_get_configuration`.
//!
//! Only the configuration buffers exist so far, each readable in the hook
//! the spec names: `VM_CONFIGURATION` in `proxy_on_vm_start`,
//! `PLUGIN_CONFIGURATION` in `proxy_on_configure`. Any other buffer is
//! `NOT_FOUND`, which every SDK accepts. Bodies are not lent to plugins yet.

use wasmi::Caller;

use crate::wasm::host::{Hook, HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::types::{BufferType, Status};

pub(super) fn proxy_get_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    start: u32,
    max_size: u32,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    let buffer_type = BufferType::try_from(buffer_type)?;
    memory::check(caller, &[(ret_ptr_ptr, 4), (ret_size_ptr, 4)])?;
    let bytes = {
        let buffer = buffer(caller.data(), buffer_type).ok_or(Status::NotFound)?;
        // Clamp instead of the spec's BAD_ARGUMENT for an out-of-range
        // window (cpp-host does the same; the Rust SDK panics on
        // BAD_ARGUMENT). `usize` arithmetic cannot overflow on u32 inputs.
        let start = (start as usize).min(buffer.len());
        let end = start.saturating_add(max_size as usize).min(buffer.len());
        buffer[start..end].to_vec()
    };
    memory::copy_out(caller, &bytes, ret_ptr_ptr, ret_size_ptr)
}

pub(super) fn proxy_set_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    _start: u32,
    _size: u32,
    value_ptr: u32,
    value_size: u32,
) -> HostResult {
    let buffer_type = BufferType::try_from(buffer_type)?;
    memory::check(caller, &[(value_ptr, value_size)])?;
    // No writable buffer exists yet. The spec's NOT_FOUND would make the Rust
    // SDK panic, so the write is dropped with OK.
    log::debug!(target: caller.data().log_target(), "ignored write to unavailable buffer {buffer_type:?}");
    Ok(())
}

pub(super) fn proxy_get_buffer_status(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    ret_size_ptr: u32,
    ret_flags_ptr: u32,
) -> HostResult {
    let buffer_type = BufferType::try_from(buffer_type)?;
    memory::check(caller, &[(ret_size_ptr, 4), (ret_flags_ptr, 4)])?;
    let len = buffer(caller.data(), buffer_type)
        .ok_or(Status::NotFound)?
        .len();
    memory::write_u32(caller, ret_size_ptr, u32::try_from(len).unwrap_or(u32::MAX))?;
    Ok(memory::write_u32(caller, ret_flags_ptr, 0)?)
}

/// 0.1.0: the configuration of the running hook (`proxy_on_vm_start` or
/// `proxy_on_configure`), else empty. 0.1.0 hosts only ever return OK.
pub(super) fn proxy_get_configuration(
    caller: &mut Caller<'_, HostState>,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    let state = caller.data();
    let bytes = match state.hook {
        Hook::VmStart => state.plugin.spec.vm_config.clone(),
        Hook::Configure => state.plugin_configuration.clone(),
        Hook::Idle | Hook::Http => Vec::new(),
    };
    memory::copy_out(caller, &bytes, ret_ptr_ptr, ret_size_ptr)
}

/// The buffer `buffer_type` if the running hook may read it.
fn buffer(state: &HostState, buffer_type: BufferType) -> Option<&[u8]> {
    match (buffer_type, state.hook) {
        (BufferType::VmConfiguration, Hook::VmStart) => Some(&state.plugin.spec.vm_config),
        (BufferType::PluginConfiguration, Hook::Configure) => Some(&state.plugin_configuration),
        _ => None,
    }
}
