//! Talking to one etcd endpoint through its v3 JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`, ...) over HTTP/1.1, with tinygate's own
//! codec (`http::ReadBuf`, `parse_response_head`, `BodyReader`) and
//! `upstream::connect`. That keeps gRPC, HTTP/2 and a second HTTP client out
//! of the binary.
//!
//! `https://` hosts are reached over TLS (`tls::Connector`: the server's
//! certificate verified against `apisix.ssl.ssl_trusted_certificate` or
//! the system store, a client certificate when `deployment.etcd.tls.cert`
//! is set). With `user`/`password`, calls carry an etcd v3 auth token
//! (`/v3/auth/authenticate`, sent as the `Authorization` header, as
//! etcd's gateway reads it); a token etcd no longer accepts (simple tokens
//! expire after `--auth-token-ttl` unused) is renewed once and the call
//! retried. Tokens are kept per endpoint and user for the process.
//!
//! Every call uses a new connection (`Connection: close`): configuration
//! traffic is a few requests a minute, and a fresh connection is the
//! simplest way to never read a stale answer. A watch is one long POST whose
//! chunked response is a stream of JSON objects, one per line.

use crate::config::EtcdHost;
use crate::http::io::MAX_RESPONSE_HEAD;
use crate::http::parse::{parse_response_head, response_framing};
use crate::http::{BodyReader, Head, ReadBuf};
use crate::net::with_timeout;
use crate::tls::{Connector, Stream};
use crate::upstream;
use serde_json::{json, Value};
use smol::io::AsyncWriteExt;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

/// A connection to etcd: plain or TLS, with its read buffer.
struct Conn {
    stream: Stream,
    buf: ReadBuf,
}

/// Largest answer to a single call (a range over every key of a big
/// configuration fits many times over).
const MAX_BODY: usize = 64 << 20;

/// Longest line of a watch stream (one watch response with its events).
const MAX_WATCH_LINE: usize = 64 << 20;

/// Why a call to one etcd endpoint failed.
#[derive(Debug)]
pub enum Error {
    /// Connecting, sending or reading failed, or took longer than the
    /// timeout.
    Io { endpoint: String, source: io::Error },
    /// etcd answered, but not with success: the status and its message.
    Status {
        endpoint: String,
        status: u16,
        message: String,
    },
    /// The answer was not what etcd's gateway sends.
    Protocol { endpoint: String, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { endpoint, source } => write!(f, "{endpoint}: {source}"),
            Error::Status {
                endpoint,
                status,
                message,
            } => write!(f, "{endpoint}: HTTP {status}: {message}"),
            Error::Protocol { endpoint, message } => write!(f, "{endpoint}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub fn protocol(host: &EtcdHost, message: impl Into<String>) -> Error {
        Error::Protocol {
            endpoint: host.url.clone(),
            message: message.into(),
        }
    }

    fn io(host: &EtcdHost, source: io::Error) -> Error {
        Error::Io {
            endpoint: host.url.clone(),
            source,
        }
    }
}

/// POSTs `body` to `path` and returns etcd's JSON answer, all within
/// `timeout` (authenticating first when the host has credentials).
///
/// # Errors
/// See [`Error`]; a non-200 answer is `Status` with etcd's message.
pub async fn call(
    host: &EtcdHost,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value, Error> {
    let token = token(host, timeout, false).await?;
    match call_with(host, path, body, timeout, token.as_deref()).await {
        Err(e) if token.is_some() && is_stale_token(&e) => {
            let token = self::token(host, timeout, true).await?;
            call_with(host, path, body, timeout, token.as_deref()).await
        }
        answer => answer,
    }
}

/// One call with `token` (if any) as the `Authorization` header.
async fn call_with(
    host: &EtcdHost,
    path: &str,
    body: &Value,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Value, Error> {
    let answer = with_timeout(timeout, async {
        let (mut conn, status, mut reader) = post(host, path, body, timeout, token).await?;
        let mut out = Vec::new();
        loop {
            let n = reader.next(&mut conn.buf, &mut conn.stream).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&conn.buf.data()[..n]);
            conn.buf.consume(n);
            if out.len() > MAX_BODY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "answer too large",
                ));
            }
        }
        Ok((status, out))
    })
    .await;
    let (status, bytes) = answer.map_err(|e| Error::io(host, e))?;
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::protocol(host, format!("answer is not JSON: {e}")))?;
    if status != 200 {
        return Err(Error::Status {
            endpoint: host.url.clone(),
            status,
            message: error_message(&json),
        });
    }
    Ok(json)
}

/// Tokens by (endpoint, user): authenticating costs etcd a bcrypt
/// comparison, so a token is reused until etcd refuses it.
static TOKENS: Mutex<Option<HashMap<(String, String), String>>> = Mutex::new(None);

/// The auth token for `host`, `None` without credentials. `renew` drops a
/// cached token and authenticates again.
async fn token(host: &EtcdHost, timeout: Duration, renew: bool) -> Result<Option<String>, Error> {
    let Some(credentials) = &host.access.credentials else {
        return Ok(None);
    };
    let key = (host.authority.clone(), credentials.user.clone());
    {
        let mut tokens = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = tokens.get_or_insert_with(HashMap::new);
        if renew {
            tokens.remove(&key);
        } else if let Some(t) = tokens.get(&key) {
            return Ok(Some(t.clone()));
        }
    }
    let request = json!({"name": credentials.user, "password": credentials.password});
    let answer = call_with(host, "/v3/auth/authenticate", &request, timeout, None).await?;
    let Some(token) = answer.get("token").and_then(Value::as_str) else {
        return Err(Error::protocol(
            host,
            "authenticate: no token in the answer",
        ));
    };
    if renew {
        log::info!("etcd {}: auth token renewed", host.url);
    }
    let mut tokens = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
    tokens
        .get_or_insert_with(HashMap::new)
        .insert(key, token.to_string());
    Ok(Some(token.to_string()))
}

/// True when etcd refused a token it no longer knows (expired simple
/// token, or etcd restarted): gRPC `Unauthenticated`, HTTP 401.
fn is_stale_token(e: &Error) -> bool {
    matches!(e, Error::Status { status: 401, .. })
        || matches!(e, Error::Status { message, .. } if message.contains("invalid auth token"))
}

/// A watch: the stream of JSON objects etcd sends on `/v3/watch`.
pub struct Watch {
    conn: Conn,
    body: BodyReader,
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    endpoint: EtcdHost,
}

/// Opens a watch with `request` (`{"create_request": {...}}`); the head
/// must arrive within `timeout`, the stream then lasts as long as etcd
/// keeps it.
///
/// # Errors
/// See [`Error`].
pub async fn watch(host: &EtcdHost, request: &Value, timeout: Duration) -> Result<Watch, Error> {
    let token = token(host, timeout, false).await?;
    match watch_with(host, request, timeout, token.as_deref()).await {
        Err(e) if token.is_some() && is_stale_token(&e) => {
            let token = self::token(host, timeout, true).await?;
            watch_with(host, request, timeout, token.as_deref()).await
        }
        answer => answer,
    }
}

async fn watch_with(
    host: &EtcdHost,
    request: &Value,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Watch, Error> {
    let (conn, status, body) =
        with_timeout(timeout, post(host, "/v3/watch", request, timeout, token))
            .await
            .map_err(|e| Error::io(host, e))?;
    let mut watch = Watch {
        conn,
        body,
        line: Vec::new(),
        endpoint: host.clone(),
    };
    if status != 200 {
        let answer = smol::future::or(async { watch.message().await.ok().flatten() }, async {
            crate::net::Timer::after(timeout).await;
            None
        });
        let message = answer
            .await
            .map_or_else(String::new, |json| error_message(&json));
        return Err(Error::Status {
            endpoint: host.url.clone(),
            status,
            message,
        });
    }
    Ok(watch)
}

impl Watch {
    /// The next JSON object of the stream; `None` when etcd ended it.
    /// Cancel-safe: dropping the future loses no bytes.
    ///
    /// # Errors
    /// I/O errors, broken framing, or a line that is not JSON.
    pub async fn message(&mut self) -> Result<Option<Value>, Error> {
        self.next()
            .await
            .map_err(|e| Error::io(&self.endpoint, e))?
            .map_or(Ok(None), |line| {
                serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| Error::protocol(&self.endpoint, format!("watch: not JSON: {e}")))
            })
    }

    /// The next non-empty line, without its `\n`.
    async fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(lf) = self.line.iter().position(|&b| b == b'\n') {
                let rest = self.line.split_off(lf + 1);
                let mut line = std::mem::replace(&mut self.line, rest);
                line.truncate(lf);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.line.len() > MAX_WATCH_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "watch line too long",
                ));
            }
            // No await between reading and consuming: cancel-safe.
            let n = self
                .body
                .next(&mut self.conn.buf, &mut self.conn.stream)
                .await?;
            if n == 0 {
                let last = std::mem::take(&mut self.line);
                return Ok((!last.iter().all(u8::is_ascii_whitespace)).then_some(last));
            }
            self.line.extend_from_slice(&self.conn.buf.data()[..n]);
            self.conn.buf.consume(n);
        }
    }
}

/// Sends the request and reads the response head: the connection, the
/// status, and a reader for the body.
async fn post(
    host: &EtcdHost,
    path: &str,
    body: &Value,
    timeout: Duration,
    token: Option<&str>,
) -> io::Result<(Conn, u16, BodyReader)> {
    let mut conn = connect(host, timeout).await?;
    let body = serde_json::to_vec(body)?;
    let authorization = match token {
        Some(t) if !t.contains(['\r', '\n']) => format!("Authorization: {t}\r\n"),
        _ => String::new(),
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{authorization}Connection: close\r\n\r\n",
        host.authority,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    conn.stream.write_all(&request).await?;
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let n = match conn
        .buf
        .read_head(&mut conn.stream, MAX_RESPONSE_HEAD)
        .await?
    {
        Head::Complete(n) => n,
        Head::Closed => return Err(invalid("closed without answering".into())),
        Head::TooLarge => return Err(invalid("response head too large".into())),
    };
    let head = parse_response_head(&conn.buf.data()[..n])
        .map_err(|e| invalid(format!("bad response: {}", e.reason)))?;
    conn.buf.consume(n);
    let framing = response_framing(&head, "POST")
        .map_err(|e| invalid(format!("bad response: {}", e.reason)))?;
    Ok((conn, head.status, BodyReader::new(framing)))
}

/// Resolves `host:port` and connects to the first address that accepts,
/// then makes the TLS handshake for an `https://` host.
async fn connect(host: &EtcdHost, timeout: Duration) -> io::Result<Conn> {
    let addrs = smol::net::resolve(host.authority.as_str()).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match upstream::connect(addr, timeout).await {
            Ok(conn) => {
                let stream = match &host.access.tls {
                    None => Stream::from(conn.stream),
                    Some(settings) => {
                        let connector = Connector::new(settings).map_err(io::Error::other)?;
                        let name = match &host.access.sni {
                            Some(sni) => sni.as_str(),
                            None => crate::tls::host_of(&host.authority),
                        };
                        connector.connect(conn.stream, name).await?
                    }
                };
                return Ok(Conn {
                    stream,
                    buf: conn.buf,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The message of an error answer: grpc-gateway's `{"error": "...",
/// "message": "..."}` or a watch's `{"error": {"message": ...}}`.
pub fn error_message(json: &Value) -> String {
    let e = json.get("error").unwrap_or(json);
    e.get("message")
        .or(Some(e))
        .and_then(Value::as_str)
        .map_or_else(|| json.to_string(), str::to_string)
}

/// An int64 field: the gateway writes them as JSON strings.
pub fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// `key` and `range_end` (base64) that select every key under `prefix/`:
/// the range end is the prefix with its last byte incremented.
pub fn prefix_range(prefix: &str) -> (String, String) {
    let key = format!("{prefix}/");
    let mut end = key.clone().into_bytes();
    *end.last_mut().expect("the key ends with /") += 1;
    (
        super::base64::encode(key.as_bytes()),
        super::base64::encode(&end),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_is_the_next_key_after_the_prefix() {
        let (key, end) = prefix_range("/apisix");
        assert_eq!(super::super::base64::decode(&key).unwrap(), b"/apisix/");
        assert_eq!(super::super::base64::decode(&end).unwrap(), b"/apisix0");
    }

    #[test]
    fn int64_fields_are_strings_or_numbers() {
        let v: Value = serde_json::json!({"a": "42", "b": 7, "c": "x"});
        assert_eq!(int(v.get("a")), Some(42));
        assert_eq!(int(v.get("b")), Some(7));
        assert_eq!(int(v.get("c")), None);
        assert_eq!(int(v.get("d")), None);
    }

    #[test]
    fn error_messages_of_both_shapes() {
        let range: Value = serde_json::json!({
            "error": "etcdserver: mvcc: required revision has been compacted",
            "message": "etcdserver: mvcc: required revision has been compacted",
            "code": 11
        });
        assert_eq!(
            error_message(&range),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let stream: Value = serde_json::json!({"error": {"grpc_code": 14, "message": "gone"}});
        assert_eq!(error_message(&stream), "gone");
    }

    /// A real watch stream as etcd 3.4's gateway sends it, chunked, with
    /// chunk boundaries in the middle of lines.
    #[test]
    fn watch_lines_across_chunks() {
        use std::io::Write;
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut req);
            let lines = "{\"result\":{\"created\":true}}\n{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\"}}]}}\n";
            let (a, b) = lines.split_at(10);
            write!(
                s,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
            .unwrap();
        });
        let host = EtcdHost {
            url: format!("http://{addr}"),
            authority: addr.to_string(),
            access: Default::default(),
        };
        crate::net::block_on(async {
            let mut w = watch(&host, &serde_json::json!({}), Duration::from_secs(5))
                .await
                .unwrap();
            let first = w.message().await.unwrap().unwrap();
            assert_eq!(first["result"]["created"], true);
            let second = w.message().await.unwrap().unwrap();
            assert_eq!(second["result"]["events"][0]["kv"]["key"], "YQ==");
            assert!(w.message().await.unwrap().is_none());
        })
        .unwrap();
        server.join().unwrap();
    }
}
