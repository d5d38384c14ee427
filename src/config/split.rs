//! Cuts the text of a routes file into its top-level sections, and the
//! block lists among them into items, without parsing it: so that a reload
//! can tell which items' text did not change and parse only the others
//! (see `reuse.rs`). It knows YAML's line layout only, not what the
//! sections mean.
//!
//! The cut is conservative. It accepts the layout of APISIX's examples and
//! of tinygate's etcd snapshots: `key:` lines at column 0 with plain keys,
//! each item of a list starting with `- ` at one indentation (column 0
//! included), comments and blank lines anywhere. It declines anything else
//! (a document marker or directive, flow style at the top, a quoted or
//! repeated key, a tab or a byte-order mark at the start of a line, a line
//! indented less than the items it sits among), and the caller then parses
//! the whole document as one.
//!
//! Why an item parsed alone reads as it does in place: every cut falls
//! where a line starts a new item or key at an indentation that ends
//! whatever was open before it. YAML ends a block scalar or a plain
//! multi-line scalar at such a line (YAML 1.2 §8.1.1.1, §7.3.3: their
//! lines are indented more than the item's dash), and a quoted scalar or
//! a flow collection that such a line would cut leaves the part before
//! the cut unterminated, which fails to parse alone, and the caller falls
//! back. Trailing comment lines at the items' indentation or less are left
//! out of an item (a comment never changes a value, §6.6), so that
//! appending an item or moving `#END` leaves the last item's text as it
//! was; blank lines are kept, as a `|+` scalar keeps them (§8.1.1.2). An
//! alias to an anchor outside its item fails alone, and falls back.

use std::collections::HashSet;

/// The sections of a routes file, in file order.
#[derive(Debug, PartialEq)]
pub(super) struct Cut<'t> {
    pub sections: Vec<Section<'t>>,
}

/// One top-level key and its value's text.
#[derive(Debug, PartialEq)]
pub(super) struct Section<'t> {
    pub key: &'t str,
    pub body: Body<'t>,
}

/// How a section's value was cut.
#[derive(Debug, PartialEq)]
pub(super) enum Body<'t> {
    /// Not a block list (a flow list, a mapping, a scalar, nothing): the
    /// text from the key's line to the next key, a one-key mapping.
    Whole(&'t str),
    /// A block list: the text of each item, `- ` and indentation included,
    /// each one a one-item list when parsed alone.
    Items(Vec<&'t str>),
}

/// What a line is, as far as the cut cares.
#[derive(Clone, Copy, PartialEq)]
enum Line<'t> {
    /// Only spaces.
    Blank,
    /// `#` after the indentation.
    Comment { indent: usize },
    /// Anything else: its indentation and the text after it.
    Content { indent: usize, rest: &'t str },
}

/// Where the section being read stands.
enum Open {
    /// After `key:` with nothing on its line: the next content line says
    /// whether a block list follows.
    Pending,
    /// Not a block list: everything up to the next key belongs to it.
    Whole,
    /// A block list whose dashes sit at `indent`; each item is
    /// `(start, end)` in the text, `end` moving past every line it keeps.
    Items {
        indent: usize,
        items: Vec<(usize, usize)>,
    },
}

/// Cuts `text` into sections and items, or `None` when its layout is not
/// one this cut can be sure of.
pub(super) fn cut(text: &str) -> Option<Cut<'_>> {
    if text.starts_with('\u{feff}') {
        return None;
    }
    let mut sections = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    // The section being read: its key, where its text starts, its state.
    let mut open: Option<(&str, usize, Open)> = None;
    let mut at = 0;
    for raw in text.split_inclusive('\n') {
        let start = at;
        at += raw.len();
        let line = classify(raw)?;
        let Line::Content { indent, rest } = line else {
            if let Some((_, _, Open::Items { indent: n, items })) = &mut open {
                let last = items.last_mut().expect("a list has its first item");
                if !matches!(line, Line::Comment { indent } if indent <= *n) {
                    last.1 = at;
                }
            }
            continue;
        };
        let item = rest == "-" || rest.starts_with("- ");
        match &mut open {
            Some((_, _, state @ Open::Pending)) if indent > 0 || item => {
                *state = if item {
                    Open::Items {
                        indent,
                        items: vec![(start, at)],
                    }
                } else {
                    Open::Whole
                };
                continue;
            }
            Some((_, _, Open::Items { indent: n, items }))
                if indent >= *n && indent > 0 || item =>
            {
                if indent == *n && !item {
                    return None;
                }
                if indent == *n {
                    items.push((start, at));
                } else if indent > *n {
                    items.last_mut().expect("a list has its first item").1 = at;
                } else {
                    return None; // a dash less indented than the list's
                }
                continue;
            }
            Some((_, _, Open::Whole)) if indent > 0 => continue,
            Some(_) | None if indent > 0 => return None,
            _ => {}
        }
        // Column 0, not an item of the open list: a new key, or nothing
        // this cut can read.
        let (key, value) = key_line(rest)?;
        if !seen.insert(key) {
            return None; // YAML refuses a repeated key: let the parser say so
        }
        if let Some(done) = open.take() {
            sections.push(close(text, done, start));
        }
        let state = if value.is_empty() || value.starts_with('#') {
            Open::Pending
        } else {
            Open::Whole
        };
        open = Some((key, start, state));
    }
    if let Some(done) = open.take() {
        sections.push(close(text, done, text.len()));
    }
    Some(Cut { sections })
}

/// The finished section `(key, start, state)` whose text ends at `end`.
fn close<'t>(
    text: &'t str,
    (key, start, state): (&'t str, usize, Open),
    end: usize,
) -> Section<'t> {
    let body = match state {
        Open::Items { items, .. } => Body::Items(items.iter().map(|&(s, e)| &text[s..e]).collect()),
        Open::Pending | Open::Whole => Body::Whole(&text[start..end]),
    };
    Section { key, body }
}

/// What `raw` (one line, its `\n` included) is; `None` for a line the cut
/// declines: a tab in the indentation.
fn classify(raw: &str) -> Option<Line<'_>> {
    let line = raw.trim_end_matches('\n').trim_end_matches('\r');
    let rest = line.trim_start_matches(' ');
    let indent = line.len() - rest.len();
    if rest.starts_with('\t') {
        return None;
    }
    Some(if rest.trim_end_matches([' ', '\t']).is_empty() {
        Line::Blank
    } else if rest.starts_with('#') {
        Line::Comment { indent }
    } else {
        Line::Content { indent, rest }
    })
}

/// `(key, what follows the colon)` of a `key:` line whose key is a plain
/// word (`routes`, `plugin_configs`), or `None`.
fn key_line(line: &str) -> Option<(&str, &str)> {
    let (key, after) = line.split_once(':')?;
    let plain = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        return None;
    }
    // A colon is a mapping indicator only before white space (§7.4).
    match after.bytes().next() {
        None | Some(b' ' | b'\t') => Some((key, after.trim_matches([' ', '\t']))),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    /// The cut of `text` as (key, Some(items) | None for whole).
    /// A section's key, and its items (`None` when given whole).
    type Shape<'t> = Vec<(&'t str, Option<Vec<&'t str>>)>;

    fn shape(text: &str) -> Option<Shape<'_>> {
        let cut = cut(text)?;
        Some(
            cut.sections
                .into_iter()
                .map(|s| match s.body {
                    Body::Whole(_) => (s.key, None),
                    Body::Items(items) => (s.key, Some(items)),
                })
                .collect(),
        )
    }

    /// The document read section by section and item by item, as the
    /// reload reads it; `None` when a piece does not parse alone.
    fn read_in_pieces(text: &str) -> Option<Value> {
        let cut = cut(text)?;
        let mut top = serde_yaml::Mapping::new();
        for section in cut.sections {
            let value = match section.body {
                Body::Whole(t) => {
                    let v: Value = serde_yaml::from_str(t).ok()?;
                    v.get(section.key)?.clone()
                }
                Body::Items(items) => {
                    let mut list = Vec::new();
                    for t in items {
                        match serde_yaml::from_str(t).ok()? {
                            Value::Sequence(mut one) if one.len() == 1 => list.push(one.remove(0)),
                            _ => return None,
                        }
                    }
                    Value::Sequence(list)
                }
            };
            top.insert(section.key.into(), value);
        }
        Some(Value::Mapping(top))
    }

    /// Either the pieces read as the whole does, or the cut (or a piece)
    /// declines, and the caller reads the whole: never a different value.
    fn check_same(text: &str) {
        let whole: Result<Value, _> = serde_yaml::from_str(text);
        if let Some(pieces) = read_in_pieces(text) {
            let whole =
                whole.unwrap_or_else(|e| panic!("pieces parse, whole does not ({e}):\n{text}"));
            assert_eq!(pieces, whole, "pieces differ from the whole:\n{text}");
        }
    }

    #[test]
    fn block_lists_are_cut_into_items() {
        let text = "\
# routes
upstreams:
  - id: u
    nodes: {\"127.0.0.1:1\": 1}
routes:
  - {id: a, uri: /a, upstream_id: u}
  # between
  - id: b

    uri: /b   # trailing
    upstream_id: u
#END
";
        assert_eq!(
            shape(text).unwrap(),
            [
                (
                    "upstreams",
                    Some(vec!["  - id: u\n    nodes: {\"127.0.0.1:1\": 1}\n"])
                ),
                (
                    "routes",
                    Some(vec![
                        "  - {id: a, uri: /a, upstream_id: u}\n",
                        "  - id: b\n\n    uri: /b   # trailing\n    upstream_id: u\n",
                    ])
                ),
            ]
        );
        check_same(text);
    }

    #[test]
    fn lists_at_column_zero_and_other_values_are_cut_too() {
        let text =
            "routes:\n- id: a\n  uri: /a\n- id: b\nssls: []\nplugins:\n  x: 1\nconsumers:\n#END\n";
        assert_eq!(
            shape(text).unwrap(),
            [
                ("routes", Some(vec!["- id: a\n  uri: /a\n", "- id: b\n"])),
                ("ssls", None),
                ("plugins", None),
                ("consumers", None),
            ]
        );
        check_same(text);
    }

    #[test]
    fn layouts_it_cannot_be_sure_of_are_declined() {
        for text in [
            "---\nroutes: []\n",
            "%YAML 1.2\n---\nroutes: []\n",
            "{routes: []}\n",
            "\"routes\": []\n",
            "routes: []\nroutes: []\n",
            "routes:\n\t- a\n",
            "\u{feff}routes: []\n",
            "  routes: []\n",
            "routes:\n    - a\n  - b\n",
            "routes:\n  - a\n  b: c\n",
            "routes:\n  - a\n-b\n",
            "routes:#x\n",
        ] {
            assert_eq!(cut(text), None, "{text:?}");
        }
    }

    #[test]
    fn pieces_read_as_the_whole_or_decline() {
        for text in [
            // Block scalars: clip, strip, keep (trailing blank lines kept).
            "routes:\n  - conf: |\n      line\n\n  - conf: |+\n      kept\n\n\n  - conf: |-\n      x\n#END\n",
            "routes:\n  - conf: |+\n      kept\n\n  # comment\n\n  - b\n",
            "routes:\n  - conf: >\n      folded\n      text\n\n      more\n  - b\n",
            // A block scalar's content that looks like a comment or an item.
            "routes:\n  - conf: |\n      # not a comment\n      - not an item\n  - b\n",
            // Multi-line plain and quoted scalars, flow collections.
            "routes:\n  - desc: one\n      two\n  - b\n",
            "routes:\n  - desc: \"one\n    two\"\n  - b\n",
            "routes:\n  - {id: a,\n     uri: /a}\n  - [1,\n    2]\n",
            // A quoted scalar or flow collection cut by a dash line: the
            // first piece fails alone.
            "routes:\n  - desc: \"one\n  - two\"\n",
            "routes:\n  - [1,\n  - 2]\n",
            "routes:\n  - desc: 'one\nupstreams: x'\n",
            // Anchors inside an item, and across items (fails alone).
            "routes:\n  - &a {x: 1}\n  - *a\n",
            "routes:\n  - x: &a 1\n    y: *a\n",
            // Nested lists, empty items, CRLF, comments after keys.
            "routes:\n  - - a\n    - b\n  -\n  - \n    c: d\n",
            "routes: # c\r\n  - a: 1\r\n  - b: 2\r\n#END\r\n",
            "routes:\n\n# only comments\n\nupstreams:\n  - x\n",
            "routes: [a,\n  b]\nupstreams: {x: 1}\n",
            "routes: !!seq\n  - a\n",
            "routes:\n  - a # c\n  # c\n#END\n",
        ] {
            check_same(text);
        }
    }

    #[test]
    fn trailing_comments_stay_out_of_the_last_item() {
        let a = "routes:\n  - {id: a}\n#END\n";
        let b = "routes:\n  - {id: a}\n  - {id: b}\n#END\n";
        let first = |t| match cut(t).unwrap().sections.remove(0).body {
            Body::Items(items) => items[0],
            Body::Whole(_) => panic!("a list"),
        };
        assert_eq!(first(a), first(b));
        assert_eq!(first(a), "  - {id: a}\n");
    }
}
