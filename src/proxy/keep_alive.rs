//! The one decision whether a client connection may carry another request
//! after this response.
//!
//! The client says what it wants (HTTP/1.1 keeps alive unless `close`,
//! HTTP/1.0 only with `keep-alive`, RFC 9112 §9.3), a draining process
//! wants nothing more, and then how the response ends decides: a reply
//! tinygate or a plugin makes leaves the connection usable only if the
//! request had no body (a body may be left unread, and its bytes would be
//! taken for the next request); a relayed response to an HTTP/1.0 client
//! must have a length, or its end is the connection's close; an aborted
//! relay never leaves it usable. Every step of the request path asks here
//! instead of deciding for itself.

use crate::http::{self, Framing, RequestHead, Version};

/// What the client asked for, decided once per request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAlive {
    /// The client wants the connection kept and the process is not
    /// draining.
    wanted: bool,
    version: Version,
    /// The request's body framing (a reply leaves a body unread).
    request: Framing,
}

/// How a response ends, as far as the client's connection is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    /// A response tinygate or a plugin made, without reading what is left
    /// of the request body.
    Reply,
    /// The node's response, relayed in `to_client` framing; it came in
    /// `upstream` framing.
    Relayed {
        upstream: Framing,
        to_client: Framing,
    },
    /// A relay stopped before its end: the connection's framing cannot
    /// be trusted.
    Aborted,
}

impl KeepAlive {
    /// What `req` asks for; nothing when the process is `draining`.
    pub(crate) fn of(req: &RequestHead, draining: bool) -> KeepAlive {
        KeepAlive {
            wanted: wants_keep_alive(req) && !draining,
            version: req.version,
            request: req.framing,
        }
    }

    /// Whether the connection may carry another request once a response
    /// ends as `ending` says.
    pub(crate) fn after(self, ending: Ending) -> bool {
        self.wanted
            && match ending {
                Ending::Reply => self.request == Framing::Empty,
                // An HTTP/1.0 client finds the end of a body without a
                // length only by the close (RFC 9112 §6.3).
                Ending::Relayed {
                    upstream,
                    to_client,
                } => {
                    self.version == Version::Http11
                        || (has_length(upstream) && has_length(to_client))
                }
                Ending::Aborted => false,
            }
    }
}

/// True when a body in `framing` ends without the connection closing.
fn has_length(framing: Framing) -> bool {
    matches!(framing, Framing::Empty | Framing::Length(_))
}

/// HTTP/1.1 keeps alive unless `close`; HTTP/1.0 only with `keep-alive`.
fn wants_keep_alive(req: &RequestHead) -> bool {
    match req.version {
        Version::Http11 => !has_token(req.headers.iter(), b"close"),
        Version::Http10 => has_token(req.headers.iter(), b"keep-alive"),
    }
}

/// True when a `Connection` field among `headers` lists `token`.
pub(crate) fn has_token<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    token: &[u8],
) -> bool {
    http::connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::parse_request_head;
    use Framing::{Chunked, Close, Empty, Length};

    fn keep(head: &str, draining: bool, ending: Ending) -> bool {
        let req = parse_request_head(head.as_bytes()).expect("a valid head");
        KeepAlive::of(&req, draining).after(ending)
    }

    const GET_11: &str = "GET / HTTP/1.1\r\nhost: a\r\n\r\n";
    const GET_11_CLOSE: &str = "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    const GET_10: &str = "GET / HTTP/1.0\r\n\r\n";
    const GET_10_KEEP: &str = "GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
    const POST_11: &str = "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n";

    fn relayed(upstream: Framing, to_client: Framing) -> Ending {
        Ending::Relayed {
            upstream,
            to_client,
        }
    }

    /// Every rule, one row each: (request head, draining, ending, kept).
    #[test]
    #[rustfmt::skip]
    fn the_decision_table() {
        let table = [
            (GET_11,       false, Ending::Reply,                true),
            (GET_11,       true,  Ending::Reply,                false), // draining
            (GET_11_CLOSE, false, Ending::Reply,                false), // the client said close
            (GET_10,       false, Ending::Reply,                false), // HTTP/1.0 without keep-alive
            (GET_10_KEEP,  false, Ending::Reply,                true),
            (POST_11,      false, Ending::Reply,                false), // a body may be unread
            (POST_11,      false, relayed(Length(3), Length(3)), true),
            (GET_11,       false, relayed(Chunked, Chunked),    true),  // re-chunked for 1.1
            (GET_11,       false, relayed(Close, Chunked),      true),
            (GET_10_KEEP,  false, relayed(Length(5), Length(5)), true),
            (GET_10_KEEP,  false, relayed(Empty, Empty),        true),
            (GET_10_KEEP,  false, relayed(Chunked, Close),      false), // ends with the close
            (GET_10_KEEP,  false, relayed(Chunked, Length(9)),  false), // decided on the upstream's
            (GET_10_KEEP,  false, relayed(Length(9), Chunked),  false), // plugins dropped the length
            (GET_11,       false, Ending::Aborted,              false),
        ];
        for (i, (head, draining, ending, kept)) in table.into_iter().enumerate() {
            assert_eq!(keep(head, draining, ending), kept, "row {i}: {head:?} {ending:?}");
        }
    }
}
