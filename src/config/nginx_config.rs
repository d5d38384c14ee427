//! The settings of APISIX's `nginx_config:` section (in `config.yaml`) that
//! tinygate has a meaning for: `worker_processes` and the client limits
//! under `http:` (`client_max_body_size`, `client_header_timeout`,
//! `client_body_timeout`, `keepalive_timeout`, `send_timeout`), written in
//! nginx's units (`"10m"`, `"60s"`), as APISIX renders them into
//! `nginx.conf`. They set tinygate's defaults; the `tinygate:` key of the
//! same name wins. Everything else in the section (Lua dicts, snippets,
//! log files) is nginx's own and ignored with one warning. This module
//! knows only that section; the rest of `config.yaml` is `main_file.rs`'s.

use super::tree::{Obj, Problems};
use super::ClientLimits;
use crate::yaml::kind;
use serde_yaml::Value;
use std::time::Duration;

/// Keys of `nginx_config.http` tinygate reads.
const HTTP_KEYS: &[&str] = &[
    "client_max_body_size",
    "client_header_timeout",
    "client_body_timeout",
    "keepalive_timeout",
    "send_timeout",
];

/// Reads `nginx_config` of `top` into `limits` and `workers`.
pub(super) fn parse(top: &Obj, limits: &mut ClientLimits, workers: &mut usize, p: &mut Problems) {
    let Some(nginx) = top.obj("nginx_config", p) else {
        return;
    };
    match nginx.value("worker_processes") {
        None => {}
        Some(Value::String(s)) if s == "auto" => {}
        Some(_) => {
            if let Some(n) = nginx.int("worker_processes", 1, 1024, p) {
                *workers = n as usize;
            }
        }
    }
    let http = nginx.obj("http", p);
    if let Some(http) = &http {
        http_limits(http, limits, p);
    }
    let ignored = nginx
        .map
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| !["worker_processes", "http"].contains(k))
        .count()
        + http.as_ref().map_or(0, |h| {
            (h.map.keys().filter_map(Value::as_str))
                .filter(|k| !HTTP_KEYS.contains(k))
                .count()
        });
    if ignored > 0 {
        log::warn!(
            "{}: nginx_config: only worker_processes and http.{{{}}} are read by tinygate; \
             {ignored} other settings ignored",
            p.file(),
            HTTP_KEYS.join(", ")
        );
    }
}

/// The client limits of `nginx_config.http`.
fn http_limits(http: &Obj, limits: &mut ClientLimits, p: &mut Problems) {
    if let Some(v) = http.value("client_max_body_size") {
        match nginx_size(v) {
            Some(n) => limits.client_max_body_size = n,
            None => p.at(
                &http.path_of("client_max_body_size"),
                format!("expected an nginx size such as 0, 8k, 10m or 1g, got {v:?}"),
            ),
        }
    }
    for (key, slot) in [
        ("client_header_timeout", &mut limits.client_header_timeout),
        ("client_body_timeout", &mut limits.client_body_timeout),
        ("keepalive_timeout", &mut limits.keepalive_timeout),
        ("send_timeout", &mut limits.send_timeout),
    ] {
        let Some(v) = http.value(key) else { continue };
        match nginx_time(v) {
            Some(t) if !t.is_zero() && t <= Duration::from_secs(86_400) => *slot = t,
            _ => p.at(
                &http.path_of(key),
                format!(
                    "expected an nginx time in (0, 1d] such as 60s, 500ms or 1m, got {}",
                    shown(v)
                ),
            ),
        }
    }
}

/// `v` for a message: a string as written, anything else by its kind.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

/// An nginx size (`ngx_parse_size`): bytes, or a number with `k`, `m` or
/// `g` (either case) for KiB, MiB, GiB.
fn nginx_size(v: &Value) -> Option<u64> {
    let s = match v {
        Value::Number(n) => return n.as_u64(),
        Value::String(s) => s.trim(),
        _ => return None,
    };
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 'b'),
    };
    let unit: u64 = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// An nginx time (`ngx_parse_time`): seconds, or one or more numbers with
/// units `ms`, `s`, `m`, `h`, `d`, `w` (`"1m30s"`); `keepalive_timeout`'s
/// optional second value (the `Keep-Alive` header's) is not read.
fn nginx_time(v: &Value) -> Option<Duration> {
    let s = match v {
        Value::Number(n) => return n.as_u64().map(Duration::from_secs),
        Value::String(s) => s.split_whitespace().next()?,
        _ => return None,
    };
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_millis(n.checked_mul(millis)?);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn nginx_sizes_and_times() {
        for (text, size) in [
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("8k", Some(8 << 10)),
            ("10m", Some(10 << 20)),
            ("10M", Some(10 << 20)),
            ("1g", Some(1 << 30)),
            ("1x", None),
            ("m", None),
            ("-1", None),
            ("1.5m", None),
        ] {
            assert_eq!(nginx_size(&yaml(text)), size, "{text}");
        }
        let ms = |n| Some(Duration::from_millis(n));
        for (text, time) in [
            ("60", ms(60_000)),
            ("60s", ms(60_000)),
            ("500ms", ms(500)),
            ("1m", ms(60_000)),
            ("1m30s", ms(90_000)),
            ("1h", ms(3_600_000)),
            ("\"75s 60s\"", ms(75_000)),
            ("1y", None),
            ("s", None),
            ("1.5s", None),
        ] {
            assert_eq!(nginx_time(&yaml(text)), time, "{text}");
        }
    }
}
