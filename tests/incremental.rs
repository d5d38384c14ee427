//! Reloads that cost what changed (issue #20, item 2): a routes-file
//! reload (`SIGHUP`) or an etcd change that touches one route rebuilds that
//! route only. Every other route keeps its compiled state, which shows from
//! outside: an unchanged upstream's round-robin goes on where it was (a
//! rebuilt one starts again at its first node), and an unchanged plugin
//! entry is not configured again (the `configure_log` plugin logs each
//! `proxy_on_configure` with its conf). A bad item in a change is refused
//! with its key path and the rest serves on as before; the swap is atomic.
//! One worker, so that plugin configures can be counted exactly.

use crate::etcd::{from, Etcd};
use crate::util::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `config.yaml`: the `configure_log` plugin as `log`, one worker, and
/// `extra` lines.
fn config(extra: &str) -> String {
    config_yaml(&[("log", 1, "configure_log")], extra).replace("workers: 2", "workers: 1")
}

/// How many times `proxy_on_configure` ran with `conf` so far.
fn configures(gate: &Gate, conf: &str) -> usize {
    gate.log().matches(&format!("configured: {conf}\n")).count()
}

/// How many times `proxy_on_configure` ran so far, whatever the conf.
fn all_configures(gate: &Gate) -> usize {
    gate.log().matches("] configured: ").count()
}

/// Waits (bounded) until `GET path` passes `ok`.
fn until(gate: &Gate, path: &str, ok: impl Fn(&Response) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(&gate.get(path)) {
        assert!(
            Instant::now() < deadline,
            "{path} never changed:\n{}",
            gate.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The upstream that answered.
fn upstream_of(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-upstream").unwrap_or_default().to_string()
}

/// The routes file: `steady` balances over `a` and `b`, `moving` goes to
/// `moving_to`; each has its own `log` conf; `extra` routes follow.
fn routes_file(a: SocketAddr, b: SocketAddr, moving_to: SocketAddr, extra: &str) -> String {
    format!(
        "routes:
  - id: steady
    uri: /steady
    upstream: {{nodes: {{\"{a}\": 1, \"{b}\": 1}}}}
    plugins: {{log: {{conf: steady v1}}}}
  - id: moving
    uri: /moving
    upstream: {{nodes: {{\"{moving_to}\": 1}}}}
    plugins: {{log: {{conf: moving v1}}}}
{extra}#END
"
    )
}

#[test]
fn a_sighup_that_changes_one_route_rebuilds_that_route_only() {
    let (a, b, c) = (
        Upstream::named("a"),
        Upstream::named("b"),
        Upstream::named("c"),
    );
    let gate = Gate::start(&config(""), &routes_file(a.addr, b.addr, a.addr, ""));
    let routes = gate.dir.join("apisix.yaml");
    // Round-robin over a and b starts at a.
    assert_eq!(upstream_of(&gate.get("/steady")), "a");
    assert_eq!(upstream_of(&gate.get("/moving")), "a");
    let steady = configures(&gate, "steady v1");
    let moving = configures(&gate, "moving v1");

    // `moving` goes to c; `steady` is untouched.
    std::fs::write(&routes, routes_file(a.addr, b.addr, c.addr, "")).unwrap();
    gate.signal(rustix::process::Signal::HUP);
    until(&gate, "/moving", from("c"));
    assert!(
        gate.log()
            .contains("reloaded (SIGHUP): 2 routes; items: 1 validated, 1 taken over unchanged"),
        "{}",
        gate.log()
    );
    // The unchanged route's balancer went on: b, then a again. A rebuilt
    // one would have started again at a.
    assert_eq!(upstream_of(&gate.get("/steady")), "b");
    assert_eq!(upstream_of(&gate.get("/steady")), "a");
    // No plugin entry was configured again: the changed route's conf is
    // the same, so it kept its root context too.
    assert_eq!(configures(&gate, "steady v1"), steady);
    assert_eq!(configures(&gate, "moving v1"), moving);

    // A bad route in the next version is refused with its key path; the
    // rest serves on as it was.
    let bad = "  - {id: bad, uri: no-slash, upstream: {nodes: {\"127.0.0.1:1\": 1}}}\n";
    std::fs::write(&routes, routes_file(a.addr, b.addr, c.addr, bad)).unwrap();
    gate.signal(rustix::process::Signal::HUP);
    assert!(
        gate.wait_for_log(
            "apisix.yaml: routes[2]: uri \"no-slash\" must start with / and be at most 4096 \
             bytes (item skipped)"
        ),
        "{}",
        gate.log()
    );
    assert!(gate.wait_for_log("reloaded (SIGHUP): 2 routes; items: 0 validated, 2 taken over"));
    assert_eq!(upstream_of(&gate.get("/steady")), "b");
    assert_eq!(upstream_of(&gate.get("/moving")), "c");
    assert_eq!(configures(&gate, "steady v1"), steady);
}

/// Route `r<i>` as etcd holds it: upstream `u`, `log` conf `r<i> <version>`.
fn etcd_route(i: usize, version: &str) -> String {
    json!({"uri": format!("/r{i}"), "upstream_id": "u",
           "plugins": {"log": {"conf": format!("r{i} {version}")}}})
    .to_string()
}

/// A gate on etcd at `etcd`, one worker.
fn etcd_gate(etcd: &Etcd) -> Gate {
    let deployment = format!(
        "deployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: etcd\n  \
         etcd:\n    host: [\"{}\"]\n    prefix: /apisix\n    timeout: 2\n",
        etcd.url()
    );
    let dir = temp_dir();
    std::fs::write(dir.join("config.yaml"), config(&deployment)).unwrap();
    Gate::start_in(dir)
}

/// Waits (bounded) until etcd revision `revision` is served.
fn served(gate: &Gate, revision: i64) {
    assert!(
        gate.wait_for_log(&format!("reloaded (etcd revision {revision})")),
        "{}",
        gate.log()
    );
}

#[test]
fn an_etcd_change_to_one_route_configures_that_route_only() {
    const ROUTES: usize = 50;
    let etcd = Etcd::start();
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    etcd.put(
        "/apisix/upstreams/u",
        &json!({"nodes": {a.addr.to_string(): 1, b.addr.to_string(): 1}}).to_string(),
    );
    for i in 0..ROUTES {
        etcd.put(&format!("/apisix/routes/r{i}"), &etcd_route(i, "v1"));
    }
    let gate = etcd_gate(&etcd);
    // The named upstream's round-robin, shared by every route on it:
    // `x` is its first node (etcd's JSON object comes sorted), `y` the other.
    let x = upstream_of(&gate.get("/r0"));
    let y = if x == "a" { "b" } else { "a" };
    assert_eq!(upstream_of(&gate.get("/r1")), y);
    assert_eq!(upstream_of(&gate.get("/r2")), x);
    let before = all_configures(&gate);
    // Start-up checks every entry once, and the worker configured three.
    assert_eq!(before, ROUTES + 3, "{}", gate.log());

    let revision = etcd.put("/apisix/routes/r7", &etcd_route(7, "v2"));
    served(&gate, revision);
    assert!(
        gate.log().contains(&format!(
            "reloaded (etcd revision {revision}): {ROUTES} routes; items: 1 validated, {ROUTES} \
             taken over unchanged"
        )),
        "{}",
        gate.log()
    );
    // Only the changed entry was configured (checked), no other route's.
    assert_eq!(configures(&gate, "r7 v2"), 1);
    assert_eq!(all_configures(&gate), before + 1);
    // The upstream kept its balancer: y comes next (a rebuilt one would
    // start again at x).
    assert_eq!(upstream_of(&gate.get("/r3")), y);
    // The changed route has its own root context now; r0 keeps its own.
    assert_eq!(upstream_of(&gate.get("/r7")), x);
    assert_eq!(configures(&gate, "r7 v2"), 2, "the check and the worker");
    assert_eq!(upstream_of(&gate.get("/r0")), y);
    assert_eq!(
        configures(&gate, "r0 v1"),
        2,
        "the start-up check and the worker"
    );
    assert_eq!(upstream_of(&gate.get("/r4")), x);

    // A change to the upstream rebuilds it and every route on it: its
    // round-robin starts again at x (y was next). Plugin entries keep their
    // keys, so nothing is configured again.
    let configured = all_configures(&gate);
    let revision = etcd.put(
        "/apisix/upstreams/u",
        &json!({"nodes": {a.addr.to_string(): 1, b.addr.to_string(): 1}, "retries": 1}).to_string(),
    );
    served(&gate, revision);
    assert!(gate.log().contains(&format!(
        "reloaded (etcd revision {revision}): {ROUTES} routes; items: {} validated, 0 taken over",
        ROUTES + 1
    )));
    assert_eq!(upstream_of(&gate.get("/r5")), x);
    assert_eq!(upstream_of(&gate.get("/r0")), y);
    assert_eq!(
        all_configures(&gate),
        configured + 1,
        "r5's first request only"
    );
}

#[test]
fn a_bad_etcd_value_is_refused_and_the_version_served_before_keeps_serving() {
    let etcd = Etcd::start();
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let route = |uri: &str, up: SocketAddr| {
        json!({"uri": uri, "upstream": {"nodes": {up.to_string(): 1}}}).to_string()
    };
    etcd.put("/apisix/routes/one", &route("/one", a.addr));
    etcd.put("/apisix/routes/two", &route("/two", a.addr));
    let gate = etcd_gate(&etcd);
    assert_eq!(upstream_of(&gate.get("/one")), "a");

    // Not a valid route, then not even JSON: each is refused, naming its
    // key, and route `one` serves as it was.
    let revision = etcd.put("/apisix/routes/one", &route("no-slash", b.addr));
    served(&gate, revision);
    assert!(gate.log().contains(
        "etcd /apisix/routes/one: uri \"no-slash\" must start with / and be at most 4096 bytes \
         (the version served before keeps serving)"
    ));
    assert_eq!(upstream_of(&gate.get("/one")), "a");
    let revision = etcd.put("/apisix/routes/one", "{not json");
    served(&gate, revision);
    assert!(gate.log().contains(
        "etcd /apisix/routes/one: value is not JSON: key must be a string at line 1 column 2 \
         (the version served before keeps serving)"
    ));
    assert_eq!(upstream_of(&gate.get("/one")), "a");
    assert_eq!(upstream_of(&gate.get("/two")), "a");
    // A new key that is bad has nothing to fall back on: skipped.
    let revision = etcd.put("/apisix/routes/three", &route("no-slash", b.addr));
    served(&gate, revision);
    assert!(gate.log().contains(
        "etcd /apisix/routes/three: uri \"no-slash\" must start with / and be at most 4096 \
         bytes (item skipped)"
    ));

    // Put right, it is served as put.
    etcd.put("/apisix/routes/one", &route("/one", b.addr));
    until(&gate, "/one", from("b"));
    assert_eq!(upstream_of(&gate.get("/two")), "a");
}

#[test]
fn every_request_sees_one_whole_configuration_across_reloads() {
    const RELOADS: usize = 20;
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    // Version v of the file: route /x to a with header x-version: 1, or
    // to b with x-version: 2, changed together in one reload.
    let routes_file = |v: usize| {
        let up = if v % 2 == 1 { a.addr } else { b.addr };
        let conf = json!({"headers": [{"name": "x-version", "value": (2 - v % 2).to_string()}]});
        format!(
            "routes:\n  - id: x\n    uri: /x\n    upstream: {{nodes: {{\"{up}\": 1}}}}\n    \
             plugins: {{hdr: {{conf: '{conf}'}}}}\n#END\n"
        )
    };
    let config = config_yaml(&[("hdr", 1, "custom_response_header")], "");
    let gate = Arc::new(Gate::start(&config, &routes_file(1)));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (gate, stop, seen) = (Arc::clone(&gate), Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = gate.get("/x");
                let pair = (
                    r.status,
                    r.header("x-upstream").unwrap_or("-").to_string(),
                    r.header("x-version").unwrap_or("-").to_string(),
                );
                seen.lock().unwrap().push(pair);
            }
        })
    };
    let path = gate.dir.join("apisix.yaml");
    for v in 2..RELOADS + 2 {
        std::fs::write(&path, routes_file(v)).unwrap();
        gate.signal(rustix::process::Signal::HUP);
        let want = if v % 2 == 1 { "1" } else { "2" };
        until(&gate, "/x", |r| r.header("x-version") == Some(want));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() > RELOADS, "{} requests", seen.len());
    for (status, upstream, version) in seen.iter() {
        let whole = matches!(
            (upstream.as_str(), version.as_str()),
            ("a", "1") | ("b", "2")
        );
        assert!(
            *status == 200 && whole,
            "a mix: {status} from {upstream} with version {version}"
        );
    }
}
