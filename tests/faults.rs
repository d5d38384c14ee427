//! Plugins can never hurt the proxy (issue #4): every fault a plugin can
//! have, in every hook, through the real binary, with a healthy route on the
//! same proxy that must keep answering 200.
//!
//! Fixtures: `hook_faults` (a loop, trap or memory bomb in the hook its conf
//! names), `bad_pointers_all` (a bad pointer to every host function that takes
//! one), `host_fuzz` (random host calls) and the older single-fault ones.
//!
//! Debug builds interpret wasm about 170 times slower than release builds,
//! so looping plugins get `fuel: 1000000` here (about 1 ms of `loop br 0` in
//! release, 0.2 s in debug); one test measures the default budget.
//!
//! `host_functions_survive_fuzzing` is the fuzz target of the host ABI: a
//! fixed seed sequence, bounded in time. Run it longer with
//! `TINYGATE_FUZZ_REQUESTS=20000 TINYGATE_FUZZ_SEED=<first seed> cargo test
//! --release host_functions_survive_fuzzing -- --nocapture`.

use crate::util::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Fuel for plugins that loop, so a debug build ends the loop quickly.
const LOOP_FUEL: &str = ", fuel: 1000000";

/// A `wasm.plugins[]` line: `name` loading fixture `file`, with extra keys
/// (e.g. `, fuel: 1000000`).
fn plugin(name: &str, file: &str, extra: &str) -> String {
    format!(
        "    - {{name: {name}, priority: 100, file: \"{}\"{extra}}}\n",
        fixture(file)
    )
}

/// `config.yaml` with these `wasm.plugins[]` lines, the healthy plugin `hdr`
/// and a status listener on a free port.
fn config(plugins: &[String]) -> String {
    let mut wasm = String::from("  status_listen: \"127.0.0.1:0\"\nwasm:\n  plugins:\n");
    wasm.push_str(&plugin("hdr", "custom_response_header", ""));
    for p in plugins {
        wasm.push_str(p);
    }
    config_yaml(&[], &wasm)
}

/// `apisix.yaml` with the healthy route `/ok` (plugin `hdr` adds `x-ok: 1`)
/// and one route `/<id>` per `(id, plugin, conf)`, all to `up`.
fn routes(up: SocketAddr, faulty: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "routes:\n  - id: ok\n    uri: /ok\n    upstream: {{nodes: {{\"{up}\": 1}}}}\n    plugins:\n      hdr:\n        conf: '{{\"headers\":[{{\"name\":\"x-ok\",\"value\":\"1\"}}]}}'\n"
    );
    for (id, plugin, conf) in faulty {
        s.push_str(&format!(
            "  - id: {id}\n    uri: /{id}\n    upstream: {{nodes: {{\"{up}\": 1}}}}\n    plugins:\n      {plugin}:\n        conf: '{conf}'\n"
        ));
    }
    s.push_str("#END\n");
    s
}

/// The healthy route answers 200 with its plugin's header.
fn assert_healthy(gate: &Gate, context: &str) {
    let r = gate.get("/ok");
    assert_eq!(
        (r.status, r.header("x-ok")),
        (200, Some("1")),
        "healthy route after {context}\n{}",
        gate.log()
    );
}

/// The sum of counter `name{plugin="<plugin>",route=...}` over routes (0
/// when absent).
fn counter(gate: &Gate, name: &str, plugin: &str) -> u64 {
    counter_where(gate, &format!("{name}{{plugin=\"{plugin}\","))
}

/// The value of counter `name{plugin="<plugin>",route="<route>"}`, summed
/// over its other labels (0 when absent).
fn route_counter(gate: &Gate, name: &str, plugin: &str, route: &str) -> u64 {
    counter_where(
        gate,
        &format!("{name}{{plugin=\"{plugin}\",route=\"{route}\""),
    )
}

/// The sum of the metric lines that start with `prefix`.
pub(crate) fn counter_where(gate: &Gate, prefix: &str) -> u64 {
    let text = send(
        gate.status_addr(),
        b"GET /apisix/prometheus/metrics HTTP/1.1\r\nHost: s\r\n\r\n",
    )
    .text();
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|rest| {
            let value = rest.rsplit(' ').next().unwrap_or("");
            value.trim().parse::<u64>().expect("counter value")
        })
        .sum()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("field in /proc/<pid>/status")
}

/// Each kind of fault (loop, trap, memory bomb) in each hook, on its own
/// route, fails only that route's request, as `fail_closed` says: 503 before
/// the response, nothing to change after it (`on_done`, `on_log`). A healthy
/// route on the same proxy answers 200 after every one of them, and the log
/// names plugin, route and hook.
#[test]
fn each_fault_in_each_hook_fails_only_its_route() {
    let up = Upstream::named("u");
    // (route and plugin name, fixture, conf, extra keys, method, status)
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str, &str, u16)] = &[
        ("loop-req", "hook_faults", "loop proxy_on_request_headers", LOOP_FUEL, "GET", 503),
        ("trap-req", "hook_faults", "trap proxy_on_request_headers", "", "GET", 503),
        ("grow-req", "hook_faults", "grow proxy_on_request_headers", ", memory_limit: 4MiB", "GET", 503),
        ("loop-body", "hook_faults", "loop proxy_on_request_body", LOOP_FUEL, "POST", 503),
        ("trap-body", "hook_faults", "trap proxy_on_request_body", "", "POST", 503),
        ("loop-resp", "hook_faults", "loop proxy_on_response_headers", LOOP_FUEL, "GET", 503),
        ("trap-resp", "hook_faults", "trap proxy_on_response_headers", "", "GET", 503),
        ("loop-ctx", "hook_faults", "loop proxy_on_context_create", LOOP_FUEL, "GET", 503),
        ("trap-ctx", "hook_faults", "trap proxy_on_context_create", "", "GET", 503),
        ("loop-conf", "hook_faults", "loop proxy_on_configure_later", LOOP_FUEL, "GET", 503),
        ("trap-conf", "hook_faults", "trap proxy_on_configure_later", "", "GET", 503),
        ("loop-done", "hook_faults", "loop proxy_on_done", LOOP_FUEL, "GET", 200),
        ("trap-done", "hook_faults", "trap proxy_on_done", "", "GET", 200),
        ("loop-log", "hook_faults", "loop proxy_on_log", LOOP_FUEL, "GET", 200),
        ("trap-log", "hook_faults", "trap proxy_on_log", "", "GET", 200),
        ("old-trap-req", "trap_on_request", "{}", "", "GET", 503),
        ("old-trap-resp", "trap_on_response", "{}", "", "GET", 503),
        ("old-loop", "loop_forever", "{}", LOOP_FUEL, "GET", 503),
        // memory.grow past the cap returns -1 inside the guest, which goes on.
        ("old-bomb", "memory_bomb", "{}", "", "GET", 200),
        ("bad-pointers", "bad_pointers", "{}", "", "GET", 200),
    ];
    let plugins: Vec<String> = cases
        .iter()
        .map(|(name, file, _, extra, _, _)| plugin(name, file, extra))
        .collect();
    let faulty: Vec<(&str, &str, &str)> = cases
        .iter()
        .map(|(name, _, conf, _, _, _)| (*name, *name, *conf))
        .collect();
    let gate = Gate::start(&config(&plugins), &routes(up.addr, &faulty));
    for (name, _, conf, _, method, status) in cases {
        let raw = match *method {
            "POST" => format!("POST /{name} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
            _ => format!("GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n"),
        };
        // Answered at all: a hook that never returned would leave the
        // client waiting past its read bound (`WAIT`).
        let r = gate.request(&raw);
        assert_eq!(r.status, *status, "{name} ({conf})\n{}", gate.log());
        assert_healthy(&gate, name);
    }
    let log = gate.log();
    for (name, _, conf, _, _, status) in cases {
        let Some(hook) = conf.split(' ').nth(1) else {
            continue;
        };
        let hook = hook.trim_end_matches("_later");
        let line = log
            .lines()
            .find(|l| l.contains(&format!("plugin {name:?} failed in {hook}")))
            .unwrap_or_else(|| panic!("no failure logged for {name}:\n{log}"));
        if *status == 503 {
            assert!(line.contains(&format!("route {name:?}")), "{line}");
        }
        if conf.starts_with("loop") {
            assert!(line.contains("fuel"), "{line}");
        }
    }
    assert!(!log.contains("panicked"), "{log}");
}

/// A `loop br 0` in a request hook, with the default fuel, fails its request
/// within the budget documented for `DEFAULT_FUEL_PER_CALLBACK` (about 22 ms
/// in a release build on the reference machine; debug builds run ~170 times
/// slower).
#[test]
fn loop_with_the_default_fuel_stops_within_the_budget() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[plugin("loop", "loop_forever", "")]),
        &routes(up.addr, &[("loop", "loop", "{}")]),
    );
    assert_healthy(&gate, "start"); // the healthy plugin's instance is warm
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(30)
    } else {
        Duration::from_millis(250)
    };
    // The client waits longer than the bound, so that a slow answer fails
    // the assertion on the bound, not the client's read.
    let mut client = Client::connect(gate.addr).with_read_timeout(bound + Duration::from_secs(20));
    let started = Instant::now();
    let r = client.request("GET /loop HTTP/1.1\r\nHost: test\r\n\r\n");
    let took = started.elapsed();
    eprintln!("loop_forever with the default fuel failed after {took:?}");
    assert_eq!(r.status, 503);
    assert!(took < bound, "took {took:?}");
    assert_healthy(&gate, "the loop");
    assert!(
        gate.wait_for_log("exceeded its CPU budget"),
        "{}",
        gate.log()
    );
}

/// `failure_policy: fail_open` skips a failing plugin for that request (and
/// while it backs off): the request reaches the upstream and later plugins
/// still run; each failure is logged once with plugin, hook, route and
/// reason, and counted. `fail_closed` (the default) answers 503.
#[test]
fn fail_open_skips_the_failing_plugin() {
    let up = Upstream::echo();
    let open = ", failure_policy: fail_open";
    let gate = Gate::start(
        &config(&[
            plugin("open-trap", "trap_on_request", open),
            plugin("closed-trap", "trap_on_request", ", failure_policy: fail_closed"),
            plugin("open-loop-resp", "hook_faults", &format!("{open}{LOOP_FUEL}")),
            plugin("open-conf", "hook_faults", open),
            plugin("open-body", "hook_faults", open),
        ]),
        &format!(
            "routes:\n  - id: open-trap\n    uri: /open-trap\n    upstream: {{nodes: {{\"{0}\": 1}}}}\n    plugins:\n      open-trap: {{conf: x}}\n      hdr:\n        conf: '{{\"headers\":[{{\"name\":\"x-after\",\"value\":\"1\"}}]}}'\n{1}",
            up.addr,
            routes(
                up.addr,
                &[
                    ("closed-trap", "closed-trap", "{}"),
                    ("open-loop-resp", "open-loop-resp", "loop proxy_on_response_headers"),
                    ("open-conf", "open-conf", "trap proxy_on_configure_later"),
                    ("open-body", "open-body", "trap proxy_on_request_body"),
                ],
            )
            .trim_start_matches("routes:\n")
        ),
    );
    for _ in 0..5 {
        let r = gate.get("/open-trap");
        assert_eq!(
            (r.status, r.header("x-after")),
            (200, Some("1")),
            "{}",
            gate.log()
        );
        assert_eq!(gate.get("/closed-trap").status, 503);
        assert_eq!(gate.get("/open-loop-resp").status, 200);
        assert_eq!(gate.get("/open-conf").status, 200);
        let r =
            gate.request("POST /open-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_healthy(&gate, "fail_open");
    }
    let log = gate.log();
    for (plugin, hook) in [
        ("open-trap", "proxy_on_request_headers"),
        ("open-loop-resp", "proxy_on_response_headers"),
        ("open-conf", "proxy_on_configure"),
        ("open-body", "proxy_on_request_body"),
    ] {
        let line = format!("plugin {plugin:?} failed in {hook} on route {plugin:?}: ");
        assert!(
            log.lines()
                .any(|l| l.contains(&line) && l.ends_with("; failing open")),
            "no {line:?} in\n{log}"
        );
        assert_eq!(
            counter(&gate, "apisix_wasm_plugin_fail_open_total", plugin),
            5,
            "{plugin}"
        );
    }
    assert!(!log.contains("\"closed-trap\" failed in proxy_on_request_headers on route"));
    assert!(log.contains(
        "route \"closed-trap\": plugin \"closed-trap\" failed in proxy_on_request_headers"
    ));
}

/// A plugin that traps on every request is restarted with backoff (at once,
/// then after 1 s, 2 s, ...), so a crash loop costs a handful of instance
/// starts per worker, not one per request; uses in between are refused at
/// once (503 under `fail_closed`). Restarts, failures and refusals show in
/// the metrics and the log.
#[test]
fn a_crash_loop_is_restarted_with_backoff() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[plugin("crash", "trap_on_request", "")]),
        &routes(up.addr, &[("crash", "crash", "{}")]),
    );
    // At least 2.5 s and 50 requests; `elapsed` is measured after the last
    // answer, so it covers every worker's whole run of failures.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(2500) || sent < 50 {
        assert_eq!(gate.get("/crash").status, 503);
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    assert_healthy(&gate, "the crash loop");
    let failures = counter(&gate, "apisix_wasm_plugin_failures_total", "crash");
    let refusals = counter(&gate, "apisix_wasm_vm_backoff_refusals_total", "crash");
    let restarts = counter(&gate, "apisix_wasm_vm_restarts_total", "crash");
    eprintln!(
        "{sent} requests in {elapsed:?}: {failures} failures, {restarts} restarts, {refusals} refused"
    );
    // Per worker (2): a failure at once, one more after an immediate
    // restart, then one after each backoff (1 s, 2 s, 4 s, ...). The bound
    // follows the time the test took, so a slow machine only loosens it.
    let most = 2 * failures_within(elapsed);
    assert!(
        (2..=most).contains(&failures),
        "{failures} failures in {elapsed:?} (at most {most})"
    );
    assert!(refusals > 0, "no request was refused during a backoff");
    assert_eq!(
        failures + refusals,
        sent,
        "every request either ran or was refused"
    );
    assert!(restarts >= 1 && restarts < failures, "{restarts} restarts");
    assert_eq!(up.count(), 1, "only /ok reached the upstream");
    let log = gate.log();
    assert!(
        log.contains(
            "plugin \"crash\" on route \"crash\": instance discarded after a failure \
             (other routes get a fresh instance on their next request) (2 in a row); \
             backing off: its requests fail at once for 1000 ms"
        ),
        "{log}"
    );
    assert!(
        log.contains("backs off after 2 failure(s) in a row; next attempt in"),
        "{log}"
    );
    assert!(
        log.contains(
            "fresh instance started (the last one ended with a failure on route \"crash\")"
        ),
        "{log}"
    );
}

/// The most failures in a row one worker lets a plugin that fails every
/// request have within `elapsed`: the n-th (n >= 2) comes after backoffs
/// of 0, 1, 2, 4, ... s, so not before 2^(n-2) - 1 s (`src/plugins/restarts.rs`).
fn failures_within(elapsed: Duration) -> u64 {
    let mut n = 1;
    while Duration::from_secs((1u64 << (n - 1)) - 1) <= elapsed {
        n += 1;
    }
    n
}

/// A plugin that fails now and then is never kept down: an instance that
/// completed a request was healthy, so its failure restarts it at once.
/// `trap_every_10th` on one keep-alive connection (one worker) fails
/// requests 10, 20 and 30 only.
#[test]
fn an_occasional_failure_restarts_at_once() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[plugin("tenth", "trap_every_10th", "")]),
        &routes(up.addr, &[("tenth", "tenth", "{}")]),
    );
    let mut c = Client::connect(gate.addr);
    let statuses: Vec<u16> = (1..=30)
        .map(|_| c.request("GET /tenth HTTP/1.1\r\nHost: t\r\n\r\n").status)
        .collect();
    let failed: Vec<usize> = (1..=30).filter(|i| statuses[i - 1] != 200).collect();
    assert_eq!(failed, [10, 20, 30], "{statuses:?}\n{}", gate.log());
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503));
    assert_eq!(
        counter(&gate, "apisix_wasm_vm_backoff_refusals_total", "tenth"),
        0
    );
}

/// Failures a root context may have at once before its restart budget runs
/// out (`RESTART_BURST` in `src/restarts.rs`); then one per second.
const RESTART_BURST: u64 = 5;

/// Issue #14, item 2: one plugin on route `a`, whose conf makes it trap on
/// every request, and on route `b`, whose conf is healthy. The failures are
/// blamed on `a`'s configuration: `a` backs off, `b` gets a fresh instance
/// at once every time `a` broke one, and never a 503.
#[test]
fn a_failing_route_never_takes_the_plugin_down_on_another_route() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[plugin("shared", "per_root_faults", "")]),
        &routes(up.addr, &[("a", "shared", "trap"), ("b", "shared", "ok")]),
    );
    let mut statuses = (Vec::new(), Vec::new());
    for _ in 0..50 {
        statuses.0.push(gate.get("/a").status);
        statuses.1.push(gate.get("/b").status);
    }
    assert!(statuses.0.iter().all(|s| *s == 503), "a: {:?}", statuses.0);
    assert!(
        statuses.1.iter().all(|s| *s == 200),
        "b: {:?}\n{}",
        statuses.1,
        gate.log()
    );
    let failures = "apisix_wasm_plugin_failures_total";
    let refusals = "apisix_wasm_vm_backoff_refusals_total";
    assert!(route_counter(&gate, failures, "shared", "a") >= 2);
    assert!(route_counter(&gate, refusals, "shared", "a") >= 1);
    for name in [failures, refusals, "apisix_wasm_vm_restarts_total"] {
        assert_eq!(route_counter(&gate, name, "shared", "b"), 0, "{name}");
    }
    assert_eq!(up.count(), 50, "only b reached the upstream");
    let log = gate.log();
    assert!(
        log.contains("plugin \"shared\" on route \"a\": instance discarded after a failure"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("route \"b\"") && l.starts_with("[WARN")),
        "no failure of b is logged\n{log}"
    );
}

/// A route whose plugin fails every other request (a memory bomb: each
/// success in between ends its run of failures) cannot make the worker
/// restart an instance per failure: after `RESTART_BURST` failures at once
/// it gets one per second, and its requests in between are refused without
/// running the plugin. A neighbour on the same plugin and worker (one
/// keep-alive connection) keeps answering 200. Without the budget, every
/// other request would fail and restart the instance.
#[test]
fn a_route_failing_intermittently_has_its_restarts_bounded() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[plugin("bombs", "per_root_faults", ", memory_limit: 2MiB")]),
        &routes(
            up.addr,
            &[("bomb", "bombs", "bomb"), ("calm", "bombs", "ok")],
        ),
    );
    let mut c = Client::connect(gate.addr);
    // At least 2.5 s and 40 requests to each route (enough to use up the
    // budget however slow the machine), at most 2000.
    let started = Instant::now();
    let mut bomb = Vec::new();
    while (started.elapsed() < Duration::from_millis(2500) || bomb.len() < 40) && bomb.len() < 2000
    {
        bomb.push(c.request("GET /bomb HTTP/1.1\r\nHost: t\r\n\r\n").status);
        let calm = c.request("GET /calm HTTP/1.1\r\nHost: t\r\n\r\n").status;
        assert_eq!(calm, 200, "{}", gate.log());
    }
    let elapsed = started.elapsed();
    assert!(bomb.iter().all(|s| *s == 200 || *s == 503), "{bomb:?}");
    let count = |name, route| route_counter(&gate, name, "bombs", route);
    let failures = count("apisix_wasm_plugin_failures_total", "bomb");
    let restarts = count("apisix_wasm_vm_restarts_total", "bomb");
    let refused = count("apisix_wasm_vm_backoff_refusals_total", "bomb");
    let failed = bomb.iter().filter(|s| **s == 503).count() as u64;
    eprintln!(
        "{} bomb requests in {elapsed:?}: {failures} failures, {restarts} restarts, {refused} \
         refused",
        bomb.len()
    );
    assert!(failures >= RESTART_BURST, "{failures} failures");
    assert!(
        failures <= RESTART_BURST + elapsed.as_secs() + 1,
        "{failures} failures in {elapsed:?}"
    );
    assert!(restarts <= failures, "{restarts} restarts");
    let memory = counter_where(
        &gate,
        "apisix_wasm_plugin_failures_total{plugin=\"bombs\",route=\"bomb\",kind=\"memory\"} ",
    );
    assert_eq!(memory, failures, "every failure was the memory limit's");
    assert_eq!(
        failures + refused,
        failed,
        "every 503 failed or was refused"
    );
    for name in [
        "apisix_wasm_plugin_failures_total",
        "apisix_wasm_vm_restarts_total",
        "apisix_wasm_vm_backoff_refusals_total",
    ] {
        assert_eq!(count(name, "calm"), 0, "{name}");
    }
    assert!(gate.log().contains("ran out of memory"), "{}", gate.log());
}

/// A request of one route paused in an instance that another route's
/// failure discards fails at once, as its policy says (503 under
/// `fail_closed`), instead of waiting out its pause; it is counted as a
/// collateral failure of its own route, not as a failure of it.
#[test]
fn a_paused_request_fails_as_collateral_when_another_route_breaks_the_instance() {
    let up = Upstream::named("u");
    let one_worker =
        config(&[plugin("shared", "per_root_faults", "")]).replace("workers: 2", "workers: 1");
    let gate = Gate::start(
        &one_worker,
        &routes(
            up.addr,
            &[("p", "shared", "pause"), ("t", "shared", "trap")],
        ),
    );
    let mut paused = Client::connect(gate.addr);
    paused.write(b"GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        gate.wait_for_log("per_root_faults: paused"),
        "{}",
        gate.log()
    );
    assert_eq!(gate.get("/t").status, 503);
    let r = paused.read_response(false);
    assert_eq!(r.status, 503, "{}", gate.log());
    let count = |name, route| route_counter(&gate, name, "shared", route);
    assert_eq!(
        count("apisix_wasm_plugin_collateral_failures_total", "p"),
        1
    );
    assert_eq!(count("apisix_wasm_plugin_failures_total", "p"), 0);
    assert_eq!(count("apisix_wasm_plugin_failures_total", "t"), 1);
    assert_eq!(up.count(), 0);
    assert!(
        gate.log()
            .contains("its instance was discarded after another request's failure"),
        "{}",
        gate.log()
    );
}

/// A body plugin that fails after the response head and first chunk went
/// out cannot change the status: the connection is closed without the last
/// chunk, so the client sees a truncated body rather than a corrupted one,
/// under either policy.
#[test]
fn a_fault_after_the_response_started_closes_the_connection() {
    // The second chunk goes out only once the client has the first: sent
    // together, they could reach the plugin as one piece, which passes.
    let (first_chunk_read, first_chunk_seen) = std::sync::mpsc::channel::<()>();
    let first_chunk_seen = std::sync::Mutex::new(first_chunk_seen);
    let up = Scripted::start(move |mut c| {
        while c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n");
            let _ = first_chunk_seen.lock().unwrap().recv_timeout(WAIT);
            if !c.write(b"5\r\nworld\r\n0\r\n\r\n") {
                return;
            }
        }
    });
    let gate = Gate::start(
        &config(&[
            plugin("closed", "hook_faults", ""),
            plugin("open", "hook_faults", ", failure_policy: fail_open"),
        ]),
        &routes(
            up.addr,
            &[
                ("closed", "closed", "trap proxy_on_response_body"),
                ("open", "open", "trap proxy_on_response_body"),
            ],
        ),
    );
    for route in ["closed", "open"] {
        let mut c = Client::connect(gate.addr);
        c.write(format!("GET /{route} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while find(&got, b"hello").is_none() {
            let n = std::io::Read::read(&mut c.stream(), &mut b).expect("the first chunk");
            assert!(n > 0, "{route}: closed before the first chunk: {got:?}");
            got.extend_from_slice(&b[..n]);
        }
        first_chunk_read.send(()).unwrap();
        let rest = c
            .read_to_close(WAIT)
            .expect("the proxy closes the connection");
        got.extend_from_slice(&rest);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 "), "{route}: {text}");
        assert!(text.contains("hello"), "{route}: {text}");
        assert!(
            !text.contains("world") && !text.ends_with("0\r\n\r\n"),
            "{route}: {text}"
        );
        assert_healthy(&gate, route);
    }
    assert!(
        gate.log().contains("failed in proxy_on_response_body"),
        "{}",
        gate.log()
    );
}

/// A memory bomb hit over and over keeps the proxy's memory bounded by the
/// plugin's `memory_limit` per worker instance: `grow` touches every page it
/// gets until `memory.grow` fails, then traps (its instance is discarded,
/// with the memory); `memory_bomb` asks for 62.5 MiB at a time and goes on
/// when refused. Peak RSS stays under start + 2 workers × (16 MiB + 64 MiB)
/// + 32 MiB, and every request is answered.
#[test]
fn memory_bombs_keep_the_proxy_memory_bounded() {
    if under_runner() {
        eprintln!("TINYGATE_RUNNER is set: the pid is the emulator's, not checked");
        return;
    }
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[
            plugin(
                "grow",
                "hook_faults",
                ", memory_limit: 16MiB, failure_policy: fail_open",
            ),
            plugin("bomb", "memory_bomb", ""),
        ]),
        &routes(
            up.addr,
            &[
                ("grow", "grow", "grow proxy_on_request_headers"),
                ("bomb", "bomb", "{}"),
            ],
        ),
    );
    assert_healthy(&gate, "start");
    let before = proc_kib(gate.pid(), "VmRSS");
    let started = Instant::now();
    let mut n = 0;
    while n < 200 || started.elapsed() < Duration::from_millis(3500) {
        assert_eq!(gate.get("/grow").status, 200, "{}", gate.log());
        assert_eq!(gate.get("/bomb").status, 200, "{}", gate.log());
        n += 1;
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    assert_healthy(&gate, "the bombs");
    let after = proc_kib(gate.pid(), "VmRSS");
    let peak = proc_kib(gate.pid(), "VmHWM");
    let failures = counter(&gate, "apisix_wasm_plugin_failures_total", "grow");
    eprintln!(
        "memory bombs: {n} requests each; VmRSS {before} KiB before, {after} KiB after, \
         peak {peak} KiB; {failures} grow instances discarded"
    );
    assert!(
        failures >= 2,
        "the grow plugin ran into its limit ({failures})"
    );
    let bound = before + 2 * (16 + 64) * 1024 + 32 * 1024;
    assert!(peak < bound, "peak RSS {peak} KiB over {bound} KiB");
}

/// A bad pointer to every host function that takes one (each pointer
/// argument in turn) gets INVALID_MEMORY_ACCESS (EFAULT from WASI): no trap,
/// no panic, no local response sent.
#[test]
fn a_bad_pointer_to_every_host_function_is_refused() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[plugin("bad", "bad_pointers_all", "")]),
        &routes(up.addr, &[("bad", "bad", "{}")]),
    );
    let r = gate.get("/bad");
    assert_eq!(r.status, 200, "{}", gate.log());
    assert_eq!(
        up.last().header("x-bad-pointers-all"),
        Some("ok"),
        "calls (see fixtures/README.md) that did not return 6/EFAULT"
    );
    assert_healthy(&gate, "bad pointers");
    assert!(!gate.log().contains("panicked"), "{}", gate.log());
}

/// The host ABI fuzz target: `host_fuzz` makes 200 host calls per request
/// with pseudo-random pointers, lengths and enum values from the request's
/// seed. Whatever they do (local responses, reset streams, edited headers),
/// every request is answered, the proxy never panics, and it still serves.
#[test]
fn host_functions_survive_fuzzing() {
    let requests: u64 = std::env::var("TINYGATE_FUZZ_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let first: u64 = std::env::var("TINYGATE_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[plugin("fuzz", "host_fuzz", "")]),
        &routes(up.addr, &[("fuzz", "fuzz", "{}")]),
    );
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    for seed in first..first + requests {
        let raw =
            format!("GET /fuzz HTTP/1.1\r\nHost: t\r\nx-seed: {seed}\r\nConnection: close\r\n\r\n");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.request(&raw)))
            .unwrap_or_else(|_| panic!("seed {seed}: no complete response\n{}", gate.log()));
        assert!((200..600).contains(&r.status), "seed {seed}: {r:?}");
        *statuses.entry(r.status).or_insert(0u64) += 1;
        if seed % 50 == 0 {
            assert_healthy(&gate, &format!("seed {seed}"));
        }
    }
    eprintln!(
        "host fuzz: {requests} requests × 200 calls (seeds {first}..{}) in {:?}: statuses {statuses:?}",
        first + requests - 1,
        started.elapsed()
    );
    assert_healthy(&gate, "fuzzing");
    let log = gate.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains("linking a stub"),
        "every import is the host's own: {log}"
    );
}

/// Load (bounded, loopback): a route whose plugin traps on every 10th
/// request of its instance, under `fail_closed` and under `fail_open`,
/// hammered alongside a healthy route. The healthy route fails nothing;
/// every failed request of the `fail_closed` route is a 503 (its own trap,
/// or a context lost with the instance); the `fail_open` route fails
/// nothing.
#[test]
fn load_with_a_plugin_trapping_every_10th_request() {
    let up = Upstream::named("u");
    let gate = Gate::start(
        &config(&[
            plugin("closed", "trap_every_10th", ""),
            plugin("open", "trap_every_10th", ", failure_policy: fail_open"),
        ]),
        &routes(
            up.addr,
            &[("closed", "closed", "{}"), ("open", "open", "{}")],
        ),
    );
    let per_client: usize = std::env::var("TINYGATE_LOAD_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    let clients: Vec<_> = ["ok", "ok", "closed", "closed", "open", "open"]
        .into_iter()
        .map(|route| {
            let addr = gate.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                for _ in 0..per_client {
                    if Instant::now() > deadline {
                        break;
                    }
                    let r = c.request(&format!("GET /{route} HTTP/1.1\r\nHost: t\r\n\r\n"));
                    *statuses.entry(r.status).or_default() += 1;
                    if r.header("connection") == Some("close") {
                        c = Client::connect(addr);
                    }
                }
                (route, statuses)
            })
        })
        .collect();
    let mut totals =
        std::collections::BTreeMap::<&str, std::collections::BTreeMap<u16, usize>>::new();
    for client in clients {
        let (route, statuses) = client.join().expect("client thread");
        let t = totals.entry(route).or_default();
        for (s, n) in statuses {
            *t.entry(s).or_default() += n;
        }
    }
    let took = started.elapsed();
    let count = |route: &str, s: u16| totals[route].get(&s).copied().unwrap_or(0);
    let all = |route: &str| totals[route].values().sum::<usize>();
    eprintln!("load: {took:?}: {totals:?}");
    assert_eq!(count("ok", 200), all("ok"), "healthy route: {totals:?}");
    assert_eq!(
        count("open", 200),
        all("open"),
        "fail_open route: {totals:?}"
    );
    assert_eq!(
        count("closed", 200) + count("closed", 503),
        all("closed"),
        "fail_closed route answers 200 or 503: {totals:?}"
    );
    assert!(count("closed", 503) >= all("closed") / 10 - 2, "{totals:?}");
    assert!(!gate.log().contains("panicked"));
}

/// Load-time faults stop `tinygate -t` and the start-up with a message that
/// names the plugin and its file (or the route and hook, for the plugin's
/// lifecycle); the process never listens.
#[test]
fn load_faults_stop_the_check_and_the_start_up() {
    let dir = temp_dir();
    let wat = |name: &str, text: &str| {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, wat::parse_str(text).expect("valid WAT")).unwrap();
        path.display().to_string()
    };
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0 this is not wasm").unwrap();
    let garbage = garbage.display().to_string();
    let no_memory = wat(
        "no_memory",
        r#"(module (func (export "proxy_abi_version_0_2_1")) (func (export "_initialize")))"#,
    );
    let bad_signature = wat(
        "bad_signature",
        r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_request_headers") (param i32) (result i32) (i32.const 0)))"#,
    );
    let imported_memory = wat(
        "imported_memory",
        r#"(module (import "env" "memory" (memory 1)) (export "memory" (memory 0))
             (func (export "proxy_abi_version_0_2_1")))"#,
    );
    let big_memory = wat(
        "big_memory",
        r#"(module (memory (export "memory") 100) (func (export "proxy_abi_version_0_2_1")))"#,
    );
    let f = |name: &str| fixture(name);
    // (plugin, file, extra keys, route conf, what the message must say)
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str, &str, Vec<&str>)> = vec![
        ("garbage", garbage.clone(), "", "{}", vec!["invalid wasm module"]),
        ("no-memory", no_memory.clone(), "", "{}", vec!["does not export its linear memory"]),
        ("bad-signature", bad_signature.clone(), "", "{}", vec!["proxy_on_request_headers", "signature"]),
        ("imported-memory", imported_memory.clone(), "", "{}", vec!["env.memory", "not a function"]),
        ("big-memory", big_memory.clone(), ", memory_limit: 1MiB", "{}", vec!["initial memory of 6553600 bytes exceeds"]),
        ("no-abi", f("no_abi_marker"), "", "{}", vec!["proxy_abi_version"]),
        ("exit", f("exit_in_start"), "", "{}", vec!["_start", "proc_exit(1)"]),
        ("vm-start-false", f("hook_faults"), ", vm_config: \"false\"", "none", vec!["proxy_on_vm_start"]),
        ("configure-false", f("configure_false"), "", "{}", vec!["proxy_on_configure"]),
        ("configure-trap", f("trap_on_configure"), "", "{}", vec!["proxy_on_configure"]),
        ("configure-loop", f("hook_faults"), LOOP_FUEL, "loop proxy_on_configure", vec!["proxy_on_configure", "fuel"]),
    ];
    for (name, file, extra, conf, needles) in &cases {
        let case_dir = temp_dir();
        let config = config_yaml(
            &[],
            &format!(
                "wasm:\n  plugins:\n    - {{name: {name}, priority: 1, file: \"{file}\"{extra}}}\n"
            ),
        );
        std::fs::write(case_dir.join("config.yaml"), config).unwrap();
        std::fs::write(
            case_dir.join("apisix.yaml"),
            format!(
                "routes:\n  - {{id: r1, uri: /, upstream: {{nodes: {{\"127.0.0.1:1\": 1}}}}, plugins: {{{name}: {{conf: '{conf}'}}}}}}\n#END\n"
            ),
        )
        .unwrap();
        let conf_path = case_dir.join("config.yaml").display().to_string();
        let (code, _, check) = run(&["-t", "-c", &conf_path]);
        assert_eq!(code, 1, "{name}: -t\n{check}");
        let (code, out, start) = start_fails(&conf_path);
        assert_eq!(code, 1, "{name}: start-up\n{start}");
        assert!(!out.contains("listening on"), "{name}: {out}");
        for text in [&check, &start] {
            let line = text
                .lines()
                .find(|l| l.starts_with("error: ") && l.contains(&format!("{name:?}")))
                .unwrap_or_else(|| panic!("{name}: no error line naming the plugin in\n{text}"));
            for needle in needles {
                assert!(line.contains(needle), "{name}: {needle:?} not in {line:?}");
            }
            if conf == &"{}" && !name.starts_with("configure") && *name != "exit" {
                assert!(line.contains(file.as_str()), "{name}: file not in {line:?}");
            }
            if name.starts_with("configure") || name.starts_with("vm-start") {
                assert!(
                    line.contains("route \"r1\""),
                    "{name}: route not in {line:?}"
                );
            }
        }
    }
}

/// `failure_policy` takes `fail_closed` or `fail_open`; anything else is an
/// error with its key path.
#[test]
fn an_unknown_failure_policy_is_a_config_error() {
    let dir = temp_dir();
    std::fs::write(
        dir.join("config.yaml"),
        config_yaml(
            &[],
            &plugin("p", "hook_faults", ", failure_policy: fail_sometimes")
                .replace("    - ", "wasm:\n  plugins:\n    - "),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("apisix.yaml"), "routes: []\n#END\n").unwrap();
    let conf = dir.join("config.yaml").display().to_string();
    let (code, _, err) = run(&["-t", "-c", &conf]);
    assert_eq!(code, 1, "{err}");
    let expected = format!(
        "{conf}: wasm.plugins[0].failure_policy: expected \"fail_closed\" or \"fail_open\", got \"fail_sometimes\""
    );
    assert!(err.contains(&expected), "{expected:?} not in\n{err}");
}

/// An import the host defines with another signature (or does not know) is
/// not an error: it is linked to a stub that answers an error status, with a
/// warning naming the plugin and the import; `-t` passes.
#[test]
fn an_import_with_the_wrong_signature_is_refused_at_load() {
    let dir = temp_dir();
    let path = dir.join("odd_import.wasm");
    let module = wat::parse_str(
        r#"(module
             (import "env" "proxy_log" (func (param i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .unwrap();
    std::fs::write(&path, module).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        config_yaml(
            &[],
            &format!(
                "wasm:\n  plugins:\n    - {{name: odd, priority: 1, file: \"{}\"}}\n",
                path.display()
            ),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("apisix.yaml"), "routes: []\n#END\n").unwrap();
    let (code, _, err) = run(&["-t", "-c", dir.join("config.yaml").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("\"odd\"") && err.contains("env.proxy_log"),
        "{err}"
    );
    assert!(err.contains("the proxy-wasm ABI defines it as"), "{err}");
}

/// A reload (`SIGHUP`) whose plugin cannot load, start or configure is
/// rejected with the reason, and the previous configuration keeps serving.
#[test]
fn a_reload_with_a_broken_plugin_keeps_the_old_configuration() {
    let up = Upstream::named("u");
    let dir = temp_dir();
    let wasm = dir.join("p.wasm");
    std::fs::copy(fixture("hook_faults"), &wasm).unwrap();
    let config = |extra: &str| {
        config_yaml(
            &[],
            &format!(
                "wasm:\n  plugins:\n    - {{name: p, priority: 1, file: \"{}\"{extra}}}\n",
                wasm.display()
            ),
        )
    };
    std::fs::write(dir.join("config.yaml"), config("")).unwrap();
    std::fs::write(
        dir.join("apisix.yaml"),
        format!(
            "routes:\n  - {{id: r, uri: /r, upstream: {{nodes: {{\"{}\": 1}}}}, plugins: {{p: {{conf: none}}}}}}\n#END\n",
            up.addr
        ),
    )
    .unwrap();
    let gate = Gate::start_in(dir.clone());
    assert_eq!(gate.get("/r").status, 200);
    let read = |name: &str| std::fs::read(fixture(name)).unwrap();
    let bad: [(&str, Vec<u8>, String); 4] = [
        ("garbage", b"\0asm garbage".to_vec(), config("")),
        ("exit", read("exit_in_start"), config("")),
        ("configure", read("configure_false"), config("")),
        (
            "vm_start",
            read("hook_faults"),
            config(", vm_config: \"false\""),
        ),
    ];
    for (i, (what, bytes, config_text)) in bad.iter().enumerate() {
        std::fs::write(&wasm, bytes).unwrap();
        std::fs::write(dir.join("config.yaml"), config_text).unwrap();
        gate.signal(rustix::process::Signal::HUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.log().matches("reload rejected").count() < i + 1 {
            assert!(
                Instant::now() < deadline,
                "{what}: no rejection\n{}",
                gate.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = gate.get("/r");
        assert_eq!(r.status, 200, "{what}: old configuration\n{}", gate.log());
    }
    let log = gate.log();
    for needle in [
        "invalid wasm module",
        "proc_exit(1)",
        "proxy_on_configure",
        "proxy_on_vm_start",
    ] {
        assert!(log.contains(needle), "{needle:?} not in\n{log}");
    }
}

/// Starts tinygate on `config` and waits (bounded) for it to exit:
/// (exit code, stdout, stderr); -1 if it was still running (then killed).
fn start_fails(config: &str) -> (i32, String, String) {
    use std::io::Read;
    let mut child = tinygate()
        .args(["-c", config])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tinygate");
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (code, out, err)
}
