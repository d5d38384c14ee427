//! What `proxy_get_property` answers: Envoy attribute names with Envoy's
//! value encodings, plus APISIX/nginx variable names as aliases.
//!
//! Owns the attribute table below and nothing else: it computes values from
//! the plugin's spec and the lent [`Exchange`]; it knows nothing about guest
//! memory (see `abi/properties.rs`) or how the proxy fills the exchange.
//!
//! A path is the property's segments joined by NUL (`request\0path`), as
//! every SDK serializes it; the same name with dots (`request.path`) is
//! accepted too. Values set by the plugin with `proxy_set_property` during
//! the request (`Exchange::properties`, matched by exact path bytes) shadow
//! everything below. An unknown name, or a value the stream does not have
//! (no `:path`, no peer address, no response yet), is `None`
//! (NOT_FOUND).
//!
//! Encodings (Envoy's, which the Go SDK's `properties` package relies on):
//! strings are raw bytes; integers are 8-byte little-endian `i64`; bools
//! are one byte (0 or 1); times are `i64` LE nanoseconds since the epoch;
//! header maps use the header-map pairs serialization.
//!
//! | path | encoding | value |
//! |---|---|---|
//! | `plugin_name` | string | the plugin's name (no exchange needed) |
//! | `plugin_root_id` | string | `PluginSpec::root_id` (no exchange needed) |
//! | `plugin_vm_id` | string | the plugin's name: one VM per plugin per worker, so the name identifies the VM (no exchange needed) |
//! | `request.path` | string | `:path`, with the query |
//! | `request.url_path` | string | `:path` without the query |
//! | `request.query` | string | the query, without `?` (empty if none) |
//! | `request.host` | string | `:authority` |
//! | `request.method` | string | `:method` |
//! | `request.scheme` | string | `:scheme` |
//! | `request.protocol` | string | `HTTP/1.1` or `HTTP/1.0` (`StreamInfo::protocol`) |
//! | `request.id` | string | `StreamInfo::request_id`, else the `x-request-id` header |
//! | `request.time` | time | `StreamInfo::start_time_ns` (0: unknown, NOT_FOUND) |
//! | `request.headers` | map | every request header in order, pseudo-headers included (Envoy's header map holds them too); repeated names stay separate pairs |
//! | `request.useragent` | string | `user-agent` header |
//! | `request.referer` | string | `referer` header |
//! | `response.code` | int | `StreamInfo::response_code`, else the response's `:status` |
//! | `response.headers` | map | the response headers, once there are any |
//! | `source.address` | string | client `ip:port` (`[v6]:port`), as Envoy |
//! | `source.port` | int | client port |
//! | `destination.address` | string | listener `ip:port` |
//! | `destination.port` | int | listener port |
//! | `connection.mtls` | bool | the client presented a certificate (and it was verified); false on plain HTTP |
//! | `connection.tls_version` | string | `TLSv1.2` or `TLSv1.3` (HTTPS listeners only, like every `connection.*` below) |
//! | `connection.requested_server_name` | string | the SNI the client sent, lower-case |
//! | `connection.subject_local_certificate`, `connection.subject_peer_certificate` | string | RFC 4514 subject of the certificate served, of the client's |
//! | `connection.dns_san_local_certificate`, `connection.dns_san_peer_certificate` | string | their first DNS subject alternative name |
//! | `connection.uri_san_local_certificate`, `connection.uri_san_peer_certificate` | string | their first URI subject alternative name |
//! | `connection.sha256_peer_certificate_digest` | string | SHA-256 of the client's certificate, lower-case hex |
//! | `route_name`, `xds.route_name` | string | `StreamInfo::route_name` |
//!
//! APISIX/nginx variables (single segment; strings, as nginx variables
//! always are):
//!
//! | path | value |
//! |---|---|
//! | `remote_addr`, `remote_port` | client IP (no brackets, no port), client port |
//! | `server_addr`, `server_port` | listener IP, listener port |
//! | `uri` | path without the query |
//! | `request_uri` | path with the query |
//! | `args` | the query without `?` (empty if none) |
//! | `host` | `:authority` without its port and trailing dot, lower-cased |
//! | `request_method`, `scheme`, `server_protocol` | as `request.method`, `request.scheme`, `request.protocol` |
//! | `http_<name>` | request header `<name>` with `_` read as `-`; repeated headers joined with `, ` (`; ` for `cookie`), as nginx ≥ 1.23 |
//! | `https` | `on` on an HTTPS listener, empty otherwise |
//! | `ssl_protocol`, `ssl_server_name` | as `connection.tls_version`, `connection.requested_server_name` |
//! | `ssl_cipher` | OpenSSL's name of the cipher suite (`ECDHE-RSA-AES128-GCM-SHA256`, `TLS_AES_128_GCM_SHA256`) |
//! | `ssl_client_verify` | `SUCCESS` when the client presented a certificate, `NONE` otherwise (a certificate that fails fails the handshake) |
//! | `ssl_client_s_dn`, `ssl_client_i_dn`, `ssl_client_serial` | the client certificate's subject and issuer (RFC 4514) and serial (hex) |

use std::net::SocketAddr;

use super::pairs;
use super::plugin::PluginSpec;
use super::Exchange;
use crate::tls::TlsInfo;

/// The value of property `path`, computed for the plugin `spec` and, during
/// a stream callback, that stream's `exchange`.
pub(crate) fn get(path: &[u8], spec: &PluginSpec, exchange: Option<&Exchange>) -> Option<Vec<u8>> {
    if let Some((_, value)) = exchange
        .into_iter()
        .flat_map(|ex| ex.properties.iter().rev())
        .find(|(p, _)| p == path)
    {
        return Some(value.clone());
    }
    let name = std::str::from_utf8(path).ok()?.replace('\0', ".");
    match name.as_str() {
        "plugin_name" | "plugin_vm_id" => Some(spec.name.clone().into_bytes()),
        "plugin_root_id" => Some(spec.root_id.clone().into_bytes()),
        _ => stream_property(&name, exchange?),
    }
}

/// The properties that describe a stream.
fn stream_property(name: &str, ex: &Exchange) -> Option<Vec<u8>> {
    let req = &ex.request_headers;
    let info = &ex.info;
    let header = |n: &str| req.get(n.as_bytes()).map(<[u8]>::to_vec);
    let path = || req.get(b":path");
    let query = || path().map(|p| split_query(p).1.to_vec());
    let source = || info.source;
    let destination = || info.destination;
    Some(match name {
        "request.path" | "request_uri" => path()?.to_vec(),
        "request.url_path" | "uri" => split_query(path()?).0.to_vec(),
        "request.query" | "args" => query()?,
        "request.host" => header(":authority")?,
        "host" => host_without_port(req.get(b":authority")?),
        "request.method" | "request_method" => header(":method")?,
        "request.scheme" | "scheme" => header(":scheme")?,
        "request.protocol" | "server_protocol" => non_empty(info.protocol)?,
        "request.id" => non_empty(&info.request_id).or_else(|| header("x-request-id"))?,
        "request.time" => (info.start_time_ns != 0).then(|| int(info.start_time_ns))?,
        "request.headers" => pairs::serialize(req.iter()),
        "request.useragent" => header("user-agent")?,
        "request.referer" => header("referer")?,
        "response.code" => int(i64::from(response_code(ex)?)),
        "response.headers" if !ex.response_headers.is_empty() => {
            pairs::serialize(ex.response_headers.iter())
        }
        "source.address" => source()?.to_string().into_bytes(),
        "source.port" => int(i64::from(source()?.port())),
        "destination.address" => destination()?.to_string().into_bytes(),
        "destination.port" => int(i64::from(destination()?.port())),
        "connection.mtls" => vec![u8::from(
            info.tls.as_ref().is_some_and(|t| t.peer.is_some()),
        )],
        "https" if info.tls.is_some() => b"on".to_vec(),
        "https" => Vec::new(),
        "route_name" | "xds.route_name" => non_empty(&info.route_name)?,
        "remote_addr" => ip(source()?),
        "remote_port" => source()?.port().to_string().into_bytes(),
        "server_addr" => ip(destination()?),
        "server_port" => destination()?.port().to_string().into_bytes(),
        _ if name.starts_with("connection.") || name.starts_with("ssl_") => {
            tls_property(name, info.tls.as_deref()?)?
        }
        _ => nginx_http_var(name, ex)?,
    })
}

/// The `connection.*` and `ssl_*` properties of a TLS client.
fn tls_property(name: &str, tls: &TlsInfo) -> Option<Vec<u8>> {
    let peer = || tls.peer.as_ref().map(|p| &p.names);
    let text = |s: &str| non_empty(s);
    match name {
        "connection.tls_version" | "ssl_protocol" => text(tls.version),
        "connection.requested_server_name" | "ssl_server_name" => text(tls.sni.as_deref()?),
        "connection.subject_local_certificate" => text(&tls.local.subject),
        "connection.dns_san_local_certificate" => text(tls.local.dns_san.as_deref()?),
        "connection.uri_san_local_certificate" => text(tls.local.uri_san.as_deref()?),
        "connection.subject_peer_certificate" | "ssl_client_s_dn" => text(&peer()?.subject),
        "ssl_client_i_dn" => text(&peer()?.issuer),
        "ssl_client_serial" => text(&peer()?.serial),
        "connection.dns_san_peer_certificate" => text(peer()?.dns_san.as_deref()?),
        "connection.uri_san_peer_certificate" => text(peer()?.uri_san.as_deref()?),
        "connection.sha256_peer_certificate_digest" => text(&tls.peer.as_ref()?.sha256),
        "ssl_cipher" => text(crate::tls::openssl_cipher_name(tls.cipher)),
        "ssl_client_verify" => text(if tls.peer.is_some() {
            "SUCCESS"
        } else {
            "NONE"
        }),
        _ => None,
    }
}

/// `http_<name>`: the request header `<name>`, with `_` read as `-`.
fn nginx_http_var(name: &str, ex: &Exchange) -> Option<Vec<u8>> {
    let header = name.strip_prefix("http_").filter(|h| !h.is_empty())?;
    let header = header.replace('_', "-").into_bytes();
    let separator: &[u8] = if header.eq_ignore_ascii_case(b"cookie") {
        b"; "
    } else {
        b", "
    };
    let values: Vec<&[u8]> = ex
        .request_headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(&header))
        .map(|(_, value)| value)
        .collect();
    (!values.is_empty()).then(|| values.join(separator))
}

/// `(path, query)` of a request target; the query lacks its `?`.
fn split_query(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().position(|&b| b == b'?') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (path, &[]),
    }
}

/// nginx `$host`: the authority without a `:port` suffix and without a
/// trailing dot, lower-cased (an IPv6 literal keeps its brackets).
fn host_without_port(authority: &[u8]) -> Vec<u8> {
    let host = match authority.iter().rposition(|&b| b == b':') {
        Some(i) => {
            let (host, port) = (&authority[..i], &authority[i + 1..]);
            let port_ok = !port.is_empty() && port.iter().all(u8::is_ascii_digit);
            // A bare IPv6 address has colons of its own: only `[v6]:port`
            // has a port.
            let host_ok = !host.contains(&b':') || (host.starts_with(b"[") && host.ends_with(b"]"));
            if port_ok && host_ok {
                host
            } else {
                authority
            }
        }
        None => authority,
    };
    host.strip_suffix(b".").unwrap_or(host).to_ascii_lowercase()
}

/// The response status, once known.
fn response_code(ex: &Exchange) -> Option<u16> {
    ex.info.response_code.or_else(|| {
        let status = ex.response_headers.get(b":status")?;
        std::str::from_utf8(status).ok()?.parse().ok()
    })
}

fn int(value: i64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

fn ip(addr: SocketAddr) -> Vec<u8> {
    addr.ip().to_string().into_bytes()
}

fn non_empty(s: &str) -> Option<Vec<u8>> {
    (!s.is_empty()).then(|| s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port_handles_names_ipv4_and_ipv6() {
        for (authority, host) in [
            ("Example.COM:8080", "example.com"),
            ("example.com", "example.com"),
            ("Secure.Example.:443", "secure.example"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("example.com:", "example.com:"),
            ("a:b", "a:b"),
        ] {
            assert_eq!(
                host_without_port(authority.as_bytes()),
                host.as_bytes(),
                "{authority}"
            );
        }
    }

    #[test]
    fn split_query_keeps_everything_after_the_first_question_mark() {
        assert_eq!(split_query(b"/a?b=1?c"), (&b"/a"[..], &b"b=1?c"[..]));
        assert_eq!(split_query(b"/a"), (&b"/a"[..], &b""[..]));
        assert_eq!(split_query(b"/a?"), (&b"/a"[..], &b""[..]));
    }
}
