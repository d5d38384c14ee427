//! The TLS peers of the HTTPS tests (`tls.rs`): a keep-alive HTTPS client
//! that shows which certificate it was served, a client that accepts any
//! certificate (for the SNI tests), and an HTTPS upstream that records the
//! SNI and client certificate each request came with.

#![allow(dead_code)]

use crate::certs::{Ca, Leaf};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The DER of the first certificate in `pem`.
pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .unwrap()
        .to_vec()
}

/// A client configuration that accepts any server certificate (the SNI
/// tests look at which one was served), sending SNI when `sni` is true.
pub fn any_server_config(sni: bool) -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(m, c, d, algs)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(m, c, d, algs)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.enable_sni = sni;
    Arc::new(config)
}

/// A keep-alive HTTPS client connection (blocking).
pub struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects to `addr` and completes the handshake for `name` (an IP
    /// address sends no SNI).
    pub fn connect(
        addr: SocketAddr,
        name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<TlsClient, String> {
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        Ok(TlsClient {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        })
    }

    /// The DER of the certificate the server sent.
    pub fn server_certificate(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().expect("a certificate")[0].to_vec()
    }

    /// The ALPN protocol agreed on.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.tls.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The TLS version agreed on.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    /// Sends `raw` and reads one response with a `content-length`.
    pub fn request(&mut self, raw: &str) -> Result<crate::util::Response, String> {
        self.tls
            .write_all(raw.as_bytes())
            .map_err(|e| e.to_string())?;
        read_response(&mut self.tls, &mut self.buf)
    }
}

/// One `content-length` (or body-less) HTTP/1.1 response from `stream`.
pub fn read_response(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<crate::util::Response, String> {
    let fill = |stream: &mut dyn Read, buf: &mut Vec<u8>| -> Result<(), String> {
        let mut b = [0u8; 16384];
        match stream.read(&mut b) {
            Ok(0) => Err(format!("closed; got {:?}", String::from_utf8_lossy(buf))),
            Ok(n) => {
                buf.extend_from_slice(&b[..n]);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    let end = loop {
        if let Some(i) = crate::util::find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad head {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        fill(stream, buf)?;
    }
    let body = buf.drain(..len).collect();
    Ok(crate::util::Response {
        status,
        headers,
        body,
    })
}

/// What an HTTPS upstream saw of one request.
#[derive(Debug, Clone)]
pub struct TlsSeen {
    /// The SNI the proxy sent, if any.
    pub sni: Option<String>,
    /// Whether the proxy presented a client certificate.
    pub client_cert: bool,
    /// Which connection (0, 1, ...) carried it.
    pub connection: usize,
    /// The request head.
    pub head: String,
}

/// An HTTPS upstream on 127.0.0.1:0 serving `leaf`; with `client_ca`, it
/// requires a client certificate signed by it. Answers every request 200
/// with body `name`, keeping the connection.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<std::sync::Mutex<Vec<TlsSeen>>>,
}

impl TlsUpstream {
    pub fn start(name: &str, leaf: &Leaf, client_ca: Option<&Ca>) -> TlsUpstream {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(CertificateDer::from(der_of(&ca.pem))).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(builder.with_single_cert(chain, key).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let name = name.to_string();
        std::thread::spawn(move || {
            for (connection, tcp) in listener.incoming().enumerate() {
                let Ok(tcp) = tcp else { continue };
                let (config, log, name) = (Arc::clone(&config), Arc::clone(&log), name.clone());
                std::thread::spawn(move || serve_tls(tcp, config, &log, &name, connection));
            }
        });
        TlsUpstream { addr, seen }
    }

    pub fn seen(&self) -> Vec<TlsSeen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_tls(
    mut tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    log: &std::sync::Mutex<Vec<TlsSeen>>,
    name: &str,
    connection: usize,
) {
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    let sni = conn.server_name().map(str::to_string);
    let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = crate::util::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut b = [0u8; 4096];
            match tls.read(&mut b) {
                Ok(n) if n > 0 => buf.extend_from_slice(&b[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        log.lock().unwrap().push(TlsSeen {
            sni: sni.clone(),
            client_cert,
            connection,
            head,
        });
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
            name.len()
        );
        if tls.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
