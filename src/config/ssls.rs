//! `ssls` in the routes file (and `/apisix/ssls/<id>` in etcd): the
//! certificates HTTPS listeners serve, in APISIX's schema (`schema_def.lua`
//! `_M.ssl`): `cert`/`key` as PEM text (or tinygate's `file:PATH`), more
//! pairs in `certs`/`keys` (an ECDSA pair beside an RSA one), `sni` or
//! `snis` (exact names and `*.example.com` wildcards), `client.ca` and
//! `client.depth` for client certificates, `ssl_protocols`, `status`, and
//! `type: client` entries (certificates for upstream mTLS, not served).
//!
//! Every certificate is parsed and checked against its key here, so a bad
//! one is an error with its key path (`ssls[1].key: does not match cert`)
//! at load, in `-t` and on reload, never a handshake failure later. This
//! module knows the schema, not how handshakes use it (`src/tls/`).

use super::tree::{index, Obj, Problems};
use crate::tls::{self, CertKey, ClientCa, PairError, Versions};
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One enabled `ssls` entry of `type: server`.
#[derive(Debug, PartialEq)]
pub struct Ssl {
    /// `id`, or `arr_<n>` when absent.
    pub id: String,
    /// `sni`/`snis`, lower-case, as written (`*.example.com` kept).
    pub snis: Vec<String>,
    /// `cert`/`key`, then each of `certs`/`keys`.
    pub keys: Vec<CertKey>,
    /// `client`: verify client certificates against this CA.
    pub client: Option<ClientCa>,
    /// `ssl_protocols`; `None` means `apisix.ssl.ssl_protocols`.
    pub versions: Option<Versions>,
}

/// The `ssls` section.
#[derive(Debug, Default)]
pub struct Ssls {
    /// Enabled server entries, in file order.
    pub entries: Vec<Arc<Ssl>>,
    /// Ids of entries skipped because they are invalid: a reload keeps
    /// serving the previous version of each (APISIX keeps the last good
    /// value of an item that fails its check).
    pub invalid_ids: Vec<String>,
}

impl Ssls {
    /// The acceptor that serves these entries on HTTPS listeners, with
    /// `ssl`'s `fallback_sni` and protocol versions (an entry's own
    /// `ssl_protocols` wins). A name two entries claim is served by the
    /// first, with a warning.
    ///
    /// # Errors
    /// An entry rustls cannot make a configuration of, as (its id, why):
    /// its problems were all reported at parse time, so this is not
    /// expected.
    pub fn acceptor(&self, ssl: &super::SslConfig) -> Result<tls::Acceptor, (String, String)> {
        let mut table = tls::SniTable::new(ssl.fallback_sni.as_deref());
        let mut served = Vec::with_capacity(self.entries.len());
        for (i, entry) in self.entries.iter().enumerate() {
            let versions = entry.versions.unwrap_or(ssl.versions);
            let server = tls::ServerEntry::new(&entry.keys, entry.client.as_ref(), versions)
                .map_err(|m| (entry.id.clone(), m))?;
            served.push(server);
            for name in &entry.snis {
                if !table.insert(name, i) {
                    log::warn!(
                        "ssls {:?}: SNI {name:?} is already served by an earlier entry; ignored here",
                        entry.id
                    );
                }
            }
        }
        Ok(tls::Acceptor::new(table, served))
    }
}

/// Parses `ssls`.
pub(super) fn parse(top: &Obj, p: &mut Problems) -> Ssls {
    let base = base_dir(p);
    let base = base.as_deref();
    let mut out = Ssls::default();
    let Some(items) = top.seq("ssls", p) else {
        return out;
    };
    let mut ids: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(o) = Obj::new(item, index("ssls", i), p) else {
            continue;
        };
        let before = p.len();
        let id = o.id("id", p).unwrap_or_else(|| format!("arr_{}", i + 1));
        if ids.contains(&id) {
            p.at(&o.path_of("id"), format!("ssl id {id:?} is used twice"));
            continue;
        }
        ids.push(id.clone());
        match entry(&o, id.clone(), base, p) {
            Some(Some(ssl)) if p.len() == before => out.entries.push(Arc::new(ssl)),
            Some(None) if p.len() == before => {} // disabled or `type: client`
            _ => out.invalid_ids.push(id),
        }
    }
    out
}

/// One entry: `Some(None)` for an entry that serves nothing (`status: 0`,
/// `type: client`), `None` when it has errors.
fn entry(o: &Obj, id: String, base: Option<&Path>, p: &mut Problems) -> Option<Option<Ssl>> {
    o.only(
        &[
            "id",
            "desc",
            "labels",
            "create_time",
            "update_time",
            "type",
            "cert",
            "key",
            "sni",
            "snis",
            "certs",
            "keys",
            "client",
            "status",
            "ssl_protocols",
        ],
        p,
    );
    let server = match o.str("type", p).unwrap_or("server") {
        "server" => true,
        "client" => false,
        other => {
            p.at(
                &o.path_of("type"),
                format!("expected server or client, got {other:?}"),
            );
            return None;
        }
    };
    let enabled = o.int("status", 0, 1, p).is_none_or(|s| s == 1);
    let snis = snis(o, server, p);
    let mut keys = Vec::new();
    match (o.has("cert"), o.has("key")) {
        (true, true) => keys.extend(pair(o, "cert", "key", base, p)),
        _ => p.at(&o.path, "needs both cert and key"),
    }
    keys.extend(more_pairs(o, base, p));
    let client = o.obj("client", p).and_then(|c| client(&c, base, p));
    let versions = o
        .value("ssl_protocols")
        .and_then(|v| protocols(v, &o.path_of("ssl_protocols"), p));
    if !server || !enabled {
        return Some(None);
    }
    Some(Some(Ssl {
        id,
        snis: snis?,
        keys,
        client,
        versions,
    }))
}

/// `sni` or `snis` (exactly one, for server entries), lower-case, without
/// a trailing dot.
fn snis(o: &Obj, server: bool, p: &mut Problems) -> Option<Vec<String>> {
    let names = match (o.has("sni"), o.has("snis")) {
        (true, true) => {
            p.at(&o.path, "give either sni or snis, not both");
            return None;
        }
        (true, false) => vec![o.str("sni", p)?.to_string()],
        (false, true) => o.strings("snis", p)?,
        (false, false) => {
            if server {
                p.at(&o.path, "missing key snis (or sni)");
            }
            return None;
        }
    };
    let path = if o.has("sni") {
        o.path_of("sni")
    } else {
        o.path_of("snis")
    };
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if tls::is_valid_sni(name) {
            let name = name.strip_suffix('.').unwrap_or(name);
            out.push(name.to_ascii_lowercase());
        } else {
            let at = if o.has("sni") {
                path.clone()
            } else {
                index(&path, i)
            };
            p.at(&at, format!("{name:?} is not a host name or a *.wildcard"));
        }
    }
    Some(out)
}

/// `certs`/`keys`: lists of the same length, pair by pair.
fn more_pairs(o: &Obj, base: Option<&Path>, p: &mut Problems) -> Vec<CertKey> {
    let certs = o.seq("certs", p).map(Vec::as_slice).unwrap_or_default();
    let keys = o.seq("keys", p).map(Vec::as_slice).unwrap_or_default();
    if certs.len() != keys.len() {
        p.at(
            &o.path,
            format!(
                "certs has {} items but keys has {}: they pair up by position",
                certs.len(),
                keys.len()
            ),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, (cert, key)) in certs.iter().zip(keys).enumerate() {
        let cert_path = index(&o.path_of("certs"), i);
        let key_path = index(&o.path_of("keys"), i);
        let cert = pem_text(cert, &cert_path, base, p);
        let key = pem_text(key, &key_path, base, p);
        if let (Some(cert), Some(key)) = (cert, key) {
            out.extend(check_pair(&cert, &key, &cert_path, &key_path, p));
        }
    }
    out
}

/// `cert` and `key` of `o`, parsed and checked.
fn pair(o: &Obj, cert: &str, key: &str, base: Option<&Path>, p: &mut Problems) -> Option<CertKey> {
    let (cert_path, key_path) = (o.path_of(cert), o.path_of(key));
    let cert = pem_text(o.value(cert)?, &cert_path, base, p);
    let key = pem_text(o.value(key)?, &key_path, base, p);
    check_pair(&cert?, &key?, &cert_path, &key_path, p)
}

/// A certificate and its key, or the problem at the right key path.
fn check_pair(
    cert: &str,
    key: &str,
    cert_path: &str,
    key_path: &str,
    p: &mut Problems,
) -> Option<CertKey> {
    match tls::load_pair(cert, key) {
        Ok(k) => Some(k),
        Err(PairError::Cert(m)) => {
            p.at(cert_path, m);
            None
        }
        Err(e @ (PairError::Key(_) | PairError::Mismatch)) => {
            p.at(key_path, e);
            None
        }
    }
}

/// `client`: `ca` (PEM) and `depth` (default 1, as APISIX).
fn client(c: &Obj, base: Option<&Path>, p: &mut Problems) -> Option<ClientCa> {
    c.only(&["ca", "depth", "skip_mtls_uri_regex"], p);
    if c.has("skip_mtls_uri_regex") {
        p.at(
            &c.path_of("skip_mtls_uri_regex"),
            "not supported by tinygate yet (client certificates are always required in the handshake)",
        );
    }
    let depth = c.int("depth", 0, 100, p).unwrap_or(1) as u32;
    let Some(ca) = c.value("ca") else {
        p.at(&c.path, "missing key ca");
        return None;
    };
    let ca = pem_text(ca, &c.path_of("ca"), base, p)?;
    match tls::load_client_ca(&ca, depth) {
        Ok(ca) => Some(ca),
        Err(m) => {
            p.at(&c.path_of("ca"), m);
            None
        }
    }
}

/// `ssl_protocols`: APISIX writes it as a list in `ssls` and as a
/// space-separated string in `config.yaml`; both are read here.
pub(super) fn protocols(v: &Value, path: &str, p: &mut Problems) -> Option<Versions> {
    let names: Vec<&str> = match v {
        Value::String(s) => s.split_whitespace().collect(),
        Value::Sequence(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut versions = Versions {
        tls12: false,
        tls13: false,
    };
    for name in &names {
        match *name {
            "TLSv1.2" => versions.tls12 = true,
            "TLSv1.3" => versions.tls13 = true,
            "TLSv1" | "TLSv1.1" => p.at(
                path,
                format!("{name} is not supported (tinygate's TLS offers TLSv1.2 and TLSv1.3)"),
            ),
            other => p.at(path, format!("{other:?} is not one of TLSv1.2, TLSv1.3")),
        }
    }
    if !versions.tls12 && !versions.tls13 {
        if names.is_empty() {
            p.at(path, "expected TLSv1.2 and/or TLSv1.3");
        }
        return None;
    }
    Some(versions)
}

/// The folder `file:` paths are relative to: the routes file's. A document
/// from etcd has none, and its paths must be absolute.
pub(super) fn base_dir(p: &Problems) -> Option<PathBuf> {
    let file = Path::new(p.file());
    file.is_file()
        .then(|| file.parent().map(Path::to_path_buf))
        .flatten()
}

/// PEM text: inline, or `file:PATH` (relative to `base`).
pub(super) fn pem_text(
    v: &Value,
    path: &str,
    base: Option<&Path>,
    p: &mut Problems,
) -> Option<String> {
    let Some(text) = v.as_str() else {
        p.at(path, "expected PEM text or file:PATH");
        return None;
    };
    let Some(file) = text.strip_prefix("file:") else {
        return Some(text.to_string());
    };
    let file = Path::new(file.trim());
    let full: PathBuf = match base {
        _ if file.is_absolute() => file.to_path_buf(),
        Some(dir) => dir.join(file),
        None => {
            p.at(
                path,
                format!(
                    "file:{}: the path must be absolute in etcd (each node reads it from its own disk)",
                    file.display()
                ),
            );
            return None;
        }
    };
    match std::fs::read_to_string(&full) {
        Ok(s) => Some(s),
        Err(e) => {
            p.at(path, format!("cannot read {}: {e}", full.display()));
            None
        }
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use crate::config::{parse_routes, RouteRules};
    use crate::tls::testing::Ca;

    /// A routes file with `ssls` given as YAML, indented under the key.
    fn doc(ssls: &str) -> String {
        format!("ssls:\n{ssls}\n#END\n")
    }

    /// PEM as a YAML block scalar at `indent` spaces.
    fn block(pem: &str, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let lines: Vec<String> = pem.lines().map(|l| format!("{pad}{l}")).collect();
        format!("|\n{}", lines.join("\n"))
    }

    #[test]
    fn entries_load_with_lower_case_snis_and_a_second_pair() {
        let ca = Ca::new("ca");
        let one = ca.leaf(&["a.example.com"]);
        let two = ca.leaf(&["a.example.com"]);
        let (c1, k1, c2, k2) = (one.cert, one.key, two.cert, two.key);
        let yaml = doc(&format!(
            "  - id: one\n    snis: [A.Example.com., \"*.b.example.com\"]\n    cert: {}\n    key: {}\n    certs: [{}]\n    keys: [{}]\n    client: {{ca: {}, depth: 2}}\n    ssl_protocols: [TLSv1.3]\n  - {{id: off, status: 0, sni: c.org, cert: {}, key: {}}}",
            block(&c1, 6),
            block(&k1, 6),
            serde_json::to_string(&c2).unwrap(),
            serde_json::to_string(&k2).unwrap(),
            serde_json::to_string(&ca.pem).unwrap(),
            serde_json::to_string(&c2).unwrap(),
            serde_json::to_string(&k2).unwrap(),
        ));
        let routes = parse_routes("apisix.yaml", &yaml, RouteRules::default()).unwrap();
        let ssls = &routes.ssls.entries;
        assert_eq!(ssls.len(), 1, "status 0 is not served");
        assert_eq!(ssls[0].snis, ["a.example.com", "*.b.example.com"]);
        assert_eq!(ssls[0].keys.len(), 2);
        assert!(ssls[0].client.is_some());
        assert_eq!(
            ssls[0].versions,
            Some(crate::tls::Versions {
                tls12: false,
                tls13: true
            })
        );
    }

    #[test]
    fn bad_certificates_and_keys_are_reported_at_their_key_paths() {
        let ca = Ca::new("ca");
        let leaf = ca.leaf(&["a.com"]);
        let (cert, key) = (leaf.cert, leaf.key);
        let other_key = ca.leaf(&["a.com"]).key;
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let yaml = doc(&format!(
            "  - {{id: 1, sni: a.com, cert: {}, key: {}}}\n  - {{id: 2, sni: a.com, cert: {}, key: {}}}\n  - {{id: 3, sni: a.com, cert: {}, key: \"junk\"}}\n  - {{id: 4, snis: [\"a b\"], cert: {}, key: {}, certs: [{}], keys: []}}\n  - {{id: 5, sni: a.com, cert: {}, key: {}, client: {{depth: 1}}, ssl_protocols: [TLSv1.1]}}",
            q(&cert), q(&key),
            q(&cert), q(&other_key),
            q(&cert),
            q(&cert), q(&key), q(&cert),
            q(&cert), q(&key),
        ));
        let err = parse_routes("apisix.yaml", &yaml, RouteRules::default()).unwrap_err();
        let problems: Vec<&str> = err.problems.iter().map(String::as_str).collect();
        assert_eq!(problems[0], "apisix.yaml: ssls[1].key: does not match cert");
        assert!(
            problems[1].starts_with("apisix.yaml: ssls[2].key: not a PEM private key"),
            "{problems:?}"
        );
        assert_eq!(
            problems[2],
            "apisix.yaml: ssls[3].snis[0]: \"a b\" is not a host name or a *.wildcard"
        );
        assert_eq!(
            problems[3],
            "apisix.yaml: ssls[3]: certs has 1 items but keys has 0: they pair up by position"
        );
        assert_eq!(problems[4], "apisix.yaml: ssls[4].client: missing key ca");
        assert_eq!(problems[5], "apisix.yaml: ssls[4].ssl_protocols: TLSv1.1 is not supported (tinygate's TLS offers TLSv1.2 and TLSv1.3)");
        assert_eq!(problems.len(), 6, "{problems:?}");
        // A reload skips exactly these and keeps the others serving.
        let (routes, _) = crate::config::parse_routes_skipping_invalid(
            "apisix.yaml",
            &yaml,
            RouteRules::default(),
            crate::config::Reuse::Nothing,
        )
        .unwrap();
        assert_eq!(routes.ssls.entries.len(), 1);
        assert_eq!(routes.ssls.invalid_ids, ["2", "3", "4", "5"]);
    }
}
