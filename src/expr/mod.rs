//! Route `vars`: the conditions APISIX evaluates with lua-resty-expr,
//! compiled once per configuration ([`compile`]) and evaluated per request
//! against a [`Vars`] view of it.
//!
//! A condition is `[var, op, value]` or `[var, "!", op, value]`; a list of
//! conditions holds when all do; `["AND", c1, c2, ...]`, `["OR", ...]`,
//! `["!AND", ...]` and `["!OR", ...]` combine and nest. Operators are
//! lua-resty-expr's: `==`, `~=`, `>`, `>=`, `<`, `<=`, `~~` (regex), `~*`
//! (regex, case-insensitive), `in`, `has` and `ipmatch`. A variable the
//! request lacks compares as lua-resty-expr's `nil` does: `==` and every
//! other operator fail, `~=` holds, and `!` inverts that.
//!
//! This module knows expressions and request variables, nothing about
//! routes, files or sockets.

mod compile;
mod ip;
mod request;

pub use compile::compile;
pub use ip::IpMatcher;
pub use request::RequestVars;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// A compiled `vars` expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A list of conditions, or `AND`: every one must hold (an empty list
    /// always holds).
    All(Vec<Expr>),
    /// `OR`: at least one must hold.
    Any(Vec<Expr>),
    /// `!AND` and `!OR`: the group must not hold.
    Not(Box<Expr>),
    /// One `[var, op, value]` condition.
    Test(Test),
}

/// One condition: a variable, an operator with its value, and whether `!`
/// inverts it.
#[derive(Debug, Clone)]
pub struct Test {
    pub var: Var,
    pub op: Op,
    pub negated: bool,
}

/// The request variables a condition may read (nginx's names, as APISIX
/// exposes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `uri`: the path, without the query.
    Uri,
    /// `host`: the request's host, lower-case, without port.
    Host,
    /// `request_method`.
    RequestMethod,
    /// `request_uri`: the path with the query, as sent.
    RequestUri,
    /// `args` (alias `query_string`): the query without `?`.
    Args,
    /// `remote_addr`, `remote_port`: the client's address and port.
    RemoteAddr,
    RemotePort,
    /// `server_addr`, `server_port`: the listener's address and port.
    ServerAddr,
    ServerPort,
    /// `scheme`: `http` or `https`.
    Scheme,
    /// `arg_<name>`: query argument `<name>` (percent-decoded; the first
    /// one when repeated).
    Arg(String),
    /// `http_<name>`: request header `<name>`, held lower-case with `_`
    /// read as `-` (repeated fields joined with `, `, as nginx does).
    Http(String),
    /// `cookie_<name>`: cookie `<name>` of the `Cookie` header.
    Cookie(String),
}

/// An operator and its compiled value.
#[derive(Debug, Clone)]
pub enum Op {
    /// `==`.
    Eq(Operand),
    /// `~=`.
    Ne(Operand),
    /// `>`, `>=`, `<`, `<=`: numeric comparisons.
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    /// `~~` and `~*` (compiled case-insensitive).
    Regex(regex_lite::Regex),
    /// `in`: the value is one of these.
    In(Vec<String>),
    /// `has`: one of the variable's values is this.
    Has(String),
    /// `ipmatch`: the value is an IP address in one of these ranges.
    IpMatch(IpMatcher),
}

/// The right-hand side of `==` and `~=`.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A string: compared as a string.
    Str(String),
    /// A number: the variable is read as a number (Lua's `tonumber`).
    Num(f64),
    /// `null`: `==` holds when the variable is absent, `~=` when present.
    Absent,
}

/// What a condition reads from the request.
pub trait Vars {
    /// The variable's value, as nginx gives it (`None`: the request has
    /// none).
    fn value(&self, var: &Var) -> Option<Cow<'_, str>>;

    /// Every value the variable has, for `has`: each value of a repeated
    /// query argument or cookie, each element of a header's
    /// comma-separated list; otherwise the one value.
    fn values(&self, var: &Var) -> Vec<Cow<'_, str>>;
}

impl Expr {
    /// True when the request's variables satisfy the expression.
    pub fn eval(&self, vars: &dyn Vars) -> bool {
        match self {
            Expr::All(items) => items.iter().all(|e| e.eval(vars)),
            Expr::Any(items) => items.iter().any(|e| e.eval(vars)),
            Expr::Not(inner) => !inner.eval(vars),
            Expr::Test(test) => test.eval(vars),
        }
    }
}

impl Test {
    fn eval(&self, vars: &dyn Vars) -> bool {
        if let Op::Has(wanted) = &self.op {
            let found = vars.values(&self.var).iter().any(|v| v == wanted);
            return found != self.negated;
        }
        let value = vars.value(&self.var);
        let value = value.as_deref();
        let number = || value.and_then(lua_number);
        let holds = match &self.op {
            Op::Eq(Operand::Str(s)) => value == Some(s.as_str()),
            Op::Ne(Operand::Str(s)) => value != Some(s.as_str()),
            Op::Eq(Operand::Num(n)) => number() == Some(*n),
            // lua-resty-expr: a value that is no number differs from any.
            Op::Ne(Operand::Num(n)) => number() != Some(*n),
            Op::Eq(Operand::Absent) => value.is_none(),
            Op::Ne(Operand::Absent) => value.is_some(),
            Op::Gt(n) => number().is_some_and(|v| v > *n),
            Op::Ge(n) => number().is_some_and(|v| v >= *n),
            Op::Lt(n) => number().is_some_and(|v| v < *n),
            Op::Le(n) => number().is_some_and(|v| v <= *n),
            Op::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            Op::In(list) => value.is_some_and(|v| list.iter().any(|x| x == v)),
            Op::IpMatch(m) => value
                .and_then(|v| v.parse::<IpAddr>().ok())
                .is_some_and(|ip| m.contains(ip)),
            Op::Has(_) => unreachable!("handled above"),
        };
        holds != self.negated
    }
}

/// A string read as a number the way Lua's `tonumber` reads it: white
/// space around it allowed, decimal with optional fraction and exponent, or
/// hexadecimal (`0x1F`); `None` for anything else.
pub fn lua_number(s: &str) -> Option<f64> {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        hex.bytes().fold(0f64, |acc, b| {
            acc * 16.0 + f64::from((b as char).to_digit(16).unwrap_or(0))
        })
    } else {
        // Rust's float syntax, less what Lua refuses: "inf", "nan", a sign
        // after the one already taken.
        let plain = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
        if digits.is_empty() || !digits.bytes().all(plain) || digits.starts_with(['+', '-']) {
            return None;
        }
        digits.parse::<f64>().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

impl Var {
    /// Parses a variable name as written in `vars`.
    pub fn parse(name: &str) -> Option<Var> {
        let with_name = |prefix: &str| name.strip_prefix(prefix).filter(|n| !n.is_empty());
        Some(match name {
            "uri" => Var::Uri,
            "host" => Var::Host,
            "request_method" => Var::RequestMethod,
            "request_uri" => Var::RequestUri,
            "args" | "query_string" => Var::Args,
            "remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "server_addr" => Var::ServerAddr,
            "server_port" => Var::ServerPort,
            "scheme" => Var::Scheme,
            _ => {
                if let Some(arg) = with_name("arg_") {
                    Var::Arg(arg.to_string())
                } else if let Some(header) = with_name("http_") {
                    Var::Http(header.to_ascii_lowercase().replace('_', "-"))
                } else if let Some(cookie) = with_name("cookie_") {
                    Var::Cookie(cookie.to_string())
                } else {
                    return None;
                }
            }
        })
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Uri => f.write_str("uri"),
            Var::Host => f.write_str("host"),
            Var::RequestMethod => f.write_str("request_method"),
            Var::RequestUri => f.write_str("request_uri"),
            Var::Args => f.write_str("args"),
            Var::RemoteAddr => f.write_str("remote_addr"),
            Var::RemotePort => f.write_str("remote_port"),
            Var::ServerAddr => f.write_str("server_addr"),
            Var::ServerPort => f.write_str("server_port"),
            Var::Scheme => f.write_str("scheme"),
            Var::Arg(n) => write!(f, "arg_{n}"),
            Var::Http(n) => write!(f, "http_{}", n.replace('-', "_")),
            Var::Cookie(n) => write!(f, "cookie_{n}"),
        }
    }
}

#[cfg(test)]
mod tests;
