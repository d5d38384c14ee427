//! The test file format of `tinygate test`, validated into the types the
//! runner executes.
//!
//! A test file is YAML: the plugin (or chain of plugins) under test, then a
//! list of cases, each a scripted exchange and what it must produce. It is
//! checked like the configuration: with `config::tree`, every problem named
//! by file and key path (`t.yaml: cases[2].expect.upstream.headers:
//! expected a mapping, got a list`), all of them listed, unknown keys
//! refused. The plugin settings take the same keys and values as
//! `wasm.plugins[]` in `config.yaml`. This module knows the format only:
//! nothing about running plugins or the proxy. `scripts/RUNNER.md`
//! documents it with an example.

use crate::config::tree::{index, join, kind, Obj, Problems};
use crate::config::{json_bytes, plugin_limits, FailurePolicy};
use crate::wasm::PluginSpec;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// Most cases one file may hold, and most hand-advanced ticks per case: a
/// typo (`ticks: 1000000000`) must not hang CI.
const MAX_CASES: usize = 10_000;
const MAX_TICKS: i64 = 10_000;

/// One validated test file.
#[derive(Debug)]
pub struct TestFile {
    /// The path as given on the command line, for messages.
    pub label: String,
    /// The plugins of the route, in the order they run.
    pub plugins: Vec<PluginUnderTest>,
    pub cases: Vec<Case>,
}

/// A plugin of the route under test.
#[derive(Debug)]
pub struct PluginUnderTest {
    /// As `wasm.plugins[]` would give it; `file` resolved against the test
    /// file's folder.
    pub spec: PluginSpec,
    pub policy: FailurePolicy,
    /// The route's `conf` for it (a string as written, a mapping
    /// JSON-encoded).
    pub conf: Vec<u8>,
    /// Where it is in the file (`plugin`, `plugins[1]`), for messages.
    pub path: String,
}

/// One scripted exchange and its expectations.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    /// A `conf` replacing the plugin's for this case (single plugin only).
    pub conf: Option<Vec<u8>>,
    pub request: Request,
    pub upstream: Upstream,
    /// Scripted answers to `proxy_http_call`, by target.
    pub calls: Vec<(String, Answer)>,
    /// `proxy_on_tick` rounds to run before the request.
    pub ticks: u32,
    pub expect: Expect,
}

/// The client's request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Always has a `host` (default `localhost`).
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// A scripted message body: `body` is one piece with a `content-length`,
/// `chunks` are pieces sent one by one, chunked.
#[derive(Debug, Default, Clone)]
pub struct Body {
    pub pieces: Vec<Vec<u8>>,
    pub chunked: bool,
    /// Trailer fields after the last chunk (chunked only).
    pub trailers: Vec<(String, String)>,
}

/// What the upstream does with the request the proxy sends it.
#[derive(Debug, Clone)]
pub enum Upstream {
    Answers {
        status: u16,
        headers: Vec<(String, String)>,
        body: Body,
    },
    /// Keeps the connection open and never says anything.
    NeverAnswers,
    /// Resets the connection instead of answering.
    Resets,
}

/// The scripted answer to an `http_call`.
#[derive(Debug, Clone)]
pub enum Answer {
    Responds {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The call fails (the plugin sees no response).
    Fails,
}

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

/// Reads and validates the test file at `path`.
///
/// # Errors
/// Every problem, each with the file and key path.
pub fn load(path: &Path) -> Result<TestFile, Vec<String>> {
    let label = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{label}: cannot read: {e}")])?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| vec![format!("{label}: {e}")])?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut p = Problems::new(&label);
    let file = parse(&doc, dir, label, &mut p);
    match file {
        Some(f) if p.is_empty() => Ok(f),
        _ => Err(p.into_vec()),
    }
}

fn parse(doc: &Value, dir: &Path, label: String, p: &mut Problems) -> Option<TestFile> {
    let top = Obj::new(doc, String::new(), p)?;
    top.only(&["plugin", "plugins", "cases"], p);
    let plugins = match (top.value("plugin"), top.seq("plugins", p)) {
        (Some(one), None) => plugin(one, "plugin".into(), dir, 1, p)
            .into_iter()
            .collect(),
        (None, Some(list)) if !list.is_empty() => {
            let n = list.len();
            let mut out: Vec<PluginUnderTest> = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let Some(pl) = plugin(item, index("plugins", i), dir, n - i, p) else {
                    continue;
                };
                if out.iter().any(|o| o.spec.name == pl.spec.name) {
                    let name = &pl.spec.name;
                    p.at(
                        &pl.path,
                        format!("plugin {name:?} is listed twice (give one a name)"),
                    );
                    continue;
                }
                out.push(pl);
            }
            out
        }
        (None, Some(_)) => {
            p.at("plugins", "must list at least one plugin");
            Vec::new()
        }
        (Some(_), Some(_)) => {
            p.at("", "give either plugin or plugins, not both");
            Vec::new()
        }
        (None, None) => {
            if !top.has("plugins") {
                p.at("", "missing key plugin (or plugins)");
            }
            Vec::new()
        }
    };
    let mut cases = Vec::new();
    match top.seq("cases", p) {
        Some(list) if list.is_empty() => p.at("cases", "must list at least one case"),
        Some(list) if list.len() > MAX_CASES => {
            p.at("cases", format!("more than {MAX_CASES} cases"));
        }
        Some(list) => {
            for (i, item) in list.iter().enumerate() {
                let Some(c) = case(item, index("cases", i), plugins.len(), p) else {
                    continue;
                };
                if cases.iter().any(|o: &Case| o.name == c.name) {
                    p.at(
                        &join(&index("cases", i), "name"),
                        format!("{:?} is used by another case", c.name),
                    );
                }
                cases.push(c);
            }
        }
        None if !top.has("cases") => p.at("", "missing key cases"),
        None => {}
    }
    Some(TestFile {
        label,
        plugins,
        cases,
    })
}

/// One plugin: the keys of `wasm.plugins[]` (`name` defaults to the file's
/// stem, no `priority`: the list order is the run order) plus `conf`.
fn plugin(
    v: &Value,
    path: String,
    dir: &Path,
    priority: usize,
    p: &mut Problems,
) -> Option<PluginUnderTest> {
    let o = Obj::new(v, path, p)?;
    o.only(
        &[
            "file",
            "conf",
            "name",
            "root_id",
            "vm_config",
            "env",
            "fuel",
            "memory_limit",
            "failure_policy",
        ],
        p,
    );
    let file = o.str("file", p);
    if file.is_none() && !o.has("file") {
        p.at(&o.path, "missing key file");
    }
    let conf = o
        .value("conf")
        .map(|v| conf_bytes(v, &o.path_of("conf"), p))
        .unwrap_or_default();
    let vm_config = o
        .value("vm_config")
        .map(|v| conf_bytes(v, &o.path_of("vm_config"), p))
        .unwrap_or_default();
    let limits = plugin_limits(&o, p);
    let file = file?;
    let resolved = if Path::new(file).is_absolute() {
        PathBuf::from(file)
    } else {
        dir.join(file)
    };
    let name = match o.str("name", p) {
        Some(n) if !n.is_empty() => n.to_string(),
        Some(_) => {
            p.at(&o.path_of("name"), "must not be empty");
            return None;
        }
        None => Path::new(file).file_stem().map_or_else(
            || "plugin".to_string(),
            |s| s.to_string_lossy().into_owned(),
        ),
    };
    Some(PluginUnderTest {
        spec: PluginSpec {
            name,
            file: resolved,
            priority: priority as i64,
            root_id: limits.root_id,
            vm_config,
            env: limits.env,
            fuel_per_callback: limits.fuel,
            memory_limit: limits.memory_limit,
        },
        policy: limits.failure_policy,
        conf,
        path: o.path,
    })
}

fn case(v: &Value, path: String, plugins: usize, p: &mut Problems) -> Option<Case> {
    let o = Obj::new(v, path, p)?;
    o.only(
        &[
            "name", "conf", "request", "upstream", "calls", "ticks", "expect",
        ],
        p,
    );
    let name = o.str("name", p).map(str::to_string);
    if name.is_none() && !o.has("name") {
        p.at(&o.path, "missing key name");
    }
    let conf = o
        .value("conf")
        .map(|v| conf_bytes(v, &o.path_of("conf"), p));
    if conf.is_some() && plugins > 1 {
        p.at(
            &o.path_of("conf"),
            "a case can replace the conf of a single plugin only",
        );
    }
    let request = match o.obj("request", p) {
        Some(r) => request(&r, p),
        None => Request {
            method: "GET".into(),
            path: "/".into(),
            headers: vec![("host".into(), "localhost".into())],
            body: Body::default(),
        },
    };
    let upstream = match o.obj("upstream", p) {
        Some(u) => upstream(&u, p),
        None => Upstream::Answers {
            status: 200,
            headers: Vec::new(),
            body: Body::default(),
        },
    };
    let calls = match o.obj("calls", p) {
        Some(c) => calls(&c, p),
        None => Vec::new(),
    };
    let ticks = o.int("ticks", 0, MAX_TICKS, p).unwrap_or(0) as u32;
    let expect = match o.obj("expect", p) {
        Some(e) => expect(&e, p),
        None => Expect::default(),
    };
    Some(Case {
        name: name?,
        conf,
        request,
        upstream,
        calls,
        ticks,
        expect,
    })
}

fn request(o: &Obj, p: &mut Problems) -> Request {
    o.only(
        &["method", "path", "headers", "body", "chunks", "trailers"],
        p,
    );
    let method = o.str("method", p).unwrap_or("GET").to_string();
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!".contains(&b))
    {
        p.at(
            &o.path_of("method"),
            format!("{method:?} is not an HTTP method"),
        );
    }
    let path = o.str("path", p).unwrap_or("/").to_string();
    if !path.starts_with('/') || path.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        p.at(
            &o.path_of("path"),
            format!("{path:?} is not a request target (a path from /, no spaces)"),
        );
    }
    let mut headers = fields(o, "headers", p);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        headers.insert(0, ("host".into(), "localhost".into()));
    }
    let body = body(o, p);
    for (k, _) in &headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            p.at(
                &join(&o.path_of("headers"), k),
                "framing is set from body (content-length) or chunks (chunked)",
            );
        }
    }
    Request {
        method,
        path,
        headers,
        body,
    }
}

fn upstream(o: &Obj, p: &mut Problems) -> Upstream {
    o.only(
        &[
            "status",
            "headers",
            "body",
            "chunks",
            "trailers",
            "never_answers",
            "resets",
        ],
        p,
    );
    let never = o.bool("never_answers", p).unwrap_or(false);
    let resets = o.bool("resets", p).unwrap_or(false);
    if never || resets {
        let other = ["status", "headers", "body", "chunks", "trailers"]
            .into_iter()
            .find(|k| o.has(k));
        if let Some(k) = other.or((never && resets).then_some("resets")) {
            p.at(
                &o.path_of(k),
                "an upstream that never answers or resets sends nothing else",
            );
        }
        return if never {
            Upstream::NeverAnswers
        } else {
            Upstream::Resets
        };
    }
    let status = status(o, "status", p).unwrap_or(200);
    let headers = fields(o, "headers", p);
    for (k, _) in &headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            p.at(
                &join(&o.path_of("headers"), k),
                "framing is set from body (content-length) or chunks (chunked)",
            );
        }
    }
    Upstream::Answers {
        status,
        headers,
        body: body(o, p),
    }
}

/// `body` (one piece, `content-length`) or `chunks` (pieces, chunked),
/// plus `trailers` (chunked only).
fn body(o: &Obj, p: &mut Problems) -> Body {
    let mut out = Body::default();
    if let Some(text) = o.str("body", p) {
        out.pieces = vec![text.as_bytes().to_vec()];
    }
    if let Some(list) = o.seq("chunks", p) {
        if o.has("body") {
            p.at(&o.path_of("chunks"), "give either body or chunks, not both");
        }
        out.chunked = true;
        out.pieces.clear();
        for (i, item) in list.iter().enumerate() {
            match item {
                Value::String(s) if !s.is_empty() => out.pieces.push(s.as_bytes().to_vec()),
                Value::String(_) => p.at(
                    &index(&o.path_of("chunks"), i),
                    "must not be empty (an empty chunk ends a chunked body)",
                ),
                other => p.at(
                    &index(&o.path_of("chunks"), i),
                    format!("expected a string, got {}", kind(other)),
                ),
            }
        }
    }
    out.trailers = fields(o, "trailers", p);
    if !out.trailers.is_empty() && !out.chunked {
        p.at(
            &o.path_of("trailers"),
            "trailers need a chunked body (chunks)",
        );
    }
    out
}

fn calls(o: &Obj, p: &mut Problems) -> Vec<(String, Answer)> {
    let mut out = Vec::new();
    for (k, v) in o.map {
        let Some(target) = k.as_str().filter(|t| !t.is_empty()) else {
            p.at(
                &o.path,
                format!("targets must be non-empty strings, got {}", kind(k)),
            );
            continue;
        };
        let Some(a) = Obj::new(v, join(&o.path, target), p) else {
            continue;
        };
        a.only(&["status", "headers", "body", "fails"], p);
        if a.bool("fails", p) == Some(true) {
            if let Some(k) = ["status", "headers", "body"].into_iter().find(|k| a.has(k)) {
                p.at(&a.path_of(k), "a failing call has no response");
            }
            out.push((target.to_string(), Answer::Fails));
            continue;
        }
        out.push((
            target.to_string(),
            Answer::Responds {
                status: status(&a, "status", p).unwrap_or(200),
                headers: fields(&a, "headers", p),
                body: a.str("body", p).unwrap_or("").as_bytes().to_vec(),
            },
        ));
    }
    out
}

fn expect(o: &Obj, p: &mut Problems) -> Expect {
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

/// Header fields to send: a mapping `name: value`, or a list of
/// `[name, value]` pairs (for repeated names). Names are lower-cased, as
/// the proxy's parser gives them.
fn fields(o: &Obj, key: &str, p: &mut Problems) -> Vec<(String, String)> {
    let path = o.path_of(key);
    let mut out = Vec::new();
    let mut push = |name: &str, value: &Value, at: String, p: &mut Problems| {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            p.at(&at, format!("{name:?} is not a header name"));
            return;
        }
        match scalar(value) {
            Some(v) if !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) => {
                out.push((name.to_ascii_lowercase(), v));
            }
            Some(_) => p.at(&at, "a header value cannot hold CR, LF or NUL"),
            None => p.at(
                &at,
                format!("expected a string or a number, got {}", kind(value)),
            ),
        }
    };
    match o.value(key) {
        None => {}
        Some(Value::Mapping(map)) => {
            for (k, v) in map {
                match k.as_str() {
                    Some(name) => push(name, v, join(&path, name), p),
                    None => p.at(
                        &path,
                        format!("header names must be strings, got {}", kind(k)),
                    ),
                }
            }
        }
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_sequence().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => push(name, value, index(&path, i), p),
                    _ => p.at(&index(&path, i), "expected a pair [name, value]"),
                }
            }
        }
        Some(other) => p.at(
            &path,
            format!(
                "expected a mapping (or a list of [name, value]), got {}",
                kind(other)
            ),
        ),
    }
    out
}

fn status(o: &Obj, key: &str, p: &mut Problems) -> Option<u16> {
    o.int(key, 100, 999, p).map(|n| n as u16)
}

/// A string, number or boolean as text (`x-count: 2` means `"2"`).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A plugin `conf` or `vm_config`: a string as written, anything else
/// JSON-encoded (as APISIX does with object confs).
fn conf_bytes(v: &Value, path: &str, p: &mut Problems) -> Vec<u8> {
    match v {
        Value::String(s) => s.clone().into_bytes(),
        Value::Mapping(_) | Value::Sequence(_) => json_bytes(v, path, p),
        other => {
            p.at(
                path,
                format!("expected a string or a mapping, got {}", kind(other)),
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(yaml: &str, expected: &str) {
        let doc: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
        let mut p = Problems::new("t.yaml");
        let _ = parse(&doc, Path::new("."), "t.yaml".into(), &mut p);
        let problems = p.into_vec();
        assert!(
            problems.iter().any(|m| m == expected),
            "expected {expected:?} among {problems:#?}"
        );
    }

    fn check_ok(yaml: &str) -> TestFile {
        let doc: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
        let mut p = Problems::new("t.yaml");
        let file = parse(&doc, Path::new("/d"), "t.yaml".into(), &mut p);
        assert!(p.is_empty(), "unexpected problems: {:#?}", p.into_vec());
        file.expect("a file")
    }

    #[test]
    fn a_small_file_parses_with_defaults() {
        let f = check_ok(
            r#"
plugin: {file: x.wasm, conf: {a: 1}}
cases:
  - name: one
    expect:
      response: {status: 200, headers: {x-a: 1, x-b: true, x-c: false}}
      upstream: false
"#,
        );
        assert_eq!(f.plugins[0].spec.name, "x");
        assert_eq!(f.plugins[0].spec.file, PathBuf::from("/d/x.wasm"));
        assert_eq!(f.plugins[0].conf, br#"{"a":1}"#);
        let c = &f.cases[0];
        assert_eq!(
            (c.request.method.as_str(), c.request.path.as_str()),
            ("GET", "/")
        );
        assert_eq!(c.request.headers, vec![("host".into(), "localhost".into())]);
        assert!(matches!(c.expect.upstream, Some(Reached::No)));
        let r = c.expect.response.as_ref().unwrap();
        assert!(matches!(&r.headers[0], (n, HeaderExpect::Equals(v)) if n == "x-a" && v == "1"));
        assert!(matches!(r.headers[1].1, HeaderExpect::Present));
        assert!(matches!(r.headers[2].1, HeaderExpect::Absent));
    }

    #[test]
    fn problems_name_the_key_path() {
        let base = "plugin: {file: x.wasm}\ncases:\n";
        check_err(
            &format!("{base}  - name: a\n    expect: {{upstream: {{headers: [1]}}}}\n"),
            "t.yaml: cases[0].expect.upstream.headers: expected a mapping, got a list",
        );
        check_err(
            &format!("{base}  - name: a\n    expect: {{respnse: {{}}}}\n"),
            "t.yaml: cases[0].expect.respnse: unknown key (expected one of: response, upstream, local_response, calls, logs, metrics, shared_data, fault)",
        );
        check_err(
            &format!("{base}  - {{}}\n"),
            "t.yaml: cases[0]: missing key name",
        );
        check_err(
            &format!("{base}  - name: a\n  - name: a\n"),
            "t.yaml: cases[1].name: \"a\" is used by another case",
        );
        check_err(
            &format!("{base}  - name: a\n    expect: {{fault: crash}}\n"),
            "t.yaml: cases[0].expect.fault: expected one of any, trap, fuel, memory, exit, rejected, backoff, reset, timeout, got \"crash\"",
        );
        check_err(
            &format!("{base}  - name: a\n    request: {{body: x, headers: {{content-length: 1}}}}\n"),
            "t.yaml: cases[0].request.headers.content-length: framing is set from body (content-length) or chunks (chunked)",
        );
        check_err("cases: []\n", "t.yaml: missing key plugin (or plugins)");
        check_err(
            "plugin: {conf: x}\ncases: [{name: a}]\n",
            "t.yaml: plugin: missing key file",
        );
        check_err(
            "plugins: [{file: a.wasm}, {file: a.wasm}]\ncases: [{name: a}]\n",
            "t.yaml: plugins[1]: plugin \"a\" is listed twice (give one a name)",
        );
    }
}
