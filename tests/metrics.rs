//! Metrics people can read (issue #21): the real binary's scrape is valid
//! Prometheus text with `# HELP` and `# TYPE` for every family (APISIX's
//! help texts for APISIX's families), plugin families leave the scrape
//! when a reload removes their plugin while the others keep counting, and
//! the Grafana dashboard in `docs/grafana/` asks only for metrics and
//! labels a running tinygate exports, and shows every family of its own.

use crate::util::*;
use rustix::process::Signal;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

mod exposition;
mod promql;

/// A route id and an upstream id that need escaping as label values.
const ODD_ROUTE: &str = "we\"ird\\id\nx";
const ODD_UPSTREAM: &str = "chk\"d";

/// How long counts may take to show in a scrape (generous: 2 shared cores).
const LIMIT: Duration = Duration::from_secs(10);

/// `GET path` on the status listener: the body.
fn scrape(status: SocketAddr) -> String {
    send(
        status,
        b"GET /apisix/prometheus/metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
    )
    .text()
}

/// A wasm.plugins[] line.
fn plugin(name: &str, file: &str, extra: &str) -> String {
    format!(
        "    - {{name: {name}, priority: 100, file: \"{}\"{extra}}}\n",
        fixture(file)
    )
}

/// A tinygate with every family tinygate has carrying samples: requests
/// with statuses 200, 404 and 503 on a route whose id needs escaping, a
/// checked upstream, a plugin metric of each kind, and plugin failures of
/// every sort (a failure and a restart, a backoff refusal, a fail-open, a
/// collateral failure). Returns the gate, its status listener and a scrape
/// taken once everything is counted.
fn busy_gate() -> (Gate, Upstream, SocketAddr, String) {
    let up = Upstream::named("u");
    let mut config = String::from("  status_listen: \"127.0.0.1:0\"\nwasm:\n  plugins:\n");
    config.push_str(&plugin("probe", "metrics_probe", ""));
    config.push_str(&plugin("shared", "per_root_faults", ""));
    config.push_str(&plugin(
        "open-trap",
        "trap_on_request",
        ", failure_policy: fail_open",
    ));
    config.push_str(&plugin("crash", "trap_on_request", ""));
    // One worker: the collateral failure needs both routes in one instance.
    let config = config_yaml(&[], &config).replace("workers: 2", "workers: 1");
    let node = format!("{{nodes: {{\"{}\": 1}}}}", up.addr);
    let routes = format!(
        "routes:
  - id: {odd_route:?}
    uri: /weird
    upstream_id: {odd_upstream:?}
    plugins: {{probe: {{conf: '{{\"prefix\":\"probe\"}}'}}}}
  - {{id: p, uri: /p, upstream: {node}, plugins: {{shared: {{conf: pause}}}}}}
  - {{id: t, uri: /t, upstream: {node}, plugins: {{shared: {{conf: trap}}}}}}
  - {{id: open, uri: /open, upstream: {node}, plugins: {{open-trap: {{conf: x}}}}}}
  - {{id: crash, uri: /crash, upstream: {node}, plugins: {{crash: {{conf: x}}}}}}
upstreams:
  - id: {odd_upstream:?}
    nodes: {{\"{up}\": 1}}
    checks:
      active:
        http_path: /health
        healthy: {{interval: 1, successes: 1}}
        unhealthy: {{interval: 1, http_failures: 1}}
#END
",
        odd_route = ODD_ROUTE,
        odd_upstream = ODD_UPSTREAM,
        up = up.addr,
    );
    let gate = Gate::start(&config, &routes);
    let status = gate.status_addr();
    for _ in 0..2 {
        assert_eq!(gate.get("/weird").status, 200, "{}", gate.log());
    }
    assert_eq!(gate.get("/nowhere").status, 404);
    // A request paused in the instance another route's trap discards.
    let mut paused = Client::connect(gate.addr);
    paused.write(b"GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        gate.wait_for_log("per_root_faults: paused"),
        "{}",
        gate.log()
    );
    assert_eq!(gate.get("/t").status, 503);
    assert_eq!(paused.read_response(false).status, 503);
    assert_eq!(gate.get("/open").status, 200);
    // A failure, a restart at once and its failure, then backoff.
    for _ in 0..3 {
        assert_eq!(gate.get("/crash").status, 503);
    }
    let wanted = [
        "apisix_http_status{code=\"503\",route=\"crash\"} 3",
        "apisix_wasm_plugin_collateral_failures_total{plugin=\"shared\",route=\"p\"} 1",
        "apisix_wasm_vm_backoff_refusals_total{plugin=\"crash\",route=\"crash\"} 1",
        "apisix_upstream_status{",
    ];
    assert!(
        eventually(LIMIT, || {
            let text = scrape(status);
            wanted.iter().all(|w| text.contains(w))
        }),
        "{wanted:?} not all in\n{}\n{}",
        scrape(status),
        gate.log()
    );
    let text = scrape(status);
    (gate, up, status, text)
}

/// The families of a valid scrape, by name (panics with the text if it
/// is not valid).
fn families(text: &str) -> BTreeMap<String, exposition::Family> {
    let parsed = exposition::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    parsed.into_iter().map(|f| (f.name.clone(), f)).collect()
}

/// Families defined by plugins (`proxy_define_metric`), not by tinygate.
fn plugin_defined(f: &exposition::Family) -> bool {
    f.help.contains("(proxy_define_metric)")
}

/// The scrape of a tinygate with every family in use is valid exposition
/// text: each family once with `# HELP` and `# TYPE` before its samples,
/// histograms cumulative up to `+Inf` (the request and upstream latency and
/// a plugin's histogram), label values escaped (a route id and an upstream
/// id with `"`, `\` and a newline read back as they are). APISIX's
/// families have APISIX's help texts.
#[test]
fn the_scrape_is_valid_exposition_text_with_help_for_every_family() {
    let (_gate, _up, _status, text) = busy_gate();
    let families = families(&text);
    for (name, kind, help) in [
        (
            "apisix_http_requests_total",
            "counter",
            "The total number of client requests since APISIX started",
        ),
        (
            "apisix_http_status",
            "counter",
            "HTTP status codes per service in APISIX",
        ),
        (
            "apisix_http_latency",
            "histogram",
            "HTTP request latency in milliseconds per service in APISIX",
        ),
        (
            "apisix_upstream_status",
            "gauge",
            "Upstream status from health check",
        ),
    ] {
        let f = &families[name];
        assert_eq!((f.kind.as_str(), f.help.as_str()), (kind, help), "{name}");
    }
    for (name, f) in &families {
        assert!(
            f.help.len() > 20,
            "{name}: the help should say what it counts"
        );
        assert!(!f.samples.is_empty(), "{name} has no samples:\n{text}");
    }
    for name in [
        "apisix_wasm_plugin_failures_total",
        "apisix_wasm_vm_restarts_total",
        "apisix_wasm_vm_backoff_refusals_total",
        "apisix_wasm_plugin_fail_open_total",
        "apisix_wasm_plugin_collateral_failures_total",
    ] {
        assert_eq!(families[name].kind, "counter");
        assert!(!plugin_defined(&families[name]));
    }
    assert_eq!(families["apisix_wasm_root_contexts"].kind, "gauge");
    for (name, kind) in [
        ("apisix_wasm_probe_requests_total", "counter"),
        ("apisix_wasm_probe_last_status", "gauge"),
        ("apisix_wasm_probe_path_len", "histogram"),
    ] {
        let f = &families[name];
        assert_eq!(f.kind, kind);
        assert!(
            plugin_defined(f) && f.help.contains("wasm plugin probe"),
            "{}",
            f.help
        );
    }
    let types: BTreeSet<&str> = families["apisix_http_latency"]
        .samples
        .iter()
        .filter_map(|s| s.label("type"))
        .collect();
    assert_eq!(types, BTreeSet::from(["request", "upstream"]));
    // Escaped label values read back as they were configured.
    let odd = families["apisix_http_status"]
        .samples
        .iter()
        .find(|s| s.label("route") == Some(ODD_ROUTE))
        .unwrap_or_else(|| panic!("no route {ODD_ROUTE:?} in\n{text}"));
    assert_eq!((odd.label("code"), odd.value), (Some("200"), 2.0));
    let name = format!("/upstreams/{ODD_UPSTREAM}");
    assert!(
        families["apisix_upstream_status"]
            .samples
            .iter()
            .any(|s| s.label("name") == Some(name.as_str())),
        "{text}"
    );
}

/// The checker refuses what it must: without this, a checker that accepts
/// everything would pass the test above.
#[test]
fn the_exposition_checker_refuses_broken_text() {
    let ok = "# HELP a A thing\n# TYPE a counter\na{x=\"1\"} 1\n";
    assert!(exposition::parse(ok).is_ok());
    let histogram =
        |buckets: &str| format!("# HELP h H\n# TYPE h histogram\n{buckets}h_sum 3\nh_count 2\n");
    assert!(exposition::parse(&histogram(
        "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
    ))
    .is_ok());
    for bad in [
        // No HELP, no TYPE.
        "a 1\n".to_string(),
        "# TYPE a counter\na 1\n".into(),
        "# HELP a A\na 1\n".into(),
        // A family twice, or a sample away from its family.
        format!("{ok}{ok}"),
        format!("{ok}# HELP b B\n# TYPE b gauge\nb 1\na{{x=\"2\"}} 1\n"),
        // The same series twice.
        format!("{ok}a{{x=\"1\"}} 2\n"),
        // Label escapes: a raw quote, an unknown escape.
        "# HELP a A\n# TYPE a counter\na{x=\"q\"q\"} 1\n".into(),
        "# HELP a A\n# TYPE a counter\na{x=\"\\t\"} 1\n".into(),
        // Histograms: not cumulative, no +Inf, _count not +Inf's.
        histogram("h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"),
        histogram("h_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\n"),
        histogram("h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 3\n"),
        // A counter below zero; a sample named like another family.
        "# HELP a A\n# TYPE a counter\na -1\n".into(),
        format!(
            "{}# HELP h_sum S\n# TYPE h_sum gauge\nh_sum 1\n",
            histogram("h_bucket{le=\"+Inf\"} 2\n")
        ),
        // No line feed at the end.
        ok.trim_end().into(),
    ] {
        assert!(exposition::parse(&bad).is_err(), "accepted:\n{bad}");
    }
}

/// A reload that removes a plugin removes the families only it defined;
/// families of plugins that stay keep their counts and go on counting,
/// including one the removed plugin defined too; a plugin added back
/// defines its families anew, from zero.
#[test]
fn families_of_plugins_a_reload_removes_leave_the_scrape() {
    let up = Upstream::named("u");
    let plugins = |with_b: bool| {
        let mut s = String::from("  status_listen: \"127.0.0.1:0\"\nwasm:\n  plugins:\n");
        s.push_str(&plugin("probe-a", "metrics_probe", ""));
        if with_b {
            s.push_str(&plugin("probe-b", "metrics_probe", ""));
        }
        config_yaml(&[], &s)
    };
    let routes = |with_b: bool| {
        let route = |id: &str, plugin: &str, prefix: &str| {
            format!(
                "  - {{id: {id}, uri: /{id}, upstream: {{nodes: {{\"{}\": 1}}}}, plugins: {{{plugin}: {{conf: '{{\"prefix\":\"{prefix}\"}}'}}}}}}\n",
                up.addr
            )
        };
        let mut s = String::from("routes:\n");
        s.push_str(&route("a", "probe-a", "a"));
        s.push_str(&route("sa", "probe-a", "shared"));
        if with_b {
            s.push_str(&route("b", "probe-b", "b"));
            s.push_str(&route("sb", "probe-b", "shared"));
        }
        s + "#END\n"
    };
    let gate = Gate::start(&plugins(true), &routes(true));
    let status = gate.status_addr();
    for path in ["/a", "/b", "/sa", "/sb"] {
        assert_eq!(gate.get(path).status, 200, "{}", gate.log());
    }
    let value = |text: &str, name: &str| -> Option<f64> {
        let f = families(text).remove(name)?;
        Some(f.samples[0].value)
    };
    let text = scrape(status);
    assert_eq!(value(&text, "apisix_wasm_a_requests_total"), Some(1.0));
    assert_eq!(value(&text, "apisix_wasm_b_requests_total"), Some(1.0));
    assert_eq!(value(&text, "apisix_wasm_shared_requests_total"), Some(2.0));

    let reload = |with_b: bool, n: usize| {
        std::fs::write(gate.dir.join("config.yaml"), plugins(with_b)).unwrap();
        std::fs::write(gate.dir.join("apisix.yaml"), routes(with_b)).unwrap();
        gate.signal(Signal::HUP);
        assert!(
            eventually(LIMIT, || gate.log().matches("reloaded (SIGHUP)").count()
                == n),
            "{}",
            gate.log()
        );
    };
    reload(false, 1);
    let text = scrape(status);
    assert!(!text.contains("apisix_wasm_b_"), "{text}");
    assert_eq!(value(&text, "apisix_wasm_a_requests_total"), Some(1.0));
    let shared = &families(&text)["apisix_wasm_shared_requests_total"];
    assert_eq!(shared.samples[0].value, 2.0, "probe-a defines it too");
    assert!(
        shared.help.contains("wasm plugin probe-a (") && !shared.help.contains("probe-b"),
        "{}",
        shared.help
    );
    assert_eq!(gate.get("/a").status, 200);
    assert_eq!(gate.get("/b").status, 404);
    assert!(eventually(LIMIT, || value(
        &scrape(status),
        "apisix_wasm_a_requests_total"
    ) == Some(2.0)));

    reload(true, 2);
    let text = scrape(status);
    assert_eq!(value(&text, "apisix_wasm_b_requests_total"), Some(0.0));
    assert_eq!(value(&text, "apisix_wasm_a_requests_total"), Some(2.0));
    assert_eq!(gate.get("/b").status, 200);
    assert!(eventually(LIMIT, || value(
        &scrape(status),
        "apisix_wasm_b_requests_total"
    ) == Some(1.0)));
}

/// Labels Prometheus adds to every series of a target when it scrapes.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Every PromQL expression of the dashboard (panel targets) and every
/// template variable query, with where it is.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String, bool)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String, bool)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{path}.{k}");
                    if k == "expr" {
                        let expr = child.as_str().expect("expr is a string");
                        out.push((here.clone(), expr.to_string(), false));
                    }
                    walk(child, &here, out);
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], "panels", &mut out);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    for (i, var) in variables.iter().enumerate() {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().or(var["query"].as_str());
            let query = query.expect("a query variable has a query");
            out.push((format!("templating.list[{i}]"), query.to_string(), true));
        }
    }
    out
}

/// `docs/grafana/tinygate.json` is a Grafana dashboard whose every query
/// names only metrics a running tinygate exports (with plugins, failures
/// and health checks, so every family has series), matches only labels
/// those series have, and groups only by such labels; and every family of
/// tinygate's own is on it. A metric renamed, or added without a panel,
/// fails here.
#[test]
fn the_grafana_dashboard_asks_only_for_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/tinygate.json");
    let text = std::fs::read_to_string(path).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let (_gate, _up, _status, scraped) = busy_gate();
    let families = families(&scraped);
    // Series name → every label its series have.
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in families.values() {
        for s in &f.samples {
            let labels = series.entry(s.name.clone()).or_default();
            labels.extend(s.labels.iter().map(|(n, _)| n.clone()));
        }
    }
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:?}");
    let mut used = BTreeSet::new();
    for (place, query, variable) in &queries {
        let uses = if *variable {
            promql::variable_uses(query)
        } else {
            promql::uses(query)
        };
        let uses = uses.unwrap_or_else(|e| panic!("{place}: {e}"));
        assert!(
            *variable || !uses.selectors.is_empty(),
            "{place}: no metric in {query:?}"
        );
        let mut labels_here: BTreeSet<&str> = TARGET_LABELS.into();
        for s in &uses.selectors {
            let Some(labels) = series.get(&s.metric) else {
                panic!(
                    "{place}: {} is not exported by tinygate; {query:?}",
                    s.metric
                );
            };
            for label in &s.labels {
                assert!(
                    labels.contains(label) || TARGET_LABELS.contains(&label.as_str()),
                    "{place}: {} has no label {label} (it has {labels:?}); {query:?}",
                    s.metric
                );
            }
            labels_here.extend(labels.iter().map(String::as_str));
            used.insert(s.metric.clone());
        }
        for label in &uses.grouping {
            let known = if uses.selectors.is_empty() {
                series.values().any(|l| l.contains(label))
                    || TARGET_LABELS.contains(&label.as_str())
            } else {
                labels_here.contains(label.as_str())
            };
            assert!(
                known,
                "{place}: no metric here has label {label}; {query:?}"
            );
        }
    }
    for (name, f) in &families {
        if plugin_defined(f) {
            continue;
        }
        let shown = used.iter().any(|m| {
            m == name
                || m.strip_prefix(name.as_str())
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        });
        assert!(
            shown,
            "tinygate exports {name} but docs/grafana/tinygate.json has no panel for it"
        );
    }
}

/// The PromQL reader finds what a query names and refuses what it cannot
/// read: without this, a reader that finds nothing would pass the
/// dashboard test.
#[test]
fn the_promql_reader_finds_metrics_labels_and_typos() {
    let uses = promql::uses(
        "histogram_quantile(0.99, sum by (le, route) (rate(apisix_http_latency_bucket\
         {type=\"request\",route=~\"$route\"}[$__rate_interval]))) / on(route) group_left \
         sum(x_total offset 5m) > bool 0 or vector(0)",
    )
    .unwrap();
    let names: Vec<(&str, Vec<&str>)> = uses
        .selectors
        .iter()
        .map(|s| {
            let labels = s.labels.iter().map(String::as_str).collect();
            (s.metric.as_str(), labels)
        })
        .collect();
    assert_eq!(
        names,
        [
            ("apisix_http_latency_bucket", vec!["type", "route"]),
            ("x_total", vec![])
        ]
    );
    assert_eq!(uses.grouping, ["le", "route", "route"]);
    let var =
        promql::variable_uses("label_values(apisix_http_status{instance=~\"$i\"}, route)").unwrap();
    assert_eq!(var.selectors[0].metric, "apisix_http_status");
    assert_eq!(var.grouping, ["route"]);
    for bad in [
        "sum(rate(x[5m])",
        "rat(x[5m])",
        "x{code=5}",
        "{__name__=\"x\"}",
        "sum by route (x)",
        "x{a=\"unclosed}",
    ] {
        assert!(promql::uses(bad).is_err(), "accepted {bad:?}");
    }
}
