//! TLS for tinygate: certificates and keys from PEM, the SNI table that
//! picks an `ssls` entry for a handshake, client-certificate verification
//! with APISIX's `client.depth`, client configurations for HTTPS upstreams
//! and etcd, one stream type that is plain TCP or TLS, what a handshake
//! settled ([`TlsInfo`], with certificate names read by `x509.rs`), and the
//! rate-limited log of failed handshakes (`failures.rs`).
//!
//! Built on rustls with the *ring* crypto provider (see the README's
//! dependency table for why ring and not aws-lc-rs), and futures-rustls for
//! the async handshake and record layer over the reactor's sockets. Only
//! this module names rustls types; `config/` holds the opaque values made
//! here ([`CertKey`], [`ClientCa`]), and the proxy sees [`Stream`].
//!
//! It knows nothing about routes, plugins or HTTP. Without the cargo
//! feature `tls` the same API exists, every constructor fails with
//! [`DISABLED`], and [`Stream`] is plain TCP only: the build then has no C
//! code (ring has some) and a configuration that asks for TLS is refused.

// Without the `tls` feature, nothing looks names up or tells pairs apart:
// the types stay so that the code above this module compiles unchanged.
#![cfg_attr(not(feature = "tls"), allow(dead_code))]

mod failures;
mod sni;
mod x509;

pub use failures::log_handshake_failure;
pub use sni::{is_valid_sni, SniTable};
pub use x509::CertNames;

#[cfg(feature = "tls")]
mod client_auth;
#[cfg(feature = "tls")]
mod connect;
#[cfg(feature = "tls")]
mod pem;
#[cfg(feature = "tls")]
mod server;
#[cfg(feature = "tls")]
mod stream;

#[cfg(feature = "tls")]
pub use connect::{ClientSettings, Connector, Roots};
#[cfg(feature = "tls")]
pub use pem::{load_client_ca, load_pair, CertKey, ClientCa, PairError};
#[cfg(feature = "tls")]
pub use server::{Acceptor, HandshakeError, ServerEntry};
#[cfg(feature = "tls")]
pub use stream::Stream;

#[cfg(not(feature = "tls"))]
mod disabled;
#[cfg(not(feature = "tls"))]
pub use disabled::*;

/// A byte stream that is not a socket of ours: what `tinygate test`
/// scripts (a client, a node), carried as [`Stream::Other`] so that the
/// request path has one stream type.
pub trait Duplex: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin {}

impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin> Duplex for T {}

/// Why a TLS setting is refused by a build without the `tls` feature.
pub const DISABLED: &str = "this tinygate was built without TLS (cargo feature \"tls\")";

/// Whether this build has TLS.
///
/// # Errors
/// [`DISABLED`] in a build without the `tls` feature.
pub fn available() -> Result<(), &'static str> {
    if cfg!(feature = "tls") {
        Ok(())
    } else {
        Err(DISABLED)
    }
}

/// What a completed handshake settled, for plugins (Envoy's
/// `connection.*` attributes, nginx's `$ssl_*` variables) and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The SNI the client sent, lower-case.
    pub sni: Option<String>,
    /// The negotiated cipher suite, IANA name (`TLS_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// The names of the certificate served (the entry's first).
    pub local: std::sync::Arc<CertNames>,
    /// The client's certificate, when it sent one (it was verified: a
    /// certificate that fails fails the handshake).
    pub peer: Option<PeerCert>,
}

/// A client certificate that passed verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    pub names: CertNames,
    /// SHA-256 of its DER, lower-case hex.
    pub sha256: String,
}

/// OpenSSL's name of a cipher suite given by its IANA name, as nginx's
/// `$ssl_cipher` shows it (TLS 1.3 suites have the same name in both).
pub fn openssl_cipher_name(iana: &str) -> &str {
    match iana {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other,
    }
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`, `[v6]`):
/// the name a TLS client sends (SNI) and verifies the certificate for.
pub fn host_of(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map_or(authority, |(host, _)| host);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// TLS protocol versions a listener or a client allows
/// (`apisix.ssl.ssl_protocols`, `ssls[].ssl_protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub tls12: bool,
    pub tls13: bool,
}

impl Default for Versions {
    /// APISIX's default: `TLSv1.2 TLSv1.3`.
    fn default() -> Self {
        Versions {
            tls12: true,
            tls13: true,
        }
    }
}

/// Certificates made in tests (rcgen): the integration tests' helper,
/// shared so both make them the same way.
#[cfg(all(test, feature = "tls"))]
#[path = "../../tests/certs.rs"]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_an_authority() {
        for (authority, host) in [
            ("api.example.com", "api.example.com"),
            ("api.example.com:8443", "api.example.com"),
            ("10.0.0.1:443", "10.0.0.1"),
            ("[::1]:443", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("a:b", "a:b"),
        ] {
            assert_eq!(super::host_of(authority), host, "{authority}");
        }
    }
}
