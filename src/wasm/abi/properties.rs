//! Properties: `proxy_get_property`, `proxy_set_property`.
//!
//! No property is exposed yet: every read is NOT_FOUND (which SDKs treat as
//! "absent") and every write is accepted and dropped. Pointers are still
//! checked.

use wasmi::Caller;

use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::types::Status;

pub(super) fn proxy_get_property(
    caller: &mut Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    memory::check(
        caller,
        &[(path_ptr, path_size), (ret_ptr_ptr, 4), (ret_size_ptr, 4)],
    )?;
    Err(Status::NotFound.into())
}

pub(super) fn proxy_set_property(
    caller: &mut Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> HostResult {
    Ok(memory::check(
        caller,
        &[(path_ptr, path_size), (value_ptr, value_size)],
    )?)
}
