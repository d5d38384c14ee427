//! One path everywhere (issue #15): a route that guards `/admin/*` with a
//! plugin guards every spelling of it. The path is normalised before
//! routing, and the normal form is what the plugin sees (`:path`,
//! `request.path`, `request.url_path`, `uri`), what the access log records
//! and what the node receives; the query is passed as sent. Hosts are
//! normalised for host routing. The table below is docs/operations.md's.

use crate::util::*;
use std::time::{Duration, Instant};

/// What becomes of one spelling.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Routed to the guarded route: its plugins ran, and the node and the
    /// plugins saw this target.
    Guarded(&'static str),
    /// Routed to the catch-all (no plugin), and the node saw this target.
    Open(&'static str),
    /// Answered 400, never forwarded.
    Refused,
}
use Outcome::*;

/// Spellings of `/admin/x`, with the default settings (`merge_slashes:
/// true`, `path_with_escaped_slashes_action: keep_unchanged`).
#[rustfmt::skip]
const SPELLINGS: &[(&str, Outcome)] = &[
    ("/admin/x",                 Guarded("/admin/x")),
    ("//admin/x",                Guarded("/admin/x")),
    ("///admin//x",              Guarded("/admin/x")),
    ("/./admin/x",               Guarded("/admin/x")),
    ("/admin/./x",               Guarded("/admin/x")),
    ("/%61dmin/x",               Guarded("/admin/x")),
    ("/%61%64%6D%69%6e/%78",     Guarded("/admin/x")),
    ("/x/../admin/x",            Guarded("/admin/x")),
    ("/x/%2e%2e/admin/x",        Guarded("/admin/x")),
    ("/x/.%2E/admin/x",          Guarded("/admin/x")),
    ("/%2e/admin/x",             Guarded("/admin/x")),
    ("/admin\\x",                Guarded("/admin/x")),
    ("/x\\..\\admin\\x",         Guarded("/admin/x")),
    ("/admin/y/../x",            Guarded("/admin/x")),
    ("http://test//admin/x",     Guarded("/admin/x")),
    ("/admin/x?r=/../..//%2e",   Guarded("/admin/x?r=/../..//%2e")),
    ("/admin/%c3%a9",            Guarded("/admin/%C3%A9")),
    ("/admin/a\"b",              Guarded("/admin/a%22b")),
    ("/../admin/x",              Refused),
    ("/%2e%2e/admin/x",          Refused),
    ("/x/../../admin/x",         Refused),
    ("/admin/%00x",              Refused),
    ("/admin/x%0d%0a",           Refused),
    ("/admin/x%",                Refused),
    ("/admin/x%zz",              Refused),
    ("/other/x",                 Open("/other/x")),
    ("/x/..%2fadmin/x",          Open("/x/..%2Fadmin/x")),
];

/// Routes: `/admin/*` with `header_mutator` (marks the request `x-guard:
/// ran`, copies the `:path` it saw into `x-seen-path`) and
/// `properties_probe` (copies `request.path`, `request.url_path` and `uri`
/// into headers, hex-encoded); `/*` with no plugin; both to `up`.
fn guarded_gate(up: &Upstream, tinygate_keys: &str) -> Gate {
    guarded_gate_at(up, "/admin/*", tinygate_keys)
}

/// [`guarded_gate`] with the guarded route's `uri` written as `uri`.
fn guarded_gate_at(up: &Upstream, uri: &str, tinygate_keys: &str) -> Gate {
    let config = config_yaml(
        &[
            ("guard", 20, "header_mutator"),
            ("probe", 10, "properties_probe"),
        ],
        &format!("  access_log: access.log\n{tinygate_keys}"),
    );
    let node = format!("upstream: {{nodes: {{\"{}\": 1}}}}", up.addr);
    let routes = format!(
        r#"routes:
  - id: admin
    uri: {uri:?}
    {node}
    plugins:
      guard:
        conf: '{{"request": {{"add": [["x-guard", "ran"]]}}, "echo_path": true}}'
      probe:
        conf: '{{"read": ["request.path", "request.url_path", "uri"]}}'
  - id: open
    uri: /*
    {node}
#END
"#
    );
    Gate::start(&config, &routes)
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Sends each spelling and checks what the node got, and from which route.
fn check_spellings(gate: &Gate, up: &Upstream, table: &[(&str, Outcome)]) {
    for &(target, outcome) in table {
        let before = up.count();
        let r = gate.request(&format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n"));
        match outcome {
            Refused => {
                assert_eq!(r.status, 400, "{target:?}: {}", r.text());
                assert_eq!(up.count(), before, "{target:?} reached the node");
            }
            Guarded(normal) | Open(normal) => {
                assert_eq!(r.status, 200, "{target:?}: {}", r.text());
                assert_eq!(up.count(), before + 1, "{target:?}");
                let got = up.last();
                assert_eq!(got.target, normal, "{target:?}: the node's request line");
                let guarded = matches!(outcome, Guarded(_));
                let path = normal.split('?').next().unwrap();
                let want = |v: &str| guarded.then(|| v.to_string());
                let header = |name: &str| got.header(name).map(str::to_string);
                assert_eq!(header("x-guard"), want("ran"), "{target:?}: plugin ran");
                assert_eq!(header("x-seen-path"), want(normal), "{target:?}: :path");
                assert_eq!(header("x-prop-request-path"), want(&hex(normal)));
                assert_eq!(header("x-prop-request-url_path"), want(&hex(path)));
                assert_eq!(header("x-prop-uri"), want(&hex(path)), "{target:?}");
            }
        }
    }
}

/// The access log's `"$request"` fields, once `n` lines are there.
fn logged_requests(gate: &Gate, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(gate.dir.join("access.log")).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_spelling_of_a_guarded_path_is_guarded_or_refused() {
    let up = Upstream::named("u");
    let gate = guarded_gate(&up, "");
    check_spellings(&gate, &up, SPELLINGS);
    // The access log records the normalised target too (and `-` for a
    // refused head, whose request line is not trusted). Workers buffer
    // their lines, so the order across workers is not the requests'.
    let mut logged = logged_requests(&gate, SPELLINGS.len());
    let mut want: Vec<String> = SPELLINGS
        .iter()
        .map(|(_, outcome)| match outcome {
            Guarded(p) | Open(p) => format!("GET {p} HTTP/1.1"),
            Refused => "-  -".to_string(),
        })
        .collect();
    logged.sort();
    want.sort();
    assert_eq!(logged, want);
}

/// A route's `uri` is normalised as request paths are (issue #15): the
/// guard written `/%61dmin//*` guards exactly the spellings `/admin/*`
/// guards, and the start-up log says how it is routed; `/a//b` is `/a/b`
/// with `merge_slashes` (the default) and a path of its own without; a
/// `uri` a request would get a 400 for is refused with its key path.
#[test]
fn route_uris_are_normalised_as_request_paths_are() {
    let up = Upstream::named("u");
    let gate = guarded_gate_at(&up, "/%61dmin//*", "");
    check_spellings(&gate, &up, SPELLINGS);
    let line = "apisix.yaml: routes[0]: uri \"/%61dmin//*\" is routed as \"/admin/*\"";
    assert!(gate.log().contains(line), "{}", gate.log());

    let (double, open) = (Upstream::named("double"), Upstream::named("open"));
    let routes = format!(
        "routes:\n  - {{uri: \"/a//b\", upstream: {{nodes: {{\"{}\": 1}}}}}}\n  - {{uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        double.addr, open.addr
    );
    let merging = Gate::start(&config_yaml(&[], ""), &routes);
    assert_eq!(merging.get("/a/b").text(), "double");
    assert_eq!(merging.get("/a//b").text(), "double");
    let keeping = Gate::start(&config_yaml(&[], "  merge_slashes: false\n"), &routes);
    assert_eq!(keeping.get("/a//b").text(), "double");
    assert_eq!(keeping.get("/a/b").text(), "open");

    let dir = temp_dir();
    std::fs::write(dir.join("config.yaml"), config_yaml(&[], "")).unwrap();
    let bad =
        "routes:\n  - {uri: /x/../../admin/*, upstream: {nodes: {\"127.0.0.1:1\": 1}}}\n#END\n";
    std::fs::write(dir.join("apisix.yaml"), bad).unwrap();
    let (code, _, stderr) = run(&["-t", "-c", dir.join("config.yaml").to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "apisix.yaml: routes[0]: uri \"/x/../../admin/*\": path climbs above the root"
        ),
        "{stderr}"
    );
}

#[test]
fn escaped_slashes_are_kept_refused_or_decoded_as_configured() {
    let up = Upstream::named("u");
    let gate = guarded_gate(&up, "  path_with_escaped_slashes_action: reject_request\n");
    #[rustfmt::skip]
    check_spellings(&gate, &up, &[
        ("/x/..%2fadmin/x", Refused),
        ("/admin%5Cx",      Refused),
        ("/admin\\x",       Guarded("/admin/x")),
        ("//admin/x",       Guarded("/admin/x")),
    ]);
    let gate = guarded_gate(
        &up,
        "  path_with_escaped_slashes_action: unescape_and_forward\n",
    );
    #[rustfmt::skip]
    check_spellings(&gate, &up, &[
        ("/x/..%2fadmin/x", Guarded("/admin/x")),
        ("/admin%5Cx",      Guarded("/admin/x")),
        ("/%2F%2Fadmin/x",  Guarded("/admin/x")),
    ]);
    let gate = guarded_gate(&up, "  merge_slashes: false\n");
    #[rustfmt::skip]
    check_spellings(&gate, &up, &[
        ("//admin/x",       Open("//admin/x")),
        ("/admin//x",       Guarded("/admin//x")),
        ("/x//../admin/x",  Open("/x/admin/x")),
        ("/./admin/x",      Guarded("/admin/x")),
    ]);
}

#[test]
fn hosts_are_routed_case_folded_without_port_or_trailing_dot() {
    let up = Upstream::named("u");
    let config = config_yaml(&[("guard", 1, "header_mutator")], "");
    let routes = format!(
        r#"routes:
  - id: secure
    uri: /*
    host: secure.example
    upstream: {{nodes: {{"{addr}": 1}}}}
    plugins:
      guard: {{conf: '{{"request": {{"add": [["x-guard", "ran"]]}}}}'}}
  - id: open
    uri: /*
    upstream: {{nodes: {{"{addr}": 1}}}}
#END
"#,
        addr = up.addr
    );
    let gate = Gate::start(&config, &routes);
    for (host, guarded) in [
        ("secure.example", true),
        ("secure.example.", true),
        ("SECURE.Example.:9080", true),
        ("%73ecure.example", true),
        ("other.example", false),
        ("secure.example.com", false),
    ] {
        let r = gate.request(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(r.status, 200, "{host}");
        let got = up.last();
        assert_eq!(got.header("x-guard").is_some(), guarded, "{host}");
        assert_eq!(got.header("host"), Some(host), "Host is forwarded as sent");
    }
    let before = up.count();
    for host in ["secure..example", "secure.example:x", "[::1", "a/b", "."] {
        let r = gate.request(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(r.status, 400, "{host}");
    }
    let r = gate.request("GET http://Secure.Example./ HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), before + 1);
    assert_eq!(up.last().header("x-guard"), Some("ran"), "absolute-form");
}
