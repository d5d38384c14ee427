//! TLS for tinygate: certificates and keys from PEM, the SNI table that
//! picks an `ssls` entry for a handshake, client-certificate verification
//! with APISIX's `client.depth`, client configurations for HTTPS upstreams
//! and etcd, and one stream type that is plain TCP or TLS.
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

// The server side (SNI table, acceptor, stream) is used by the HTTPS
// listener wiring that lands after the proxy split (issue #18 B); until
// then only the etcd client and the config use this module.
#![allow(dead_code, unused_imports)]

mod sni;

pub use sni::{is_valid_sni, SniTable, UnknownSniLog};

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
pub use server::{Acceptor, HandshakeError, ServerEntry, TlsInfo};
#[cfg(feature = "tls")]
pub use stream::Stream;

#[cfg(not(feature = "tls"))]
mod disabled;
#[cfg(not(feature = "tls"))]
pub use disabled::*;

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
