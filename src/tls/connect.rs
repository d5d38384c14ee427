//! The client side: TLS to HTTPS upstreams and to etcd. The server's
//! certificate is verified against the trusted roots
//! (`apisix.ssl.ssl_trusted_certificate`, else the system's CA store) for
//! the name tinygate connects to, unless verification is turned off
//! explicitly; a client certificate is presented when one is configured
//! (upstream `tls.client_cert`, `deployment.etcd.tls.cert`).

use super::pem::{certificates, root_store, CertKey};
use super::server::provider;
use super::stream::Stream;
use crate::net::tcp::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::io;
use std::sync::{Arc, OnceLock};

/// The CAs a server certificate must chain to; the default is the
/// system's CA store (`/etc/ssl/certs` and the other places OpenSSL looks,
/// or `SSL_CERT_FILE`), read the first time it is used.
#[derive(Debug, Clone, Default)]
pub struct Roots(Option<Arc<RootCertStore>>);

impl PartialEq for Roots {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Roots {
    /// The certificates of a PEM bundle
    /// (`apisix.ssl.ssl_trusted_certificate`).
    ///
    /// # Errors
    /// Not PEM, or a certificate that cannot be a trust anchor.
    pub fn from_pem(pem: &str) -> Result<Roots, String> {
        Ok(Roots(Some(Arc::new(root_store(&certificates(pem)?)?))))
    }

    fn store(&self) -> Result<Arc<RootCertStore>, String> {
        match &self.0 {
            Some(store) => Ok(Arc::clone(store)),
            None => system_store(),
        }
    }
}

/// The system store, loaded once per process.
fn system_store() -> Result<Arc<RootCertStore>, String> {
    static SYSTEM: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found (an image built FROM scratch has \
                            none): set apisix.ssl.ssl_trusted_certificate to a CA file"
                        .to_string(),
                );
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// How to connect to one kind of server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientSettings {
    /// Verify the server's certificate (default true).
    pub verify: bool,
    pub roots: Roots,
    /// A certificate to present (mTLS).
    pub client_cert: Option<CertKey>,
}

/// A client configuration, made once per upstream or etcd cluster and
/// shared by its connections (rustls keeps resumption tickets in it).
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
}

impl Connector {
    /// # Errors
    /// The system store is wanted and there is none.
    pub fn new(settings: &ClientSettings) -> Result<Connector, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if settings.verify {
            builder.with_root_certificates(settings.roots.store()?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(
                    provider().signature_verification_algorithms,
                )))
        };
        let mut config = match &settings.client_cert {
            Some(key) => {
                builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::clone(&key.0))))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector {
            config: Arc::new(config),
        })
    }

    /// Identifies this client configuration while it lives (pooled
    /// connections made with it are kept apart from others').
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.config) as usize
    }

    /// The TLS handshake over `tcp` for `server_name` (a DNS name, sent
    /// as SNI and verified, or an IP address, verified against the
    /// certificate's IP addresses and not sent).
    ///
    /// # Errors
    /// A name that is neither, or the handshake's failure (a certificate
    /// that does not verify says why).
    pub async fn connect(&self, tcp: TcpStream, server_name: &str) -> io::Result<Stream> {
        let name = server_name
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(server_name);
        let name = ServerName::try_from(name.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{server_name:?} is not a valid TLS server name"),
            )
        })?;
        let connector = futures_rustls::TlsConnector::from(Arc::clone(&self.config));
        let tls = connector.connect(name, tcp).await?;
        Ok(Stream::Client(Box::new(tls)))
    }
}

/// The one client certificate of a connector, whatever the server asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `tls.verify: false`: any certificate is accepted (the handshake
/// signature is still checked against it, so the peer holds its key).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
