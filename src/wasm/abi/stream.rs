//! Stream control and local replies: `proxy_continue_stream`,
//! `proxy_close_stream`, `proxy_get_status`, `proxy_send_local_response`,
//! and 0.1.0's `proxy_continue_request`, `proxy_continue_response`,
//! `proxy_clear_route_cache`.
//!
//! Continue and close act on the effective context and become
//! [`Effect::Continue`] / [`Effect::Close`] for the proxy (one on a root
//! context has no stream and is ignored; the L4 stream types are accepted
//! no-ops). `proxy_send_local_response` stores a [`LocalResponse`] in the
//! lent exchange when the effective context owns it, and becomes an
//! [`Effect::LocalResponse`] for any other HTTP context (e.g. one switched
//! to from a tick); the proxy then replies with it and ignores a later
//! `Continue` (spec: a local response stops the filter chain). Only `OK` is
//! accepted by the Rust SDK here, so bad input is sanitized rather than
//! refused: an invalid status becomes 500, invalid header pairs and
//! framing fields are dropped, and an oversized body turns the reply into
//! an empty 500. The one exception is a header with CR, LF or NUL, refused
//! with BAD_ARGUMENT as in `headers.rs`.
//!
//! `proxy_get_status` reports how the HTTP call being delivered ended:
//! code 0 and no message when it got a response, 14 (gRPC `UNAVAILABLE`)
//! and "call failed" when it failed or timed out (the Rust SDK only needs
//! OK and a UTF-8 message). Outside a call response it is 0 and empty.

use wasmi::Caller;

use super::headers::{check_field, valid_field, warn_framing, warn_invalid};
use crate::wasm::host::Hook;
use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::pairs::{self, MAX_PAIRS_BYTES};
use crate::wasm::types::StreamType;
use crate::wasm::{Effect, LocalResponse};

/// Largest local-reply body a plugin may send.
pub(crate) const MAX_LOCAL_RESPONSE_BODY: u32 = 1 << 20;

/// Most bytes of `status_code_details` kept.
const MAX_DETAILS: u32 = 1024;

/// gRPC `UNAVAILABLE`: what `proxy_get_status` reports for a failed call.
const CALL_FAILED_CODE: u32 = 14;

pub(super) fn proxy_continue_stream(
    caller: &mut Caller<'_, HostState>,
    stream_type: u32,
) -> HostResult {
    match StreamType::try_from(stream_type)? {
        StreamType::HttpRequest => stream_effect(caller, "continue_stream", continue_request),
        StreamType::HttpResponse => stream_effect(caller, "continue_stream", continue_response),
        StreamType::Downstream | StreamType::Upstream => Ok(()),
    }
}

pub(super) fn proxy_close_stream(
    caller: &mut Caller<'_, HostState>,
    stream_type: u32,
) -> HostResult {
    match StreamType::try_from(stream_type)? {
        StreamType::HttpRequest => stream_effect(caller, "close_stream", |context| Effect::Close {
            context,
            response: false,
        }),
        StreamType::HttpResponse => {
            stream_effect(caller, "close_stream", |context| Effect::Close {
                context,
                response: true,
            })
        }
        StreamType::Downstream | StreamType::Upstream => Ok(()),
    }
}

pub(super) fn proxy_continue_request(caller: &mut Caller<'_, HostState>) -> HostResult {
    stream_effect(caller, "continue_request", continue_request)
}

pub(super) fn proxy_continue_response(caller: &mut Caller<'_, HostState>) -> HostResult {
    stream_effect(caller, "continue_response", continue_response)
}

pub(super) fn proxy_clear_route_cache(_caller: &mut Caller<'_, HostState>) -> HostResult {
    Ok(())
}

pub(super) fn proxy_get_status(
    caller: &mut Caller<'_, HostState>,
    ret_code_ptr: u32,
    ret_msg_ptr_ptr: u32,
    ret_msg_size_ptr: u32,
) -> HostResult {
    memory::check(caller, &[(ret_code_ptr, 4)])?;
    let state = caller.data();
    let (code, message): (u32, &[u8]) =
        if state.hook == Hook::CallResponse && state.exchange.call_response.is_none() {
            (CALL_FAILED_CODE, b"call failed")
        } else {
            (0, b"")
        };
    memory::copy_out(caller, message, ret_msg_ptr_ptr, ret_msg_size_ptr)?;
    Ok(memory::write_u32(caller, ret_code_ptr, code)?)
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
    let status = local_status(caller.data(), status_code);
    let (status, body) = match local_body(caller, body_ptr, body_size)? {
        Some(body) => (status, body),
        None => (500, Vec::new()),
    };
    let headers = local_headers(caller, headers_ptr, headers_size)?;
    let response = LocalResponse {
        status,
        details,
        headers,
        body,
    };
    deliver_local_response(caller.data_mut(), response);
    Ok(())
}

/// A local reply's status: the plugin's if it is one (200 to 599), else
/// 500.
fn local_status(state: &HostState, status_code: u32) -> u16 {
    match u16::try_from(status_code) {
        Ok(code @ 200..=599) => code,
        _ => {
            warn(state, &format!("invalid status {status_code}, sending 500"));
            500
        }
    }
}

/// A local reply's body, or `None` when it is over
/// [`MAX_LOCAL_RESPONSE_BODY`] (the reply is then an empty 500).
///
/// # Errors
/// A memory error or a trap from reading the body.
fn local_body(
    caller: &mut Caller<'_, HostState>,
    body_ptr: u32,
    body_size: u32,
) -> HostResult<Option<Vec<u8>>> {
    if body_size > MAX_LOCAL_RESPONSE_BODY {
        warn(
            caller.data(),
            &format!("body of {body_size} bytes is over the limit, sending an empty 500"),
        );
        return Ok(None);
    }
    memory::read(caller, body_ptr, body_size).map(Some)
}

/// A local reply's header fields, lower-cased: none when the map is over
/// the size limit or malformed; invalid fields, pseudo-headers and framing
/// fields dropped.
///
/// # Errors
/// BAD_ARGUMENT for a field with CR, LF or NUL (as `headers.rs` refuses
/// it); a memory error or a trap from reading the map.
fn local_headers(
    caller: &mut Caller<'_, HostState>,
    headers_ptr: u32,
    headers_size: u32,
) -> HostResult<Vec<(Vec<u8>, Vec<u8>)>> {
    if headers_size as usize > MAX_PAIRS_BYTES {
        warn(
            caller.data(),
            "headers are over the size limit, sending none",
        );
        return Ok(Vec::new());
    }
    let raw = memory::read(caller, headers_ptr, headers_size)?;
    let parsed = pairs::parse(&raw).unwrap_or_else(|_| {
        warn(caller.data(), "malformed serialized headers, sending none");
        Vec::new()
    });
    let call = "send_local_response";
    for (name, value) in &parsed {
        check_field(caller.data(), call, name, value)?;
    }
    Ok(parsed
        .into_iter()
        .filter(|(name, value)| {
            let ok = valid_field(name, value) && !name.starts_with(b":");
            if !ok {
                warn_invalid(caller.data(), call, name, value);
            } else if crate::http::is_framing(name) {
                warn_framing(caller.data(), call, name);
                return false;
            }
            ok
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect())
}

/// Hands a local reply to the stream it answers: the lent exchange when
/// the effective context owns it, else an effect for that HTTP context;
/// ignored (with a warning) outside an HTTP context.
fn deliver_local_response(state: &mut HostState, response: LocalResponse) {
    let ctx = state.effective_context;
    if let Some(exchange) = state.stream_exchange_mut() {
        exchange.local_response = Some(response);
    } else if state.is_http(ctx) {
        state.effects.push(Effect::LocalResponse {
            context: ctx,
            response,
        });
    } else {
        state.warn_once(
            "send_local_response",
            "proxy_send_local_response outside an HTTP context: ignored",
        );
    }
}

fn continue_request(context: u32) -> Effect {
    Effect::Continue {
        context,
        response: false,
    }
}

fn continue_response(context: u32) -> Effect {
    Effect::Continue {
        context,
        response: true,
    }
}

/// Records the effect `make(context)` for the effective context if it is
/// an HTTP context; a root context has no stream to act on.
fn stream_effect(
    caller: &mut Caller<'_, HostState>,
    call: &'static str,
    make: impl FnOnce(u32) -> Effect,
) -> HostResult {
    let state = caller.data_mut();
    let ctx = state.effective_context;
    if state.is_http(ctx) {
        state.effects.push(make(ctx));
    } else {
        state.warn_once(
            call,
            format_args!("proxy_{call} without an HTTP context in effect: ignored"),
        );
    }
    Ok(())
}

fn warn(state: &HostState, what: &str) {
    log::warn!(target: state.log_target(), "[{}] proxy_send_local_response: {what}", state.effective_context);
}
