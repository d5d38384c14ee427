//! What a case of a `tinygate test` file expects (`expect`): the response
//! the client received, the request the upstream received, a plugin's
//! local response, the `http_call`s made, log lines, plugin metrics,
//! shared data and the plugin failure met, as the checks `check.rs` runs.
//! It knows the keys and values of `expect` only, nothing about how the
//! exchange is scripted (`exchange.rs`) or how the checks are made.

use super::{scalar, status};
use crate::config::tree::{index, join, Obj, Problems};
use crate::yaml::kind;
use serde_yaml::Value;

/// What a case must produce; absent keys are not checked.
#[derive(Debug, Default)]
pub struct Expect {
    /// The response the client received.
    pub response: Option<MessageExpect>,
    /// The request the upstream received (`false`: none reached it).
    pub upstream: Option<Reached>,
    /// The local response a plugin sent (`false`: none).
    pub local_response: Option<Reached>,
    /// The `http_call`s made, in order (all of them).
    pub calls: Option<Vec<CallExpect>>,
    /// Log lines that must appear.
    pub logs: Vec<LogExpect>,
    /// Plugin metrics: how much a counter or histogram grew during the
    /// case, or a gauge's value after it.
    pub metrics: Vec<(String, i64)>,
    /// Process-wide shared data after the case: key → value (`false`: the
    /// key must not exist).
    pub shared_data: Vec<(String, Option<String>)>,
    /// The plugin failure the request must meet; without it, any failure
    /// fails the case.
    pub fault: Option<FaultExpect>,
}

/// Whether something happened, and what it must look like if it did.
#[derive(Debug)]
pub enum Reached {
    No,
    Yes(MessageExpect),
}

/// Checks on one HTTP message; `None` means not checked.
#[derive(Debug, Default)]
pub struct MessageExpect {
    pub status: Option<u16>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub headers: Vec<(String, HeaderExpect)>,
    pub body: Option<String>,
    pub body_contains: Option<String>,
}

/// A check on one header field (names compare case-insensitively).
#[derive(Debug)]
pub enum HeaderExpect {
    /// Present with exactly this value (several fields of the name are
    /// joined with `, `).
    Equals(String),
    Present,
    Absent,
}

/// One expected `http_call`.
#[derive(Debug)]
pub struct CallExpect {
    pub target: Option<String>,
    /// `method`, `path`, `headers`, `body` of the call.
    pub message: MessageExpect,
}

/// A log line that must appear during the case.
#[derive(Debug)]
pub struct LogExpect {
    pub level: Option<log::Level>,
    pub contains: String,
}

/// The plugin failure a case expects.
#[derive(Debug)]
pub struct FaultExpect {
    pub kind: FaultKind,
    pub plugin: Option<String>,
    pub hook: Option<String>,
    pub contains: Option<String>,
}

/// Kinds of plugin failure a case may expect: the host's
/// ([`crate::wasm::FaultKind`], by the same names), or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Any,
    /// A wasm trap (`unreachable`, out-of-bounds access, a Rust panic...).
    Trap,
    /// The CPU budget (fuel) ran out.
    Fuel,
    /// A trap after the memory limit refused to grow the plugin's memory.
    Memory,
    /// `proc_exit` outside start-up (any code).
    Exit,
    /// `false` from `proxy_on_vm_start` or `proxy_on_configure`.
    Rejected,
    /// Refused without running: the route backs off after failures.
    Backoff,
    /// The plugin reset the stream (`proxy_close_stream`).
    Reset,
    /// The plugin kept the stream paused too long.
    Timeout,
}

impl FaultKind {
    const NAMES: &'static [(&'static str, FaultKind)] = &[
        ("any", FaultKind::Any),
        ("trap", FaultKind::Trap),
        ("fuel", FaultKind::Fuel),
        ("memory", FaultKind::Memory),
        ("exit", FaultKind::Exit),
        ("rejected", FaultKind::Rejected),
        ("backoff", FaultKind::Backoff),
        ("reset", FaultKind::Reset),
        ("timeout", FaultKind::Timeout),
    ];

    pub fn name(self) -> &'static str {
        FaultKind::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("any", |(n, _)| n)
    }
}

/// A case's `expect`; absent keys are not checked.
pub(super) fn expect(o: &Obj, p: &mut Problems) -> Expect {
    o.only(
        &[
            "response",
            "upstream",
            "local_response",
            "calls",
            "logs",
            "metrics",
            "shared_data",
            "fault",
        ],
        p,
    );
    let response = o
        .obj("response", p)
        .map(|r| message(&r, &["status", "headers", "body", "body_contains"], p));
    let upstream = reached(
        o,
        "upstream",
        &["method", "path", "headers", "body", "body_contains"],
        p,
    );
    let local_response = reached(
        o,
        "local_response",
        &["status", "headers", "body", "body_contains"],
        p,
    );
    let calls = o.seq("calls", p).map(|list| {
        let path = o.path_of("calls");
        list.iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let c = Obj::new(item, index(&path, i), p)?;
                let target = c.str("target", p).map(str::to_string);
                let message = message(
                    &c,
                    &[
                        "target",
                        "method",
                        "path",
                        "headers",
                        "body",
                        "body_contains",
                    ],
                    p,
                );
                Some(CallExpect { target, message })
            })
            .collect()
    });
    let logs = o.seq("logs", p).map_or_else(Vec::new, |list| {
        let path = o.path_of("logs");
        list.iter()
            .enumerate()
            .filter_map(|(i, item)| log_line(item, index(&path, i), p))
            .collect()
    });
    let metrics = o.obj("metrics", p).map_or_else(Vec::new, |m| {
        m.map
            .iter()
            .filter_map(|(k, v)| {
                let name = k.as_str()?;
                match v.as_i64() {
                    Some(n) => Some((name.to_string(), n)),
                    None => {
                        p.at(
                            &m.path_of(name),
                            format!("expected an integer, got {}", kind(v)),
                        );
                        None
                    }
                }
            })
            .collect()
    });
    let shared_data = o.obj("shared_data", p).map_or_else(Vec::new, |m| {
        m.map
            .iter()
            .filter_map(|(k, v)| {
                let key = k.as_str()?.to_string();
                match v {
                    Value::Bool(false) => Some((key, None)),
                    Value::String(s) => Some((key, Some(s.clone()))),
                    Value::Number(n) => Some((key, Some(n.to_string()))),
                    other => {
                        p.at(
                            &m.path_of(&key),
                            format!("expected a string, a number or false, got {}", kind(other)),
                        );
                        None
                    }
                }
            })
            .collect()
    });
    let fault = o
        .value("fault")
        .and_then(|v| fault(v, o.path_of("fault"), p));
    Expect {
        response,
        upstream,
        local_response,
        calls,
        logs,
        metrics,
        shared_data,
        fault,
    }
}

/// `false` (it must not happen) or a mapping of checks.
fn reached(o: &Obj, key: &str, known: &[&str], p: &mut Problems) -> Option<Reached> {
    match o.value(key)? {
        Value::Bool(false) => Some(Reached::No),
        v @ Value::Mapping(_) => {
            let m = Obj::new(v, o.path_of(key), p)?;
            Some(Reached::Yes(message(&m, known, p)))
        }
        other => {
            p.at(
                &o.path_of(key),
                format!("expected a mapping or false, got {}", kind(other)),
            );
            None
        }
    }
}

fn message(o: &Obj, known: &[&str], p: &mut Problems) -> MessageExpect {
    o.only(known, p);
    let mut headers = Vec::new();
    if let Some(h) = o.value("headers") {
        match h {
            Value::Mapping(map) => {
                let path = o.path_of("headers");
                for (k, v) in map {
                    let Some(name) = k.as_str() else {
                        p.at(
                            &path,
                            format!("header names must be strings, got {}", kind(k)),
                        );
                        continue;
                    };
                    let check = match v {
                        Value::Bool(true) => HeaderExpect::Present,
                        Value::Bool(false) => HeaderExpect::Absent,
                        other => match scalar(other) {
                            Some(s) => HeaderExpect::Equals(s),
                            None => {
                                p.at(
                                    &join(&path, name),
                                    format!(
                                        "expected a value, true (present) or false (absent), got {}",
                                        kind(other)
                                    ),
                                );
                                continue;
                            }
                        },
                    };
                    headers.push((name.to_ascii_lowercase(), check));
                }
            }
            other => p.at(
                &o.path_of("headers"),
                format!("expected a mapping, got {}", kind(other)),
            ),
        }
    }
    MessageExpect {
        status: status(o, "status", p),
        method: o.str("method", p).map(str::to_string),
        path: o.str("path", p).map(str::to_string),
        headers,
        body: o.str("body", p).map(str::to_string),
        body_contains: o.str("body_contains", p).map(str::to_string),
    }
}

fn log_line(v: &Value, path: String, p: &mut Problems) -> Option<LogExpect> {
    let o = Obj::new(v, path, p)?;
    o.only(&["level", "contains"], p);
    let level = match o.str("level", p) {
        None => None,
        Some(l) => match l.parse::<log::Level>() {
            Ok(level) => Some(level),
            Err(_) => {
                p.at(
                    &o.path_of("level"),
                    format!("expected error, warn, info, debug or trace, got {l:?}"),
                );
                None
            }
        },
    };
    let contains = o.str("contains", p);
    if contains.is_none() && !o.has("contains") {
        p.at(&o.path, "missing key contains");
    }
    Some(LogExpect {
        level,
        contains: contains?.to_string(),
    })
}

/// `trap` (a kind) or `{kind, plugin, hook, contains}`.
fn fault(v: &Value, path: String, p: &mut Problems) -> Option<FaultExpect> {
    let kind_of = |s: &str, path: &str, p: &mut Problems| {
        let found = FaultKind::NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, k)| *k);
        if found.is_none() {
            let names: Vec<&str> = FaultKind::NAMES.iter().map(|(n, _)| *n).collect();
            p.at(
                path,
                format!("expected one of {}, got {s:?}", names.join(", ")),
            );
        }
        found
    };
    match v {
        Value::String(s) => Some(FaultExpect {
            kind: kind_of(s, &path, p)?,
            plugin: None,
            hook: None,
            contains: None,
        }),
        Value::Mapping(_) => {
            let o = Obj::new(v, path, p)?;
            o.only(&["kind", "plugin", "hook", "contains"], p);
            let kind = match o.str("kind", p) {
                Some(s) => kind_of(s, &o.path_of("kind"), p)?,
                None => FaultKind::Any,
            };
            Some(FaultExpect {
                kind,
                plugin: o.str("plugin", p).map(str::to_string),
                hook: o.str("hook", p).map(str::to_string),
                contains: o.str("contains", p).map(str::to_string),
            })
        }
        other => {
            p.at(
                &path,
                format!("expected a kind or a mapping, got {}", kind(other)),
            );
            None
        }
    }
}
