//! A strict reader of the Prometheus text exposition format (0.0.4), the
//! oracle of the scrape tests: it refuses what a Prometheus server would
//! refuse or misread, and more that makes a scrape hard to read.
//!
//! Refused: a sample before its family's `# HELP` and `# TYPE`; a family
//! declared twice or whose lines are not together; a sample name another
//! family owns; a series twice; malformed names, labels, escapes or
//! values; a counter below zero; a histogram whose buckets are not
//! cumulative in increasing `le` order, do not end with `+Inf`, or whose
//! `_count` is not the `+Inf` bucket, or that lacks `_sum`.

use std::collections::{BTreeMap, HashSet};

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// One sample: name, labels in order, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One metric family and its samples.
#[derive(Debug)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// Every family of `text`, in order; the first problem, with its line.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line does not end with a line feed".into());
    }
    let mut families: Vec<Family> = Vec::new();
    let mut declared: HashSet<String> = HashSet::new();
    // Family being declared: (name, help, type) until its first sample.
    let mut pending: Option<(String, Option<String>, Option<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or(line.strip_prefix("# TYPE "))
        {
            let is_help = line.starts_with("# HELP ");
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            check_metric_name(name).map_err(at)?;
            let same = pending.as_ref().is_some_and(|(n, ..)| n == name);
            if !same {
                if declared.contains(name) {
                    return Err(at(format!("family {name} declared again")));
                }
                if let Some((n, ..)) = &pending {
                    return Err(at(format!("family {n} has HELP or TYPE but not both")));
                }
                declared.insert(name.to_string());
                pending = Some((name.to_string(), None, None));
            }
            let (_, help, kind) = pending.as_mut().expect("set above");
            let slot = if is_help { help } else { kind };
            if slot.is_some() {
                return Err(at(format!("second {} line", &line[2..6])));
            }
            *slot = Some(if is_help {
                unescape_help(arg).map_err(at)?
            } else {
                if !matches!(
                    arg,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    return Err(at(format!("unknown type {arg:?}")));
                }
                arg.to_string()
            });
            if let Some((name, Some(help), Some(kind))) = &pending {
                families.push(Family {
                    name: name.clone(),
                    kind: kind.clone(),
                    help: help.clone(),
                    samples: Vec::new(),
                });
                pending = None;
            }
            continue;
        }
        if line.starts_with('#') {
            continue; // a comment
        }
        if let Some((n, ..)) = &pending {
            return Err(at(format!("family {n} has HELP or TYPE but not both")));
        }
        let sample = parse_sample(line).map_err(at)?;
        let Some(family) = families.last_mut() else {
            return Err(at("a sample before any HELP and TYPE".into()));
        };
        if !belongs(&sample.name, family) {
            return Err(at(format!(
                "sample {} is not of family {} (its HELP and TYPE must come right before it)",
                sample.name, family.name
            )));
        }
        family.samples.push(sample);
    }
    if let Some((n, ..)) = pending {
        return Err(format!("family {n} has HELP or TYPE but not both"));
    }
    let mut series = HashSet::new();
    for f in &families {
        for s in &f.samples {
            if declared.contains(&s.name) && s.name != f.name {
                return Err(format!("{} is a family and a sample of {}", s.name, f.name));
            }
            let mut labels = s.labels.clone();
            labels.sort();
            if !series.insert((s.name.clone(), labels)) {
                return Err(format!("series twice: {} {:?}", s.name, s.labels));
            }
            if f.kind == "counter" && (s.value.is_nan() || s.value < 0.0) {
                return Err(format!("counter {} is {}", s.name, s.value));
            }
        }
        if f.kind == "histogram" {
            check_histogram(f)?;
        }
    }
    Ok(families)
}

fn belongs(sample: &str, family: &Family) -> bool {
    let suffixes: &[&str] = match family.kind.as_str() {
        "histogram" => &["_bucket", "_sum", "_count"],
        "summary" => &["", "_sum", "_count"],
        _ => &[""],
    };
    suffixes
        .iter()
        .any(|s| sample.strip_suffix(s) == Some(&family.name))
}

/// Per series (labels but `le`): increasing `le` ending with `+Inf`,
/// cumulative counts, `_count` = the `+Inf` bucket, a `_sum`.
fn check_histogram(f: &Family) -> Result<(), String> {
    let key = |s: &Sample| -> Labels {
        let mut k: Labels = s
            .labels
            .iter()
            .filter(|(n, _)| n != "le")
            .cloned()
            .collect();
        k.sort();
        k
    };
    let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
    let mut sums: HashSet<Labels> = HashSet::new();
    for s in &f.samples {
        let suffix = &s.name[f.name.len()..];
        match suffix {
            "_bucket" => {
                let le = s.label("le").ok_or(format!("{} without le", s.name))?;
                let le = parse_value(le).map_err(|e| format!("{}: le {e}", s.name))?;
                buckets.entry(key(s)).or_default().push((le, s.value));
            }
            _ if s.label("le").is_some() => return Err(format!("le on {}", s.name)),
            "_count" => {
                counts.insert(key(s), s.value);
            }
            _ => {
                sums.insert(key(s));
            }
        }
    }
    for (k, list) in &buckets {
        let what = format!("{} {k:?}", f.name);
        for pair in list.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(format!("{what}: le not increasing: {list:?}"));
            }
            if pair[1].1 < pair[0].1 {
                return Err(format!("{what}: buckets not cumulative: {list:?}"));
            }
        }
        let last = list.last().expect("one bucket at least");
        if last.0 != f64::INFINITY {
            return Err(format!("{what}: no +Inf bucket"));
        }
        if counts.get(k) != Some(&last.1) {
            return Err(format!("{what}: _count {:?} is not +Inf's", counts.get(k)));
        }
        if !sums.contains(k) {
            return Err(format!("{what}: no _sum"));
        }
    }
    if counts.len() != buckets.len() || sums.len() != buckets.len() {
        return Err(format!("{}: _count or _sum without buckets", f.name));
    }
    Ok(())
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

/// `# HELP` text: only `\\` and `\n` are escapes.
fn unescape_help(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            other => return Err(format!("bad escape \\{other:?} in help")),
        }
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after)?;
        labels = parsed;
        rest = after;
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut words = rest.split(' ');
    let value = parse_value(words.next().unwrap_or(""))?;
    if let Some(ts) = words.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if words.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `name="value",...}` and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without =")?;
        let name = &s[..eq];
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} twice"));
        }
        let mut chars = s[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name}: value not quoted"));
        }
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}: value not closed")),
                Some((i, '"')) => break eq + 1 + i + 1,
                Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("label {name}: bad escape \\{other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        s = &s[end..];
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("label {name}: no , or }} after the value"));
        }
    }
}

/// A sample value: a float as Go's `ParseFloat` reads it, `+Inf`, `-Inf`
/// or `NaN`.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => {
            Err(format!("bad value {s:?}"))
        }
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}
