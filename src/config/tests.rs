//! The routes file's APISIX composition: services, plugin configs and
//! global rules, with APISIX's precedence; `vars` and `remote_addrs` with
//! their key paths; `${{VAR}}` substitution.

use super::routes_file::parse_all;
use super::*;
use crate::expr::{RequestVars, Vars};
use crate::http::headers::HeaderMap;
use crate::wasm::{DEFAULT_FUEL_PER_CALLBACK, DEFAULT_MEMORY_LIMIT};

/// Plugins `a` (priority 300), `b` (200), `c` (100), `d` (100).
fn plugins() -> Vec<DeclaredPlugin> {
    [("a", 300), ("b", 200), ("c", 100), ("d", 100)]
        .iter()
        .map(|(name, priority)| PluginSpec {
            name: name.to_string(),
            file: format!("{name}.wasm").into(),
            priority: *priority,
            root_id: String::new(),
            vm_config: Vec::new(),
            env: Vec::new(),
            fuel_per_callback: DEFAULT_FUEL_PER_CALLBACK,
            memory_limit: DEFAULT_MEMORY_LIMIT,
        })
        .map(DeclaredPlugin::from)
        .collect()
}

/// Parses with every key applied (none refused as not served yet); panics
/// on any problem.
fn check_ok(yaml: &str) -> Routes {
    let (routes, problems) = parse_all("apisix.yaml", yaml, &plugins());
    assert!(problems.is_empty(), "unexpected problems:\n{problems:#?}");
    routes
}

fn check_err(yaml: &str, expected: &[&str]) {
    let (_, problems) = parse_all("apisix.yaml", yaml, &plugins());
    assert_eq!(problems, expected);
}

/// `(plugin name, conf)` of a route's plugins, in run order.
fn confs(route: &Route) -> Vec<(&str, &str)> {
    route
        .plugins
        .iter()
        .map(|rp| (rp.name.as_str(), std::str::from_utf8(&rp.conf).unwrap()))
        .collect()
}

const SHARED: &str = r#"
upstreams:
  - id: up1
    nodes: {"127.0.0.1:1980": 1}
    timeout: {connect: 1, send: 1, read: 7}
services:
  - id: svc
    name: shared
    upstream_id: up1
    hosts: [svc.example.com]
    enable_websocket: true
    plugins:
      a: {conf: from-service}
      b: {conf: from-service}
      c: {conf: from-service}
  - id: 2
    upstream: {nodes: {"127.0.0.1:1981": 1}}
plugin_configs:
  - id: pc
    desc: shared plugin set
    plugins:
      b: {conf: from-plugin-config}
      c: {conf: from-plugin-config}
"#;

#[test]
fn route_over_plugin_config_over_service() {
    let r = check_ok(&format!(
        "{SHARED}routes:
  - id: r1
    uri: /a
    service_id: svc
    plugin_config_id: pc
    plugins:
      c: {{conf: from-route}}
      d: {{conf: from-route}}
#END
"
    ));
    let route = &r.routes[0];
    assert_eq!(
        confs(route),
        [
            ("a", "from-service"),
            ("b", "from-plugin-config"),
            ("c", "from-route"),
            ("d", "from-route"),
        ]
    );
    assert_eq!(route.service_id.as_deref(), Some("svc"));
}

#[test]
fn a_route_inherits_upstream_hosts_and_websocket_unless_it_has_its_own() {
    let r = check_ok(&format!(
        "{SHARED}routes:
  - {{id: inherits, uri: /a, service_id: svc}}
  - id: own
    uri: /b
    service_id: svc
    host: own.example.com
    enable_websocket: false
    upstream: {{nodes: {{\"127.0.0.1:2000\": 1}}}}
  - {{id: numeric, uri: /c, service_id: 2}}
#END
"
    ));
    let [inherits, own, numeric] = &r.routes[..] else {
        panic!("{:?}", r.routes);
    };
    assert_eq!(inherits.upstream.as_ref().unwrap().id, "up1");
    assert_eq!(inherits.hosts, [HostMatch::Exact("svc.example.com".into())]);
    assert!(inherits.enable_websocket);
    assert_eq!(inherits.timeout.read, Duration::from_secs(7));
    assert_eq!(own.upstream.as_ref().unwrap().id, "route own");
    assert_eq!(own.hosts, [HostMatch::Exact("own.example.com".into())]);
    assert!(!own.enable_websocket);
    assert_eq!(numeric.upstream.as_ref().unwrap().id, "service 2");
    assert!(numeric.hosts.is_empty());
    assert!(!numeric.enable_websocket);
}

#[test]
fn each_route_gets_its_own_root_context_for_inherited_confs() {
    let r = check_ok(&format!(
        "{SHARED}routes:
  - {{id: x, uri: /x, service_id: svc}}
  - {{id: y, uri: /y, service_id: svc}}
#END
"
    ));
    let keys = |route: &Route| route.plugins.iter().map(|rp| rp.key).collect::<Vec<_>>();
    let (x, y) = (keys(&r.routes[0]), keys(&r.routes[1]));
    assert!(x.iter().all(|k| !y.contains(k)), "{x:?} {y:?}");
}

#[test]
fn global_rules_merge_into_one_list_by_priority() {
    let r = check_ok(
        r#"
global_rules:
  - id: 1
    plugins:
      c: {conf: g1}
  - id: two
    plugins:
      a: {conf: g2}
      d: {conf: g2}
routes:
  - {uri: /, plugins: {}}
#END
"#,
    );
    let names: Vec<&str> = r.global_plugins.iter().map(|rp| rp.name.as_str()).collect();
    assert_eq!(names, ["a", "c", "d"]);
}

#[test]
fn a_plugin_in_two_global_rules_runs_in_neither() {
    let yaml = r#"
global_rules:
  - {id: 1, plugins: {a: {conf: "1"}, b: {conf: "1"}}}
  - {id: 2, plugins: {a: {conf: "2"}}}
#END
"#;
    let (r, problems) = parse_all("apisix.yaml", yaml, &plugins());
    assert_eq!(
        problems,
        ["apisix.yaml: global_rules[1].plugins.a: plugin \"a\" is also in global rule \"1\": a plugin may be in one global rule only (APISIX runs it in neither)"]
    );
    let names: Vec<&str> = r.global_plugins.iter().map(|rp| rp.name.as_str()).collect();
    assert_eq!(names, ["b"]);
}

#[test]
fn references_and_required_keys_are_checked() {
    check_err(
        r#"
services:
  - {id: s1, upstream_id: nope}
  - {name: no-id}
  - {id: s1, plugins: {}}
  - {id: s3, hosts: ["bad host"], plugins: {zz: {conf: x}}, timeout: 3}
plugin_configs:
  - {id: p1}
  - {id: p2, plugins: {a: {conf: "1"}}, extra: 1}
global_rules:
  - {plugins: {a: {conf: "1"}}}
  - {id: g, plugins: []}
routes:
  - {uri: /a, service_id: s1}
  - {uri: /b, plugin_config_id: p2, plugins: {}}
  - {uri: /c, plugin_config_id: p2}
  - {uri: /d, service_id: missing}
#END
"#,
        &[
            "apisix.yaml: services[0].upstream_id: no upstream \"nope\"",
            "apisix.yaml: services[1]: missing key id (items of services are referred to by id)",
            "apisix.yaml: services[2].id: id \"s1\" is used twice in services",
            "apisix.yaml: services[3].timeout: unknown key (expected one of: id, name, desc, labels, plugins, upstream, upstream_id, hosts, enable_websocket, script)",
            "apisix.yaml: services[3]: host \"bad host\" is not a host name or a *.wildcard",
            "apisix.yaml: services[3].plugins.zz: no wasm plugin \"zz\" in config.yaml wasm.plugins (declared: a, b, c, d)",
            "apisix.yaml: plugin_configs[0]: missing key plugins",
            "apisix.yaml: plugin_configs[1].extra: unknown key (expected one of: id, name, desc, labels, plugins)",
            "apisix.yaml: global_rules[0]: missing key id (items of global_rules are referred to by id)",
            "apisix.yaml: global_rules[1].plugins: expected a mapping, got a list",
            "apisix.yaml: routes[0].service_id: no service \"s1\"",
            "apisix.yaml: routes[1].plugin_config_id: no plugin config \"p2\"",
            "apisix.yaml: routes[2].plugin_config_id: no plugin config \"p2\"",
            "apisix.yaml: routes[2]: needs an upstream, an upstream_id, a service_id or plugins",
            "apisix.yaml: routes[3].service_id: no service \"missing\"",
        ],
    );
}

#[test]
fn vars_and_remote_addrs_compile_with_their_key_paths() {
    check_err(
        r#"
routes:
  - {uri: /a, plugins: {}, vars: [[arg_x, "=", "1"]]}
  - {uri: /b, plugins: {}, vars: [OR, [http_x, "==", "1"], [uri, "~~", "("]]}
  - {uri: /c, plugins: {}, remote_addr: 10.0.0.0/33}
  - {uri: /d, plugins: {}, remote_addrs: ["::1", "fe80::/200"]}
  - {uri: /e, plugins: {}, remote_addr: "::1", remote_addrs: ["::1"]}
  - {uri: /f, plugins: {}, vars: {arg_x: 1}}
#END
"#,
        &[
            "apisix.yaml: routes[0].vars[0][1]: unknown operator \"=\" (known: ==, ~=, >, >=, <, <=, ~~, ~*, in, has, ipmatch)",
            "apisix.yaml: routes[1].vars[2][2]: invalid regex: found open group without closing ')'",
            "apisix.yaml: routes[2].remote_addr: \"10.0.0.0/33\" is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)",
            "apisix.yaml: routes[3].remote_addrs: \"fe80::/200\" is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)",
            "apisix.yaml: routes[4]: give either remote_addr or remote_addrs, not both",
            "apisix.yaml: routes[5].vars: expected a list of conditions, got a mapping",
        ],
    );
}

#[test]
fn vars_and_remote_addrs_are_kept_compiled() {
    let r = check_ok(
        r#"
routes:
  - uri: /a
    plugins: {}
    remote_addrs: ["127.0.0.0/8", "2001:db8::/32"]
    vars:
      - [http_x_tenant, "==", acme]
      - [arg_age, ">", 18]
#END
"#,
    );
    let route = &r.routes[0];
    let headers = {
        let mut h = HeaderMap::new();
        h.add(b"x-tenant", b"acme");
        h
    };
    let request = |query| RequestVars {
        method: "GET",
        path: "/a",
        query,
        host: "h",
        headers: &headers,
        client: "127.0.0.1:1".parse().unwrap(),
        listener: Some("127.0.0.1:2".parse().unwrap()),
        scheme: "http",
    };
    let vars = route.vars.as_ref().unwrap();
    assert!(vars.eval(&request(Some("age=30")) as &dyn Vars));
    assert!(!vars.eval(&request(Some("age=3")) as &dyn Vars));
    let addrs = route.remote_addrs.as_ref().unwrap();
    assert!(addrs.contains("2001:db8::1".parse().unwrap()));
    assert!(!addrs.contains("10.0.0.1".parse().unwrap()));
}

#[test]
fn environment_variables_are_substituted_before_parsing() {
    // Names unlikely to be set where the tests run; PATH is always set.
    let yaml = r#"
routes:
  - uri: "${{TINYGATE_TEST_UNSET_URI:=/from-default}}"
    name: "${{PATH}}"
    upstream:
      nodes:
        "127.0.0.1:${{TINYGATE_TEST_UNSET_PORT:=1980}}": 1
#END
"#;
    let r = check_ok(yaml);
    assert_eq!(r.routes[0].uris, [UriMatch::Exact("/from-default".into())]);
    assert_eq!(
        r.routes[0].upstream.as_ref().unwrap().nodes[0].addr.port(),
        1980
    );
    let err = parse_routes(
        "apisix.yaml",
        "routes:\n  - uri: ${{TINYGATE_TEST_UNSET}}\n#END\n",
        RouteRules::with_plugins(&plugins()),
    )
    .unwrap_err();
    assert_eq!(
        err.problems,
        ["apisix.yaml: line 2: environment variable \"TINYGATE_TEST_UNSET\" is not set (write ${{TINYGATE_TEST_UNSET:=default}} to give a default)"]
    );
}
