//! A request no route matched, on a gateway with global rules: APISIX runs
//! the global rules' `rewrite` and `access` phases before it answers
//! `404 Route Not Found` (`http_access_phase` in `apisix/init.lua`), and
//! their `header_filter`, `body_filter` and `log` phases on that 404, as on
//! any response. So the request runs on a stand-in route with no plugins
//! of its own and no upstream: the global plugins see its request headers
//! (and its body if one of them wants it), may answer it themselves or fail
//! it, and otherwise see the 404's headers (which they may edit, as a local
//! response's) before it goes out, then finish as on any request.
//!
//! Without global rules a request no route matched never gets here: it is
//! answered 404 at once, as before.

use super::answer::{answer_local, EarlyEnd};
use super::connection::Client;
use super::keep_alive::Ending;
use super::request::{end_early, Request};
use super::transport::Transport;
use crate::config::Route;
use crate::http::reply;
use crate::plugins::chain::local_response_headers;
use crate::wasm::LocalResponse;
use smol::io::{AsyncRead, AsyncWrite};

/// The route a request no route matched is served on: no uri, no plugins
/// of its own, no upstream, and no id (the access log's `route_id` is empty,
/// as for any 404).
pub(super) fn no_route() -> Route {
    Route::default()
}

/// True for the [`no_route`] stand-in (every configured route has a uri).
pub(super) fn is_no_route(route: &Route) -> bool {
    route.uris.is_empty()
}

/// Answers `404 Route Not Found` once the global plugins' request hooks
/// let the request through: their response hooks see the 404's headers
/// first, as they see a plugin's local response.
pub(super) async fn answer_not_found<C>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &dyn Transport,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    log::debug!(
        "{}: 404 {} {}",
        client.peer,
        req.head.method,
        req.head.target
    );
    let reply = reply::not_found();
    let local = LocalResponse {
        status: reply.status,
        details: b"route_not_found".to_vec(),
        headers: reply.headers,
        body: reply.body,
    };
    req.ex.response_headers = local_response_headers(&local);
    req.ex.info.response_code = Some(local.status);
    let end_of_stream = local.body.is_empty();
    if let Some(end) = EarlyEnd::of(
        req.chain
            .on_response_headers(&mut req.ex, end_of_stream)
            .await,
    ) {
        return end_early(req, client, transport, end).await;
    }
    let keep = req.keep.after(Ending::Reply);
    answer_local(client, &req.head, &local, &req.ex, keep).await
}
