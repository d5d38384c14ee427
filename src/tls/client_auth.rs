//! Client-certificate verification for `ssls[].client`: the chain must
//! lead to `client.ca` (RFC 5280 path validation by rustls-webpki, with the
//! client-auth extended key usage) through at most `client.depth - 1`
//! intermediates, which is what nginx's `ssl_verify_depth` (APISIX's
//! `client.depth`, default 1) allows. With depth 0 the client's own
//! certificate must be one of the CA file's certificates.
//!
//! A client without a certificate, or with one that fails, fails the
//! handshake, as APISIX does when `skip_mtls_uri_regex` is not set.

use super::pem::ClientCa;
use super::server::provider;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// Verifies client certificates against one entry's CA with its depth.
#[derive(Debug)]
pub(super) struct DepthLimitedVerifier {
    ca: ClientCa,
    subjects: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl DepthLimitedVerifier {
    pub(super) fn new(ca: &ClientCa) -> DepthLimitedVerifier {
        DepthLimitedVerifier {
            subjects: ca.roots.subjects(),
            ca: ca.clone(),
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for DepthLimitedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if self.ca.depth == 0 {
            return if self
                .ca
                .certs
                .iter()
                .any(|c| c.as_ref() == end_entity.as_ref())
            {
                Ok(ClientCertVerified::assertion())
            } else {
                Err(CertificateError::UnknownIssuer.into())
            };
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        let path = cert
            .verify_for_usage(
                self.algorithms.all,
                &self.ca.roots.roots,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(pki_error)?;
        let used = path.intermediate_certificates().count();
        if used + 1 > self.ca.depth as usize {
            return Err(
                CertificateError::Other(rustls::OtherError(std::sync::Arc::new(DepthExceeded {
                    depth: self.ca.depth,
                    used: used + 1,
                })))
                .into(),
            );
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A chain longer than `client.depth` allows.
#[derive(Debug)]
struct DepthExceeded {
    depth: u32,
    used: usize,
}

impl std::fmt::Display for DepthExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "client certificate chain has depth {} but client.depth is {}",
            self.used, self.depth
        )
    }
}

impl std::error::Error for DepthExceeded {}

/// The rustls error for a webpki one (the common cases by name, the rest
/// as text).
fn pki_error(e: webpki::Error) -> Error {
    match e {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer.into(),
        webpki::Error::CertExpired { .. } | webpki::Error::InvalidCertValidity => {
            CertificateError::Expired.into()
        }
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet.into(),
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding.into(),
        other => CertificateError::Other(rustls::OtherError(std::sync::Arc::new(other))).into(),
    }
}
