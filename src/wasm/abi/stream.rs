//! Stream control and local replies: `proxy_continue_stream`,
//! `proxy_close_stream`, `proxy_get_status`, `proxy_send_local_response`,
//! and 0.1.0's `proxy_continue_request`, `proxy_continue_response`,
//! `proxy_clear_route_cache`.
//!
//! Pausing is not supported yet, so continue/close are accepted no-ops.
//! `proxy_send_local_response` stores a [`LocalResponse`] in the lent
//! exchange; the proxy then replies with it and ignores a later `Continue`
//! (spec: a local response stops the filter chain). Only `OK` is accepted
//! by the Rust SDK here, so bad input is sanitized rather than refused: an
//! invalid status becomes 500, invalid header pairs are dropped, and an
//! oversized body turns the reply into an empty 500.

use wasmi::Caller;

use super::headers::{valid_field, warn_invalid};
use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::pairs::{self, MAX_PAIRS_BYTES};
use crate::wasm::types::StreamType;
use crate::wasm::LocalResponse;

/// Largest local-reply body a plugin may send.
pub(crate) const MAX_LOCAL_RESPONSE_BODY: u32 = 1 << 20;

/// Most bytes of `status_code_details` kept.
const MAX_DETAILS: u32 = 1024;

pub(super) fn proxy_continue_stream(
    _caller: &mut Caller<'_, HostState>,
    stream_type: u32,
) -> HostResult {
    StreamType::try_from(stream_type)?;
    Ok(())
}

pub(super) fn proxy_close_stream(
    _caller: &mut Caller<'_, HostState>,
    stream_type: u32,
) -> HostResult {
    StreamType::try_from(stream_type)?;
    Ok(())
}

pub(super) fn proxy_continue_request(_caller: &mut Caller<'_, HostState>) -> HostResult {
    Ok(())
}

pub(super) fn proxy_continue_response(_caller: &mut Caller<'_, HostState>) -> HostResult {
    Ok(())
}

pub(super) fn proxy_clear_route_cache(_caller: &mut Caller<'_, HostState>) -> HostResult {
    Ok(())
}

/// No HTTP or gRPC call ever completes yet: code 0, empty message.
pub(super) fn proxy_get_status(
    caller: &mut Caller<'_, HostState>,
    ret_code_ptr: u32,
    ret_msg_ptr_ptr: u32,
    ret_msg_size_ptr: u32,
) -> HostResult {
    memory::check(caller, &[(ret_code_ptr, 4)])?;
    memory::copy_out(caller, &[], ret_msg_ptr_ptr, ret_msg_size_ptr)?;
    Ok(memory::write_u32(caller, ret_code_ptr, 0)?)
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(super) fn proxy_send_local_response(
    caller: &mut Caller<'_, HostState>,
    status_code: u32,
    details_ptr: u32,
    details_size: u32,
    body_ptr: u32,
    body_size: u32,
    headers_ptr: u32,
    headers_size: u32,
    _grpc_status: u32,
) -> HostResult {
    memory::check(
        caller,
        &[
            (details_ptr, details_size),
            (body_ptr, body_size),
            (headers_ptr, headers_size),
        ],
    )?;

    let details = memory::read(caller, details_ptr, details_size.min(MAX_DETAILS))?;
    let mut status = match u16::try_from(status_code) {
        Ok(code @ 200..=599) => code,
        _ => {
            warn(
                caller.data(),
                &format!("invalid status {status_code}, sending 500"),
            );
            500
        }
    };
    let body = if body_size > MAX_LOCAL_RESPONSE_BODY {
        warn(
            caller.data(),
            &format!("body of {body_size} bytes is over the limit, sending an empty 500"),
        );
        status = 500;
        Vec::new()
    } else {
        memory::read(caller, body_ptr, body_size)?
    };
    let headers = if headers_size as usize > MAX_PAIRS_BYTES {
        warn(
            caller.data(),
            "headers are over the size limit, sending none",
        );
        Vec::new()
    } else {
        let raw = memory::read(caller, headers_ptr, headers_size)?;
        let parsed = pairs::parse(&raw).unwrap_or_else(|_| {
            warn(caller.data(), "malformed serialized headers, sending none");
            Vec::new()
        });
        parsed
            .into_iter()
            .filter(|(name, value)| {
                let ok = valid_field(name, value) && !name.starts_with(b":");
                if !ok {
                    warn_invalid(caller.data(), "send_local_response", name, value);
                }
                ok
            })
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect()
    };
    caller.data_mut().exchange.local_response = Some(LocalResponse {
        status,
        details,
        headers,
        body,
    });
    Ok(())
}

fn warn(state: &HostState, what: &str) {
    log::warn!(target: state.log_target(), "[{}] proxy_send_local_response: {what}", state.active_context);
}
