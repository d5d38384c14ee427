//! An upstream's `scheme` and `tls` (APISIX's `upstream.tls`): `scheme:
//! https` connects with TLS, verifying the node's certificate unless
//! `tls.verify: false`, and presenting `tls.client_cert`/`client_key` when
//! given (mTLS). Unlike APISIX, whose `tls.verify` defaults to false (and
//! is documented as applying to Kafka only), verification is on by
//! default: an HTTPS upstream that is not verified has to say so.
//!
//! The trusted CAs are `config.yaml`'s (`apisix.ssl.ssl_trusted_certificate`),
//! which the routes file is parsed without: the settings parse into an
//! [`UpstreamTls`] (the connection side's type, in `upstream.rs`), whose
//! `prepare` makes the connector once both are loaded (`Gateway::build`).

use super::ssls::{base_dir, pem_text};
use super::tree::{Obj, Problems};
use crate::tls::{self, PairError};
use crate::upstream::UpstreamTls;

/// `scheme` and `tls` of upstream `o`: `Some` for `https`, `None` for
/// `http` (the default). Problems go to `p`.
pub(super) fn parse(o: &Obj, p: &mut Problems) -> Option<UpstreamTls> {
    let https = match o.str("scheme", p).unwrap_or("http") {
        "http" => false,
        "https" => true,
        other => {
            p.at(
                &o.path_of("scheme"),
                format!("only http and https are supported, not {other:?}"),
            );
            false
        }
    };
    let t = o.obj("tls", p);
    if let Some(t) = &t {
        t.only(
            &["verify", "client_cert", "client_key", "client_cert_id"],
            p,
        );
        if !https {
            p.at(&t.path, "applies only to scheme: https");
        }
    }
    if !https {
        return None;
    }
    if let Err(m) = tls::available() {
        p.at(&o.path_of("scheme"), m);
    }
    let Some(t) = t else {
        return Some(UpstreamTls::new(true, None));
    };
    if t.has("client_cert_id") {
        p.at(
            &t.path_of("client_cert_id"),
            "not supported by tinygate yet (give client_cert and client_key)",
        );
    }
    let verify = t.bool("verify", p).unwrap_or(true);
    let client_cert = match (t.value("client_cert"), t.value("client_key")) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let base = base_dir(p);
            let (cert_path, key_path) = (t.path_of("client_cert"), t.path_of("client_key"));
            let cert = pem_text(cert, &cert_path, base.as_deref(), p);
            let key = pem_text(key, &key_path, base.as_deref(), p);
            match tls::load_pair(&cert?, &key?) {
                Ok(k) => Some(k),
                Err(PairError::Cert(m)) => {
                    p.at(&cert_path, m);
                    None
                }
                Err(e) => {
                    p.at(&key_path, e);
                    None
                }
            }
        }
        _ => {
            p.at(&t.path, "client_cert and client_key go together");
            None
        }
    };
    Some(UpstreamTls::new(verify, client_cert))
}
