//! A routes document as validation reads it ([`Sections`]): its top-level
//! keys in order, each value given whole or as a list of items, and each
//! item with what identifies it across loads (its text), so that a reload
//! can take over an item whose text did not change without reading it
//! again (`reuse.rs`).
//!
//! Built from a routes file's text ([`Sections::from_text`]: cut by
//! `split.rs`, and only the items the last load did not have parsed, each
//! alone), from a document parsed whole ([`Sections::whole`]: no item has
//! an identity then), or from items that arrive one by one, as etcd's do
//! ([`Sections::from_items`]). It knows the document's shape, not what
//! its items mean.

use super::reuse::Identity;
use super::split::{self, Body};
use super::tree::Problems;
use super::{parse_yaml, ConfigError};
use crate::yaml::kind;
use serde_yaml::Value;
use std::borrow::Cow;
use std::cell::OnceCell;

/// The top-level keys of a routes document, in order, with their values.
pub struct Sections<'t> {
    list: Vec<(Value, Section<'t>)>,
}

/// The value of one top-level key.
enum Section<'t> {
    /// Read at once (not a block list, or a document parsed whole).
    Whole(Cow<'t, Value>),
    /// A list whose items were given one by one.
    Items(Vec<Item<'t>>),
}

/// One item of a list given item by item.
pub struct Item<'t> {
    /// What recognises the item across loads: its text.
    identity: Identity<'t>,
    /// Where it is kept, for items that each have a place of their own
    /// (etcd's keys): a load that finds this version invalid serves the
    /// last valid one from the same place.
    name: Option<&'t str>,
    content: Content<'t>,
}

enum Content<'t> {
    /// YAML text (the identity), parsed when first needed: a one-item list.
    Yaml(OnceCell<Option<Value>>),
    /// Already a value; `None` for one that could not be read, which its
    /// giver has reported.
    Ready(Option<&'t Value>),
}

/// One item given to [`Sections::from_items`]: (name, identity, value).
pub type GivenItem<'t> = (&'t str, &'t [u8], Option<&'t Value>);

/// One item of a section, as validation sees it.
#[derive(Clone, Copy)]
pub enum ItemRef<'a> {
    /// From a document read whole: no identity.
    Plain(&'a Value),
    Given(&'a Item<'a>),
}

impl<'t> Sections<'t> {
    /// The sections of a routes file's text (after `#END` and `${{VAR}}`
    /// handling). Items `known` recognises (by section and text) are not
    /// parsed now, only if validation needs them; the others are. When the
    /// text cannot be cut for sure, or a piece does not parse alone, the
    /// whole text is parsed as one document instead, so its problems are
    /// reported as the parser sees them (with the line in the file).
    ///
    /// # Errors
    /// The document is not YAML, or not a mapping.
    pub fn from_text(
        label: &str,
        text: &'t str,
        known: impl Fn(&str, Identity) -> bool,
    ) -> Result<Sections<'t>, ConfigError> {
        if let Some(sections) = split::cut(text).and_then(|cut| read_cut(cut, &known)) {
            return Ok(sections);
        }
        let doc = parse_yaml(label, text)?;
        if !(doc.is_mapping() || doc.is_null()) {
            return Err(ConfigError {
                problems: vec![format!(
                    "{label}: expected a mapping with routes and upstreams"
                )],
            });
        }
        Ok(Sections::whole(Cow::Owned(doc)))
    }

    /// A document read whole: a mapping, or null for an empty one.
    pub fn whole(doc: Cow<'t, Value>) -> Sections<'t> {
        let list = match doc {
            Cow::Owned(Value::Mapping(map)) => map
                .into_iter()
                .map(|(k, v)| (k, Section::Whole(Cow::Owned(v))))
                .collect(),
            Cow::Borrowed(Value::Mapping(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), Section::Whole(Cow::Borrowed(v))))
                .collect(),
            _ => Vec::new(),
        };
        Sections { list }
    }

    /// Sections whose items are given one by one, each as (name,
    /// identity, value), in order; `None` for a value that could not be
    /// read (the caller reports why).
    pub fn from_items(
        sections: impl IntoIterator<Item = (&'t str, Vec<GivenItem<'t>>)>,
    ) -> Sections<'t> {
        let list = sections
            .into_iter()
            .map(|(key, items)| {
                let items = items
                    .into_iter()
                    .map(|(name, identity, value)| Item {
                        identity: Identity::of(identity),
                        name: Some(name),
                        content: Content::Ready(value),
                    })
                    .collect();
                (Value::from(key), Section::Items(items))
            })
            .collect();
        Sections { list }
    }

    /// The top-level keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Value> {
        self.list.iter().map(|(k, _)| k)
    }

    /// True when `key` is present with a non-empty list, or any other
    /// value but null.
    pub fn has_content(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(Section::Whole(v)) => {
                !v.is_null() && v.as_sequence().is_none_or(|s| !s.is_empty())
            }
            Some(Section::Items(items)) => !items.is_empty(),
        }
    }

    /// The items of the list at `key`; `None` when absent (or null), or
    /// when it is not a list (a problem).
    pub fn items(&self, key: &str, p: &mut Problems) -> Option<Vec<ItemRef<'_>>> {
        match self.get(key)? {
            Section::Items(items) => Some(items.iter().map(ItemRef::Given).collect()),
            Section::Whole(v) => match &**v {
                Value::Null => None,
                Value::Sequence(s) => Some(s.iter().map(ItemRef::Plain).collect()),
                other => {
                    p.at(key, format!("expected a list, got {}", kind(other)));
                    None
                }
            },
        }
    }

    /// The value at `key` as one tree (a list given item by item is put
    /// together), for sections validated whole.
    pub fn value(&self, key: &str) -> Option<Cow<'_, Value>> {
        Some(match self.get(key)? {
            Section::Whole(v) => Cow::Borrowed(&**v),
            Section::Items(items) => Cow::Owned(Value::Sequence(
                items
                    .iter()
                    .map(|i| ItemRef::Given(i).value().cloned().unwrap_or_default())
                    .collect(),
            )),
        })
    }

    fn get(&self, key: &str) -> Option<&Section<'t>> {
        self.list
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, s)| s)
    }
}

impl<'a> ItemRef<'a> {
    /// What recognises the item across loads; `None` for one read as part
    /// of a whole document.
    pub fn identity(self) -> Option<Identity<'a>> {
        match self {
            ItemRef::Plain(_) => None,
            ItemRef::Given(item) => Some(item.identity),
        }
    }

    /// True for an item given unread (its giver reported why).
    pub fn unread(self) -> bool {
        matches!(
            self,
            ItemRef::Given(Item {
                content: Content::Ready(None),
                ..
            })
        )
    }

    /// Where the item is kept, if it has a place of its own.
    pub fn name(self) -> Option<&'a str> {
        match self {
            ItemRef::Plain(_) => None,
            ItemRef::Given(item) => item.name,
        }
    }

    /// The item's value; `None` only if a piece that parsed alone before
    /// does not any more (it cannot: parsing is a function of the text).
    pub fn value(self) -> Option<&'a Value> {
        match self {
            ItemRef::Plain(v) => Some(v),
            ItemRef::Given(item) => match &item.content {
                Content::Ready(v) => *v,
                Content::Yaml(cell) => cell.get_or_init(|| parse_item(item.identity.text)).as_ref(),
            },
        }
    }
}

/// Reads the pieces of `cut`: sections given whole now, items `known`
/// does not recognise now, the others when needed. `None` when a piece
/// does not parse alone.
fn read_cut<'t>(
    cut: split::Cut<'t>,
    known: &impl Fn(&str, Identity) -> bool,
) -> Option<Sections<'t>> {
    let mut list = Vec::with_capacity(cut.sections.len());
    for section in cut.sections {
        let value = match section.body {
            Body::Whole(text) => {
                let Value::Mapping(mut map) = serde_yaml::from_str::<Value>(text).ok()? else {
                    return None;
                };
                let value = map.remove(section.key)?;
                if !map.is_empty() {
                    return None;
                }
                Section::Whole(Cow::Owned(value))
            }
            Body::Items(texts) => {
                let mut items = Vec::with_capacity(texts.len());
                for text in texts {
                    let mut identity = Identity::of(text.as_bytes());
                    let cell = OnceCell::new();
                    if known(section.key, identity) {
                        identity = identity.matched();
                    } else {
                        cell.set(Some(parse_item(text.as_bytes())?)).ok()?;
                    }
                    items.push(Item {
                        identity,
                        name: None,
                        content: Content::Yaml(cell),
                    });
                }
                Section::Items(items)
            }
        };
        list.push((Value::from(section.key), value));
    }
    Some(Sections { list })
}

/// The value of one cut item's text: a one-item list.
fn parse_item(text: &[u8]) -> Option<Value> {
    match serde_yaml::from_slice::<Value>(text).ok()? {
        Value::Sequence(mut one) if one.len() == 1 => one.pop(),
        _ => None,
    }
}
