use crate::util::*;

fn write_conf(config: &str, routes: &str) -> std::path::PathBuf {
    let dir = temp_dir();
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    dir
}

#[test]
fn test_flag_accepts_the_shipped_configuration() {
    let conf = format!("{}/conf/config.yaml", env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = run(&["-t", "-c", &conf]);
    assert_eq!(
        (code, out.as_str()),
        (0, "configuration ok\n"),
        "stderr: {err}"
    );
}

#[test]
fn test_flag_lists_every_error_with_file_and_path() {
    let dir = write_conf(
        &config_yaml(
            &[("custom-response-header", 1, "custom_response_header")],
            "",
        ),
        r#"routes:
  - uri: /a
    upstream_id: api
  - uri: /b
    upstream: {nodes: {"127.0.0.1:1": 1}, timout: 3}
  - uri: /c
    plugins:
      nope: {conf: "x"}
#END
"#,
    );
    let conf = dir.join("config.yaml");
    let (code, out, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout: {out}");
    let file = dir.join("apisix.yaml").display().to_string();
    for expected in [
        format!("{file}: routes[0].upstream_id: no upstream \"api\""),
        format!("{file}: routes[1].upstream.timout: unknown key"),
        format!("{file}: routes[2].plugins.nope: no wasm plugin \"nope\""),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("configuration test failed"));
}

#[test]
fn test_flag_reports_config_yaml_errors() {
    let dir = write_conf(
        "apisix:\n  node_listen: [{ip: 127.0.0.1, port: 99999}]\nwasm:\n  plugins:\n    - {name: a, file: a.wasm}\ntinygate: {workers: zero}\n",
        "routes: []\n#END\n",
    );
    let conf = dir.join("config.yaml");
    let (code, _, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    let file = conf.display().to_string();
    for expected in [
        format!("{file}: apisix.node_listen[0].port: 99999 is out of range"),
        format!("{file}: wasm.plugins[0]: missing key priority"),
        format!("{file}: tinygate.workers: expected an integer"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn test_flag_runs_the_plugins_lifecycle() {
    // A plugin whose on_configure returns false fails -t, naming the route.
    let dir = write_conf(
        &config_yaml(
            &[
                ("cfg-false", 1, "configure_false"),
                ("no-abi", 2, "no_abi_marker"),
            ],
            "",
        ),
        "routes:\n  - {id: r1, uri: /, plugins: {cfg-false: {conf: \"x\"}}}\n#END\n",
    );
    let conf = dir.join("config.yaml");
    let (code, _, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("\"no-abi\""), "{err}");
    assert!(err.contains("proxy_abi_version"), "{err}");

    let dir = write_conf(
        &config_yaml(&[("cfg-false", 1, "configure_false")], ""),
        "routes:\n  - {id: r1, uri: /, plugins: {cfg-false: {conf: \"x\"}}}\n#END\n",
    );
    let conf = dir.join("config.yaml");
    let (code, _, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("route \"r1\" plugins.cfg-false"), "{err}");
    assert!(err.contains("proxy_on_configure"), "{err}");
}

/// A plugin that traps configuring one route leaves its instance unsound:
/// `-t` checks the routes after it on a fresh instance, so each reports its
/// own result, not "the VM is broken by an earlier fault".
#[test]
fn test_flag_checks_each_route_on_a_sound_instance() {
    let routes = "routes:
  - {id: r1, uri: /1, plugins: {faulty: {conf: trap proxy_on_configure}}}
  - {id: r2, uri: /2, plugins: {faulty: {conf: none}}}
  - {id: r3, uri: /3, plugins: {faulty: {conf: trap proxy_on_configure}}}
#END
";
    let dir = write_conf(&config_yaml(&[("faulty", 1, "hook_faults")], ""), routes);
    let conf = dir.join("config.yaml");
    let (code, _, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("broken"), "{err}");
    for route in ["r1", "r3"] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("route \"{route}\" plugins.faulty: ")))
            .unwrap_or_else(|| panic!("no error for {route}:\n{err}"));
        assert!(line.contains("proxy_on_configure"), "{line}");
        assert!(
            line.contains("unreachable"),
            "{route} has its own trap: {line}"
        );
    }
    assert!(!err.contains("route \"r2\""), "r2 configures fine:\n{err}");
}

#[test]
fn test_flag_rejects_a_routes_file_without_end_marker() {
    let dir = write_conf(&config_yaml(&[], ""), "routes: []\n");
    let conf = dir.join("config.yaml");
    let (code, _, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("#END"), "{err}");
}

#[test]
fn version_help_and_bad_arguments() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("tinygate "));
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("usage: tinygate"));
    let (code, _, err) = run(&["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown argument"));
}
