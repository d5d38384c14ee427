//! Plugin metrics (`proxy_define_metric` and friends): one process-wide
//! registry shared by every VM on every thread, each VM's way to the
//! values it records ([`VmMetrics`]), and their export as
//! [`metrics_snapshot`] and Prometheus text ([`metrics_text`]).
//!
//! Owns metric ids, the registry limits, which plugins defined each metric
//! and the export; each metric's values are a [`MetricCell`]. A metric is identified by `(kind,
//! name)`, so every VM (and every worker) defining the same name shares
//! one value, as Envoy's stats do. A metric lives as long as a plugin of
//! the configuration being served has defined it ([`set_serving_plugins`]):
//! the families of plugins a reload removed leave the scrape.
//!
//! Recording takes no lock (docs/architecture.md, Invariants: the request
//! path takes no contended lock). The registry (ids, names, definers, the
//! plugins served) is a `static Mutex`, taken when a plugin defines a
//! metric, when a VM first uses an id it did not define, at a reload and by
//! a scrape. Each metric's values are a [`MetricCell`] of atomics in an
//! `Arc` shared by the registry and every VM that used its id; a VM keeps
//! id -> cell in its [`VmMetrics`], so increment, record and get touch only
//! atomics. Dropping a metric marks its cell, so a VM that still holds the
//! id gets NOT_FOUND, as from the registry. Knows nothing about wasm or
//! HTTP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use super::ids::IdMap;
use super::metric_cell::{live, MetricCell, HISTOGRAM_BUCKETS};
use super::types::{MetricKind, Status};

/// Most metrics the process may define.
pub(crate) const MAX_METRICS: usize = 10_000;
/// Longest metric name accepted.
pub(crate) const MAX_METRIC_NAME: usize = 256;

/// Returned by [`VmMetrics::define`] when a metric cannot be defined: no
/// metric has this id, so later calls with it are NOT_FOUND.
pub(crate) const INVALID_METRIC_ID: u32 = 0;

/// Most ids one VM keeps a cell (or a NOT_FOUND) for: as many metrics as
/// the process may have. A VM that used more ids than that looks the
/// others up in the registry each time.
const MAX_VM_IDS: usize = MAX_METRICS;

/// One VM's way to the metrics it uses: id -> cell, filled when it defines
/// a metric or first uses an id (the registry's lock, once), so that
/// increment, record and get take no lock. Kept in the VM's host state.
#[derive(Default)]
pub(crate) struct VmMetrics {
    /// `None`: an id the registry had dropped when this VM first used it.
    /// Ids are never reused, so it stays NOT_FOUND. Keys are ids the
    /// registry handed out (see `with_cell`), hence an [`IdMap`].
    cells: IdMap<Option<Arc<MetricCell>>>,
}

impl VmMetrics {
    /// The stable id of metric `(kind, name)`, defined on first use by
    /// plugin `plugin`; ids start at 1. A name too long, or a full
    /// registry, gives [`INVALID_METRIC_ID`].
    pub(crate) fn define(&mut self, kind: MetricKind, name: &str, plugin: &str) -> u32 {
        let mut metrics = lock();
        let id = metrics.define(kind, name, plugin);
        LAST_ID.store(metrics.last_id, Ordering::Release);
        let cell = metrics.cell(id);
        drop(metrics);
        if cell.is_some() {
            self.keep(id, cell);
        }
        id
    }

    /// Counter/gauge: set to `value`. Histogram: record one sample.
    ///
    /// # Errors
    /// `NOT_FOUND` for an id no metric has.
    pub(crate) fn record(&mut self, id: u32, value: u64) -> Result<(), Status> {
        self.with_cell(id, |cell| {
            cell.record(value);
            Ok(())
        })
    }

    /// Adds `delta`.
    ///
    /// # Errors
    /// `NOT_FOUND` for an id no metric has; a counter may not go down and a
    /// histogram cannot be incremented: both `BAD_ARGUMENT` (spec).
    pub(crate) fn increment(&mut self, id: u32, delta: i64) -> Result<(), Status> {
        self.with_cell(id, |cell| cell.increment(delta))
    }

    /// The value of a counter or gauge (a gauge's negative value as its
    /// two's-complement `u64`).
    ///
    /// # Errors
    /// `NOT_FOUND` for an id no metric has; a histogram is `BAD_ARGUMENT`.
    pub(crate) fn get(&mut self, id: u32) -> Result<u64, Status> {
        self.with_cell(id, MetricCell::get)
    }

    /// `f` on the cell of metric `id`, or NOT_FOUND if the registry never
    /// had it or dropped it. Only the first use of an id this VM did not
    /// define takes the registry's lock.
    fn with_cell<T>(
        &mut self,
        id: u32,
        f: impl FnOnce(&MetricCell) -> Result<T, Status>,
    ) -> Result<T, Status> {
        if let Some(cell) = self.cells.get(&id) {
            return live(cell.as_deref()).and_then(f);
        }
        // Above the last id handed out: not defined yet (it may be later,
        // so not kept).
        if id == INVALID_METRIC_ID || id > LAST_ID.load(Ordering::Acquire) {
            return Err(Status::NotFound);
        }
        let cell = lock().cell(id);
        let result = live(cell.as_deref()).and_then(f);
        self.keep(id, cell);
        result
    }

    fn keep(&mut self, id: u32, cell: Option<Arc<MetricCell>>) {
        if self.cells.len() < MAX_VM_IDS {
            self.cells.insert(id, cell);
        }
    }
}

struct Metric {
    name: String,
    /// The plugins (`wasm.plugins[].name`) that defined it, in order.
    definers: Vec<Arc<str>>,
    /// Its kind and values.
    cell: Arc<MetricCell>,
}

#[derive(Default)]
struct Metrics {
    ids: HashMap<(MetricKind, String), u32>,
    /// By id, in definition order. Ids are never reused: an instance of a
    /// removed plugin that still holds one gets NOT_FOUND, never another
    /// plugin's metric.
    by_id: BTreeMap<u32, Metric>,
    last_id: u32,
    /// The plugins of the configuration being served; `None` until a
    /// server says (`tinygate test` shows every metric).
    serving: Option<HashSet<Arc<str>>>,
}

impl Metrics {
    /// Whether `m` is exported: some plugin being served defined it.
    fn visible(&self, m: &Metric) -> bool {
        self.serving
            .as_ref()
            .is_none_or(|serving| m.definers.iter().any(|d| serving.contains(d)))
    }

    /// See [`VmMetrics::define`].
    fn define(&mut self, kind: MetricKind, name: &str, plugin: &str) -> u32 {
        if let Some(&id) = self.ids.get(&(kind, name.to_owned())) {
            if let Some(m) = self.by_id.get_mut(&id) {
                if !m.definers.iter().any(|d| &**d == plugin) {
                    m.definers.push(plugin.into());
                }
            }
            return id;
        }
        if name.len() > MAX_METRIC_NAME || self.by_id.len() >= MAX_METRICS {
            return INVALID_METRIC_ID;
        }
        let Some(id) = self.last_id.checked_add(1) else {
            return INVALID_METRIC_ID;
        };
        self.last_id = id;
        self.by_id.insert(
            id,
            Metric {
                name: name.to_owned(),
                definers: vec![plugin.into()],
                cell: Arc::new(MetricCell::new(kind)),
            },
        );
        self.ids.insert((kind, name.to_owned()), id);
        id
    }

    /// The values of metric `id`, if the registry has it.
    fn cell(&self, id: u32) -> Option<Arc<MetricCell>> {
        self.by_id.get(&id).map(|m| Arc::clone(&m.cell))
    }

    /// See [`set_serving_plugins`].
    fn serve(&mut self, serving: HashSet<Arc<str>>) {
        let mut dropped = Vec::new();
        for (&id, m) in self.by_id.iter_mut() {
            m.definers.retain(|d| serving.contains(d));
            if m.definers.is_empty() {
                dropped.push((id, m.cell.kind, std::mem::take(&mut m.name)));
            }
        }
        for (id, kind, name) in dropped {
            if let Some(m) = self.by_id.remove(&id) {
                m.cell.drop_metric();
            }
            self.ids.remove(&(kind, name));
        }
        self.serving = Some(serving);
    }
    /// See [`metrics_text`].
    fn text(&self, prefix: &str, taken: &[&str]) -> String {
        let mut out = String::new();
        let mut used: HashSet<String> = taken.iter().map(|s| s.to_string()).collect();
        for (id, m) in self.by_id.iter().filter(|(_, m)| self.visible(m)) {
            let base = sanitize(&format!("{prefix}{}", m.name));
            let kind = kind_name(m.cell.kind);
            let name = (0u32..)
                .map(|n| match n {
                    0 => base.clone(),
                    1 => format!("{base}_{kind}"),
                    2 => format!("{base}_{kind}_{id}"),
                    n => format!("{base}_{kind}_{id}_{n}"),
                })
                .find(|n| sample_names(n, m.cell.kind).all(|s| !used.contains(&s)))
                .unwrap_or(base);
            used.extend(sample_names(&name, m.cell.kind));
            let serving = |d: &&Arc<str>| self.serving.as_ref().is_none_or(|s| s.contains(*d));
            let definers: Vec<&str> = m.definers.iter().filter(serving).map(|d| &**d).collect();
            let buckets = if m.cell.kind == MetricKind::Histogram {
                " (buckets: powers of ten)"
            } else {
                ""
            };
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {}",
                help_escape(&format!(
                    "Plugin {kind} {:?} of wasm plugin {} (proxy_define_metric); \
                     the unit is the plugin's{buckets}",
                    m.name,
                    definers.join(", ")
                ))
            );
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if m.cell.kind != MetricKind::Histogram {
                let _ = writeln!(out, "{name} {}", m.cell.value());
                continue;
            }
            let (buckets, count) = m.cell.histogram();
            let mut cumulative = 0u64;
            for (le, n) in HISTOGRAM_BUCKETS.iter().zip(buckets) {
                cumulative = cumulative.saturating_add(n);
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum {}", m.cell.value());
            let _ = writeln!(out, "{name}_count {count}");
        }
        out
    }
}

static METRICS: LazyLock<Mutex<Metrics>> = LazyLock::new(Mutex::default);

/// The last id [`METRICS`] handed out: a VM using a larger one gets
/// NOT_FOUND without taking the lock.
static LAST_ID: AtomicU32 = AtomicU32::new(0);

/// The plugins (`wasm.plugins[].name`) of the configuration now being
/// served. A metric that only other plugins defined is dropped: its family
/// leaves the scrape, and if a plugin defines it again it starts from zero.
/// A metric defined by a plugin that stays keeps its value, whoever else
/// defined it too. One defined later by a plugin not served (an instance
/// still finishing a request of the old configuration, a reload being
/// checked) is not exported.
pub fn set_serving_plugins<'a>(plugins: impl IntoIterator<Item = &'a str>) {
    lock().serve(plugins.into_iter().map(Arc::from).collect());
}

/// Every exported plugin metric: `(name, kind, value)`, in definition
/// order. A histogram's value is the sum of its recorded samples;
/// [`metrics_text`] has its count and buckets too.
pub fn metrics_snapshot() -> Vec<(String, MetricKind, i64)> {
    let metrics = lock();
    metrics
        .by_id
        .values()
        .filter(|m| metrics.visible(m))
        .map(|m| (m.name.clone(), m.cell.kind, m.cell.value()))
        .collect()
}

/// Every exported plugin metric in the Prometheus text exposition format
/// (0.0.4), named `<prefix><name>` with every character outside
/// `[a-zA-Z0-9_:]` replaced by `_` (and a leading `_` if the result would
/// start with a digit). Each metric gets `# HELP` (its plugin's name for
/// it, the plugins that defined it) and `# TYPE` lines; a histogram gets
/// cumulative `_bucket{le="..."}` lines for [`HISTOGRAM_BUCKETS`] and
/// `+Inf`, then `_sum` and `_count`.
///
/// `taken` are the sample names the caller exports itself. A metric whose
/// family or sample names would collide with one of those, or with another
/// metric's (same name after sanitizing, same name across kinds, a
/// histogram's `_bucket`/`_sum`/`_count`), gets `_<kind>`, then
/// `_<kind>_<id>`, appended, so every family and series is named once.
pub fn metrics_text(prefix: &str, taken: &[&str]) -> String {
    lock().text(prefix, taken)
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

/// The names a family's samples take: a histogram's `_bucket`, `_sum` and
/// `_count` series, and its own name (so no other family takes it).
fn sample_names(family: &str, kind: MetricKind) -> impl Iterator<Item = String> + '_ {
    let suffixes: &[&str] = match kind {
        MetricKind::Histogram => &["", "_bucket", "_sum", "_count"],
        MetricKind::Counter | MetricKind::Gauge => &[""],
    };
    suffixes.iter().map(move |s| format!("{family}{s}"))
}

/// `# HELP` text escaped as the text format wants: `\` and newlines.
fn help_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn lock() -> MutexGuard<'static, Metrics> {
    #[cfg(test)]
    LOCKS_TAKEN.with(|n| n.set(n.get() + 1));
    METRICS.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
thread_local! {
    /// How many times this thread took the registry's lock: tests prove
    /// with it that recording takes none.
    static LOCKS_TAKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times this thread took the registry's lock.
#[cfg(test)]
pub(crate) fn locks_taken() -> u64 {
    LOCKS_TAKEN.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The process-wide registry is shared by tests running in parallel:
    // tests of it use their own names; the others use a `Metrics` of their
    // own.

    // One call of a VM that has used no id yet, as the host calls each
    // function for a plugin.
    fn define_metric(kind: MetricKind, name: &str, plugin: &str) -> u32 {
        VmMetrics::default().define(kind, name, plugin)
    }
    fn record_metric(id: u32, value: u64) -> Result<(), Status> {
        VmMetrics::default().record(id, value)
    }
    fn increment_metric(id: u32, delta: i64) -> Result<(), Status> {
        VmMetrics::default().increment(id, delta)
    }
    fn get_metric(id: u32) -> Result<u64, Status> {
        VmMetrics::default().get(id)
    }

    /// The same calls on a registry of the test's own.
    impl Metrics {
        fn record(&self, id: u32, value: u64) -> Result<(), Status> {
            live(self.cell(id).as_deref())?.record(value);
            Ok(())
        }
        fn increment(&self, id: u32, delta: i64) -> Result<(), Status> {
            live(self.cell(id).as_deref())?.increment(delta)
        }
        fn get(&self, id: u32) -> Result<u64, Status> {
            live(self.cell(id).as_deref())?.get()
        }
    }

    #[test]
    fn metrics_define_increment_record_get() {
        let c = define_metric(MetricKind::Counter, "metrics_test_counter", "t");
        assert_ne!(c, INVALID_METRIC_ID);
        assert_eq!(
            define_metric(MetricKind::Counter, "metrics_test_counter", "t"),
            c,
            "stable id"
        );
        let g = define_metric(MetricKind::Gauge, "metrics_test_counter", "t");
        assert_ne!(g, c, "same name, other type: another metric");
        assert_eq!(increment_metric(c, 2), Ok(()));
        assert_eq!(increment_metric(c, 3), Ok(()));
        assert_eq!(increment_metric(c, -1), Err(Status::BadArgument));
        assert_eq!(get_metric(c), Ok(5));
        assert_eq!(increment_metric(g, -7), Ok(()));
        assert_eq!(get_metric(g), Ok(-7i64 as u64));
        assert_eq!(record_metric(g, 42), Ok(()));
        assert_eq!(get_metric(g), Ok(42));
        let h = define_metric(MetricKind::Histogram, "metrics_test_histogram", "t");
        assert_eq!(record_metric(h, 10), Ok(()));
        assert_eq!(record_metric(h, 5), Ok(()));
        assert_eq!(get_metric(h), Err(Status::BadArgument));
        assert_eq!(get_metric(INVALID_METRIC_ID), Err(Status::NotFound));
        assert_eq!(get_metric(u32::MAX), Err(Status::NotFound));
        assert_eq!(increment_metric(u32::MAX, 1), Err(Status::NotFound));
        let snapshot = metrics_snapshot();
        let find = |name: &str, kind| {
            snapshot
                .iter()
                .find(|m| m.0 == name && m.1 == kind)
                .map(|m| m.2)
        };
        assert_eq!(find("metrics_test_counter", MetricKind::Counter), Some(5));
        assert_eq!(find("metrics_test_counter", MetricKind::Gauge), Some(42));
        assert_eq!(
            find("metrics_test_histogram", MetricKind::Histogram),
            Some(15)
        );
        let long = "x".repeat(MAX_METRIC_NAME + 1);
        assert_eq!(
            define_metric(MetricKind::Counter, &long, "t"),
            INVALID_METRIC_ID
        );
    }

    /// The lines of `text` that belong to metric families starting with
    /// `name`.
    fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| {
                let l = l.strip_prefix("# TYPE ").unwrap_or(l);
                let l = l.strip_prefix("# HELP ").unwrap_or(l);
                l.starts_with(name)
            })
            .collect()
    }

    #[test]
    fn prometheus_text_sanitizes_names_and_exports_histograms() {
        let mut m = Metrics::default();
        let c = m.define(MetricKind::Counter, "text.test/requests-total", "p");
        m.increment(c, 3).unwrap();
        let g = m.define(MetricKind::Gauge, "text.test/requests-total", "p");
        m.increment(g, -2).unwrap();
        let h = m.define(MetricKind::Histogram, "text_test_latency", "p");
        for v in [0, 1, 5, 10, 250, 2_000_000_000] {
            m.record(h, v).unwrap();
        }
        let text = m.text("tg_", &[]);
        assert_eq!(
            family(&text, "tg_text_test_requests_total"),
            [
                "# HELP tg_text_test_requests_total Plugin counter \"text.test/requests-total\" \
                 of wasm plugin p (proxy_define_metric); the unit is the plugin's",
                "# TYPE tg_text_test_requests_total counter",
                "tg_text_test_requests_total 3",
                "# HELP tg_text_test_requests_total_gauge Plugin gauge \"text.test/requests-total\" \
                 of wasm plugin p (proxy_define_metric); the unit is the plugin's",
                "# TYPE tg_text_test_requests_total_gauge gauge",
                "tg_text_test_requests_total_gauge -2",
            ]
        );
        #[rustfmt::skip]
        assert_eq!(
            family(&text, "tg_text_test_latency"),
            [
                "# HELP tg_text_test_latency Plugin histogram \"text_test_latency\" of wasm plugin p \
                 (proxy_define_metric); the unit is the plugin's (buckets: powers of ten)",
                "# TYPE tg_text_test_latency histogram",
                // 0 and 1
                "tg_text_test_latency_bucket{le=\"1\"} 2",
                // 5 and 10
                "tg_text_test_latency_bucket{le=\"10\"} 4",
                "tg_text_test_latency_bucket{le=\"100\"} 4",
                // 250
                "tg_text_test_latency_bucket{le=\"1000\"} 5",
                "tg_text_test_latency_bucket{le=\"10000\"} 5",
                "tg_text_test_latency_bucket{le=\"100000\"} 5",
                "tg_text_test_latency_bucket{le=\"1000000\"} 5",
                "tg_text_test_latency_bucket{le=\"10000000\"} 5",
                "tg_text_test_latency_bucket{le=\"100000000\"} 5",
                "tg_text_test_latency_bucket{le=\"1000000000\"} 5",
                // 2e9 only in +Inf
                "tg_text_test_latency_bucket{le=\"+Inf\"} 6",
                "tg_text_test_latency_sum 2000000266",
                "tg_text_test_latency_count 6",
            ]
        );
        assert_eq!(sanitize("9lives"), "_9lives");
        assert_eq!(sanitize("a:b.c d"), "a:b_c_d");
        assert_eq!(sanitize(""), "_");
    }

    /// The family names in `text`, in order.
    fn families(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect()
    }

    #[test]
    fn no_series_is_named_twice() {
        let mut m = Metrics::default();
        // Taken by the caller (tinygate's own families).
        m.define(MetricKind::Counter, "plugin_failures_total", "p");
        // A histogram's series after a counter that took one of its names,
        // and a counter named like an earlier histogram's series.
        m.define(MetricKind::Counter, "lat_count", "p");
        m.define(MetricKind::Histogram, "lat", "p");
        m.define(MetricKind::Histogram, "size", "p");
        m.define(MetricKind::Gauge, "size_bucket", "p");
        let text = m.text("w_", &["w_plugin_failures_total"]);
        assert_eq!(
            families(&text),
            [
                "w_plugin_failures_total_counter",
                "w_lat_count",
                "w_lat_histogram",
                "w_size",
                "w_size_bucket_gauge",
            ]
        );
        // Help text is escaped: a backslash and a newline in a name.
        let mut m = Metrics::default();
        m.define(MetricKind::Counter, "a\\b\nc", "p");
        let text = m.text("w_", &[]);
        assert!(
            text.starts_with("# HELP w_a_b_c Plugin counter \"a\\\\\\\\b\\\\nc\""),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn metrics_of_plugins_no_longer_served_are_dropped() {
        let mut m = Metrics::default();
        let kept = m.define(MetricKind::Counter, "kept", "a");
        let shared = m.define(MetricKind::Counter, "shared", "a");
        assert_eq!(m.define(MetricKind::Counter, "shared", "b"), shared);
        let gone = m.define(MetricKind::Histogram, "gone", "b");
        for id in [kept, shared] {
            m.increment(id, 5).unwrap();
        }
        m.record(gone, 3).unwrap();
        // Before a server says what it serves, everything is exported.
        assert_eq!(families(&m.text("", &[])), ["kept", "shared", "gone"]);
        m.serve(["a".into(), "c".into()].into());
        assert_eq!(families(&m.text("", &[])), ["kept", "shared"]);
        assert!(m.text("", &[]).contains("kept 5\n"));
        assert!(m.text("", &[]).contains("shared 5\n"), "a defined it too");
        assert!(
            !m.text("", &[]).contains("plugin a, b"),
            "b no longer defines it"
        );
        assert_eq!(m.get(kept), Ok(5), "counters of plugins that stay go on");
        // An instance of b that still holds its id cannot reach the metric.
        assert_eq!(m.record(gone, 1), Err(Status::NotFound));
        // b defining it again (an old instance, or b back in a later
        // configuration) starts it anew, under a new id, not exported
        // while b is not served.
        let again = m.define(MetricKind::Histogram, "gone", "b");
        assert_ne!(again, gone);
        assert_eq!(families(&m.text("", &[])), ["kept", "shared"]);
        m.serve(["a".into(), "b".into()].into());
        assert!(m.text("", &[]).contains("gone_count 0\n"));
        // A metric only plugins that left defined goes, and its name is
        // free again.
        m.serve(["b".into()].into());
        assert_eq!(families(&m.text("", &[])), ["gone"]);
        assert_eq!(m.get(kept), Err(Status::NotFound));
        assert_eq!(m.by_id.len(), 1);
        assert_eq!(m.ids.len(), 1);
    }

    #[test]
    fn a_vm_records_without_taking_the_lock() {
        let mut vm = VmMetrics::default();
        let c = vm.define(MetricKind::Counter, "lock_free_counter", "t");
        let g = vm.define(MetricKind::Gauge, "lock_free_gauge", "t");
        let h = vm.define(MetricKind::Histogram, "lock_free_histogram", "t");
        let before = locks_taken();
        for _ in 0..3 {
            vm.increment(c, 2).unwrap();
            vm.record(g, 7).unwrap();
            vm.increment(g, -1).unwrap();
            vm.record(h, 5).unwrap();
        }
        assert_eq!(vm.get(c), Ok(6));
        assert_eq!(vm.get(g), Ok(6));
        assert_eq!(vm.increment(c, -1), Err(Status::BadArgument));
        assert_eq!(vm.increment(h, 1), Err(Status::BadArgument));
        assert_eq!(vm.get(h), Err(Status::BadArgument));
        // Ids above the last one handed out are not defined yet.
        assert_eq!(vm.get(u32::MAX), Err(Status::NotFound));
        assert_eq!(vm.increment(INVALID_METRIC_ID, 1), Err(Status::NotFound));
        assert_eq!(locks_taken(), before, "no lock after the definitions");
        // Another VM's first use of an id takes the lock once, then never.
        let mut other = VmMetrics::default();
        for _ in 0..3 {
            other.increment(c, 1).unwrap();
        }
        assert_eq!(locks_taken(), before + 1);
        assert_eq!(vm.get(c), Ok(9), "one value for every VM");
        let text = metrics_text("", &[]);
        assert!(text.contains("\nlock_free_counter 9\n"), "{text}");
        assert!(text.contains("\nlock_free_histogram_count 3\n"), "{text}");
        assert!(text.contains("\nlock_free_histogram_sum 15\n"), "{text}");
    }

    #[test]
    fn a_dropped_metric_is_not_found_through_a_vm_that_holds_it() {
        let mut m = Metrics::default();
        let gone = m.define(MetricKind::Counter, "gone", "b");
        let kept = m.define(MetricKind::Gauge, "kept", "a");
        // As if this VM had defined both (in a registry of its own).
        let mut vm = VmMetrics::default();
        vm.keep(gone, m.cell(gone));
        vm.keep(kept, m.cell(kept));
        assert_eq!(vm.increment(gone, 1), Ok(()));
        m.serve(["a".into()].into());
        assert_eq!(vm.increment(gone, 1), Err(Status::NotFound));
        assert_eq!(vm.record(gone, 1), Err(Status::NotFound));
        assert_eq!(vm.get(gone), Err(Status::NotFound));
        assert_eq!(vm.increment(kept, 4), Ok(()));
        assert_eq!(m.get(kept), Ok(4));
        // Defined again: a new id and a new cell, from zero.
        let again = m.define(MetricKind::Counter, "gone", "b");
        assert_ne!(again, gone);
        assert_eq!(m.get(again), Ok(0));
    }
}
