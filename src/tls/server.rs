//! The server side: one rustls configuration per `ssls` entry (its
//! certificate pairs, its client CA, its protocol versions, ALPN
//! `http/1.1`), and the [`Acceptor`] that reads a ClientHello, picks the
//! entry by SNI ([`SniTable`]) and completes the handshake with it.
//!
//! A configuration per entry, rather than one configuration whose
//! certificate resolver looks at the SNI, is what lets each entry have its
//! own client CA and versions (rustls has one client verifier per
//! configuration). An `Acceptor` is immutable: a reload builds a new one,
//! so handshakes that already started finish with the old certificates and
//! connections keep theirs.

use super::client_auth::DepthLimitedVerifier;
use super::pem::{CertKey, ClientCa};
use super::sni::{SniTable, UnknownSniLog};
use super::stream::Stream;
use super::Versions;
use crate::net::tcp::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The crypto provider every configuration uses: *ring*. rustls 0.23.48
/// deprecated ring's `default_provider` because ring has no post-quantum
/// key exchange (X25519MLKEM768); tinygate accepts that for its size and
/// C-free cross builds (README, Dependencies), so key exchange is X25519,
/// P-256 or P-384.
#[allow(deprecated)]
pub(super) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// rustls' protocol versions for `versions`.
pub(super) fn protocol_versions(versions: Versions) -> Vec<&'static SupportedProtocolVersion> {
    let mut out = Vec::new();
    if versions.tls13 {
        out.push(&rustls::version::TLS13);
    }
    if versions.tls12 {
        out.push(&rustls::version::TLS12);
    }
    out
}

/// ALPN: tinygate speaks HTTP/1.1 (RFC 7301; `h2` is not offered).
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// One `ssls` entry, ready for handshakes.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    /// The entry's `id`, for logs.
    pub id: String,
    config: Arc<ServerConfig>,
}

impl ServerEntry {
    /// A configuration serving `keys` (the first pair whose key type the
    /// client accepts), asking for a client certificate signed by
    /// `client` when given, allowing `versions`.
    ///
    /// # Errors
    /// No versions, or no pair (callers validate both, so this is a bug
    /// report rather than a user error).
    pub fn new(
        id: &str,
        keys: &[CertKey],
        client: Option<&ClientCa>,
        versions: Versions,
    ) -> Result<ServerEntry, String> {
        if keys.is_empty() {
            return Err("no certificate".into());
        }
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&protocol_versions(versions))
            .map_err(|e| e.to_string())?;
        let builder = match client {
            Some(ca) => builder.with_client_cert_verifier(Arc::new(DepthLimitedVerifier::new(ca))),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Pairs(
            keys.iter().map(|k| Arc::clone(&k.0)).collect(),
        )));
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(ServerEntry {
            id: id.to_string(),
            config: Arc::new(config),
        })
    }
}

/// The certificate pairs of one entry (`cert`/`key`, then `certs`/`keys`):
/// the first whose key can sign with a scheme the client offers, so an
/// ECDSA pair beside an RSA one serves clients that prefer it.
#[derive(Debug)]
struct Pairs(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Pairs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(offered).is_some())
            .or_else(|| self.0.first())
            .map(Arc::clone)
    }
}

/// What a completed handshake tells plugins and logs (Envoy's
/// `connection.*` attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The SNI the client sent, lower-case.
    pub sni: Option<String>,
    /// The negotiated cipher suite, IANA name.
    pub cipher: String,
    /// True when the client presented a certificate that was verified.
    pub mtls: bool,
    /// The client's certificate (DER), when it sent one.
    pub peer_certificate: Option<Vec<u8>>,
}

/// Picks the entry for each handshake and runs it. Shared by every worker
/// through an `Arc`; a new configuration brings a new one.
pub struct Acceptor {
    sni: SniTable,
    entries: Vec<ServerEntry>,
    unknown: Arc<UnknownSniLog>,
}

/// Why a handshake failed, for the connection's log line.
#[derive(Debug)]
pub enum HandshakeError {
    /// No entry for this SNI (or no SNI and no `fallback_sni`); the
    /// client got an alert. `log` is false when this name was already
    /// logged in the last minute.
    UnknownSni { sni: Option<String>, log: bool },
    /// I/O or TLS failure (bad client certificate, no common version...).
    Failed(io::Error),
}

impl Acceptor {
    /// An acceptor over `entries`, indexed by `sni`. `unknown` is the
    /// process-wide rate limit for "unknown SNI" lines, kept across
    /// reloads.
    pub fn new(sni: SniTable, entries: Vec<ServerEntry>, unknown: Arc<UnknownSniLog>) -> Acceptor {
        Acceptor {
            sni,
            entries,
            unknown,
        }
    }

    /// Reads the ClientHello from `tcp`, picks the entry and completes the
    /// handshake.
    ///
    /// # Errors
    /// See [`HandshakeError`].
    pub async fn accept(&self, tcp: TcpStream) -> Result<(Stream, TlsInfo), HandshakeError> {
        let start =
            futures_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                .await
                .map_err(HandshakeError::Failed)?;
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let Some(entry) = self
            .sni
            .find(sni.as_deref())
            .and_then(|i| self.entries.get(i))
        else {
            // A configuration that resolves no certificate makes rustls
            // answer with a fatal alert instead of a silent close.
            let _ = start.into_stream(reject_config()).await;
            let name = sni.clone().unwrap_or_default();
            let log = self.unknown.should_log(&name, Instant::now());
            return Err(HandshakeError::UnknownSni { sni, log });
        };
        let tls = start
            .into_stream(Arc::clone(&entry.config))
            .await
            .map_err(HandshakeError::Failed)?;
        let conn = tls.get_ref().1;
        let info = TlsInfo {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                _ => "TLSv1.2",
            },
            sni,
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or_default()
                .to_string(),
            mtls: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            peer_certificate: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
        };
        Ok((Stream::Server(Box::new(tls)), info))
    }
}

/// A configuration with no certificate at all: handshakes fail with an
/// alert.
fn reject_config() -> Arc<ServerConfig> {
    #[derive(Debug)]
    struct NoCertificate;
    impl ResolvesServerCert for NoCertificate {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            None
        }
    }
    static REJECT: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    Arc::clone(REJECT.get_or_init(|| {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCertificate));
        Arc::new(config)
    }))
}
