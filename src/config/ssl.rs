//! `apisix.ssl` in `config.yaml`: whether and where to serve HTTPS
//! (`enable`, `listen` as `{ip, port}` items), the protocol versions
//! (`ssl_protocols`, APISIX's space-separated string), `fallback_sni`, and
//! `ssl_trusted_certificate`, the CA file HTTPS upstreams and etcd are
//! verified against (`system`, the default, means the system store).
//!
//! APISIX turns HTTPS on (port 9443) by default; tinygate does only when
//! the `apisix.ssl` section is there, so a config written for plain HTTP
//! opens no port it does not name.

use super::ssls::protocols;
use super::tree::{index, Obj, Problems};
use crate::tls::{self, Roots, Versions};
use crate::yaml::kind;
use serde_yaml::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// APISIX's default HTTPS port.
const DEFAULT_PORT: u16 = 9443;

/// `apisix.ssl` keys of nginx's TLS tuning that rustls decides itself:
/// accepted with a warning.
const IGNORED_KEYS: &[&str] = &[
    "ssl_ciphers",
    "ssl_session_tickets",
    "ssl_session_timeout",
    "ssl_session_cache",
    "key_encrypt_salt",
    "ssl_trusted_combined_path",
];

/// The settings of `apisix.ssl`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SslConfig {
    /// `listen`: HTTPS listeners; empty when the section is absent or
    /// `enable: false`.
    pub listen: Vec<SocketAddr>,
    /// `ssl_protocols` (default `TLSv1.2 TLSv1.3`).
    pub versions: Versions,
    /// `fallback_sni`: the name a handshake without SNI is served as.
    pub fallback_sni: Option<String>,
    /// `ssl_trusted_certificate`: what HTTPS upstreams and etcd are
    /// verified against.
    pub trusted: Roots,
}

/// Reads `apisix.ssl` (`apisix` is the `apisix:` mapping).
pub(super) fn parse(apisix: &Obj, dir: &Path, p: &mut Problems) -> SslConfig {
    let mut out = SslConfig::default();
    let Some(s) = apisix.obj("ssl", p) else {
        return out;
    };
    let mut known = vec![
        "enable",
        "listen",
        "listen_port",
        "ssl_protocols",
        "fallback_sni",
        "ssl_trusted_certificate",
    ];
    known.extend_from_slice(IGNORED_KEYS);
    s.only(&known, p);
    for key in IGNORED_KEYS {
        if s.has(key) {
            log::warn!(
                "{}: {}: not used by tinygate (rustls chooses), ignored",
                p.file(),
                s.path_of(key)
            );
        }
    }
    if let Some(v) = s.value("ssl_protocols") {
        if let Some(v) = protocols(v, &s.path_of("ssl_protocols"), p) {
            out.versions = v;
        }
    }
    if let Some(name) = s.str("fallback_sni", p) {
        if tls::is_valid_sni(name) && !name.starts_with('*') {
            out.fallback_sni = Some(name.to_ascii_lowercase());
        } else {
            p.at(
                &s.path_of("fallback_sni"),
                format!("{name:?} is not a host name"),
            );
        }
    }
    match s.str("ssl_trusted_certificate", p) {
        None | Some("system") => {}
        Some(file) => {
            let full = dir.join(file);
            let path = s.path_of("ssl_trusted_certificate");
            match std::fs::read_to_string(&full) {
                Ok(pem) => match Roots::from_pem(&pem) {
                    Ok(roots) => out.trusted = roots,
                    Err(m) => p.at(&path, format!("{}: {m}", full.display())),
                },
                Err(e) => p.at(&path, format!("cannot read {}: {e}", full.display())),
            }
        }
    }
    if s.bool("enable", p) == Some(false) {
        return out;
    }
    out.listen = listen(&s, p);
    if !out.listen.is_empty() {
        if let Err(m) = tls::available() {
            p.at(&s.path_of("enable"), m);
        }
    }
    out
}

/// `listen`: a list of `{ip, port}` (default `[{port: 9443}]`), or the
/// older `listen_port`.
fn listen(s: &Obj, p: &mut Problems) -> Vec<SocketAddr> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    if let Some(port) = s.int("listen_port", 1, 65535, p) {
        return vec![SocketAddr::new(any, port as u16)];
    }
    let Some(items) = s.seq("listen", p) else {
        return vec![SocketAddr::new(any, DEFAULT_PORT)];
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(&s.path_of("listen"), i);
        if let Value::Number(n) = item {
            match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(port) => out.push(SocketAddr::new(any, port)),
                None => p.at(&path, format!("{n} is not a port (0..=65535)")),
            }
            continue;
        }
        if !item.is_mapping() {
            p.at(&path, format!("expected {{ip, port}}, got {}", kind(item)));
            continue;
        }
        let Some(o) = Obj::new(item, path.clone(), p) else {
            continue;
        };
        o.only(&["ip", "port", "enable_http2", "enable_http3"], p);
        let port = o
            .int("port", 0, 65535, p)
            .unwrap_or(i64::from(DEFAULT_PORT));
        let ip = match o.str("ip", p) {
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    p.at(&o.path_of("ip"), format!("{text:?} is not an IP address"));
                    continue;
                }
            },
            None => any,
        };
        out.push(SocketAddr::new(ip, port as u16));
    }
    if out.is_empty() && items.is_empty() {
        p.at(&s.path_of("listen"), "must list at least one listener");
    }
    out
}
