//! An upstream's balancing keys: `type` (`roundrobin`, `least_conn`,
//! `chash`; `ewma` refused) and, for `chash`, `hash_on` and `key`, checked
//! as APISIX's `check_upstream_conf` does, into the balancer's
//! `Algorithm` and `HashKey`. It knows the keys, not how nodes are picked
//! (`src/balancer/`).

use super::tree::{Obj, Problems};
use crate::balancer::{Algorithm, HashKey, Piece};
use crate::expr::Var;

/// The variables `hash_on: vars` may name (APISIX's
/// `upstream_hash_vars_schema`), besides `arg_<name>`.
const HASH_VARS: &[&str] = &[
    "uri",
    "server_name",
    "server_addr",
    "request_uri",
    "remote_port",
    "remote_addr",
    "query_string",
    "host",
    "hostname",
    "mqtt_client_id",
];

/// `type`, `hash_on` and `key` of upstream `o`: the algorithm and, for
/// `chash`, what it hashes. Problems go to `p`.
pub(super) fn balancing(o: &Obj, p: &mut Problems) -> (Algorithm, Option<HashKey>) {
    let algorithm = match o.str("type", p).unwrap_or("roundrobin") {
        "roundrobin" => Algorithm::RoundRobin,
        "least_conn" => Algorithm::LeastConn,
        "chash" => Algorithm::Chash,
        "ewma" => {
            p.at(
                &o.path_of("type"),
                "ewma is not supported by tinygate yet (use least_conn, which also follows load)",
            );
            Algorithm::RoundRobin
        }
        other => {
            p.at(
                &o.path_of("type"),
                format!("expected roundrobin, least_conn or chash, got {other:?}"),
            );
            Algorithm::RoundRobin
        }
    };
    let hash_on = o.str("hash_on", p).unwrap_or("vars");
    let key = o.str("key", p);
    let valid_on = matches!(
        hash_on,
        "vars" | "header" | "cookie" | "vars_combinations" | "consumer"
    );
    if !valid_on {
        p.at(
            &o.path_of("hash_on"),
            format!(
                "expected vars, header, cookie, consumer or vars_combinations, got {hash_on:?}"
            ),
        );
    }
    if algorithm != Algorithm::Chash || !valid_on {
        // APISIX reads hash_on and key only for chash.
        return (algorithm, None);
    }
    if hash_on == "consumer" {
        p.at(
            &o.path_of("hash_on"),
            "consumer needs consumers, which tinygate does not support yet",
        );
        return (algorithm, None);
    }
    let Some(key) = key else {
        p.at(&o.path, "type chash needs a key");
        return (algorithm, None);
    };
    let checked = match hash_on {
        "vars" => match hash_var(key) {
            Some(k) => Some(k),
            None => {
                p.at(
                    &o.path_of("key"),
                    format!(
                        "{key:?} is not a variable chash can hash on ({} or arg_<name>)",
                        HASH_VARS.join(", ")
                    ),
                );
                None
            }
        },
        "header" | "cookie" if is_field_name(key) => Some(HashKey::Var(if hash_on == "header" {
            Var::Http(key.to_ascii_lowercase().replace('_', "-"))
        } else {
            Var::Cookie(key.to_string())
        })),
        "header" | "cookie" => {
            p.at(
                &o.path_of("key"),
                format!("{key:?} is not a {hash_on} name (letters, digits, - and _)"),
            );
            None
        }
        _ => Some(HashKey::Template(template(key))),
    };
    (algorithm, checked)
}

/// A `hash_on: vars` key: one of [`HASH_VARS`] or `arg_<name>`.
fn hash_var(key: &str) -> Option<HashKey> {
    let is_arg = key
        .strip_prefix("arg_")
        .is_some_and(|name| !name.is_empty() && is_field_name(name));
    if !(HASH_VARS.contains(&key) || is_arg) {
        return None;
    }
    Some(match key {
        // nginx's `$server_name` is APISIX's server block's `_`, and
        // `$hostname` the machine's name: one value for every request.
        "server_name" => HashKey::Fixed(Some("_".to_string())),
        "hostname" => HashKey::Fixed(Some(hostname())),
        "mqtt_client_id" => HashKey::Fixed(None),
        _ => HashKey::Var(Var::parse(key)?),
    })
}

/// nginx's `$hostname` (the kernel's, on Linux; `localhost` if unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A `vars_combinations` key cut into text and variables, as APISIX's
/// `resolve_var` reads it: `$name` (word characters and dots), `${name}`
/// or `${name ?? default}`; a `$` after a backslash is text.
fn template(key: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = key;
    while let Some(at) = rest.find('$') {
        let (before, after) = rest.split_at(at);
        text.push_str(before);
        let after = &after[1..];
        let escaped = before.ends_with('\\');
        let var = if escaped {
            None
        } else if let Some(braced) = after.strip_prefix('{') {
            braced
                .find('}')
                .filter(|&end| !braced[..end].trim().is_empty())
                .map(|end| (braced[..end].trim(), end + 2))
        } else {
            let end = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(after.len());
            (end > 0).then(|| (&after[..end], end))
        };
        match var {
            Some((spec, used)) => {
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                let (name, default) = match spec.split_once("??") {
                    Some((n, d)) => (n.trim(), Some(d.trim().to_string())),
                    None => (spec, None),
                };
                out.push(Piece::Var(Var::parse(name), default));
                rest = &after[used..];
            }
            None => {
                text.push('$');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

/// APISIX's `upstream_hash_header_schema`: `^[a-zA-Z0-9-_]+$`.
fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    fn parse(yaml: &str) -> (Algorithm, Option<HashKey>, Vec<String>) {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        let mut p = Problems::new("apisix.yaml");
        let o = Obj::new(&v, "upstreams[0]".into(), &mut p).unwrap();
        let (a, k) = balancing(&o, &mut p);
        (a, k, p.into_vec())
    }

    #[test]
    fn types_and_keys() {
        assert_eq!(parse("{}"), (Algorithm::RoundRobin, None, vec![]));
        assert_eq!(
            parse("{type: least_conn}"),
            (Algorithm::LeastConn, None, vec![])
        );
        assert_eq!(
            parse("{type: chash, key: remote_addr}"),
            (
                Algorithm::Chash,
                Some(HashKey::Var(Var::RemoteAddr)),
                vec![]
            )
        );
        let key = |yaml: &str| parse(yaml).1;
        assert_eq!(
            key("{type: chash, key: arg_id}"),
            Some(HashKey::Var(Var::Arg("id".into())))
        );
        assert_eq!(
            key("{type: chash, hash_on: header, key: X_User}"),
            Some(HashKey::Var(Var::Http("x-user".into())))
        );
        assert_eq!(
            key("{type: chash, hash_on: cookie, key: sid}"),
            Some(HashKey::Var(Var::Cookie("sid".into())))
        );
        assert_eq!(
            key("{type: chash, key: server_name}"),
            Some(HashKey::Fixed(Some("_".into())))
        );
        assert_eq!(
            key("{type: chash, hash_on: vars_combinations, key: \"$host-${ arg_a ?? none }\"}"),
            Some(HashKey::Template(vec![
                Piece::Var(Some(Var::Host), None),
                Piece::Text("-".into()),
                Piece::Var(Some(Var::Arg("a".into())), Some("none".into())),
            ]))
        );
        // As APISIX: hash_on and key mean nothing to other types.
        assert_eq!(
            parse("{hash_on: header, key: \"a b\"}").2,
            Vec::<String>::new()
        );
    }

    #[test]
    fn templates_are_read_as_apisix_resolve_var() {
        assert_eq!(template("plain"), vec![Piece::Text("plain".into())]);
        assert_eq!(
            template("a$uri.x$ \\$host${}"),
            vec![
                Piece::Text("a".into()),
                Piece::Var(None, None),
                Piece::Text("$ \\$host${}".into()),
            ],
            "`uri.x` is one name (dots are part of names); `$ `, `\\$` and `${{}}` are text"
        );
        assert_eq!(
            template("${http_x}/$remote_addr"),
            vec![
                Piece::Var(Some(Var::Http("x".into())), None),
                Piece::Text("/".into()),
                Piece::Var(Some(Var::RemoteAddr), None),
            ]
        );
    }

    #[test]
    fn bad_types_and_keys_are_refused_with_their_path() {
        let at = "apisix.yaml: upstreams[0]";
        assert_eq!(
            parse("{type: ewma}").2,
            vec![format!("{at}.type: ewma is not supported by tinygate yet (use least_conn, which also follows load)")]
        );
        assert_eq!(
            parse("{type: random}").2,
            vec![format!(
                "{at}.type: expected roundrobin, least_conn or chash, got \"random\""
            )]
        );
        assert_eq!(
            parse("{type: chash}").2,
            vec![format!("{at}: type chash needs a key")]
        );
        assert_eq!(
            parse("{type: chash, key: http_x}").2,
            vec![format!("{at}.key: \"http_x\" is not a variable chash can hash on (uri, server_name, server_addr, request_uri, remote_port, remote_addr, query_string, host, hostname, mqtt_client_id or arg_<name>)")]
        );
        assert_eq!(
            parse("{type: chash, hash_on: header, key: \"a b\"}").2,
            vec![format!(
                "{at}.key: \"a b\" is not a header name (letters, digits, - and _)"
            )]
        );
        assert_eq!(
            parse("{type: chash, hash_on: consumer}").2,
            vec![format!(
                "{at}.hash_on: consumer needs consumers, which tinygate does not support yet"
            )]
        );
        assert_eq!(
            parse("{type: chash, hash_on: body, key: x}").2,
            vec![format!("{at}.hash_on: expected vars, header, cookie, consumer or vars_combinations, got \"body\"")]
        );
    }
}
