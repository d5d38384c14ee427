//! `tinygate etcd put [-c CONFIG] FILE`: loads an `apisix.yaml` into etcd,
//! so a site configured from YAML moves to a fleet without rewriting
//! anything.
//!
//! The file is validated first with the YAML provider's own parser (`#END`
//! required, `${{VAR}}` substituted); nothing is written if it has a
//! problem. Then each route, upstream, service, plugin config and global
//! rule becomes one key in APISIX's layout (`<prefix>/routes/<id>`, the
//! item as JSON; `arr_<n>` for a route without id), and the keys of those
//! kinds no longer in the file are deleted. Everything goes in one
//! `/v3/kv/txn` when it fits etcd's default limit of 128 operations, so
//! watchers see one change; bigger files are split, items written before
//! the items that refer to them (upstreams, services, plugin configs and
//! global rules before routes) and deleted after them.

use super::client::{self, int};
use super::store::KINDS;
use super::{range, EtcdConfig, EtcdHost};
use crate::config::{self, ConfigError};
use serde_json::{json, Value as Json};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

const USAGE: &str = "\
usage: tinygate etcd put [-c CONFIG] FILE

Loads FILE, an apisix.yaml ending with #END, into the etcd named by
CONFIG's deployment.etcd (default conf/config.yaml): one key per route,
upstream, service, plugin config and global rule under the prefix, as
APISIX lays them out; keys of those kinds no longer in FILE are deleted.
FILE is validated first (${{VAR}} substituted from the environment) and
nothing is written if it has a problem.
";

/// Runs `tinygate etcd ARGS...`: exit 0 on success, 1 on failure, 2 on a
/// bad command line.
pub fn command(args: &[String]) -> ExitCode {
    let (config, file) = match parse_args(args) {
        Ok(Some(paths)) => paths,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tinygate etcd: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match put(&config, &file) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            ExitCode::from(1)
        }
    }
}

/// `put [-c CONFIG] FILE`: the two paths, or `None` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<(PathBuf, PathBuf)>, String> {
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        Some("put") => {}
        Some("-h" | "--help") => return Ok(None),
        Some(other) => return Err(format!("unknown subcommand {other:?}")),
        None => return Err("missing subcommand".into()),
    }
    let mut config = PathBuf::from("conf/config.yaml");
    let mut file = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                config = args.next().ok_or(format!("{arg} needs a path"))?.into();
            }
            "-h" | "--help" => return Ok(None),
            a if a.starts_with('-') => return Err(format!("unknown argument {a:?}")),
            a if file.is_none() => file = Some(PathBuf::from(a)),
            a => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let file = file.ok_or("missing FILE (the apisix.yaml to load)")?;
    Ok(Some((config, file)))
}

/// Validates `file` and writes it; a one-line summary.
fn put(config: &std::path::Path, file: &std::path::Path) -> Result<String, Vec<String>> {
    let main = config::load_main(config).map_err(|e| e.problems)?;
    let Some(etcd) = &main.etcd else {
        return Err(vec![format!(
            "{}: deployment.role_data_plane.config_provider is not etcd: \
             there is no etcd to put into",
            config.display()
        )]);
    };
    let label = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| vec![format!("{label}: {e}")])?;
    let (_, doc) = config::parse_routes_and_document(&label, &text, main.route_rules())
        .map_err(|e: ConfigError| e.problems)?;
    // What every node will check when it reads the keys: a `file:` path
    // relative to this file's folder means nothing there.
    let (_, problems) = config::parse_routes_document("etcd", &doc, main.route_rules());
    if !problems.is_empty() {
        return Err(problems);
    }
    let wanted = keys_of(&doc, &etcd.prefix).map_err(|e| vec![format!("{label}: {e}")])?;
    let mut errors = Vec::new();
    for host in &etcd.hosts {
        match crate::net::block_on(write(host, etcd, &wanted)) {
            Ok(Ok(done)) => return Ok(format!("{label}: {done}")),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("cannot wait for the network: {e}")),
        }
    }
    Err(vec![format!(
        "{}: deployment.etcd.host: no etcd endpoint answered: {}",
        config.display(),
        errors.join("; ")
    )])
}

/// The keys and JSON values the file's items become.
fn keys_of(doc: &Value, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for section in KINDS {
        let items = doc.get(section).and_then(Value::as_sequence);
        for (i, item) in items.into_iter().flatten().enumerate() {
            let mut item = item.clone();
            let id = match item.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                // The parser accepted it, so only a route can lack an id:
                // APISIX names it by position.
                _ => format!("arr_{}", i + 1),
            };
            if let Some(map) = item.as_mapping_mut() {
                map.entry("id".into()).or_insert_with(|| id.clone().into());
            }
            let json =
                serde_json::to_vec(&item).map_err(|e| format!("{section}[{i}]: not JSON: {e}"))?;
            out.insert(format!("{prefix}/{section}/{id}"), json);
        }
    }
    Ok(out)
}

/// Makes the items under the prefix on `host` exactly `wanted`; a summary
/// of what changed. Items are written before those that refer to them and
/// deleted after them, so a watcher never sees a dangling reference.
async fn write(
    host: &EtcdHost,
    etcd: &EtcdConfig,
    wanted: &BTreeMap<String, Vec<u8>>,
) -> Result<String, client::Error> {
    let now = range(host, &etcd.prefix, etcd.timeout).await?;
    let kind = |key: &str| -> Option<&'static str> {
        let rest = key.strip_prefix(&etcd.prefix)?.strip_prefix('/')?;
        let (kind, id) = rest.split_once('/')?;
        let kind = KINDS.iter().copied().find(|k| *k == kind)?;
        (!id.is_empty()).then_some(kind)
    };
    let put = |key: &String, value: &Vec<u8>| {
        json!({"request_put": {
            "key": super::base64::encode(key.as_bytes()),
            "value": super::base64::encode(value),
        }})
    };
    let delete = |key: &String| json!({"request_delete_range": {"key": super::base64::encode(key.as_bytes())}});
    let changed = |k: &String, v: &Vec<u8>| now.value(k) != Some(&v[..]);
    let gone = |k: &&String| kind(k).is_some() && !wanted.contains_key(*k);
    let mut ops: Vec<Json> = Vec::new();
    for section in KINDS {
        let of_section = wanted.iter().filter(|(k, _)| kind(k) == Some(*section));
        ops.extend(
            of_section
                .filter(|(k, v)| changed(k, v))
                .map(|(k, v)| put(k, v)),
        );
    }
    let written = ops.len();
    for section in KINDS.iter().rev() {
        let of_section = now.keys().filter(|k| kind(k) == Some(*section));
        ops.extend(of_section.filter(gone).map(delete));
    }
    let deleted = ops.len() - written;
    let mut revision = now.revision;
    for chunk in ops.chunks(MAX_TXN_OPS) {
        let answer = client::call(
            host,
            "/v3/kv/txn",
            &json!({ "success": chunk }),
            etcd.timeout,
        )
        .await?;
        revision = int(answer.pointer("/header/revision")).unwrap_or(revision);
    }
    Ok(format!(
        "{written} keys written, {deleted} deleted, {} unchanged under {} on {} (revision {revision})",
        wanted.len() - written,
        etcd.prefix,
        host.url
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&args("put -c c.yaml a.yaml")),
            Ok(Some(("c.yaml".into(), "a.yaml".into())))
        );
        assert_eq!(
            parse_args(&args("put a.yaml")),
            Ok(Some(("conf/config.yaml".into(), "a.yaml".into())))
        );
        assert_eq!(parse_args(&args("--help")), Ok(None));
        assert!(parse_args(&args("get a.yaml")).is_err());
        assert!(parse_args(&args("put")).is_err());
        assert!(parse_args(&args("put a b")).is_err());
    }

    #[test]
    fn items_become_keys_in_apisix_layout() {
        let doc: Value = serde_yaml::from_str(
            "routes:\n  - {uri: /a, upstream_id: 7}\n  - {id: r2, uri: /b, upstream_id: 7}\n\
             upstreams:\n  - {id: 7, nodes: {\"127.0.0.1:80\": 1}}\n",
        )
        .unwrap();
        let keys = keys_of(&doc, "/apisix").unwrap();
        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "/apisix/routes/arr_1",
                "/apisix/routes/r2",
                "/apisix/upstreams/7"
            ]
        );
        let route: Json = serde_json::from_slice(&keys["/apisix/routes/arr_1"]).unwrap();
        assert_eq!(route, json!({"id": "arr_1", "uri": "/a", "upstream_id": 7}));
        let upstream: Json = serde_json::from_slice(&keys["/apisix/upstreams/7"]).unwrap();
        assert_eq!(upstream["id"], 7);
    }
}
