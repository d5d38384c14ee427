//! The watcher: one thread with its own smol executor that follows etcd
//! and hands every new state to [`Live::apply_routes`].
//!
//! It watches from the revision after the one it holds, so nothing is
//! missed across reconnects. When etcd is lost it keeps the configuration
//! being served and reconnects with backoff, rotating through the hosts;
//! when the revision it needs was compacted (or the cluster is behind it),
//! it reads everything again and watches from there.

use super::client::{self, int, Error};
use super::{range, write_snapshot, Watcher};
use crate::live::Live;
use crate::net::Timer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// First wait after a failure; doubled after each failure in a row.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a burst of changes (several keys written one after another)
/// is gathered into one apply; well inside the one second a change may
/// take to reach every node. The first change after a quiet spell is
/// applied at once: only changes that follow an apply within this time
/// wait, so a lone change is served as soon as it is validated.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Silence on a watch after which the endpoint is probed with a small
/// request: a peer that vanished without closing (power loss, partition)
/// would otherwise hold the watch forever.
const PROBE_AFTER: Duration = Duration::from_secs(5);
/// Longest a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Follows etcd forever.
pub async fn run(live: &Live, mut w: Watcher) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match session(live, &mut w, &mut backoff).await {
            Ok(()) => {} // read everything again, at once
            Err(e) => {
                log::warn!(
                    "etcd: {e}; serving the last configuration, retrying in {} ms",
                    backoff.as_millis()
                );
                Timer::after(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w.at = (w.at + 1) % w.config.hosts.len();
            }
        }
    }
}

/// One connection: a full read if needed, then the watch until it fails
/// (`Err`) or a full read is needed (`Ok`).
async fn session(live: &Live, w: &mut Watcher, backoff: &mut Duration) -> Result<(), Error> {
    let host = w.config.hosts[w.at].clone();
    let timeout = w.config.timeout;
    if w.resync {
        let store = range(&host, &w.config.prefix, timeout).await?;
        log::info!(
            "etcd: read {} keys under {} at revision {} from {}",
            store.len(),
            w.config.prefix,
            store.revision,
            host.url
        );
        let changed = !store.same_content(&w.store);
        w.store = store;
        w.resync = false;
        if changed {
            apply(live, w, Instant::now());
        }
    }
    let (key, range_end) = client::prefix_range(&w.config.prefix);
    let from = w.store.revision + 1;
    let request = json!({"create_request": {
        "key": key, "range_end": range_end, "start_revision": from.to_string()
    }});
    let mut watch = client::watch(&host, &request, timeout).await?;
    let mut pending: Option<Instant> = None;
    let mut applied: Option<Instant> = None;
    let outcome = loop {
        let wait = pending.map_or(PROBE_AFTER, |since| {
            DEBOUNCE.saturating_sub(since.elapsed())
        });
        let next = smol::future::or(async { Some(watch.message().await) }, async {
            Timer::after(wait).await;
            None
        })
        .await;
        let message = match next {
            None if pending.is_some() => {
                apply(live, w, pending.take().expect("pending"));
                applied = Some(Instant::now());
                continue;
            }
            None => match probe(&host, &w.config.prefix, timeout).await {
                Ok(()) => continue,
                Err(e) => break Err(e),
            },
            Some(Ok(Some(message))) => message,
            Some(Ok(None)) => break Err(Error::protocol(&host, "watch ended by etcd")),
            Some(Err(e)) => break Err(e),
        };
        if message.get("error").is_some() {
            break Err(Error::protocol(
                &host,
                format!("watch: {}", client::error_message(&message)),
            ));
        }
        let result = message.get("result").unwrap_or(&message);
        if result.get("created") == Some(&Value::Bool(true)) {
            *backoff = MIN_BACKOFF;
            let at = int(result.pointer("/header/revision")).unwrap_or(0);
            if at < w.store.revision {
                log::warn!(
                    "etcd: {} is at revision {at}, behind the {} served; reading everything again",
                    host.url,
                    w.store.revision
                );
                w.resync = true;
                break Ok(());
            }
            log::info!(
                "etcd: watching {} from revision {from} on {}",
                w.config.prefix,
                host.url
            );
            continue;
        }
        if result.get("canceled") == Some(&Value::Bool(true)) {
            let compacted = int(result.get("compact_revision")).unwrap_or(0);
            if compacted > 0 {
                log::warn!(
                    "etcd: revision {} was compacted (etcd keeps {compacted} and later); \
                     reading everything again",
                    w.store.revision + 1
                );
                w.resync = true;
                break Ok(());
            }
            let reason = result.get("cancel_reason").and_then(Value::as_str);
            break Err(Error::protocol(
                &host,
                format!("watch canceled: {}", reason.unwrap_or("no reason given")),
            ));
        }
        if let Some(events) = result.get("events").and_then(Value::as_array) {
            w.store
                .apply_events(events)
                .map_err(|e| Error::protocol(&host, e))?;
            let noticed = Instant::now();
            if pending.is_none() && applied.is_none_or(|at| at.elapsed() >= DEBOUNCE) {
                apply(live, w, noticed);
                applied = Some(Instant::now());
            } else {
                pending.get_or_insert(noticed);
            }
        }
    };
    if let Some(noticed) = pending {
        apply(live, w, noticed);
    }
    outcome
}

/// Validates and applies the current state, which changed at `noticed`;
/// writes the snapshot once it is being served.
fn apply(live: &Live, w: &Watcher, noticed: Instant) {
    let doc = w.store.document(&w.config.prefix);
    let snapshot = w
        .config
        .snapshot
        .as_ref()
        .map(|path| (path, doc.snapshot_text(&w.config.prefix, w.store.revision)));
    let why = format!("etcd revision {}", w.store.revision);
    if live.apply_routes(doc.into_source(), &why, noticed) {
        if let Some((path, text)) = snapshot {
            write_snapshot(path, &text);
        }
    }
}

/// A cheap request on a fresh connection, to tell a quiet watch from a
/// dead endpoint.
async fn probe(
    host: &crate::config::EtcdHost,
    prefix: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let (key, range_end) = client::prefix_range(prefix);
    let request = json!({"key": key, "range_end": range_end, "count_only": true});
    client::call(host, "/v3/kv/range", &request, timeout.min(PROBE_TIMEOUT))
        .await
        .map(drop)
}
