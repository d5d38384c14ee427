//! Reading HTTP/1.x messages off a byte stream: the head, then the body
//! chunk by chunk in whatever framing it has, with limits and without
//! buffering whole bodies. Also the chunked encoder for the other side.
//!
//! Everything here is generic over `AsyncRead`, so it knows nothing about
//! TCP, routing or plugins; timeouts are the caller's business.

use super::parse::Framing;
use smol::io::{AsyncRead, AsyncReadExt};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::Poll;

/// Largest response head accepted from an upstream.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most bytes read per `read` call while a body streams: a buffer grows
/// to this on demand.
const READ_CHUNK: usize = 16 * 1024;

/// The storage a buffer starts with: enough for a usual request or
/// response head, small enough that taking and giving it back per request
/// costs next to nothing.
const FIRST_STORAGE: usize = 2 * 1024;

/// Largest chunk-size line or trailer section we read in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// A read buffer that outlives single messages on a keep-alive connection.
/// `buf[start..end]` is unconsumed data; the vector's length is its
/// capacity, so reading never re-zeroes memory.
///
/// The storage comes and goes: a new buffer has none, the first read takes
/// [`FIRST_STORAGE`] bytes (from the thread's spares when it has some), a
/// read that fills all the room doubles it for the next one (up to
/// [`READ_CHUNK`], or what a head needs), and [`ReadBuf::release`] gives it
/// back once nothing is buffered. So an idle keep-alive connection, or a
/// pooled one, holds no read buffer at all; [`ReadBuf::fill_idle`] waits
/// for its next bytes without one.
#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled all the room: more was probably waiting.
    filled: bool,
}

/// Released buffers a thread keeps for its next reads, at most: enough for
/// a busy worker's connections to take and give back buffers without
/// calling the allocator (128 KiB), few enough that memory freed after a
/// burst of connections goes back to it.
const MAX_SPARES: usize = 64;

thread_local! {
    /// This thread's released buffers, each [`FIRST_STORAGE`] long.
    static SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Where idle connections of this thread read their first bytes: one
    /// buffer for all of them, since a read fills it and returns at once.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.start = self.end;
        self.release();
    }
}

/// What reading a head produced.
#[derive(Debug)]
pub enum Head {
    /// A complete head of this many bytes is at the front of the buffer.
    Complete(usize),
    /// The peer closed cleanly before sending anything.
    Closed,
    /// The head grew past the limit: answer 431 (or 414).
    TooLarge,
}

impl ReadBuf {
    /// An empty buffer, holding no storage until its first read.
    pub fn new() -> Self {
        ReadBuf::default()
    }

    /// Gives the storage back to the thread (for another connection's next
    /// read) when nothing is buffered; the next read takes some again.
    pub fn release(&mut self) {
        if self.has_data() || self.buf.is_empty() {
            return;
        }
        let storage = std::mem::take(&mut self.buf);
        self.start = 0;
        self.end = 0;
        self.filled = false;
        if storage.len() == FIRST_STORAGE {
            SPARES.with_borrow_mut(|spares| {
                if spares.len() < MAX_SPARES {
                    spares.push(storage);
                }
            });
        }
    }

    /// Storage for a buffer that has none, at least `len` bytes: a spare,
    /// or fresh memory.
    fn take_storage(&mut self, len: usize) {
        debug_assert!(self.buf.is_empty());
        self.buf = match SPARES.with_borrow_mut(Vec::pop) {
            Some(spare) if len <= FIRST_STORAGE => spare,
            Some(spare) => {
                SPARES.with_borrow_mut(|spares| spares.push(spare));
                vec![0; len]
            }
            None => vec![0; len.max(FIRST_STORAGE)],
        };
        self.start = 0;
        self.end = 0;
    }

    /// Reads the next bytes of a connection whose buffer holds nothing,
    /// without holding storage while it waits: the read goes to the
    /// thread's scratch buffer, and only bytes that arrived are copied into
    /// storage taken then. Returns how many (0 at end of stream).
    pub async fn fill_idle<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> io::Result<usize> {
        if !self.buf.is_empty() {
            return self.fill(io).await;
        }
        std::future::poll_fn(|cx| {
            SCRATCH.with_borrow_mut(|scratch| {
                if scratch.is_empty() {
                    scratch.resize(READ_CHUNK, 0);
                }
                match Pin::new(&mut *io).poll_read(cx, scratch) {
                    Poll::Ready(Ok(n)) => {
                        if n > 0 {
                            self.take_storage(n.next_power_of_two());
                            self.buf[..n].copy_from_slice(&scratch[..n]);
                            self.end = n;
                            self.filled = n == scratch.len();
                        }
                        Poll::Ready(Ok(n))
                    }
                    other => other,
                }
            })
        })
        .await
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// True when unconsumed bytes are buffered (e.g. a pipelined request).
    pub fn has_data(&self) -> bool {
        self.start < self.end
    }

    /// Reads more bytes from `io`; returns how many (0 at end of stream).
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.take_storage(FIRST_STORAGE);
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Full (a head longer than the storage), or emptied after a read
        // that filled it (a body streaming): more room for the next read.
        let emptied_after_full = self.filled && self.end == 0 && self.buf.len() < READ_CHUNK;
        if self.end == self.buf.len() || emptied_after_full {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let room = self.buf.len() - self.end;
        let n = io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.filled = n == room;
        Ok(n)
    }

    /// Reads until a complete head is buffered. A blank-line end with bare
    /// LFs also ends the head, and so does a first line that cannot start
    /// an HTTP/1.x message (no `HTTP/` in it: an HTTP/0.9 `GET /`, a
    /// stray line), so that the parser can refuse it at once instead of
    /// the connection hanging until the header timeout.
    pub async fn read_head<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        max: usize,
    ) -> io::Result<Head> {
        let mut scanned = 0;
        loop {
            // Leading empty lines before a request are allowed (RFC 9112 §2.2).
            while self.data().starts_with(b"\r\n") {
                self.consume(2);
                scanned = 0;
            }
            if let Some(end) = hopeless_first_line(self.data(), max) {
                return Ok(Head::Complete(end));
            }
            if let Some(end) = find_head_end(self.data(), scanned) {
                // One read can bring in more than `max`: the limit is on
                // the head, not on how it happened to arrive.
                if end > max {
                    return Ok(Head::TooLarge);
                }
                return Ok(Head::Complete(end));
            }
            if self.data().len() > max {
                return Ok(Head::TooLarge);
            }
            scanned = self.data().len().saturating_sub(3);
            if self.fill(io).await? == 0 {
                return if self.data().is_empty() {
                    Ok(Head::Closed)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a head",
                    ))
                };
            }
        }
    }
}

/// The index just past the first line of `data` when that line is
/// complete, within `max`, and has no `HTTP/`: both a request line (RFC
/// 9112 §3) and a status line (§4) must, so no later byte can make the
/// message valid. Checked before the head's end, so that the answer is the
/// same however the bytes arrive.
fn hopeless_first_line(data: &[u8], max: usize) -> Option<usize> {
    let end = data.iter().position(|&b| b == b'\n')? + 1;
    let valid_start = data[..end].windows(5).any(|w| w == b"HTTP/");
    (end <= max && !valid_start).then_some(end)
}

/// The index just past `\r\n\r\n` (or `\n\n`), searching from `from`.
fn find_head_end(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = data.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + off;
        match data.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if data.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// Reads one message body, chunk by chunk, in its framing.
#[derive(Debug)]
pub struct BodyReader {
    state: State,
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left of a Content-Length body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// This many bytes left of the current chunk, then CRLF.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data.
    ChunkEnd,
    /// Until end of stream.
    Close,
    Done,
}

/// A body that cannot be read as framed: the connection must be closed.
fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl BodyReader {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        BodyReader {
            state,
            trailers: Vec::new(),
        }
    }

    /// True once the whole body has been read (a Content-Length body can
    /// end together with its last piece of data).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer fields of a chunked body, once it has been read to
    /// the end (names lower-cased); empty otherwise.
    pub fn take_trailers(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.trailers)
    }

    /// True when the next [`BodyReader::next`] can return from the bytes
    /// already in `buf`, without waiting on the peer. A relay flushes what
    /// it holds whenever this is false, so that a chunk (whose CRLF is
    /// still buffered) is never held back until the next chunk arrives.
    /// May answer false when unsure; that only costs an earlier write.
    pub fn has_buffered(&self, buf: &ReadBuf) -> bool {
        match self.state {
            State::Done => true,
            State::Length(_) | State::ChunkData(_) | State::Close => buf.has_data(),
            State::ChunkEnd | State::ChunkSize => {
                // The CRLF after the data (ChunkEnd), a whole size line, and
                // at least one byte of what follows it.
                let skip = if self.state == State::ChunkEnd { 2 } else { 0 };
                let data = buf.data();
                data.get(skip..)
                    .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
                    .is_some_and(|lf| data.len() > skip + lf + 1)
            }
        }
    }

    /// Makes the next piece of body data available as the first `n` bytes
    /// of `buf.data()` and returns `n`; the caller consumes them with
    /// `buf.consume(n)` once used. `Ok(0)` means the body is complete.
    ///
    /// # Errors
    /// I/O errors, a peer that closes early (`UnexpectedEof`), or invalid
    /// chunked framing (`InvalidData`).
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        buf: &mut ReadBuf,
        io: &mut R,
    ) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Length(left) | State::ChunkData(left) => {
                    if !buf.has_data() && buf.fill(io).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed in the middle of a body",
                        ));
                    }
                    let n = (buf.data().len() as u64).min(left) as usize;
                    let rest = left - n as u64;
                    self.state = match self.state {
                        State::Length(_) if rest == 0 => State::Done,
                        State::Length(_) => State::Length(rest),
                        _ if rest == 0 => State::ChunkEnd,
                        _ => State::ChunkData(rest),
                    };
                    return Ok(n);
                }
                State::Close => {
                    if !buf.has_data() && buf.fill(io).await? == 0 {
                        self.state = State::Done;
                        return Ok(0);
                    }
                    return Ok(buf.data().len());
                }
                State::ChunkEnd => {
                    let line = read_line(buf, io).await?;
                    if line != 0 {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    buf.consume(2);
                    self.state = State::ChunkSize;
                }
                State::ChunkSize => {
                    let len = read_line(buf, io).await?;
                    let size = parse_chunk_size(&buf.data()[..len])?;
                    buf.consume(len + 2);
                    if size == 0 {
                        self.trailers = read_trailers(buf, io).await?;
                        self.state = State::Done;
                        return Ok(0);
                    }
                    self.state = State::ChunkData(size);
                }
            }
        }
    }
}

/// Waits for a CRLF-terminated line at the front of `buf`; returns its
/// length without the CRLF.
async fn read_line<R: AsyncRead + Unpin>(buf: &mut ReadBuf, io: &mut R) -> io::Result<usize> {
    loop {
        if let Some(lf) = buf.data().iter().position(|&b| b == b'\n') {
            if lf == 0 || buf.data()[lf - 1] != b'\r' {
                return Err(invalid("bare LF in chunked framing"));
            }
            // The same limit as below, whether the line came in one read
            // or many (found by fuzzing, `oracle.rs`).
            if lf > MAX_CHUNK_LINE {
                return Err(invalid("chunk line too long"));
            }
            return Ok(lf - 1);
        }
        if buf.data().len() > MAX_CHUNK_LINE {
            return Err(invalid("chunk line too long"));
        }
        if buf.fill(io).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed in the middle of a chunked body",
            ));
        }
    }
}

/// `1*HEXDIG [ ; ext ]` with overflow checking (RFC 9112 §7.1).
fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let hex_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if hex_end == 0 || hex_end > 16 {
        return Err(invalid("invalid chunk size"));
    }
    let rest = &line[hex_end..];
    let ext_ok = rest.is_empty()
        || (matches!(rest.iter().find(|&&b| b != b' ' && b != b'\t'), Some(b';'))
            && rest
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80));
    if !ext_ok {
        return Err(invalid("invalid chunk extension"));
    }
    let mut n: u64 = 0;
    for &b in &line[..hex_end] {
        let d = (b as char).to_digit(16).unwrap_or(0);
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or_else(|| invalid("chunk size overflows"))?;
    }
    Ok(n)
}

/// Reads the trailer section after the last chunk. Fields that are not
/// `name: value` with a token name and a clean value are dropped (a
/// recipient may discard trailers it does not understand, RFC 9110 §6.5).
async fn read_trailers<R: AsyncRead + Unpin>(
    buf: &mut ReadBuf,
    io: &mut R,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut total = 0;
    let mut fields = Vec::new();
    loop {
        let len = read_line(buf, io).await?;
        if len == 0 {
            buf.consume(2);
            return Ok(fields);
        }
        total += len;
        if total > MAX_CHUNK_LINE * 4 {
            return Err(invalid("trailer section too large"));
        }
        let line = &buf.data()[..len];
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            let value = line[colon + 1..].trim_ascii();
            if super::is_valid_field(name, value) {
                fields.push((name.to_ascii_lowercase(), value.to_vec()));
            }
        }
        buf.consume(len + 2);
    }
}

/// Appends the end of a chunked body: the last chunk, `trailers`, and the
/// final empty line.
pub fn last_chunk_with(out: &mut Vec<u8>, trailers: &[(Vec<u8>, Vec<u8>)]) {
    out.extend_from_slice(b"0\r\n");
    for (k, v) in trailers {
        super::write_header(out, k, v);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk-size line for `n` data bytes to `out`.
pub fn chunk_header(out: &mut Vec<u8>, n: usize) {
    use std::io::Write;
    let _ = write!(out, "{n:x}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a whole body from `wire`, delivered in reads of `step` bytes.
    fn read_body(framing: Framing, wire: &[u8], step: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
        smol::block_on(async {
            let mut io = Trickle { data: wire, step };
            let mut buf = ReadBuf::new();
            let mut reader = BodyReader::new(framing);
            let mut out = Vec::new();
            loop {
                let n = reader.next(&mut buf, &mut io).await?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf.data()[..n]);
                buf.consume(n);
            }
            Ok((out, buf.data().to_vec()))
        })
    }

    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn chunked_in_every_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (body, rest) = read_body(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello world", "step {step}");
            assert_eq!(rest, b"NEXT"[..rest.len()].to_vec());
        }
    }

    #[test]
    fn length_stops_at_the_end() {
        let (body, rest) = read_body(Framing::Length(3), b"abcdef", 100).unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (&b"abc"[..], &b"def"[..])
        );
    }

    #[test]
    fn close_reads_to_eof() {
        let (body, _) = read_body(Framing::Close, b"all of it", 2).unwrap();
        assert_eq!(body, b"all of it");
    }

    #[test]
    fn truncated_bodies_are_errors() {
        assert!(read_body(Framing::Length(10), b"short", 100).is_err());
        assert!(read_body(Framing::Chunked, b"5\r\nhel", 100).is_err());
    }

    #[test]
    fn bad_chunked_framing_is_refused() {
        for wire in [
            &b"ffffffffffffffffff\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0_2e\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
        ] {
            let r = read_body(Framing::Chunked, wire, 100);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn head_end_is_found_across_reads() {
        smol::block_on(async {
            let wire = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
            for step in 1..wire.len() {
                let mut io = Trickle { data: wire, step };
                let mut buf = ReadBuf::new();
                match buf.read_head(&mut io, 1024).await.unwrap() {
                    Head::Complete(n) => {
                        assert_eq!(&buf.data()[..n], &wire[2..wire.len() - 4]);
                    }
                    other => panic!("{other:?}"),
                }
            }
        });
    }

    #[test]
    fn has_buffered_says_when_next_would_wait() {
        smol::block_on(async {
            let wire = b"5\r\nhello\r\n";
            let mut buf = ReadBuf::new();
            buf.fill(&mut Trickle {
                data: wire,
                step: 100,
            })
            .await
            .unwrap();
            let mut reader = BodyReader::new(Framing::Chunked);
            assert!(reader.has_buffered(&buf));
            let n = reader.next(&mut buf, &mut &b""[..]).await.unwrap();
            buf.consume(n);
            // Only the chunk's CRLF is left: the next chunk is not here yet.
            assert!(!reader.has_buffered(&buf));
        });
    }

    #[test]
    fn head_past_the_limit_in_one_read_is_too_large() {
        smol::block_on(async {
            let wire = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
            let mut io = Trickle {
                data: wire.as_bytes(),
                step: 100_000,
            };
            let mut buf = ReadBuf::new();
            let head = buf.read_head(&mut io, 1024).await.unwrap();
            assert!(matches!(head, Head::TooLarge), "{head:?}");
        });
    }

    /// A first line without `HTTP/` ends the head as soon as it is
    /// complete (an HTTP/0.9 request, a stray line), in one read or many.
    #[test]
    fn a_first_line_that_cannot_start_a_message_ends_the_head() {
        smol::block_on(async {
            for (wire, end) in [
                (&b"GET /\r\n"[..], Some(7)),
                (b"GET /\r\nHost: a\r\n\r\n", Some(7)),
                (b"\n", Some(1)),
                (b"GET / HTTP/1.1\r\n", None),
                (b"HTTP/1.1 200 OK\r\n", None),
                (b"GET /", None),
            ] {
                for step in [1, 3, 100] {
                    let mut buf = ReadBuf::new();
                    let head = buf.read_head(&mut Trickle { data: wire, step }, 1024).await;
                    match (head, end) {
                        (Ok(Head::Complete(n)), Some(end)) => assert_eq!(n, end),
                        (Err(e), None) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                        (other, _) => panic!("{wire:?} in reads of {step}: {other:?}"),
                    }
                }
            }
        });
    }

    #[test]
    fn bare_lf_head_ends_instead_of_hanging() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
    }

    /// A buffer starts small and doubles while reads fill it (a body
    /// streaming), up to the read size; a head grows it as far as it needs.
    #[test]
    fn storage_grows_on_demand() {
        smol::block_on(async {
            let body = vec![7u8; 100_000];
            let mut io = Trickle {
                data: &body,
                step: 1 << 20,
            };
            let mut buf = ReadBuf::new();
            let mut sizes = Vec::new();
            loop {
                let n = buf.fill(&mut io).await.unwrap();
                if n == 0 {
                    break;
                }
                sizes.push(buf.buf.len());
                buf.consume(n);
            }
            assert_eq!(sizes[..5], [2048, 4096, 8192, 16384, 16384]);
            let head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
            let mut io = Trickle {
                data: head.as_bytes(),
                step: 1000,
            };
            let mut buf = ReadBuf::new();
            let got = buf.read_head(&mut io, 64 * 1024).await.unwrap();
            assert!(
                matches!(got, Head::Complete(n) if n == head.len()),
                "{got:?}"
            );
        });
    }

    /// An idle buffer holds no storage: it takes some when bytes arrive
    /// (through the scratch buffer), gives it back once they are used, and
    /// the next buffer of the thread reuses it.
    #[test]
    fn storage_is_taken_when_bytes_arrive_and_given_back_when_idle() {
        smol::block_on(async {
            let mut buf = ReadBuf::new();
            assert_eq!(buf.buf.capacity(), 0, "a new buffer has no storage");
            let mut io = Trickle {
                data: b"GET / HTTP/1.1\r\n\r\nrest",
                step: 100,
            };
            assert_eq!(buf.fill_idle(&mut io).await.unwrap(), 22);
            assert_eq!(buf.data(), b"GET / HTTP/1.1\r\n\r\nrest");
            buf.consume(18);
            buf.release();
            assert_eq!(buf.data(), b"rest", "buffered bytes keep their storage");
            buf.consume(4);
            let storage = buf.buf.as_ptr();
            buf.release();
            assert_eq!(buf.buf.capacity(), 0, "released");
            let mut next = ReadBuf::new();
            let n = next.fill(&mut &b"x"[..]).await.unwrap();
            assert_eq!((n, next.buf.as_ptr()), (1, storage), "a spare is reused");
            assert_eq!(buf.fill_idle(&mut &b""[..]).await.unwrap(), 0);
            assert_eq!(buf.buf.capacity(), 0, "end of stream takes no storage");
        });
    }
}
