//! APISIX's own configuration files, as its users write them, through
//! `tinygate -t`: what APISIX accepts loads (or is refused with the reason
//! and the key path when tinygate cannot serve it), never refused as an
//! unknown key.

use crate::util::*;
use std::path::{Path, PathBuf};

/// `tests/data/<name>`.
fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A temp dir with `config.yaml` (given) and `apisix.yaml` (given).
fn conf_dir(config: &str, routes: &str) -> PathBuf {
    let dir = temp_dir();
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    dir
}

/// `tinygate -t -c <dir>/config.yaml`: exit code and stderr.
fn check(dir: &Path) -> (i32, String) {
    let (code, _, err) = run(&["-t", "-c", dir.join("config.yaml").to_str().unwrap()]);
    (code, err)
}

const ONE_ROUTE: &str =
    "routes:\n  - {uri: /hello, upstream: {nodes: {\"127.0.0.1:1980\": 1}}}\n#END\n";

/// Every key of APISIX's `apisix:` section, at its default, loads: those
/// tinygate has no use for with a warning naming them; the PROXY protocol
/// and TCP/UDP proxying, which would change what a listener speaks, are
/// refused with their paths rather than ignored.
#[test]
fn every_apisix_key_of_config_yaml_loads_or_is_refused_by_name() {
    let config = std::fs::read_to_string(data("apisix-config.yaml")).unwrap();
    let dir = conf_dir(&config, ONE_ROUTE);
    let (code, err) = check(&dir);
    assert_eq!(code, 0, "{err}");
    for key in ["enable_dev_mode", "lru", "tracing", "trusted_addresses"] {
        assert!(
            err.contains(&format!("apisix.{key}: not used by tinygate, ignored")),
            "{key}: {err}"
        );
    }

    let refused = config.replace(
        "  tracing: false\n",
        "  tracing: false\n  proxy_protocol:\n    listen_http_port: 9181\n  stream_proxy:\n    tcp: [9100]\n",
    );
    let dir = conf_dir(&refused, ONE_ROUTE);
    let (code, err) = check(&dir);
    assert_eq!(code, 1, "{err}");
    let file = dir.join("config.yaml").display().to_string();
    for key in ["proxy_protocol", "stream_proxy"] {
        let expected = format!("{file}: apisix.{key}: not supported by tinygate");
        assert!(err.contains(&expected), "missing {expected:?} in {err}");
    }
}

/// APISIX's standalone kinds tinygate does not implement are named as
/// such (as `consumers` always was), not as unknown keys; empty, they
/// load.
#[test]
fn apisix_kinds_tinygate_lacks_are_refused_as_unsupported() {
    let config = std::fs::read_to_string(data("apisix-config.yaml")).unwrap();
    let routes = format!(
        "secrets:\n  - {{id: vault/1, uri: http://127.0.0.1:8200, prefix: kv/apisix, token: t}}\nconsumer_groups:\n  - {{id: company_a, plugins: {{}}}}\n{ONE_ROUTE}"
    );
    let dir = conf_dir(&config, &routes);
    let (code, err) = check(&dir);
    assert_eq!(code, 1, "{err}");
    let file = dir.join("apisix.yaml").display().to_string();
    for kind in ["secrets", "consumer_groups"] {
        let expected = format!("{file}: {kind}: not supported by tinygate yet");
        assert!(err.contains(&expected), "missing {expected:?} in {err}");
    }
    assert!(!err.contains("unknown key"), "{err}");

    let dir = conf_dir(
        &config,
        &format!("secrets: []\nconsumer_groups: []\n{ONE_ROUTE}"),
    );
    let (code, err) = check(&dir);
    assert_eq!(code, 0, "{err}");
}

/// APISIX's own tests (`t/config-center-yaml/route-upstream.t` "upstream_id
/// priority upstream", `route-service.t` tests 3 to 6) write `upstream`
/// and `upstream_id` side by side: APISIX loads them and routes by
/// `upstream_id`; a route's own upstream (either key) beats its service's.
/// tinygate used to refuse such a file.
#[test]
fn upstream_id_beside_an_inline_upstream_wins_as_in_apisix() {
    let (named, inline, service) = (
        Upstream::named("named"),
        Upstream::named("inline"),
        Upstream::named("service"),
    );
    let routes = format!(
        r#"routes:
  - id: both
    uri: /both
    upstream_id: 1
    upstream: {{nodes: {{"{inline}": 1}}, type: roundrobin}}
  - id: service-both
    uri: /service-both
    service_id: s1
  - id: route-inline-over-service
    uri: /route-inline
    service_id: s1
    upstream: {{nodes: {{"{inline}": 1}}}}
  - id: route-both-over-service
    uri: /route-both
    service_id: s2
    upstream_id: 1
    upstream: {{nodes: {{"{inline}": 1}}}}
services:
  - id: s1
    upstream: {{nodes: {{"{inline}": 1}}}}
    upstream_id: 1
  - id: s2
    upstream: {{nodes: {{"{service}": 1}}}}
upstreams:
  - id: 1
    nodes: {{"{named}": 1}}
#END
"#,
        inline = inline.addr,
        named = named.addr,
        service = service.addr,
    );
    let gate = Gate::start(&config_yaml(&[], ""), &routes);
    for (path, node) in [
        ("/both", "named"),
        ("/service-both", "named"),
        ("/route-inline", "inline"),
        ("/route-both", "named"),
    ] {
        let r = gate.get(path);
        assert_eq!((r.status, r.text().as_str()), (200, node), "{path}");
    }
    assert!(
        gate.log().contains(
            "routes[0]: upstream_id is used, not the inline upstream beside it (as in APISIX)"
        ),
        "{}",
        gate.log()
    );
    assert_eq!(
        inline.count(),
        1,
        "only /route-inline reached the inline node"
    );

    // The inline upstream is still validated, as APISIX's schema does.
    let bad = routes.replace("type: roundrobin", "type: nope");
    let (code, err) = check(&conf_dir(&config_yaml(&[], ""), &bad));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[0].upstream.type"), "{err}");
}

/// `${{VAR}}` and `${{VAR:=default}}` in `config.yaml`, as APISIX's own
/// `config.yaml` documents them: substituted in values (typed as what they
/// read as, so a port is a number), never in comments; an unset one is an
/// error with its key path.
#[test]
fn environment_variables_fill_config_yaml_values_but_not_comments() {
    let config = "# export ETCD_HOST=... and write http://${{ETCD_HOST}}:2379 (APISIX's comment)\n\
                  apisix:\n  node_listen:\n    - ip: \"${{TG_TEST_IP}}\"\n      port: ${{TG_TEST_PORT}}\n\
                  deployment:\n  role: ${{TG_TEST_ROLE:=data_plane}}\n  role_data_plane:\n    config_provider: yaml\n\
                  tinygate:\n  client_max_body_size: ${{TG_TEST_BODY:=2MiB}}\n  keepalive_timeout: ${{TG_TEST_KEEPALIVE}}\n";
    let dir = conf_dir(config, ONE_ROUTE);
    let path = dir.join("config.yaml");
    let check_with = |env: &[(&str, &str)]| {
        let out = tinygate()
            .args(["-t", "-c", path.to_str().unwrap()])
            .env_remove("ETCD_HOST")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check_with(&[
        ("TG_TEST_IP", "127.0.0.1"),
        ("TG_TEST_PORT", "0"),
        ("TG_TEST_KEEPALIVE", "5"),
    ]);
    assert_eq!(code, Some(0), "{err}");

    let (code, err) = check_with(&[("TG_TEST_IP", "127.0.0.1")]);
    assert_eq!(code, Some(1), "{err}");
    let file = path.display().to_string();
    for (at, name) in [
        ("apisix.node_listen[0].port", "TG_TEST_PORT"),
        ("tinygate.keepalive_timeout", "TG_TEST_KEEPALIVE"),
    ] {
        let expected = format!("{file}: {at}: environment variable \"{name}\" is not set");
        assert!(err.contains(&expected), "missing {expected:?} in {err}");
    }
    assert!(!err.contains("ETCD_HOST"), "comments are not read: {err}");
}

/// `POST /` with a body of `len` bytes on a new connection: the status.
fn post(gate: &Gate, len: usize) -> u16 {
    let mut raw =
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    raw.resize(raw.len() + len, b'x');
    send(gate.addr, &raw).status
}

/// APISIX's client limits live in `nginx_config.http` (its default
/// `client_max_body_size` is 0, no limit): tinygate reads them there, in
/// nginx's units, and a `tinygate:` key of the same name wins. They used
/// to be ignored, so a body APISIX took got a 413 from tinygate's own
/// 1 MiB default.
#[test]
fn nginx_config_http_limits_are_read_in_nginx_units() {
    let up = Upstream::echo();
    let nginx = "nginx_config:\n  error_log: logs/error.log\n  worker_processes: auto\n  http:\n    client_max_body_size: 1k\n    keepalive_timeout: 75s\n    send_timeout: 10s\n";
    let gate = Gate::start(&config_yaml(&[], nginx), &route_to(up.addr));
    assert_eq!(post(&gate, 1000), 200);
    assert_eq!(post(&gate, 2000), 413);
    assert!(
        gate.log()
            .contains("nginx_config: only worker_processes and http.{client_max_body_size, client_header_timeout, client_body_timeout, keepalive_timeout, send_timeout} are read by tinygate; 1 other settings ignored"),
        "{}",
        gate.log()
    );

    let tinygate_wins = format!("  client_max_body_size: 4KiB\n{nginx}");
    let gate = Gate::start(&config_yaml(&[], &tinygate_wins), &route_to(up.addr));
    assert_eq!(post(&gate, 2000), 200);

    let unlimited = "nginx_config:\n  http:\n    client_max_body_size: 0\n";
    let gate = Gate::start(&config_yaml(&[], unlimited), &route_to(up.addr));
    assert_eq!(post(&gate, 3 << 20), 200, "APISIX's 0: no limit");

    let bad =
        "nginx_config:\n  http:\n    client_max_body_size: 10x\n    client_body_timeout: 1y\n";
    let dir = conf_dir(&config_yaml(&[], bad), ONE_ROUTE);
    let (code, err) = check(&dir);
    assert_eq!(code, 1, "{err}");
    for at in ["http.client_max_body_size", "http.client_body_timeout"] {
        assert!(
            err.contains(&format!(
                "config.yaml: nginx_config.{at}: expected an nginx"
            )),
            "{at}: {err}"
        );
    }
}

/// The fields of the Admin API's route and upstream objects, written as a
/// standalone file: every one loads; `keepalive_pool`, which tinygate
/// does not apply, is validated as APISIX does and named in a warning
/// instead of being dropped silently.
#[test]
fn admin_api_route_and_upstream_fields_load_and_keepalive_pool_is_not_silent() {
    let routes = |idle: &str| {
        format!(
            r#"upstreams:
  - id: 1
    name: up1
    desc: first
    labels: {{env: prod}}
    type: roundrobin
    scheme: http
    pass_host: rewrite
    upstream_host: example.com
    retries: 2
    retry_timeout: 5
    timeout: {{connect: 3, send: 3, read: 3}}
    keepalive_pool: {{size: 320, idle_timeout: {idle}, requests: 1000}}
    nodes:
      - {{host: 127.0.0.1, port: 1980, weight: 1, priority: 0, metadata: {{zone: a}}}}
  - id: 2
    type: chash
    hash_on: vars
    key: remote_addr
    nodes: {{"127.0.0.1:1980": 1, "127.0.0.1:1981": 0}}
routes:
  - id: 1
    uri: /index.html
    name: r1
    desc: d
    labels: {{version: v1}}
    hosts: ["foo.com", "*.bar.com"]
    remote_addrs: ["127.0.0.0/8"]
    methods: [PUT, GET]
    priority: 1
    enable_websocket: true
    status: 1
    timeout: {{connect: 3, send: 3, read: 3}}
    vars: [["arg_name", "==", "json"], ["arg_age", ">", 18]]
    plugins: {{}}
    upstream_id: 1
  - id: 2
    uris: ["/a", "/b/*"]
    upstream_id: 2
#END
"#
        )
    };
    let config = config_yaml(&[], "");
    let (code, err) = check(&conf_dir(&config, &routes("0")));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("upstreams[0].keepalive_pool: accepted but not applied"),
        "{err}"
    );
    let (code, err) = check(&conf_dir(&config, &routes("-1")));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("upstreams[0].keepalive_pool.idle_timeout: expected a number of seconds ≥ 0"),
        "{err}"
    );
}
