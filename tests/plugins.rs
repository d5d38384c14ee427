use crate::util::*;

fn one_route(plugins_yaml: &str, up: &Upstream) -> String {
    format!(
        "routes:\n  - id: main\n    uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n{plugins_yaml}#END\n",
        up.addr
    )
}

#[test]
fn plugin_adds_replaces_and_removes_request_headers_seen_by_upstream() {
    let up = Upstream::named("u");
    let conf = r#"{"request": {"add": [["x-added", "1"]], "replace": [["x-replaced", "new"]], "remove": ["x-removed"]}, "echo_path": true}"#;
    let gate = Gate::start(
        &config_yaml(&[("mutator", 100, "header_mutator")], ""),
        &one_route(&format!("      mutator:\n        conf: '{conf}'\n"), &up),
    );
    let r = gate.request(
        "GET /path?q=1 HTTP/1.1\r\nHost: a\r\nX-Replaced: old\r\nX-Removed: bye\r\nX-Other: keep\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let got = up.last();
    assert_eq!(got.header("x-added"), Some("1"));
    assert_eq!(got.header("x-replaced"), Some("new"));
    assert_eq!(got.header("x-removed"), None);
    assert_eq!(got.header("x-other"), Some("keep"));
    assert_eq!(got.header("x-seen-path"), Some("/path?q=1"));
    assert!(
        gate.wait_for_log("header_mutator: GET /path?q=1"),
        "{}",
        gate.log()
    );
}

#[test]
fn plugin_can_edit_response_headers_and_plugins_run_by_priority() {
    let up = Upstream::named("u");
    // Both replace x-order; the lower priority runs later, so it wins.
    let gate = Gate::start(
        &config_yaml(&[("high", 200, "header_mutator"), ("low", 100, "custom_response_header")], ""),
        &one_route(
            "      low:\n        conf: '{\"headers\":[{\"name\":\"x-order\",\"value\":\"low\"}]}'\n      high:\n        conf: '{\"response\":{\"replace\":[[\"x-order\",\"high\"]],\"remove\":[\"x-upstream\"]}}'\n",
            &up,
        ),
    );
    let r = gate.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-order"), Some("low"));
    assert_eq!(r.header("x-upstream"), None);
}

#[test]
fn local_response_short_circuits_the_upstream() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(&[("deny", 100, "local_reply")], ""),
        &one_route(
            "      deny:\n        conf: '{\"status\": 403, \"body\": \"denied\\n\", \"headers\": [[\"x-reason\", \"policy\"]], \"when_header\": \"x-deny\"}'\n",
            &up,
        ),
    );
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\nX-Deny: 1\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (403, "denied\n"));
    assert_eq!(r.header("x-reason"), Some("policy"));
    assert_eq!(up.count(), 0);
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 1);
}

#[test]
fn tinygo_style_start_and_malloc_work() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(&[("tinygo", 1, "tinygo_like")], ""),
        &one_route("      tinygo:\n        conf: '{\"any\": 1}'\n", &up),
    );
    let r = gate.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tinygo"), Some("yes"));
}

#[test]
fn trapping_plugin_gives_503_while_another_route_keeps_serving() {
    let up = Upstream::named("u");
    let routes = format!(
        "routes:\n  - {{id: bad, uri: /bad, upstream: {{nodes: {{\"{0}\": 1}}}}, plugins: {{trap: {{conf: x}}}}}}\n  - {{id: good, uri: /good, upstream: {{nodes: {{\"{0}\": 1}}}}, plugins: {{hdr: {{conf: '{{\"headers\":[{{\"name\":\"x-ok\",\"value\":\"1\"}}]}}'}}}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(
        &config_yaml(
            &[
                ("trap", 10, "trap_on_request"),
                ("hdr", 5, "custom_response_header"),
            ],
            "",
        ),
        &routes,
    );
    for _ in 0..5 {
        assert_eq!(gate.get("/bad").status, 503);
        let r = gate.get("/good");
        assert_eq!((r.status, r.header("x-ok")), (200, Some("1")));
    }
    assert_eq!(
        up.count(),
        5,
        "the trapping route never reached the upstream"
    );
    assert!(
        gate.wait_for_log("proxy_on_request_headers"),
        "{}",
        gate.log()
    );
    assert!(gate.log().contains("\"trap\""), "{}", gate.log());
}

#[test]
fn trap_in_response_headers_gives_503() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config_yaml(&[("trap", 10, "trap_on_response")], ""),
        &one_route("      trap:\n        conf: x\n", &up),
    );
    assert_eq!(gate.get("/").status, 503);
    assert_eq!(gate.get("/").status, 503);
    assert_eq!(up.count(), 2);
}
