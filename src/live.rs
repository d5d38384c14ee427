//! The configuration being served, and replacing it while serving.
//!
//! `Live` holds the current [`Gateway`] and a generation number. Workers
//! compare the generation (one atomic load per request) and fetch the new
//! gateway only when it changed, so the request path takes no lock. A new
//! configuration is validated completely (both files parsed, every plugin
//! compiled, started and configured) before it replaces the old one; an
//! invalid one is logged and the old one keeps serving. Requests in flight
//! keep the `Arc` of the gateway they started with.
//!
//! The routes file is polled every second, as APISIX does, comparing size,
//! mtime and a hash of the content; `SIGHUP` re-reads both files. With the
//! etcd provider the routes file is not used: the etcd watcher hands in
//! each new state through [`Live::apply_routes`], and `SIGHUP` re-reads
//! `config.yaml` and re-validates the last etcd state against it.
//!
//! A reload costs what changed (issue #20): a routes-file poll, `SIGHUP`
//! or etcd change takes over every item of the configuration being served
//! whose text is unchanged, with its balancer and root contexts
//! (`config/reuse.rs`: items whose validation reads DNS or files are
//! validated again), starts and configures only plugins and plugin
//! entries that are new ([`Gateway::check_changes`]), rebuilds the route
//! index, and swaps the whole in at once: a request sees the old
//! configuration or the new one, never a mix.

use crate::config::{
    self, parse_routes_skipping_invalid, Config, ConfigError, MainConfig, Reuse, Routes,
};
use crate::gateway::Gateway;
use crate::wasm::Engine;
use smol::channel::{Receiver, Sender, TrySendError};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The gateway being served, swappable at run time.
pub struct Live {
    current: Mutex<Arc<Gateway>>,
    generation: AtomicU64,
    engine: Engine,
    /// Fingerprint of the routes file last applied or rejected.
    routes_seen: Mutex<Option<u64>>,
    /// Where routes come from when not from the routes file (etcd): kept so
    /// `SIGHUP` can re-validate them against a new `config.yaml`. Its lock
    /// also makes those applies one at a time.
    routes_source: Mutex<Option<RoutesSource>>,
    /// Whether plugin metrics follow the plugins served
    /// ([`Live::follow_plugin_metrics`]).
    plugin_metrics_follow: AtomicBool,
    /// Told when the gateway is replaced ([`Live::watch`]).
    watchers: Mutex<Vec<Sender<()>>>,
}

/// Routes that do not come from the routes file: validates them against a
/// `config.yaml` (its plugin list), taking over what [`Reuse`] allows,
/// logging and skipping invalid items.
pub type RoutesSource = Arc<dyn Fn(&MainConfig, Reuse) -> Routes + Send + Sync>;

impl Live {
    pub fn new(gateway: Gateway, engine: Engine) -> Arc<Live> {
        let seen = fingerprint(&gateway.config.main.routes_file);
        crate::health::watch(gateway.config.routes.upstreams_to_watch());
        Arc::new(Live {
            current: Mutex::new(Arc::new(gateway)),
            generation: AtomicU64::new(1),
            engine,
            routes_seen: Mutex::new(seen),
            routes_source: Mutex::new(None),
            plugin_metrics_follow: AtomicBool::new(false),
            watchers: Mutex::new(Vec::new()),
        })
    }

    /// From now on the plugins' metrics follow the plugins served: those
    /// only removed plugins defined leave the scrape. For a server; the
    /// test runner keeps every metric, as its files share the process.
    pub fn follow_plugin_metrics(&self) {
        self.plugin_metrics_follow.store(true, Ordering::Release);
        serve_plugin_metrics(&self.current());
    }

    /// Remembers where the routes being served came from (for `SIGHUP`).
    pub fn set_routes_source(&self, source: RoutesSource) {
        *self.routes_source.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Applies routes from `source` with the current `config.yaml`,
    /// validated as a reload is (plugins compiled, started and configured),
    /// taking over the unchanged items of the configuration being served;
    /// on failure the current configuration keeps serving. `noticed` is
    /// when the change became known, for the log. Returns true when the
    /// new configuration is being served.
    pub fn apply_routes(&self, source: RoutesSource, why: &str, noticed: Instant) -> bool {
        let mut kept = self.routes_source.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current();
        let main = current.config.main.clone();
        let routes = source(&main, Reuse::Items(&current.config.routes));
        *kept = Some(source);
        let before = self.generation();
        self.apply(Config { main, routes }, &current, why, noticed);
        self.generation() != before
    }

    /// A channel that receives (at most one pending) `()` each time the
    /// gateway is replaced: how a worker with no traffic learns of a
    /// reload, to start the new root contexts (`plugins/eager.rs`).
    pub fn watch(&self) -> Receiver<()> {
        let (tx, rx) = smol::channel::bounded(1);
        lock(&self.watchers).push(tx);
        rx
    }

    /// Changes every time the gateway is replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The gateway being served now.
    pub fn current(&self) -> Arc<Gateway> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the routes file if it changed since last seen; applies it
    /// if it is valid (skipping invalid routes and upstreams, as APISIX).
    pub fn poll_routes_file(&self) {
        let current = self.current();
        if current.config.main.etcd.is_some() {
            return; // routes come from etcd
        }
        let path = &current.config.main.routes_file;
        let now = fingerprint(path);
        let noticed = Instant::now();
        {
            let mut seen = self.routes_seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return;
            }
            *seen = now;
        }
        let label = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                log::error!("{label}: cannot read: {e}; keeping the current configuration");
                return;
            }
        };
        let main = current.config.main.clone();
        let reuse = Reuse::Items(&current.config.routes);
        match parse_routes_skipping_invalid(&label, &text, main.route_rules(), reuse) {
            Ok((routes, skipped)) => {
                for problem in &skipped {
                    log::error!("{problem} (item skipped)");
                }
                let config = Config { main, routes };
                self.apply(config, &current, "routes file changed", noticed);
            }
            Err(e) => log_rejected(&e),
        }
    }

    /// Re-reads both files (on `SIGHUP`); applies them if valid.
    pub fn reload_all(&self) {
        let noticed = Instant::now();
        let current = self.current();
        let path = current.config.main.config_file.clone();
        *self.routes_seen.lock().unwrap_or_else(|e| e.into_inner()) =
            fingerprint(&current.config.main.routes_file);
        let main = match config::load_main(&path) {
            Ok(m) => m,
            Err(e) => return log_rejected(&e),
        };
        let was = &current.config.main;
        if main.listen != was.listen
            || main.ssl.listen != was.ssl.listen
            || main.workers != was.workers
        {
            log::warn!(
                "{}: listeners and workers change only on restart; keeping the current ones",
                path.display()
            );
        }
        if main.etcd.is_some() || current.config.main.etcd.is_some() {
            return self.reload_with_etcd(main, noticed);
        }
        let label = main.routes_file.display().to_string();
        let text = match std::fs::read_to_string(&main.routes_file) {
            Ok(t) => t,
            Err(e) => {
                log::error!("{label}: cannot read: {e}; keeping the current configuration");
                return;
            }
        };
        let reuse = Reuse::Items(&current.config.routes);
        match parse_routes_skipping_invalid(&label, &text, main.route_rules(), reuse) {
            Ok((routes, skipped)) => {
                for problem in &skipped {
                    log::error!("{problem} (item skipped)");
                }
                self.apply(Config { main, routes }, &current, "SIGHUP", noticed);
            }
            Err(e) => log_rejected(&e),
        }
    }

    /// `SIGHUP` with the etcd provider: the last etcd state, re-validated
    /// against the new `config.yaml`.
    fn reload_with_etcd(&self, main: MainConfig, noticed: Instant) {
        let kept = self.routes_source.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current();
        if main.etcd != current.config.main.etcd {
            log::error!(
                "{}: the config provider and deployment.etcd change only on restart; \
                 reload rejected",
                main.config_file.display()
            );
            return;
        }
        let routes = kept
            .as_ref()
            .map(|source| source(&main, Reuse::Items(&current.config.routes)))
            .unwrap_or_default();
        self.apply(Config { main, routes }, &current, "SIGHUP", noticed);
    }

    /// Builds, checks and swaps in `config`; logs how long it took since
    /// the change was `noticed`.
    fn apply(&self, config: Config, previous: &Gateway, why: &str, noticed: Instant) {
        let label = match &config.main.etcd {
            Some(etcd) => format!("etcd {}", etcd.prefix),
            None => config.main.routes_file.display().to_string(),
        };
        let gateway = match Gateway::build_reusing(config, &self.engine, Some(previous)) {
            Ok(g) => g,
            Err(e) => return log_rejected(&e.into()),
        };
        if let Err(e) = gateway.check_changes(previous) {
            return log_rejected(&e.into());
        }
        if let Err(e) = crate::ops::access_log::configure(&gateway.config.main.access_log) {
            log::error!("{e}; keeping the previous access log");
        }
        let routes = gateway.config.routes.routes.len();
        let (taken_over, validated) = gateway.config.routes.items_taken_over();
        crate::health::watch(gateway.config.routes.upstreams_to_watch());
        if self.plugin_metrics_follow.load(Ordering::Acquire) {
            serve_plugin_metrics(&gateway);
        }
        let replaced = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|e| e.into_inner()),
            Arc::new(gateway),
        );
        self.generation.fetch_add(1, Ordering::AcqRel);
        // A full channel already has a change to take up; a closed one's
        // worker is gone.
        lock(&self.watchers).retain(|tx| !matches!(tx.try_send(()), Err(TrySendError::Closed(_))));
        let took = noticed.elapsed();
        // Dropped here, not under the lock; the workers may still hold it.
        drop(replaced);
        log::info!(
            "config file {label} reloaded ({why}): {routes} routes; items: {validated} validated, \
             {taken_over} taken over unchanged; served {:.1} ms after the change was noticed",
            took.as_secs_f64() * 1e3
        );
    }
}

/// Tells the plugin metrics which plugins `gateway` serves.
fn serve_plugin_metrics(gateway: &Gateway) {
    crate::wasm::set_serving_plugins(gateway.config.main.plugins.iter().map(|p| p.name.as_str()));
}

fn log_rejected(e: &ConfigError) {
    for problem in &e.problems {
        log::error!("{problem}");
    }
    log::error!("reload rejected; keeping the current configuration");
}

/// Size, mtime and content hash of a file; `None` when unreadable.
fn fingerprint(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    bytes.hash(&mut h);
    Some(h.finish())
}

/// `mutex`'s guard, also after a panic elsewhere poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
