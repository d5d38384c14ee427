//! Plugins from every SDK, and modules the size of the ones Go 1.24+
//! builds, load, pass `tinygate -t` and serve through the proxy (issue #14).
//! The module limits and their figures are in `src/wasm/limits.rs`.

use crate::util::*;

/// `config.yaml` and `apisix.yaml` in a fresh directory: one route `/*`
/// (id `r`) to `upstream` with `plugin` (a fixture name) and `conf`.
fn one_plugin_conf(plugin: &str, conf: &str, upstream: &str) -> std::path::PathBuf {
    let dir = temp_dir();
    std::fs::write(
        dir.join("config.yaml"),
        config_yaml(&[("p", 1, plugin)], ""),
    )
    .unwrap();
    std::fs::write(
        dir.join("apisix.yaml"),
        format!(
            "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{\"{upstream}\": 1}}}}\n    plugins:\n      p:\n        conf: '{conf}'\n#END\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn go_sized_module_passes_the_configuration_test() {
    let dir = one_plugin_conf("go_sized", "{}", "127.0.0.1:1");
    let conf = dir.join("config.yaml");
    let (code, out, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!((code, out.trim()), (0, "configuration ok"), "{err}");
}

#[test]
fn go_sized_module_serves_through_the_proxy() {
    // 30,000 functions in a 34,000-entry table and 25,000 data segments;
    // _initialize checks every segment arrived, the response hook calls
    // through the table and reads the header from the first and last one.
    let up = Upstream::named("app");
    let dir = one_plugin_conf("go_sized", "{}", &up.addr.to_string());
    let gate = Gate::start_in(dir);
    let mut c = Client::connect(gate.addr);
    for _ in 0..5 {
        let r = c.request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "app"));
        assert_eq!(r.header("x-sdk"), Some("go-sized"));
    }
    assert_eq!(up.count(), 5);
}

#[test]
fn a_module_over_a_limit_is_refused_at_load_naming_the_limit() {
    let dir = temp_dir();
    let wasm = dir.join("big_table.wasm");
    let module = wat::parse_str(
        r#"(module (memory (export "memory") 1) (table 300000 funcref)
             (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .unwrap();
    std::fs::write(&wasm, module).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "apisix:\n  node_listen:\n    - {{ip: 127.0.0.1, port: 0}}\nwasm:\n  plugins:\n    - {{name: big, priority: 1, file: \"{}\"}}\n",
            wasm.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("apisix.yaml"), "routes: []\n#END\n").unwrap();
    let conf = dir.join("config.yaml");
    let (code, _, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("plugin \"big\"")
            && err.contains("big_table.wasm: declares a table of 300000 elements; the limit is 262144 (MAX_TABLE_ELEMENTS)"),
        "{err}"
    );
}

/// The header-adding plugin of every SDK built here (fixtures/README.md,
/// 31-33); each sets `x-sdk` to its configuration (`tinygate test` files
/// check the value each sets without one).
const SDK_PLUGINS: &[&str] = &["go_header", "as_header", "cpp_header"];

#[test]
fn every_sdks_plugin_passes_the_check_and_serves_through_the_proxy() {
    for plugin in SDK_PLUGINS {
        let up = Upstream::named("app");
        let dir = one_plugin_conf(plugin, "from-routes-file", &up.addr.to_string());
        let conf = dir.join("config.yaml");
        let (code, out, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
        assert_eq!(
            (code, out.trim()),
            (0, "configuration ok"),
            "{plugin}: {err}"
        );
        let gate = Gate::start_in(dir);
        let mut c = Client::connect(gate.addr);
        for _ in 0..3 {
            let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!((r.status, r.text().as_str()), (200, "app"), "{plugin}");
            let sdk = r.header("x-sdk");
            assert_eq!(sdk, Some("from-routes-file"), "{plugin}: {}", gate.log());
        }
    }
}

#[test]
fn rust_plugins_built_for_size_serve_as_the_default_build_does() {
    for plugin in ["custom_response_header_s", "custom_response_header_z"] {
        let up = Upstream::named("app");
        let dir = one_plugin_conf(
            plugin,
            r#"{"headers":[{"name":"X-Go-Wasm","value":"APISIX"}]}"#,
            &up.addr.to_string(),
        );
        let gate = Gate::start_in(dir);
        let r = gate.get("/");
        assert_eq!(
            (r.status, r.header("x-go-wasm")),
            (200, Some("APISIX")),
            "{plugin}"
        );
    }
}
