//! Process-wide state shared by every plugin VM on every worker thread:
//! the shared key-value store, shared queues and plugin metrics.
//!
//! Owns the three registries and their limits (total shared-data bytes,
//! number of queues, items and bytes per queue, number of metrics, name
//! lengths); each is a `static Mutex`
//! held only for a map lookup or a copy, never across a call into a guest.
//! A poisoned lock is recovered (nothing here panics while holding one).
//! Values are opaque bytes; this module knows nothing about wasm or HTTP.
//! Shared data and queues are one namespace for the whole process (Envoy
//! scopes them per `vm_id`; tinygate has no VM ids, so `vm_id` is ignored).

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use super::types::{MetricKind, Status};

/// Most bytes (keys plus values) the shared key-value store may hold.
pub(crate) const MAX_SHARED_DATA_BYTES: usize = 64 << 20;
/// Bytes charged per shared-data entry on top of its key and value, so
/// that many tiny entries still count against the cap.
const ENTRY_OVERHEAD: usize = 64;
/// Most shared queues the process may register.
pub(crate) const MAX_QUEUES: usize = 1024;
/// Most items one shared queue may hold.
pub(crate) const MAX_QUEUE_ITEMS: usize = 10_000;
/// Most bytes one shared queue may hold.
pub(crate) const MAX_QUEUE_BYTES: usize = 16 << 20;
/// Most metrics the process may define.
pub(crate) const MAX_METRICS: usize = 10_000;
/// Longest metric name accepted.
pub(crate) const MAX_METRIC_NAME: usize = 256;

/// Returned by `define_metric` when a metric cannot be defined: no metric
/// has this id, so later calls with it are NOT_FOUND.
pub(crate) const INVALID_METRIC_ID: u32 = 0;

// ---- shared data -------------------------------------------------------

#[derive(Default)]
struct SharedData {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    bytes: usize,
    last_cas: u32,
}

static SHARED_DATA: LazyLock<Mutex<SharedData>> = LazyLock::new(Mutex::default);

/// The value and CAS of `key`, or `NOT_FOUND`.
pub(crate) fn get_shared_data(key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
    lock(&SHARED_DATA)
        .entries
        .get(key)
        .cloned()
        .ok_or(Status::NotFound)
}

/// Why `set_shared_data` refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetError {
    /// A non-zero `cas` did not match the key's current one.
    CasMismatch,
    /// The write would take the store past `MAX_SHARED_DATA_BYTES`.
    Full,
}

/// Sets `key` to `value`. A non-zero `cas` must equal the key's current CAS
/// (a missing key accepts any, as in cpp-host).
pub(crate) fn set_shared_data(key: &[u8], value: &[u8], cas: u32) -> Result<(), SetError> {
    let mut data = lock(&SHARED_DATA);
    let old = data.entries.get(key).map(|(v, c)| (v.len(), *c));
    if let (Some((_, current)), true) = (old, cas != 0) {
        if current != cas {
            return Err(SetError::CasMismatch);
        }
    }
    let freed = old.map_or(0, |(len, _)| ENTRY_OVERHEAD + key.len() + len);
    let bytes = data.bytes - freed + ENTRY_OVERHEAD + key.len() + value.len();
    if bytes > MAX_SHARED_DATA_BYTES {
        return Err(SetError::Full);
    }
    data.last_cas = match data.last_cas.wrapping_add(1) {
        0 => 1,
        n => n,
    };
    let new_cas = data.last_cas;
    data.bytes = bytes;
    data.entries.insert(key.to_vec(), (value.to_vec(), new_cas));
    Ok(())
}

// ---- shared queues -----------------------------------------------------

#[derive(Default)]
struct Queues {
    ids: HashMap<Vec<u8>, u32>,
    queues: HashMap<u32, Queue>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
}

static QUEUES: LazyLock<Mutex<Queues>> = LazyLock::new(Mutex::default);

/// Returned by `register_queue` when no queue can be created: no queue has
/// this id, so later calls with it are NOT_FOUND.
pub(crate) const INVALID_QUEUE_ID: u32 = 0;

/// The id of the queue `name` (ids start at 1), created empty if new, or
/// [`INVALID_QUEUE_ID`] once `MAX_QUEUES` exist.
pub(crate) fn register_queue(name: &[u8]) -> u32 {
    let mut queues = lock(&QUEUES);
    if let Some(&id) = queues.ids.get(name) {
        return id;
    }
    if queues.ids.len() >= MAX_QUEUES {
        return INVALID_QUEUE_ID;
    }
    let id = u32::try_from(queues.ids.len() + 1).unwrap_or(INVALID_QUEUE_ID);
    queues.ids.insert(name.to_vec(), id);
    queues.queues.insert(id, Queue::default());
    id
}

/// The id of an existing queue `name`, or `NOT_FOUND`.
pub(crate) fn resolve_queue(name: &[u8]) -> Result<u32, Status> {
    lock(&QUEUES).ids.get(name).copied().ok_or(Status::NotFound)
}

/// Appends `value` to queue `id`. A full queue (`MAX_QUEUE_ITEMS` or
/// `MAX_QUEUE_BYTES`) drops the new item and returns `Ok(false)`: NOT_FOUND
/// would tell the plugin the queue is gone.
pub(crate) fn enqueue(id: u32, value: &[u8]) -> Result<bool, Status> {
    let mut queues = lock(&QUEUES);
    let queue = queues.queues.get_mut(&id).ok_or(Status::NotFound)?;
    if queue.items.len() >= MAX_QUEUE_ITEMS || queue.bytes + value.len() > MAX_QUEUE_BYTES {
        return Ok(false);
    }
    queue.bytes += value.len();
    queue.items.push_back(value.to_vec());
    Ok(true)
}

/// Takes the oldest item of queue `id`: `NOT_FOUND` for an unknown queue,
/// `EMPTY` for an empty one.
pub(crate) fn dequeue(id: u32) -> Result<Vec<u8>, Status> {
    let mut queues = lock(&QUEUES);
    let queue = queues.queues.get_mut(&id).ok_or(Status::NotFound)?;
    let item = queue.items.pop_front().ok_or(Status::Empty)?;
    queue.bytes -= item.len();
    Ok(item)
}

// ---- metrics -----------------------------------------------------------

#[allow(dead_code)] // `name` is read by `metrics_snapshot`, not wired to an exporter yet
struct Metric {
    name: String,
    kind: MetricKind,
    value: i64,
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
    let mut metrics = lock(&METRICS);
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
    });
    let id = u32::try_from(metrics.list.len()).unwrap_or(INVALID_METRIC_ID);
    metrics.ids.insert((kind, name.to_owned()), id);
    id
}

/// Counter/gauge: set to `value`. Histogram: record one sample (added to
/// the sum the snapshot reports).
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    let mut metrics = lock(&METRICS);
    let metric = metric_mut(&mut metrics, id)?;
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    metric.value = match metric.kind {
        MetricKind::Counter | MetricKind::Gauge => value,
        MetricKind::Histogram => metric.value.saturating_add(value),
    };
    Ok(())
}

/// Adds `delta`. A counter may not go down and a histogram cannot be
/// incremented: both `BAD_ARGUMENT` (spec).
pub(crate) fn increment_metric(id: u32, delta: i64) -> Result<(), Status> {
    let mut metrics = lock(&METRICS);
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
    let mut metrics = lock(&METRICS);
    let metric = metric_mut(&mut metrics, id)?;
    match metric.kind {
        MetricKind::Histogram => Err(Status::BadArgument),
        MetricKind::Counter | MetricKind::Gauge => Ok(metric.value as u64),
    }
}

/// Every plugin metric: `(name, kind, value)`, in definition order, for
/// export. A histogram's value is the sum of its recorded samples.
#[allow(dead_code)] // for the metrics exporter, not wired yet
pub fn metrics_snapshot() -> Vec<(String, MetricKind, i64)> {
    lock(&METRICS)
        .list
        .iter()
        .map(|m| (m.name.clone(), m.kind, m.value))
        .collect()
}

fn metric_mut(metrics: &mut Metrics, id: u32) -> Result<&mut Metric, Status> {
    let index = (id as usize).checked_sub(1).ok_or(Status::NotFound)?;
    metrics.list.get_mut(index).ok_or(Status::NotFound)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The registries are process-wide and tests run in parallel: every test
    // uses its own keys and names.

    #[test]
    fn shared_data_cas_semantics() {
        let key = b"shared-test-cas";
        assert_eq!(get_shared_data(key), Err(Status::NotFound));
        assert_eq!(
            set_shared_data(key, b"v1", 12345),
            Ok(()),
            "missing key accepts any cas"
        );
        let (value, cas1) = get_shared_data(key).unwrap();
        assert_eq!((value.as_slice(), cas1 != 0), (&b"v1"[..], true));
        assert_eq!(
            set_shared_data(key, b"v2", cas1.wrapping_add(1)),
            Err(SetError::CasMismatch)
        );
        assert_eq!(set_shared_data(key, b"v2", cas1), Ok(()));
        let (value, cas2) = get_shared_data(key).unwrap();
        assert_eq!(value, b"v2");
        assert_ne!(cas1, cas2);
        assert_eq!(
            set_shared_data(key, b"v3", cas1),
            Err(SetError::CasMismatch),
            "stale cas"
        );
        assert_eq!(
            set_shared_data(key, b"v3", 0),
            Ok(()),
            "cas 0 is unconditional"
        );
        assert_eq!(get_shared_data(key).unwrap().0, b"v3");
    }

    #[test]
    fn shared_data_is_capped() {
        let big = vec![0u8; MAX_SHARED_DATA_BYTES + 1];
        assert_eq!(
            set_shared_data(b"shared-test-big", &big, 0),
            Err(SetError::Full)
        );
        assert_eq!(get_shared_data(b"shared-test-big"), Err(Status::NotFound));
    }

    #[test]
    fn queues_register_resolve_enqueue_dequeue() {
        assert_eq!(resolve_queue(b"queue-test"), Err(Status::NotFound));
        let id = register_queue(b"queue-test");
        assert_eq!(
            register_queue(b"queue-test"),
            id,
            "registering again opens it"
        );
        assert_eq!(resolve_queue(b"queue-test"), Ok(id));
        assert_eq!(dequeue(id), Err(Status::Empty));
        assert_eq!(enqueue(id, b"a"), Ok(true));
        assert_eq!(enqueue(id, b"b"), Ok(true));
        assert_eq!(dequeue(id), Ok(b"a".to_vec()));
        assert_eq!(dequeue(id), Ok(b"b".to_vec()));
        assert_eq!(dequeue(id), Err(Status::Empty));
        let big = vec![0u8; MAX_QUEUE_BYTES];
        assert_eq!(enqueue(id, &big), Ok(true));
        assert_eq!(enqueue(id, b"x"), Ok(false), "over the byte cap: dropped");
        assert_eq!(dequeue(id).map(|v| v.len()), Ok(MAX_QUEUE_BYTES));
        assert_eq!(enqueue(id, b"x"), Ok(true));
        assert_eq!(dequeue(id), Ok(b"x".to_vec()));
        assert_eq!(enqueue(u32::MAX, b"x"), Err(Status::NotFound));
        assert_eq!(enqueue(INVALID_QUEUE_ID, b"x"), Err(Status::NotFound));
        assert_eq!(dequeue(u32::MAX), Err(Status::NotFound));
    }

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
}
