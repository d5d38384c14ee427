//! The request path: one client connection, request after request, from
//! the first byte of a head to the last byte of its response.
//!
//! For each request: read and check the head, find the route, run the
//! plugins' request hooks, send the request to an upstream node (with
//! retries on connect failure), run the response hooks, relay the
//! response, then finish the plugin contexts. Every failure becomes a
//! response with the right status and one log line; the connection is
//! closed only when its framing can no longer be trusted.
//!
//! There is one request path, and `tinygate test` runs it too: its only
//! door is [`serve_connection`], given the client's byte stream and the
//! [`Transport`] that supplies node connections. Serving passes a TCP
//! socket (or TLS over it) and [`Sockets`]; the runner passes scripted
//! streams (`runner/exec.rs`). The modules, in request order:
//!
//! - `connection.rs`: the connection loop, head reading and refusals;
//! - `request.rs`: the request context ([`Request`](request::Request)) and
//!   its steps, routing to finishing;
//! - `heads.rs`: header maps for plugins and the heads sent on, as pure
//!   functions with golden-byte tests;
//! - `body.rs`: the one request-body type (`Unread | Whole | Spilled`)
//!   and reading it through the plugins; `send.rs`: writing it to a node;
//! - `forward.rs`: node attempts and retries, and where an exchange
//!   failed (`Stage`);
//! - `relay.rs`: the response body to the client, streamed or through the
//!   plugins;
//! - `answer.rs`: replies the proxy makes itself, and `EarlyEnd`;
//! - `unmatched.rs`: a request no route matched, through the global rules;
//! - `keep_alive.rs`: the one keep-alive decision;
//! - `transport.rs`: the network behind the request path.
//!
//! It sits above `plugins` (the chain and the worker), `http/`, `net/`
//! and the upstream pool; nothing below it knows it.

mod answer;
mod body;
mod connection;
mod forward;
mod heads;
mod keep_alive;
mod relay;
mod request;
mod send;
mod transport;
mod unmatched;
mod upgrade;

pub(crate) use answer::EarlyEnd;
pub(crate) use connection::{serve_connection, Connection};
pub(crate) use send::encode_piece;
pub(crate) use transport::{Connecting, Sockets, Transport};
