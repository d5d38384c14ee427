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

/// Every sha256 `fixtures/README.md` quotes is the committed file's: the
/// summary table's row of each `.wasm` in `fixtures/`, and each section's
/// `Rebuild:` line (a section once quoted the hash of another build).
#[test]
fn fixtures_readme_quotes_each_committed_file_by_its_sha256() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let readme = read(&dir.join("README.md"));
    let sha256 = |file: &str| -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(dir.join(file))
            .output()
            .expect("run sha256sum");
        assert!(out.status.success(), "sha256sum {file}");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("a digest")
            .to_string()
    };
    let digests: std::collections::HashMap<String, String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wasm"))
        .map(|name| (name.clone(), sha256(&name)))
        .collect();
    let mut quoted = 0;
    for (n, line) in readme.lines().enumerate() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '`' || c == '|' || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let Some(hash) = words
            .iter()
            .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            continue;
        };
        // The file a line names: its first `.wasm`, else the crate of
        // `-p <crate>` (whose build is `<crate>.wasm`). A hash on a line of
        // its own (a command quoted over two lines) must be some file's.
        let named = words
            .iter()
            .find_map(|w| w.strip_suffix(".wasm"))
            .map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
            .or_else(|| {
                let at = words.iter().position(|w| *w == "-p")?;
                words
                    .get(at + 1)
                    .map(|c| c.trim_end_matches('.').to_string())
            });
        match named {
            Some(file) => assert_eq!(
                *hash,
                digests[&format!("{file}.wasm")],
                "fixtures/README.md:{} quotes another hash for {file}.wasm",
                n + 1
            ),
            None => assert!(
                digests.values().any(|d| d == hash),
                "fixtures/README.md:{} quotes {hash}, no committed file's",
                n + 1
            ),
        }
        quoted += 1;
    }
    for name in digests.keys() {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "{name} has no row in the summary table"
        );
    }
    assert!(
        quoted > digests.len(),
        "{quoted} hashes quoted for {} files",
        digests.len()
    );
}
