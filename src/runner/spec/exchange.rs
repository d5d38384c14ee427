//! A case's scripted exchange in a `tinygate test` file: the client's
//! request, what the upstream does with the proxy's request, and the
//! answers to the plugin's `http_call`s, with the header fields and bodies
//! they send. It knows what the scripts may send (valid header names,
//! framing set from `body` or `chunks`), nothing about what a case
//! expects (`expect.rs`) or how the runner plays the scripts (`exec.rs`).

use super::{scalar, status};
use crate::config::tree::{index, join, Obj, Problems};
use crate::yaml::kind;
use serde_yaml::Value;

/// The client's request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Always has a `host` (default `localhost`).
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// A scripted message body: `body` is one piece with a `content-length`,
/// `chunks` are pieces sent one by one, chunked.
#[derive(Debug, Default, Clone)]
pub struct Body {
    pub pieces: Vec<Vec<u8>>,
    pub chunked: bool,
    /// Trailer fields after the last chunk (chunked only).
    pub trailers: Vec<(String, String)>,
}

/// What the upstream does with the request the proxy sends it.
#[derive(Debug, Clone)]
pub enum Upstream {
    Answers {
        status: u16,
        headers: Vec<(String, String)>,
        body: Body,
    },
    /// Keeps the connection open and never says anything.
    NeverAnswers,
    /// Resets the connection instead of answering.
    Resets,
}

/// The scripted answer to an `http_call`.
#[derive(Debug, Clone)]
pub enum Answer {
    Responds {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The call fails (the plugin sees no response).
    Fails,
}

/// Without `request`: `GET /` to host `localhost`, no body.
impl Default for Request {
    fn default() -> Self {
        Request {
            method: "GET".into(),
            path: "/".into(),
            headers: vec![("host".into(), "localhost".into())],
            body: Body::default(),
        }
    }
}

/// Without `upstream`: it answers 200 with no header field and no body.
impl Default for Upstream {
    fn default() -> Self {
        Upstream::Answers {
            status: 200,
            headers: Vec::new(),
            body: Body::default(),
        }
    }
}

/// A case's `request`: method, path, header fields and body.
pub(super) fn request(o: &Obj, p: &mut Problems) -> Request {
    o.only(
        &["method", "path", "headers", "body", "chunks", "trailers"],
        p,
    );
    let method = o.str("method", p).unwrap_or("GET").to_string();
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!".contains(&b))
    {
        p.at(
            &o.path_of("method"),
            format!("{method:?} is not an HTTP method"),
        );
    }
    let path = o.str("path", p).unwrap_or("/").to_string();
    if !path.starts_with('/') || path.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        p.at(
            &o.path_of("path"),
            format!("{path:?} is not a request target (a path from /, no spaces)"),
        );
    }
    let mut headers = fields(o, "headers", p);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        headers.insert(0, ("host".into(), "localhost".into()));
    }
    let body = body(o, p);
    for (k, _) in &headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            p.at(
                &join(&o.path_of("headers"), k),
                "framing is set from body (content-length) or chunks (chunked)",
            );
        }
    }
    Request {
        method,
        path,
        headers,
        body,
    }
}

/// A case's `upstream`: an answer, or `never_answers` or `resets`.
pub(super) fn upstream(o: &Obj, p: &mut Problems) -> Upstream {
    o.only(
        &[
            "status",
            "headers",
            "body",
            "chunks",
            "trailers",
            "never_answers",
            "resets",
        ],
        p,
    );
    let never = o.bool("never_answers", p).unwrap_or(false);
    let resets = o.bool("resets", p).unwrap_or(false);
    if never || resets {
        let other = ["status", "headers", "body", "chunks", "trailers"]
            .into_iter()
            .find(|k| o.has(k));
        if let Some(k) = other.or((never && resets).then_some("resets")) {
            p.at(
                &o.path_of(k),
                "an upstream that never answers or resets sends nothing else",
            );
        }
        return if never {
            Upstream::NeverAnswers
        } else {
            Upstream::Resets
        };
    }
    let status = status(o, "status", p).unwrap_or(200);
    let headers = fields(o, "headers", p);
    for (k, _) in &headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            p.at(
                &join(&o.path_of("headers"), k),
                "framing is set from body (content-length) or chunks (chunked)",
            );
        }
    }
    Upstream::Answers {
        status,
        headers,
        body: body(o, p),
    }
}

/// `body` (one piece, `content-length`) or `chunks` (pieces, chunked),
/// plus `trailers` (chunked only).
fn body(o: &Obj, p: &mut Problems) -> Body {
    let mut out = Body::default();
    if let Some(text) = o.str("body", p) {
        out.pieces = vec![text.as_bytes().to_vec()];
    }
    if let Some(list) = o.seq("chunks", p) {
        if o.has("body") {
            p.at(&o.path_of("chunks"), "give either body or chunks, not both");
        }
        out.chunked = true;
        out.pieces.clear();
        for (i, item) in list.iter().enumerate() {
            match item {
                Value::String(s) if !s.is_empty() => out.pieces.push(s.as_bytes().to_vec()),
                Value::String(_) => p.at(
                    &index(&o.path_of("chunks"), i),
                    "must not be empty (an empty chunk ends a chunked body)",
                ),
                other => p.at(
                    &index(&o.path_of("chunks"), i),
                    format!("expected a string, got {}", kind(other)),
                ),
            }
        }
    }
    out.trailers = fields(o, "trailers", p);
    if !out.trailers.is_empty() && !out.chunked {
        p.at(
            &o.path_of("trailers"),
            "trailers need a chunked body (chunks)",
        );
    }
    out
}

/// A case's `calls`: target → the answer the plugin's `http_call` gets.
pub(super) fn calls(o: &Obj, p: &mut Problems) -> Vec<(String, Answer)> {
    let mut out = Vec::new();
    for (k, v) in o.map {
        let Some(target) = k.as_str().filter(|t| !t.is_empty()) else {
            p.at(
                &o.path,
                format!("targets must be non-empty strings, got {}", kind(k)),
            );
            continue;
        };
        let Some(a) = Obj::new(v, join(&o.path, target), p) else {
            continue;
        };
        a.only(&["status", "headers", "body", "fails"], p);
        if a.bool("fails", p) == Some(true) {
            if let Some(k) = ["status", "headers", "body"].into_iter().find(|k| a.has(k)) {
                p.at(&a.path_of(k), "a failing call has no response");
            }
            out.push((target.to_string(), Answer::Fails));
            continue;
        }
        out.push((
            target.to_string(),
            Answer::Responds {
                status: status(&a, "status", p).unwrap_or(200),
                headers: fields(&a, "headers", p),
                body: a.str("body", p).unwrap_or("").as_bytes().to_vec(),
            },
        ));
    }
    out
}

/// Header fields to send: a mapping `name: value`, or a list of
/// `[name, value]` pairs (for repeated names). Names are lower-cased, as
/// the proxy's parser gives them.
fn fields(o: &Obj, key: &str, p: &mut Problems) -> Vec<(String, String)> {
    let path = o.path_of(key);
    let mut out = Vec::new();
    let mut push = |name: &str, value: &Value, at: String, p: &mut Problems| {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            p.at(&at, format!("{name:?} is not a header name"));
            return;
        }
        match scalar(value) {
            Some(v) if !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) => {
                out.push((name.to_ascii_lowercase(), v));
            }
            Some(_) => p.at(&at, "a header value cannot hold CR, LF or NUL"),
            None => p.at(
                &at,
                format!("expected a string or a number, got {}", kind(value)),
            ),
        }
    };
    match o.value(key) {
        None => {}
        Some(Value::Mapping(map)) => {
            for (k, v) in map {
                match k.as_str() {
                    Some(name) => push(name, v, join(&path, name), p),
                    None => p.at(
                        &path,
                        format!("header names must be strings, got {}", kind(k)),
                    ),
                }
            }
        }
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_sequence().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => push(name, value, index(&path, i), p),
                    _ => p.at(&index(&path, i), "expected a pair [name, value]"),
                }
            }
        }
        Some(other) => p.at(
            &path,
            format!(
                "expected a mapping (or a list of [name, value]), got {}",
                kind(other)
            ),
        ),
    }
    out
}
