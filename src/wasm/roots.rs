//! Root contexts of a [`PluginVm`]: one per `configure` key (the proxy's
//! route plugin entry), created on first use, and retired when the proxy
//! says its key left the configuration.
//!
//! Creating one runs `proxy_on_context_create(root, 0)`,
//! `proxy_on_vm_start` and `proxy_on_configure`; deleting one runs
//! `proxy_on_done`, `proxy_on_log` and `proxy_on_delete` (the spec's order
//! for any context) and drops what the host keeps for it: its tick period,
//! its shared-queue registrations and the calls it has in flight. A retired
//! root context takes no new HTTP context; it is deleted as soon as none of
//! its HTTP contexts is alive, so a request in flight across a reload keeps
//! the root it started with. Knows keys, not routes.

use std::collections::{HashMap, HashSet};

use super::host::{ContextKind, Hook};
use super::vm::{len32, Lend, ON_DONE};
use super::{shared, Effect, Fault, FaultKind, PluginVm};

/// The root contexts of one VM, by key and by id.
#[derive(Default)]
pub(super) struct Roots {
    /// The live (not retired) root context of each key.
    by_key: HashMap<u64, u32>,
    /// The key of every root context, retired ones included.
    key_of: HashMap<u32, u64>,
    /// Retired root contexts waiting for their last HTTP context.
    retiring: HashSet<u32>,
}

impl PluginVm {
    /// The root context for one (route, plugin configuration) pair,
    /// identified by `key`, created on first use with
    /// `proxy_on_context_create(root, 0)`, `proxy_on_vm_start(root,
    /// vm_config.len())` and `proxy_on_configure(root, conf.len())`, with
    /// `conf` readable as `PLUGIN_CONFIGURATION`. Success is cached per key
    /// until the key is retired ([`PluginVm::retire_root`]).
    ///
    /// # Errors
    ///
    /// A `false` from `proxy_on_vm_start` or `proxy_on_configure`, or a
    /// trap. Failures are not cached: the root context is deleted (with its
    /// tick period and queue registrations) and the next call tries again
    /// with a new one.
    pub fn configure(&mut self, key: u64, conf: &[u8]) -> Result<u32, Fault> {
        self.check_usable("proxy_on_configure")?;
        if let Some(&root) = self.roots.by_key.get(&key) {
            return Ok(root);
        }
        let root = self.new_context(ContextKind::Root);
        let shared_writes = self.store.data().shared_writes;
        match self.configure_root(root, conf) {
            Ok(()) => {
                self.roots.by_key.insert(key, root);
                self.roots.key_of.insert(root, key);
                if self.reached_out(root, shared_writes) {
                    self.plugin.reached_out_at_start();
                }
                Ok(root)
            }
            Err(fault) => {
                if !self.is_broken() {
                    // Let the plugin forget the root; a fault here breaks the
                    // VM, which the first fault already explains.
                    let _ = self.delete_root(root);
                }
                self.forget_root(root);
                Err(fault)
            }
        }
    }

    /// The `configure` key of the root context `context` belongs to (or is):
    /// whose configuration a failure in a callback of `context` is blamed
    /// on. `None` for an unknown context.
    pub fn root_key_of(&self, context: u32) -> Option<u64> {
        let root = match self.store.data().contexts.get(&context)? {
            ContextKind::Root => context,
            ContextKind::Http { root } => *root,
        };
        self.roots.key_of.get(&root).copied()
    }

    /// How many root contexts are alive, retired ones still waiting for
    /// their last HTTP context included.
    pub fn root_count(&self) -> usize {
        self.roots.key_of.len()
    }

    /// The live root contexts whose key `keep` refuses: those to retire.
    pub fn roots_to_retire(&self, keep: impl Fn(u64) -> bool) -> Vec<u32> {
        self.roots
            .by_key
            .iter()
            .filter(|(&key, _)| !keep(key))
            .map(|(_, &root)| root)
            .collect()
    }

    /// Retires root context `root`: its key no longer names it (the next
    /// [`PluginVm::configure`] of that key makes a new one), and it is
    /// deleted now if none of its HTTP contexts is alive, else when the
    /// last one ends ([`PluginVm::finish`] or [`PluginVm::complete`]).
    ///
    /// # Errors
    ///
    /// An unknown `root` (the VM stays usable), or a trap while deleting
    /// it (the root is forgotten anyway).
    pub fn retire_root(&mut self, root: u32) -> Result<(), Fault> {
        self.check_usable(ON_DONE)?;
        self.check_root(ON_DONE, root)?;
        let Some(&key) = self.roots.key_of.get(&root) else {
            return Err(self.fault_msg(
                ON_DONE,
                FaultKind::UnknownContext,
                format!("root context {root} was never configured"),
            ));
        };
        if self.roots.by_key.get(&key) == Some(&root) {
            self.roots.by_key.remove(&key);
        }
        self.roots.retiring.insert(root);
        self.delete_root_if_idle(root)
    }

    /// Deletes `root` if it is retired and none of its HTTP contexts is
    /// alive (called after a stream of it ended).
    pub(super) fn delete_root_if_idle(&mut self, root: u32) -> Result<(), Fault> {
        if !self.roots.retiring.contains(&root) {
            return Ok(());
        }
        let busy = self
            .store
            .data()
            .contexts
            .values()
            .any(|kind| *kind == ContextKind::Http { root });
        if busy {
            return Ok(());
        }
        let deleted = self.delete_root(root);
        self.forget_root(root);
        deleted
    }

    /// True while some root context waits for its last HTTP context.
    pub(super) fn has_retiring_roots(&self) -> bool {
        !self.roots.retiring.is_empty()
    }

    /// True when root context `root`, just started, did what others can
    /// see (see [`Plugin::starts_on_load`]): a tick period, an HTTP call,
    /// or shared writes past `shared_writes_before`.
    ///
    /// [`Plugin::starts_on_load`]: crate::wasm::Plugin::starts_on_load
    fn reached_out(&self, root: u32, shared_writes_before: u64) -> bool {
        let state = self.store.data();
        state.tick_periods.contains_key(&root)
            || state.shared_writes != shared_writes_before
            || state
                .effects
                .iter()
                .any(|e| matches!(e, Effect::HttpCall(call) if call.root == root))
    }

    pub(super) fn configure_root(&mut self, root: u32, conf: &[u8]) -> Result<(), Fault> {
        let exports = self.exports;
        if let Some(f) = exports.on_context_create {
            let lend = Lend::bare(Hook::Idle, root);
            self.invoke("proxy_on_context_create", f, (root, 0), lend)?;
        }
        if let Some(f) = exports.on_vm_start {
            let size = len32(self.plugin.info.spec.vm_config.len());
            let lend = Lend::bare(Hook::VmStart, root);
            if self.invoke("proxy_on_vm_start", f, (root, size), lend)? == 0 {
                return Err(self.fault_msg(
                    "proxy_on_vm_start",
                    FaultKind::Rejected,
                    "returned false: the plugin rejected its VM configuration".into(),
                ));
            }
        }
        if let Some(f) = exports.on_configure {
            self.store.data_mut().plugin_configuration = conf.to_vec();
            let lend = Lend::bare(Hook::Configure, root);
            let size = len32(conf.len());
            if self.invoke("proxy_on_configure", f, (root, size), lend)? == 0 {
                return Err(self.fault_msg(
                    "proxy_on_configure",
                    FaultKind::Rejected,
                    "returned false: the plugin rejected its configuration".into(),
                ));
            }
        }
        Ok(())
    }

    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` for a root
    /// context. A `false` from `proxy_on_done` is not waited for: the host
    /// deletes a root only once nothing of its configuration is served, so
    /// nothing could finish later.
    fn delete_root(&mut self, root: u32) -> Result<(), Fault> {
        let exports = self.exports;
        let lend = Lend::bare(Hook::Root, root);
        if let Some(f) = exports.on_done {
            self.invoke(ON_DONE, f, root, lend)?;
        }
        if let Some(f) = exports.on_log {
            self.invoke("proxy_on_log", f, root, lend)?;
        }
        if let Some(f) = exports.on_delete {
            self.invoke("proxy_on_delete", f, root, lend)?;
        }
        Ok(())
    }

    /// Drops what the host keeps for root context `root`: its id, key, tick
    /// period, queue registrations and the calls it has in flight (their
    /// answers find no call any more).
    fn forget_root(&mut self, root: u32) {
        if let Some(key) = self.roots.key_of.remove(&root) {
            if self.roots.by_key.get(&key) == Some(&root) {
                self.roots.by_key.remove(&key);
            }
        }
        self.roots.retiring.remove(&root);
        let state = self.store.data_mut();
        state.contexts.remove(&root);
        state.tick_periods.remove(&root);
        state.pending_calls.retain(|_, (r, _)| *r != root);
        shared::forget_root(state.vm_uid, root);
    }
}
