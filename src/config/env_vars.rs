//! `${{VAR}}` and `${{VAR:=default}}` in the routes file, substituted in
//! the raw text before it is parsed, as APISIX's standalone mode does
//! (`apisix/cli/file.lua`, `resolve_conf_var_in_text`): YAML quoting then
//! decides the type (`"${{PORT}}"` stays a string, `${{PORT}}` may become a
//! number). APISIX substitutes everywhere in the text, comments included,
//! and so does tinygate.
//!
//! The form is APISIX's pattern: `${{`, optional white space, a name of
//! ASCII letters, digits and `_`, optionally `:=` and a default (white
//! space around it trimmed), optional white space, `}}`. A `${{` not
//! followed by that stays as written. A variable that is unset and has no
//! default is an error naming its line. The values come from the process
//! environment, fixed when tinygate started; each reload substitutes the
//! file's new text again.

use std::borrow::Cow;

/// `text` with every `${{VAR}}` replaced, or a message per unset variable
/// (`label: line N: ...`).
///
/// # Errors
/// Every variable that is unset and has no default, with its line.
pub fn substitute<'t>(label: &str, text: &'t str) -> Result<Cow<'t, str>, Vec<String>> {
    substitute_with(label, text, |name| {
        let settable = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        settable.then(|| std::env::var(name).ok()).flatten()
    })
}

/// [`substitute`] with the environment given as a function (for tests).
fn substitute_with<'t>(
    label: &str,
    text: &'t str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Cow<'t, str>, Vec<String>> {
    if !text.contains("${{") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${{") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        match reference(after) {
            Some((name, default, len)) => {
                match env(name).or_else(|| default.map(str::to_string)) {
                    Some(value) => out.push_str(&value),
                    None => {
                        let line = text[..text.len() - after.len()].matches('\n').count() + 1;
                        problems.push(format!(
                            "{label}: line {line}: environment variable {name:?} is not set \
                             (write ${{{{{name}:=default}}}} to give a default)"
                        ));
                    }
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
    if problems.is_empty() {
        Ok(Cow::Owned(out))
    } else {
        Err(problems)
    }
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
