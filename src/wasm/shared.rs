//! Process-wide state shared by every plugin VM on every worker thread:
//! the shared key-value store and shared queues (plugin metrics are in
//! `metrics.rs`).
//!
//! Owns both registries and their limits (total shared-data bytes, number
//! of queues, items and bytes per queue, name lengths), and who is told
//! about enqueues: each queue remembers the (VM, root context) pairs that
//! registered it, and each VM its [`QueueNotifier`]. Each registry is a
//! `static Mutex` held only for a map lookup or a copy, never across a call
//! into a guest or a notifier. A poisoned lock is recovered (nothing here
//! panics while holding one). Values are opaque bytes; this module knows
//! nothing about wasm or HTTP.
//!
//! Shared data and queues are one namespace for the whole process. Envoy
//! scopes them per `vm_id`; tinygate has no configurable VM ids, so
//! `proxy_resolve_shared_queue` ignores its `vm_id` argument and resolves
//! by name across all plugins (the TinyGo SDK passes an empty `vm_id`).

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use super::types::Status;
use super::QueueNotifier;

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

/// The process-wide shared value of `key`, as plugins read it with
/// `proxy_get_shared_data` (for `tinygate test` expectations).
pub fn shared_value(key: &[u8]) -> Option<Vec<u8>> {
    get_shared_data(key).ok().map(|(value, _)| value)
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
    /// How to reach each VM that set a notifier, by VM uid.
    notifiers: HashMap<u64, QueueNotifier>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
    /// `(vm uid, root context)` of every registration, oldest first. The
    /// newest one with a notifier is told about each enqueue: the last
    /// registrant wins, as in Envoy, and an earlier one takes over when its
    /// VM goes away.
    owners: Vec<(u64, u32)>,
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

/// Records that root context `root` of VM `vm` registered queue `id`, so
/// that enqueues notify it (a repeated registration moves to the end).
pub(crate) fn set_queue_owner(id: u32, vm: u64, root: u32) {
    if let Some(queue) = lock(&QUEUES).queues.get_mut(&id) {
        queue.owners.retain(|&owner| owner != (vm, root));
        queue.owners.push((vm, root));
    }
}

/// Sets how VM `vm` is told about enqueues on the queues it registered.
pub(crate) fn set_notifier(vm: u64, notify: QueueNotifier) {
    lock(&QUEUES).notifiers.insert(vm, notify);
}

/// Forgets root context `root` of VM `vm` as a queue owner.
pub(crate) fn forget_root(vm: u64, root: u32) {
    for queue in lock(&QUEUES).queues.values_mut() {
        queue.owners.retain(|&owner| owner != (vm, root));
    }
}

/// Forgets VM `vm`: its notifier and every registration it made.
pub(crate) fn forget_vm(vm: u64) {
    let mut queues = lock(&QUEUES);
    queues.notifiers.remove(&vm);
    for queue in queues.queues.values_mut() {
        queue.owners.retain(|&(owner, _)| owner != vm);
    }
}

/// Appends `value` to queue `id`, then tells the queue's owner (see
/// [`Queue::owners`]) outside the lock. A full queue (`MAX_QUEUE_ITEMS` or
/// `MAX_QUEUE_BYTES`) drops the new item and returns `Ok(false)`: NOT_FOUND
/// would tell the plugin the queue is gone.
pub(crate) fn enqueue(id: u32, value: &[u8]) -> Result<bool, Status> {
    let notify = {
        let mut queues = lock(&QUEUES);
        let Queues {
            queues, notifiers, ..
        } = &mut *queues;
        let queue = queues.get_mut(&id).ok_or(Status::NotFound)?;
        if queue.items.len() >= MAX_QUEUE_ITEMS || queue.bytes + value.len() > MAX_QUEUE_BYTES {
            return Ok(false);
        }
        queue.bytes += value.len();
        queue.items.push_back(value.to_vec());
        queue
            .owners
            .iter()
            .rev()
            .find_map(|(vm, root)| notifiers.get(vm).map(|n| (n.clone(), *root)))
    };
    if let Some((notify, root)) = notify {
        notify(root, id);
    }
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
}
