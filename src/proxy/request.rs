//! One request, from its parsed head to the end of its response: the
//! request context ([`Request`]) and the steps in order. Route it, run the
//! plugins' request hooks, read the body through them if they want it,
//! forward it (`forward.rs`), run the response hooks, relay the body
//! (`relay.rs`), then finish the plugin contexts. Every way a request can
//! end before the node's answer is relayed is an [`EarlyEnd`], answered in
//! one place.

use super::answer::{answer, answer_early_end, answer_failure, answer_through_plugins, EarlyEnd};
use super::body::read_through_plugins;
use super::connection::Client;
use super::forward::{failure_kind, send_request, Answered};
use super::heads::{
    node_connection_reusable, request_map, response_map, status_of, stream_info,
    write_response_head,
};
use super::keep_alive::{Ending, KeepAlive};
use super::relay::{node_failure, relay_response};
use super::transport::Transport;
use super::{unmatched, upgrade};
use crate::config::{ClientLimits, Route};
use crate::expr::RequestVars;
use crate::gateway::Gateway;
use crate::http::reply;
use crate::http::{self, Framing, RequestHead, ResponseHead};
use crate::plugins::chain::Chain;
use crate::tls;
use crate::upstream::Conn;
use crate::wasm::{Exchange, ExchangeData};
use crate::worker::Worker;
use smol::io::{AsyncRead, AsyncWrite};

/// A routed request being served: what every step after routing needs.
pub(crate) struct Request<'a> {
    pub(super) head: RequestHead,
    pub(super) route: &'a Route,
    /// The limits of the configuration serving this request.
    pub(super) limits: &'a ClientLimits,
    pub(super) keep: KeepAlive,
    /// The header maps and bodies plugins see and edit.
    pub(super) ex: Exchange,
    /// The route's plugins, one HTTP context each.
    pub(super) chain: Chain<'a>,
}

/// Serves one request on `gateway`'s routes (or on the route the
/// connection is pinned to); returns whether the connection may carry
/// another request.
pub(super) async fn serve_request<C>(
    worker: &Worker,
    gateway: &Gateway,
    client: &mut Client<C>,
    transport: &dyn Transport,
    head: RequestHead,
    pinned_route: Option<usize>,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let keep = KeepAlive::of(&head, worker.stopping());
    let routes = &gateway.config.routes.routes;
    let found = || find_route(gateway, &head, client);
    let no_route;
    let route = match pinned_route.or_else(found) {
        Some(index) => &routes[index],
        None if gateway.config.routes.global_plugins.is_empty() => {
            log::debug!("{}: 404 {} {}", client.peer, head.method, head.target);
            let kept = keep.after(Ending::Reply);
            return answer(client, &head, &reply::not_found(), kept).await;
        }
        // The global rules run before the 404, as in APISIX.
        None => {
            no_route = unmatched::no_route();
            &no_route
        }
    };
    client.record.route_id.clone_from(&route.id);
    let limits = &gateway.config.main.limits;
    let mut ex = Exchange::from(ExchangeData {
        request_headers: request_map(&head, client.tls.is_some()),
        info: stream_info(client, &head, route),
        ..ExchangeData::default()
    });
    if let Framing::Length(n) = head.framing {
        if limits.client_max_body_size > 0 && n > limits.client_max_body_size {
            log::warn!("{}: 413: body of {n} bytes", client.peer);
            let r = reply::bad_request(413, "request body too large");
            return answer(client, &head, &r, keep.after(Ending::Reply)).await;
        }
    }
    let chain = match Chain::start(worker.plugins(), gateway, route) {
        Ok(chain) => chain,
        Err(failed) => {
            let (chain, fault) = *failed;
            chain.finish(&mut ex);
            transport.ended_early(&EarlyEnd::Fail(fault.clone()));
            let kept = keep.after(Ending::Reply);
            return answer_failure(client, &head, route, &fault, kept).await;
        }
    };
    let mut req = Request {
        head,
        route,
        limits,
        keep,
        ex,
        chain,
    };
    let kept = proxy(&mut req, client, transport).await;
    let Request { chain, mut ex, .. } = req;
    chain.finish(&mut ex);
    kept
}

/// The route for `head` from `peer` in `gateway`'s table, by host, path
/// and method, then `remote_addrs` and `vars`: a candidate they refuse
/// falls through to the next one, as in APISIX.
fn find_route<C>(gateway: &Gateway, head: &RequestHead, client: &Client<C>) -> Option<usize> {
    let path = head.target.split('?').next().unwrap_or("/");
    let routes = &gateway.config.routes.routes;
    let vars = RequestVars::of(head, path, client.peer, client.local, client.scheme());
    gateway
        .router
        .find(&head.method, &head.hostname, path, |&i| {
            routes[i].admits(&vars)
        })
}

/// Runs the request hooks, reads the body through the plugins if they
/// want it, and forwards the request; then [`respond`].
async fn proxy<C>(req: &mut Request<'_>, client: &mut Client<C>, transport: &dyn Transport) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let eos = req.head.framing == Framing::Empty;
    if let Some(end) = EarlyEnd::of(req.chain.on_request_headers(&mut req.ex, eos).await) {
        return answer_early_end(req, client, transport, end).await;
    }
    let body = match read_through_plugins(req, client).await {
        Ok(body) => body,
        Err(end) => return answer_early_end(req, client, transport, end).await,
    };
    let route = req.route;
    if unmatched::is_no_route(route) {
        return unmatched::answer_not_found(req, client, transport).await;
    }
    let Some(upstream) = &route.upstream else {
        log::warn!("route {:?}: no upstream and no plugin answered", route.id);
        return answer_through_plugins(req, client, transport, reply::unavailable()).await;
    };
    match send_request(req, client, transport, upstream, body).await {
        Ok(answered) => respond(req, client, transport, answered).await,
        Err(end) => answer_early_end(req, client, transport, end).await,
    }
}

/// Runs the response hooks on the node's head and relays the body; the
/// node's connection goes back to the transport if it can be reused.
async fn respond<C>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &dyn Transport,
    answered: Answered<'_, tls::Stream>,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Answered {
        mut conn,
        node,
        picked,
        target,
        response,
    } = answered;
    client.record.upstream_addr = Some(node.addr);
    client.record.upstream_status = Some(response.status);
    client.record.upstream_time = client.record.started.map(|t| t.elapsed());
    if response.status == 101 {
        return switch_protocols(req, client, transport, conn, &response).await;
    }
    let framing = match http::parse::response_framing(&response, &req.head.method) {
        Ok(f) => f,
        Err(e) => {
            log::warn!(
                "route {:?}: upstream {}: {}",
                req.route.id,
                node.addr,
                e.reason
            );
            return answer_through_plugins(req, client, transport, reply::bad_gateway()).await;
        }
    };
    req.ex.response_headers = response_map(&response);
    let eos = framing == Framing::Empty;
    if let Some(end) = EarlyEnd::of(req.chain.on_response_headers(&mut req.ex, eos).await) {
        return answer_early_end(req, client, transport, end).await;
    }
    let Some(status) = status_of(&req.ex.response_headers) else {
        log::warn!("route {:?}: a plugin set an invalid :status", req.route.id);
        let keep = req.keep.after(Ending::Reply);
        return answer(client, &req.head, &reply::unavailable(), keep).await;
    };
    client.record.status = status;
    req.ex.info.response_code = Some(status);
    match relay_response(req, client, &mut conn, framing, status).await {
        Ok(keep) => {
            if node_connection_reusable(&response, framing) {
                transport.release(&target.dial(), conn);
            }
            keep
        }
        Err(e) => {
            let route = &req.route.id;
            log::warn!(
                "route {route:?}: upstream {}: response body aborted: {e}",
                node.addr
            );
            if let (Some(upstream), Some(failed)) = (&req.route.upstream, node_failure(&e)) {
                upstream.report_failure(picked.index, failure_kind(failed));
            }
            false
        }
    }
}

/// A node's `101` to an upgrade the route allows: the response hooks see
/// its headers, the client gets it, then the bytes of the new protocol
/// are copied both ways until either side closes (`upgrade.rs`).
async fn switch_protocols<C>(
    req: &mut Request<'_>,
    client: &mut Client<C>,
    transport: &dyn Transport,
    mut conn: Conn<tls::Stream>,
    response: &ResponseHead,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    req.ex.response_headers = response_map(response);
    if let Some(end) = EarlyEnd::of(req.chain.on_response_headers(&mut req.ex, false).await) {
        return answer_early_end(req, client, transport, end).await;
    }
    client.record.status = 101;
    req.ex.info.response_code = Some(101);
    req.chain.response_started();
    let mut head = Vec::with_capacity(256);
    write_response_head(
        &mut head,
        101,
        &req.ex.response_headers,
        Framing::Empty,
        &req.head,
        true,
    );
    upgrade::add_upgrade_fields(
        &mut head,
        response.headers.get(b"upgrade").unwrap_or(b"websocket"),
    );
    let idle = req.route.timeout.read;
    if let Err(e) = upgrade::tunnel(client, &mut conn, &head, idle).await {
        log::debug!("route {:?}: upgraded connection ended: {e}", req.route.id);
    }
    false
}
