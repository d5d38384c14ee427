//! APISIX's composition served as APISIX serves it: services and plugin
//! configs with their precedence, `${{VAR}}` in `apisix.yaml` (issue #19).

use crate::util::*;

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
