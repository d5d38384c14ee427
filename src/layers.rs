//! Checks on the layout of `src/` that anyone can run (`cargo test
//! layers`), and that CI runs with the rest: no import cycle between the
//! top-level parts, no file over [`MAX_FILE_LINES`], and no function on
//! the request path (`src/proxy/`) over [`MAX_REQUEST_PATH_FN_LINES`].
//!
//! A top-level part is a folder or a file directly under `src/` (`net`,
//! `http`, `proxy`, `serve`, ...; `main.rs` is the root, which nothing may
//! depend on). Part A depends on part B when a file of A names
//! `crate::B` (in a `use` or inline; comments are skipped). The arrows
//! must point one way: the README's architecture section draws them.
//! This reads source text only; it knows nothing of what the parts do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file in `src/`, in lines (the project's standard: about 800).
const MAX_FILE_LINES: usize = 800;

/// Longest function on the request path, in lines.
const MAX_REQUEST_PATH_FN_LINES: usize = 80;

/// Parts that still depend on each other and count as one until the
/// cycle is cut. Each entry must name parts that exist: delete it when
/// they have moved or the cycle is gone (the test says so).
const KNOWN_CYCLES: &[&[&str]] = &[
    // Upstream health: config holds each upstream's balancer, the balancer
    // reads node health, and health watches the configured upstreams; and
    // config compiles route `vars` with expr, which names the values it
    // refuses with config's own `tree::kind`.
    &["balancer", "config", "expr", "health"],
];

/// Files over [`MAX_FILE_LINES`] with a split planned, each with why it
/// waits. Each entry must still be over the limit: delete it once split.
const KNOWN_LONG_FILES: &[(&str, &str)] = &[(
    "runner/spec.rs",
    "its expectations move to their own file once #14's fault kinds land in it",
)];

/// Every `.rs` file under `src/`, with its text.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("src/ is readable")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &mut out);
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level part `path` belongs to (`src/proxy/heads.rs` → `proxy`).
fn part_of(path: &Path) -> String {
    let first = path
        .strip_prefix(src())
        .expect("a path under src/")
        .components()
        .next()
        .expect("a file under src/");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// The top-level names a source text reaches through `crate::`, with the
/// line each is first named on: `crate::a::b` gives `a`,
/// `crate::{a::x, b}` gives `a` and `b`.
fn crate_paths(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut group: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        if let Some(depth) = group.as_mut() {
            rest = names_in_group(rest, depth, i + 1, &mut found);
            if *depth == 0 {
                group = None;
            }
        }
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(inner) = after.strip_prefix('{') {
                let mut depth = 1;
                rest = names_in_group(inner, &mut depth, i + 1, &mut found);
                if depth > 0 {
                    group = Some(depth);
                    break;
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                rest = &after[name.len()..];
                found.push((name, i + 1));
            }
        }
    }
    found
}

/// Collects the first name of each path in a `{...}` group (which may
/// span lines) until the group closes; returns the text after it.
fn names_in_group<'t>(
    text: &'t str,
    depth: &mut usize,
    line: usize,
    found: &mut Vec<(String, usize)>,
) -> &'t str {
    let mut expect_name = true;
    for (at, c) in text.char_indices() {
        match c {
            '{' => *depth += 1,
            '}' => {
                *depth -= 1;
                if *depth == 0 {
                    return &text[at + 1..];
                }
            }
            ',' if *depth == 1 => expect_name = true,
            c if expect_name && *depth == 1 && (c.is_alphabetic() || c == '_') => {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != "self" {
                    found.push((name, line));
                }
                expect_name = false;
            }
            _ => {}
        }
    }
    ""
}

/// Part → the parts it depends on, each with one place that shows it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn dependency_graph() -> Graph {
    let files = sources();
    let parts: BTreeSet<String> = files
        .iter()
        .map(|(p, _)| part_of(p))
        .filter(|p| p != "main")
        .collect();
    let merged = |part: String| -> String {
        KNOWN_CYCLES
            .iter()
            .find(|group| group.contains(&part.as_str()))
            .map_or(part, |group| group.join("+"))
    };
    let mut graph = Graph::new();
    for (path, text) in &files {
        let from = part_of(path);
        if from == "main" {
            continue;
        }
        let from = merged(from);
        graph.entry(from.clone()).or_default();
        for (name, line) in crate_paths(text) {
            let to = if parts.contains(&name) {
                merged(name.clone())
            } else {
                format!("main (crate::{name})")
            };
            if to != from {
                let place = format!("{}:{line}", path.display());
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(place);
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the parts along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| p == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn top_level_parts_have_no_import_cycle() {
    let files = sources();
    for group in KNOWN_CYCLES {
        for part in *group {
            assert!(
                files.iter().any(|(p, _)| part_of(p) == *part),
                "layers.rs: KNOWN_CYCLES names `{part}`, which is gone: delete the entry"
            );
        }
    }
    let graph = dependency_graph();
    if let Some(cycle) = find_cycle(&graph) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!(
            "import cycle between top-level parts of src/:\n{}",
            steps.join("\n")
        );
    }
}

#[test]
fn no_file_in_src_is_over_the_limit() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        let lines = text.lines().count();
        let name = path
            .strip_prefix(src())
            .expect("under src/")
            .display()
            .to_string();
        let known = KNOWN_LONG_FILES.iter().find(|(f, _)| *f == name);
        match known {
            Some((_, why)) if lines > MAX_FILE_LINES => {
                eprintln!("layers: {name} has {lines} lines (known: {why})");
            }
            Some(_) => long.push(format!("  {name}: split: delete it from KNOWN_LONG_FILES")),
            None if lines > MAX_FILE_LINES => long.push(format!("  {name}: {lines} lines")),
            None => {}
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines (split them by concern):\n{}",
        long.join("\n")
    );
}

#[test]
fn no_request_path_function_is_over_the_limit() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        if part_of(&path) != "proxy" {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (start, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            let unqualified = match code.strip_prefix("pub") {
                Some(rest) => rest.split_once(' ').map_or("", |(_, r)| r),
                None => code,
            };
            let is_fn = unqualified.starts_with("fn ") || unqualified.starts_with("async fn ");
            if !is_fn || code.ends_with(';') {
                continue;
            }
            // rustfmt closes a body at the indentation it opened at.
            let indent = &line[..line.len() - code.len()];
            let end = lines[start..]
                .iter()
                .position(|l| *l == format!("{indent}}}"))
                .map_or(lines.len(), |n| start + n);
            let n = end - start + 1;
            if n > MAX_REQUEST_PATH_FN_LINES {
                long.push(format!("  {}:{}: {n} lines", path.display(), start + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "request path functions over {MAX_REQUEST_PATH_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_groups_inline_paths_and_cycles() {
    let text =
        "use crate::{\n    a::X,\n    b::{c, d},\n};\nfn f() { crate::e::g(); } // crate::h\n";
    let names: Vec<String> = crate_paths(text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b", "e"]);
    let edge = |to: &str| BTreeMap::from([(to.to_string(), String::new())]);
    let graph = Graph::from([
        ("x".to_string(), edge("y")),
        ("y".to_string(), edge("z")),
        ("z".to_string(), edge("x")),
    ]);
    assert_eq!(find_cycle(&graph).expect("a cycle"), ["x", "y", "z", "x"]);
    let graph = Graph::from([
        ("x".to_string(), edge("y")),
        ("y".to_string(), BTreeMap::new()),
    ]);
    assert_eq!(find_cycle(&graph), None);
}
