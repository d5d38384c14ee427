//! `${{VAR}}` and `${{VAR:=default}}` from the process environment, in
//! both of APISIX's files, each the way APISIX substitutes it
//! (`apisix/cli/file.lua`):
//!
//! - the routes file: in the raw text before it is parsed
//!   (`resolve_conf_var_in_text`), comments included; YAML quoting then
//!   decides the type (`"${{PORT}}"` stays a string, `${{PORT}}` may
//!   become a number);
//! - `config.yaml`: in the string values and keys of the parsed document
//!   (`resolve_conf_var`), so comments are never read (APISIX's shipped
//!   `config.yaml` has `${{ETCD_HOST}}` in a comment); a value that had a
//!   variable and then reads as a number, `true` or `false` becomes one.
//!
//! The form is APISIX's pattern: `${{`, optional white space, a name of
//! ASCII letters, digits and `_`, optionally `:=` and a default (white
//! space around it trimmed), optional white space, `}}`. A `${{` not
//! followed by that stays as written. A variable that is unset and has no
//! default is an error naming its line (routes file) or key path
//! (`config.yaml`). The values come from the process environment, fixed
//! when tinygate started; each reload substitutes the file's new text
//! again.

use super::tree::{index, join};
use serde_yaml::{Mapping, Value};
use std::borrow::Cow;

/// `text` with every `${{VAR}}` replaced, or a message per unset variable
/// (`label: line N: ...`).
///
/// # Errors
/// Every variable that is unset and has no default, with its line.
pub fn substitute<'t>(label: &str, text: &'t str) -> Result<Cow<'t, str>, Vec<String>> {
    substitute_with(label, text, process_env)
}

/// Replaces `${{VAR}}` in every string value and key of `doc` (a parsed
/// `config.yaml`), turning a value that had a variable into a number or a
/// boolean when it then reads as one (Lua's `tonumber`, `"true"`,
/// `"false"`), as APISIX does.
///
/// # Errors
/// Every variable that is unset and has no default, with its key path
/// (`label: deployment.etcd.host[0]: ...`).
pub fn substitute_in_values(label: &str, doc: &mut Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    in_value(doc, "", &process_env, &mut |path, name| {
        problems.push(format!("{label}: {path}: {}", unset(name)));
    });
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The environment as APISIX reads it: only names a shell can set.
fn process_env(name: &str) -> Option<String> {
    let settable = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    settable.then(|| std::env::var(name).ok()).flatten()
}

fn unset(name: &str) -> String {
    format!(
        "environment variable {name:?} is not set (write ${{{{{name}:=default}}}} to give a default)"
    )
}

/// [`substitute`] with the environment given as a function (for tests).
fn substitute_with<'t>(
    label: &str,
    text: &'t str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Cow<'t, str>, Vec<String>> {
    let mut problems = Vec::new();
    let out = expand(text, &env, &mut |name, at| {
        let line = text[..at].matches('\n').count() + 1;
        problems.push(format!("{label}: line {line}: {}", unset(name)));
    });
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// [`substitute_in_values`] on one node at `path`.
fn in_value(
    v: &mut Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
    missing: &mut impl FnMut(&str, &str),
) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(new) = expand(s, env, &mut |name, _| missing(path, name)) {
                *v = typed(new);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                in_value(item, &index(path, i), env, missing);
            }
        }
        Value::Mapping(map) => {
            let old = std::mem::take(map);
            let mut new = Mapping::with_capacity(old.len());
            for (mut key, mut value) in old {
                let at = match key.as_str() {
                    Some(k) => join(path, k),
                    None => path.to_string(),
                };
                in_value(&mut value, &at, env, missing);
                if let Value::String(k) = &key {
                    if let Cow::Owned(k) = expand(k, env, &mut |name, _| missing(&at, name)) {
                        key = Value::String(k);
                    }
                }
                new.insert(key, value);
            }
            *map = new;
        }
        Value::Tagged(t) => in_value(&mut t.value, path, env, missing),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A substituted value as APISIX types it: a number when Lua's `tonumber`
/// reads one (decimal, `0x` hex, exponent), `true`/`false`, else the
/// string.
fn typed(s: String) -> Value {
    let t = s.trim();
    let number = if let Ok(n) = t.parse::<i64>() {
        Some(Value::from(n))
    } else if let Some(n) = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .and_then(|h| i64::from_str_radix(h, 16).ok())
    {
        Some(Value::from(n))
    } else if t.bytes().any(|b| b.is_ascii_digit())
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b".eE+-".contains(&b))
    {
        t.parse::<f64>().ok().map(Value::from)
    } else {
        None
    };
    match (number, t) {
        (Some(n), _) => n,
        (None, "true") => Value::Bool(true),
        (None, "false") => Value::Bool(false),
        _ => Value::String(s),
    }
}

/// `text` with every reference replaced (borrowed when it has none);
/// `missing` gets the name and byte offset of each unset one, which is
/// replaced by nothing.
fn expand<'t>(
    text: &'t str,
    env: &impl Fn(&str) -> Option<String>,
    missing: &mut impl FnMut(&str, usize),
) -> Cow<'t, str> {
    if !text.contains("${{") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${{") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        match reference(after) {
            Some((name, default, len)) => {
                match env(name).or_else(|| default.map(str::to_string)) {
                    Some(value) => out.push_str(&value),
                    None => missing(name, text.len() - after.len()),
                }
                rest = &after[len..];
            }
            None => {
                out.push_str("${{");
                rest = &after[3..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// At the start of `s` (which begins with `${{`): the variable's name, its
/// default, and the length of the whole reference; `None` when it is not
/// one. A name followed by anything but `:=` is returned whole: APISIX
/// looks it up as written and finds nothing, and so does
/// [`substitute`].
fn reference(s: &str) -> Option<(&str, Option<&str>, usize)> {
    let inner_start = 3 + leading_space(&s[3..]);
    let body = &s[inner_start..];
    let starts_with_name = body
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !starts_with_name {
        return None;
    }
    let close = body.find("}}")?;
    let inside = body[..close].trim_end_matches(is_space);
    let len = inner_start + close + 2;
    Some(match inside.split_once(":=") {
        // APISIX keeps white space before `:=` in the name (which then
        // never matches); tinygate trims it, so `${{ PORT := 80 }}` reads
        // PORT.
        Some((name, default)) => (
            name.trim_end_matches(is_space),
            Some(default.trim_matches(is_space)),
            len,
        ),
        None => (inside, None, len),
    })
}

fn is_space(c: char) -> bool {
    c.is_ascii_whitespace()
}

fn leading_space(s: &str) -> usize {
    s.len() - s.trim_start_matches(is_space).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".into()),
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<String, Vec<String>> {
        substitute_with("a.yaml", text, env).map(Cow::into_owned)
    }

    #[test]
    fn names_defaults_and_white_space() {
        assert_eq!(sub("x: ${{HOST}}:${{PORT}}").unwrap(), "x: 10.0.0.1:8080");
        assert_eq!(sub("x: ${{ HOST }}").unwrap(), "x: 10.0.0.1");
        assert_eq!(sub("x: ${{NOPE:=dflt}}").unwrap(), "x: dflt");
        assert_eq!(sub("x: ${{ NOPE := a b }}").unwrap(), "x: a b");
        assert_eq!(sub("x: ${{ PORT := 1 }}").unwrap(), "x: 8080");
        assert_eq!(sub("x: ${{NOPE:=}}").unwrap(), "x: ");
        assert_eq!(sub("x: ${{PORT:=1}}").unwrap(), "x: 8080");
        assert_eq!(sub("x: ${{EMPTY:=1}}").unwrap(), "x: ");
        assert_eq!(sub("# ${{HOST}}").unwrap(), "# 10.0.0.1");
    }

    #[test]
    fn what_is_not_a_reference_stays() {
        for text in [
            "$HOST", "${HOST}", "${{}}", "${{ }}", "${{-x}}", "${{HOST", "a ${{ b",
        ] {
            assert_eq!(sub(text).unwrap(), text);
        }
    }

    fn values(yaml: &str) -> (Value, Vec<String>) {
        let mut doc: Value = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        in_value(&mut doc, "", &env, &mut |path, name| {
            problems.push(format!("{path}: {name}"))
        });
        (doc, problems)
    }

    /// `config.yaml`: values and keys, never comments; a value that had a
    /// variable takes the type it reads as (APISIX's `resolve_conf_var`),
    /// others keep theirs.
    #[test]
    fn config_values_are_substituted_and_typed() {
        let (doc, problems) = values(
            "# ${{NOPE}} in a comment is never read\n\
             a: {port: \"${{PORT}}\", host: \"${{HOST}}\", url: \"http://${{HOST}}:${{PORT}}\"}\n\
             b: [\"${{NOPE:=true}}\", \"${{NOPE:=0x10}}\", \"${{NOPE:=1.5}}\", \"${{NOPE:=inf}}\", \"8080\"]\n\
             ${{NOPE:=key}}: 1\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let expected: Value = serde_yaml::from_str(
            "a: {port: 8080, host: 10.0.0.1, url: \"http://10.0.0.1:8080\"}\n\
             b: [true, 16, 1.5, inf, \"8080\"]\nkey: 1\n",
        )
        .unwrap();
        assert_eq!(doc, expected);
        let (_, problems) = values("a:\n  b: [x, \"${{NOPE}}\"]\n${{ALSO_NOT}}: 1\n");
        assert_eq!(problems, ["a.b[1]: NOPE", "${{ALSO_NOT}}: ALSO_NOT"]);
    }

    #[test]
    fn unset_variables_are_errors_with_their_line() {
        assert_eq!(
            sub("a: 1\nb: ${{NOPE}}\nc: ${{HOST}} ${{ALSO_NOT}}\n").unwrap_err(),
            [
                "a.yaml: line 2: environment variable \"NOPE\" is not set (write ${{NOPE:=default}} to give a default)",
                "a.yaml: line 3: environment variable \"ALSO_NOT\" is not set (write ${{ALSO_NOT:=default}} to give a default)",
            ]
        );
        assert!(sub("${{HOST:x}}").unwrap_err()[0].contains("\"HOST:x\" is not set"));
    }
}
