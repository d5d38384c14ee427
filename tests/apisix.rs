//! APISIX's composition served as APISIX serves it: services and plugin
//! configs with their precedence, `${{VAR}}` in `apisix.yaml` (issue #19).

use crate::util::*;
use std::time::Duration;

/// `custom_response_header` under three names, each adding the header
/// named after it with the value its conf gives.
fn three_header_plugins() -> String {
    config_yaml(
        &[
            ("hdr-a", 300, "custom_response_header"),
            ("hdr-b", 200, "custom_response_header"),
            ("hdr-c", 100, "custom_response_header"),
        ],
        "",
    )
}

/// A plugin entry adding `x-<name>: value`.
fn adds(name: &str, value: &str) -> String {
    format!("      hdr-{name}: {{conf: {{headers: [{{name: x-{name}, value: {value}}}]}}}}\n")
}

#[test]
fn route_conf_beats_plugin_config_beats_service() {
    let up = Upstream::named("shared");
    let routes = format!(
        "services:
  - id: svc
    upstream: {{nodes: {{\"{addr}\": 1}}}}
    plugins:
{sa}{sb}{sc}plugin_configs:
  - id: pc
    plugins:
{pb}{pc}routes:
  - id: all-three
    uri: /all
    service_id: svc
    plugin_config_id: pc
    plugins:
{rc}  - id: service-only
    uri: /service
    service_id: svc
  - id: config-only
    uri: /config
    plugin_config_id: pc
    upstream: {{nodes: {{\"{addr}\": 1}}}}
#END
",
        addr = up.addr,
        sa = adds("a", "service"),
        sb = adds("b", "service"),
        sc = adds("c", "service"),
        pb = adds("b", "plugin-config"),
        pc = adds("c", "plugin-config"),
        rc = adds("c", "route"),
    );
    let gate = Gate::start(&three_header_plugins(), &routes);
    let headers = |path: &str| {
        let r = gate.get(path);
        assert_eq!((r.status, r.text().as_str()), (200, "shared"), "{path}");
        ["x-a", "x-b", "x-c"].map(|h| r.header(h).map(str::to_string))
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        headers("/all"),
        [some("service"), some("plugin-config"), some("route")]
    );
    assert_eq!(
        headers("/service"),
        [some("service"), some("service"), some("service")]
    );
    assert_eq!(
        headers("/config"),
        [None, some("plugin-config"), some("plugin-config")]
    );
}

#[test]
fn routes_take_the_service_upstream_and_hosts_unless_they_have_their_own() {
    let shared = Upstream::named("service-upstream");
    let own = Upstream::named("route-upstream");
    let routes = format!(
        "upstreams:
  - id: backend
    nodes: {{\"{shared}\": 1}}
services:
  - id: 7
    upstream_id: backend
    hosts: [api.example.com]
routes:
  - {{id: inherits, uri: /a, service_id: 7}}
  - {{id: own-upstream, uri: /b, service_id: 7, upstream: {{nodes: {{\"{own}\": 1}}}}}}
  - {{id: own-host, uri: /a, service_id: 7, host: other.example.com, upstream: {{nodes: {{\"{own}\": 1}}}}}}
#END
",
        shared = shared.addr,
        own = own.addr,
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let get = |host: &str, path: &str| {
        let r = gate.request(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        (r.status, r.text())
    };
    assert_eq!(
        get("api.example.com", "/a"),
        (200, "service-upstream".into())
    );
    assert_eq!(get("api.example.com", "/b"), (200, "route-upstream".into()));
    assert_eq!(
        get("other.example.com", "/a"),
        (200, "route-upstream".into())
    );
    // The service's hosts are the route's: another host does not match.
    assert_eq!(get("elsewhere.example.com", "/a").0, 404);
}

/// A route naming a service, plugin config or upstream that is not there
/// is an invalid route, like any other: `-t` (the start's check) refuses the
/// file with every such key path, and a reload (as etcd) skips just those
/// routes, each with its key path, while the rest serves. (APISIX does not
/// check references when it loads a file: it keeps the route and answers
/// its requests 404, 503 or 502.)
#[test]
fn a_route_naming_a_missing_service_plugin_config_or_upstream_is_skipped_with_its_key_path() {
    let up = Upstream::named("u");
    let good = format!(
        "routes:\n  - {{id: good, uri: /good, service_id: s}}\nservices:\n  - id: s\n    upstream: {{nodes: {{\"{}\": 1}}}}\n",
        up.addr
    );
    let bad_file = format!(
        "routes:\n  - {{id: good, uri: /good, service_id: s}}\n  - {{id: svc, uri: /svc, service_id: nope}}\n  - {{id: pc, uri: /pc, plugin_config_id: nope, service_id: s}}\n  - {{id: ups, uri: /ups, upstream_id: nope}}\nservices:\n  - id: s\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let problems = [
        "routes[1].service_id: no service \"nope\"",
        "routes[2].plugin_config_id: no plugin config \"nope\"",
        "routes[3].upstream_id: no upstream \"nope\"",
    ];

    let gate = Gate::start(&config_yaml(&[], ""), &format!("{good}#END\n"));
    assert_eq!(gate.get("/good").text(), "u");
    let routes = gate.dir.join("apisix.yaml");
    replace_file(&routes, &bad_file);
    for problem in problems {
        let line = format!("apisix.yaml: {problem} (item skipped)");
        assert!(gate.wait_for_log(&line), "no {line:?} in\n{}", gate.log());
    }
    assert!(gate.wait_for_log("reloaded (routes file changed): 1 routes"));
    assert_eq!(gate.get("/good").text(), "u");
    for path in ["/svc", "/pc", "/ups"] {
        assert_eq!(gate.get(path).status, 404, "{path} was served");
    }

    let config = gate.dir.join("config.yaml");
    let (code, _, stderr) = run(&["-t", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    for problem in problems {
        assert!(stderr.contains(problem), "no {problem:?} in\n{stderr}");
    }
}

#[test]
fn environment_variables_fill_the_routes_file_and_an_unset_one_is_refused() {
    let up = Upstream::named("from-env");
    // Names no other test uses; the child inherits the test's environment.
    std::env::set_var("TINYGATE_IT_NODE", up.addr.to_string());
    let routes = "routes:
  - uri: \"${{TINYGATE_IT_PATH:=/env}}\"
    upstream:
      nodes:
        \"${{ TINYGATE_IT_NODE }}\": 1
#END
";
    let gate = Gate::start(&config_yaml(&[], ""), routes);
    let r = gate.get("/env");
    assert_eq!((r.status, r.text().as_str()), (200, "from-env"));

    let dir = temp_dir();
    std::fs::write(dir.join("config.yaml"), config_yaml(&[], "")).unwrap();
    std::fs::write(
        dir.join("apisix.yaml"),
        "routes:\n  - uri: /x\n    upstream_id: ${{TINYGATE_IT_NEVER_SET}}\n#END\n",
    )
    .unwrap();
    let config = dir.join("config.yaml");
    let (code, _, stderr) = run(&["-t", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "apisix.yaml: line 3: environment variable \"TINYGATE_IT_NEVER_SET\" is not set"
        ),
        "{stderr}"
    );
}

/// One route per condition (each on its own uri, all to the upstream
/// `matched`) and a catch-all to `fallback`, so the body says whether the
/// condition held.
fn vars_gate(conditions: &[(&str, &str)]) -> (Gate, Upstream, Upstream) {
    let (matched, fallback) = (Upstream::named("matched"), Upstream::named("fallback"));
    let mut routes = format!(
        "routes:\n  - {{uri: \"/*\", upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
        fallback.addr
    );
    for (uri, vars) in conditions {
        routes.push_str(&format!(
            "  - {{uri: {uri}, vars: {vars}, upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
            matched.addr
        ));
    }
    routes.push_str("#END\n");
    (
        Gate::start(&config_yaml(&[], ""), &routes),
        matched,
        fallback,
    )
}

/// Which upstream served `GET target` with extra header lines.
fn served_by(gate: &Gate, target: &str, headers: &str) -> String {
    let r = gate.request(&format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\n{headers}\r\n"
    ));
    assert_eq!(r.status, 200, "{target}");
    r.text()
}

#[test]
fn every_vars_operator_decides_whether_a_route_matches() {
    let (gate, _m, _f) = vars_gate(&[
        ("/eq", r#"[[arg_name, "==", "jo"]]"#),
        ("/eq-num", r#"[[arg_n, "==", 5]]"#),
        ("/ne", r#"[[http_x_env, "~=", prod]]"#),
        ("/gt", r#"[[arg_age, ">", 17]]"#),
        ("/ge", r#"[[arg_age, ">=", "18"]]"#),
        ("/lt", r#"[[http_x_version, "<", 3]]"#),
        ("/le", r#"[[http_x_version, "<=", 2.5]]"#),
        (
            "/re",
            r#"[[http_user_agent, "~~", "^Mozilla/5\\.0 .*Firefox/[0-9]+"]]"#,
        ),
        ("/re-i", r#"[[http_user_agent, "~*", "firefox"]]"#),
        (
            "/in",
            r#"[[request_method, "in", [GET, HEAD]], [arg_tier, "in", [gold, silver]]]"#,
        ),
        ("/has", r#"[[arg_tag, "has", beta]]"#),
        (
            "/ip",
            r#"[[remote_addr, "ipmatch", ["10.0.0.0/8", "127.0.0.0/8"]]]"#,
        ),
        ("/ip-not", r#"[[remote_addr, "ipmatch", "192.168.0.0/16"]]"#),
        ("/not", r#"[[arg_debug, "!", "==", "1"]]"#),
        ("/cookie", r#"[[cookie_session, "~~", "^[a-f0-9]{8}$"]]"#),
        (
            "/host-port",
            r#"[[host, "==", test], [server_port, ">", 0], [scheme, "==", http], [uri, "==", /host-port]]"#,
        ),
        (
            "/nested",
            r#"[OR, [AND, [arg_a, "==", "1"], [arg_b, "==", "2"]], ["!AND", [arg_c, "~=", x], [arg_d, "~=", y]]]"#,
        ),
    ]);
    let firefox = "User-Agent: Mozilla/5.0 (X11; Linux) Gecko/20100101 Firefox/128\r\n";
    for (target, headers, want) in [
        ("/eq?name=jo", "", "matched"),
        ("/eq?name=Jo", "", "fallback"),
        ("/eq", "", "fallback"),
        ("/eq-num?n=5.0", "", "matched"),
        ("/eq-num?n=five", "", "fallback"),
        ("/ne", "X-Env: staging\r\n", "matched"),
        ("/ne", "", "matched"),
        ("/ne", "X-Env: prod\r\n", "fallback"),
        ("/gt?age=18", "", "matched"),
        ("/gt?age=17", "", "fallback"),
        ("/gt?age=old", "", "fallback"),
        ("/ge?age=18", "", "matched"),
        ("/ge?age=17.9", "", "fallback"),
        ("/lt", "X-Version: 2\r\n", "matched"),
        ("/lt", "X-Version: 3\r\n", "fallback"),
        ("/lt", "", "fallback"),
        ("/le", "X-Version: 2.5\r\n", "matched"),
        ("/le", "X-Version: 2.51\r\n", "fallback"),
        ("/re", firefox, "matched"),
        ("/re", "User-Agent: curl/8\r\n", "fallback"),
        ("/re-i", firefox, "matched"),
        ("/re-i", "", "fallback"),
        ("/in?tier=gold", "", "matched"),
        ("/in?tier=bronze", "", "fallback"),
        ("/has?tag=alpha&tag=beta", "", "matched"),
        ("/has?tag=alpha", "", "fallback"),
        ("/ip", "", "matched"),
        ("/ip-not", "", "fallback"),
        ("/not", "", "matched"),
        ("/not?debug=0", "", "matched"),
        ("/not?debug=1", "", "fallback"),
        (
            "/cookie",
            "Cookie: theme=dark; session=0badc0de\r\n",
            "matched",
        ),
        ("/cookie", "Cookie: session=nothex!\r\n", "fallback"),
        ("/host-port", "", "matched"),
        ("/nested?a=1&b=2&c=z&d=w", "", "matched"),
        ("/nested?a=1&c=z&d=w", "", "fallback"),
        ("/nested?c=z", "", "fallback"),
        ("/nested?c=x", "", "matched"),
    ] {
        assert_eq!(
            served_by(&gate, target, headers),
            want,
            "{target} {headers:?}"
        );
    }
}

#[test]
fn a_route_whose_vars_fail_falls_through_to_the_next_candidate() {
    let (gold, silver, plain) = (
        Upstream::named("gold"),
        Upstream::named("silver"),
        Upstream::named("plain"),
    );
    let routes = format!(
        "routes:
  - {{id: gold, uri: \"/api/*\", priority: 10, vars: [[http_x_tier, \"==\", gold]], upstream: {{nodes: {{\"{}\": 1}}}}}}
  - {{id: silver, uri: \"/api/*\", priority: 5, vars: [[http_x_tier, \"==\", silver]], upstream: {{nodes: {{\"{}\": 1}}}}}}
  - {{id: plain, uri: \"/api/*\", upstream: {{nodes: {{\"{}\": 1}}}}}}
  - {{id: exact-but-refused, uri: /api/x, vars: [[arg_never, \"==\", \"1\"]], upstream: {{nodes: {{\"{}\": 1}}}}}}
#END
",
        gold.addr, silver.addr, plain.addr, gold.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    assert_eq!(served_by(&gate, "/api/x", "X-Tier: gold\r\n"), "gold");
    assert_eq!(served_by(&gate, "/api/x", "X-Tier: silver\r\n"), "silver");
    assert_eq!(served_by(&gate, "/api/x", ""), "plain");
    assert_eq!(served_by(&gate, "/api/x?never=1", ""), "gold");
}

/// `config.yaml` listening on `ip` only.
fn config_listening_on(ip: &str) -> String {
    config_yaml(&[], "").replace(
        "{ip: 127.0.0.1, port: 0}",
        &format!("{{ip: \"{ip}\", port: 0}}"),
    )
}

#[test]
fn remote_addrs_take_ipv4_and_ipv6_addresses_and_cidr_ranges() {
    let (allowed, other) = (Upstream::named("allowed"), Upstream::named("other"));
    let routes = format!(
        "routes:
  - {{uri: /v6-range, remote_addrs: [\"2001:db8::/32\", \"::/64\"], upstream: {{nodes: {{\"{a}\": 1}}}}}}
  - {{uri: /v6-exact, remote_addr: \"::1\", upstream: {{nodes: {{\"{a}\": 1}}}}}}
  - {{uri: /v4, remote_addrs: [\"127.0.0.0/8\"], upstream: {{nodes: {{\"{a}\": 1}}}}}}
  - {{uri: /elsewhere, remote_addrs: [\"fd00::/8\", \"10.0.0.0/8\"], upstream: {{nodes: {{\"{a}\": 1}}}}}}
  - {{uri: /ipmatch, vars: [[remote_addr, ipmatch, \"::1/128\"]], upstream: {{nodes: {{\"{a}\": 1}}}}}}
  - {{uri: \"/*\", upstream: {{nodes: {{\"{o}\": 1}}}}}}
#END
",
        a = allowed.addr,
        o = other.addr
    );
    let v6 = Gate::start(&config_listening_on("::1"), &routes);
    assert!(v6.addr.is_ipv6(), "{}", v6.addr);
    let v4 = Gate::start(&config_listening_on("127.0.0.1"), &routes);
    for (gate, path, want) in [
        (&v6, "/v6-range", "allowed"),
        (&v6, "/v6-exact", "allowed"),
        (&v6, "/v4", "other"),
        (&v6, "/elsewhere", "other"),
        (&v6, "/ipmatch", "allowed"),
        (&v4, "/v6-range", "other"),
        (&v4, "/v6-exact", "other"),
        (&v4, "/v4", "allowed"),
        (&v4, "/elsewhere", "other"),
        (&v4, "/ipmatch", "other"),
    ] {
        assert_eq!(served_by(gate, path, ""), want, "{} {path}", gate.addr);
    }
}

/// A `header_mutator` entry adding `x-trace: <name>` to the request and the
/// response, so both show the order plugins ran in.
fn traces(name: &str) -> String {
    format!(
        "      {name}: {{conf: {{request: {{add: [[x-trace, {name}]]}}, response: {{add: [[x-trace, {name}]]}}}}}}\n"
    )
}

#[test]
fn global_rules_run_before_the_route_plugins_in_each_phase() {
    let up = Upstream::named("u");
    let config = config_yaml(
        &[
            ("route-first", 1000, "header_mutator"),
            ("global-first", 500, "header_mutator"),
            ("route-last", 100, "header_mutator"),
            ("global-last", 50, "header_mutator"),
            ("deny", 10, "local_reply"),
        ],
        "",
    );
    let routes = format!(
        "global_rules:
  - id: 1
    plugins:
{gl}  - id: 2
    plugins:
{gf}      deny: {{conf: '{{\"status\": 403, \"body\": \"denied\", \"when_header\": \"x-deny\"}}'}}
routes:
  - uri: /traced
    upstream: {{nodes: {{\"{addr}\": 1}}}}
    plugins:
{rl}{rf}  - uri: /bare
    upstream: {{nodes: {{\"{addr}\": 1}}}}
#END
",
        gl = traces("global-last"),
        gf = traces("global-first"),
        rl = traces("route-last"),
        rf = traces("route-first"),
        addr = up.addr,
    );
    let gate = Gate::start(&config, &routes);
    let order = ["global-first", "global-last", "route-first", "route-last"];

    let r = gate.get("/traced");
    assert_eq!(r.status, 200, "{}", gate.log());
    let seen: Vec<String> = up
        .last()
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-trace"))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(seen, order, "request phase");
    let answered: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-trace"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(answered, order, "response phase");

    // A route without plugins still gets the global rules.
    let r = gate.get("/bare");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-trace"), Some("global-first"));

    // A global plugin's local response ends the request: the node and the
    // route's plugins never see it.
    let before = up.count();
    let r = gate.request("GET /traced HTTP/1.1\r\nHost: test\r\nX-Deny: 1\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (403, "denied"));
    assert_eq!(up.count(), before);
}

/// APISIX runs the global rules on a request no route matched
/// (`http_access_phase`: their `rewrite` and `access` before the 404,
/// then `header_filter` and `log` on it): a global plugin may answer it
/// itself, sees the 404's headers, and fails it as it fails a routed one.
#[test]
fn global_rules_run_on_a_request_no_route_matched() {
    let up = Upstream::named("u");
    let config = config_yaml(
        &[
            ("global-first", 500, "header_mutator"),
            ("deny", 10, "local_reply"),
            ("faulty", 5, "hook_faults"),
        ],
        "",
    );
    let routes = |faulty: &str| {
        format!(
            "global_rules:
  - id: 1
    plugins:
{gf}      deny: {{conf: '{{\"status\": 403, \"body\": \"denied\", \"when_header\": \"x-deny\"}}'}}
{faulty}routes:
  - uri: /bare
    upstream: {{nodes: {{\"{addr}\": 1}}}}
#END
",
            gf = traces("global-first"),
            addr = up.addr,
        )
    };
    let gate = Gate::start(&config, &routes(""));

    // Through the global rules to APISIX's 404, whose headers they saw.
    let r = gate.get("/none");
    assert_eq!(r.status, 404, "{}", gate.log());
    assert_eq!(r.text(), "{\"error_msg\":\"404 Route Not Found\"}\n");
    assert_eq!(r.header("x-trace"), Some("global-first"));
    // A global plugin's local response instead of the 404.
    let r = gate.request("GET /none HTTP/1.1\r\nHost: test\r\nX-Deny: 1\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (403, "denied"));
    // A body too: the request is read through the plugins that want it.
    let r = gate.request("POST /none HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 404);
    assert_eq!(up.count(), 0, "nothing reaches a node");
    // Routed requests are as before.
    assert_eq!(gate.get("/bare").header("x-trace"), Some("global-first"));

    // A global plugin that fails fails the request no route matched (503,
    // as a routed one), and the log says which plugin.
    let faulty = "      faulty: {conf: 'trap proxy_on_request_headers'}\n";
    let gate = Gate::start(&config, &routes(faulty));
    assert_eq!(gate.get("/none").status, 503);
    assert!(
        gate.wait_for_log("plugin \"faulty\" failed in proxy_on_request_headers"),
        "{}",
        gate.log()
    );
}

/// A WebSocket text frame with `payload` (< 126 bytes), masked as a client
/// must send it (RFC 6455 §5.3) or unmasked as a server sends it.
fn ws_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x81];
    match mask {
        Some(key) => {
            out.push(0x80 | payload.len() as u8);
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            out.push(payload.len() as u8);
            out.extend_from_slice(payload);
        }
    }
    out
}

/// Reads one short frame: (opcode, unmasked payload); `None` at the end.
fn read_ws_frame(stream: &mut impl std::io::Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let masked = head[1] & 0x80 != 0;
    let mut key = [0u8; 4];
    if masked {
        stream.read_exact(&mut key).ok()?;
    }
    let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
    stream.read_exact(&mut payload).ok()?;
    if masked {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i % 4]);
    }
    Some((head[0] & 0x0f, payload))
}

/// A WebSocket node: answers an upgrade with 101 (recording the request),
/// then echoes every text frame until the proxy closes; a plain request
/// gets a 200 saying so.
fn websocket_node() -> Scripted {
    Scripted::start(|mut conn| {
        let Some(req) = conn.read_request() else {
            return;
        };
        if req.header("upgrade") != Some("websocket") {
            conn.write(&ok_response("plain"));
            return;
        }
        conn.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        while let Some((opcode, payload)) = read_ws_frame(&mut conn.stream) {
            if opcode == 8 || !conn.write(&ws_frame(&payload, None)) {
                return;
            }
        }
    })
}

const UPGRADE_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
    Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn websocket_echo_through_the_proxy_with_a_plugin_on_the_route() {
    let node = websocket_node();
    let routes = format!(
        "services:
  - id: ws
    enable_websocket: true
    upstream: {{nodes: {{\"{}\": 1}}}}
routes:
  - uri: /chat
    service_id: ws
    plugins:
      mark: {{conf: {{request: {{add: [[x-plugin, request]]}}, response: {{add: [[x-plugin, saw-101]]}}}}}}
#END
",
        node.addr
    );
    let gate = Gate::start(
        &config_yaml(&[("mark", 100, "header_mutator")], ""),
        &routes,
    );
    let mut c = Client::connect(gate.addr);
    c.write(UPGRADE_REQUEST.as_bytes());
    let r = c.read_interim();
    assert_eq!(r.status, 101, "{}", gate.log());
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert!(r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(r.header("x-plugin"), Some("saw-101"));
    let seen = node.received.lock().unwrap()[0].clone();
    assert_eq!(seen.header("x-plugin"), Some("request"));
    assert_eq!(
        seen.header("sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert!(seen
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));

    let mut stream = c.stream().try_clone().unwrap();
    for message in ["hello", "through tinygate", "third"] {
        use std::io::Write;
        stream
            .write_all(&ws_frame(message.as_bytes(), Some([1, 2, 3, 4])))
            .unwrap();
        let (opcode, payload) = read_ws_frame(&mut stream).expect("an echoed frame");
        assert_eq!((opcode, payload.as_slice()), (1, message.as_bytes()));
    }
}

#[test]
fn without_enable_websocket_an_upgrade_is_a_plain_request() {
    let node = websocket_node();
    let routes = format!(
        "routes:\n  - {{uri: /chat, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        node.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let r = gate.request(UPGRADE_REQUEST);
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    let seen = node.received.lock().unwrap()[0].clone();
    assert_eq!(seen.header("upgrade"), None);
    assert_eq!(seen.header("connection"), None);
}

#[test]
fn an_idle_websocket_is_closed_after_the_read_timeout() {
    let node = websocket_node();
    let routes = format!(
        "routes:
  - uri: /chat
    enable_websocket: true
    timeout: {{connect: 1, send: 1, read: 1}}
    upstream: {{nodes: {{\"{}\": 1}}}}
#END
",
        node.addr
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    let mut c = Client::connect(gate.addr);
    c.write(UPGRADE_REQUEST.as_bytes());
    assert_eq!(c.read_interim().status, 101);
    let mut stream = c.stream().try_clone().unwrap();
    {
        use std::io::Write;
        stream
            .write_all(&ws_frame(b"ping", Some([9, 8, 7, 6])))
            .unwrap();
    }
    assert_eq!(
        read_ws_frame(&mut stream).map(|f| f.1),
        Some(b"ping".to_vec())
    );
    // Nothing moves either way now: the proxy ends the tunnel.
    assert!(c.closed_within(Duration::from_secs(10)), "{}", gate.log());
}

#[test]
fn the_documented_apisix_yaml_loads_unchanged_and_serves_every_item() {
    let node = websocket_node();
    std::env::set_var("APISIX_DOCS_NODE", node.addr.to_string());
    let dir = temp_dir();
    let config = config_yaml(
        &[
            ("custom-response-header", 300, "custom_response_header"),
            ("header-mutator", 200, "header_mutator"),
            ("global-marker", 100, "header_mutator"),
        ],
        "",
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/apisix-docs.yaml");
    std::fs::copy(docs, dir.join("apisix.yaml")).unwrap();
    let config_path = dir.join("config.yaml");
    let (code, stdout, stderr) = run(&["-t", "-c", config_path.to_str().unwrap()]);
    assert_eq!((code, stdout.trim()), (0, "configuration ok"), "{stderr}");

    let gate = Gate::start_in(dir);
    let layers = |target: &str, extra: &str| {
        let r = gate.request(&format!(
            "GET {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n"
        ));
        assert_eq!((r.status, r.text().as_str()), (200, "plain"), "{target}");
        [
            r.header("x-layer").map(str::to_string),
            r.header("x-plugin-config").map(str::to_string),
            r.header("x-global-rule").map(str::to_string),
        ]
    };
    let s = |v: &str| Some(v.to_string());
    // Route 1: vars and remote_addrs hold; its conf beats the service's.
    assert_eq!(
        layers("/hello?name=json&age=20&address=China-Beijing", ""),
        [s("route"), s("1"), s("1")]
    );
    // Its vars fail: route 2 (OR of a header and a cookie), else route 3.
    assert_eq!(
        layers("/hello?name=json&age=18", "X-API-Version: v3\r\n"),
        [s("service"), s("1"), s("1")]
    );
    assert_eq!(
        layers("/hello", "Cookie: beta=on\r\n"),
        [s("service"), s("1"), s("1")]
    );
    assert_eq!(layers("/hello", ""), [s("service"), None, s("1")]);

    // The service's enable_websocket reaches route 4.
    let mut c = Client::connect(gate.addr);
    c.write(UPGRADE_REQUEST.replace("/chat", "/ws").as_bytes());
    let r = c.read_interim();
    assert_eq!(r.status, 101, "{}", gate.log());
    assert_eq!(r.header("x-global-rule"), Some("1"));
    let mut stream = c.stream().try_clone().unwrap();
    {
        use std::io::Write;
        stream
            .write_all(&ws_frame(b"docs", Some([4, 3, 2, 1])))
            .unwrap();
    }
    assert_eq!(
        read_ws_frame(&mut stream).map(|f| f.1),
        Some(b"docs".to_vec())
    );
}
