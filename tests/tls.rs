//! TLS at the edge (issue #18): HTTPS listeners serving the `ssls`
//! certificate the SNI picks, requests over them through the same routing,
//! plugins and access log as plain ones, client certificates, HTTPS
//! upstreams (verified, with SNI, mTLS, pooled), `proxy_http_call` to one,
//! handshake timeouts and failures, and certificates rotated under load.
//! Every certificate is made here (rcgen).

use crate::certs::{client_config, Ca, Leaf};
use crate::tls_peers::{any_server_config, der_of, TlsClient, TlsUpstream};
use crate::util::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `config.yaml` with an HTTPS listener on 127.0.0.1:0, these plugins,
/// and `ssl` lines added under `apisix.ssl` (4 spaces).
fn https_config(plugins: &[(&str, i64, &str)], ssl: &str, extra: &str) -> String {
    let base = config_yaml(plugins, extra);
    let ssl =
        format!("  ssl:\n    enable: true\n    listen:\n      - {{ip: 127.0.0.1, port: 0}}\n{ssl}");
    base.replacen("apisix:\n", &format!("apisix:\n{ssl}"), 1)
}

/// One `ssls` item: `id`, `snis` (YAML flow list), the leaf inline, and
/// extra keys (4 spaces).
fn ssl_item(id: &str, snis: &str, leaf: &Leaf, extra: &str) -> String {
    format!(
        "  - id: {id}\n    snis: {snis}\n    cert: {}\n    key: {}\n{extra}",
        json(&leaf.cert),
        json(&leaf.key)
    )
}

/// A string as a YAML (JSON) double-quoted scalar.
fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A value as the lower-case hex `properties_probe` writes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn get(host: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[test]
fn sni_picks_the_exact_name_then_the_wildcard_then_the_fallback_and_refuses_unknown_names() {
    let ca = Ca::new("test ca");
    let (exact, wild, fallback) = (
        ca.leaf(&["api.example.com"]),
        ca.leaf(&["*.example.com"]),
        ca.leaf(&["default.test"]),
    );
    let up = Upstream::named("u");
    let routes = format!(
        "ssls:\n{}{}{}{}",
        ssl_item("wild", "[\"*.example.com\"]", &wild, ""),
        ssl_item("exact", "[api.example.com]", &exact, ""),
        ssl_item("fallback", "[default.test]", &fallback, ""),
        route_to(up.addr)
    );
    let gate = Gate::start(
        &https_config(&[], "    fallback_sni: default.test\n", ""),
        &routes,
    );
    let addr = gate.https_addr();
    let served = |name: &str, sni: bool| -> Result<Vec<u8>, String> {
        let mut c = TlsClient::connect(addr, name, any_server_config(sni))?;
        let r = c.request(&get(name))?;
        assert_eq!((r.status, r.text().as_str()), (200, "u"));
        Ok(c.server_certificate())
    };
    assert_eq!(
        served("api.example.com", true),
        Ok(der_of(&exact.cert)),
        "exact beats the wildcard listed first"
    );
    assert_eq!(served("www.example.com", true), Ok(der_of(&wild.cert)));
    assert_eq!(
        served("WWW.Example.COM", true),
        Ok(der_of(&wild.cert)),
        "names compare case-insensitively"
    );
    assert_eq!(
        served("api.example.com", false),
        Ok(der_of(&fallback.cert)),
        "no SNI: fallback_sni"
    );
    for unknown in ["a.b.example.com", "example.com", "other.org", "other.org"] {
        let got = served(unknown, true);
        assert!(got.is_err(), "{unknown}: served {got:?}");
    }
    assert!(gate.wait_for_log("no ssls entry for SNI \"other.org\""));
    assert!(gate.wait_for_log("no ssls entry for SNI \"a.b.example.com\""));
    let log = gate.log();
    assert_eq!(
        log.matches("no ssls entry for SNI \"other.org\"").count(),
        1,
        "once a minute per name:\n{log}"
    );
    // ALPN: HTTP/1.1 is what tinygate speaks, whatever else is offered.
    let mut offer = (*any_server_config(true)).clone();
    offer.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let c = TlsClient::connect(addr, "api.example.com", Arc::new(offer)).unwrap();
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    // The plain listener is unaffected.
    assert_eq!(gate.get("/").status, 200);
}

#[test]
fn https_requests_go_through_routing_plugins_and_the_access_log() {
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["api.example.com", "b.example.com"]);
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let read = r#"["request.scheme", "connection.mtls", "connection.tls_version", "connection.requested_server_name", "connection.subject_local_certificate", "https", "ssl_client_verify"]"#;
    let routes = format!(
        "ssls:\n{}routes:\n  - {{id: a, uri: /*, host: api.example.com, upstream: {{nodes: {{\"{}\": 1}}}}, plugins: {{probe: {{conf: {}}}, hdr: {{conf: {}}}}}}}\n  - {{id: b, uri: /*, host: b.example.com, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        ssl_item("one", "[api.example.com, b.example.com]", &leaf, ""),
        a.addr,
        json(&format!("{{\"read\": {read}}}")),
        json(r#"{"headers": [{"name": "X-Go-Wasm", "value": "APISIX"}]}"#),
        b.addr,
    );
    let config = https_config(
        &[
            ("probe", 20, "properties_probe"),
            ("hdr", 10, "custom_response_header"),
        ],
        "",
        "  access_log: access.log\n",
    );
    let gate = Gate::start(&config, &routes);
    let trust = client_config(&ca, None);
    let mut c =
        TlsClient::connect(gate.https_addr(), "api.example.com", Arc::clone(&trust)).unwrap();
    let r = c
        .request("GET /x?y=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t\r\n\r\n")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    assert_eq!(
        r.header("x-go-wasm"),
        Some("APISIX"),
        "the response plugin ran"
    );
    let seen = a.last();
    let prop = |name: &str| {
        seen.header(&format!("x-prop-{}", name.replace('.', "-")))
            .unwrap_or("missing")
            .to_string()
    };
    assert_eq!(prop("request.scheme"), hex(b"https"));
    assert_eq!(prop("connection.mtls"), "00");
    let version = c
        .version()
        .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1."));
    assert_eq!(
        prop("connection.tls_version"),
        hex(version.unwrap().as_bytes())
    );
    assert_eq!(
        prop("connection.requested_server_name"),
        hex(b"api.example.com")
    );
    assert_eq!(
        prop("connection.subject_local_certificate"),
        hex(b"CN=api.example.com")
    );
    assert_eq!(prop("https"), hex(b"on"));
    assert_eq!(prop("ssl_client_verify"), hex(b"NONE"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // Same connection, another host: another route, no plugins.
    let r = c.request(&get("b.example.com")).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "b"));
    assert_eq!(r.header("x-go-wasm"), None);
    let r = c.request(&get("nowhere.example.com")).unwrap();
    assert_eq!(r.status, 404);
    let log_file = gate.dir.join("access.log");
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(&log_file)
        .unwrap_or_default()
        .lines()
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "three access log lines");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = std::fs::read_to_string(&log_file).unwrap();
    assert!(lines.contains("\"GET /x?y=1 HTTP/1.1\" 200"), "{lines}");
    assert!(lines.contains(" 404 "), "{lines}");
}

#[test]
fn client_certificates_are_required_verified_and_shown_to_plugins() {
    let (ca, client_ca, other_ca) = (
        Ca::new("server ca"),
        Ca::new("client ca"),
        Ca::new("other ca"),
    );
    let leaf = ca.leaf(&["api.example.com"]);
    let up = Upstream::named("u");
    let read = r#"["connection.mtls", "connection.subject_peer_certificate", "connection.sha256_peer_certificate_digest", "ssl_client_i_dn", "ssl_client_verify"]"#;
    let routes = format!(
        "ssls:\n{}routes:\n  - {{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}, plugins: {{probe: {{conf: {}}}}}}}\n#END\n",
        ssl_item("m", "[api.example.com]", &leaf, &format!("    client: {{ca: {}, depth: 1}}\n", json(&client_ca.pem))),
        up.addr,
        json(&format!("{{\"read\": {read}}}")),
    );
    let gate = Gate::start(
        &https_config(&[("probe", 1, "properties_probe")], "", ""),
        &routes,
    );
    let addr = gate.https_addr();
    let alice = client_ca.leaf(&["alice"]);
    let mut c =
        TlsClient::connect(addr, "api.example.com", client_config(&ca, Some(&alice))).unwrap();
    assert_eq!(c.request(&get("api.example.com")).unwrap().status, 200);
    let seen = up.last();
    let prop = |name: &str| {
        seen.header(&format!("x-prop-{}", name.replace('.', "-")))
            .unwrap_or("missing")
            .to_string()
    };
    assert_eq!(prop("connection.mtls"), "01");
    assert_eq!(
        prop("connection.subject_peer_certificate"),
        hex(b"CN=alice")
    );
    assert_eq!(prop("ssl_client_i_dn"), hex(b"CN=client ca"));
    assert_eq!(prop("ssl_client_verify"), hex(b"SUCCESS"));
    assert_eq!(
        prop("connection.sha256_peer_certificate_digest").len(),
        128,
        "64 hex digits, hex again"
    );
    // No certificate, or one from another CA: the handshake fails (TLS 1.3
    // clients learn it on their first read), and nothing reaches the node.
    let count = up.count();
    for client in [None, Some(other_ca.leaf(&["mallory"]))] {
        let tried =
            TlsClient::connect(addr, "api.example.com", client_config(&ca, client.as_ref()))
                .and_then(|mut c| c.request(&get("api.example.com")));
        assert!(tried.is_err(), "{tried:?}");
    }
    assert_eq!(up.count(), count);
    assert!(gate.wait_for_log("TLS handshake failed"));
    // The connection with a certificate was never disturbed.
    assert_eq!(c.request(&get("api.example.com")).unwrap().status, 200);
}

#[test]
fn a_stalled_handshake_times_out_without_holding_up_others() {
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["api.example.com"]);
    let up = Upstream::named("u");
    let routes = format!(
        "ssls:\n{}{}",
        ssl_item("a", "[api.example.com]", &leaf, ""),
        route_to(up.addr)
    );
    let gate = Gate::start(
        &https_config(&[], "", "  client_header_timeout: 1\n"),
        &routes,
    );
    let addr = gate.https_addr();
    let mut silent = Client::connect(addr);
    let mut half = Client::connect(addr);
    half.write(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]); // a ClientHello that never ends
    let mut c = TlsClient::connect(addr, "api.example.com", client_config(&ca, None)).unwrap();
    assert_eq!(c.request(&get("api.example.com")).unwrap().status, 200);
    assert!(silent.closed_within(Duration::from_secs(10)));
    assert!(half.closed_within(Duration::from_secs(10)));
    assert!(gate.wait_for_log("no handshake within client_header_timeout"));
    assert_eq!(c.request(&get("api.example.com")).unwrap().status, 200);
}

/// An HTTPS upstream route: `nodes` one node, `extra` upstream keys.
fn https_route(id: &str, uri: &str, node: std::net::SocketAddr, extra: &str) -> String {
    format!("  - {{id: {id}, uri: \"{uri}\", upstream: {{scheme: https, nodes: {{\"{node}\": 1}}{extra}}}}}\n")
}

#[test]
fn https_upstreams_are_verified_for_their_name_and_refused_on_a_wrong_ca() {
    let (ca, other_ca) = (Ca::new("upstream ca"), Ca::new("someone else"));
    let good = TlsUpstream::start(
        "good",
        &ca.leaf(&["backend.internal", "a.backend", "b.backend", "127.0.0.1"]),
        None,
    );
    let stranger = TlsUpstream::start("stranger", &other_ca.leaf(&["backend.internal"]), None);
    let dir = temp_dir();
    ca.write(&dir, "upstream-ca.pem");
    let routes = format!(
        "routes:\n{}{}{}{}{}#END\n",
        https_route(
            "rewrite",
            "/rewrite",
            good.addr,
            ", pass_host: rewrite, upstream_host: backend.internal"
        ),
        https_route("node", "/node", good.addr, ", pass_host: node"),
        https_route("pass", "/pass", good.addr, ""),
        https_route(
            "wrong",
            "/wrong",
            stranger.addr,
            ", pass_host: rewrite, upstream_host: backend.internal"
        ),
        https_route(
            "off",
            "/off",
            stranger.addr,
            ", pass_host: rewrite, upstream_host: backend.internal, tls: {verify: false}"
        ),
    );
    let config = config_yaml(&[], "").replacen(
        "apisix:\n",
        "apisix:\n  ssl:\n    enable: false\n    ssl_trusted_certificate: upstream-ca.pem\n",
        1,
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    let gate = Gate::start_in(dir);
    let mut c = Client::connect(gate.addr);
    let r = c.request("GET /rewrite HTTP/1.1\r\nHost: client.example\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    let r = c.request("GET /node HTTP/1.1\r\nHost: client.example\r\n\r\n");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "good"),
        "an IP node: verified against its IP address"
    );
    // pass_host: pass sends the client's host as SNI, as APISIX's nginx does.
    for host in ["a.backend", "b.backend", "a.backend:8443"] {
        let r = c.request(&format!("GET /pass HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(r.status, 200, "{host}");
    }
    let seen = good.seen();
    let snis: Vec<Option<&str>> = seen.iter().map(|s| s.sni.as_deref()).collect();
    assert_eq!(
        snis,
        [
            Some("backend.internal"),
            None,
            Some("a.backend"),
            Some("b.backend"),
            Some("a.backend")
        ]
    );
    // Pooled like plain connections, but only for the name they were made
    // for: the second a.backend request reuses the first one's.
    let conns: Vec<usize> = seen.iter().map(|s| s.connection).collect();
    assert_eq!(conns[4], conns[2], "{seen:?}");
    assert_ne!(conns[3], conns[2]);
    assert!(
        seen[0].head.contains("x-forwarded-proto: http\r\n"),
        "{}",
        seen[0].head
    );
    let r = c.request("GET /wrong HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(
        stranger.seen().is_empty(),
        "nothing was sent to an unverified node"
    );
    assert!(gate.wait_for_log("UnknownIssuer"));
    let r = c.request("GET /off HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "stranger"),
        "tls.verify: false"
    );
}

#[test]
fn upstream_mtls_presents_the_configured_client_certificate() {
    let (ca, client_ca) = (Ca::new("upstream ca"), Ca::new("client ca"));
    let node = TlsUpstream::start("secure", &ca.leaf(&["backend.internal"]), Some(&client_ca));
    let dir = temp_dir();
    ca.write(&dir, "upstream-ca.pem");
    client_ca.leaf(&["tinygate"]).write(&dir, "gw");
    let rewrite = ", pass_host: rewrite, upstream_host: backend.internal";
    let routes = format!(
        "routes:\n{}{}#END\n",
        https_route(
            "m",
            "/m",
            node.addr,
            &format!(
                "{rewrite}, tls: {{client_cert: \"file:gw.crt\", client_key: \"file:gw.key\"}}"
            )
        ),
        https_route("none", "/none", node.addr, rewrite),
    );
    let config = config_yaml(&[], "").replacen(
        "apisix:\n",
        "apisix:\n  ssl:\n    enable: false\n    ssl_trusted_certificate: upstream-ca.pem\n",
        1,
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    let gate = Gate::start_in(dir);
    let r = gate.request("GET /m HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "secure"));
    assert!(node.seen()[0].client_cert);
    let r = gate.request("GET /none HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 502, "the node requires a certificate");
    assert_eq!(node.seen().len(), 1);
}

#[test]
fn proxy_http_call_reaches_an_https_upstream() {
    let ca = Ca::new("upstream ca");
    let auth = TlsUpstream::start("ok", &ca.leaf(&["auth.internal"]), None);
    let app = Upstream::named("app");
    let dir = temp_dir();
    ca.write(&dir, "upstream-ca.pem");
    let routes = format!(
        "routes:\n  - uri: /*\n    upstream: {{nodes: {{\"{}\": 1}}}}\n    plugins:\n      auth:\n        conf: '{{\"upstream\": \"auth\", \"path\": \"/check\"}}'\nupstreams:\n  - {{id: auth, scheme: https, pass_host: rewrite, upstream_host: auth.internal, nodes: {{\"{}\": 1}}}}\n#END\n",
        app.addr, auth.addr
    );
    let config = config_yaml(&[("auth", 1, "auth_callout")], "").replacen(
        "apisix:\n",
        "apisix:\n  ssl:\n    enable: false\n    ssl_trusted_certificate: upstream-ca.pem\n",
        1,
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    let gate = Gate::start_in(dir);
    let r = gate.request("GET /data HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "app"));
    let seen = auth.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some("auth.internal"));
    assert!(
        seen[0].head.starts_with("GET /check HTTP/1.1\r\n"),
        "{}",
        seen[0].head
    );
}

/// Writes `apisix.yaml` in `dir` with one `ssls` entry for
/// api.example.com (`cert`, `key` PEM) and a route to `up`.
fn write_routes(dir: &Path, cert: &str, key: &str, up: std::net::SocketAddr) {
    let text = format!(
        "ssls:\n  - id: api\n    snis: [api.example.com]\n    cert: {}\n    key: {}\n{}",
        json(cert),
        json(key),
        route_to(up)
    );
    replace_file(&dir.join("apisix.yaml"), &text);
}

#[test]
fn certificates_rotate_under_load_without_a_failed_request() {
    let ca = Ca::new("test ca");
    let (v1, v2, v3) = (
        ca.leaf(&["api.example.com"]),
        ca.leaf(&["api.example.com"]),
        ca.leaf(&["api.example.com"]),
    );
    let up = Upstream::named("u");
    let dir = temp_dir();
    std::fs::write(dir.join("config.yaml"), https_config(&[], "", "")).unwrap();
    write_routes(&dir, &v1.cert, &v1.key, up.addr);
    let gate = Gate::start_in(dir.clone());
    let addr = gate.https_addr();
    let trust = client_config(&ca, None);
    // A connection made before the rotation keeps its certificate.
    let mut kept = TlsClient::connect(addr, "api.example.com", Arc::clone(&trust)).unwrap();
    assert_eq!(kept.server_certificate(), der_of(&v1.cert));

    // Bounded load: 3 clients making new connections until told to stop
    // (at most 2,000 requests each), recording every certificate seen.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let seen_v2 = Arc::new(AtomicBool::new(false));
    let v2_der = der_of(&v2.cert);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, done, seen_v2, trust, v2_der) = (
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&seen_v2),
                Arc::clone(&trust),
                v2_der.clone(),
            );
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut c = TlsClient::connect(addr, "api.example.com", Arc::clone(&trust))?;
                    let r = c.request(&get("api.example.com"))?;
                    if r.status != 200 {
                        return Err(format!("status {}", r.status));
                    }
                    if c.server_certificate() == v2_der {
                        seen_v2.store(true, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("some requests before the rotation", &|| {
        done.load(Ordering::Relaxed) >= 20
    });
    // Rotation by the routes-file reload (polled every second).
    write_routes(&dir, &v2.cert, &v2.key, up.addr);
    wait_for("new handshakes get the new certificate", &|| {
        seen_v2.load(Ordering::Relaxed)
    });
    // A certificate with the wrong key: an error with its key path, and
    // the entry keeps serving the version before.
    write_routes(&dir, &v3.cert, &v1.key, up.addr);
    assert!(gate.wait_for_log("ssls[0].key: does not match cert"));
    assert!(gate.wait_for_log("ssls \"api\": keeping the version served before"));
    let before = done.load(Ordering::Relaxed);
    wait_for("requests after the bad rotation", &|| {
        done.load(Ordering::Relaxed) >= before + 20
    });
    let c = TlsClient::connect(addr, "api.example.com", Arc::clone(&trust)).unwrap();
    assert_eq!(c.server_certificate(), der_of(&v2.cert));
    // SIGHUP applies a change too.
    write_routes(&dir, &v3.cert, &v3.key, up.addr);
    gate.signal(rustix::process::Signal::HUP);
    assert!(gate.wait_for_log("reloaded (SIGHUP)"));
    let v3_der = der_of(&v3.cert);
    wait_for("SIGHUP rotation", &|| {
        TlsClient::connect(addr, "api.example.com", Arc::clone(&trust))
            .is_ok_and(|c| c.server_certificate() == v3_der)
    });
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client
            .join()
            .unwrap()
            .expect("no request failed during the rotations");
    }
    assert_eq!(kept.request(&get("api.example.com")).unwrap().status, 200);
    assert_eq!(
        kept.server_certificate(),
        der_of(&v1.cert),
        "open connections keep theirs"
    );
    assert!(done.load(Ordering::Relaxed) >= before + 20);
}

#[test]
fn ssls_from_etcd_are_served_and_rotated() {
    use crate::etcd::{etcd_config, start_gate, Etcd};
    let ca = Ca::new("test ca");
    let (v1, v2) = (ca.leaf(&["api.example.com"]), ca.leaf(&["api.example.com"]));
    let entry = |cert: &str, key: &str| {
        serde_json::json!({"snis": ["api.example.com"], "cert": cert, "key": key}).to_string()
    };
    let etcd = Etcd::start();
    let up = Upstream::named("u");
    etcd.put("/apisix/ssls/api", &entry(&v1.cert, &v1.key));
    etcd.put("/apisix/routes/r", &crate::etcd::route("/*", up.addr));
    let config = etcd_config(&[etcd.url()], "").replacen(
        "apisix:\n",
        "apisix:\n  ssl:\n    listen:\n      - {ip: 127.0.0.1, port: 0}\n",
        1,
    );
    let gate = start_gate(&config);
    let addr = gate.https_addr();
    let trust = client_config(&ca, None);
    let served = || {
        let mut c = TlsClient::connect(addr, "api.example.com", Arc::clone(&trust)).unwrap();
        assert_eq!(c.request(&get("api.example.com")).unwrap().status, 200);
        c.server_certificate()
    };
    assert_eq!(served(), der_of(&v1.cert));
    etcd.put("/apisix/ssls/api", &entry(&v2.cert, &v2.key));
    let deadline = Instant::now() + Duration::from_secs(10);
    while served() != der_of(&v2.cert) {
        assert!(
            Instant::now() < deadline,
            "the etcd change reached new handshakes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A key that is not the certificate's, and a relative file path: both
    // are errors naming the etcd key, and v2 keeps serving.
    etcd.put("/apisix/ssls/api", &entry(&v1.cert, &v2.key));
    etcd.put(
        "/apisix/ssls/rel",
        &serde_json::json!({"sni": "rel.example.com", "cert": "file:rel.crt", "key": "file:rel.key"})
            .to_string(),
    );
    assert!(gate.wait_for_log("etcd /apisix/ssls/api: key: does not match cert"));
    assert!(gate.wait_for_log(
        "etcd /apisix/ssls/rel: cert: file:rel.crt: the path must be absolute in etcd"
    ));
    assert_eq!(served(), der_of(&v2.cert));
}

#[test]
fn https_health_checks_verify_the_node_and_send_sni() {
    let (ca, other_ca) = (Ca::new("upstream ca"), Ca::new("someone else"));
    let good = TlsUpstream::start("good", &ca.leaf(&["backend.internal"]), None);
    let stranger = TlsUpstream::start("stranger", &other_ca.leaf(&["backend.internal"]), None);
    let dir = temp_dir();
    ca.write(&dir, "upstream-ca.pem");
    let routes = format!(
        "upstreams:\n  - id: checked\n    scheme: https\n    pass_host: rewrite\n    upstream_host: backend.internal\n    nodes: {{\"{}\": 1, \"{}\": 1}}\n    checks:\n      active:\n        type: https\n        http_path: /health\n        host: backend.internal\n        healthy: {{interval: 1, successes: 1}}\n        unhealthy: {{interval: 1, tcp_failures: 1}}\nroutes:\n  - {{id: r, uri: /*, upstream_id: checked}}\n#END\n",
        good.addr, stranger.addr
    );
    let config = config_yaml(&[], "  status_listen: \"127.0.0.1:0\"\n").replacen(
        "apisix:\n",
        "apisix:\n  ssl:\n    enable: false\n    ssl_trusted_certificate: upstream-ca.pem\n",
        1,
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    std::fs::write(dir.join("apisix.yaml"), routes).unwrap();
    let gate = Gate::start_in(dir);
    let status = gate.status_addr();
    let state = |port: u16| -> String {
        let r = send(status, b"GET /v1/healthcheck/upstreams/checked HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
        let checker: serde_json::Value = serde_json::from_str(&r.text()).expect("JSON");
        let nodes = checker["nodes"].as_array().cloned().unwrap_or_default();
        let node = nodes.iter().find(|n| n["port"] == port);
        node.map_or(String::new(), |n| {
            n["status"].as_str().unwrap_or("").to_string()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(stranger.addr.port()) != "unhealthy" || good.seen().is_empty() {
        assert!(Instant::now() < deadline, "the probes ran: {}", gate.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(good.addr.port()), "healthy");
    let probe = &good.seen()[0];
    assert!(
        probe.head.starts_with("GET /health HTTP/1.1\r\n"),
        "{}",
        probe.head
    );
    assert_eq!(probe.sni.as_deref(), Some("backend.internal"));
    assert!(
        stranger.seen().is_empty(),
        "no probe request to an unverified node"
    );
    for _ in 0..4 {
        assert_eq!(gate.get("/").text(), "good");
    }
}
