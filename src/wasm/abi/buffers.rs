//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`,
//! `proxy_get_buffer_status`, and 0.1.0's `proxy_get_configuration`.
//!
//! Each buffer is readable where the spec (and Envoy) allow it:
//! `VM_CONFIGURATION` in `proxy_on_vm_start`, `PLUGIN_CONFIGURATION` in
//! `proxy_on_configure`, `HTTP_CALL_RESPONSE_BODY` in
//! `proxy_on_http_call_response` (when the call got a response), and the
//! request and response bodies whenever the effective context is the HTTP
//! context whose exchange is lent: in its body hooks, but also in its other
//! callbacks, e.g. while paused and resumed from a call response. Anything
//! else is NOT_FOUND, which every SDK accepts for a read.
//!
//! Only the two bodies are writable. `proxy_set_buffer_bytes(start, size)`
//! replaces `size` bytes at `start` (both clamped to the body), so
//! `start = 0, size = 0` prepends, `start >= len` appends, and the Rust
//! SDK's `set_http_*_body(0, usize::MAX, ..)` replaces everything (Envoy
//! only supports those three; the spec allows any window). A write that
//! cannot apply (another buffer, another context, over `MAX_BODY_BYTES`) is
//! dropped with a warning and answered OK: the Rust SDK panics on any other
//! status here.

use wasmi::Caller;

use crate::wasm::host::{Hook, HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::types::{BufferType, Status};

/// Largest body a plugin may make with `proxy_set_buffer_bytes`.
pub(crate) const MAX_BODY_BYTES: usize = 64 << 20;

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
    start: u32,
    size: u32,
    value_ptr: u32,
    value_size: u32,
) -> HostResult {
    let buffer_type = BufferType::try_from(buffer_type)?;
    memory::check(caller, &[(value_ptr, value_size)])?;
    let len = match body(caller.data_mut(), buffer_type) {
        Some(body) => body.len(),
        None => {
            caller.data_mut().warn_once(
                "set_buffer_bytes",
                format_args!(
                    "proxy_set_buffer_bytes: {buffer_type:?} is not writable here; write ignored"
                ),
            );
            return Ok(());
        }
    };
    let start = (start as usize).min(len);
    let end = start.saturating_add(size as usize).min(len);
    let new_len = len - (end - start) + value_size as usize;
    if new_len > MAX_BODY_BYTES {
        caller.data_mut().warn_once(
            "set_buffer_bytes size",
            format_args!("proxy_set_buffer_bytes: a body of {new_len} bytes is over the {MAX_BODY_BYTES}-byte limit; write ignored"),
        );
        return Ok(());
    }
    let value = memory::read(caller, value_ptr, value_size)?;
    // Moving the tail costs like copying it.
    memory::charge(caller, len - end)?;
    let body = body(caller.data_mut(), buffer_type).expect("checked above, nothing changed it");
    body.splice(start..end, value);
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
        _ => Vec::new(),
    };
    memory::copy_out(caller, &bytes, ret_ptr_ptr, ret_size_ptr)
}

/// The buffer `buffer_type` if the plugin may read it now.
fn buffer(state: &HostState, buffer_type: BufferType) -> Option<&[u8]> {
    match (buffer_type, state.hook) {
        (BufferType::VmConfiguration, Hook::VmStart) => Some(&state.plugin.spec.vm_config),
        (BufferType::PluginConfiguration, Hook::Configure) => Some(&state.plugin_configuration),
        (BufferType::HttpCallResponseBody, Hook::CallResponse) => {
            state.exchange.call_response.as_ref().map(|r| &r.body[..])
        }
        (BufferType::HttpRequestBody, _) => state.stream_exchange().map(|e| &e.request_body[..]),
        (BufferType::HttpResponseBody, _) => state.stream_exchange().map(|e| &e.response_body[..]),
        _ => None,
    }
}

/// The body `buffer_type` names, if the plugin may edit it now.
fn body(state: &mut HostState, buffer_type: BufferType) -> Option<&mut Vec<u8>> {
    let exchange = state.stream_exchange_mut()?;
    match buffer_type {
        BufferType::HttpRequestBody => Some(&mut exchange.request_body),
        BufferType::HttpResponseBody => Some(&mut exchange.response_body),
        _ => None,
    }
}
