//! `config.yaml`: listeners, the `wasm.plugins` list and the `tinygate:`
//! settings. APISIX sections tinygate has no use for are accepted with a
//! warning so an existing APISIX file still loads; anything else unknown is
//! an error.

use super::access_log::{Format, Target};
use super::tree::{index, join, Obj, Problems};
use super::{
    env_vars, parse_yaml, read, ClientLimits, ConfigError, DeclaredPlugin, FailurePolicy,
    MainConfig,
};
use crate::wasm::{PluginSpec, DEFAULT_FUEL_PER_CALLBACK, DEFAULT_MEMORY_LIMIT};
use crate::yaml::kind;
use serde_yaml::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// APISIX's default `node_listen`.
const DEFAULT_PORT: u16 = 9080;

/// Top-level APISIX sections that tinygate reads nothing from.
const IGNORED_APISIX_SECTIONS: &[&str] = &[
    "plugins",
    "stream_plugins",
    "plugin_attr",
    "discovery",
    "graphql",
    "ext-plugin",
    "etcd",
];

/// Keys of `apisix:` that tinygate reads nothing from.
const IGNORED_APISIX_KEYS: &[&str] = &[
    "enable_admin",
    "enable_ipv6",
    "enable_http2",
    "enable_server_tokens",
    "enable_control",
    "control",
    "router",
    "proxy_mode",
    "show_upstream_status_in_response_header",
    "extra_lua_path",
    "extra_lua_cpath",
    "proxy_cache",
    "delete_uri_tail_slash",
    "normalize_uri_like_servlet",
    "resolver_timeout",
    "enable_resolv_search_opt",
    "data_encryption",
    "events",
    "disable_sync_configuration_during_start",
    "enable_dev_mode",
    "enable_reuseport",
    "match_uri_encoded_slash",
    "max_post_args_readable_size",
    "worker_startup_time_threshold",
    "lru",
    "tracing",
    "lua_module_hook",
    "dns_resolver",
    "dns_resolver_valid",
    "disable_upstream_healthcheck",
    "trusted_addresses",
];

/// Keys of `apisix:` that would make APISIX serve something tinygate does
/// not (TCP and UDP proxying, the PROXY protocol on its listeners):
/// refused, since ignoring them would leave clients facing a listener
/// that does not speak what they were promised.
const UNSUPPORTED_APISIX_KEYS: &[&str] = &["stream_proxy", "proxy_protocol"];

pub(super) fn load(path: &Path) -> Result<MainConfig, ConfigError> {
    let label = path.display().to_string();
    let text = read(path)?;
    let mut doc = parse_yaml(&label, &text)?;
    env_vars::substitute_in_values(&label, &mut doc)
        .map_err(|problems| ConfigError { problems })?;
    let mut p = Problems::new(&label);
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let config = parse(&doc, &dir, path, &mut p);
    match config {
        Some(c) if p.is_empty() => Ok(c),
        _ => Err(ConfigError {
            problems: p.into_vec(),
        }),
    }
}

fn parse(doc: &Value, dir: &Path, path: &Path, p: &mut Problems) -> Option<MainConfig> {
    let empty = Value::Mapping(Default::default());
    let doc = if doc.is_null() { &empty } else { doc };
    let top = Obj::new(doc, String::new(), p)?;
    for key in top.map.keys().filter_map(Value::as_str) {
        if IGNORED_APISIX_SECTIONS.contains(&key) {
            log::warn!(
                "{}: {key}: APISIX setting not used by tinygate, ignored",
                p.file()
            );
        }
    }
    let mut known = vec!["apisix", "deployment", "wasm", "tinygate", "nginx_config"];
    known.extend_from_slice(IGNORED_APISIX_SECTIONS);
    top.only(&known, p);

    let mut ssl = super::SslConfig::default();
    let listen = match top.obj("apisix", p) {
        Some(apisix) => {
            for key in apisix.map.keys().filter_map(Value::as_str) {
                if IGNORED_APISIX_KEYS.contains(&key) {
                    log::warn!("{}: apisix.{key}: not used by tinygate, ignored", p.file());
                }
            }
            for key in UNSUPPORTED_APISIX_KEYS {
                if apisix.has(key) {
                    p.at(&apisix.path_of(key), "not supported by tinygate");
                }
            }
            let mut known = vec!["node_listen", "ssl"];
            known.extend_from_slice(IGNORED_APISIX_KEYS);
            known.extend_from_slice(UNSUPPORTED_APISIX_KEYS);
            apisix.only(&known, p);
            ssl = super::ssl::parse(&apisix, dir, p);
            node_listen(&apisix, p)
        }
        None => None,
    }
    .unwrap_or_else(|| {
        vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            DEFAULT_PORT,
        )]
    });

    let etcd = top
        .obj("deployment", p)
        .and_then(|d| super::deployment::parse(&d, dir, &ssl.trusted, p));

    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut routes_file = dir.join("apisix.yaml");
    let mut demo_upstream = None;
    let mut shutdown_grace = Duration::from_secs(10);
    let mut limits = ClientLimits::default();
    let mut access_log = Target::Off;
    let mut access_log_format = Format::Combined;
    let mut status_listen = None;
    let mut deny_exec_memory = true;
    // nginx's settings first: a `tinygate:` key of the same meaning wins.
    super::nginx_config::parse(&top, &mut limits, &mut workers, p);
    if let Some(t) = top.obj("tinygate", p) {
        let mut known = vec![
            "workers",
            "routes_file",
            "demo_upstream",
            "shutdown_grace",
            "client_header_timeout",
            "client_body_timeout",
            "keepalive_timeout",
            "send_timeout",
            "client_max_body_size",
            "max_header_size",
            "max_connections",
            "max_buffered_body",
            "access_log",
            "access_log_format",
            "status_listen",
            "deny_exec_memory",
        ];
        known.extend_from_slice(super::requests::KEYS);
        t.only(&known, p);
        super::requests::parse(&t, &mut limits, p);
        if let Some(b) = t.bool("deny_exec_memory", p) {
            deny_exec_memory = b;
        }
        client_limits(&t, &mut limits, p);
        match t.str("access_log", p) {
            None | Some("off") => {}
            Some("stdout") => access_log = Target::Stdout,
            Some(path) => access_log = Target::File(resolve(dir, path)),
        }
        match t.value("status_listen") {
            Some(Value::Bool(true)) => {
                status_listen = Some(SocketAddr::from(([127, 0, 0, 1], 9091)))
            }
            Some(Value::Bool(false)) | None => {}
            Some(Value::String(a)) => match a.parse::<SocketAddr>() {
                Ok(addr) => status_listen = Some(addr),
                Err(_) => p.at(
                    &t.path_of("status_listen"),
                    format!("expected ip:port, got {a:?}"),
                ),
            },
            Some(other) => p.at(
                &t.path_of("status_listen"),
                format!("expected ip:port or true, got {}", kind(other)),
            ),
        }
        match t.str("access_log_format", p) {
            None | Some("combined") => {}
            Some("json") => access_log_format = Format::Json,
            Some(other) => p.at(
                &t.path_of("access_log_format"),
                format!("expected combined or json, got {other:?}"),
            ),
        }
        if let Some(s) = t.seconds("shutdown_grace", p) {
            shutdown_grace = Duration::from_secs_f64(s);
        }
        if let Some(n) = t.int("workers", 1, 1024, p) {
            workers = n as usize;
        }
        if let Some(f) = t.str("routes_file", p) {
            routes_file = dir.join(f);
        }
        if let Some(a) = t.str("demo_upstream", p) {
            match a.parse::<SocketAddr>() {
                Ok(addr) => demo_upstream = Some(addr),
                Err(_) => p.at(
                    &t.path_of("demo_upstream"),
                    format!("expected ip:port, got {a:?}"),
                ),
            }
        }
    }

    let plugins = match top.obj("wasm", p) {
        Some(wasm) => {
            wasm.only(&["plugins"], p);
            wasm_plugins(&wasm, dir, p)
        }
        None => Vec::new(),
    };

    Some(MainConfig {
        config_file: path.to_path_buf(),
        routes_file,
        listen,
        ssl,
        workers,
        demo_upstream,
        shutdown_grace,
        deny_exec_memory,
        plugins,
        limits,
        access_log,
        access_log_format,
        status_listen,
        etcd,
    })
}

/// The client limits under `tinygate:`.
fn client_limits(t: &Obj, limits: &mut ClientLimits, p: &mut Problems) {
    for (key, slot) in [
        ("client_header_timeout", &mut limits.client_header_timeout),
        ("client_body_timeout", &mut limits.client_body_timeout),
        ("keepalive_timeout", &mut limits.keepalive_timeout),
        ("send_timeout", &mut limits.send_timeout),
    ] {
        if let Some(s) = t.seconds(key, p) {
            *slot = Duration::from_secs_f64(s);
        }
    }
    match t.value("client_max_body_size") {
        Some(Value::Number(n)) if n.as_u64() == Some(0) => limits.client_max_body_size = 0,
        Some(v) => {
            if let Some(n) = byte_size(v, &t.path_of("client_max_body_size"), p) {
                limits.client_max_body_size = n as u64;
            }
        }
        None => {}
    }
    if let Some(v) = t.value("max_header_size") {
        match byte_size(v, &t.path_of("max_header_size"), p) {
            Some(n) if n >= 1024 => limits.max_header_size = n,
            Some(_) => p.at(&t.path_of("max_header_size"), "must be at least 1KiB"),
            None => {}
        }
    }
    if let Some(v) = t.value("max_buffered_body") {
        if let Some(n) = byte_size(v, &t.path_of("max_buffered_body"), p) {
            limits.max_buffered_body = n;
        }
    }
    if let Some(n) = t.int("max_connections", 1, 1_000_000, p) {
        limits.max_connections = n as usize;
    }
}

/// `node_listen`: a port, a list of ports, or a list of `{ip, port}`.
fn node_listen(apisix: &Obj, p: &mut Problems) -> Option<Vec<SocketAddr>> {
    let path = apisix.path_of("node_listen");
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let items: Vec<&Value> = match apisix.value("node_listen")? {
        Value::Sequence(items) => items.iter().collect(),
        single => vec![single],
    };
    if items.is_empty() {
        p.at(&path, "must list at least one listener");
        return None;
    }
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let item_path = if matches!(apisix.value("node_listen"), Some(Value::Sequence(_))) {
            index(&path, i)
        } else {
            path.clone()
        };
        match item {
            Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(port) => out.push(SocketAddr::new(any, port)),
                None => p.at(&item_path, format!("{n} is not a port (0..=65535)")),
            },
            Value::Mapping(_) => {
                let Some(o) = Obj::new(item, item_path.clone(), p) else {
                    continue;
                };
                o.only(&["ip", "port", "enable_http2", "enable_http3"], p);
                let port = o.int("port", 0, 65535, p);
                let ip = match o.str("ip", p) {
                    Some(s) => match s.parse::<IpAddr>() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            p.at(&o.path_of("ip"), format!("{s:?} is not an IP address"));
                            None
                        }
                    },
                    None => Some(any),
                };
                match (ip, port) {
                    (Some(ip), Some(port)) => out.push(SocketAddr::new(ip, port as u16)),
                    (_, None) if !o.has("port") => p.at(&item_path, "missing key port"),
                    _ => {}
                }
            }
            other => p.at(
                &item_path,
                format!("expected a port or {{ip, port}}, got {}", kind(other)),
            ),
        }
    }
    Some(out)
}

/// `wasm.plugins`: each plugin's spec and failure policy.
fn wasm_plugins(wasm: &Obj, dir: &Path, p: &mut Problems) -> Vec<DeclaredPlugin> {
    let Some(items) = wasm.seq("plugins", p) else {
        return Vec::new();
    };
    let list_path = wasm.path_of("plugins");
    let mut out: Vec<DeclaredPlugin> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(o) = Obj::new(item, index(&list_path, i), p) else {
            continue;
        };
        o.only(
            &[
                "name",
                "priority",
                "file",
                "http_request_phase",
                "root_id",
                "vm_config",
                "env",
                "fuel",
                "memory_limit",
                "failure_policy",
            ],
            p,
        );
        let name = o.str("name", p);
        let file = o.str("file", p);
        let priority = o.int("priority", i64::from(i32::MIN), i64::from(i32::MAX), p);
        for (key, present) in [
            ("name", name.is_some()),
            ("file", file.is_some()),
            ("priority", o.has("priority")),
        ] {
            if !present && !o.has(key) {
                p.at(&o.path, format!("missing key {key}"));
            }
        }
        if let Some(phase) = o.str("http_request_phase", p) {
            if phase != "access" && phase != "rewrite" {
                p.at(
                    &o.path_of("http_request_phase"),
                    format!("expected \"access\" or \"rewrite\", got {phase:?}"),
                );
            }
        }
        let vm_config = match o.value("vm_config") {
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(v @ Value::Mapping(_)) => json_bytes(v, &o.path_of("vm_config"), p),
            Some(other) => {
                p.at(
                    &o.path_of("vm_config"),
                    format!("expected a string or a mapping, got {}", kind(other)),
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        let limits = plugin_limits(&o, p);
        let (Some(name), Some(file), Some(priority)) = (name, file, priority) else {
            continue;
        };
        if out.iter().any(|x| x.name == name) {
            p.at(
                &o.path_of("name"),
                format!("plugin {name:?} is declared twice"),
            );
            continue;
        }
        let spec = PluginSpec {
            name: name.to_string(),
            file: resolve(dir, file),
            priority,
            root_id: limits.root_id,
            vm_config,
            env: limits.env,
            fuel_per_callback: limits.fuel,
            memory_limit: limits.memory_limit,
        };
        out.push(DeclaredPlugin {
            spec,
            failure_policy: limits.failure_policy,
        });
    }
    out
}

/// What a plugin entry says beyond its name, file, priority and
/// configurations; the same keys in `wasm.plugins[]` and in `tinygate
/// test` files.
pub(crate) struct PluginLimits {
    pub root_id: String,
    pub env: Vec<(String, String)>,
    pub fuel: u64,
    pub memory_limit: usize,
    pub failure_policy: FailurePolicy,
}

/// Reads `root_id`, `env`, `fuel`, `memory_limit` and `failure_policy`.
pub(crate) fn plugin_limits(o: &Obj, p: &mut Problems) -> PluginLimits {
    let failure_policy = match o.str("failure_policy", p) {
        None | Some("fail_closed") => FailurePolicy::FailClosed,
        Some("fail_open") => FailurePolicy::FailOpen,
        Some(other) => {
            p.at(
                &o.path_of("failure_policy"),
                format!("expected \"fail_closed\" or \"fail_open\", got {other:?}"),
            );
            FailurePolicy::FailClosed
        }
    };
    PluginLimits {
        root_id: o.str("root_id", p).unwrap_or("").to_string(),
        env: o.obj("env", p).map_or_else(Vec::new, |e| env_pairs(&e, p)),
        fuel: o
            .int("fuel", 1, i64::MAX, p)
            .map_or(DEFAULT_FUEL_PER_CALLBACK, |n| n as u64),
        memory_limit: o
            .value("memory_limit")
            .and_then(|v| byte_size(v, &o.path_of("memory_limit"), p))
            .unwrap_or(DEFAULT_MEMORY_LIMIT),
        failure_policy,
    }
}

fn resolve(dir: &Path, file: &str) -> PathBuf {
    let f = Path::new(file);
    if f.is_absolute() {
        f.to_path_buf()
    } else {
        dir.join(f)
    }
}

pub(crate) fn env_pairs(e: &Obj, p: &mut Problems) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in e.map {
        let key = k.as_str().unwrap_or_default();
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                p.at(
                    &join(&e.path, key),
                    format!("expected a scalar, got {}", kind(other)),
                );
                continue;
            }
        };
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            p.at(
                &e.path,
                format!("{key:?} is not a valid environment variable name"),
            );
            continue;
        }
        out.push((key.to_string(), value));
    }
    out
}

/// A byte count: an integer, or a string like `64MiB`, `512KiB`, `1GiB`.
pub(crate) fn byte_size(v: &Value, path: &str, p: &mut Problems) -> Option<usize> {
    let parsed = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let unit_size: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" | "K" | "KB" => 1 << 10,
                "MiB" | "M" | "MB" => 1 << 20,
                "GiB" | "G" | "GB" => 1 << 30,
                _ => 0,
            };
            digits
                .parse::<u64>()
                .ok()
                .filter(|_| unit_size > 0)
                .and_then(|n| n.checked_mul(unit_size))
        }
        _ => None,
    };
    match parsed.and_then(|n| usize::try_from(n).ok()) {
        Some(n) if n > 0 => Some(n),
        _ => {
            p.at(
                path,
                "expected a positive size such as 67108864 or \"64MiB\"",
            );
            None
        }
    }
}

/// A YAML mapping as JSON bytes (APISIX JSON-encodes object confs).
pub(crate) fn json_bytes(v: &Value, path: &str, p: &mut Problems) -> Vec<u8> {
    match serde_json::to_vec(v) {
        Ok(bytes) => bytes,
        Err(e) => {
            p.at(path, format!("cannot be encoded as JSON: {e}"));
            Vec::new()
        }
    }
}
