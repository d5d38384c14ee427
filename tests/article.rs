use crate::util::*;

/// The article's plugin, configured as in the article, on a real upstream.
#[test]
fn custom_response_header_plugin_adds_x_go_wasm() {
    let up = Upstream::named("backend");
    let routes = format!(
        r#"routes:
  - uri: /*
    upstream:
      type: roundrobin
      nodes:
        "{}": 1
    plugins:
      custom-response-header:
        conf: |
          {{
            "headers": [{{
              "name": "X-Go-Wasm", "value": "APISIX"
            }}]
          }}
#END
"#,
        up.addr
    );
    let gate = Gate::start(
        &config_yaml(
            &[("custom-response-header", 7000, "custom_response_header")],
            "",
        ),
        &routes,
    );
    let r = gate.request("HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
    let r = gate.get("/anything");
    assert_eq!((r.status, r.text().as_str()), (200, "backend"));
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
}

/// The shipped `conf/` as a user runs it, on free loopback ports: the
/// built-in demo upstream answers and the plugin adds its header.
#[test]
fn shipped_conf_serves_the_article_scenario() {
    let root = env!("CARGO_MANIFEST_DIR");
    // The routes file must name the demo upstream's address before
    // tinygate starts, so the test picks it (held until tinygate binds it).
    let demo_port = PortForServer::reserve();
    let demo = demo_port.addr;
    let dir = temp_dir();
    let config = read(&std::path::Path::new(root).join("conf/config.yaml"))
        .replace("port: 9080", "port: 0")
        .replace("127.0.0.1:1980", &demo.to_string())
        .replace("../fixtures/", &format!("{root}/fixtures/"));
    let routes = read(&std::path::Path::new(root).join("conf/apisix.yaml"))
        .replace("127.0.0.1:1980", &demo.to_string());
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    let gate = Gate::start_in(dir);
    let r = gate.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-go-wasm"), Some("APISIX"));
    assert!(r.text().contains("hello from the tinygate demo upstream"));
}
