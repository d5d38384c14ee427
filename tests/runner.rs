//! `tinygate test` through the real binary (issue #8): the project's own
//! fixture test files, a passing file, a failing expectation with its
//! diff, an invalid file, JUnit and JSON output, and the runner agreeing
//! with the real proxy on the same plugin and request.

use crate::util::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Writes `yaml` as a test file in a fresh folder; `{fixture:NAME}` in it
/// becomes the absolute path of `fixtures/NAME.wasm`.
fn test_file(yaml: &str) -> PathBuf {
    let mut text = yaml.to_string();
    while let Some(start) = text.find("{fixture:") {
        let end = start + text[start..].find('}').expect("closing brace");
        let name = text[start + "{fixture:".len()..end].to_string();
        text.replace_range(start..=end, &fixture(&name));
    }
    let path = temp_dir().join("t.yaml");
    std::fs::write(&path, text).expect("write test file");
    path
}

fn run_test(args: &[&str], file: &Path) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.push(file.to_str().expect("UTF-8 path"));
    run(&all)
}

const ARTICLE: &str = r#"
plugin:
  file: "{fixture:custom_response_header}"
  conf: {headers: [{name: X-Go-Wasm, value: APISIX}]}
cases:
  - name: adds the header
    upstream: {status: 200, body: "hello\n"}
    expect:
      response: {status: 200, headers: {x-go-wasm: APISIX}, body: "hello\n"}
      upstream: {method: GET, path: /}
  - name: keeps the upstream's status
    upstream: {status: 404}
    expect:
      response: {status: 404, headers: {x-go-wasm: APISIX}}
"#;

#[test]
fn the_fixture_test_files_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tests");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures/tests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixture test files: {files:?}");
    let mut args = vec!["test"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn a_passing_file_exits_0_and_lists_its_cases() {
    let file = test_file(ARTICLE);
    let (code, out, err) = run_test(&["test"], &file);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("  ok    adds the header"), "{out}");
    assert!(out.contains("  ok    keeps the upstream's status"), "{out}");
    assert!(
        out.contains("2 cases in 1 file: 2 passed, 0 failed"),
        "{out}"
    );
}

#[test]
fn a_failing_expectation_exits_1_with_a_readable_diff() {
    let file = test_file(
        r#"
plugin:
  file: "{fixture:custom_response_header}"
  conf: {headers: [{name: X-Go-Wasm, value: APISIX}]}
cases:
  - name: passes
    expect: {response: {headers: {x-go-wasm: APISIX}}}
  - name: expects the wrong things
    upstream: {status: 200, body: "one\ntwo\nthree\n"}
    expect:
      response:
        status: 201
        headers: {x-go-wasm: Envoy, x-missing: true}
        body: "one\n2\nthree\n"
"#,
    );
    let (code, out, err) = run_test(&["test"], &file);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("  ok    passes"), "{out}");
    assert!(out.contains("  FAIL  expects the wrong things"), "{out}");
    for expected in [
        "        response.status\n          - 201\n          + 200\n",
        "        response.headers.x-go-wasm\n          - Envoy\n          + APISIX\n",
        "        response.headers.x-missing\n          - (present)\n          + (absent)\n",
        "        response.body\n          --- expected\n          +++ actual\n           one\n          -2\n          +two\n           three\n",
        "2 cases in 1 file: 1 passed, 1 failed",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn an_invalid_file_exits_2_naming_the_file_and_key_path() {
    let file = test_file(
        r#"
plugin: {file: "{fixture:header_mutator}", fule: 1}
cases:
  - name: a
    expect: {upstream: {headers: [x-a]}}
  - name: b
    upstream: {never_answers: yes_please}
"#,
    );
    let (code, out, err) = run_test(&["test"], &file);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.is_empty(), "no case runs: {out}");
    let f = file.display();
    for expected in [
        format!("error: {f}: plugin.fule: unknown key"),
        format!("error: {f}: cases[0].expect.upstream.headers: expected a mapping, got a list"),
        format!(
            "error: {f}: cases[1].upstream.never_answers: expected true or false, got a string"
        ),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    // A plugin that cannot load makes the file invalid too.
    let file = test_file("plugin: {file: \"{fixture:no_abi_marker}\"}\ncases: [{name: a}]\n");
    let (code, _, err) = run_test(&["test"], &file);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(": plugin.file: plugin \"no_abi_marker\""),
        "{err}"
    );
    assert!(err.contains("not a proxy-wasm module"), "{err}");
}

#[test]
fn junit_output_is_xml_with_the_right_counts() {
    let file = test_file(&format!(
        "{ARTICLE}  - name: \"fails <on purpose> & says so\"\n    expect: {{response: {{status: 418}}}}\n"
    ));
    let (code, out, err) = run_test(&["test", "--format", "junit"], &file);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    if let Err(e) = check_xml(&out) {
        panic!("not well-formed XML ({e}):\n{out}");
    }
    assert!(
        out.contains("<testsuites name=\"tinygate test\" tests=\"3\" failures=\"1\" errors=\"0\""),
        "{out}"
    );
    assert!(
        out.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"0\""),
        "{out}"
    );
    assert_eq!(out.matches("<testcase ").count(), 3, "{out}");
    assert_eq!(out.matches("<failure ").count(), 1, "{out}");
    assert!(
        out.contains("name=\"fails &lt;on purpose&gt; &amp; says so\""),
        "{out}"
    );
    assert!(
        out.contains("message=\"1 expectation failed: response.status\""),
        "{out}"
    );
}

#[test]
fn json_output_has_each_case_and_what_it_produced() {
    let file = test_file(ARTICLE);
    let (code, out, err) = run_test(&["test", "--format=json"], &file);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (report["cases"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(0))
    );
    let case = &report["files"][0]["cases"][0];
    assert_eq!(case["name"], "adds the header");
    assert_eq!(case["passed"], true);
    assert_eq!(case["upstream"]["method"], "GET");
    assert_eq!(case["response"]["status"], 200);
    assert_eq!(case["response"]["body"], "hello\n");
    assert!(case["response"]["headers"]
        .as_array()
        .expect("headers")
        .contains(&serde_json::json!(["x-go-wasm", "APISIX"])));
}

/// One plugin, one request, one upstream answer: scripted for the runner
/// and sent for real through the proxy.
struct Scenario {
    plugin: &'static str,
    conf: &'static str,
    /// The `request:` and `upstream:` of the test case.
    case: &'static str,
    /// The same request as raw bytes.
    request: &'static str,
    /// The same answer as raw bytes.
    answer: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    // Header edits in both directions, and a request body.
    Scenario {
        plugin: "header_mutator",
        conf: r#"{"request": {"add": [["x-a", "1"]], "replace": [["x-b", "2"]], "remove": ["x-old"]}, "response": {"add": [["x-r", "2"]], "replace": [["server", "tg"]], "remove": ["x-up"]}, "echo_path": true}"#,
        case: r#"
    request:
      method: POST
      path: /p?q=1
      headers: [[host, example.com], [x-old, gone], [x-b, before], [content-type, text/plain]]
      body: hello
    upstream:
      status: 201
      headers: [[content-type, text/plain], [server, upstream], [x-up, secret]]
      body: created
"#,
        request: "POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-old: gone\r\nx-b: before\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello",
        answer: "HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nserver: upstream\r\nx-up: secret\r\ncontent-length: 7\r\n\r\ncreated",
    },
    // A response body rewritten and re-framed.
    Scenario {
        plugin: "body_rewrite",
        conf: r#"{"from": "hello", "to": "goodbye, world"}"#,
        case: r#"
    request: {path: /r, headers: {host: example.com}}
    upstream:
      status: 200
      headers: {content-type: text/plain}
      chunks: ["hello hel", "lo, hellhello"]
"#,
        request: "GET /r HTTP/1.1\r\nhost: example.com\r\n\r\n",
        answer: "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n9\r\nhello hel\r\nd\r\nlo, hellhello\r\n0\r\n\r\n",
    },
    // A local response that replaces the upstream's.
    Scenario {
        plugin: "local_reply",
        conf: r#"{"status": 418, "body": "teapot\n", "headers": [["x-reason", "tea"]], "phase": "response"}"#,
        case: r#"
    request: {path: /tea, headers: {host: example.com}}
    upstream: {status: 200, headers: {x-up: "1"}, body: coffee}
"#,
        request: "GET /tea HTTP/1.1\r\nhost: example.com\r\n\r\n",
        answer: "HTTP/1.1 200 OK\r\nx-up: 1\r\ncontent-length: 6\r\n\r\ncoffee",
    },
];

#[test]
fn runner_and_proxy_agree() {
    for s in SCENARIOS {
        // Through `tinygate test`.
        let file = test_file(&format!(
            "plugin: {{file: \"{{fixture:{}}}\", conf: '{}'}}\ncases:\n  - name: agree{}",
            s.plugin, s.conf, s.case
        ));
        let (code, out, err) = run_test(&["test", "--format", "json"], &file);
        assert_eq!(code, 0, "{}: stdout:\n{out}\nstderr:\n{err}", s.plugin);
        let report: Value = serde_json::from_str(&out).expect("JSON");
        let case = &report["files"][0]["cases"][0];

        // Through the proxy, with a real upstream.
        let answer = s.answer.as_bytes().to_vec();
        let up = Upstream::start(move |_| Behaviour::Respond(answer.clone()));
        let routes = format!(
            "routes:\n  - id: test\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      {}:\n        conf: '{}'\n#END\n",
            up.addr, s.plugin, s.conf
        );
        let gate = Gate::start(&config_yaml(&[(s.plugin, 1, s.plugin)], ""), &routes);
        let response = gate.request(s.request);

        // The same upstream request...
        let runner_up = &case["upstream"];
        let received = up.last();
        assert_eq!(
            runner_up["method"],
            received.method.as_str(),
            "{}",
            s.plugin
        );
        assert_eq!(runner_up["path"], received.target.as_str(), "{}", s.plugin);
        assert_eq!(
            pairs(&runner_up["headers"]),
            connection_free(&received.headers),
            "{}: upstream request headers",
            s.plugin
        );
        assert_eq!(
            runner_up["body"],
            String::from_utf8_lossy(&received.body).as_ref(),
            "{}",
            s.plugin
        );
        // ...and the same client response.
        let runner_resp = &case["response"];
        assert_eq!(runner_resp["status"], response.status, "{}", s.plugin);
        assert_eq!(
            pairs(&runner_resp["headers"]),
            connection_free(&response.headers),
            "{}: response headers",
            s.plugin
        );
        assert_eq!(runner_resp["body"], response.text(), "{}", s.plugin);
    }
}

/// `[[name, value], ...]` from the JSON report, names lower-cased.
fn pairs(v: &Value) -> Vec<(String, String)> {
    let list = v.as_array().expect("a list of pairs");
    connection_free(
        &list
            .iter()
            .map(|p| {
                (
                    p[0].as_str().expect("name").to_string(),
                    p[1].as_str().expect("value").to_string(),
                )
            })
            .collect::<Vec<_>>(),
    )
}

/// Header fields without those that belong to one connection or moment,
/// names lower-cased, in order.
fn connection_free(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| k != "date" && k != "connection" && k != "keep-alive")
        .collect()
}

/// Checks that `text` is one well-formed XML document: a prolog, then
/// elements that nest and close properly, quoted attribute values, and no
/// `<` or bare `&` in text or values.
fn check_xml(text: &str) -> Result<(), String> {
    let rest = text.trim_start();
    let mut rest = match rest.strip_prefix("<?xml") {
        Some(r) => &r[r.find("?>").ok_or("unterminated prolog")? + 2..],
        None => rest,
    };
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        check_text(&rest[..lt])?;
        if stack.is_empty() && !rest[..lt].trim().is_empty() {
            return Err(format!("text outside the root: {:?}", &rest[..lt]));
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        let gt = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name.trim() => continue,
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        }
        let (body, empty) = match tag.strip_suffix('/') {
            Some(b) => (b, true),
            None => (tag, false),
        };
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:.".contains(c))
        {
            return Err(format!("bad element name {name:?}"));
        }
        let mut attrs = body[name_end..].trim();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or(format!("attribute without value in <{name}>"))?;
            let value = attrs[eq + 1..]
                .strip_prefix('"')
                .ok_or("unquoted attribute")?;
            let close = value.find('"').ok_or("unterminated attribute")?;
            check_text(&value[..close])?;
            attrs = value[close + 1..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !empty {
            stack.push(name.to_string());
        }
    }
    match (roots, stack.is_empty()) {
        (1, true) => Ok(()),
        (n, true) => Err(format!("{n} root elements")),
        (_, false) => Err(format!("unclosed elements {stack:?}")),
    }
}

fn check_text(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("bare &")?;
        let entity = &after[..semi];
        let known = ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
            || entity.strip_prefix('#').is_some_and(|n| !n.is_empty());
        if !known {
            return Err(format!("unknown entity &{entity};"));
        }
        rest = &after[semi + 1..];
    }
    if text.contains('<') {
        return Err("< in text".into());
    }
    Ok(())
}
