//! A request no route matched, on a gateway with global rules: APISIX runs
//! the global rules' `rewrite` and `access` phases before it answers
//! `404 Route Not Found` (`http_access_phase` in `apisix/init.lua`), and
//! their `header_filter`, `body_filter` and `log` phases on that 404, as on
//! any response. So the request runs on a stand-in route with no plugins
//! of its own and no upstream: the global plugins see its request headers
//! (and its body if one of them wants it), may answer it themselves or fail
//! it, and otherwise see the 404 (headers and body, which they may edit,
//! as any reply tinygate makes: `answer.rs`) before it goes out, then
//! finish as on any request.
//!
//! Without global rules a request no route matched never gets here: it is
//! answered 404 at once, as before.

use super::answer::answer_through_plugins;
use super::connection::Client;
use super::request::Request;
use super::transport::Transport;
use crate::config::Route;
use crate::http::reply;
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
/// let the request through: their response hooks see it first, as any
/// reply tinygate makes on a request plugins saw.
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
    answer_through_plugins(req, client, transport, reply::not_found()).await
}
