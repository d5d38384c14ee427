//! Outgoing calls: `proxy_http_call`, `proxy_grpc_*`,
//! `proxy_call_foreign_function`.
//!
//! None is supported yet. Each checks its pointers (INVALID_MEMORY_ACCESS,
//! as the spec asks) and then fails with a status the Rust SDK accepts
//! without panicking: INTERNAL_FAILURE for starting a call, NOT_FOUND for an
//! id that cannot exist or an unknown foreign function. The first attempt
//! per VM is logged at warn so operators learn why a plugin misbehaves.

use wasmi::Caller;

use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::types::Status;

#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(super) fn proxy_http_call(
    caller: &mut Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_size: u32,
    headers_ptr: u32,
    headers_size: u32,
    body_ptr: u32,
    body_size: u32,
    trailers_ptr: u32,
    trailers_size: u32,
    _timeout_ms: u32,
    ret_call_id_ptr: u32,
) -> HostResult {
    memory::check(
        caller,
        &[
            (upstream_ptr, upstream_size),
            (headers_ptr, headers_size),
            (body_ptr, body_size),
            (trailers_ptr, trailers_size),
            (ret_call_id_ptr, 4),
        ],
    )?;
    unsupported(caller, "proxy_http_call", Status::InternalFailure)
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(super) fn proxy_grpc_call(
    caller: &mut Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_size: u32,
    service_ptr: u32,
    service_size: u32,
    method_ptr: u32,
    method_size: u32,
    metadata_ptr: u32,
    metadata_size: u32,
    msg_ptr: u32,
    msg_size: u32,
    _timeout_ms: u32,
    ret_call_id_ptr: u32,
) -> HostResult {
    memory::check(
        caller,
        &[
            (upstream_ptr, upstream_size),
            (service_ptr, service_size),
            (method_ptr, method_size),
            (metadata_ptr, metadata_size),
            (msg_ptr, msg_size),
            (ret_call_id_ptr, 4),
        ],
    )?;
    unsupported(caller, "proxy_grpc_call", Status::InternalFailure)
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(super) fn proxy_grpc_stream(
    caller: &mut Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_size: u32,
    service_ptr: u32,
    service_size: u32,
    method_ptr: u32,
    method_size: u32,
    metadata_ptr: u32,
    metadata_size: u32,
    ret_stream_id_ptr: u32,
) -> HostResult {
    memory::check(
        caller,
        &[
            (upstream_ptr, upstream_size),
            (service_ptr, service_size),
            (method_ptr, method_size),
            (metadata_ptr, metadata_size),
            (ret_stream_id_ptr, 4),
        ],
    )?;
    unsupported(caller, "proxy_grpc_stream", Status::InternalFailure)
}

pub(super) fn proxy_grpc_send(
    caller: &mut Caller<'_, HostState>,
    _stream_id: u32,
    msg_ptr: u32,
    msg_size: u32,
    _end_stream: u32,
) -> HostResult {
    memory::check(caller, &[(msg_ptr, msg_size)])?;
    Err(Status::NotFound.into())
}

pub(super) fn proxy_grpc_cancel(
    _caller: &mut Caller<'_, HostState>,
    _call_or_stream_id: u32,
) -> HostResult {
    Err(Status::NotFound.into())
}

pub(super) fn proxy_grpc_close(
    _caller: &mut Caller<'_, HostState>,
    _call_or_stream_id: u32,
) -> HostResult {
    Err(Status::NotFound.into())
}

pub(super) fn proxy_call_foreign_function(
    caller: &mut Caller<'_, HostState>,
    name_ptr: u32,
    name_size: u32,
    args_ptr: u32,
    args_size: u32,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    memory::check(
        caller,
        &[
            (name_ptr, name_size),
            (args_ptr, args_size),
            (ret_ptr_ptr, 4),
            (ret_size_ptr, 4),
        ],
    )?;
    Err(Status::NotFound.into())
}

fn unsupported(
    caller: &mut Caller<'_, HostState>,
    call: &'static str,
    status: Status,
) -> HostResult {
    let state = caller.data_mut();
    if state.warned.insert(call) {
        log::warn!(target: state.log_target(), "[{}] {call} is not supported yet; answering {status:?}", state.active_context);
    }
    Err(status.into())
}
