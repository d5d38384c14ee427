//! What a dashboard's PromQL asks for: the metric names it selects, the
//! labels it matches on, and the labels it groups by. Enough of PromQL to
//! check a dashboard against a scrape: it tokenizes the whole expression,
//! checks brackets balance and every call is a PromQL function or
//! aggregation, and treats Grafana's `$variables` as opaque values.

/// One vector selector: `metric{label="..."}`.
#[derive(Debug, Clone)]
pub struct Selector {
    pub metric: String,
    pub labels: Vec<String>,
}

/// What one expression uses.
#[derive(Debug, Default)]
pub struct Uses {
    pub selectors: Vec<Selector>,
    /// Labels in `by`, `without`, `on`, `ignoring`, `group_left`,
    /// `group_right` lists.
    pub grouping: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// A number or a duration (`0.99`, `5m`).
    Number,
    Str,
    /// `$name`, `${name}` or `[[name]]`: Grafana fills these in.
    Variable,
    Punct(&'static str),
}

/// PromQL's functions (Prometheus 2.x and 3.x).
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// PromQL's aggregation operators.
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "limit_ratio",
    "limitk",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords followed by a list of label names in parentheses.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Words that are neither metrics nor calls.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
];

/// The selectors and grouping labels of `expr`.
pub fn uses(expr: &str) -> Result<Uses, String> {
    let tokens = tokenize(expr)?;
    let mut uses = Uses::default();
    let mut depth: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let next = tokens.get(i + 1);
        match &tokens[i] {
            Token::Punct(open @ ("(" | "[")) => depth.push(open),
            Token::Punct(close @ (")" | "]")) => {
                let want = if *close == ")" { "(" } else { "[" };
                if depth.pop() != Some(want) {
                    return Err(format!("unbalanced {close} in {expr:?}"));
                }
            }
            Token::Punct("{") => {
                return Err(format!("a selector without a metric name in {expr:?}"));
            }
            Token::Punct("}") => return Err(format!("unbalanced }} in {expr:?}")),
            Token::Ident(word)
                if GROUPING.contains(&word.as_str()) && next == Some(&Token::Punct("(")) =>
            {
                let mut j = i + 2;
                loop {
                    match tokens.get(j) {
                        Some(Token::Ident(label)) => uses.grouping.push(label.clone()),
                        Some(Token::Punct(",")) => {}
                        Some(Token::Punct(")")) => break,
                        other => {
                            return Err(format!("{word}(...): unexpected {other:?} in {expr:?}"))
                        }
                    }
                    j += 1;
                }
                i = j;
            }
            Token::Ident(word)
                if GROUPING.contains(&word.as_str()) && !KEYWORDS.contains(&word.as_str()) =>
            {
                return Err(format!("{word} without a label list in {expr:?}"));
            }
            Token::Ident(word)
                if next == Some(&Token::Punct("("))
                    && !FUNCTIONS.contains(&word.as_str())
                    && !AGGREGATIONS.contains(&word.as_str()) =>
            {
                return Err(format!("{word}(...) is no PromQL function in {expr:?}"));
            }
            Token::Ident(_) if next == Some(&Token::Punct("(")) => {}
            Token::Ident(word) if KEYWORDS.contains(&word.as_str()) => {}
            Token::Ident(word)
                if AGGREGATIONS.contains(&word.as_str())
                    && matches!(next, Some(Token::Ident(w)) if w == "by" || w == "without") => {}
            Token::Ident(metric) => {
                let mut selector = Selector {
                    metric: metric.clone(),
                    labels: Vec::new(),
                };
                if next == Some(&Token::Punct("{")) {
                    let (labels, end) = matchers(&tokens, i + 2, expr)?;
                    selector.labels = labels;
                    i = end;
                }
                uses.selectors.push(selector);
            }
            _ => {}
        }
        i += 1;
    }
    if !depth.is_empty() {
        return Err(format!("unclosed {:?} in {expr:?}", depth));
    }
    Ok(uses)
}

/// The label matchers from `tokens[start]` to the closing `}`: the labels
/// they name, and the index of the `}`.
fn matchers(tokens: &[Token], start: usize, expr: &str) -> Result<(Vec<String>, usize), String> {
    let mut labels = Vec::new();
    let mut j = start;
    loop {
        match tokens.get(j) {
            Some(Token::Punct("}")) => break,
            Some(Token::Punct(",")) => j += 1,
            Some(Token::Ident(label)) => {
                let op = tokens.get(j + 1);
                let value = tokens.get(j + 2);
                let op_ok = matches!(op, Some(Token::Punct("=" | "!=" | "=~" | "!~")));
                if !op_ok || value != Some(&Token::Str) {
                    return Err(format!("bad matcher for {label} in {expr:?}"));
                }
                labels.push(label.clone());
                j += 3;
            }
            other => return Err(format!("unexpected {other:?} in matchers of {expr:?}")),
        }
    }
    Ok((labels, j))
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' && c != '`' { 2 } else { 1 };
            }
            if j >= chars.len() {
                return Err(format!("unclosed string in {expr:?}"));
            }
            tokens.push(Token::Str);
            i = j + 1;
        } else if c == '$' {
            let mut j = i + 1;
            if chars.get(j) == Some(&'{') {
                while j < chars.len() && chars[j] != '}' {
                    j += 1;
                }
                j += 1;
            } else {
                while j < chars.len() && word(chars[j]) {
                    j += 1;
                }
            }
            tokens.push(Token::Variable);
            i = j;
        } else if c == '[' && chars.get(i + 1) == Some(&'[') {
            let end = (i + 2..chars.len())
                .find(|&j| chars[j] == ']' && chars.get(j + 1) == Some(&']'))
                .ok_or(format!("unclosed [[ in {expr:?}"))?;
            tokens.push(Token::Variable);
            i = end + 2;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (word(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number);
        } else if word(c) {
            let start = i;
            while i < chars.len() && word(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let punct = ["==", "!=", "=~", "!~", ">=", "<="]
                .into_iter()
                .find(|p| *p == two)
                .or_else(|| {
                    [
                        "(", ")", "{", "}", "[", "]", ",", "=", "+", "-", "*", "/", "%", "^", "<",
                        ">", ":", "@",
                    ]
                    .into_iter()
                    .find(|p| p.starts_with(c))
                })
                .ok_or(format!("unexpected {c:?} in {expr:?}"))?;
            tokens.push(Token::Punct(punct));
            i += punct.len();
        }
    }
    Ok(tokens)
}

/// A Grafana template variable's query: `label_values(metric, label)`,
/// `label_values(label)`, `query_result(expr)` or plain PromQL.
pub fn variable_uses(query: &str) -> Result<Uses, String> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Ok(match inner.rsplit_once(',') {
            Some((selector, label)) => {
                let mut uses = uses(selector)?;
                uses.grouping.push(label.trim().to_string());
                uses
            }
            None => Uses {
                selectors: Vec::new(),
                grouping: vec![inner.trim().to_string()],
            },
        });
    }
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return uses(inner);
    }
    uses(query)
}
