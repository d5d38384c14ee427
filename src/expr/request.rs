//! The [`Vars`] of one HTTP request, read on demand from its parts as nginx
//! and APISIX compute them: query arguments percent-decoded (`+` is a
//! space), the first of repeated arguments and cookies, repeated header
//! fields joined with `, ` (`; ` for `Cookie`), as nginx ≥ 1.23 does.

use super::{Var, Vars};
use crate::http::headers::HeaderMap;
use crate::http::parse::RequestHead;
use std::borrow::Cow;
use std::net::SocketAddr;

/// One request as `vars` conditions see it.
pub struct RequestVars<'a> {
    pub method: &'a str,
    /// The path, without the query (what routes match).
    pub path: &'a str,
    /// The query without `?`; `None` when the target has no `?`.
    pub query: Option<&'a str>,
    /// The host, lower-case, without port.
    pub host: &'a str,
    /// The request's header fields.
    pub headers: &'a HeaderMap,
    pub client: SocketAddr,
    /// The listener's address (`None`: not known).
    pub listener: Option<SocketAddr>,
    pub scheme: &'a str,
}

impl<'a> RequestVars<'a> {
    /// The variables of a request as tinygate routes it: its parsed head
    /// (`path` is the normalised path routes match, without the query).
    pub fn of(
        req: &'a RequestHead,
        path: &'a str,
        client: SocketAddr,
        listener: Option<SocketAddr>,
        scheme: &'a str,
    ) -> RequestVars<'a> {
        RequestVars {
            method: &req.method,
            path,
            query: req.target.split_once('?').map(|(_, q)| q),
            host: &req.hostname,
            headers: &req.headers,
            client,
            listener,
            scheme,
        }
    }
}

impl Vars for RequestVars<'_> {
    fn value(&self, var: &Var) -> Option<Cow<'_, str>> {
        let owned = |s: String| Some(Cow::Owned(s));
        match var {
            Var::Uri => Some(Cow::Borrowed(self.path)),
            Var::Host => Some(Cow::Borrowed(self.host)),
            Var::RequestMethod => Some(Cow::Borrowed(self.method)),
            Var::RequestUri => match self.query {
                Some(q) => owned(format!("{}?{q}", self.path)),
                None => Some(Cow::Borrowed(self.path)),
            },
            Var::Args => self.query.map(Cow::Borrowed),
            Var::RemoteAddr => owned(self.client.ip().to_canonical().to_string()),
            Var::RemotePort => owned(self.client.port().to_string()),
            Var::ServerAddr => owned(self.listener?.ip().to_canonical().to_string()),
            Var::ServerPort => owned(self.listener?.port().to_string()),
            Var::Scheme => Some(Cow::Borrowed(self.scheme)),
            Var::Arg(name) => self.args(name).next(),
            Var::Http(name) => {
                let separator = if name == "cookie" { "; " } else { ", " };
                let mut fields = self.fields(name);
                let first = fields.next()?;
                match fields.next() {
                    None => Some(first),
                    Some(second) => {
                        let mut joined = format!("{first}{separator}{second}");
                        for more in fields {
                            joined.push_str(separator);
                            joined.push_str(&more);
                        }
                        Some(Cow::Owned(joined))
                    }
                }
            }
            Var::Cookie(name) => self.cookies(name).next(),
        }
    }

    fn values(&self, var: &Var) -> Vec<Cow<'_, str>> {
        match var {
            Var::Arg(name) => self.args(name).collect(),
            Var::Cookie(name) => self.cookies(name).collect(),
            // RFC 9110 §5.6.1: a list-valued field is its comma-separated
            // elements, over every line of that name.
            Var::Http(name) if name != "cookie" => self
                .fields(name)
                .flat_map(|line| {
                    line.split(',')
                        .map(|e| e.trim_matches([' ', '\t']).to_string())
                        .filter(|e| !e.is_empty())
                        .collect::<Vec<_>>()
                })
                .map(Cow::Owned)
                .collect(),
            other => self.value(other).into_iter().collect(),
        }
    }
}

impl RequestVars<'_> {
    /// Every value of header `name` (lower-case), one per field line.
    fn fields<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = Cow<'s, str>> + use<'s, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v))
    }

    /// Every value of query argument `name`, decoded.
    fn args<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = Cow<'s, str>> + use<'s, 'n> {
        self.query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter_map(move |pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key) == name).then(|| Cow::Owned(decode(value)))
            })
    }

    /// Every value of cookie `name`, over all `Cookie` lines.
    fn cookies<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = Cow<'s, str>> + use<'s, 'n> {
        self.fields("cookie")
            .flat_map(move |line| {
                line.split(';')
                    .filter_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        (key.trim_matches([' ', '\t']) == name)
                            .then(|| value.trim_matches([' ', '\t']).to_string())
                    })
                    .collect::<Vec<_>>()
            })
            .map(Cow::Owned)
    }
}

/// Percent-decoding of a query component, `+` read as a space (HTML form
/// encoding, as `ngx.req.get_uri_args` decodes); a `%` not followed by two
/// hex digits stays as it is.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i + 1..i + 3) {
            Some(&[hi, lo]) if bytes[i] == b'%' => hex(hi).zip(hex(lo)),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((hi, lo))) => {
                out.push(hi * 16 + lo);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
