//! `config.yaml`'s `deployment` section: the role, the config provider
//! (`yaml`, the default, or `etcd`), and `deployment.etcd` in APISIX's shape.
//!
//! Only the settings are read here; talking to etcd is `src/etcd/`'s job.

use super::ssls::pem_text;
use super::tree::{index, Obj, Problems};
use super::{EtcdAccess, EtcdConfig, EtcdCredentials, EtcdHost};
use crate::tls::{self, ClientSettings, Roots};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// APISIX's default etcd client URL and key prefix.
const DEFAULT_HOST: &str = "http://127.0.0.1:2379";
const DEFAULT_PREFIX: &str = "/apisix";
/// etcd's client port, when a `host` URL has none.
const DEFAULT_PORT: u16 = 2379;

/// `deployment.etcd` keys APISIX has that tune its own client; tinygate
/// accepts them with a warning.
const IGNORED_ETCD_KEYS: &[&str] = &["watch_timeout", "resync_delay", "health_check_timeout"];

/// Checks `deployment`; returns the etcd settings when the config provider
/// is `etcd`, `None` for the YAML provider. `trusted` is
/// `apisix.ssl.ssl_trusted_certificate`, which `https://` hosts are
/// verified against (as in APISIX).
pub(super) fn parse(d: &Obj, dir: &Path, trusted: &Roots, p: &mut Problems) -> Option<EtcdConfig> {
    d.only(
        &[
            "role",
            "role_data_plane",
            "role_traditional",
            "admin",
            "etcd",
        ],
        p,
    );
    let role = d.str("role", p);
    if let Some(role) = role {
        if role != "data_plane" && role != "traditional" {
            p.at(
                &d.path_of("role"),
                format!("tinygate runs as data_plane, not {role:?}"),
            );
        }
    }
    // The provider is read from the section of the role in use, as APISIX
    // does; without a role, from whichever section is given.
    let mut etcd_provider = false;
    for section in ["role_data_plane", "role_traditional"] {
        let Some(r) = d.obj(section, p) else { continue };
        r.only(&["config_provider"], p);
        let in_use = role.is_none_or(|role| section == format!("role_{role}"));
        match r.str("config_provider", p) {
            Some("etcd") => etcd_provider |= in_use,
            Some("yaml") | None => {}
            Some(other) => p.at(
                &r.path_of("config_provider"),
                format!("expected \"yaml\" or \"etcd\", not {other:?}"),
            ),
        }
    }
    let etcd = match d.obj("etcd", p) {
        Some(e) => etcd_section(&e, dir, trusted, p),
        None => Some(EtcdConfig {
            hosts: vec![
                host_url(DEFAULT_HOST, &Arc::default()).expect("the default etcd URL is valid")
            ],
            prefix: DEFAULT_PREFIX.to_string(),
            timeout: Duration::from_secs(30),
            startup_retry: 2,
            snapshot: None,
        }),
    };
    if !etcd_provider {
        if d.has("etcd") {
            log::warn!(
                "{}: {}: used only with config_provider: etcd, ignored",
                p.file(),
                d.path_of("etcd")
            );
        }
        return None;
    }
    etcd
}

/// `deployment.etcd`: `host`, `prefix`, `timeout`, `startup_retry`,
/// `snapshot`, `user`, `password`, `tls`.
fn etcd_section(e: &Obj, dir: &Path, trusted: &Roots, p: &mut Problems) -> Option<EtcdConfig> {
    let before = p.len();
    let mut known = vec![
        "host",
        "prefix",
        "timeout",
        "startup_retry",
        "snapshot",
        "user",
        "password",
        "tls",
    ];
    known.extend_from_slice(IGNORED_ETCD_KEYS);
    e.only(&known, p);
    for key in IGNORED_ETCD_KEYS {
        if e.has(key) {
            log::warn!(
                "{}: {}: not used by tinygate, ignored",
                p.file(),
                e.path_of(key)
            );
        }
    }
    let (plain, secure) = access(e, dir, trusted, p);
    let hosts = match e.strings("host", p) {
        Some(list) => {
            let path = e.path_of("host");
            let mut out = Vec::new();
            for (i, url) in list.iter().enumerate() {
                let access = if url.starts_with("https://") {
                    &secure
                } else {
                    &plain
                };
                match host_url(url, access) {
                    Ok(h) => out.push(h),
                    Err(msg) => p.at(&index(&path, i), msg),
                }
            }
            out
        }
        None => vec![host_url(DEFAULT_HOST, &plain).expect("the default etcd URL is valid")],
    };
    if let Some(settings) = hosts.iter().find_map(|h| h.access.tls.as_ref()) {
        // The system store may be missing (an image FROM scratch): say so
        // now rather than at every connection.
        if let Err(m) = tls::Connector::new(settings) {
            p.at(&e.path_of("host"), m);
        }
    }
    let prefix = match e.str("prefix", p) {
        Some(s) if s.starts_with('/') => s.trim_end_matches('/').to_string(),
        Some(s) => {
            p.at(
                &e.path_of("prefix"),
                format!("must start with /, got {s:?}"),
            );
            String::new()
        }
        None => DEFAULT_PREFIX.to_string(),
    };
    let timeout = e
        .seconds("timeout", p)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64);
    let startup_retry = e.int("startup_retry", 1, 100, p).unwrap_or(2) as u32;
    let snapshot = e.str("snapshot", p).map(|s| dir.join(s));
    if p.len() > before {
        return None;
    }
    Some(EtcdConfig {
        hosts,
        prefix,
        timeout,
        startup_retry,
        snapshot,
    })
}

/// `user`/`password` and `tls`: what plain hosts and `https://` hosts
/// are reached with.
fn access(
    e: &Obj,
    dir: &Path,
    trusted: &Roots,
    p: &mut Problems,
) -> (Arc<EtcdAccess>, Arc<EtcdAccess>) {
    let credentials = match (e.str("user", p), e.str("password", p)) {
        (Some(user), Some(password)) if !user.is_empty() => Some(EtcdCredentials {
            user: user.to_string(),
            password: password.to_string(),
        }),
        (None, None) => None,
        _ => {
            p.at(&e.path, "user and password go together (user not empty)");
            None
        }
    };
    let mut settings = ClientSettings {
        verify: true,
        roots: trusted.clone(),
        client_cert: None,
    };
    let mut sni = None;
    if let Some(t) = e.obj("tls", p) {
        t.only(&["cert", "key", "verify", "sni"], p);
        settings.verify = t.bool("verify", p).unwrap_or(true);
        if let Some(name) = t.str("sni", p) {
            if tls::is_valid_sni(name) && !name.starts_with('*') {
                sni = Some(name.to_string());
            } else {
                p.at(&t.path_of("sni"), format!("{name:?} is not a host name"));
            }
        }
        settings.client_cert = client_cert(&t, dir, p);
    }
    let plain = EtcdAccess {
        tls: None,
        sni: None,
        credentials,
    };
    let secure = EtcdAccess {
        tls: Some(settings),
        sni,
        ..plain.clone()
    };
    (Arc::new(plain), Arc::new(secure))
}

/// `tls.cert` and `tls.key`: files (relative to `config.yaml`), as APISIX
/// reads them, or PEM text.
fn client_cert(t: &Obj, dir: &Path, p: &mut Problems) -> Option<tls::CertKey> {
    let (cert, key) = match (t.value("cert"), t.value("key")) {
        (None, None) => return None,
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            p.at(&t.path, "cert and key go together");
            return None;
        }
    };
    let read = |v: &serde_yaml::Value, key: &str, p: &mut Problems| {
        let path = t.path_of(key);
        match v.as_str() {
            Some(text) if text.contains("-----BEGIN") || text.starts_with("file:") => {
                pem_text(v, &path, Some(dir), p)
            }
            Some(file) => match std::fs::read_to_string(dir.join(file)) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    p.at(
                        &path,
                        format!("cannot read {}: {e}", dir.join(file).display()),
                    );
                    None
                }
            },
            None => {
                p.at(&path, "expected a file path");
                None
            }
        }
    };
    let cert_pem = read(cert, "cert", p);
    let key_pem = read(key, "key", p);
    match tls::load_pair(&cert_pem?, &key_pem?) {
        Ok(k) => Some(k),
        Err(tls::PairError::Cert(m)) => {
            p.at(&t.path_of("cert"), m);
            None
        }
        Err(err) => {
            p.at(&t.path_of("key"), err);
            None
        }
    }
}

/// `http://host[:port][/]` or `https://...` into an [`EtcdHost`].
fn host_url(url: &str, access: &Arc<EtcdAccess>) -> Result<EtcdHost, String> {
    let https = url.starts_with("https://");
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(format!(
            "expected a URL like http://127.0.0.1:2379, got {url:?}"
        ));
    };
    if https {
        tls::available().map_err(|m| format!("{url:?}: {m}"))?;
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let bad = || format!("expected a URL like http://127.0.0.1:2379, got {url:?}");
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad());
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (format!("[{addr}]"), port)
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        },
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)?,
        None => DEFAULT_PORT,
    };
    if host.is_empty() || host == "[]" {
        return Err(bad());
    }
    Ok(EtcdHost {
        url: url.to_string(),
        authority: format!("{host}:{port}"),
        access: Arc::clone(access),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a `deployment` section given as YAML.
    fn check(yaml: &str) -> Result<Option<EtcdConfig>, Vec<String>> {
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut p = Problems::new("config.yaml");
        let d = Obj::new(&doc, "deployment".into(), &mut p).unwrap();
        let out = parse(&d, Path::new("/conf"), &Roots::default(), &mut p);
        if p.is_empty() {
            Ok(out)
        } else {
            Err(p.into_vec())
        }
    }

    #[test]
    fn yaml_is_the_default_provider() {
        assert_eq!(check("role: data_plane"), Ok(None));
        assert_eq!(
            check("role: data_plane\nrole_data_plane: {config_provider: yaml}"),
            Ok(None)
        );
    }

    #[test]
    fn etcd_provider_with_apisix_defaults() {
        let e = check("role: data_plane\nrole_data_plane: {config_provider: etcd}")
            .unwrap()
            .unwrap();
        assert_eq!(e.hosts[0].authority, "127.0.0.1:2379");
        assert_eq!(e.prefix, "/apisix");
        assert_eq!(e.timeout, Duration::from_secs(30));
        assert_eq!(e.startup_retry, 2);
        assert_eq!(e.snapshot, None);
    }

    #[test]
    fn etcd_section_in_full() {
        let e = check(
            r#"
role: traditional
role_traditional: {config_provider: etcd}
etcd:
  host: ["http://10.0.0.1:2379", "http://etcd-b/", "http://[::1]:23790"]
  prefix: /fleet/
  timeout: 2.5
  startup_retry: 3
  snapshot: state/etcd.yaml
  watch_timeout: 50
"#,
        )
        .unwrap()
        .unwrap();
        let hosts: Vec<&str> = e.hosts.iter().map(|h| h.authority.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.1:2379", "etcd-b:2379", "[::1]:23790"]);
        assert_eq!(e.prefix, "/fleet");
        assert_eq!(e.timeout, Duration::from_millis(2500));
        assert_eq!(e.startup_retry, 3);
        assert_eq!(e.snapshot, Some("/conf/state/etcd.yaml".into()));
    }

    #[test]
    fn the_provider_of_the_role_in_use_counts() {
        let yaml = "role: data_plane\nrole_traditional: {config_provider: etcd}";
        assert_eq!(check(yaml), Ok(None));
    }

    #[test]
    fn bad_etcd_settings_are_reported_with_their_path() {
        let errs = check(
            r#"
role_data_plane: {config_provider: etcd}
etcd:
  host: ["ftp://a:2379", "127.0.0.1:2379", "http://a:0", "http://a/b"]
  prefix: apisix
  password: secret
"#,
        )
        .unwrap_err();
        assert_eq!(
            errs,
            [
                "config.yaml: deployment.etcd: user and password go together (user not empty)",
                "config.yaml: deployment.etcd.host[0]: expected a URL like http://127.0.0.1:2379, got \"ftp://a:2379\"",
                "config.yaml: deployment.etcd.host[1]: expected a URL like http://127.0.0.1:2379, got \"127.0.0.1:2379\"",
                "config.yaml: deployment.etcd.host[2]: expected a URL like http://127.0.0.1:2379, got \"http://a:0\"",
                "config.yaml: deployment.etcd.host[3]: expected a URL like http://127.0.0.1:2379, got \"http://a/b\"",
                "config.yaml: deployment.etcd.prefix: must start with /, got \"apisix\"",
            ]
        );
    }

    #[test]
    fn unknown_providers_are_refused() {
        assert_eq!(
            check("role_data_plane: {config_provider: xds}"),
            Err(vec![
                "config.yaml: deployment.role_data_plane.config_provider: expected \"yaml\" or \"etcd\", not \"xds\"".to_string()
            ])
        );
    }
}
