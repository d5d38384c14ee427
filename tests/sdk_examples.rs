//! The official SDKs' example plugins, built unmodified from the SDKs'
//! source (`fixtures/README.md`, "The official SDKs' examples"), run the
//! way their READMEs run them in Envoy: what a user of those SDKs expects
//! to see. The compatibility table of every example is in
//! `docs/plugins.md`.

use crate::util::*;

/// `multiple_dispatches` (Go SDK): ten `proxy_http_call`s from the
/// response headers hook to the cluster `httpbin`, with an empty
/// `:authority`, while the response waits; the last answer adds
/// `total-dispatched: 10` and resumes it. Envoy requires only that
/// `:authority` be there, and the call names its target in `Host` (an
/// empty `Host` is a 400 at most servers).
#[test]
fn go_multiple_dispatches_sends_ten_calls_with_an_empty_authority_then_resumes() {
    let app = Upstream::named("app");
    let httpbin = Upstream::named("httpbin");
    let routes = format!(
        "upstreams:
  - id: httpbin
    nodes: {{\"{}\": 1}}
routes:
  - id: r
    uri: /*
    upstream: {{nodes: {{\"{}\": 1}}}}
    plugins: {{dispatch: {{conf: example}}}}
#END
",
        httpbin.addr, app.addr
    );
    let gate = Gate::start(
        &config_yaml(&[("dispatch", 1, "go_multiple_dispatches")], ""),
        &routes,
    );
    let r = gate.get("/");
    assert_eq!(
        (r.status, r.text().as_str(), r.header("total-dispatched")),
        (200, "app", Some("10")),
        "{}",
        gate.log()
    );
    let calls = httpbin.received.lock().unwrap().clone();
    assert_eq!(calls.len(), 10, "{}", gate.log());
    for call in &calls {
        assert_eq!((call.method.as_str(), call.target.as_str()), ("GET", "/"));
        assert_eq!(call.header("host"), Some(httpbin.addr.to_string().as_str()));
    }
    assert!(gate
        .log()
        .contains("response resumed after processed 10 dispatched request"));
}
