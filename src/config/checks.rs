//! An upstream's `checks`: APISIX's active and passive health checks, with
//! APISIX's defaults and limits (`schema_def.lua`, `health_checker`), into
//! health's [`Checks`]. It knows the keys and their meaning, not how checks
//! run (`src/health/`).

use super::tree::{index, Obj, Problems};
use crate::health::{ActiveCheck, Checks, Counting, Probe};
use crate::upstream::UpstreamTls;
use crate::yaml::kind;
use serde_yaml::Value;
use std::time::Duration;

/// APISIX's `method_schema`: the methods a probe may use.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// `checks`; `None` when it has errors (recorded in `p`).
pub(super) fn checks(o: &Obj, p: &mut Problems) -> Option<Checks> {
    let before = p.len();
    o.only(&["active", "passive"], p);
    let active = match o.obj("active", p) {
        Some(a) => active(&a, p),
        None => {
            if !o.has("active") {
                p.at(
                    &o.path,
                    "missing key active (APISIX runs passive checks only beside active ones)",
                );
            }
            None
        }
    };
    let passive = o.obj("passive", p).map(|q| passive(&q, p));
    if p.len() > before {
        return None;
    }
    Some(Checks {
        active: active?,
        passive_statuses: passive.is_some(),
        passive: passive.unwrap_or_else(Counting::passive_defaults),
    })
}

fn active(o: &Obj, p: &mut Problems) -> Option<ActiveCheck> {
    o.only(
        &[
            "type",
            "timeout",
            "concurrency",
            "host",
            "port",
            "http_method",
            "http_path",
            "http_req_body",
            "https_verify_certificate",
            "req_headers",
            "healthy",
            "unhealthy",
        ],
        p,
    );
    let probe = match o.str("type", p).unwrap_or("http") {
        "http" => Probe::Http,
        "tcp" => Probe::Tcp,
        "https" => Probe::Https,
        other => {
            p.at(
                &o.path_of("type"),
                format!("expected http, https or tcp, got {other:?}"),
            );
            Probe::Http
        }
    };
    let timeout = o.seconds("timeout", p).unwrap_or(1.0);
    let concurrency = o.int("concurrency", 1, 1000, p).unwrap_or(10) as usize;
    let host = o
        .str("host", p)
        .and_then(|h| probe_host(h, &o.path_of("host"), p));
    let port = o.int("port", 1, 65535, p).map(|n| n as u16);
    let http_method = match o.str("http_method", p).unwrap_or("GET") {
        m if METHODS.contains(&m) => m.to_string(),
        other => {
            p.at(
                &o.path_of("http_method"),
                format!("{other:?} is not one of {}", METHODS.join(", ")),
            );
            String::new()
        }
    };
    let http_path = o.str("http_path", p).unwrap_or("/").to_string();
    if !is_request_target(&http_path) {
        p.at(
            &o.path_of("http_path"),
            format!("{http_path:?} is not a request path (it must start with / and have no spaces or control bytes)"),
        );
    }
    let http_req_body = o.str("http_req_body", p).unwrap_or("").to_string();
    let verify = o.bool("https_verify_certificate", p).unwrap_or(true);
    let tls = (probe == Probe::Https).then(|| UpstreamTls::new(verify, None));
    let req_headers = match o.value("req_headers") {
        Some(v) => req_headers(v, &o.path_of("req_headers"), p),
        None => Vec::new(),
    };
    let mut counting = Counting::active_defaults();
    let mut intervals = (1, 1);
    if let Some(h) = o.obj("healthy", p) {
        h.only(&["interval", "http_statuses", "successes"], p);
        intervals.0 = h.int("interval", 1, 86_400, p).unwrap_or(1);
        healthy(&h, 1, &mut counting, p);
    }
    if let Some(u) = o.obj("unhealthy", p) {
        u.only(
            &[
                "interval",
                "http_statuses",
                "http_failures",
                "tcp_failures",
                "timeouts",
            ],
            p,
        );
        intervals.1 = u.int("interval", 1, 86_400, p).unwrap_or(1);
        unhealthy(&u, 1, &mut counting, p);
    }
    Some(ActiveCheck {
        probe,
        tls,
        timeout: Duration::from_secs_f64(timeout),
        concurrency,
        host,
        port,
        http_method,
        http_path,
        http_req_body,
        req_headers,
        healthy_interval: Duration::from_secs(intervals.0 as u64),
        unhealthy_interval: Duration::from_secs(intervals.1 as u64),
        counting,
    })
}

fn passive(o: &Obj, p: &mut Problems) -> Counting {
    o.only(&["type", "healthy", "unhealthy"], p);
    match o.str("type", p) {
        None | Some("http" | "https" | "tcp") => {}
        Some(other) => p.at(
            &o.path_of("type"),
            format!("expected http, https or tcp, got {other:?}"),
        ),
    }
    let mut counting = Counting::passive_defaults();
    if let Some(h) = o.obj("healthy", p) {
        h.only(&["http_statuses", "successes"], p);
        healthy(&h, 0, &mut counting, p);
    }
    if let Some(u) = o.obj("unhealthy", p) {
        u.only(
            &["http_statuses", "http_failures", "tcp_failures", "timeouts"],
            p,
        );
        unhealthy(&u, 0, &mut counting, p);
    }
    counting
}

/// `healthy.{http_statuses, successes}`; thresholds start at `min`.
fn healthy(o: &Obj, min: i64, counting: &mut Counting, p: &mut Problems) {
    if let Some(s) = statuses(o, "http_statuses", p) {
        counting.healthy_statuses = s;
    }
    if let Some(n) = threshold(o, "successes", min, p) {
        counting.successes = n;
    }
}

/// `unhealthy.{http_statuses, http_failures, tcp_failures, timeouts}`.
fn unhealthy(o: &Obj, min: i64, counting: &mut Counting, p: &mut Problems) {
    if let Some(s) = statuses(o, "http_statuses", p) {
        counting.unhealthy_statuses = s;
    }
    for (key, slot) in [
        ("http_failures", &mut counting.http_failures),
        ("tcp_failures", &mut counting.tcp_failures),
        ("timeouts", &mut counting.timeouts),
    ] {
        if let Some(n) = threshold(o, key, min, p) {
            *slot = n;
        }
    }
}

/// A count of `min..=254` (lua-resty-healthcheck keeps 8-bit counters).
fn threshold(o: &Obj, key: &str, min: i64, p: &mut Problems) -> Option<u8> {
    o.int(key, min, 254, p).map(|n| n as u8)
}

/// A non-empty list of unique statuses in 200..=599.
fn statuses(o: &Obj, key: &str, p: &mut Problems) -> Option<Vec<u16>> {
    let path = o.path_of(key);
    let items = o.seq(key, p)?;
    if items.is_empty() {
        p.at(&path, "must list at least one status");
        return None;
    }
    let mut out: Vec<u16> = Vec::with_capacity(items.len());
    let before = p.len();
    for (i, item) in items.iter().enumerate() {
        match item.as_u64() {
            Some(s @ 200..=599) if out.contains(&(s as u16)) => {
                p.at(&index(&path, i), format!("{s} is listed twice"));
            }
            Some(s @ 200..=599) => out.push(s as u16),
            _ => p.at(
                &index(&path, i),
                format!("expected a status in 200..=599, got {}", shown(item)),
            ),
        }
    }
    (p.len() == before).then_some(out)
}

/// `req_headers`: a non-empty list of `"Name: value"` strings.
fn req_headers(v: &Value, path: &str, p: &mut Problems) -> Vec<(String, String)> {
    let Value::Sequence(items) = v else {
        p.at(
            path,
            format!(
                "expected a list of \"Name: value\" strings, got {}",
                kind(v)
            ),
        );
        return Vec::new();
    };
    if items.is_empty() {
        p.at(path, "must list at least one header");
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = item.as_str().and_then(|line| {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            crate::http::is_valid_field(name.as_bytes(), value.as_bytes())
                .then(|| (name.to_string(), value.to_string()))
        });
        match parsed {
            Some(h) => out.push(h),
            None => p.at(
                &index(path, i),
                format!(
                    "expected a \"Name: value\" header line, got {}",
                    shown(item)
                ),
            ),
        }
    }
    out
}

/// APISIX's `host_def` characters, without the wildcard a probe cannot use.
fn probe_host(h: &str, path: &str, p: &mut Problems) -> Option<String> {
    let valid = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    if valid {
        Some(h.to_string())
    } else {
        p.at(path, format!("{h:?} is not a host name or address"));
        None
    }
}

/// A path a request line can carry as it is: `/`, then visible ASCII.
fn is_request_target(s: &str) -> bool {
    s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A value for a message: its text if it is a scalar, else its kind.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Option<Checks>, Vec<String>) {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        let mut p = Problems::new("apisix.yaml");
        let o = Obj::new(&v, "upstreams[0].checks".into(), &mut p).unwrap();
        let c = checks(&o, &mut p);
        (c, p.into_vec())
    }

    #[test]
    fn defaults_are_apisix_defaults() {
        let (c, problems) = parse("active: {}");
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.unwrap();
        let a = &c.active;
        assert_eq!(a.probe, Probe::Http);
        assert_eq!(a.timeout, Duration::from_secs(1));
        assert_eq!(a.concurrency, 10);
        assert_eq!((a.http_method.as_str(), a.http_path.as_str()), ("GET", "/"));
        assert_eq!(a.healthy_interval, Duration::from_secs(1));
        assert_eq!(a.unhealthy_interval, Duration::from_secs(1));
        assert_eq!(a.counting, Counting::active_defaults());
        assert_eq!(a.counting.successes, 2);
        assert_eq!(a.counting.tcp_failures, 2);
        assert_eq!(a.counting.timeouts, 3);
        assert_eq!(a.counting.http_failures, 5);
        assert!(!c.passive_statuses);
        assert_eq!(c.passive, Counting::passive_defaults());
        assert_eq!(c.passive.healthy_statuses.len(), 19);
        assert_eq!(c.passive.unhealthy_statuses, vec![429, 500, 503]);
        assert_eq!(c.passive.timeouts, 7);
    }

    #[test]
    fn every_key_is_read() {
        let (c, problems) = parse(
            r#"
active:
  type: tcp
  timeout: 0.5
  concurrency: 3
  host: foo.com
  port: 8081
  http_method: HEAD
  http_path: /health?x=1
  http_req_body: ping
  https_verify_certificate: false
  req_headers: ["User-Agent: curl/7.29.0", "X-A:b"]
  healthy: {interval: 2, successes: 1, http_statuses: [200]}
  unhealthy: {interval: 3, http_failures: 2, tcp_failures: 4, timeouts: 5, http_statuses: [500, 502]}
passive:
  type: http
  healthy: {http_statuses: [200, 201], successes: 0}
  unhealthy: {http_statuses: [500], http_failures: 3, tcp_failures: 0, timeouts: 1}
"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let c = c.unwrap();
        let a = &c.active;
        assert_eq!(a.probe, Probe::Tcp);
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.concurrency, 3);
        assert_eq!(a.host.as_deref(), Some("foo.com"));
        assert_eq!(a.port, Some(8081));
        assert_eq!(a.http_method, "HEAD");
        assert_eq!(a.http_path, "/health?x=1");
        assert_eq!(a.http_req_body, "ping");
        assert_eq!(
            a.req_headers,
            vec![
                ("User-Agent".to_string(), "curl/7.29.0".to_string()),
                ("X-A".to_string(), "b".to_string())
            ]
        );
        assert_eq!(a.healthy_interval, Duration::from_secs(2));
        assert_eq!(a.unhealthy_interval, Duration::from_secs(3));
        assert_eq!(a.counting.healthy_statuses, vec![200]);
        assert_eq!(a.counting.successes, 1);
        assert_eq!(a.counting.unhealthy_statuses, vec![500, 502]);
        assert_eq!(
            (
                a.counting.http_failures,
                a.counting.tcp_failures,
                a.counting.timeouts
            ),
            (2, 4, 5)
        );
        assert!(c.passive_statuses);
        assert_eq!(c.passive.healthy_statuses, vec![200, 201]);
        assert_eq!(c.passive.successes, 0);
        assert_eq!(c.passive.unhealthy_statuses, vec![500]);
        assert_eq!(
            (
                c.passive.http_failures,
                c.passive.tcp_failures,
                c.passive.timeouts
            ),
            (3, 0, 1)
        );
    }

    #[test]
    fn errors_name_their_key_path() {
        let (c, problems) = parse(
            r#"
active:
  type: https
  timeout: 0
  port: 70000
  http_method: FETCH
  http_path: "/a b"
  req_headers: ["no colon", "X-Ok: 1"]
  healthy: {interval: 0, successes: 255, http_statuses: [200, 200, 99]}
  unhealthy: {http_failures: 0, timout: 1}
passive:
  type: udp
  healthy: {http_statuses: []}
"#,
        );
        assert!(c.is_none());
        let at = "apisix.yaml: upstreams[0].checks";
        assert_eq!(
            problems,
            vec![
                format!("{at}.active.timeout: 0 is not a number of seconds in (0, 86400]"),
                format!("{at}.active.port: 70000 is out of range 1..=65535"),
                format!("{at}.active.http_method: \"FETCH\" is not one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, CONNECT, TRACE, PURGE"),
                format!("{at}.active.http_path: \"/a b\" is not a request path (it must start with / and have no spaces or control bytes)"),
                format!("{at}.active.req_headers[0]: expected a \"Name: value\" header line, got \"no colon\""),
                format!("{at}.active.healthy.interval: 0 is out of range 1..=86400"),
                format!("{at}.active.healthy.http_statuses[1]: 200 is listed twice"),
                format!("{at}.active.healthy.http_statuses[2]: expected a status in 200..=599, got 99"),
                format!("{at}.active.healthy.successes: 255 is out of range 1..=254"),
                format!("{at}.active.unhealthy.timout: unknown key (expected one of: interval, http_statuses, http_failures, tcp_failures, timeouts)"),
                format!("{at}.active.unhealthy.http_failures: 0 is out of range 1..=254"),
                format!("{at}.passive.type: expected http, https or tcp, got \"udp\""),
                format!("{at}.passive.healthy.http_statuses: must list at least one status"),
            ]
        );
    }

    #[test]
    fn passive_alone_is_refused_as_in_apisix() {
        let (c, problems) = parse("passive: {}");
        assert!(c.is_none());
        assert_eq!(
            problems,
            vec!["apisix.yaml: upstreams[0].checks: missing key active (APISIX runs passive checks only beside active ones)"]
        );
    }
}
