//! Walking a parsed YAML document while remembering where we are.
//!
//! serde_yaml gives us a `Value` tree but no paths; this module adds them so
//! every validation message names the file and the key path inside it
//! (`conf/apisix.yaml: routes[1].upstream_id: no upstream "api"`), and
//! collects every problem instead of stopping at the first. It knows YAML
//! shapes only, nothing about routes, upstreams or plugins.

use crate::yaml::kind;
use serde_yaml::{Mapping, Value};
use std::fmt::Display;

/// Problems found in one file, each with its key path.
#[derive(Debug, Default)]
pub struct Problems {
    file: String,
    list: Vec<String>,
}

impl Problems {
    pub fn new(file: impl Into<String>) -> Self {
        Problems {
            file: file.into(),
            list: Vec::new(),
        }
    }

    /// Records a problem at `path` (an empty path means the whole file).
    pub fn at(&mut self, path: &str, message: impl Display) {
        if path.is_empty() {
            self.list.push(format!("{}: {}", self.file, message));
        } else {
            self.list
                .push(format!("{}: {}: {}", self.file, path, message));
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.list
    }

    pub fn file(&self) -> &str {
        &self.file
    }
}

/// `parent.key`, or `key` at the top.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Records every key of the mapping at `path` that is not in `known` (and
/// every non-string key).
pub fn unknown_keys<'a>(
    keys: impl Iterator<Item = &'a Value>,
    path: &str,
    known: &[&str],
    p: &mut Problems,
) {
    for key in keys {
        match key.as_str() {
            Some(k) if known.contains(&k) => {}
            Some(k) => p.at(
                &join(path, k),
                format!("unknown key (expected one of: {})", known.join(", ")),
            ),
            None => p.at(path, format!("keys must be strings, got {}", kind(key))),
        }
    }
}

/// A mapping node with its path: typed getters that report to `Problems`.
pub struct Obj<'a> {
    pub map: &'a Mapping,
    pub path: String,
}

impl<'a> Obj<'a> {
    /// Views `v` as a mapping, or records "expected a mapping".
    pub fn new(v: &'a Value, path: String, p: &mut Problems) -> Option<Obj<'a>> {
        match v {
            Value::Mapping(map) => Some(Obj { map, path }),
            other => {
                p.at(&path, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    /// Records every key that is not in `known` (and every non-string key).
    pub fn only(&self, known: &[&str], p: &mut Problems) {
        unknown_keys(self.map.keys(), &self.path, known, p);
    }

    /// The raw value at `key`, treating an explicit `null` as absent.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.value(key).is_some()
    }

    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn obj(&self, key: &str, p: &mut Problems) -> Option<Obj<'a>> {
        Obj::new(self.value(key)?, self.path_of(key), p)
    }

    pub fn seq(&self, key: &str, p: &mut Problems) -> Option<&'a Vec<Value>> {
        match self.value(key)? {
            Value::Sequence(s) => Some(s),
            other => {
                p.at(
                    &self.path_of(key),
                    format!("expected a list, got {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn str(&self, key: &str, p: &mut Problems) -> Option<&'a str> {
        match self.value(key)? {
            Value::String(s) => Some(s),
            other => {
                p.at(
                    &self.path_of(key),
                    format!("expected a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// A string or an integer, as APISIX ids may be either.
    pub fn id(&self, key: &str, p: &mut Problems) -> Option<String> {
        match self.value(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            other => {
                p.at(
                    &self.path_of(key),
                    format!(
                        "expected a non-empty string or an integer, got {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    pub fn bool(&self, key: &str, p: &mut Problems) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                p.at(
                    &self.path_of(key),
                    format!("expected true or false, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn int(&self, key: &str, min: i64, max: i64, p: &mut Problems) -> Option<i64> {
        let v = self.value(key)?;
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                p.at(
                    &self.path_of(key),
                    format!("{n} is out of range {min}..={max}"),
                );
                None
            }
            None => {
                p.at(
                    &self.path_of(key),
                    format!("expected an integer, got {}", kind(v)),
                );
                None
            }
        }
    }

    /// A non-negative number (integer or float), e.g. a timeout in seconds.
    pub fn seconds(&self, key: &str, p: &mut Problems) -> Option<f64> {
        let v = self.value(key)?;
        match v.as_f64() {
            Some(n) if n > 0.0 && n.is_finite() && n <= 86_400.0 => Some(n),
            Some(n) => {
                p.at(
                    &self.path_of(key),
                    format!("{n} is not a number of seconds in (0, 86400]"),
                );
                None
            }
            None => {
                p.at(
                    &self.path_of(key),
                    format!("expected a number of seconds, got {}", kind(v)),
                );
                None
            }
        }
    }

    /// A string or a list of strings (`uri`/`uris`, `host`/`hosts`).
    pub fn strings(&self, key: &str, p: &mut Problems) -> Option<Vec<String>> {
        let path = self.path_of(key);
        match self.value(key)? {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Sequence(items) if !items.is_empty() => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => p.at(
                            &index(&path, i),
                            format!("expected a string, got {}", kind(item)),
                        ),
                    }
                }
                Some(out)
            }
            Value::Sequence(_) => {
                p.at(&path, "must not be empty");
                None
            }
            other => {
                p.at(
                    &path,
                    format!(
                        "expected a string or a list of strings, got {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }
}
