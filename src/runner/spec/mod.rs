//! The test file format of `tinygate test`, validated into the types the
//! runner executes: the file's structure (the plugins under test, the list
//! of cases, the keys of a case) and the value helpers its parts share.
//!
//! A test file is YAML: the plugin (or chain of plugins) under test, then a
//! list of cases, each a scripted exchange and what it must produce. It is
//! checked like the configuration: with `config::tree`, every problem named
//! by file and key path (`t.yaml: cases[2].expect.upstream.headers:
//! expected a mapping, got a list`), all of them listed, unknown keys
//! refused. The plugin settings take the same keys and values as
//! `wasm.plugins[]` in `config.yaml`. A case's scripted exchange (client
//! request, upstream, `http_call` answers) is read by `exchange.rs`, its
//! expectations by `expect.rs`; this file only places them in a case. This
//! module knows the format only: nothing about running plugins or the
//! proxy. docs/testing-plugins.md documents it with an example.

mod exchange;
mod expect;

pub use exchange::{Answer, Body, Request, Upstream};
pub use expect::{
    CallExpect, Expect, FaultExpect, FaultKind, HeaderExpect, MessageExpect, Reached,
};

use crate::config::tree::{index, join, Obj, Problems};
use crate::config::{json_bytes, plugin_limits, FailurePolicy};
use crate::wasm::PluginSpec;
use crate::yaml::kind;
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
    let request = o
        .obj("request", p)
        .map_or_else(Request::default, |r| exchange::request(&r, p));
    let upstream = o
        .obj("upstream", p)
        .map_or_else(Upstream::default, |u| exchange::upstream(&u, p));
    let calls = o
        .obj("calls", p)
        .map_or_else(Vec::new, |c| exchange::calls(&c, p));
    let ticks = o.int("ticks", 0, MAX_TICKS, p).unwrap_or(0) as u32;
    let expect = o
        .obj("expect", p)
        .map_or_else(Expect::default, |e| expect::expect(&e, p));
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

fn status(o: &Obj, key: &str, p: &mut Problems) -> Option<u16> {
    o.int(key, 100, 999, p).map(|n| n as u16)
}

/// A string or number as text (`x-count: 2` means `"2"`).
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
