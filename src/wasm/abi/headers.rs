//! HTTP fields: `proxy_get_header_map_size`, `_pairs`, `proxy_set_header_map_pairs`,
//! and `proxy_{get,add,replace,remove}_header_map_value`.
//!
//! The request and response headers and trailers (map types 0-3) are the
//! lent [`crate::wasm::Exchange`]'s maps, pseudo-headers included, while the
//! effective context is the HTTP context whose exchange is lent (so also
//! after `proxy_set_effective_context` back to it from a call response).
//! `HTTP_CALL_RESPONSE_HEADERS` and `_TRAILERS` (6, 7) are the call's
//! response during `proxy_on_http_call_response`, read-only. Any other map,
//! or a stream map of a context whose exchange is not lent (Envoy's root
//! context has none either), reads as empty (`NOT_FOUND` for a single
//! value), and writes to it are dropped with a warning and answered `OK`:
//! the statuses the Rust SDK accepts.
//!
//! Names and values written by plugins are checked here, because they go
//! back on the wire:
//!
//! - A CR, LF or NUL in a name or value is refused with BAD_ARGUMENT, the
//!   spec's status (RFC 9110 §5.5: these split or end a message). The Rust
//!   SDK traps on it, so the request fails under the plugin's
//!   `failure_policy`: an injection attempt never goes on as if it had
//!   worked. No client can hand a plugin such a value in a header (the
//!   parser refuses them), only in decoded data the plugin chose to copy.
//! - Any other invalid field (a name that is not an RFC 9110 token after an
//!   optional leading `:`, another control character than HTAB in a value,
//!   whitespace in a pseudo-header value) is dropped, logged at warn, and
//!   answered OK: the Rust SDK would trap on any other status.
//! - A framing field ([`crate::http::FRAMING`]: `content-length`,
//!   `transfer-encoding`, `connection`, `keep-alive`, `proxy-connection`,
//!   `te`, `upgrade`) is the proxy's: adding or replacing one is dropped
//!   with a warning naming the plugin (its log target) and answered OK, so
//!   plugins written for Envoy, which may set `content-length`, keep
//!   working. Removing one is allowed: removing `content-length` is how a
//!   plugin says it changes the body's length (Envoy's contract). A map set
//!   whole keeps the `content-length` it had if the new pairs name one, and
//!   loses it if they do not.
//!
//! Writes that would push a map past `MAX_PAIRS` entries or
//! `MAX_PAIRS_BYTES` are dropped with OK too. A malformed serialized map,
//! which no SDK produces, is BAD_ARGUMENT.

use wasmi::Caller;

use crate::http::{self, HeaderMap};
use crate::wasm::host::{Hook, HostResult, HostState};
use crate::wasm::memory;
use crate::wasm::pairs::{self, MAX_PAIRS, MAX_PAIRS_BYTES};
use crate::wasm::types::{AbiVersion, MapType, Status};

pub(super) fn proxy_get_header_map_size(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    ret_size_ptr: u32,
) -> HostResult {
    let map_type = MapType::try_from(map_type)?;
    // The spec's `return_serialized_pairs_size`: the byte size of what
    // `proxy_get_header_map_pairs` would return.
    let size = map(caller.data(), map_type).map_or(0, |m| pairs::serialized_size(m.iter()));
    Ok(memory::write_u32(
        caller,
        ret_size_ptr,
        u32::try_from(size).unwrap_or(u32::MAX),
    )?)
}

pub(super) fn proxy_get_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    let map_type = MapType::try_from(map_type)?;
    let bytes = map(caller.data(), map_type).map_or_else(Vec::new, |m| pairs::serialize(m.iter()));
    memory::copy_out(caller, &bytes, ret_ptr_ptr, ret_size_ptr)
}

pub(super) fn proxy_set_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    pairs_ptr: u32,
    pairs_size: u32,
) -> HostResult {
    let map_type = MapType::try_from(map_type)?;
    memory::check(caller, &[(pairs_ptr, pairs_size)])?;
    if pairs_size as usize > MAX_PAIRS_BYTES {
        return Err(Status::BadArgument.into());
    }
    let new_pairs = pairs::parse(&memory::read(caller, pairs_ptr, pairs_size)?)?;
    let call = "set_header_map_pairs";
    for (name, value) in &new_pairs {
        check_field(caller.data(), call, name, value)?;
    }
    if let Some((name, value)) = new_pairs.iter().find(|(n, v)| !valid_field(n, v)) {
        warn_invalid(caller.data(), call, name, value);
        return Ok(());
    }
    let state = caller.data_mut();
    let Some(m) = writable(state, map_type, call) else {
        return Ok(());
    };
    let length: Option<Vec<u8>> = m.get(b"content-length").map(<[u8]>::to_vec);
    let mut keep_length = false;
    let mut refused: Vec<&[u8]> = Vec::new();
    let pairs = new_pairs.iter().filter(|(name, value)| {
        if !http::is_framing(name) {
            return true;
        }
        let is_length = name.eq_ignore_ascii_case(b"content-length");
        keep_length |= is_length;
        if !(is_length && length.as_deref() == Some(value.as_slice())) {
            refused.push(name);
        }
        false
    });
    m.set_all(pairs.map(|(name, value)| (name, value)));
    if let Some(length) = length.filter(|_| keep_length) {
        m.add(b"content-length", &length);
    }
    for name in refused {
        warn_framing(state, call, name);
    }
    Ok(())
}

pub(super) fn proxy_get_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
    ret_ptr_ptr: u32,
    ret_size_ptr: u32,
) -> HostResult {
    let map_type = MapType::try_from(map_type)?;
    memory::check(caller, &[(ret_ptr_ptr, 4), (ret_size_ptr, 4)])?;
    let key = read_bounded(caller, key_ptr, key_size)?;
    let state = caller.data();
    let value = match map(state, map_type).and_then(|m| m.get(&key)) {
        Some(value) => value.to_vec(),
        // ABI 0.1.0 answered OK with an empty value for a missing key.
        None if state.plugin.abi == AbiVersion::V0_1_0 => Vec::new(),
        None => return Err(Status::NotFound.into()),
    };
    memory::copy_out(caller, &value, ret_ptr_ptr, ret_size_ptr)
}

pub(super) fn proxy_add_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> HostResult {
    edit(
        caller,
        map_type,
        key_ptr,
        key_size,
        value_ptr,
        value_size,
        "add_header_map_value",
        HeaderMap::add,
    )
}

pub(super) fn proxy_replace_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> HostResult {
    edit(
        caller,
        map_type,
        key_ptr,
        key_size,
        value_ptr,
        value_size,
        "replace_header_map_value",
        HeaderMap::replace,
    )
}

pub(super) fn proxy_remove_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
) -> HostResult {
    let map_type = MapType::try_from(map_type)?;
    let key = read_bounded(caller, key_ptr, key_size)?;
    if let Some(m) = writable(caller.data_mut(), map_type, "remove_header_map_value") {
        m.remove(&key);
    }
    Ok(())
}

/// Refuses a field with CR, LF or NUL in its name or value with
/// BAD_ARGUMENT, after a warning naming the plugin (see the module doc).
///
/// # Errors
/// `BadArgument` for such a field.
pub(super) fn check_field(state: &HostState, call: &str, name: &[u8], value: &[u8]) -> HostResult {
    let splits = |b: &u8| matches!(b, b'\r' | b'\n' | b'\0');
    if name.iter().any(splits) || value.iter().any(splits) {
        warn_invalid(state, call, name, value);
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

/// True if `(name, value)` may be written to a header map (see the module
/// doc): protects the HTTP serializer from response splitting.
pub(super) fn valid_field(name: &[u8], value: &[u8]) -> bool {
    let (pseudo, token) = match name.strip_prefix(b":") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let token_ok = !token.is_empty() && token.iter().all(|&b| is_tchar(b));
    let value_ok = value.iter().all(|&b| {
        let ctl = (b < 0x20 && b != b'\t') || b == 0x7f;
        !ctl && !(pseudo && (b == b' ' || b == b'\t'))
    });
    token_ok && value_ok
}

/// Logs a dropped write of a framing field at warn.
pub(super) fn warn_framing(state: &HostState, call: &str, name: &[u8]) {
    log::warn!(
        target: state.log_target(),
        "[{}] proxy_{call}: ignored {:?}: the proxy frames messages itself",
        state.effective_context,
        String::from_utf8_lossy(name),
    );
}

/// Logs one dropped write at warn, with the offending field escaped.
pub(super) fn warn_invalid(state: &HostState, call: &str, name: &[u8], value: &[u8]) {
    log::warn!(
        target: state.log_target(),
        "[{}] proxy_{call}: ignored invalid header {:?}: {:?}",
        state.effective_context,
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(value),
    );
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Shared body of `add` and `replace`.
#[allow(clippy::too_many_arguments)] // the ABI's arguments plus the operation
fn edit(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
    call: &'static str,
    op: fn(&mut HeaderMap, &[u8], &[u8]),
) -> HostResult {
    let map_type = MapType::try_from(map_type)?;
    let key = bounded_range(caller, key_ptr, key_size)?;
    let value = bounded_range(caller, value_ptr, value_size)?;
    // Both ranges were checked against this memory, which cannot shrink.
    let (mem, state) = memory::data_and_state(caller)?;
    let (Some(key), Some(value)) = (mem.get(key), mem.get(value)) else {
        return Err(Status::InvalidMemoryAccess.into());
    };
    check_field(state, call, key, value)?;
    if !valid_field(key, value) {
        warn_invalid(state, call, key, value);
        return Ok(());
    }
    if http::is_framing(key) {
        warn_framing(state, call, key);
        return Ok(());
    }
    let Some(m) = writable(state, map_type, call) else {
        return Ok(());
    };
    let grown = pairs::serialized_size(m.iter()) + 8 + key.len() + value.len() + 2;
    if m.len() >= MAX_PAIRS || grown > MAX_PAIRS_BYTES {
        let ctx = state.effective_context;
        log::warn!(target: state.log_target(), "[{ctx}] proxy_{call}: ignored, header map is full");
        return Ok(());
    }
    op(m, key, value);
    Ok(())
}

/// Checks a name's or value's whole range and charges for reading it, as
/// [`read_bounded`] does, without copying it out.
fn bounded_range(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> HostResult<std::ops::Range<usize>> {
    let r = memory::checked_range(caller, ptr, len)?;
    if r.len() > MAX_PAIRS_BYTES {
        return Err(Status::BadArgument.into());
    }
    memory::charge(caller, r.len())?;
    Ok(r)
}

/// Reads a name or value after checking its whole range; anything longer
/// than a serialized map may be is BAD_ARGUMENT.
fn read_bounded(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> HostResult<Vec<u8>> {
    memory::check(caller, &[(ptr, len)])?;
    if len as usize > MAX_PAIRS_BYTES {
        return Err(Status::BadArgument.into());
    }
    memory::read(caller, ptr, len)
}

/// The map `map_type` if the plugin may read it now (see the module doc).
fn map(state: &HostState, map_type: MapType) -> Option<&HeaderMap> {
    match (map_type, state.hook) {
        (MapType::HttpCallResponseHeaders, Hook::CallResponse) => {
            state.exchange.call_response.as_ref().map(|r| &r.headers)
        }
        (MapType::HttpCallResponseTrailers, Hook::CallResponse) => {
            state.exchange.call_response.as_ref().map(|r| &r.trailers)
        }
        _ => {
            let exchange = state.stream_exchange()?;
            match map_type {
                MapType::HttpRequestHeaders => Some(&exchange.request_headers),
                MapType::HttpRequestTrailers => Some(&exchange.request_trailers),
                MapType::HttpResponseHeaders => Some(&exchange.response_headers),
                MapType::HttpResponseTrailers => Some(&exchange.response_trailers),
                _ => None,
            }
        }
    }
}

/// The map `map_type` if the plugin may edit it now; otherwise `None`,
/// after warning (once per VM and call) that the write of `call` is dropped.
fn writable<'a>(
    state: &'a mut HostState,
    map_type: MapType,
    call: &'static str,
) -> Option<&'a mut HeaderMap> {
    let stream = matches!(
        map_type,
        MapType::HttpRequestHeaders
            | MapType::HttpRequestTrailers
            | MapType::HttpResponseHeaders
            | MapType::HttpResponseTrailers
    );
    if !stream || state.stream_exchange().is_none() {
        state.warn_once(
            call,
            format_args!("proxy_{call}: {map_type:?} is not writable here; write ignored"),
        );
        return None;
    }
    // The lent exchange, which `stream_exchange` just found to be the
    // effective stream's.
    let exchange = &mut state.exchange;
    Some(match map_type {
        MapType::HttpRequestHeaders => &mut exchange.request_headers,
        MapType::HttpRequestTrailers => &mut exchange.request_trailers,
        MapType::HttpResponseHeaders => &mut exchange.response_headers,
        _ => &mut exchange.response_trailers,
    })
}

#[cfg(test)]
mod tests {
    use super::valid_field;

    #[test]
    fn field_validation_blocks_response_splitting() {
        let ok: &[(&[u8], &[u8])] = &[
            (b"x-go-wasm", b"APISIX"),
            (b"X-Mixed_Case.1", b"a\tb c"),
            (b"x", b""),
            (b"x", "caf\u{e9}".as_bytes()), // obs-text is allowed
            (b":path", b"/a?b=c"),
            (b":status", b"200"),
        ];
        for (n, v) in ok {
            assert!(valid_field(n, v), "{n:?}: {v:?}");
        }
        let bad: &[(&[u8], &[u8])] = &[
            (b"x", b"a\r\nset-cookie: evil"),
            (b"x", b"a\nb"),
            (b"x", b"a\rb"),
            (b"x", b"a\0b"),
            (b"x", b"a\x7fb"),
            (b"x", b"a\x01b"),
            (b"", b"v"),
            (b":", b"v"),
            (b"bad name", b"v"),
            (b"bad:name", b"v"),
            (b"x\r\ny", b"v"),
            (b"na\xffme", b"v"),
            (b":path", b"/a b"),
            (b":path", b"/a\tb"),
        ];
        for (n, v) in bad {
            assert!(!valid_field(n, v), "{n:?}: {v:?}");
        }
    }
}
