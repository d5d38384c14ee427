//! The process's metrics in APISIX's names (so existing dashboards work):
//! each worker's counters, and their sum in Prometheus text for a scrape.
//!
//! Each worker counts into its own `Stats` (a mutex only the worker and a
//! scrape ever take, so it is never contended on the request path); a
//! scrape sums every worker's stats and adds the plugins' own metrics.
//! Nearly a leaf: it knows finished requests (`Record`), plugin names and
//! the plugins' metric registry (`wasm/`), not how requests are served or
//! how the text is fetched (`status.rs`), so anything may count into it.
//!
//! Built to stay cheap with 10,000 routes: every route id gets a slot
//! number process-wide the first time a worker sees it, so a scrape adds
//! the workers' counters up by index, holding each worker's mutex only for
//! that sum (no strings hashed, cloned or sorted under it), and writes the
//! text after letting go. Counting a request touches one histogram bucket
//! per latency, not every bucket above it.

use super::access_log::Record;
use super::families::{self, Family};
use crate::http::push_decimal;
use crate::order;
use crate::wasm::metrics_text;
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// APISIX's latency buckets, in milliseconds.
const BUCKETS_MS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// One worker's counters.
#[derive(Default)]
pub struct Stats {
    requests: u64,
    /// Route id → index into `routes` (looked up without allocating).
    route_index: HashMap<Box<str>, usize>,
    /// Each route this worker served: its process-wide slot and counters.
    routes: Vec<(usize, RouteStats)>,
    /// Plugin counters, each by plugin and route; see [`PluginCounter`].
    /// Failures are rare, so these stay keyed by name.
    plugins: HashMap<PluginSeries, u64>,
    /// Plugin name → root contexts alive in this worker's instances (a
    /// gauge).
    root_contexts: HashMap<String, usize>,
}

/// One series of a plugin counter: (counter, plugin, route, fault kind;
/// the kind is empty for counters without that label).
type PluginSeries = (PluginCounter, String, String, &'static str);

/// What a plugin counter counts, each by plugin and route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PluginCounter {
    /// Failures charged to the route's root context: instances discarded
    /// after a trap, fuel or memory exhaustion or an exit, failed starts,
    /// rejected configurations; also by fault kind (label `kind`).
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
    const ALL: [(PluginCounter, &'static Family); 5] = [
        (PluginCounter::Failures, &families::PLUGIN_FAILURES),
        (PluginCounter::Restarts, &families::VM_RESTARTS),
        (
            PluginCounter::BackoffRefusals,
            &families::VM_BACKOFF_REFUSALS,
        ),
        (PluginCounter::FailOpen, &families::PLUGIN_FAIL_OPEN),
        (
            PluginCounter::Collateral,
            &families::PLUGIN_COLLATERAL_FAILURES,
        ),
    ];
}

/// One route's counters (in one worker, or summed for a scrape).
#[derive(Default, Clone)]
struct RouteStats {
    /// (status, count), in order of first appearance.
    status: Vec<(u16, u64)>,
    request: Histogram,
    upstream: Histogram,
}

#[derive(Default, Clone)]
struct Histogram {
    /// Observations per bucket, not cumulative: the exposition sums them.
    buckets: [u64; BUCKETS_MS.len()],
    count: u64,
    sum_ms: f64,
}

impl Histogram {
    fn observe(&mut self, ms: f64) {
        // The first bucket whose bound is at least `ms`; none above 60 s,
        // where only `+Inf` (the count) holds it.
        let i = BUCKETS_MS.partition_point(|le| *le < ms);
        if let Some(bucket) = self.buckets.get_mut(i) {
            *bucket += 1;
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

impl RouteStats {
    fn add(&mut self, other: &RouteStats) {
        for &(code, n) in &other.status {
            match self.status.iter_mut().find(|(s, _)| *s == code) {
                Some((_, total)) => *total += n,
                None => self.status.push((code, n)),
            }
        }
        self.request.add(&other.request);
        self.upstream.add(&other.upstream);
    }
}

impl Stats {
    /// Counts one finished request.
    pub fn observe(&mut self, record: &Record) {
        self.requests += 1;
        let index = match self.route_index.get(record.route_id.as_str()) {
            Some(&i) => i,
            None => {
                let slot = route_slot(&record.route_id);
                self.routes.push((slot, RouteStats::default()));
                self.route_index
                    .insert(record.route_id.as_str().into(), self.routes.len() - 1);
                self.routes.len() - 1
            }
        };
        let route = &mut self.routes[index].1;
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
    pub fn plugin_failed(&mut self, plugin: &str, route: &str, kind: &'static str) {
        let series = (
            PluginCounter::Failures,
            plugin.to_string(),
            route.to_string(),
            kind,
        );
        *self.plugins.entry(series).or_default() += 1;
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
            .entry((counter, plugin.to_string(), route.to_string(), ""))
            .or_default() += 1;
    }

    /// Adds this worker's counters into a scrape's totals: indexes and
    /// integers only, as the worker waits for its mutex meanwhile.
    fn add_to(&self, totals: &mut Totals) {
        totals.requests += self.requests;
        for (slot, route) in &self.routes {
            if totals.routes.len() <= *slot {
                totals.routes.resize_with(slot + 1, RouteStats::default);
            }
            totals.routes[*slot].add(route);
        }
        // Only (counter, plugin, route) triples that failed at least once.
        for (k, v) in &self.plugins {
            *totals.plugins.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &self.root_contexts {
            *totals.root_contexts.entry(k.clone()).or_default() += v;
        }
    }
}

/// Every worker's counters summed, by route slot.
#[derive(Default)]
struct Totals {
    requests: u64,
    routes: Vec<RouteStats>,
    plugins: HashMap<PluginSeries, u64>,
    root_contexts: HashMap<String, usize>,
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

/// Route ids any worker has counted, each with a slot for life. Ids are
/// never forgotten, as APISIX's exporter keeps the series of a deleted
/// route until restart: a route that comes back keeps counting on.
#[derive(Default)]
struct RouteIds {
    slots: HashMap<Box<str>, usize>,
    /// Slot → the id escaped as a label value.
    labels: Vec<Arc<str>>,
}

static ROUTE_IDS: LazyLock<Mutex<RouteIds>> = LazyLock::new(Mutex::default);

/// The slot of `id`, given on first sight. A worker asks once per route.
fn route_slot(id: &str) -> usize {
    let mut ids = ROUTE_IDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&slot) = ids.slots.get(id) {
        return slot;
    }
    let slot = ids.labels.len();
    ids.labels.push(label(id).into());
    ids.slots.insert(id.into(), slot);
    slot
}

/// Every worker's counters summed, ready to be written in Prometheus text
/// exposition format a piece at a time: with 10,000 active routes the text
/// is 25 MB, which is never held whole.
pub fn exposition() -> Exposition {
    let workers: Vec<Arc<Mutex<Stats>>> = ALL.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut totals = Totals::default();
    let started = Instant::now();
    // The longest a worker waited for its own counters because of us.
    let mut longest_hold = Duration::ZERO;
    for stats in &workers {
        let stats = stats.lock().unwrap_or_else(|e| e.into_inner());
        let held = Instant::now();
        stats.add_to(&mut totals);
        drop(stats);
        longest_hold = longest_hold.max(held.elapsed());
    }
    // Read after the sums: every slot a worker counted into is named.
    let labels = ROUTE_IDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .labels
        .clone();
    let label_of = |slot: usize| labels.get(slot).map_or("", |l| &**l);
    // Sorted by status, then route id; histograms by route id.
    let mut status: Vec<(u16, usize, u64)> = Vec::new();
    for (slot, route) in totals.routes.iter().enumerate() {
        status.extend(route.status.iter().map(|&(c, n)| (c, slot, n)));
    }
    order::sort_by(&mut status, |a, b| {
        (a.0, label_of(a.1)).cmp(&(b.0, label_of(b.1)))
    });
    let by_label = order::order_by(totals.routes.len(), &|a, b| label_of(a).cmp(label_of(b)));
    log::debug!(
        "scrape: {} routes summed in {:?}; a worker's counters were held at most {:?}",
        labels.len(),
        started.elapsed(),
        longest_hold
    );
    Exposition {
        totals,
        labels,
        status,
        by_label,
        next: Part::Head,
        started,
        written: 0,
    }
}

/// The exposition's text, in pieces of about [`PIECE`] bytes.
pub struct Exposition {
    totals: Totals,
    /// Slot → route id as a label value.
    labels: Vec<Arc<str>>,
    /// (status, slot, count) in exposition order.
    status: Vec<(u16, usize, u64)>,
    /// Slots in exposition order.
    by_label: Vec<usize>,
    next: Part,
    started: Instant,
    written: usize,
}

/// Where the exposition goes on.
#[derive(Clone, Copy)]
enum Part {
    Head,
    /// The next status series.
    Status(usize),
    /// The next route's histogram of kind 0 (`request`) or 1 (`upstream`).
    Latency(usize, usize),
    /// Plugin counters, node health, plugins' own metrics.
    Tail,
    Done,
}

/// The size of the pieces a scrape is written in.
const PIECE: usize = 64 * 1024;

impl Iterator for Exposition {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(PIECE + 4096);
        while out.len() < PIECE {
            self.next = match self.next {
                Part::Head => {
                    families::HTTP_REQUESTS.write_header(&mut out);
                    out.extend_from_slice(b"apisix_http_requests_total ");
                    push_decimal(&mut out, self.totals.requests);
                    out.push(b'\n');
                    families::HTTP_STATUS.write_header(&mut out);
                    Part::Status(0)
                }
                Part::Status(i) => self.write_status(&mut out, i),
                Part::Latency(kind, i) => self.write_latency(&mut out, kind, i),
                Part::Tail => {
                    write_plugin_counters(&mut out, &self.totals);
                    out.extend_from_slice(crate::health::prometheus_lines().as_bytes());
                    let taken = families::sample_names();
                    let taken: Vec<&str> = taken.iter().map(String::as_str).collect();
                    out.extend_from_slice(metrics_text("apisix_wasm_", &taken).as_bytes());
                    Part::Done
                }
                Part::Done => break,
            };
        }
        self.written += out.len();
        if matches!(self.next, Part::Done) && !out.is_empty() {
            log::debug!(
                "scrape: {} bytes written in {:?}",
                self.written,
                self.started.elapsed()
            );
        }
        (!out.is_empty()).then_some(out)
    }
}

impl Exposition {
    fn label(&self, slot: usize) -> &str {
        self.labels.get(slot).map_or("", |l| &**l)
    }

    /// Status series `i`, or the latency header after the last.
    fn write_status(&self, out: &mut Vec<u8>, i: usize) -> Part {
        let Some(&(code, slot, n)) = self.status.get(i) else {
            families::HTTP_LATENCY.write_header(out);
            return Part::Latency(0, 0);
        };
        out.extend_from_slice(b"apisix_http_status{code=\"");
        push_decimal(out, code.into());
        out.extend_from_slice(b"\",route=\"");
        out.extend_from_slice(self.label(slot).as_bytes());
        out.extend_from_slice(b"\"} ");
        push_decimal(out, n);
        out.push(b'\n');
        Part::Status(i + 1)
    }

    /// The histogram of kind `kind` of the `i`-th route, if it has one.
    fn write_latency(&self, out: &mut Vec<u8>, kind: usize, i: usize) -> Part {
        let Some(&slot) = self.by_label.get(i) else {
            return if kind == 0 {
                Part::Latency(1, 0)
            } else {
                Part::Tail
            };
        };
        let route = &self.totals.routes[slot];
        let (name, h) = if kind == 0 {
            ("request", &route.request)
        } else {
            ("upstream", &route.upstream)
        };
        if h.count > 0 {
            write_histogram(out, name, self.label(slot), h);
        }
        Part::Latency(kind, i + 1)
    }
}

/// One latency histogram: cumulative buckets, `+Inf`, sum and count.
fn write_histogram(out: &mut Vec<u8>, kind: &str, route: &str, h: &Histogram) {
    // Its series share everything up to the route id; written once here
    // and copied, as a scrape writes hundreds of thousands of these lines.
    let mut series = Vec::with_capacity(route.len() + 64);
    series.extend_from_slice(b"{type=\"");
    series.extend_from_slice(kind.as_bytes());
    series.extend_from_slice(b"\",route=\"");
    series.extend_from_slice(route.as_bytes());
    let mut cumulative = 0;
    for (le, n) in BUCKET_LABELS.iter().zip(h.buckets) {
        cumulative += n;
        out.extend_from_slice(b"apisix_http_latency_bucket");
        out.extend_from_slice(&series);
        out.extend_from_slice(le.as_bytes());
        push_decimal(out, cumulative);
        out.push(b'\n');
    }
    out.extend_from_slice(b"apisix_http_latency_bucket");
    out.extend_from_slice(&series);
    out.extend_from_slice(b"\",le=\"+Inf\"} ");
    push_decimal(out, h.count);
    out.extend_from_slice(b"\napisix_http_latency_sum");
    out.extend_from_slice(&series);
    let _ = writeln!(out, "\"}} {}", h.sum_ms);
    out.extend_from_slice(b"apisix_http_latency_count");
    out.extend_from_slice(&series);
    out.extend_from_slice(b"\"} ");
    push_decimal(out, h.count);
    out.push(b'\n');
}

/// [`BUCKETS_MS`] as the end of a bucket's labels.
const BUCKET_LABELS: [&str; BUCKETS_MS.len()] = [
    "\",le=\"1\"} ",
    "\",le=\"2\"} ",
    "\",le=\"5\"} ",
    "\",le=\"10\"} ",
    "\",le=\"20\"} ",
    "\",le=\"50\"} ",
    "\",le=\"100\"} ",
    "\",le=\"200\"} ",
    "\",le=\"500\"} ",
    "\",le=\"1000\"} ",
    "\",le=\"2000\"} ",
    "\",le=\"5000\"} ",
    "\",le=\"10000\"} ",
    "\",le=\"30000\"} ",
    "\",le=\"60000\"} ",
];

/// The plugin counters, by plugin and route, and the root contexts gauge,
/// by plugin.
fn write_plugin_counters(out: &mut Vec<u8>, totals: &Totals) {
    let mut counts: Vec<_> = totals.plugins.iter().collect();
    order::sort_by(&mut counts, Ord::cmp);
    for (counter, family) in PluginCounter::ALL {
        family.write_header(out);
        let name = family.name;
        for ((_, plugin, route, kind), n) in counts.iter().filter(|((c, ..), _)| *c == counter) {
            let kind = if kind.is_empty() {
                String::new()
            } else {
                format!(",kind=\"{kind}\"")
            };
            let _ = writeln!(
                out,
                "{name}{{plugin=\"{}\",route=\"{}\"{kind}}} {n}",
                label(plugin),
                label(route)
            );
        }
    }
    families::ROOT_CONTEXTS.write_header(out);
    let mut roots: Vec<_> = totals.root_contexts.iter().collect();
    order::sort_by(&mut roots, Ord::cmp);
    for (plugin, n) in roots {
        let _ = writeln!(
            out,
            "apisix_wasm_root_contexts{{plugin=\"{}\"}} {n}",
            label(plugin)
        );
    }
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
    fn bucket_labels_are_the_bounds() {
        for (text, le) in BUCKET_LABELS.iter().zip(BUCKETS_MS) {
            assert_eq!(*text, format!("\",le=\"{le}\"}} "));
        }
    }

    #[test]
    fn histogram_buckets_are_written_cumulative() {
        let mut h = Histogram::default();
        h.observe(3.0);
        h.observe(5.0);
        h.observe(700.0);
        h.observe(90_000.0);
        let mut out = Vec::new();
        write_histogram(&mut out, "request", "r", &h);
        let text = String::from_utf8(out).unwrap();
        let bucket = |le: &str| {
            let series =
                format!("apisix_http_latency_bucket{{type=\"request\",route=\"r\",le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&series)).unwrap();
            line[series.len()..].parse::<u64>().unwrap()
        };
        assert_eq!(bucket("2"), 0);
        assert_eq!(bucket("5"), 2, "5 ms is within le=5");
        assert_eq!(bucket("500"), 2);
        assert_eq!(bucket("1000"), 3);
        assert_eq!(bucket("60000"), 3);
        assert_eq!(bucket("+Inf"), 4);
        assert!(text.contains("apisix_http_latency_sum{type=\"request\",route=\"r\"} 90708\n"));
        assert!(text.contains("apisix_http_latency_count{type=\"request\",route=\"r\"} 4\n"));
    }

    #[test]
    fn a_large_exposition_comes_in_pieces_with_every_series_once() {
        let stats = register();
        for i in 0..3000 {
            stats.lock().unwrap().observe(&Record {
                route_id: format!("pieces-test-{i}"),
                status: 200,
                started: Some(std::time::Instant::now()),
                ..Record::default()
            });
        }
        let pieces: Vec<Vec<u8>> = exposition().collect();
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        for piece in &pieces {
            // A piece ends after the line that crossed PIECE.
            assert!(piece.len() < PIECE + 4096, "{}", piece.len());
            assert_eq!(piece.last(), Some(&b'\n'));
        }
        let text = String::from_utf8(pieces.concat()).unwrap();
        for i in 0..3000 {
            let status =
                format!("apisix_http_status{{code=\"200\",route=\"pieces-test-{i}\"}} 1\n");
            assert_eq!(text.matches(&status).count(), 1, "{status}");
            let count = format!(
                "apisix_http_latency_count{{type=\"request\",route=\"pieces-test-{i}\"}} 1\n"
            );
            assert_eq!(text.matches(&count).count(), 1, "{count}");
        }
        assert!(text.contains("# TYPE apisix_wasm_plugin_failures_total counter\n"));
    }

    #[test]
    fn workers_counts_add_up_by_route_id() {
        let record = |route: &str, status: u16| Record {
            route_id: route.into(),
            status,
            upstream_time: Some(std::time::Duration::from_millis(3)),
            ..Record::default()
        };
        let (mut a, mut b) = (Stats::default(), Stats::default());
        a.observe(&record("metrics-test-x", 200));
        a.observe(&record("metrics-test-y", 404));
        b.observe(&record("metrics-test-y", 404));
        b.observe(&record("metrics-test-x", 502));
        let mut totals = Totals::default();
        a.add_to(&mut totals);
        b.add_to(&mut totals);
        let x = &totals.routes[route_slot("metrics-test-x")];
        let y = &totals.routes[route_slot("metrics-test-y")];
        assert_eq!(x.status, [(200, 1), (502, 1)]);
        assert_eq!(y.status, [(404, 2)]);
        assert_eq!((x.upstream.count, x.upstream.buckets[2]), (2, 2));
        assert_eq!(totals.requests, 4);
    }
}
