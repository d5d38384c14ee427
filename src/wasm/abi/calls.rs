//! Outgoing calls: `proxy_http_call`, `proxy_grpc_*`,
//! `proxy_call_foreign_function`.
//!
//! `proxy_http_call` validates the request as Envoy does and hands it to
//! the proxy as an [`Effect::HttpCall`]: the target must be an upstream id
//! the proxy knows (its `CallTargets`) or a `host:port` with a numeric
//! port, and the headers must carry `:method`, `:path` and `:authority`
//! (proxy-wasm-rust-sdk#172; the first two non-empty, while an empty
//! `:authority` is accepted as Envoy does); anything else, including a malformed or
//! unsafe header map, is BAD_ARGUMENT, which the SDKs report to the plugin.
//! A timeout of 0 means the plugin gave none: [`DEFAULT_CALL_TIMEOUT`].
//! The call id is unique per VM; the call belongs to the effective context
//! and is answered on its root (cpp-host). Each rejection is explained at
//! warn once per VM.
//!
//! gRPC is not supported: it needs HTTP/2, which tinygate does not speak
//! upstream. Those calls check their pointers (INVALID_MEMORY_ACCESS) and
//! fail with statuses the Rust SDK accepts: INTERNAL_FAILURE to start one,
//! NOT_FOUND for an id. `proxy_call_foreign_function` knows no function, so
//! every name is NOT_FOUND (Envoy's answer for an unknown name).

use std::time::Duration;

use wasmi::Caller;

use super::headers::valid_field;
use crate::http::HeaderMap;
use crate::wasm::host::{HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::pairs::{self, MAX_PAIRS_BYTES};
use crate::wasm::types::Status;
use crate::wasm::{Effect, HttpCall};

/// Longest `proxy_http_call` target (an upstream id or `host:port`).
const MAX_TARGET: u32 = 1024;

/// Largest `proxy_http_call` request body.
pub(crate) const MAX_CALL_BODY: u32 = 16 << 20;

/// The timeout of a `proxy_http_call` whose plugin passed 0 (the Rust SDK
/// passes `Duration::ZERO`'s 0 when a plugin gives none, the Go SDK the
/// caller's number as is). Envoy sends such a call with no timeout at all
/// (`Context::httpCall` sets one only for a positive value), so it may wait
/// forever; tinygate bounds it, since a call that never ends holds a
/// connection and one of the VM's [`MAX_PENDING_CALLS`] slots for good. 30 s
/// is as long as a request may stay paused (`chain::PAUSE_TIMEOUT`): a
/// request waiting on the call meets the same limit either way, and a call
/// made from a root context (a tick) gets the same patience.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Most HTTP calls one VM may have in flight.
pub(crate) const MAX_PENDING_CALLS: usize = 1024;

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
    timeout_ms: u32,
    ret_call_id_ptr: u32,
) -> HostResult {
    let args = CallArgs {
        target: (upstream_ptr, upstream_size),
        headers: (headers_ptr, headers_size),
        body: (body_ptr, body_size),
        trailers: (trailers_ptr, trailers_size),
    };
    memory::check(
        caller,
        &[
            args.target,
            args.headers,
            args.body,
            args.trailers,
            (ret_call_id_ptr, 4),
        ],
    )?;
    let context = caller.data().effective_context;
    let Some(root) = caller.data().root_of(context) else {
        return reject(
            caller,
            "http_call: no context",
            "proxy_http_call outside any context",
        );
    };
    let raw = read_call(caller, &args)?;
    let request = check_call(caller, raw)?;
    if caller.data().pending_calls.len() >= MAX_PENDING_CALLS {
        caller.data_mut().warn_once(
            "http_call: pending",
            format_args!("proxy_http_call: {MAX_PENDING_CALLS} calls already in flight"),
        );
        return Err(Status::InternalFailure.into());
    }
    let call_id = next_call_id(caller.data_mut());
    memory::write_u32(caller, ret_call_id_ptr, call_id)?;
    let state = caller.data_mut();
    state.pending_calls.insert(call_id, (root, context));
    state.effects.push(Effect::HttpCall(HttpCall {
        call_id,
        root,
        context,
        target: request.target,
        headers: request.headers,
        body: request.body,
        trailers: request.trailers,
        timeout: match timeout_ms {
            0 => DEFAULT_CALL_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        },
    }));
    Ok(())
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

/// Where a `proxy_http_call`'s request is in guest memory: (pointer,
/// size) of each part.
struct CallArgs {
    target: (u32, u32),
    headers: (u32, u32),
    body: (u32, u32),
    trailers: (u32, u32),
}

/// A call's request as the guest passed it, not yet checked.
struct RawCall {
    target: Vec<u8>,
    headers: Vec<u8>,
    body: Vec<u8>,
    trailers: Vec<u8>,
}

/// A call's request once [`check_call`] accepted it.
struct CallRequest {
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: HeaderMap,
}

/// Copies a call's parts out of guest memory, refusing any part over its
/// limit before copying anything.
///
/// # Errors
/// BAD_ARGUMENT for a part over its limit; a memory error or a trap from
/// reading.
fn read_call(caller: &mut Caller<'_, HostState>, args: &CallArgs) -> HostResult<RawCall> {
    if args.target.1 > MAX_TARGET
        || args.headers.1 as usize > MAX_PAIRS_BYTES
        || args.trailers.1 as usize > MAX_PAIRS_BYTES
        || args.body.1 > MAX_CALL_BODY
    {
        return reject(
            caller,
            "http_call: size",
            "proxy_http_call: target, headers, body or trailers too large",
        );
    }
    let mut read = |(ptr, size): (u32, u32)| memory::read(caller, ptr, size);
    Ok(RawCall {
        target: read(args.target)?,
        headers: read(args.headers)?,
        body: read(args.body)?,
        trailers: read(args.trailers)?,
    })
}

/// Checks a call's request as Envoy does, in Envoy's order: a UTF-8
/// target, well-formed header and trailer maps, valid fields, the
/// `:method`, `:path` and `:authority` headers, then a target that is a
/// known upstream or a `host:port`.
///
/// # Errors
/// BAD_ARGUMENT for the first check that fails, explained once per VM.
fn check_call(caller: &mut Caller<'_, HostState>, raw: RawCall) -> HostResult<CallRequest> {
    let Ok(target) = String::from_utf8(raw.target) else {
        return reject(
            caller,
            "http_call: target",
            "proxy_http_call: the target is not UTF-8",
        );
    };
    let (Ok(headers), Ok(trailers)) = (pairs::parse(&raw.headers), pairs::parse(&raw.trailers))
    else {
        return reject(
            caller,
            "http_call: pairs",
            "proxy_http_call: malformed header or trailer map",
        );
    };
    if let Some((name, _)) = headers
        .iter()
        .chain(&trailers)
        .find(|(n, v)| !valid_field(n, v))
    {
        let msg = format!(
            "proxy_http_call: invalid header {:?}",
            String::from_utf8_lossy(name)
        );
        return reject(caller, "http_call: field", msg);
    }
    let mut header_map = HeaderMap::with_capacity(headers.len());
    header_map.set_all(headers);
    let mut trailer_map = HeaderMap::new();
    trailer_map.set_all(trailers);
    // Envoy asks only that `:authority` be there (`Host() == nullptr` in
    // its `httpCall`): an empty one is how the Go SDK's examples call a
    // cluster, and the proxy then names the target in `Host`. An empty
    // `:method` or `:path` could not make a request line.
    let absent = |name: &str| match header_map.get(name.as_bytes()) {
        None => true,
        Some(value) => value.is_empty() && name != ":authority",
    };
    if let Some(missing) = [":method", ":path", ":authority"]
        .into_iter()
        .find(|name| absent(name))
    {
        let msg = format!("proxy_http_call: the request has no {missing} header");
        return reject(caller, "http_call: pseudo", msg);
    }
    let known = caller
        .data()
        .call_targets
        .as_ref()
        .is_some_and(|known| known(&target));
    if !known && !is_host_port(&target) {
        let msg = format!("proxy_http_call: {target:?} is neither a known upstream nor host:port");
        return reject(caller, "http_call: target", msg);
    }
    Ok(CallRequest {
        target,
        headers: header_map,
        body: raw.body,
        trailers: trailer_map,
    })
}

/// True for `host:port` with a non-empty host (an IPv6 literal in
/// brackets) and a numeric port in 1..=65535.
fn is_host_port(target: &str) -> bool {
    let Some((host, port)) = target.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && !host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b"/?#@".contains(&b))
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    port_ok && host_ok
}

/// A call id not in flight, never 0.
fn next_call_id(state: &mut HostState) -> u32 {
    loop {
        state.last_call_id = state.last_call_id.wrapping_add(1);
        let id = state.last_call_id;
        if id != 0 && !state.pending_calls.contains_key(&id) {
            return id;
        }
    }
}

/// Refuses a call with BAD_ARGUMENT, explaining why once per VM and `key`.
fn reject<T>(
    caller: &mut Caller<'_, HostState>,
    key: &'static str,
    why: impl std::fmt::Display,
) -> HostResult<T> {
    caller.data_mut().warn_once(key, why);
    Err(Status::BadArgument.into())
}

fn unsupported(
    caller: &mut Caller<'_, HostState>,
    call: &'static str,
    status: Status,
) -> HostResult {
    let state = caller.data_mut();
    if state.warned.insert(call) {
        log::warn!(target: state.log_target(), "[{}] {call} is not supported yet; answering {status:?}", state.effective_context);
    }
    Err(status.into())
}

#[cfg(test)]
mod tests {
    use super::is_host_port;

    #[test]
    fn host_port_targets() {
        for ok in ["127.0.0.1:8080", "auth.internal:80", "[::1]:443", "a:65535"] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "auth",
            "auth:",
            ":80",
            "a:0",
            "a:65536",
            "a:+80",
            "a:8o",
            "::1:80",
            "a b:80",
            "http://a:80",
            "a/b:80",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
