//! Plugin code runs on threads with the plugin stack wherever it runs
//! (issue #14.5): a `proxy_on_configure` that nests host calls 250 deep
//! (about 3 MiB of stack in a debug build) passes `-t` under `ulimit -s
//! 2048` and serves from a routes file; deeper nesting and deep wasm
//! recursion are refused by the host's and wasmi's bounds, never by a
//! crash. The etcd watcher's case is in `etcd.rs`.

use crate::util::*;

fn deep_routes(routes: &[(&str, &str)]) -> String {
    let mut s = String::from("routes:\n");
    for (uri, conf) in routes {
        s.push_str(&format!(
            "  - uri: {uri}\n    upstream: {{nodes: {{\"127.0.0.1:1\": 1}}}}\n    plugins:\n      deep:\n        conf: \"{conf}\"\n"
        ));
    }
    s.push_str("#END\n");
    s
}

/// `tinygate -t` on `routes` under `ulimit -s 2048` (the main thread's
/// stack, in KiB): (exit code, stderr).
fn check_with_small_main_stack(routes: &str) -> (i32, String) {
    let dir = temp_dir();
    std::fs::write(
        dir.join("config.yaml"),
        config_yaml(&[("deep", 1, "deep_configure")], ""),
    )
    .unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -s 2048 && exec \"$0\" -t -c \"$1\"")
        .arg(env!("CARGO_BIN_EXE_tinygate"))
        .arg(dir.join("config.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn deep_configure_passes_the_check_whatever_the_main_threads_stack() {
    let (code, err) = check_with_small_main_stack(&deep_routes(&[("/a", "host 250")]));
    assert_eq!(code, 0, "{err}");

    let (code, err) = check_with_small_main_stack(&deep_routes(&[("/a", "host 100000")]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("host calls nested more than 256 deep"),
        "{err}"
    );
    let (code, err) = check_with_small_main_stack(&deep_routes(&[("/a", "wasm 100000")]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("call stack exhausted"), "{err}");
}

#[test]
fn deep_configure_from_the_routes_file_serves_and_deeper_is_refused() {
    let up = Upstream::named("app");
    let route = |uri: &str, conf: &str| {
        format!(
            "  - uri: {uri}\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      deep:\n        conf: \"{conf}\"\n",
            up.addr
        )
    };
    let gate = Gate::start(
        &config_yaml(&[("deep", 1, "deep_configure")], ""),
        &format!("routes:\n{}#END\n", route("/deep", "host 250")),
    );
    assert_eq!(gate.get("/deep").status, 200, "{}", gate.log());
    // A reload whose new route nests too deep is refused as a whole; the
    // served configuration stays.
    std::fs::write(
        gate.dir.join("apisix.yaml"),
        format!(
            "routes:\n{}{}#END\n",
            route("/deep", "host 250"),
            route("/deeper", "host 100000")
        ),
    )
    .unwrap();
    assert!(
        gate.wait_for_log("(MAX_NESTED_GUEST_CALLS)"),
        "{}",
        gate.log()
    );
    assert_eq!(gate.get("/deep").status, 200);
    assert_eq!(gate.get("/deeper").status, 404);
}
