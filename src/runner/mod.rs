//! `tinygate test FILE...`: the plugin test runner.
//!
//! Plugin authors test proxy-wasm plugins against SDK mocks that never run
//! the real `.wasm`, or against a whole Envoy. This runs the compiled
//! `.wasm` in the very host code that serves production traffic (the same
//! ABI implementation, limits and failure policy), against scripted
//! exchanges described in YAML test files, and reports like a test runner.
//!
//! Layout: `spec/` reads and validates test files; `exec.rs` runs a case
//! in-process through the proxy's own request path (a real `Worker` and
//! `Chain`, scripted client and upstream instead of sockets); `check.rs`
//! compares the outcome with the expectations; `report.rs` prints text,
//! JSON or JUnit; `capture.rs` keeps the log lines. Every file is
//! validated and its plugins loaded before any case runs. Exit status: 0
//! when every case passes, 1 when one fails, 2 for a usage error or an
//! invalid test file (each problem printed with file and key path).

mod capture;
mod check;
mod exec;
mod report;
mod spec;

use crate::wasm::Engine;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: tinygate test [--format text|json|junit] FILE...

Runs the cases of each test file (YAML) against the plugins it names, in
process, through the same host and request path as the proxy; no network.

options:
  --format FORMAT   text (default), json, or junit (JUnit XML)
  -h, --help        print this help

exit status: 0 all cases passed, 1 a case failed, 2 invalid test file or usage
";

/// How to print the results.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Junit,
}

/// Runs `tinygate test` with `args` (after `test`).
pub fn command(args: &[String]) -> ExitCode {
    let (format, files) = match parse_args(args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tinygate test: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    capture::install();
    let engine = Engine::new();
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        match spec::load(path).and_then(|file| {
            let bench = exec::Bench::new(&file, &engine)?;
            Ok((file, bench))
        }) {
            Ok(pair) => loaded.push(pair),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!("tinygate test: invalid test file; no case was run");
        return ExitCode::from(2);
    }
    let mut reports = Vec::new();
    for (file, bench) in &loaded {
        let cases = file
            .cases
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let outcome = bench.run(i, case);
                report::CaseReport {
                    name: case.name.clone(),
                    mismatches: check::check(case, &outcome),
                    outcome,
                }
            })
            .collect();
        reports.push(report::FileReport {
            label: file.label.clone(),
            cases,
        });
    }
    let out = match format {
        Format::Text => report::text(&reports),
        Format::Json => report::json(&reports),
        Format::Junit => report::junit(&reports),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    if report::counts(&reports).1 == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The format and files; `None` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<(Format, Vec<PathBuf>)>, String> {
    let mut format = Format::Text;
    let mut files = Vec::new();
    let mut args = args.iter();
    let mut options = true;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" if options => return Ok(None),
            "--" if options => {
                options = false;
                continue;
            }
            "--format" if options => Some(args.next().ok_or("--format needs a value")?.as_str()),
            a if options && a.starts_with("--format=") => Some(&a["--format=".len()..]),
            a if options && a.starts_with('-') && a.len() > 1 => {
                return Err(format!("unknown option {a:?}"))
            }
            file => {
                files.push(PathBuf::from(file));
                None
            }
        };
        if let Some(v) = value {
            format = match v {
                "text" => Format::Text,
                "json" => Format::Json,
                "junit" => Format::Junit,
                other => return Err(format!("unknown format {other:?} (text, json or junit)")),
            };
        }
    }
    if files.is_empty() {
        return Err("no test file given".into());
    }
    Ok(Some((format, files)))
}
