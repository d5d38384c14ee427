//! Properties: `proxy_get_property`, `proxy_set_property`.
//!
//! Reads come from [`crate::wasm::properties`] (the attribute table and
//! encodings live there): plugin attributes always, stream attributes while
//! the effective context is the HTTP context whose exchange is lent.
//! Writes go to that exchange's `properties` (shadowing computed values for
//! the rest of the request; the proxy may read them too, e.g. APISIX's
//! `wasm_process_req_body`). A write with no stream to hold it (root
//! context, tick, another context) is dropped with a warning and answered
//! OK, the only status the Rust SDK accepts.

use wasmi::Caller;

use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::properties;
use crate::wasm::types::Status;

/// Longest property path looked up; longer ones are NOT_FOUND.
const MAX_PATH: u32 = 4096;

/// Most bytes (paths plus values) a plugin may set on one request.
pub(crate) const MAX_SET_PROPERTY_BYTES: usize = 1 << 20;

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
    if path_size > MAX_PATH {
        return Err(Status::NotFound.into());
    }
    let path = memory::read(caller, path_ptr, path_size)?;
    let state = caller.data();
    let value = properties::get(&path, &state.plugin.spec, state.stream_exchange())
        .ok_or(Status::NotFound)?;
    memory::copy_out(caller, &value, ret_ptr_ptr, ret_size_ptr)
}

pub(super) fn proxy_set_property(
    caller: &mut Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> HostResult {
    memory::check(caller, &[(path_ptr, path_size), (value_ptr, value_size)])?;
    if caller.data().stream_exchange().is_none() {
        caller.data_mut().warn_once(
            "set_property",
            "proxy_set_property outside a stream callback of its own context: ignored",
        );
        return Ok(());
    }
    let size = path_size as usize + value_size as usize;
    let held: usize = caller.data().stream_exchange().map_or(0, |ex| {
        ex.properties.iter().map(|(p, v)| p.len() + v.len()).sum()
    });
    if held + size > MAX_SET_PROPERTY_BYTES {
        caller.data_mut().warn_once(
            "set_property full",
            format_args!("proxy_set_property: over {MAX_SET_PROPERTY_BYTES} bytes of properties on one request: ignored"),
        );
        return Ok(());
    }
    let path = memory::read(caller, path_ptr, path_size)?;
    let value = memory::read(caller, value_ptr, value_size)?;
    if let Some(ex) = caller.data_mut().stream_exchange_mut() {
        ex.properties.retain(|(p, _)| *p != path);
        ex.properties.push((path, value));
    }
    Ok(())
}
