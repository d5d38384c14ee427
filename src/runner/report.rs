//! What `tinygate test` prints: a readable summary with a diff for every
//! failed expectation (text), the same plus everything each case produced
//! (JSON), or JUnit XML for CI systems to display.

use super::check::{kind_of, Mismatch};
use super::exec::{Message, Outcome};
use serde_json::{json, Value};
use std::fmt::Write as _;

/// Lines of log shown under a failed case in the text report.
const LOG_TAIL: usize = 20;

/// Longest body shown in the JSON report, in bytes.
const MAX_JSON_BODY: usize = 64 * 1024;

/// Longest value (in lines) diffed line by line; longer ones are shown
/// whole, one after the other.
const MAX_DIFF_LINES: usize = 2000;

/// One test file's results.
pub struct FileReport {
    pub label: String,
    pub cases: Vec<CaseReport>,
}

/// One case's result.
pub struct CaseReport {
    pub name: String,
    pub mismatches: Vec<Mismatch>,
    pub outcome: Outcome,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// (cases, failed cases) over all files.
pub fn counts(files: &[FileReport]) -> (usize, usize) {
    let cases = files.iter().map(|f| f.cases.len()).sum();
    let failed = files
        .iter()
        .flat_map(|f| &f.cases)
        .filter(|c| !c.passed())
        .count();
    (cases, failed)
}

/// The text report.
pub fn text(files: &[FileReport]) -> String {
    let mut s = String::new();
    for file in files {
        let _ = writeln!(s, "{}", file.label);
        for case in &file.cases {
            let ms = case.outcome.elapsed.as_millis();
            if case.passed() {
                let _ = writeln!(s, "  ok    {} ({ms} ms)", case.name);
                continue;
            }
            let _ = writeln!(s, "  FAIL  {} ({ms} ms)", case.name);
            for m in &case.mismatches {
                let _ = writeln!(s, "        {}", m.what);
                for line in diff(&m.expected, &m.actual) {
                    let _ = writeln!(s, "          {line}");
                }
            }
            for note in &case.outcome.notes {
                let _ = writeln!(s, "        note: {note}");
            }
            let logs = &case.outcome.logs;
            if !logs.is_empty() {
                let _ = writeln!(s, "        log:");
                if logs.len() > LOG_TAIL {
                    let _ = writeln!(s, "          ({} earlier lines)", logs.len() - LOG_TAIL);
                }
                for line in &logs[logs.len().saturating_sub(LOG_TAIL)..] {
                    let _ = writeln!(s, "          {}", printable(&line.to_string()));
                }
            }
        }
    }
    let (cases, failed) = counts(files);
    let _ = writeln!(
        s,
        "\n{} in {}: {} passed, {failed} failed",
        plural(cases, "case"),
        plural(files.len(), "file"),
        cases - failed
    );
    s
}

/// `1 case`, `2 cases`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The JSON report: results plus what each case produced.
pub fn json(files: &[FileReport]) -> String {
    let (cases, failed) = counts(files);
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            let cases: Vec<Value> = f.cases.iter().map(case_json).collect();
            json!({ "file": f.label, "cases": cases })
        })
        .collect();
    let report = json!({
        "cases": cases,
        "passed": cases - failed,
        "failed": failed,
        "files": files,
    });
    serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
}

fn case_json(c: &CaseReport) -> Value {
    let o = &c.outcome;
    let mismatches: Vec<Value> = c
        .mismatches
        .iter()
        .map(|m| {
            json!({
                "what": m.what,
                "expected": m.expected,
                "actual": m.actual,
                "diff": diff(&m.expected, &m.actual).join("\n"),
            })
        })
        .collect();
    let calls: Vec<Value> = o
        .calls
        .iter()
        .map(|call| {
            json!({
                "target": call.target,
                "headers": pairs(call.headers.iter()),
                "body": body_text(&call.body),
            })
        })
        .collect();
    let logs: Vec<Value> = o
        .logs
        .iter()
        .map(|l| json!({ "level": l.level.to_string(), "target": l.target, "message": l.message }))
        .collect();
    let metrics: Vec<Value> = o
        .metrics
        .iter()
        .map(|(name, kind, before, after)| {
            json!({ "name": name, "kind": format!("{kind:?}").to_lowercase(), "before": before, "after": after })
        })
        .collect();
    json!({
        "name": c.name,
        "passed": c.passed(),
        "time_ms": o.elapsed.as_secs_f64() * 1000.0,
        "failures": mismatches,
        "notes": o.notes,
        "upstream": o.upstream.as_ref().map(|m| message_json(m, true)),
        "response": o.response.as_ref().map(|m| message_json(m, false)),
        "local_response": o.local.as_ref().map(|l| json!({
            "status": l.status,
            "headers": pairs(l.headers.iter().map(|(k, v)| (&k[..], &v[..]))),
            "body": body_text(&l.body),
        })),
        "calls": calls,
        "fault": o.fault.as_ref().map(|f| json!({
            "plugin": f.plugin,
            "hook": f.hook,
            "kind": kind_of(f).name(),
            "message": f.to_string(),
        })),
        "logs": logs,
        "metrics": metrics,
    })
}

fn message_json(m: &Message, request: bool) -> Value {
    let headers: Vec<Value> = m.headers.iter().map(|(k, v)| json!([k, v])).collect();
    let trailers: Vec<Value> = m.trailers.iter().map(|(k, v)| json!([k, v])).collect();
    if request {
        json!({
            "method": m.method,
            "path": m.path,
            "headers": headers,
            "body": body_text(&m.body),
            "trailers": trailers,
        })
    } else {
        json!({
            "status": m.status,
            "headers": headers,
            "body": body_text(&m.body),
            "trailers": trailers,
        })
    }
}

fn pairs<'a>(it: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<Value> {
    it.map(|(k, v)| json!([String::from_utf8_lossy(k), String::from_utf8_lossy(v)]))
        .collect()
}

fn body_text(body: &[u8]) -> String {
    let shown = &body[..body.len().min(MAX_JSON_BODY)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if body.len() > MAX_JSON_BODY {
        let _ = write!(s, "... ({} bytes in all)", body.len());
    }
    s
}

/// The JUnit XML report: one `testsuite` per file, one `testcase` per
/// case, a `failure` (with the text diff) per failed case.
pub fn junit(files: &[FileReport]) -> String {
    let (cases, failed) = counts(files);
    let total: f64 = files
        .iter()
        .flat_map(|f| &f.cases)
        .map(|c| c.outcome.elapsed.as_secs_f64())
        .sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"tinygate test\" tests=\"{cases}\" failures=\"{failed}\" errors=\"0\" time=\"{total:.3}\">"
    );
    for file in files {
        let failed = file.cases.iter().filter(|c| !c.passed()).count();
        let time: f64 = file
            .cases
            .iter()
            .map(|c| c.outcome.elapsed.as_secs_f64())
            .sum();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">",
            xml(&file.label),
            file.cases.len()
        );
        for case in &file.cases {
            let _ = write!(
                s,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                xml(&case.name),
                xml(&file.label),
                case.outcome.elapsed.as_secs_f64()
            );
            if case.passed() {
                s.push_str("/>\n");
                continue;
            }
            s.push_str(">\n");
            let n = case.mismatches.len();
            let what: Vec<&str> = case.mismatches.iter().map(|m| m.what.as_str()).collect();
            let mut detail = String::new();
            for m in &case.mismatches {
                let _ = writeln!(detail, "{}", m.what);
                for line in diff(&m.expected, &m.actual) {
                    let _ = writeln!(detail, "  {line}");
                }
            }
            for note in &case.outcome.notes {
                let _ = writeln!(detail, "note: {note}");
            }
            let _ = writeln!(
                s,
                "      <failure type=\"expectation\" message=\"{} expectation{} failed: {}\">{}</failure>",
                n,
                if n == 1 { "" } else { "s" },
                xml(&what.join(", ")),
                xml(&detail)
            );
            if !case.outcome.logs.is_empty() {
                let logs: Vec<String> = case.outcome.logs.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    s,
                    "      <system-out>{}</system-out>",
                    xml(&logs.join("\n"))
                );
            }
            s.push_str("    </testcase>\n");
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

/// `text` escaped for XML text and attribute values; characters XML 1.0
/// cannot hold at all become U+FFFD.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A unified-style diff of `expected` against `actual`: `- expected` and
/// `+ actual` for one-line values; for longer ones a line diff under a
/// `--- expected` / `+++ actual` header, unchanged lines prefixed by a
/// space. Control characters are shown escaped.
pub fn diff(expected: &str, actual: &str) -> Vec<String> {
    let e: Vec<&str> = expected.split('\n').collect();
    let a: Vec<&str> = actual.split('\n').collect();
    if e.len() == 1 && a.len() == 1 {
        return vec![
            format!("- {}", printable(expected)),
            format!("+ {}", printable(actual)),
        ];
    }
    let mut out = vec!["--- expected".to_string(), "+++ actual".to_string()];
    if e.len() > MAX_DIFF_LINES || a.len() > MAX_DIFF_LINES {
        out.extend(e.iter().map(|l| format!("-{}", printable(l))));
        out.extend(a.iter().map(|l| format!("+{}", printable(l))));
        return out;
    }
    // Longest common subsequence of lines, then walk it.
    let (n, m) = (e.len(), a.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if e[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && e[i] == a[j] {
            out.push(format!(" {}", printable(e[i])));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("-{}", printable(e[i])));
            i += 1;
        } else {
            out.push(format!("+{}", printable(a[j])));
            j += 1;
        }
    }
    out
}

/// `s` with control characters (other than tab) escaped, so a stray CR or
/// NUL shows in a diff.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_values_diff_as_minus_plus() {
        assert_eq!(diff("200", "503"), ["- 200", "+ 503"]);
        assert_eq!(diff("a\r", "a"), ["- a\\r", "+ a"]);
    }

    #[test]
    fn longer_values_diff_line_by_line() {
        assert_eq!(
            diff("a\nb\nc", "a\nx\nc\nd"),
            ["--- expected", "+++ actual", " a", "-b", "+x", " c", "+d"]
        );
    }

    #[test]
    fn xml_escapes_markup_and_drops_what_xml_cannot_hold() {
        assert_eq!(
            xml("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(xml("a\u{0}b\nc"), "a\u{FFFD}b\nc");
    }
}
