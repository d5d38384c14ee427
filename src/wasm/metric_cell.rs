//! One plugin metric's values ([`MetricCell`]): atomics shared by the
//! registry in `metrics.rs` and every VM that uses the metric's id, so that
//! recording waits for no lock; and what each kind accepts (a counter only
//! goes up, a histogram is only recorded, as proxy-wasm and Envoy define
//! them). Knows nothing of ids, names or plugins.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::types::{MetricKind, Status};

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

/// One metric's values, shared by the registry and every VM that used its
/// id. Atomics, so that a plugin recording on one worker never waits for
/// another worker or a scrape.
pub(crate) struct MetricCell {
    pub(crate) kind: MetricKind,
    /// Counter and gauge: the value. Histogram: the sum of the samples.
    value: AtomicI64,
    /// Histogram: the number of samples.
    count: AtomicU64,
    /// Histogram: samples per bucket of [`HISTOGRAM_BUCKETS`] (not
    /// cumulative).
    buckets: [AtomicU64; HISTOGRAM_BUCKETS.len()],
    /// Set, under the registry's lock, when the registry drops the metric:
    /// its id is NOT_FOUND from then on, also for VMs that hold the cell.
    dropped: AtomicBool,
}

impl MetricCell {
    pub(crate) fn new(kind: MetricKind) -> MetricCell {
        MetricCell {
            kind,
            value: AtomicI64::new(0),
            count: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            dropped: AtomicBool::new(false),
        }
    }

    /// Counter/gauge: set to `value`. Histogram: record one sample.
    pub(crate) fn record(&self, value: u64) {
        let signed = i64::try_from(value).unwrap_or(i64::MAX);
        match self.kind {
            MetricKind::Counter | MetricKind::Gauge => self.value.store(signed, Ordering::Relaxed),
            MetricKind::Histogram => {
                saturating_add(&self.value, signed);
                // The count first, then the bucket with `Release`: a scrape
                // that sees the bucket's sample (`Acquire`) then sees it
                // counted, so no bucket line exceeds `+Inf` (see
                // `histogram`). 2^64 samples cannot happen: plain adds.
                self.count.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = HISTOGRAM_BUCKETS.iter().position(|&le| value <= le) {
                    self.buckets[i].fetch_add(1, Ordering::Release);
                }
            }
        }
    }

    /// Adds `delta`.
    ///
    /// # Errors
    /// A counter may not go down and a histogram cannot be incremented:
    /// both `BAD_ARGUMENT` (spec).
    pub(crate) fn increment(&self, delta: i64) -> Result<(), Status> {
        match self.kind {
            MetricKind::Counter if delta < 0 => Err(Status::BadArgument),
            MetricKind::Histogram => Err(Status::BadArgument),
            MetricKind::Counter | MetricKind::Gauge => {
                saturating_add(&self.value, delta);
                Ok(())
            }
        }
    }

    /// The value of a counter or gauge (a gauge's negative value as its
    /// two's-complement `u64`).
    ///
    /// # Errors
    /// A histogram is `BAD_ARGUMENT`.
    pub(crate) fn get(&self) -> Result<u64, Status> {
        match self.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            MetricKind::Counter | MetricKind::Gauge => Ok(self.value() as u64),
        }
    }

    /// Counter and gauge: the value. Histogram: the sum of the samples.
    pub(crate) fn value(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Histogram: the samples per bucket, then the number of samples, read
    /// in that order so that the count covers every sample the buckets
    /// show (see `record`).
    pub(crate) fn histogram(&self) -> ([u64; HISTOGRAM_BUCKETS.len()], u64) {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Acquire));
        (buckets, self.count.load(Ordering::Relaxed))
    }

    /// Marks the metric dropped by the registry (under its lock): its id is
    /// NOT_FOUND from then on ([`live`]).
    pub(crate) fn drop_metric(&self) {
        self.dropped.store(true, Ordering::Release);
    }
}

/// Adds `delta` to `value`, stopping at `i64::MIN` and `i64::MAX`.
fn saturating_add(value: &AtomicI64, delta: i64) {
    // The closure always returns `Some`, so this cannot fail.
    let _ = value.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_add(delta))
    });
}

/// The cell of a metric the registry has not dropped.
pub(crate) fn live(cell: Option<&MetricCell>) -> Result<&MetricCell, Status> {
    cell.filter(|c| !c.dropped.load(Ordering::Acquire))
        .ok_or(Status::NotFound)
}
