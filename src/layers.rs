//! Checks on the layout of `src/` that anyone can run (`cargo test
//! layers`), and that CI runs with the rest: no import cycle between the
//! top-level parts, no file over [`MAX_FILE_LINES`], and no function of
//! the parts a request goes through ([`REQUEST_PATH`]) over
//! [`MAX_REQUEST_PATH_FN_LINES`] (test code aside); and every lock those
//! parts declare is listed in [`KNOWN_LOCKS`] with why a request does not
//! wait on it, so that a new one is a decision, not an accident; and
//! `serve/server.rs` reaches only sockets and threads.
//!
//! A top-level part is a folder or a file directly under `src/` (`net`,
//! `http`, `proxy`, `serve`, ...; `main.rs` is the root, which nothing may
//! depend on). Part A depends on part B when a file of A names
//! `crate::B` (in a `use` or inline; comments are skipped). The arrows
//! must point one way: docs/architecture.md (Layers) lists them.
//! This reads source text only; it knows nothing of what the parts do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file in `src/`, in lines (the project's standard: about 800).
const MAX_FILE_LINES: usize = 800;

/// Longest function on the request path, in lines.
const MAX_REQUEST_PATH_FN_LINES: usize = 80;

/// The top-level parts a request goes through, from the socket to the
/// plugins and the node and back (configuration, etcd, the runner and
/// start-up are not).
const REQUEST_PATH: &[&str] = &[
    "net", "tls", "http", "serve", "worker", "proxy", "router", "expr", "balancer", "health",
    "upstream", "plugins", "wasm",
];

/// Functions of the request path over [`MAX_REQUEST_PATH_FN_LINES`], as
/// (file under `src/`, function, why it is kept or who splits it). Each
/// entry must still be over the limit: delete it once split.
const KNOWN_LONG_FUNCTIONS: &[(&str, &str, &str)] = &[];

/// Parts that still depend on each other and count as one until the
/// cycle is cut. Each entry must name parts that exist: delete it when
/// they have moved or the cycle is gone (the test says so).
const KNOWN_CYCLES: &[&[&str]] = &[];

/// Every file of the request path that declares a `Mutex` or `RwLock`,
/// with why a request does not wait on it (the README's invariant: the
/// request path takes no contended lock). Each entry must still declare
/// one: delete it when the lock is gone.
const KNOWN_LOCKS: &[(&str, &str)] = &[
    (
        "worker.rs",
        "the worker's counters: taken by its own thread once per request, and by a scrape \
         only to add integers up",
    ),
    (
        "plugins/mod.rs",
        "the same counters, handed to the plugin host",
    ),
    (
        "upstream.rs",
        "the idle pool's wake-up list: taken when a pooled connection's node closes it, \
         never by a request",
    ),
    (
        "health/mod.rs",
        "the registry of watched upstreams: taken at reload and by the checker; passive \
         reports go to each node's atomic word",
    ),
    (
        "tls/sni.rs",
        "the unknown-SNI log's names: taken only on a handshake refused for its name",
    ),
    (
        "tls/failures.rs",
        "the handshake-failure log's window: taken only when a handshake fails",
    ),
    (
        "wasm/shared.rs",
        "shared data and queues, process-wide as proxy-wasm defines them: taken when a \
         plugin calls them, held to copy a value",
    ),
    (
        "wasm/metrics.rs",
        "the plugin-metric registry (ids, names, definers), process-wide as proxy-wasm \
         defines metrics: taken only when a plugin defines a metric, when a VM first uses an \
         id, at a reload and by a scrape; record/increment/get are atomics",
    ),
];

/// Files over [`MAX_FILE_LINES`] with a split planned, each with why it
/// waits. Each entry must still be over the limit: delete it once split.
const KNOWN_LONG_FILES: &[(&str, &str)] = &[];

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

/// Files that are compiled for tests only: `tests.rs`, files under a
/// `tests/` folder, and modules declared `#[cfg(test)] mod name;`.
fn test_only_files(files: &[(PathBuf, String)]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (path, text) in files {
        if path.file_name().is_some_and(|n| n == "tests.rs")
            || path.components().any(|c| c.as_os_str() == "tests")
        {
            out.insert(path.clone());
        }
        let dir = match path.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "main.rs") => path.parent().map(Path::to_path_buf),
            _ => Some(path.with_extension("")),
        };
        let Some(dir) = dir else { continue };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            let declared = pair[1]
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'));
            if let (true, Some(name)) = (pair[0] == "#[cfg(test)]", declared) {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

/// The line a block opened at `start` with this indentation closes on
/// (rustfmt closes a block at the indentation it opened at).
fn end_of(lines: &[&str], start: usize, indent: &str) -> usize {
    lines[start..]
        .iter()
        .position(|l| l.strip_prefix(indent) == Some("}"))
        .map_or(lines.len() - 1, |n| start + n)
}

/// The lines of a source text with its test code blanked (items marked
/// `#[test]` or `#[cfg(test)]`, inline `mod tests { }` blocks included),
/// so that line numbers stay those of the file.
fn without_tests(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    let mut test_attribute = false;
    let mut i = 0;
    while i < lines.len() {
        let code = lines[i].trim_start();
        let indent = &lines[i][..lines[i].len() - code.len()];
        if code == "#[test]" || code == "#[cfg(test)]" {
            test_attribute = true;
        } else if test_attribute && !code.starts_with("#[") {
            let last = if code.ends_with(';') {
                i
            } else {
                end_of(&lines, i, indent)
            };
            lines[i..=last].fill("");
            i = last;
            test_attribute = false;
        }
        i += 1;
    }
    lines
}

/// The functions of a source text outside its test code, as (name, first
/// line, length in lines).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines = without_tests(text);
    let code_of = |l: &str| l.split("//").next().unwrap_or("").trim_end().to_string();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let item = code
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ");
        let item = ["const ", "async ", "unsafe "]
            .iter()
            .fold(item, |rest, q| rest.strip_prefix(q).unwrap_or(rest));
        let Some(rest) = item.strip_prefix("fn ") else {
            continue;
        };
        // Where the signature ends: `{` opens a body, `;` declares one
        // without (in a trait), `}` closes a body on the same line.
        let Some(at) = (i..lines.len()).find(|&j| {
            let l = code_of(lines[j]);
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        let end = match code_of(lines[at]).chars().last() {
            Some('}') => at,
            Some('{') => end_of(&lines, i, indent),
            _ => continue,
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        found.push((name, i + 1, end - i + 1));
    }
    found
}

#[test]
fn no_request_path_function_is_over_the_limit() {
    let files = sources();
    let tests_only = test_only_files(&files);
    let mut long = Vec::new();
    let mut known_seen = BTreeSet::new();
    for (path, text) in &files {
        if !REQUEST_PATH.contains(&part_of(path).as_str()) || tests_only.contains(path) {
            continue;
        }
        let file = path
            .strip_prefix(src())
            .expect("under src/")
            .display()
            .to_string();
        for (name, line, n) in functions(text) {
            if n <= MAX_REQUEST_PATH_FN_LINES {
                continue;
            }
            let known = KNOWN_LONG_FUNCTIONS
                .iter()
                .find(|(f, g, _)| *f == file && *g == name);
            match known {
                Some((_, _, why)) => {
                    eprintln!("layers: {file}:{line}: {name} has {n} lines (known: {why})");
                    known_seen.insert((file.clone(), name));
                }
                None => long.push(format!("  {file}:{line}: {name}: {n} lines")),
            }
        }
    }
    for (file, name, _) in KNOWN_LONG_FUNCTIONS {
        if !known_seen.contains(&(file.to_string(), name.to_string())) {
            long.push(format!(
                "  {file}: {name} is no longer over the limit: delete it from KNOWN_LONG_FUNCTIONS"
            ));
        }
    }
    assert!(
        long.is_empty(),
        "request path functions over {MAX_REQUEST_PATH_FN_LINES} lines (split them):\n{}",
        long.join("\n")
    );
}

#[test]
fn every_lock_on_the_request_path_is_listed_with_its_reason() {
    let files = sources();
    let tests_only = test_only_files(&files);
    let mut problems = Vec::new();
    let mut with_locks = BTreeSet::new();
    for (path, text) in &files {
        if !REQUEST_PATH.contains(&part_of(path).as_str()) || tests_only.contains(path) {
            continue;
        }
        let file = path
            .strip_prefix(src())
            .expect("under src/")
            .display()
            .to_string();
        let declares = without_tests(text)
            .iter()
            .map(|l| l.split("//").next().unwrap_or(""))
            .any(|l| l.contains("Mutex<") || l.contains("RwLock<"));
        if declares {
            with_locks.insert(file.clone());
            if !KNOWN_LOCKS.iter().any(|(f, _)| *f == file) {
                problems.push(format!(
                    "  {file}: a lock not in KNOWN_LOCKS (say why a request does not wait on it)"
                ));
            }
        }
    }
    for (file, _) in KNOWN_LOCKS {
        if !with_locks.contains(*file) {
            problems.push(format!(
                "  {file}: no lock any more: delete it from KNOWN_LOCKS"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "locks on the request path:\n{}",
        problems.join("\n")
    );
}

/// `serve/server.rs` knows sockets, threads and a connection cap, not
/// routes, plugins or the configuration (the README's invariant): it
/// reaches `net` and, to start threads with the plugin stack, nothing of
/// `wasm` but `spawn_plugin_thread`.
#[test]
fn the_server_reaches_only_sockets_and_threads() {
    let text = std::fs::read_to_string(src().join("serve/server.rs")).expect("serve/server.rs");
    for (name, line) in crate_paths(&text) {
        let allowed = name == "net"
            || (name == "wasm"
                && text
                    .lines()
                    .nth(line - 1)
                    .is_some_and(|l| l.contains("crate::wasm::spawn_plugin_thread")));
        assert!(
            allowed,
            "serve/server.rs:{line} reaches crate::{name}: it must know no routes, plugins or configuration"
        );
    }
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
    let text = "pub(crate) async fn a() {\n    x();\n}\n#[cfg(test)]\nmod tests {\n    \
                fn b() {\n    }\n}\nimpl X {\n    #[test]\n    fn c() {\n    }\n    \
                const fn d(&self) {\n        y();\n        z();\n    }\n}\ntrait T {\n    \
                fn e(\n        &self,\n    ) -> u8;\n    fn f() {}\n    fn g() {\n    }\n}\n";
    assert_eq!(
        functions(text),
        [
            ("a".to_string(), 1, 3),
            ("d".to_string(), 13, 4),
            ("f".to_string(), 22, 1),
            ("g".to_string(), 23, 2)
        ]
    );
    let files = vec![(
        src().join("router/mod.rs"),
        "#[cfg(test)]\nmod linear;\n".to_string(),
    )];
    assert!(test_only_files(&files).contains(&src().join("router/linear.rs")));
    let text = "#[cfg(test)]\nfn t() -> Mutex<u8> {\n    x\n}\nstruct S(Mutex<u8>);\n";
    assert_eq!(
        without_tests(text),
        ["#[cfg(test)]", "", "", "", "struct S(Mutex<u8>);"]
    );
}
