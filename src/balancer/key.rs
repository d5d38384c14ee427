//! What a `chash` upstream hashes for one request, as APISIX's
//! `fetch_chash_hash_key`: the variable, header or cookie `key` names, or
//! a `vars_combinations` template with its variables filled in; when the
//! request has none of it (no such header, a template that resolved no
//! variable), the client's address, so that such requests still stick per
//! client. The setting is the balancer's own type ([`HashKey`]), which
//! `config` parses `hash_on` and `key` into. It knows request variables
//! (`crate::expr`), not nodes.

use crate::expr::{Var, Vars};

/// What a `chash` upstream hashes, read from each request's variables
/// ([`request_key`]); `config` reads it from `hash_on` and `key`.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    /// `hash_on: vars` (an nginx variable: `remote_addr`, `uri`,
    /// `arg_<name>`, ...), `header` (`http_<name>`) or `cookie`
    /// (`cookie_<name>`).
    Var(Var),
    /// `hash_on: vars_combinations`: text with `$name`, `${name}` or
    /// `${name ?? default}` in it.
    Template(Vec<Piece>),
    /// A variable with the same value for every request of this gateway
    /// (`server_name`, `hostname`), or none for HTTP (`mqtt_client_id`).
    Fixed(Option<String>),
}

/// A piece of a `vars_combinations` template.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// A variable (`None`: a name tinygate has no such variable for, which
    /// is never set), and the default after `??`.
    Var(Option<Var>, Option<String>),
}

/// The bytes `hash` picks for the request whose variables are `vars`.
pub fn request_key(hash: &HashKey, vars: &dyn Vars) -> Vec<u8> {
    let key = match hash {
        HashKey::Var(var) => vars.value(var).map(|v| v.into_owned()),
        HashKey::Fixed(value) => value.clone(),
        HashKey::Template(pieces) => resolve(pieces, vars),
    };
    key.or_else(|| vars.value(&Var::RemoteAddr).map(|v| v.into_owned()))
        .unwrap_or_default()
        .into_bytes()
}

/// A template with its variables replaced (a missing one by its default,
/// else by nothing); `None` when no variable resolved, as APISIX's
/// `resolve_var` counts them.
fn resolve(pieces: &[Piece], vars: &dyn Vars) -> Option<String> {
    let mut out = String::new();
    let mut resolved = 0;
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(var, default) => {
                let value = var.as_ref().and_then(|v| vars.value(v));
                if let Some(v) = value.as_deref().or(default.as_deref()) {
                    out.push_str(v);
                    resolved += 1;
                }
            }
        }
    }
    (resolved > 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// Variables from a list.
    struct Fake(Vec<(Var, &'static str)>);

    impl Vars for Fake {
        fn value(&self, var: &Var) -> Option<Cow<'_, str>> {
            self.0
                .iter()
                .find(|(v, _)| v == var)
                .map(|(_, s)| Cow::Borrowed(*s))
        }

        fn values(&self, var: &Var) -> Vec<Cow<'_, str>> {
            self.value(var).into_iter().collect()
        }
    }

    fn vars() -> Fake {
        Fake(vec![
            (Var::RemoteAddr, "10.0.0.9"),
            (Var::Uri, "/a"),
            (Var::Http("x-user".into()), "alice"),
        ])
    }

    #[test]
    fn keys_are_the_variable_or_the_client_address() {
        let key = |h: HashKey| String::from_utf8(request_key(&h, &vars())).unwrap();
        assert_eq!(key(HashKey::Var(Var::Http("x-user".into()))), "alice");
        assert_eq!(key(HashKey::Var(Var::Cookie("sid".into()))), "10.0.0.9");
        assert_eq!(key(HashKey::Fixed(Some("_".into()))), "_");
        assert_eq!(key(HashKey::Fixed(None)), "10.0.0.9");
        let template = |pieces| key(HashKey::Template(pieces));
        assert_eq!(
            template(vec![
                Piece::Var(Some(Var::Uri), None),
                Piece::Text("|".into()),
                Piece::Var(Some(Var::Arg("x".into())), Some("none".into())),
                Piece::Var(Some(Var::Arg("y".into())), None),
            ]),
            "/a|none"
        );
        assert_eq!(
            template(vec![
                Piece::Text("k".into()),
                Piece::Var(Some(Var::Arg("y".into())), None)
            ]),
            "10.0.0.9",
            "nothing resolved: the client's address"
        );
    }
}
