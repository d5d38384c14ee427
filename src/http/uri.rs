//! The request-target as tinygate routes it and forwards it: one canonical
//! spelling of the path (RFC 3986 §6.2.2) and of the host (§3.2.2).
//!
//! A route guards `/admin/*` only if every spelling a backend resolves to
//! `/admin/...` is routed there too: `//admin/x`, `/./admin/x`,
//! `/%61dmin/x`, `/x/../admin/x` and `/x/%2e%2e/admin/x` all are, by
//! nginx's `$uri`, by Go's, Java's and Python's HTTP stacks. So the path is
//! normalised once, before routing, and the normal form is what routing,
//! plugins (`:path`), properties, the access log and the upstream's request
//! line see; the query string is never touched. The host is normalised for
//! host routing (case, port, trailing dot), while `:authority` and the
//! forwarded `Host` stay as the client sent them.
//!
//! Pure functions over bytes in memory: this module knows nothing about
//! sockets, routes or plugins. Fuzzed by `fuzz/` (see `oracle.rs`).

use std::borrow::Cow;
use std::net::Ipv6Addr;

use super::parse::{HeadError, RequestHead};

/// What to do with an encoded slash or backslash (`%2F`, `%5C`, either
/// case) in a path: Envoy's `path_with_escaped_slashes_action`, under the
/// same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Keep them encoded (the escape's hex upper-cased): they are data
    /// inside a segment, not separators (RFC 3986 §2.2). The default.
    #[default]
    KeepUnchanged,
    /// Answer 400: for backends that decode `%2F` before resolving the
    /// path, where an encoded slash could reach a segment no route guards.
    RejectRequest,
    /// Decode both into `/` (a backslash is a separator, as in WHATWG's URL
    /// parser), then normalise: routed and forwarded as separators.
    UnescapeAndForward,
}

/// How paths are normalised (`tinygate.merge_slashes`,
/// `tinygate.path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Merge runs of `/` into one, as nginx's `merge_slashes on` (default).
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::KeepUnchanged,
        }
    }
}

/// Why a path or host was refused (each is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits (RFC 3986 §2.1).
    BadEscape,
    /// A control byte, raw or encoded (`%00`, `%0A`, `%7F`, ...).
    ControlByte,
    /// `%2F` or `%5C` under [`EscapedSlashes::RejectRequest`].
    EscapedSlash,
    /// A `..` segment above the root (`/../x`): nginx's 400 rather than
    /// RFC 3986 §5.2.4's silent clamp, since such a path is an attack.
    AboveRoot,
    /// A host that is not a reg-name, IPv4 address or IP-literal
    /// (RFC 3986 §3.2.2) with an optional decimal port.
    InvalidHost,
}

impl UriError {
    /// The reason given in the 400 reply and the log.
    pub fn reason(self) -> &'static str {
        match self {
            UriError::NotAbsolute => "request path does not start with /",
            UriError::BadEscape => "invalid percent-encoding in the path",
            UriError::ControlByte => "control character in the path",
            UriError::EscapedSlash => "encoded slash or backslash in the path",
            UriError::AboveRoot => "path climbs above the root",
            UriError::InvalidHost => "invalid host",
        }
    }
}

impl From<UriError> for HeadError {
    fn from(e: UriError) -> HeadError {
        HeadError {
            status: 400,
            reason: e.reason(),
        }
    }
}

/// Normalises a parsed request's target in place: the path as
/// [`normalize_path`] says, the query (from the first `?`) as sent. The
/// asterisk-form (`OPTIONS *`) has no path and is left alone.
///
/// # Errors
/// A 400 with the reason, for a path [`normalize_path`] refuses.
pub fn normalize_request(
    mut req: RequestHead,
    opts: PathOptions,
) -> Result<RequestHead, HeadError> {
    if req.target == "*" {
        return Ok(req);
    }
    if let Cow::Owned(target) = normalize_target(&req.target, opts)? {
        req.target = target;
    }
    Ok(req)
}

/// `path?query` with the path normalised and the query untouched.
///
/// # Errors
/// As [`normalize_path`].
pub fn normalize_target(target: &str, opts: PathOptions) -> Result<Cow<'_, str>, UriError> {
    let (path, query) = match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    Ok(match normalize_path(path, opts)? {
        Cow::Borrowed(_) => Cow::Borrowed(target),
        Cow::Owned(mut path) => {
            path.push_str(query);
            Cow::Owned(path)
        }
    })
}

/// The normal form of an absolute path (RFC 3986 §6.2.2), in this order:
///
/// 1. escapes of unreserved characters are decoded (`%61` → `a`, `%2E` →
///    `.`), other escapes get upper-case hex (`%c3` → `%C3`), bytes that
///    may not appear in a path are encoded (`"` → `%22`), a raw backslash
///    is a `/` (WHATWG URL), `%2F`/`%5C` follow `opts.escaped_slashes`;
/// 2. runs of `/` are merged when `opts.merge_slashes`;
/// 3. dot segments are removed (§5.2.4), and a `..` above the root fails.
///
/// The result is borrowed when the path is already normal (the common
/// case costs one scan and no allocation). Normalising is idempotent and
/// the result has no `.` or `..` segment.
///
/// # Errors
/// [`UriError`] for a path that is not absolute, has a malformed escape or
/// a control byte, an escaped slash under `RejectRequest`, or a `..` above
/// the root.
pub fn normalize_path(path: &str, opts: PathOptions) -> Result<Cow<'_, str>, UriError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(UriError::NotAbsolute);
    }
    if is_normal(bytes, opts) {
        return Ok(Cow::Borrowed(path));
    }
    let canonical = canonical_bytes(bytes, opts.escaped_slashes)?;
    remove_dot_segments(&canonical, opts.merge_slashes).map(Cow::Owned)
}

/// The host of an authority (`host[:port]`), normalised for host routing:
/// lower-case, without the port, without one trailing dot (`Example.COM.:80`
/// → `example.com`, as nginx's `$host`), escapes of unreserved characters
/// decoded; an IPv6 literal without its brackets (`[::1]:80` → `::1`).
///
/// # Errors
/// [`UriError::InvalidHost`] unless the host is a reg-name, IPv4 address or
/// IP-literal (RFC 3986 §3.2.2) and the port is decimal; an empty host, and
/// an empty label (`a..b`, which nginx refuses too), are invalid as well.
pub fn normalize_host(authority: &str) -> Result<String, UriError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(UriError::InvalidHost)?;
        if !is_ip_literal(literal) {
            return Err(UriError::InvalidHost);
        }
        let port = match after {
            "" => "",
            _ => after.strip_prefix(':').ok_or(UriError::InvalidHost)?,
        };
        (literal.to_ascii_lowercase(), port)
    } else {
        let (name, port) = authority.split_once(':').unwrap_or((authority, ""));
        (reg_name(name)?, port)
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::InvalidHost);
    }
    Ok(host)
}

/// A reg-name or IPv4 address (the grammar of one includes the other),
/// normalised; see [`normalize_host`].
fn reg_name(name: &str) -> Result<String, UriError> {
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b == b'%' {
            let v = escape_at(bytes, i).ok_or(UriError::InvalidHost)?;
            i += 2;
            if is_unreserved(v) {
                out.push(char::from(v.to_ascii_lowercase()));
            } else if is_control(v) {
                return Err(UriError::InvalidHost);
            } else {
                push_escape(&mut out, v);
            }
        } else if is_unreserved(b) || is_sub_delim(b) {
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            return Err(UriError::InvalidHost);
        }
    }
    // An empty label is invalid (nginx), a final dot is dropped (nginx's
    // $host): checked in this order so that `..` is not taken for `.`.
    if out.contains("..") {
        return Err(UriError::InvalidHost);
    }
    if out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        return Err(UriError::InvalidHost);
    }
    Ok(out)
}

/// `IPv6address / IPvFuture` (RFC 3986 §3.2.2); zone ids are not allowed.
fn is_ip_literal(s: &str) -> bool {
    match s.strip_prefix(['v', 'V']) {
        Some(future) => future.split_once('.').is_some_and(|(version, rest)| {
            !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_hexdigit())
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| is_unreserved(b) || is_sub_delim(b) || b == b':')
        }),
        None => s.parse::<Ipv6Addr>().is_ok(),
    }
}

/// True when `path` needs no change: only path characters and `/`, no
/// escape, no `//` to merge, no dot segment.
fn is_normal(path: &[u8], opts: PathOptions) -> bool {
    path.iter().all(|&b| b == b'/' || is_pchar(b))
        && !(opts.merge_slashes && path.windows(2).any(|w| w == b"//"))
        && !path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
}

/// Step 1 of [`normalize_path`]: every byte in its canonical spelling,
/// separators as `/`.
fn canonical_bytes(path: &[u8], slashes: EscapedSlashes) -> Result<String, UriError> {
    let mut out = String::with_capacity(path.len() + 8);
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        i += 1;
        if b == b'%' {
            let v = escape_at(path, i).ok_or(UriError::BadEscape)?;
            i += 2;
            match v {
                b'/' | b'\\' => match slashes {
                    EscapedSlashes::KeepUnchanged => push_escape(&mut out, v),
                    EscapedSlashes::RejectRequest => return Err(UriError::EscapedSlash),
                    EscapedSlashes::UnescapeAndForward => out.push('/'),
                },
                _ if is_control(v) => return Err(UriError::ControlByte),
                _ if is_unreserved(v) => out.push(char::from(v)),
                _ => push_escape(&mut out, v),
            }
        } else if b == b'/' || b == b'\\' {
            out.push('/');
        } else if is_control(b) {
            return Err(UriError::ControlByte);
        } else if is_pchar(b) {
            out.push(char::from(b));
        } else {
            push_escape(&mut out, b);
        }
    }
    Ok(out)
}

/// Steps 2 and 3 of [`normalize_path`] over a canonical path: segments are
/// copied to the output, `.` dropped, `..` drops the last output segment;
/// a `.` or `..` at the end leaves a trailing `/` (RFC 3986 §5.2.4).
fn remove_dot_segments(path: &str, merge_slashes: bool) -> Result<String, UriError> {
    let mut out = String::with_capacity(path.len());
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                let cut = out.rfind('/').ok_or(UriError::AboveRoot)?;
                out.truncate(cut);
            }
            "" if merge_slashes && !last => {}
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
        if last && (segment == "." || segment == "..") {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The byte encoded by the two hex digits at `path[i..i + 2]`.
fn escape_at(path: &[u8], i: usize) -> Option<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let (hi, lo) = (hex(*path.get(i)?)?, hex(*path.get(i + 1)?)?);
    u8::try_from(hi << 4 | lo).ok()
}

/// Appends `%XX` with upper-case hex (RFC 3986 §6.2.2.1).
fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// RFC 3986 §2.3 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §2.2 `sub-delims`.
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// RFC 3986 §3.3 `pchar`, without `pct-encoded`.
fn is_pchar(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@'
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: PathOptions = PathOptions {
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::KeepUnchanged,
    };

    fn with(merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathOptions {
        PathOptions {
            merge_slashes,
            escaped_slashes,
        }
    }

    fn check(cases: &[(&str, Result<&str, UriError>)], opts: PathOptions) {
        for (input, want) in cases {
            let got = normalize_path(input, opts);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *want,
                "{input:?} with {opts:?}"
            );
            if let Ok(normal) = got {
                let again = normalize_path(&normal, opts);
                assert_eq!(again.as_deref(), Ok(&*normal), "idempotent on {input:?}");
            }
        }
    }

    #[test]
    fn paths_in_their_normal_form() {
        use UriError::*;
        #[rustfmt::skip]
        check(&[
            ("/", Ok("/")),
            ("/admin/x", Ok("/admin/x")),
            ("/admin/x/", Ok("/admin/x/")),
            // merged slashes
            ("//admin/x", Ok("/admin/x")),
            ("///admin//x", Ok("/admin/x")),
            ("/admin/x//", Ok("/admin/x/")),
            // dot segments, plain and encoded (RFC 3986 §5.2.4)
            ("/./admin/x", Ok("/admin/x")),
            ("/x/../admin/x", Ok("/admin/x")),
            ("/x/%2e%2e/admin/x", Ok("/admin/x")),
            ("/x/.%2E/admin/x", Ok("/admin/x")),
            ("/%2e/admin/x", Ok("/admin/x")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/..", Ok("/")),
            ("/a/./../b", Ok("/b")),
            ("/a/.../b", Ok("/a/.../b")),
            ("/a/..b/.c", Ok("/a/..b/.c")),
            ("/.well-known/x", Ok("/.well-known/x")),
            // unreserved escapes decoded, others upper-cased
            ("/%61dmin/x", Ok("/admin/x")),
            ("/%41%7e%2D%5f", Ok("/A~-_")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("/%25", Ok("/%25")),
            ("/%252e%252e/x", Ok("/%252e%252e/x")),
            // bytes a path may not hold are encoded
            ("/a\"b<c>{|}^`[]#", Ok("/a%22b%3Cc%3E%7B%7C%7D%5E%60%5B%5D%23")),
            ("/a b", Ok("/a%20b")),
            ("/é", Ok("/%C3%A9")),
            ("/!$&'()*+,;=:@", Ok("/!$&'()*+,;=:@")),
            // a raw backslash is a separator (WHATWG URL)
            ("/admin\\x", Ok("/admin/x")),
            ("/x\\..\\admin\\x", Ok("/admin/x")),
            // encoded slashes stay encoded by default
            ("/x/..%2fadmin/x", Ok("/x/..%2Fadmin/x")),
            ("/a%5cb", Ok("/a%5Cb")),
            // refused
            ("/../admin/x", Err(AboveRoot)),
            ("/%2e%2e/admin/x", Err(AboveRoot)),
            ("/a/../../x", Err(AboveRoot)),
            ("/..", Err(AboveRoot)),
            ("/a%", Err(BadEscape)),
            ("/a%4", Err(BadEscape)),
            ("/a%zz", Err(BadEscape)),
            ("/a%00b", Err(ControlByte)),
            ("/a%0ab", Err(ControlByte)),
            ("/a%7F", Err(ControlByte)),
            ("/a\u{1}b", Err(ControlByte)),
            ("a/b", Err(NotAbsolute)),
            ("", Err(NotAbsolute)),
        ], DEFAULT);
    }

    #[test]
    fn merge_slashes_off_keeps_empty_segments() {
        #[rustfmt::skip]
        check(&[
            ("//admin/x", Ok("//admin/x")),
            ("/a//b/", Ok("/a//b/")),
            ("/a//..", Ok("/a/")),
            ("/a//.", Ok("/a//")),
            ("//..", Ok("/")),
            ("/a/./b", Ok("/a/b")),
        ], with(false, EscapedSlashes::KeepUnchanged));
    }

    #[test]
    fn escaped_slash_actions() {
        #[rustfmt::skip]
        check(&[
            ("/x/..%2fadmin/x", Err(UriError::EscapedSlash)),
            ("/a%5Cb", Err(UriError::EscapedSlash)),
            ("/a/b", Ok("/a/b")),
        ], with(true, EscapedSlashes::RejectRequest));
        #[rustfmt::skip]
        check(&[
            ("/x/..%2fadmin/x", Ok("/admin/x")),
            ("/a%5Cb", Ok("/a/b")),
            ("/a%2F%2Fb", Ok("/a/b")),
            ("/%2F..%2F..", Err(UriError::AboveRoot)),
        ], with(true, EscapedSlashes::UnescapeAndForward));
    }

    #[test]
    fn the_query_is_never_touched() {
        for (target, want) in [
            ("/a/../b?x=/../y&%61=%2e", "/b?x=/../y&%61=%2e"),
            ("/b?", "/b?"),
            ("//b?a//b", "/b?a//b"),
            ("/b?q", "/b?q"),
        ] {
            assert_eq!(normalize_target(target, DEFAULT).as_deref(), Ok(want));
        }
        assert!(matches!(
            normalize_target("/b?x", DEFAULT),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn hosts_for_routing() {
        for (authority, want) in [
            ("example.com", Ok("example.com")),
            ("Example.COM:8080", Ok("example.com")),
            ("secure.example.", Ok("secure.example")),
            ("secure.example.:443", Ok("secure.example")),
            ("10.0.0.1:80", Ok("10.0.0.1")),
            ("[::1]:80", Ok("::1")),
            ("[::1]", Ok("::1")),
            ("[FE80::1]", Ok("fe80::1")),
            ("[v1.x]", Ok("v1.x")),
            ("a:", Ok("a")),
            ("%65xample.com", Ok("example.com")),
            ("a!$&'()*+,;=b", Ok("a!$&'()*+,;=b")),
            ("", Err(UriError::InvalidHost)),
            (".", Err(UriError::InvalidHost)),
            ("..", Err(UriError::InvalidHost)),
            ("a..", Err(UriError::InvalidHost)),
            ("%2e%2E", Err(UriError::InvalidHost)),
            (":80", Err(UriError::InvalidHost)),
            ("a..b", Err(UriError::InvalidHost)),
            ("a/b", Err(UriError::InvalidHost)),
            ("a b", Err(UriError::InvalidHost)),
            ("a:b", Err(UriError::InvalidHost)),
            ("a:80:80", Err(UriError::InvalidHost)),
            ("a%00", Err(UriError::InvalidHost)),
            ("a%2", Err(UriError::InvalidHost)),
            ("[::1", Err(UriError::InvalidHost)),
            ("[::1]x", Err(UriError::InvalidHost)),
            ("[::g]", Err(UriError::InvalidHost)),
            ("[fe80::1%25eth0]", Err(UriError::InvalidHost)),
            ("[v.x]", Err(UriError::InvalidHost)),
            ("a@b", Err(UriError::InvalidHost)),
        ] {
            assert_eq!(
                normalize_host(authority).as_deref().map_err(|e| *e),
                want,
                "{authority:?}"
            );
        }
    }
}
