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
use super::x509::{self, CertNames};
use super::{PeerCert, TlsInfo, Versions};
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
    config: Arc<ServerConfig>,
    /// The names of its first certificate (`connection.*_local_certificate`).
    local: Arc<CertNames>,
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
        let local = keys[0]
            .0
            .end_entity_cert()
            .ok()
            .and_then(|c| x509::names(c));
        Ok(ServerEntry {
            config: Arc::new(config),
            local: Arc::new(local.unwrap_or_default()),
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

/// Picks the entry for each handshake and runs it. Shared by every worker
/// through an `Arc`; a new configuration brings a new one.
pub struct Acceptor {
    sni: SniTable,
    entries: Vec<ServerEntry>,
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
    /// An acceptor over `entries`, indexed by `sni`.
    pub fn new(sni: SniTable, entries: Vec<ServerEntry>) -> Acceptor {
        Acceptor { sni, entries }
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
            let log = UnknownSniLog::process().should_log(&name, Instant::now());
            return Err(HandshakeError::UnknownSni { sni, log });
        };
        let tls = start
            .into_stream(Arc::clone(&entry.config))
            .await
            .map_err(HandshakeError::Failed)?;
        let info = handshake_info(tls.get_ref().1, sni, &entry.local);
        Ok((Stream::Server(Box::new(tls)), info))
    }
}

/// What the handshake on `conn` settled.
fn handshake_info(
    conn: &rustls::ServerConnection,
    sni: Option<String>,
    local: &Arc<CertNames>,
) -> TlsInfo {
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| PeerCert {
            names: x509::names(der).unwrap_or_default(),
            sha256: sha256_hex(der),
        });
    TlsInfo {
        version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        },
        sni,
        cipher: conn
            .negotiated_cipher_suite()
            .map_or("", |s| iana_name(s.suite())),
        local: Arc::clone(local),
        peer,
    }
}

/// The IANA name of a cipher suite (rustls writes TLS 1.3 ones as
/// `TLS13_...`; the registry, Envoy and OpenSSL as `TLS_...`).
fn iana_name(suite: rustls::CipherSuite) -> &'static str {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => other.as_str().unwrap_or(""),
    }
}

/// SHA-256 of `der`, lower-case hex (Envoy's
/// `connection.sha256_peer_certificate_digest`).
fn sha256_hex(der: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
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
