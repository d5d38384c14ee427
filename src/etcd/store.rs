//! The keys under the prefix as last read or watched ([`Store`]), and the
//! routes document built from them ([`Document`]): the same shape as
//! `apisix.yaml`, so the YAML provider's validation applies unchanged.
//!
//! Each key's value is read as an item (JSON, the Admin API's fields
//! dropped, the id from the key) once, when it arrives, and kept with its
//! canonical JSON text: what identifies the item across loads (a change
//! of one key re-validates that item and what refers to it, not the
//! others: `config/reuse.rs`), and its line in the snapshot file.
//!
//! APISIX's layout is one JSON value per item: `<prefix>/routes/<id>`,
//! `<prefix>/upstreams/<id>`, `<prefix>/services/<id>`,
//! `<prefix>/plugin_configs/<id>`, `<prefix>/global_rules/<id>`,
//! `<prefix>/ssls/<id>` (certificates inline as PEM, as the Admin API
//! stores them, or `file:` with an absolute path on every node). Keys of
//! kinds tinygate does not implement (`consumers`, ...) are
//! reported and skipped; APISIX's own
//! bookkeeping keys (`<prefix>/routes/` placeholders holding `init_dir`,
//! `<prefix>/plugins`, `<prefix>/data_plane/...`) are ignored.

use super::base64;
use super::client::int;
use crate::config::{
    parse_routes_document, parse_routes_sections, MainConfig, Reuse, RouteRules, Routes, Sections,
};
use crate::live::RoutesSource;
use serde_json::Value as Json;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Kinds of APISIX resources that tinygate does not implement: present in
/// etcd, they are reported (as the YAML provider refuses them) and skipped.
const UNSUPPORTED_KINDS: &[&str] = &[
    "consumers",
    "consumer_groups",
    "plugin_metadata",
    "stream_routes",
    "protos",
    "secrets",
];

/// The kinds of items tinygate reads, each a section of the routes
/// document (`<prefix>/<kind>/<id>`, one JSON value each); a kind comes
/// after the kinds its items refer to.
pub const KINDS: &[&str] = &[
    "ssls",
    "upstreams",
    "services",
    "plugin_configs",
    "global_rules",
    "routes",
];

/// Fields APISIX's Admin API adds to every stored value: bookkeeping, not
/// configuration, so they are dropped before validation.
const ADMIN_FIELDS: &[&str] = &["create_time", "update_time"];

/// The keys under the prefix at one etcd revision.
#[derive(Debug, Default, Clone)]
pub struct Store {
    /// The revision this state is at: the range's, then the last event's.
    pub revision: i64,
    kvs: BTreeMap<String, Arc<Stored>>,
}

/// One key's value, and the item it makes (read when first needed).
#[derive(Debug)]
struct Stored {
    bytes: Vec<u8>,
    item: OnceLock<Result<Item, String>>,
}

/// A stored value read as a routes-document item.
#[derive(Debug)]
struct Item {
    value: Value,
    /// The item as one line of JSON (which YAML reads as the same value):
    /// its identity across loads, and its line in the snapshot.
    json: String,
}

impl Stored {
    fn new(bytes: Vec<u8>) -> Arc<Stored> {
        Arc::new(Stored {
            bytes,
            item: OnceLock::new(),
        })
    }

    /// The item, with `id` from the key when the value has none.
    fn item(&self, id: &str) -> &Result<Item, String> {
        self.item.get_or_init(|| item(id, &self.bytes))
    }
}

impl Store {
    /// The state in a `/v3/kv/range` answer.
    ///
    /// # Errors
    /// When the answer is not shaped like etcd's.
    pub fn from_range(json: &Json) -> Result<Store, String> {
        let revision = int(json.pointer("/header/revision")).ok_or("range: no header.revision")?;
        let mut kvs = BTreeMap::new();
        for kv in json
            .get("kvs")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let (key, value) = key_value(kv)?;
            kvs.insert(key, Stored::new(value));
        }
        Ok(Store { revision, kvs })
    }

    /// Applies the events of one watch response (puts and deletes).
    ///
    /// # Errors
    /// When an event is not shaped like etcd's.
    pub fn apply_events(&mut self, events: &[Json]) -> Result<(), String> {
        for event in events {
            let kv = event.get("kv").ok_or("watch: event without kv")?;
            let (key, value) = key_value(kv)?;
            if event.get("type").and_then(Json::as_str) == Some("DELETE") {
                self.kvs.remove(&key);
            } else if self.value(&key) != Some(&value) {
                self.kvs.insert(key, Stored::new(value));
            }
            if let Some(rev) = int(kv.get("mod_revision")) {
                self.revision = self.revision.max(rev);
            }
        }
        Ok(())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    /// True when both hold the same keys and values, whatever the revision.
    pub fn same_content(&self, other: &Store) -> bool {
        self.kvs.len() == other.kvs.len()
            && self
                .kvs
                .iter()
                .zip(&other.kvs)
                .all(|((k, v), (k2, v2))| k == k2 && v.bytes == v2.bytes)
    }

    /// The value at `key` (for `etcd put`'s diff).
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.kvs.get(key).map(|s| &s.bytes[..])
    }

    /// Every key, in order (for `etcd put`'s diff).
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.kvs.keys()
    }

    /// The routes document of the keys under `prefix`. Only values that
    /// arrived since the last call are read.
    pub fn document(&self, prefix: &str) -> Document {
        let dir = format!("{prefix}/");
        let mut doc = Document {
            label: "etcd".into(),
            ..Document::default()
        };
        let mut sections: Vec<KindItems> = KINDS.iter().map(|kind| (*kind, Vec::new())).collect();
        for (key, stored) in &self.kvs {
            let Some((kind, id)) = key.strip_prefix(&dir).and_then(|k| k.split_once('/')) else {
                continue;
            };
            if id.is_empty() {
                continue; // APISIX's directory placeholder
            }
            if UNSUPPORTED_KINDS.contains(&kind) {
                doc.problems.push(format!(
                    "etcd {key}: {kind} are not supported by tinygate yet"
                ));
                continue;
            }
            let Some((_, items)) = sections.iter_mut().find(|(s, _)| *s == kind) else {
                continue;
            };
            // An unreadable value stays in its place, as an invalid item:
            // the version served before may keep serving in its stead.
            if let Err(e) = stored.item(id) {
                doc.problems.push(format!("etcd {key}: {e}"));
            }
            items.push((key.clone(), Arc::clone(stored)));
        }
        doc.content = Content::Items(sections);
        doc
    }
}

/// A routes document (`{routes: [...], upstreams: [...], ...}`) and where its
/// items came from, to name them in messages.
#[derive(Debug, Clone, Default)]
pub struct Document {
    content: Content,
    /// Problems found while building it: values that are not JSON, kinds
    /// tinygate does not implement.
    problems: Vec<String>,
    /// `etcd`, or the snapshot's path.
    label: String,
}

#[derive(Debug, Clone)]
enum Content {
    /// Per section, its items' keys and values, each read as an item.
    Items(Vec<KindItems>),
    /// A snapshot file, read whole.
    Whole(Value),
}

/// One kind (`routes`, ...) and its items: each key with its value.
type KindItems = (&'static str, Vec<(String, Arc<Stored>)>);

impl Default for Content {
    fn default() -> Self {
        Content::Whole(Value::Null)
    }
}

impl Document {
    /// The snapshot file written by [`Document::snapshot_text`].
    ///
    /// # Errors
    /// When it cannot be read, lacks `#END`, or is not YAML.
    pub fn from_snapshot(path: &Path) -> Result<Document, String> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{label}: {e}"))?;
        if !text.trim_end().ends_with("#END") {
            return Err(format!("{label}: incomplete (no #END line)"));
        }
        let value = serde_yaml::from_str(&text).map_err(|e| format!("{label}: {e}"))?;
        Ok(Document {
            content: Content::Whole(value),
            label,
            ..Document::default()
        })
    }

    /// Validates the document against `rules` as the YAML provider does
    /// on reload, taking over what `reuse` allows: the valid routes, and
    /// the problems of skipped items, each naming its etcd key.
    pub fn validate(&self, rules: RouteRules, reuse: Reuse) -> (Routes, Vec<String>) {
        let (routes, problems) = match &self.content {
            Content::Whole(value) => parse_routes_document(&self.label, value, rules),
            Content::Items(sections) => {
                let sections = Sections::from_items(sections.iter().map(|(kind, items)| {
                    let items = items
                        .iter()
                        .map(|(key, stored)| match stored.item.get() {
                            Some(Ok(item)) => {
                                (key.as_str(), item.json.as_bytes(), Some(&item.value))
                            }
                            _ => (key.as_str(), &stored.bytes[..], None),
                        })
                        .collect();
                    (*kind, items)
                }));
                parse_routes_sections(&self.label, &sections, rules, reuse)
            }
        };
        let mut all = self.problems.clone();
        all.extend(problems.into_iter().map(|p| self.name_item(p)));
        (routes, all)
    }

    /// The document as what `Live` validates, on each change and again on
    /// `SIGHUP`; problems are logged each time it is validated.
    pub fn into_source(self) -> RoutesSource {
        Arc::new(move |main: &MainConfig, reuse: Reuse| {
            let (routes, problems) = self.validate(main.route_rules(), reuse);
            let served_before: Vec<String> = routes
                .items_served_before()
                .iter()
                .filter_map(|path| Some(format!("{} {}", self.label, self.key_at(path)?.0)))
                .collect();
            for problem in problems {
                let named = |item: &String| {
                    problem
                        .strip_prefix(item.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', ' ', '.']))
                };
                if served_before.iter().any(named) {
                    log::error!("{problem} (the version served before keeps serving)");
                } else {
                    log::error!("{problem} (item skipped)");
                }
            }
            routes
        })
    }

    /// The snapshot file's text: the document as `apisix.yaml`, `#END`
    /// included, so it also serves as a routes file for the YAML provider.
    /// Each item is one line of JSON, which YAML reads as the same value.
    pub fn snapshot_text(&self, prefix: &str, revision: i64) -> String {
        let body = match &self.content {
            Content::Whole(value) => serde_yaml::to_string(value).unwrap_or_default(),
            Content::Items(sections) => {
                let mut out = String::new();
                for (kind, items) in sections {
                    out.push_str(kind);
                    out.push_str(if items.is_empty() { ": []\n" } else { ":\n" });
                    for item in items
                        .iter()
                        .filter_map(|(_, s)| s.item.get()?.as_ref().ok())
                    {
                        out.push_str("  - ");
                        out.push_str(&item.json);
                        out.push('\n');
                    }
                }
                out
            }
        };
        format!(
            "# tinygate: routes and upstreams from etcd {prefix} at revision {revision}.\n\
             # Rewritten after every change applied; served from at start when etcd is down.\n\
             {body}#END\n"
        )
    }

    /// `etcd: routes[3].uri: ...` becomes `etcd /apisix/routes/r1: uri: ...`.
    fn name_item(&self, problem: String) -> String {
        let Some(rest) = problem.strip_prefix(&format!("{}: ", self.label)) else {
            return problem;
        };
        match self.key_at(rest) {
            Some((key, tail)) => match tail.strip_prefix('.') {
                Some(field) => format!("{} {key}: {field}", self.label),
                None => format!("{} {key}{tail}", self.label),
            },
            None => problem,
        }
    }

    /// The etcd key of the item at the start of `path` (`routes[3].uri`),
    /// and the rest of the path (`.uri`).
    fn key_at<'p>(&self, path: &'p str) -> Option<(&str, &'p str)> {
        let Content::Items(sections) = &self.content else {
            return None;
        };
        sections.iter().find_map(|(section, items)| {
            let after = path.strip_prefix(section)?.strip_prefix('[')?;
            let (i, tail) = after.split_once(']')?;
            let (key, _) = items.get(i.parse::<usize>().ok()?)?;
            Some((key.as_str(), tail))
        })
    }
}

/// A stored value as a routes-file item: JSON, the Admin API's timestamps
/// dropped, the id taken from the key when the value has none.
fn item(id: &str, value: &[u8]) -> Result<Item, String> {
    let mut json: Json =
        serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    if let Some(obj) = json.as_object_mut() {
        for field in ADMIN_FIELDS {
            obj.remove(*field);
        }
        obj.entry("id").or_insert_with(|| id.into());
    }
    Ok(Item {
        value: serde_yaml::to_value(&json).map_err(|e| e.to_string())?,
        json: json.to_string(),
    })
}

/// The decoded key and value of one `kv`.
fn key_value(kv: &Json) -> Result<(String, Vec<u8>), String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        match kv.get(name).and_then(Json::as_str) {
            Some(text) => base64::decode(text).ok_or_else(|| format!("{name} is not base64")),
            None => Ok(Vec::new()),
        }
    };
    let key = String::from_utf8(field("key")?).map_err(|_| "key is not UTF-8")?;
    Ok((key, field("value")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(key: &str, value: &str) -> Json {
        json!({
            "key": base64::encode(key.as_bytes()),
            "value": base64::encode(value.as_bytes()),
            "mod_revision": "7"
        })
    }

    fn store(kvs: &[(&str, &str)]) -> Store {
        let kvs: Vec<Json> = kvs.iter().map(|(k, v)| kv(k, v)).collect();
        Store::from_range(&json!({"header": {"revision": "9"}, "kvs": kvs})).unwrap()
    }

    #[test]
    fn apisix_layout_becomes_a_routes_document() {
        let s = store(&[
            ("/apisix/routes/", "init_dir"),
            ("/apisix/plugins", "[]"),
            (
                "/apisix/routes/r1",
                r#"{"uri":"/a","upstream_id":"u1","create_time":1,"update_time":2}"#,
            ),
            ("/apisix/upstreams/u1", r#"{"nodes":{"127.0.0.1:80":1}}"#),
            ("/other/routes/x", r#"{"uri":"/x"}"#),
        ]);
        assert_eq!(s.revision, 9);
        let doc = s.document("/apisix");
        let (routes, problems) = doc.validate(RouteRules::default(), Reuse::Nothing);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(routes.routes.len(), 1);
        assert_eq!(routes.routes[0].id, "r1");
        assert_eq!(routes.upstreams[0].id, "u1");
    }

    #[test]
    fn invalid_items_are_named_by_key_and_skipped() {
        let s = store(&[
            ("/apisix/routes/bad", r#"{"uri":"nope","upstream_id":"u1"}"#),
            ("/apisix/routes/good", r#"{"uri":"/g","upstream_id":"u1"}"#),
            ("/apisix/routes/junk", "{not json"),
            ("/apisix/routes/list", "[1]"),
            ("/apisix/consumers/c1", "{}"),
            (
                "/apisix/upstreams/u1",
                r#"{"nodes":{"127.0.0.1:80":1},"scheme":"grpcs"}"#,
            ),
            ("/apisix/upstreams/u2", r#"{"nodes":{"127.0.0.1:80":1}}"#),
        ]);
        let (routes, problems) = s
            .document("/apisix")
            .validate(RouteRules::default(), Reuse::Nothing);
        assert_eq!(routes.routes.len(), 0);
        assert_eq!(routes.upstreams.len(), 1);
        assert_eq!(
            problems,
            [
                "etcd /apisix/consumers/c1: consumers are not supported by tinygate yet",
                "etcd /apisix/routes/junk: value is not JSON: key must be a string at line 1 column 2",
                "etcd /apisix/upstreams/u1: scheme: only http and https are supported, not \"grpcs\"",
                "etcd /apisix/routes/bad: uri \"nope\" must start with / and be at most 4096 bytes",
                "etcd /apisix/routes/bad: upstream_id: no upstream \"u1\"",
                "etcd /apisix/routes/good: upstream_id: no upstream \"u1\"",
                "etcd /apisix/routes/list: expected a mapping, got a list",
            ]
        );
    }

    #[test]
    fn an_invalid_change_keeps_the_version_served_before_in_its_place() {
        let mut s = store(&[
            ("/apisix/routes/r1", r#"{"uri":"/a","upstream_id":"u1"}"#),
            ("/apisix/routes/r2", r#"{"uri":"/b","upstream_id":"u1"}"#),
            ("/apisix/routes/r3", r#"{"uri":"/c","upstream_id":"u1"}"#),
            ("/apisix/upstreams/u1", r#"{"nodes":{"127.0.0.1:80":1}}"#),
        ]);
        let (before, problems) = s
            .document("/apisix")
            .validate(RouteRules::default(), Reuse::Nothing);
        assert!(problems.is_empty(), "{problems:?}");
        s.apply_events(&[
            json!({"kv": kv("/apisix/routes/r1", r#"{"uri":"no-slash","upstream_id":"u1"}"#)}),
            json!({"kv": kv("/apisix/routes/r2", "{not json")}),
            json!({"kv": kv("/apisix/routes/r4", r#"{"uri":"no-slash"}"#)}),
        ])
        .unwrap();
        let doc = s.document("/apisix");
        let (after, problems) = doc.validate(RouteRules::default(), Reuse::Items(&before));
        // r1 and r2 serve as they were; the new r4 has nothing to fall
        // back on and is skipped; each problem names its key.
        let ids: Vec<&str> = after.routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2", "r3"]);
        assert!(before
            .routes
            .iter()
            .zip(&after.routes)
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        assert_eq!(after.items_served_before(), ["routes[0]", "routes[1]"]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("etcd /apisix/routes/r2: value is not JSON"));
        assert!(problems[1].starts_with("etcd /apisix/routes/r1: uri \"no-slash\""));
        assert!(problems[2].starts_with("etcd /apisix/routes/r4: uri \"no-slash\""));
        assert!(problems[3].starts_with("etcd /apisix/routes/r4: needs an upstream"));
        // Put right, it is served as put.
        s.apply_events(&[
            json!({"kv": kv("/apisix/routes/r1", r#"{"uri":"/a2","upstream_id":"u1"}"#)}),
        ])
        .unwrap();
        let (fixed, _) = s
            .document("/apisix")
            .validate(RouteRules::default(), Reuse::Items(&after));
        assert_eq!(
            fixed.routes[0].uris,
            [crate::config::UriMatch::Exact("/a2".into())]
        );
        assert_eq!(fixed.items_served_before(), ["routes[1]"]);
    }

    #[test]
    fn events_put_and_delete() {
        let mut s = store(&[("/apisix/routes/a", "1")]);
        s.apply_events(&[
            json!({"kv": kv("/apisix/routes/b", "2")}),
            json!({"type": "DELETE", "kv": {"key": base64::encode(b"/apisix/routes/a"), "mod_revision": "12"}}),
        ])
        .unwrap();
        let keys: Vec<&String> = s.keys().collect();
        assert_eq!(keys, ["/apisix/routes/b"]);
        assert_eq!(s.revision, 12);
    }

    #[test]
    fn snapshot_round_trips() {
        let s = store(&[("/apisix/routes/r1", r#"{"uri":"/a","plugins":{}}"#)]);
        let doc = s.document("/apisix");
        let path = std::env::temp_dir().join(format!("tinygate-snap-{}.yaml", std::process::id()));
        std::fs::write(&path, doc.snapshot_text("/apisix", 9)).unwrap();
        let back = Document::from_snapshot(&path).unwrap();
        let (routes, problems) = back.validate(RouteRules::default(), Reuse::Nothing);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(routes.routes[0].id, "r1");
        std::fs::write(&path, "routes: []\n").unwrap();
        assert!(Document::from_snapshot(&path)
            .unwrap_err()
            .contains("no #END"));
        let _ = std::fs::remove_file(&path);
    }
}
