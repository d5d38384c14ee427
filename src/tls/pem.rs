//! PEM text into what rustls uses: a certificate chain with its private key
//! ([`CertKey`], checked to belong together), and CA bundles ([`ClientCa`]
//! for client certificates, trust roots for upstreams and etcd).
//!
//! APISIX stores certificates and keys as PEM text (`ssls[].cert`, `key`);
//! every function here takes that text and reports what is wrong with it in
//! a sentence a key path can be put in front of.

use super::server::provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::fmt;
use std::sync::Arc;

/// A certificate chain and the private key of its first certificate.
#[derive(Clone)]
pub struct CertKey(pub(super) Arc<CertifiedKey>);

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertKey({} certificates)", self.0.cert.len())
    }
}

impl PartialEq for CertKey {
    /// The same chain and the same key object (a reload that keeps an
    /// entry keeps its `Arc`).
    fn eq(&self, other: &Self) -> bool {
        self.0.cert == other.0.cert && Arc::ptr_eq(&self.0.key, &other.0.key)
    }
}

/// Which half of a certificate/key pair is wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairError {
    /// The certificate text: not PEM, no certificate, or not X.509.
    Cert(String),
    /// The key text: not PEM, no key, or a key type the provider lacks.
    Key(String),
    /// Both parse, but the key is not the certificate's.
    Mismatch,
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairError::Cert(m) | PairError::Key(m) => f.write_str(m),
            PairError::Mismatch => f.write_str("does not match cert"),
        }
    }
}

/// The certificates of a PEM bundle, in order.
///
/// # Errors
/// Text with no `CERTIFICATE` block, or a block that is not base64.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(certs) if certs.is_empty() => Err("no PEM CERTIFICATE block".into()),
        Ok(certs) => Ok(certs),
        Err(e) => Err(format!("not a PEM certificate: {e}")),
    }
}

/// A certificate chain (leaf first) and its private key (PKCS#8, PKCS#1
/// RSA or SEC1 EC, as `openssl` writes them), checked to match.
///
/// # Errors
/// See [`PairError`].
pub fn load_pair(cert_pem: &str, key_pem: &str) -> Result<CertKey, PairError> {
    let chain = certificates(cert_pem).map_err(PairError::Cert)?;
    // Parsing the leaf once here turns a certificate rustls could not use
    // into a load error instead of a handshake failure.
    webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| PairError::Cert(format!("not a usable X.509 certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PairError::Key(format!("not a PEM private key: {e}")))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| PairError::Key(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(CertKey(Arc::new(certified))),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(PairError::Mismatch)
        }
        Err(e) => Err(PairError::Cert(format!(
            "cannot check the key against it: {e}"
        ))),
    }
}

/// The CA certificates that sign acceptable client certificates
/// (`ssls[].client.ca`), and how long a chain may be (`client.depth`).
#[derive(Clone)]
pub struct ClientCa {
    pub(super) roots: Arc<RootCertStore>,
    /// The CA certificates as given, for `depth: 0` (the client's own
    /// certificate must be one of them).
    pub(super) certs: Arc<Vec<CertificateDer<'static>>>,
    pub(super) depth: u32,
}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientCa({} CAs, depth {})",
            self.certs.len(),
            self.depth
        )
    }
}

impl PartialEq for ClientCa {
    fn eq(&self, other: &Self) -> bool {
        self.certs == other.certs && self.depth == other.depth
    }
}

/// A client CA bundle with its verify depth.
///
/// # Errors
/// Not PEM, no certificate, or a certificate that cannot be a trust anchor.
pub fn load_client_ca(pem: &str, depth: u32) -> Result<ClientCa, String> {
    let certs = certificates(pem)?;
    let roots = root_store(&certs)?;
    Ok(ClientCa {
        roots: Arc::new(roots),
        certs: Arc::new(certs),
        depth,
    })
}

/// A root store holding every certificate of `certs`.
///
/// # Errors
/// A certificate that cannot be a trust anchor.
pub(super) fn root_store(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("certificate {} cannot be a trust anchor: {e}", i + 1))?;
    }
    Ok(roots)
}
