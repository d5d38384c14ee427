//! Comparing what a case produced with what it expects.
//!
//! Every expectation that does not hold becomes one [`Mismatch`] naming
//! it by key path (`response.headers.x-go-wasm`, `calls[0].target`) with
//! the expected and actual values as text, for the report to diff. A case
//! passes when there are none.

use super::exec::{Message, Outcome};
use super::spec::{CallExpect, Case, FaultExpect, FaultKind, HeaderExpect, MessageExpect, Reached};
use crate::wasm::{Fault, MetricKind};

/// Shown for a value that is not there.
pub const ABSENT: &str = "(absent)";

/// One expectation that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Which expectation, as a key path under `expect`.
    pub what: String,
    pub expected: String,
    pub actual: String,
}

/// Every expectation of `case` that `outcome` does not meet.
pub fn check(case: &Case, outcome: &Outcome) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let e = &case.expect;
    let mut miss = |what: &str, expected: String, actual: String| {
        out.push(Mismatch {
            what: what.to_string(),
            expected,
            actual,
        });
    };
    if let Some(error) = &outcome.error {
        miss("run", "the case runs to its end".into(), error.clone());
    }
    match (&e.fault, &outcome.fault) {
        (None, None) => {}
        (None, Some(f)) => miss("fault", "no plugin failure".into(), f.to_string()),
        (Some(x), None) => miss("fault", describe_fault(x), "no plugin failure".into()),
        (Some(x), Some(f)) => {
            if !fault_matches(x, f) {
                miss(
                    "fault",
                    describe_fault(x),
                    format!("{} ({})", f, kind_of(f).name()),
                );
            }
        }
    }
    let mut mismatches = Vec::new();
    if let Some(m) = &e.response {
        match &outcome.response {
            Some(r) => message(&mut mismatches, "response", m, r),
            None => mismatches.push(Mismatch {
                what: "response".into(),
                expected: "a response".into(),
                actual: "no response".into(),
            }),
        }
    }
    match (&e.upstream, &outcome.upstream) {
        (None, _) | (Some(Reached::No), None) => {}
        (Some(Reached::No), Some(u)) => mismatches.push(Mismatch {
            what: "upstream".into(),
            expected: "no request reaches the upstream".into(),
            actual: format!("{} {}", u.method, u.path),
        }),
        (Some(Reached::Yes(_)), None) => mismatches.push(Mismatch {
            what: "upstream".into(),
            expected: "a request reaches the upstream".into(),
            actual: "no request reached it".into(),
        }),
        (Some(Reached::Yes(m)), Some(u)) => message(&mut mismatches, "upstream", m, u),
    }
    match (&e.local_response, &outcome.local) {
        (None, _) | (Some(Reached::No), None) => {}
        (Some(Reached::No), Some(l)) => mismatches.push(Mismatch {
            what: "local_response".into(),
            expected: "no local response".into(),
            actual: format!("{} from a plugin", l.status),
        }),
        (Some(Reached::Yes(_)), None) => mismatches.push(Mismatch {
            what: "local_response".into(),
            expected: "a plugin answers locally".into(),
            actual: "no local response".into(),
        }),
        (Some(Reached::Yes(m)), Some(l)) => {
            let as_message = Message {
                status: l.status,
                headers: l
                    .headers
                    .iter()
                    .map(|(k, v)| (lossy(k), lossy(v)))
                    .collect(),
                body: l.body.clone(),
                ..Message::default()
            };
            message(&mut mismatches, "local_response", m, &as_message);
        }
    }
    if let Some(calls) = &e.calls {
        check_calls(&mut mismatches, calls, outcome);
    }
    out.append(&mut mismatches);
    for (i, l) in e.logs.iter().enumerate() {
        let found = outcome.logs.iter().any(|line| {
            l.level.is_none_or(|lv| lv == line.level)
                && format!("{}: {}", line.target, line.message).contains(&l.contains)
        });
        if !found {
            let level = l
                .level
                .map_or(String::from("any level"), |lv| lv.to_string());
            let seen: Vec<String> = outcome.logs.iter().map(ToString::to_string).collect();
            out.push(Mismatch {
                what: format!("logs[{i}]"),
                expected: format!("a line at {level} containing {:?}", l.contains),
                actual: if seen.is_empty() {
                    "(nothing logged)".into()
                } else {
                    seen.join("\n")
                },
            });
        }
    }
    for (key, expected) in &e.shared_data {
        let actual = crate::wasm::shared_value(key.as_bytes())
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        if actual != *expected {
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
            out.push(Mismatch {
                what: format!("shared_data.{key}"),
                expected: show(expected),
                actual: show(&actual),
            });
        }
    }
    for (name, expected) in &e.metrics {
        let metric = outcome.metrics.iter().find(|(n, ..)| n == name);
        let actual = match metric {
            None => "(no such metric)".to_string(),
            Some((_, MetricKind::Gauge, _, after)) => after.to_string(),
            Some((_, _, before, after)) => (after - before).to_string(),
        };
        if actual != expected.to_string() {
            out.push(Mismatch {
                what: format!("metrics.{name}"),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    out
}

/// The kind of a host fault, as the test file names it (host bookkeeping
/// kinds, which a plugin cannot cause alone, are only `any`).
pub fn kind_of(f: &Fault) -> FaultKind {
    use crate::wasm::FaultKind as Host;
    match f.kind {
        Host::Trap => FaultKind::Trap,
        Host::Fuel => FaultKind::Fuel,
        Host::Memory => FaultKind::Memory,
        Host::Exit(_) => FaultKind::Exit,
        Host::Rejected => FaultKind::Rejected,
        Host::Backoff => FaultKind::Backoff,
        Host::Reset => FaultKind::Reset,
        Host::PauseTimeout => FaultKind::Timeout,
        Host::UnknownContext | Host::Broken | Host::ContextGone => FaultKind::Any,
    }
}

fn fault_matches(x: &FaultExpect, f: &Fault) -> bool {
    (x.kind == FaultKind::Any || x.kind == kind_of(f))
        && x.plugin.as_ref().is_none_or(|p| *p == f.plugin)
        && x.hook.as_ref().is_none_or(|h| h == f.hook)
        && x.contains
            .as_ref()
            .is_none_or(|c| f.to_string().contains(c.as_str()))
}

fn describe_fault(x: &FaultExpect) -> String {
    let mut s = match x.kind {
        FaultKind::Any => "a plugin failure".to_string(),
        k => format!("a plugin failure of kind {}", k.name()),
    };
    if let Some(p) = &x.plugin {
        s.push_str(&format!(" in plugin {p:?}"));
    }
    if let Some(h) = &x.hook {
        s.push_str(&format!(" in {h}"));
    }
    if let Some(c) = &x.contains {
        s.push_str(&format!(" mentioning {c:?}"));
    }
    s
}

fn message(out: &mut Vec<Mismatch>, prefix: &str, m: &MessageExpect, actual: &Message) {
    let mut miss = |key: &str, expected: String, got: String| {
        if expected != got {
            out.push(Mismatch {
                what: format!("{prefix}.{key}"),
                expected,
                actual: got,
            });
        }
    };
    if let Some(s) = m.status {
        miss("status", s.to_string(), actual.status.to_string());
    }
    if let Some(method) = &m.method {
        miss("method", method.clone(), actual.method.clone());
    }
    if let Some(path) = &m.path {
        miss("path", path.clone(), actual.path.clone());
    }
    for (name, check) in &m.headers {
        let got = actual.header(name);
        let key = format!("headers.{name}");
        match check {
            HeaderExpect::Equals(v) => miss(&key, v.clone(), got.unwrap_or_else(|| ABSENT.into())),
            HeaderExpect::Present if got.is_none() => {
                miss(&key, "(present)".into(), ABSENT.into());
            }
            HeaderExpect::Absent => {
                if let Some(v) = got {
                    miss(&key, ABSENT.into(), v);
                }
            }
            HeaderExpect::Present => {}
        }
    }
    let body = lossy(&actual.body);
    if let Some(b) = &m.body {
        miss("body", b.clone(), body.clone());
    }
    if let Some(c) = &m.body_contains {
        if !body.contains(c.as_str()) {
            miss("body_contains", c.clone(), body);
        }
    }
}

fn check_calls(out: &mut Vec<Mismatch>, calls: &[CallExpect], outcome: &Outcome) {
    if calls.len() != outcome.calls.len() {
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "(no calls)".to_string()
            } else {
                v.join("\n")
            }
        };
        out.push(Mismatch {
            what: "calls".into(),
            expected: list(
                calls
                    .iter()
                    .map(|c| c.target.clone().unwrap_or_else(|| "(a call)".into()))
                    .collect(),
            ),
            actual: list(outcome.calls.iter().map(|c| c.target.clone()).collect()),
        });
        return;
    }
    for (i, (x, call)) in calls.iter().zip(&outcome.calls).enumerate() {
        let prefix = format!("calls[{i}]");
        if let Some(t) = &x.target {
            if *t != call.target {
                out.push(Mismatch {
                    what: format!("{prefix}.target"),
                    expected: t.clone(),
                    actual: call.target.clone(),
                });
            }
        }
        let get = |name: &[u8]| call.headers.get(name).map(lossy).unwrap_or_default();
        let as_message = Message {
            method: get(b":method"),
            path: get(b":path"),
            headers: call
                .headers
                .iter()
                .map(|(k, v)| (lossy(k), lossy(v)))
                .collect(),
            body: call.body.clone(),
            ..Message::default()
        };
        message(out, &prefix, &x.message, &as_message);
    }
}

fn lossy(bytes: impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(bytes.as_ref()).into_owned()
}
