//! The process's metrics in APISIX's names (so existing dashboards work):
//! each worker's counters, and their sum in Prometheus text for a scrape.
//!
//! Each worker counts into its own `Stats` (a mutex only the worker and a
//! scrape ever take, so it is never contended on the request path); a
//! scrape sums every worker's stats and adds the plugins' own metrics.
//! Nearly a leaf: it knows finished requests (`Record`), plugin names and
//! the plugins' metric registry (`wasm/`), not how requests are served or
//! how the text is fetched (`status.rs`), so anything may count into it.

use super::access_log::Record;
use crate::wasm::metrics_text;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// APISIX's latency buckets, in milliseconds.
const BUCKETS_MS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// One worker's counters.
#[derive(Default)]
pub struct Stats {
    requests: u64,
    /// Route id → its counters (looked up without allocating).
    routes: HashMap<String, RouteStats>,
    /// Plugin counters, each by (plugin, route); see [`PluginCounter`].
    plugins: HashMap<(PluginCounter, String, String), u64>,
    /// Plugin name → root contexts alive in this worker's instances (a
    /// gauge).
    root_contexts: HashMap<String, usize>,
}

/// What a plugin counter counts, each by plugin and route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PluginCounter {
    /// Failures charged to the route's root context: instances discarded
    /// after a trap, fuel or memory exhaustion or an exit, failed starts,
    /// rejected configurations.
    Failures,
    /// Instances started to replace one the route's failure ended.
    Restarts,
    /// Requests refused while the route's root context backs off.
    BackoffRefusals,
    /// Requests that skipped the plugin after it failed (`fail_open`).
    FailOpen,
    /// Requests that failed because another request's failure discarded
    /// the instance holding their context.
    Collateral,
}

impl PluginCounter {
    /// Every counter, with its metric name, in exposition order.
    const ALL: [(PluginCounter, &'static str); 5] = [
        (PluginCounter::Failures, "apisix_wasm_plugin_failures_total"),
        (PluginCounter::Restarts, "apisix_wasm_vm_restarts_total"),
        (
            PluginCounter::BackoffRefusals,
            "apisix_wasm_vm_backoff_refusals_total",
        ),
        (
            PluginCounter::FailOpen,
            "apisix_wasm_plugin_fail_open_total",
        ),
        (
            PluginCounter::Collateral,
            "apisix_wasm_plugin_collateral_failures_total",
        ),
    ];
}

/// One route's counters in one worker.
#[derive(Default)]
struct RouteStats {
    /// (status, count), in order of first appearance.
    status: Vec<(u16, u64)>,
    request: Histogram,
    upstream: Histogram,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS_MS.len()],
    count: u64,
    sum_ms: f64,
}

impl Histogram {
    fn observe(&mut self, ms: f64) {
        for (i, le) in BUCKETS_MS.iter().enumerate() {
            if ms <= *le {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum_ms += ms;
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms += other.sum_ms;
    }
}

impl Stats {
    /// Counts one finished request.
    pub fn observe(&mut self, record: &Record) {
        self.requests += 1;
        if !self.routes.contains_key(&record.route_id) {
            self.routes
                .insert(record.route_id.clone(), RouteStats::default());
        }
        let Some(route) = self.routes.get_mut(&record.route_id) else {
            return;
        };
        match route.status.iter_mut().find(|(s, _)| *s == record.status) {
            Some((_, n)) => *n += 1,
            None => route.status.push((record.status, 1)),
        }
        if let Some(started) = record.started {
            route
                .request
                .observe(started.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(t) = record.upstream_time {
            route.upstream.observe(t.as_secs_f64() * 1000.0);
        }
    }

    /// Counts a failure of `plugin` charged to `route`'s root context.
    pub fn plugin_failed(&mut self, plugin: &str, route: &str) {
        self.count(PluginCounter::Failures, plugin, route);
    }

    /// Counts an instance started to replace one `route`'s failure ended.
    pub fn vm_restarted(&mut self, plugin: &str, route: &str) {
        self.count(PluginCounter::Restarts, plugin, route);
    }

    /// Counts a request of `route` refused while its root context of
    /// `plugin` backs off.
    pub fn vm_backoff_refused(&mut self, plugin: &str, route: &str) {
        self.count(PluginCounter::BackoffRefusals, plugin, route);
    }

    /// Counts a request of `route` that skipped a failed `fail_open` plugin.
    pub fn failed_open(&mut self, plugin: &str, route: &str) {
        self.count(PluginCounter::FailOpen, plugin, route);
    }

    /// Counts a request of `route` whose context of `plugin` went with an
    /// instance another request's failure discarded.
    pub fn collateral_failure(&mut self, plugin: &str, route: &str) {
        self.count(PluginCounter::Collateral, plugin, route);
    }

    /// One of this worker's instances of `plugin` went from `was` root
    /// contexts to `now`.
    pub fn root_contexts_changed(&mut self, plugin: &str, was: usize, now: usize) {
        let n = self.root_contexts.entry(plugin.to_string()).or_default();
        *n = (*n + now).saturating_sub(was);
    }

    fn count(&mut self, counter: PluginCounter, plugin: &str, route: &str) {
        *self
            .plugins
            .entry((counter, plugin.to_string(), route.to_string()))
            .or_default() += 1;
    }
}

/// Every worker's stats, for scrapes.
static ALL: Mutex<Vec<Arc<Mutex<Stats>>>> = Mutex::new(Vec::new());

/// A new worker's stats, registered for scrapes.
pub fn register() -> Arc<Mutex<Stats>> {
    let stats = Arc::new(Mutex::new(Stats::default()));
    ALL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::clone(&stats));
    stats
}

/// Everything, in Prometheus text exposition format.
pub fn prometheus_text() -> String {
    let mut total = Stats::default();
    // (status, route id) → count; (kind, route id) → histogram.
    let mut total_status: HashMap<(u16, String), u64> = HashMap::new();
    let mut total_latency: HashMap<(&str, String), Histogram> = HashMap::new();
    for stats in ALL.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let s = stats.lock().unwrap_or_else(|e| e.into_inner());
        total.requests += s.requests;
        for (route, r) in &s.routes {
            for (code, n) in &r.status {
                *total_status.entry((*code, route.clone())).or_default() += n;
            }
            for (kind, h) in [("request", &r.request), ("upstream", &r.upstream)] {
                if h.count > 0 {
                    total_latency
                        .entry((kind, route.clone()))
                        .or_default()
                        .add(h);
                }
            }
        }
        for (k, v) in &s.plugins {
            *total.plugins.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.root_contexts {
            *total.root_contexts.entry(k.clone()).or_default() += v;
        }
    }
    let mut out = String::with_capacity(4096);
    out.push_str("# TYPE apisix_http_requests_total counter\n");
    let _ = writeln!(out, "apisix_http_requests_total {}", total.requests);
    out.push_str("# TYPE apisix_http_status counter\n");
    let mut status: Vec<_> = total_status.iter().collect();
    status.sort();
    for ((code, route), n) in status {
        let _ = writeln!(
            out,
            "apisix_http_status{{code=\"{code}\",route=\"{}\"}} {n}",
            label(route)
        );
    }
    out.push_str("# TYPE apisix_http_latency histogram\n");
    let mut latency: Vec<_> = total_latency.iter().collect();
    latency.sort_by(|a, b| a.0.cmp(b.0));
    for ((kind, route), h) in latency {
        let labels = format!("type=\"{kind}\",route=\"{}\"", label(route));
        for (le, n) in BUCKETS_MS.iter().zip(h.buckets) {
            let _ = writeln!(
                out,
                "apisix_http_latency_bucket{{{labels},le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "apisix_http_latency_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "apisix_http_latency_sum{{{labels}}} {}", h.sum_ms);
        let _ = writeln!(out, "apisix_http_latency_count{{{labels}}} {}", h.count);
    }
    let mut counts: Vec<_> = total.plugins.iter().collect();
    counts.sort();
    for (counter, name) in PluginCounter::ALL {
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((_, plugin, route), n) in counts.iter().filter(|((c, ..), _)| *c == counter) {
            let _ = writeln!(
                out,
                "{name}{{plugin=\"{}\",route=\"{}\"}} {n}",
                label(plugin),
                label(route)
            );
        }
    }
    out.push_str("# TYPE apisix_wasm_root_contexts gauge\n");
    let mut roots: Vec<_> = total.root_contexts.iter().collect();
    roots.sort();
    for (plugin, n) in roots {
        let _ = writeln!(
            out,
            "apisix_wasm_root_contexts{{plugin=\"{}\"}} {n}",
            label(plugin)
        );
    }
    out.push_str(&crate::health::prometheus_lines());
    out.push_str(&metrics_text("apisix_wasm_"));
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("x\"y\\z"), "x\\\"y\\\\z");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(3.0);
        h.observe(700.0);
        assert_eq!(h.buckets[0], 0); // le=1
        assert_eq!(h.buckets[2], 1); // le=5
        assert_eq!(h.buckets[9], 2); // le=1000
        assert_eq!(h.count, 2);
    }
}
