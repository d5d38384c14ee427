//! The properties the fuzz targets check (`fuzz/`), one function per
//! target, over arbitrary bytes: no panic, and
//!
//! - request heads: where `httparse` (an independent parser, the oracle)
//!   accepts a complete head that [`parse_request_head`] accepts too, both
//!   read the same method, target, version and fields; and the head reader
//!   finds the same head whatever sizes the bytes arrive in;
//! - chunked bodies: the decoder gives the same result whatever sizes the
//!   bytes arrive in, and where a reference decoder built on `httparse`'s
//!   chunk-size parser accepts the same bytes, the same body, trailers and
//!   leftover bytes;
//! - paths and hosts: normalising is idempotent, yields no `.` or `..`
//!   segment, only canonical bytes, and ignores a leading `/x/..`.
//!
//! Compiled only for tests and fuzzing (`cfg(fuzzing)`, which cargo-fuzz
//! sets): the fuzz crate includes `src/http/` by path, since tinygate is
//! a binary crate with no library to link against. `cargo test` runs every
//! function here over the committed seed corpus (`fuzz/corpus/`).

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::io::{BodyReader, Head, ReadBuf};
use super::parse::{parse_request_head, trim, Framing};
use super::uri::{normalize_host, normalize_path, EscapedSlashes, PathOptions};
use super::Version;

/// Fuzz target `request_head`.
///
/// # Panics
/// When a property does not hold.
pub fn check_request_head(data: &[u8]) {
    let whole = read_head(data, usize::MAX);
    for step in [1, 7, 64] {
        assert_eq!(
            read_head(data, step),
            whole,
            "head found differently in reads of {step}"
        );
    }
    let ours = parse_request_head(data);
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut theirs = httparse::Request::new(&mut fields);
    let (Ok(ours), Ok(httparse::Status::Complete(_))) = (ours, theirs.parse(data)) else {
        return;
    };
    assert_eq!(Some(ours.method.as_str()), theirs.method, "method");
    let version = match ours.version {
        Version::Http10 => 0,
        Version::Http11 => 1,
    };
    assert_eq!(Some(version), theirs.version, "version");
    let path = theirs.path.unwrap_or_default();
    if path.starts_with('/') {
        assert_eq!(ours.target, path, "target");
    }
    let ours: Vec<(Vec<u8>, &[u8])> = ours.headers.iter().map(|(k, v)| (k.to_vec(), v)).collect();
    let theirs: Vec<(Vec<u8>, &[u8])> = theirs
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase().into_bytes(), trim(h.value)))
        .collect();
    assert_eq!(ours, theirs, "fields");
}

/// Fuzz target `chunked`. The first byte chooses the size of the reads.
///
/// # Panics
/// When a property does not hold.
pub fn check_chunked(data: &[u8]) {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let whole = decode_chunked(wire, usize::MAX);
    let step = usize::from(first % 32) + 1;
    let pieces = decode_chunked(wire, step);
    assert_eq!(whole, pieces, "decoded differently in reads of {step}");
    let (Ok(ours), Some(reference)) = (whole, reference_chunked(wire)) else {
        return;
    };
    assert_eq!(
        ours, reference,
        "the reference decoded the body differently"
    );
}

/// Fuzz target `path`. The first byte chooses the options.
///
/// # Panics
/// When a property does not hold.
pub fn check_path(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let opts = PathOptions {
        merge_slashes: first & 1 == 0,
        escaped_slashes: match (first >> 1) % 3 {
            0 => EscapedSlashes::KeepUnchanged,
            1 => EscapedSlashes::RejectRequest,
            _ => EscapedSlashes::UnescapeAndForward,
        },
    };
    let text = String::from_utf8_lossy(rest);
    let path = if text.starts_with('/') {
        text.clone()
    } else {
        Cow::Owned(format!("/{text}"))
    };
    let result = normalize_path(&path, opts);
    let longer = format!("/x/..{path}");
    let climbed = normalize_path(&longer, opts);
    assert_eq!(result, climbed, "a leading /x/.. changed {path:?}");
    if let Ok(normal) = &result {
        check_normal_path(normal, opts);
    }
    if let Ok(host) = normalize_host(&text) {
        // An IP literal comes back without its brackets.
        let literal = text.starts_with('[');
        let again = match literal {
            true => normalize_host(&format!("[{host}]")),
            false => normalize_host(&host),
        };
        assert_eq!(again.as_deref(), Ok(host.as_str()), "host not idempotent");
        assert!(
            !host.is_empty() && (literal || !host.ends_with('.')),
            "{host:?}"
        );
    }
}

/// What a normal path must be (see the module doc).
fn check_normal_path(normal: &str, opts: PathOptions) {
    assert_eq!(
        normalize_path(normal, opts),
        Ok(Cow::Borrowed(normal)),
        "not idempotent"
    );
    assert!(normal.starts_with('/'), "{normal:?}");
    assert!(
        !normal.split('/').any(|s| s == "." || s == ".."),
        "dot segment in {normal:?}"
    );
    assert!(!(opts.merge_slashes && normal.contains("//")), "{normal:?}");
    let bytes = normal.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                "{normal:?}"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
                "an unreserved byte left encoded in {normal:?}"
            );
            let slash = v == b'/' || v == b'\\';
            assert!(!slash || opts.escaped_slashes == EscapedSlashes::KeepUnchanged);
            i += 3;
        } else {
            let b = bytes[i];
            assert!(
                b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b),
                "byte {b:#x} in {normal:?}"
            );
            i += 1;
        }
    }
}

/// What `ReadBuf::read_head` makes of `data` arriving `step` bytes at a time.
fn read_head(data: &[u8], step: usize) -> Result<Vec<u8>, String> {
    smol::future::block_on(async {
        let mut io = Trickle { data, step };
        let mut buf = ReadBuf::new();
        match buf.read_head(&mut io, 32 * 1024).await {
            Ok(Head::Complete(n)) => Ok(buf.data()[..n].to_vec()),
            Ok(Head::Closed) => Err("closed".into()),
            Ok(Head::TooLarge) => Err("too large".into()),
            Err(e) => Err(e.kind().to_string()),
        }
    })
}

/// A decoded chunked body: data, trailers, the bytes after it.
type Decoded = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

/// Reads a chunked body from `wire` arriving `step` bytes at a time.
fn decode_chunked(wire: &[u8], step: usize) -> Result<Decoded, io::ErrorKind> {
    smol::future::block_on(async {
        let mut io = Trickle { data: wire, step };
        let mut buf = ReadBuf::new();
        let mut reader = BodyReader::new(Framing::Chunked);
        let mut body = Vec::new();
        loop {
            let n = reader.next(&mut buf, &mut io).await.map_err(|e| e.kind())?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf.data()[..n]);
            buf.consume(n);
        }
        let mut rest = buf.data().to_vec();
        rest.extend_from_slice(io.data);
        Ok((body, reader.take_trailers(), rest))
    })
}

/// A chunked decoder on `httparse::parse_chunk_size` and
/// `httparse::parse_headers` (RFC 9112 §7.1), for the bytes both accept.
fn reference_chunked(mut wire: &[u8]) -> Option<Decoded> {
    let mut body = Vec::new();
    loop {
        let httparse::Status::Complete((used, size)) = httparse::parse_chunk_size(wire).ok()?
        else {
            return None;
        };
        wire = &wire[used..];
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).ok()?;
        if wire.len() < size.checked_add(2)? || &wire[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&wire[..size]);
        wire = &wire[size + 2..];
    }
    if let Some(rest) = wire.strip_prefix(b"\r\n") {
        return Some((body, Vec::new(), rest.to_vec()));
    }
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let httparse::Status::Complete((used, fields)) =
        httparse::parse_headers(wire, &mut fields).ok()?
    else {
        return None;
    };
    let trailers = fields
        .iter()
        .map(|f| {
            (
                f.name.to_ascii_lowercase().into_bytes(),
                trim(f.value).to_vec(),
            )
        })
        .collect();
    Some((body, trailers, wire[used..].to_vec()))
}

/// Hands out `data` at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl smol::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = self.step.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the committed seed corpus of `target`, through `check`.
    fn replay(target: &str, check: fn(&[u8])) {
        let dir = format!("{}/fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{}", path.display());
            n += 1;
        }
        assert!(n >= 10, "{dir}: only {n} seeds");
    }

    #[test]
    fn the_request_head_seeds_hold() {
        replay("request_head", check_request_head);
    }

    #[test]
    fn the_chunked_seeds_hold() {
        replay("chunked", check_chunked);
    }

    #[test]
    fn the_path_seeds_hold() {
        replay("path", check_path);
    }

    #[test]
    fn the_reference_decoder_agrees_on_a_plain_body() {
        let wire = b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let want = (
            b"hello world".to_vec(),
            vec![(b"x-t".to_vec(), b"1".to_vec())],
            b"NEXT".to_vec(),
        );
        assert_eq!(reference_chunked(wire), Some(want.clone()));
        assert_eq!(decode_chunked(wire, 3), Ok(want));
    }
}
