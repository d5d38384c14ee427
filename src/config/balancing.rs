//! An upstream's balancing keys: `type` (`roundrobin`, `least_conn`,
//! `chash`; `ewma` refused) and, for `chash`, `hash_on` and `key`, checked
//! as APISIX's `check_upstream_conf` does. It knows the keys, not how
//! nodes are picked (`src/balancer/`).

use super::tree::{Obj, Problems};
use crate::balancer::Algorithm;

/// What a `chash` upstream hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `hash_on: vars`: an nginx variable (`remote_addr`, `uri`,
    /// `arg_<name>`, ...).
    Var(String),
    /// `hash_on: header`: a request header.
    Header(String),
    /// `hash_on: cookie`: a request cookie.
    Cookie(String),
    /// `hash_on: vars_combinations`: a template such as
    /// `$remote_addr$http_user_agent`.
    Combination(String),
}

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
        "vars" if is_hash_var(key) => Some(HashKey::Var(key.to_string())),
        "vars" => {
            p.at(
                &o.path_of("key"),
                format!(
                    "{key:?} is not a variable chash can hash on ({} or arg_<name>)",
                    HASH_VARS.join(", ")
                ),
            );
            None
        }
        "header" | "cookie" if is_field_name(key) => Some(if hash_on == "header" {
            HashKey::Header(key.to_string())
        } else {
            HashKey::Cookie(key.to_string())
        }),
        "header" | "cookie" => {
            p.at(
                &o.path_of("key"),
                format!("{key:?} is not a {hash_on} name (letters, digits, - and _)"),
            );
            None
        }
        _ => Some(HashKey::Combination(key.to_string())),
    };
    (algorithm, checked)
}

fn is_hash_var(key: &str) -> bool {
    HASH_VARS.contains(&key)
        || key
            .strip_prefix("arg_")
            .is_some_and(|name| !name.is_empty() && is_field_name(name))
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
                Some(HashKey::Var("remote_addr".into())),
                vec![]
            )
        );
        assert_eq!(
            parse("{type: chash, key: arg_id}").1,
            Some(HashKey::Var("arg_id".into()))
        );
        assert_eq!(
            parse("{type: chash, hash_on: header, key: X-User}").1,
            Some(HashKey::Header("X-User".into()))
        );
        assert_eq!(
            parse("{type: chash, hash_on: cookie, key: sid}").1,
            Some(HashKey::Cookie("sid".into()))
        );
        assert_eq!(
            parse("{type: chash, hash_on: vars_combinations, key: \"$host$uri\"}").1,
            Some(HashKey::Combination("$host$uri".into()))
        );
        // As APISIX: hash_on and key mean nothing to other types.
        assert_eq!(
            parse("{hash_on: header, key: \"a b\"}").2,
            Vec::<String>::new()
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
