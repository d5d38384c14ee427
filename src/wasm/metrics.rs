//! Plugin metrics (`proxy_define_metric` and friends): one process-wide
//! registry shared by every VM on every thread, and its export as
//! [`metrics_snapshot`] and Prometheus text ([`metrics_text`]).
//!
//! Owns metric ids, values, the histogram buckets and the registry limits.
//! The registry is a `static Mutex` held only to update or copy values. A
//! metric is identified by `(kind, name)`, so every VM (and every worker)
//! defining the same name shares one value, as Envoy's stats do. Knows
//! nothing about wasm or HTTP.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use super::types::{MetricKind, Status};

/// Most metrics the process may define.
pub(crate) const MAX_METRICS: usize = 10_000;
/// Longest metric name accepted.
pub(crate) const MAX_METRIC_NAME: usize = 256;

/// Returned by `define_metric` when a metric cannot be defined: no metric
/// has this id, so later calls with it are NOT_FOUND.
pub(crate) const INVALID_METRIC_ID: u32 = 0;

/// Upper bounds (`le`) of the histogram buckets: powers of ten, which cover
/// whatever unit a plugin records (bytes, microseconds, counts) with ten
/// cheap counters. A sample above the last lands only in `+Inf`.
pub(crate) const HISTOGRAM_BUCKETS: [u64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

struct Metric {
    name: String,
    kind: MetricKind,
    /// Counter and gauge: the value. Histogram: the sum of the samples.
    value: i64,
    /// Histogram: the number of samples.
    count: u64,
    /// Histogram: samples per bucket of [`HISTOGRAM_BUCKETS`] (not
    /// cumulative).
    buckets: [u64; HISTOGRAM_BUCKETS.len()],
}

#[derive(Default)]
struct Metrics {
    ids: HashMap<(MetricKind, String), u32>,
    list: Vec<Metric>,
}

static METRICS: LazyLock<Mutex<Metrics>> = LazyLock::new(Mutex::default);

/// The stable id of metric `(kind, name)`, defined on first use; ids start
/// at 1. A name too long, or a full registry, gives [`INVALID_METRIC_ID`].
pub(crate) fn define_metric(kind: MetricKind, name: &str) -> u32 {
    let mut metrics = lock();
    if let Some(&id) = metrics.ids.get(&(kind, name.to_owned())) {
        return id;
    }
    if name.len() > MAX_METRIC_NAME || metrics.list.len() >= MAX_METRICS {
        return INVALID_METRIC_ID;
    }
    metrics.list.push(Metric {
        name: name.to_owned(),
        kind,
        value: 0,
        count: 0,
        buckets: [0; HISTOGRAM_BUCKETS.len()],
    });
    let id = u32::try_from(metrics.list.len()).unwrap_or(INVALID_METRIC_ID);
    metrics.ids.insert((kind, name.to_owned()), id);
    id
}

/// Counter/gauge: set to `value`. Histogram: record one sample.
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    let mut metrics = lock();
    let metric = metric_mut(&mut metrics, id)?;
    let signed = i64::try_from(value).unwrap_or(i64::MAX);
    match metric.kind {
        MetricKind::Counter | MetricKind::Gauge => metric.value = signed,
        MetricKind::Histogram => {
            metric.value = metric.value.saturating_add(signed);
            metric.count = metric.count.saturating_add(1);
            if let Some(i) = HISTOGRAM_BUCKETS.iter().position(|&le| value <= le) {
                metric.buckets[i] = metric.buckets[i].saturating_add(1);
            }
        }
    }
    Ok(())
}

/// Adds `delta`. A counter may not go down and a histogram cannot be
/// incremented: both `BAD_ARGUMENT` (spec).
pub(crate) fn increment_metric(id: u32, delta: i64) -> Result<(), Status> {
    let mut metrics = lock();
    let metric = metric_mut(&mut metrics, id)?;
    match metric.kind {
        MetricKind::Counter if delta < 0 => Err(Status::BadArgument),
        MetricKind::Histogram => Err(Status::BadArgument),
        MetricKind::Counter | MetricKind::Gauge => {
            metric.value = metric.value.saturating_add(delta);
            Ok(())
        }
    }
}

/// The value of a counter or gauge (a gauge's negative value as its
/// two's-complement `u64`); a histogram is `BAD_ARGUMENT`.
pub(crate) fn get_metric(id: u32) -> Result<u64, Status> {
    let mut metrics = lock();
    let metric = metric_mut(&mut metrics, id)?;
    match metric.kind {
        MetricKind::Histogram => Err(Status::BadArgument),
        MetricKind::Counter | MetricKind::Gauge => Ok(metric.value as u64),
    }
}

/// Every plugin metric: `(name, kind, value)`, in definition order. A
/// histogram's value is the sum of its recorded samples; [`metrics_text`]
/// has its count and buckets too.
pub fn metrics_snapshot() -> Vec<(String, MetricKind, i64)> {
    lock()
        .list
        .iter()
        .map(|m| (m.name.clone(), m.kind, m.value))
        .collect()
}

/// Every plugin metric in the Prometheus text exposition format (0.0.4),
/// named `<prefix><name>` with every character outside `[a-zA-Z0-9_:]`
/// replaced by `_` (and a leading `_` if the result would start with a
/// digit). Each metric gets a `# TYPE` line; a histogram gets cumulative
/// `_bucket{le="..."}` lines for [`HISTOGRAM_BUCKETS`] and `+Inf`, then
/// `_sum` and `_count`. Two metrics whose names collide after sanitizing
/// (or that share a name across kinds) get `_<kind>`, then `_<id>`,
/// appended, so every family is named once.
#[allow(dead_code)] // for the proxy's metrics endpoint
pub fn metrics_text(prefix: &str) -> String {
    let metrics = lock();
    let mut out = String::new();
    let mut used = HashSet::new();
    for (index, m) in metrics.list.iter().enumerate() {
        let base = sanitize(&format!("{prefix}{}", m.name));
        let kind = match m.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        let name = [
            base.clone(),
            format!("{base}_{kind}"),
            format!("{base}_{kind}_{}", index + 1),
        ]
        .into_iter()
        .find(|n| !used.contains(n))
        .unwrap_or_else(|| format!("{base}_{kind}_{}_{}", index + 1, used.len()));
        used.insert(name.clone());
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if m.kind != MetricKind::Histogram {
            let _ = writeln!(out, "{name} {}", m.value);
            continue;
        }
        let mut cumulative = 0u64;
        for (le, n) in HISTOGRAM_BUCKETS.iter().zip(m.buckets) {
            cumulative = cumulative.saturating_add(n);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.count);
        let _ = writeln!(out, "{name}_sum {}", m.value);
        let _ = writeln!(out, "{name}_count {}", m.count);
    }
    out
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

fn metric_mut(metrics: &mut Metrics, id: u32) -> Result<&mut Metric, Status> {
    let index = (id as usize).checked_sub(1).ok_or(Status::NotFound)?;
    metrics.list.get_mut(index).ok_or(Status::NotFound)
}

fn lock() -> MutexGuard<'static, Metrics> {
    METRICS.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The registry is process-wide and tests run in parallel: every test
    // uses its own names.

    #[test]
    fn metrics_define_increment_record_get() {
        let c = define_metric(MetricKind::Counter, "metrics_test_counter");
        assert_ne!(c, INVALID_METRIC_ID);
        assert_eq!(
            define_metric(MetricKind::Counter, "metrics_test_counter"),
            c,
            "stable id"
        );
        let g = define_metric(MetricKind::Gauge, "metrics_test_counter");
        assert_ne!(g, c, "same name, other type: another metric");
        assert_eq!(increment_metric(c, 2), Ok(()));
        assert_eq!(increment_metric(c, 3), Ok(()));
        assert_eq!(increment_metric(c, -1), Err(Status::BadArgument));
        assert_eq!(get_metric(c), Ok(5));
        assert_eq!(increment_metric(g, -7), Ok(()));
        assert_eq!(get_metric(g), Ok(-7i64 as u64));
        assert_eq!(record_metric(g, 42), Ok(()));
        assert_eq!(get_metric(g), Ok(42));
        let h = define_metric(MetricKind::Histogram, "metrics_test_histogram");
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
        assert_eq!(define_metric(MetricKind::Counter, &long), INVALID_METRIC_ID);
    }

    /// The lines of `text` that belong to metric families starting with
    /// `name`.
    fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| {
                let l = l.strip_prefix("# TYPE ").unwrap_or(l);
                l.starts_with(name)
            })
            .collect()
    }

    #[test]
    fn prometheus_text_sanitizes_names_and_exports_histograms() {
        let c = define_metric(MetricKind::Counter, "text.test/requests-total");
        increment_metric(c, 3).unwrap();
        let g = define_metric(MetricKind::Gauge, "text.test/requests-total");
        increment_metric(g, -2).unwrap();
        let h = define_metric(MetricKind::Histogram, "text_test_latency");
        for v in [0, 1, 5, 10, 250, 2_000_000_000] {
            record_metric(h, v).unwrap();
        }
        let text = metrics_text("tg_");
        assert_eq!(
            family(&text, "tg_text_test_requests_total"),
            [
                "# TYPE tg_text_test_requests_total counter",
                "tg_text_test_requests_total 3",
                "# TYPE tg_text_test_requests_total_gauge gauge",
                "tg_text_test_requests_total_gauge -2",
            ]
        );
        #[rustfmt::skip]
        assert_eq!(
            family(&text, "tg_text_test_latency"),
            [
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
}
