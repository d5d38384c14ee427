use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Every fixture that can serve traffic, with a conf it accepts and any
/// extra `wasm.plugins[]` keys, and how many requests to send through it.
/// Left out: `no_abi_marker`, `exit_in_start`, `configure_false` and
/// `trap_on_configure`, which are refused at start-up, so a configuration
/// naming them never starts (tests/faults.rs covers those).
const FIXTURES: &[(&str, &str, &str, usize)] = &[
    (
        "custom_response_header",
        r#"{"headers":[{"name":"X-Go-Wasm","value":"APISIX"}]}"#,
        "",
        3,
    ),
    (
        "header_mutator",
        r#"{"request":{"add":[["x-a","1"]]},"response":{"add":[["x-r","2"]]},"echo_path":true}"#,
        "",
        3,
    ),
    ("local_reply", r#"{"status":403,"body":"denied\n"}"#, "", 3),
    ("tinygo_like", r#"{"headers":[]}"#, "", 3),
    ("trap_on_request", "{}", "", 3),
    ("trap_on_response", "{}", "", 3),
    // Traps on its 10th call: 12 requests cross a trap and a fresh instance.
    ("trap_every_10th", "{}", "", 12),
    ("bad_pointers", "{}", "", 3),
    ("missing_import", "{}", "", 2),
    // Grows memory until refused: keep the cap small.
    ("memory_bomb", "{}", ", memory_limit: 8MiB", 3),
    // Never returns: a small fuel budget ends it quickly.
    ("loop_forever", "{}", ", fuel: 5000000", 2),
];

/// The proxy, locked (the default), runs every fixture plugin and afterwards
/// has no writable+executable mapping and no anonymous executable mapping:
/// wasm runs in an interpreter, never as generated machine code.
#[test]
fn plugin_traffic_through_every_fixture_leaves_no_executable_memory() {
    let up = Upstream::named("u");
    let mut plugins = String::from("wasm:\n  plugins:\n");
    let mut routes = String::from("routes:\n");
    for (i, (name, conf, extra, _)) in FIXTURES.iter().enumerate() {
        plugins.push_str(&format!(
            "    - {{name: {name}, priority: {}, file: \"{}\"{extra}}}\n",
            100 + i,
            fixture(name)
        ));
        routes.push_str(&format!(
            "  - id: {name}\n    uri: /{name}\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      {name}:\n        conf: '{conf}'\n",
            up.addr
        ));
    }
    routes.push_str("#END\n");
    let gate = Gate::start(&config_yaml(&[], &plugins), &routes);

    // Only that every request gets an answer (or at least a closed
    // connection) is required here: what each fixture's answer must be is
    // tests/plugins.rs's business.
    let mut seen = Vec::new();
    for (name, _, _, n) in FIXTURES {
        for _ in 0..*n {
            seen.push(format!("/{name}: {}", status_line(&gate, name)));
        }
    }
    let last = status_line(&gate, "custom_response_header");
    assert!(
        last.starts_with("HTTP/1.1 "),
        "tinygate stopped answering after the fixtures: {last}\n{}\n{}",
        seen.join("\n"),
        gate.log()
    );

    if under_runner() {
        // Gate::pid() is the emulator's process, whose maps are the
        // emulator's (a JIT), not tinygate's: nothing to check natively.
        eprintln!("TINYGATE_RUNNER is set: memory maps not checked");
        return;
    }
    assert_no_exec_memory(&gate, &seen);
    assert_locked(&gate);
}

/// `tinygate.deny_exec_memory: false` leaves the process unlocked and says
/// nothing about the lock.
#[test]
fn memory_lock_can_be_turned_off() {
    let up = Upstream::named("u");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n#END\n",
        up.addr
    );
    let gate = Gate::start(&config_yaml(&[], "  deny_exec_memory: false\n"), &routes);
    assert_eq!(gate.get("/").status, 200);
    assert!(!gate.log().contains("memory lock"), "{}", gate.log());
}

/// Sends `GET /name` on its own connection and returns the status line, or
/// what happened instead; never panics on a missing answer.
fn status_line(gate: &Gate, name: &str) -> String {
    let Ok(mut s) = TcpStream::connect(gate.addr) else {
        return "connect failed".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!("GET /{name} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return "write failed".into();
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    match text.lines().next() {
        Some(line) if !line.is_empty() => line.to_string(),
        _ => "closed without a response".into(),
    }
}

/// No mapping of the running proxy is both writable and executable, and
/// every executable mapping is backed by a real file (the binary and, for a
/// dynamic build, its shared libraries). `[vdso]` and `[vsyscall]` are
/// mapped by the kernel into every process and are allowed. An anonymous or
/// `memfd` executable mapping is what a JIT makes, so it fails the test.
fn assert_no_exec_memory(gate: &Gate, seen: &[String]) {
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", gate.pid()))
        .expect("read /proc/<pid>/maps");
    let mut bad = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode [path]
        let fields: Vec<&str> = line.split_whitespace().collect();
        let perms = fields.get(1).copied().unwrap_or("");
        let path = fields.get(5..).map(|p| p.join(" ")).unwrap_or_default();
        let (writable, executable) = (perms.contains('w'), perms.contains('x'));
        if !executable {
            continue;
        }
        let kernel_provided = path == "[vdso]" || path == "[vsyscall]";
        let file_backed =
            path.starts_with('/') && !path.starts_with("/memfd:") && !path.ends_with("(deleted)");
        if writable || !(kernel_provided || file_backed) {
            bad.push(line.to_string());
        }
    }
    assert!(
        bad.is_empty(),
        "executable memory that is writable or not a file:\n{}\n\nall maps:\n{maps}\nrequests:\n{}",
        bad.join("\n"),
        seen.join("\n")
    );
}

/// The start-up log says the lock is on (tinygate logs that only after
/// `PR_GET_MDWE` confirmed it), wherever the kernel has `PR_SET_MDWE`
/// (Linux 6.3 or later); and if the kernel reports the MDWE flags in
/// `/proc/<pid>/status` (Linux 6.18 does not), refuse-exec-gain is set.
fn assert_locked(gate: &Gate) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut version = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    if (major, minor) >= (6, 3) {
        assert!(
            gate.log()
                .contains("memory lock: no mapping can become executable"),
            "Linux {release} has PR_SET_MDWE but tinygate did not lock:\n{}",
            gate.log()
        );
    } else {
        assert!(gate.log().contains("lacks PR_SET_MDWE"), "{}", gate.log());
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", gate.pid()))
        .expect("read /proc/<pid>/status");
    if let Some(line) = status
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("mdwe"))
    {
        let value = line.split_once(':').map_or("", |(_, v)| v).trim();
        let flags = value
            .strip_prefix("0x")
            .map_or_else(|| value.parse::<u64>(), |h| u64::from_str_radix(h, 16));
        let refuse_exec_gain = match flags {
            Ok(bits) => bits & 1 != 0,
            Err(_) => value.to_ascii_lowercase().contains("refuse"),
        };
        assert!(refuse_exec_gain, "lock not shown as on: {line:?}");
    }
}
