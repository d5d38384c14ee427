//! The documentation's links resolve (issue #21): every relative link in
//! README.md, docs/ and the repository's other Markdown files names a file
//! that exists inside the repository, every `#anchor` names a heading of the
//! page it points at (GitHub's heading ids), and every page of docs/ can be
//! reached from README.md. A `cargo test`, so that a landing which moves a
//! heading or a file without its links fails before it lands, not only in
//! CI.
//!
//! Knows Markdown only as far as links and headings go (fenced code and
//! inline code hold no links; ATX headings; `<a id>`/`<a name>` anchors);
//! knows nothing of tinygate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a page offers to links and what it links to.
#[derive(Debug, Default)]
struct Page {
    /// Heading ids as GitHub makes them, and explicit `<a id>` anchors.
    anchors: BTreeSet<String>,
    /// (line number, destination) of every link and reference definition.
    links: Vec<(usize, String)>,
}

/// GitHub's heading id (github-slugger): the heading's text as rendered
/// (inline code kept without its backticks, a link's text, no emphasis
/// marks), lower-cased, with every character that is not a letter, a
/// digit, `-`, `_` or a space removed, and each space turned into `-`.
fn slug(heading: &str) -> String {
    let text = link_texts(heading);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](destination)` becomes `text`; HTML tags go.
fn link_texts(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find(['[', '<']) {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => rest = &rest[end + 1..],
                None => break,
            }
        } else if let Some(close) = rest.find("](") {
            let after = &rest[close + 2..];
            let end = after.find(')').map_or(after.len(), |e| e + 1);
            out.push_str(&rest[1..close]);
            rest = &after[end..];
        } else {
            out.push('[');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The line with its inline code spans removed (a link inside backticks is
/// text).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        let body = &rest[start + ticks..];
        match body.find(fence) {
            Some(end) => rest = &body[end + ticks..],
            None => {
                out.push_str(fence);
                rest = body;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Destinations of the inline links and images of one line.
fn inline_destinations(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let (dest, used) = if let Some(angle) = after.strip_prefix('<') {
            let end = angle.find('>').unwrap_or(angle.len());
            (&angle[..end], end + 2)
        } else {
            // Balanced parentheses, as CommonMark allows in a destination.
            let mut depth = 0usize;
            let mut end = after.len();
            for (i, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = i;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            (&after[..end], end)
        };
        // A title ("...") follows the destination after white space.
        let dest = dest.split_whitespace().next().unwrap_or("");
        found.push(dest.to_string());
        rest = &after[used.min(after.len())..];
    }
    found
}

/// `[label]: destination`, a reference definition.
fn reference_destination(line: &str) -> Option<String> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 || !t.starts_with('[') {
        return None;
    }
    let close = t.find("]:")?;
    let dest = t[close + 2..].split_whitespace().next()?;
    Some(
        dest.trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
    )
}

/// `<a id="x">` and `<a name="x">` anchors of one line.
fn html_anchors(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["id=\"", "name=\""] {
        let mut rest = line;
        while let Some(at) = rest.find(attr) {
            let value = &rest[at + attr.len()..];
            let end = value.find('"').unwrap_or(value.len());
            found.push(value[..end].to_string());
            rest = &value[end..];
        }
    }
    found
}

fn parse(text: &str) -> Page {
    let mut page = Page::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut fence: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let marker: String = trimmed
            .chars()
            .take_while(|&c| c == '`' || c == '~')
            .collect();
        if indent <= 3
            && marker.len() >= 3
            && marker.chars().all(|c| c == marker.as_bytes()[0] as char)
        {
            match &fence {
                None => fence = Some(marker),
                Some(open) if marker.starts_with(open.as_str()) => fence = None,
                Some(_) => {}
            }
            continue;
        }
        if fence.is_some() {
            continue;
        }
        if indent <= 3 && trimmed.starts_with('#') {
            let level = trimmed.chars().take_while(|&c| c == '#').count();
            let text = &trimmed[level..];
            if level <= 6 && (text.is_empty() || text.starts_with(' ')) {
                let text = text.trim().trim_end_matches('#');
                let base = slug(text);
                let n = seen.entry(base.clone()).or_insert(0);
                let id = if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                };
                *n += 1;
                page.anchors.insert(id);
            }
        }
        page.anchors.extend(html_anchors(line));
        let visible = without_code_spans(line);
        for dest in inline_destinations(&visible) {
            page.links.push((number, dest));
        }
        if let Some(dest) = reference_destination(&visible) {
            page.links.push((number, dest));
        }
    }
    page
}

/// `%20` and friends, as a browser decodes a link's path.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |k: usize| bytes.get(k).and_then(|&b| (b as char).to_digit(16));
        if let (b'%', Some(high), Some(low)) = (bytes[i], hex(i + 1), hex(i + 2)) {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path a link names, made lexically (`..` taken off), or None when it
/// climbs out of the repository.
fn resolve(root: &Path, page: &Path, path: &str) -> Option<PathBuf> {
    let joined = if let Some(from_root) = path.strip_prefix('/') {
        root.join(from_root)
    } else {
        page.parent()?.join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root).then_some(out)
}

fn is_external(dest: &str) -> bool {
    let scheme_len = dest.find(':').filter(|&i| {
        i > 0
            && dest[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    scheme_len.is_some() || dest.starts_with("//")
}

/// GitHub's line anchors on a file that is not Markdown: `#L10`, `#L10-L20`.
fn is_line_anchor(anchor: &str) -> bool {
    let mut parts = anchor.splitn(2, '-');
    let line = |p: Option<&str>| {
        p.and_then(|p| p.strip_prefix('L'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    line(parts.next()) && parts.next().is_none_or(|p| line(Some(p)))
}

/// Every problem of the pages' links, as `file:line: link: why`.
fn problems(root: &Path, pages: &BTreeMap<PathBuf, Page>) -> Vec<String> {
    let mut out = Vec::new();
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    for (file, page) in pages {
        for (line, dest) in &page.links {
            if dest.is_empty() || is_external(dest) {
                continue;
            }
            let (path, anchor) = match dest.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (dest.as_str(), None),
            };
            let target = if path.is_empty() {
                Some(file.clone())
            } else {
                resolve(root, file, &percent_decoded(path))
            };
            let why = match &target {
                None => Some("points outside the repository".to_string()),
                Some(t) if !pages.contains_key(t) && !t.exists() => {
                    Some(format!("{} does not exist", rel(t)))
                }
                Some(t) => anchor.and_then(|a| {
                    let known = if let Some(target_page) = pages.get(t) {
                        target_page.anchors.contains(a)
                    } else if t.extension().is_some_and(|e| e == "md") {
                        let text = fs::read_to_string(t).unwrap_or_default();
                        parse(&text).anchors.contains(a)
                    } else {
                        is_line_anchor(a)
                    };
                    (!known).then(|| format!("no heading with the id \"{a}\" in {}", rel(t)))
                }),
            };
            if let Some(why) = why {
                out.push(format!("{}:{line}: ({dest}): {why}", rel(file)));
            }
        }
    }
    out
}

/// Pages of docs/ that no chain of links from README.md reaches.
fn unreachable_docs(root: &Path, pages: &BTreeMap<PathBuf, Page>) -> Vec<String> {
    let mut reached = BTreeSet::new();
    let mut todo = vec![root.join("README.md")];
    while let Some(file) = todo.pop() {
        if !reached.insert(file.clone()) {
            continue;
        }
        let Some(page) = pages.get(&file) else {
            continue;
        };
        for (_, dest) in &page.links {
            let path = dest.split('#').next().unwrap_or("");
            if path.is_empty() || is_external(dest) {
                continue;
            }
            if let Some(t) = resolve(root, &file, &percent_decoded(path)) {
                todo.push(t);
            }
        }
    }
    pages
        .keys()
        .filter(|p| p.starts_with(root.join("docs")) && !reached.contains(*p))
        .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
        .collect()
}

/// Every `.md` file under `dir`, leaving out build output and hidden folders.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, out);
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

#[test]
fn every_relative_link_and_anchor_in_the_markdown_files_resolves() {
    let root = repo();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(files.contains(&root.join("README.md")));
    assert!(
        files.iter().any(|f| f.starts_with(root.join("docs"))),
        "no docs/ pages found"
    );
    let pages: BTreeMap<PathBuf, Page> = files
        .into_iter()
        .map(|f| {
            let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f, parse(&text))
        })
        .collect();
    let broken = problems(&root, &pages);
    assert!(
        broken.is_empty(),
        "links that do not resolve:\n{}",
        broken.join("\n")
    );
    let orphans = unreachable_docs(&root, &pages);
    assert!(
        orphans.is_empty(),
        "docs/ pages no link from README.md reaches: {orphans:?}"
    );
}

#[test]
fn heading_ids_are_githubs() {
    assert_eq!(
        slug("Test your plugins: `tinygate test`"),
        "test-your-plugins-tinygate-test"
    );
    assert_eq!(slug("Many routes (issue #20)"), "many-routes-issue-20");
    assert_eq!(slug("Bird's-eye view"), "birds-eye-view");
    assert_eq!(slug("Route `vars`"), "route-vars");
    assert_eq!(slug("`conf/config.yaml`"), "confconfigyaml");
    assert_eq!(slug("wasm_plugin: a & b"), "wasm_plugin-a--b");
    assert_eq!(slug("See [the docs](docs/x.md) now"), "see-the-docs-now");
    assert_eq!(slug("Café µs"), "café-µs");
    let page =
        parse("# Setup\n## Setup\n```\n# not a heading\n```\n### Setup #\n<a id=\"here\"></a>\n");
    let ids: Vec<&str> = page.anchors.iter().map(String::as_str).collect();
    assert_eq!(ids, ["here", "setup", "setup-1", "setup-2"]);
}

#[test]
fn broken_links_and_anchors_are_found_and_code_is_not_read_as_links() {
    let root = repo();
    let text = "# Title\n\
        [ok](#title) [gone](#nowhere) [file](README.md#tinygate) [absent](no-such-file.md)\n\
        `[in code](missing.md)` and ![image](also-missing.png \"title\")\n\
        ```\n[in a fence](missing-too.md)\n```\n\
        [out]: ../../etc/passwd\n\
        [src](src/main.rs#L3) [bad line anchor](src/main.rs#top) [web](https://example.com/#x)\n";
    let mut pages = BTreeMap::new();
    pages.insert(root.join("SAMPLE.md"), parse(text));
    let found = problems(&root, &pages);
    let expected = [
        "SAMPLE.md:2: (#nowhere): no heading with the id \"nowhere\" in SAMPLE.md",
        "SAMPLE.md:2: (no-such-file.md): no-such-file.md does not exist",
        "SAMPLE.md:3: (also-missing.png): also-missing.png does not exist",
        "SAMPLE.md:7: (../../etc/passwd): points outside the repository",
        "SAMPLE.md:8: (src/main.rs#top): no heading with the id \"top\" in src/main.rs",
    ];
    assert_eq!(found, expected);
}
