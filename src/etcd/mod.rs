//! etcd as a config provider, as APISIX data planes use it: routes,
//! upstreams, services, plugin configs and global rules are read from keys
//! under `deployment.etcd.prefix` (`/apisix/routes/<id>`,
//! `/apisix/upstreams/<id>`, ..., one JSON value each, the same schema as
//! `apisix.yaml`), then followed with a watch, so a change made once
//! reaches every node in well under a second.
//!
//! The flow: at start, [`load_for_serving`] reads every key (trying each
//! host, `startup_retry` rounds) and validates them into the first
//! configuration; if no host answers it starts from the snapshot file when
//! one is configured, and fails otherwise. [`spawn`] then starts the
//! watcher thread (`watch.rs`), which hands each new state to
//! [`Live::apply_routes`]: validated completely, swapped atomically,
//! requests in flight finishing on the configuration they started with.
//! Invalid items are logged and skipped, as APISIX does.
//!
//! etcd is spoken to through its v3 JSON gateway over HTTP/1.1
//! (`client.rs`) with tinygate's own HTTP codec, rather than gRPC: no
//! second runtime, no HTTP/2 or protobuf stack in a binary meant to stay
//! small. `tinygate etcd put` (`put.rs`) loads an `apisix.yaml` into etcd.
//!
//! This module knows etcd and the routes document shape; validation is
//! `config`'s, serving is `live`'s.

mod base64;
mod client;
mod put;
mod store;
mod watch;

pub use put::command;

use crate::config::{Config, ConfigError, EtcdConfig, EtcdHost, Reuse};
use crate::live::Live;
use client::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::{Document, Store};

/// Pause between two rounds over the hosts at start.
const STARTUP_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The state loaded at start, handed to the watcher thread.
pub struct Watcher {
    config: EtcdConfig,
    /// The keys being served (empty when started from the snapshot).
    store: Store,
    /// Index in `config.hosts` of the host to use next.
    at: usize,
    /// True when the next connection must read everything before it
    /// watches: after a start from the snapshot, or a compaction.
    resync: bool,
    /// The document served at start, for `SIGHUP` until the first change.
    document: Document,
}

/// With the etcd provider: reads routes and upstreams from etcd (or the
/// snapshot) into `config.routes`, logging and skipping invalid items.
/// `None` with the YAML provider.
///
/// # Errors
/// When no host answers and there is no usable snapshot.
pub fn load_for_serving(config: &mut Config) -> Result<Option<Watcher>, ConfigError> {
    let Some((watcher, skipped)) = load(config)? else {
        return Ok(None);
    };
    for problem in skipped {
        log::error!("{problem} (item skipped)");
    }
    Ok(Some(watcher))
}

/// Like [`load_for_serving`] for `tinygate -t`: an invalid item is a
/// problem, not a skip.
///
/// # Errors
/// Every problem found, or why etcd could not be read.
pub fn load_for_check(config: &mut Config) -> Result<(), ConfigError> {
    match load(config)? {
        Some((_, problems)) if !problems.is_empty() => Err(ConfigError { problems }),
        _ => Ok(()),
    }
}

/// Starts the watcher thread; writes the snapshot of what is served.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn(live: &Arc<Live>, watcher: Watcher) -> std::io::Result<()> {
    if let (Some(path), false) = (&watcher.config.snapshot, watcher.resync) {
        write_snapshot(
            path,
            &watcher
                .document
                .snapshot_text(&watcher.config.prefix, watcher.store.revision),
        );
    }
    live.set_routes_source(watcher.document.clone().into_source());
    let live = Arc::clone(live);
    let reactor = crate::net::prepare()?;
    // The watcher starts and configures plugins when it applies a change:
    // the plugin stack (`src/wasm/stack.rs`).
    crate::wasm::spawn_plugin_thread("etcd".into(), move || {
        reactor.block_on(watch::run(&live, watcher))
    })
    .map(drop)
}

fn load(config: &mut Config) -> Result<Option<(Watcher, Vec<String>)>, ConfigError> {
    let Some(etcd) = config.main.etcd.clone() else {
        return Ok(None);
    };
    let label = config.main.config_file.display();
    let read = crate::net::block_on(read_at_start(&etcd))
        .unwrap_or_else(|e| Err(format!("cannot wait for the network: {e}")));
    let (store, at, resync, document) = match read {
        Ok((store, at)) => {
            log::info!(
                "etcd: read {} keys under {} at revision {} from {}",
                store.len(),
                etcd.prefix,
                store.revision,
                etcd.hosts[at].url
            );
            let document = store.document(&etcd.prefix);
            (store, at, false, document)
        }
        Err(tried) => {
            let Some(path) = &etcd.snapshot else {
                return Err(ConfigError {
                    problems: vec![format!(
                        "{label}: deployment.etcd.host: no etcd endpoint answered: {tried}"
                    )],
                });
            };
            let document = Document::from_snapshot(path).map_err(|e| ConfigError {
                problems: vec![format!(
                    "{label}: deployment.etcd.host: no etcd endpoint answered ({tried}), \
                     and the snapshot is not usable: {e}"
                )],
            })?;
            log::warn!(
                "etcd: no endpoint answered ({tried}); serving the snapshot {} until one does",
                path.display()
            );
            (Store::default(), 0, true, document)
        }
    };
    let (routes, problems) = document.validate(config.main.route_rules(), Reuse::Nothing);
    config.routes = routes;
    let watcher = Watcher {
        config: etcd,
        store,
        at,
        resync,
        document,
    };
    Ok(Some((watcher, problems)))
}

/// Reads every key, trying each host in turn for `startup_retry` rounds:
/// the state and the index of the host that answered, or what each host
/// said in the last round.
async fn read_at_start(etcd: &EtcdConfig) -> Result<(Store, usize), String> {
    let mut errors = Vec::new();
    for round in 0..etcd.startup_retry {
        if round > 0 {
            crate::net::Timer::after(STARTUP_RETRY_PAUSE).await;
        }
        errors.clear();
        for (i, host) in etcd.hosts.iter().enumerate() {
            match range(host, &etcd.prefix, etcd.timeout).await {
                Ok(store) => return Ok((store, i)),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    Err(errors.join("; "))
}

/// Every key under `prefix/` on `host`.
async fn range(host: &EtcdHost, prefix: &str, timeout: Duration) -> Result<Store, Error> {
    let (key, range_end) = client::prefix_range(prefix);
    let request = serde_json::json!({"key": key, "range_end": range_end});
    let answer = client::call(host, "/v3/kv/range", &request, timeout).await?;
    Store::from_range(&answer).map_err(|e| Error::protocol(host, e))
}

/// Replaces the snapshot file at once (temporary file, then rename), so a
/// crash never leaves half a file; a failure is logged, not fatal.
fn write_snapshot(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        log::warn!("etcd: cannot write the snapshot {}: {e}", path.display());
    }
}
