//! A `vars` value (YAML or JSON, as parsed) into an [`Expr`], with the
//! checks lua-resty-expr makes when APISIX loads a route, and more: a
//! condition APISIX would accept but could never satisfy (a number in an
//! `in` list, which never equals the string a variable holds; a boolean;
//! an unknown variable) is refused here with a reason, rather than leaving
//! a route that silently never matches.

use super::{Expr, IpMatcher, Op, Operand, Test, Var};
use crate::yaml::kind;
use serde_yaml::Value;
use std::fmt;

/// Why a `vars` value does not compile, and where inside it (`[1][2]`,
/// empty for the whole value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ExprError {}

const OPERATORS: &str = "==, ~=, >, >=, <, <=, ~~, ~*, in, has, ipmatch";
const VARIABLES: &str = "uri, host, request_method, request_uri, args, query_string, \
    remote_addr, remote_port, server_addr, server_port, scheme, arg_<name>, http_<name>, \
    cookie_<name>";

/// Compiles a route's `vars`: a list of conditions (all must hold), or a
/// list starting with `AND`, `OR`, `!AND` or `!OR`.
///
/// # Errors
/// The first problem, with its position inside the value.
pub fn compile(rule: &Value) -> Result<Expr, ExprError> {
    let Value::Sequence(items) = rule else {
        return Err(error(
            "",
            format!("expected a list of conditions, got {}", kind(rule)),
        ));
    };
    match items.first() {
        None => Ok(Expr::All(Vec::new())),
        Some(Value::Sequence(_)) => group(items, ""),
        Some(Value::String(s)) if logic_op(s).is_some() => group(items, ""),
        Some(_) => Err(error(
            "",
            "each condition must be a list: [[var, op, value], ...], not [var, op, value]",
        )),
    }
}

/// The logic operators, upper-cased as lua-resty-expr reads them.
#[derive(Clone, Copy)]
enum Logic {
    And,
    Or,
    NotAnd,
    NotOr,
}

fn logic_op(s: &str) -> Option<Logic> {
    match s.to_ascii_uppercase().as_str() {
        "AND" => Some(Logic::And),
        "OR" => Some(Logic::Or),
        "!AND" => Some(Logic::NotAnd),
        "!OR" => Some(Logic::NotOr),
        _ => None,
    }
}

/// A non-empty list: conditions (implicitly AND), a logic operator and its
/// operands, or one condition.
fn group(items: &[Value], path: &str) -> Result<Expr, ExprError> {
    let children = |from: usize| -> Result<Vec<Expr>, ExprError> {
        items[from..]
            .iter()
            .enumerate()
            .map(|(i, item)| node(item, &format!("{path}[{}]", i + from)))
            .collect()
    };
    match items.first() {
        None => Err(error(path, "empty condition")),
        Some(Value::Sequence(_)) => Ok(Expr::All(children(0)?)),
        Some(Value::String(s)) => match logic_op(s) {
            Some(op) => {
                if items.len() < 3 {
                    return Err(error(
                        path,
                        format!("{s} needs at least two conditions after it"),
                    ));
                }
                let list = children(1)?;
                Ok(match op {
                    Logic::And => Expr::All(list),
                    Logic::Or => Expr::Any(list),
                    Logic::NotAnd => Expr::Not(Box::new(Expr::All(list))),
                    Logic::NotOr => Expr::Not(Box::new(Expr::Any(list))),
                })
            }
            None => condition(items, path).map(Expr::Test),
        },
        Some(other) => Err(error(
            &format!("{path}[0]"),
            format!("expected a variable name or AND/OR, got {}", kind(other)),
        )),
    }
}

fn node(v: &Value, path: &str) -> Result<Expr, ExprError> {
    match v {
        Value::Sequence(items) => group(items, path),
        other => Err(error(
            path,
            format!("expected a condition (a list), got {}", kind(other)),
        )),
    }
}

/// `[var, op, value]`, `[var, "!", op, value]`, or lua-resty-expr's short
/// form `[var, value]` (meaning `==`).
fn condition(items: &[Value], path: &str) -> Result<Test, ExprError> {
    let at = |i: usize| format!("{path}[{i}]");
    let (negated, op_at) = match items.len() {
        2 | 3 => (false, 1),
        4 => match items[1].as_str() {
            Some("!") => (true, 2),
            _ => {
                return Err(error(
                    &at(1),
                    "a condition of four items must be [var, \"!\", op, value]",
                ))
            }
        },
        n => {
            return Err(error(
                path,
                format!("a condition has 3 items ([var, op, value]) or 4 ([var, \"!\", op, value]), not {n}"),
            ))
        }
    };
    let var = match &items[0] {
        Value::String(name) => Var::parse(name).ok_or_else(|| {
            error(
                &at(0),
                format!("unknown variable {name:?} (known: {VARIABLES})"),
            )
        })?,
        other => {
            return Err(error(
                &at(0),
                format!("expected a variable name, got {}", kind(other)),
            ))
        }
    };
    if items.len() == 2 {
        // The short form: the second item is the value to equal.
        let op = Op::Eq(equal_operand(&items[1], &at(1))?);
        return Ok(Test { var, op, negated });
    }
    let op_name = match &items[op_at] {
        Value::String(s) => s.to_ascii_lowercase(),
        other => {
            return Err(error(
                &at(op_at),
                format!("expected an operator, got {}", kind(other)),
            ))
        }
    };
    let (value, value_path) = (&items[op_at + 1], at(op_at + 1));
    let op = operator(&op_name, value, &value_path).unwrap_or_else(|| {
        Err(error(
            &at(op_at),
            format!("unknown operator {op_name:?} (known: {OPERATORS})"),
        ))
    })?;
    Ok(Test { var, op, negated })
}

/// The operator named `name` with its value; `None` for an unknown name.
fn operator(name: &str, value: &Value, path: &str) -> Option<Result<Op, ExprError>> {
    Some(match name {
        "==" => equal_operand(value, path).map(Op::Eq),
        "~=" => equal_operand(value, path).map(Op::Ne),
        ">" => number(value, path).map(Op::Gt),
        ">=" => number(value, path).map(Op::Ge),
        "<" => number(value, path).map(Op::Lt),
        "<=" => number(value, path).map(Op::Le),
        "~~" => regex(value, path, false).map(Op::Regex),
        "~*" => regex(value, path, true).map(Op::Regex),
        "in" => one_of(value, path).map(Op::In),
        "has" => text(value, path, "has").map(Op::Has),
        "ipmatch" => ip_ranges(value, path).map(Op::IpMatch),
        _ => return None,
    })
}

/// The value of `==`/`~=`: a string, a number, or `null` (absent).
fn equal_operand(v: &Value, path: &str) -> Result<Operand, ExprError> {
    match v {
        Value::String(s) => Ok(Operand::Str(s.clone())),
        Value::Number(n) => n
            .as_f64()
            .map(Operand::Num)
            .ok_or_else(|| error(path, "not a finite number")),
        Value::Null => Ok(Operand::Absent),
        Value::Bool(b) => Err(error(
            path,
            format!("variables are strings and never equal a boolean: write \"{b}\""),
        )),
        other => Err(error(
            path,
            format!("expected a string, a number or null, got {}", kind(other)),
        )),
    }
}

/// The value of a numeric comparison: a number, or a string that is one.
fn number(v: &Value, path: &str) -> Result<f64, ExprError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => super::lua_number(s),
        _ => None,
    };
    n.filter(|n| n.is_finite())
        .ok_or_else(|| error(path, format!("expected a number, got {}", describe(v))))
}

fn regex(v: &Value, path: &str, case_insensitive: bool) -> Result<regex_lite::Regex, ExprError> {
    let pattern = text(v, path, "a regex")?;
    regex_lite::RegexBuilder::new(&pattern)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| error(path, format!("invalid regex: {e}")))
}

/// The list of `in`: strings, since a variable's value is one.
fn one_of(v: &Value, path: &str) -> Result<Vec<String>, ExprError> {
    let Value::Sequence(items) = v else {
        return Err(error(path, format!("in takes a list, got {}", kind(v))));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| text(item, &format!("{path}[{i}]"), "in"))
        .collect()
}

/// A string value. A number is refused with a hint: lua-resty-expr compares
/// it with `==` to the variable's string, which never holds.
fn text(v: &Value, path: &str, what: &str) -> Result<String, ExprError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Err(error(
            path,
            format!("{what} compares strings: write {n} as \"{n}\""),
        )),
        other => Err(error(
            path,
            format!("expected a string, got {}", kind(other)),
        )),
    }
}

/// `ipmatch`: an address or range, or a non-empty list of them.
fn ip_ranges(v: &Value, path: &str) -> Result<IpMatcher, ExprError> {
    let items: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Sequence(list) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().ok_or_else(|| {
                    error(
                        &format!("{path}[{i}]"),
                        format!("expected an IP address or CIDR range, got {}", kind(item)),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(error(
                path,
                format!(
                    "expected an IP address or CIDR range, or a non-empty list of them, got {}",
                    describe(other)
                ),
            ))
        }
    };
    IpMatcher::parse(items).map_err(|e| error(path, e.to_string()))
}

fn error(path: &str, message: impl Into<String>) -> ExprError {
    ExprError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// `kind`, with the text of a string (for "expected a number, got \"x\"").
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => kind(other).to_string(),
    }
}
