//! `proxy_get_property` / `proxy_set_property`: every attribute with its
//! exact encoding, the APISIX aliases, values set by the plugin, and
//! root-context reads.

use super::*;
use crate::wasm::pairs;
use crate::wasm::{PluginVm, StreamInfo};

/// A body that reads every path in `paths`, storing (status, ptr, size) in
/// slots `3i..3i+3`.
fn reads(w: &Wat, paths: &[&str]) -> String {
    reads_at(w, paths, 0)
}

/// [`reads`] from slot `first` on.
fn reads_at(w: &Wat, paths: &[&str], first: u32) -> String {
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let i = first / 3 + i as u32;
            [
                store_slot(
                    3 * i,
                    &format!(
                        "(call $proxy_get_property {} (i32.const 16) (i32.const 20))",
                        w.s(path)
                    ),
                ),
                store_slot(3 * i + 1, "(i32.load (i32.const 16))"),
                store_slot(3 * i + 2, "(i32.load (i32.const 20))"),
            ]
            .concat()
        })
        .collect()
}

/// What the reads of `paths` found: `None` for NOT_FOUND, else the bytes.
fn results(vm: &PluginVm, paths: &[&str]) -> Vec<(String, Option<Vec<u8>>)> {
    results_at(vm, paths, 0)
}

/// [`results`] of [`reads_at`] from slot `first` (a multiple of 3).
fn results_at(vm: &PluginVm, paths: &[&str], first: u32) -> Vec<(String, Option<Vec<u8>>)> {
    let s = slots(vm, first + 3 * paths.len() as u32);
    paths
        .iter()
        .zip(s[first as usize..].chunks(3))
        .map(|(path, c)| {
            let value = match c[0] {
                0 => Some(vm.read_memory(c[1], c[2])),
                1 => None,
                other => panic!("{path}: status {other}"),
            };
            (path.replace('\0', "."), value)
        })
        .collect()
}

fn string(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn int(n: i64) -> Option<Vec<u8>> {
    Some(n.to_le_bytes().to_vec())
}

/// The exchange the property tests use: a client at 10.1.2.3:54321 on the
/// listener 127.0.0.1:9080.
fn stream() -> Exchange {
    let mut ex = exchange();
    for (k, v) in [
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("cookie", "c=1"),
        ("cookie", "d=2"),
        ("x-request-id", "from-header"),
        ("referer", "http://r/"),
    ] {
        ex.request_headers.add(k.as_bytes(), v.as_bytes());
    }
    ex.request_headers
        .replace(b":authority", b"Example.COM:8080");
    ex.info = StreamInfo {
        source: Some("10.1.2.3:54321".parse().unwrap()),
        destination: Some("127.0.0.1:9080".parse().unwrap()),
        request_id: "req-1".into(),
        route_name: "api".into(),
        protocol: "HTTP/1.1",
        start_time_ns: 1_700_000_000_123_456_789,
        response_code: None,
        tls: None,
    };
    ex
}

const STREAM_PATHS: &[&str] = &[
    "request\0path",
    "request\0url_path",
    "request\0query",
    "request\0host",
    "request\0method",
    "request\0scheme",
    "request\0protocol",
    "request\0id",
    "request\0time",
    "request\0useragent",
    "request\0referer",
    "source\0address",
    "source\0port",
    "destination\0address",
    "destination\0port",
    "connection\0mtls",
    "response\0code",
    "response\0headers",
    "route_name",
    "xds\0route_name",
    "plugin_name",
    "plugin_root_id",
    "plugin_vm_id",
    // APISIX / nginx variables.
    "remote_addr",
    "remote_port",
    "server_addr",
    "server_port",
    "uri",
    "request_uri",
    "args",
    "host",
    "request_method",
    "scheme",
    "server_protocol",
    "http_user_agent",
    "http_x_multi",
    "http_cookie",
    "http_x_absent",
    "http_",
    // Dotted spelling, unknown names.
    "request.path",
    "request\0nope",
    "nope",
    "request",
    "\u{ff}",
];

#[test]
fn every_property_has_its_envoy_encoding() {
    let w = Wat::new();
    let body = reads(&w, STREAM_PATHS);
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
    ));
    let mut vm = start_with(&module, |spec| spec.root_id = "my-root".into());
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = stream();
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    let want: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("request.path", string("/hello?x=1")),
        ("request.url_path", string("/hello")),
        ("request.query", string("x=1")),
        ("request.host", string("Example.COM:8080")),
        ("request.method", string("GET")),
        ("request.scheme", string("http")),
        ("request.protocol", string("HTTP/1.1")),
        ("request.id", string("req-1")),
        ("request.time", int(1_700_000_000_123_456_789)),
        ("request.useragent", string("test/1.0")),
        ("request.referer", string("http://r/")),
        ("source.address", string("10.1.2.3:54321")),
        ("source.port", int(54321)),
        ("destination.address", string("127.0.0.1:9080")),
        ("destination.port", int(9080)),
        ("connection.mtls", Some(vec![0])),
        // The test exchange already holds a response: `:status` is the fallback.
        ("response.code", int(200)),
        (
            "response.headers",
            Some(pairs::serialize(ex.response_headers.iter())),
        ),
        ("route_name", string("api")),
        ("xds.route_name", string("api")),
        ("plugin_name", string("test")),
        ("plugin_root_id", string("my-root")),
        ("plugin_vm_id", string("test")),
        ("remote_addr", string("10.1.2.3")),
        ("remote_port", string("54321")),
        ("server_addr", string("127.0.0.1")),
        ("server_port", string("9080")),
        ("uri", string("/hello")),
        ("request_uri", string("/hello?x=1")),
        ("args", string("x=1")),
        ("host", string("example.com")),
        ("request_method", string("GET")),
        ("scheme", string("http")),
        ("server_protocol", string("HTTP/1.1")),
        ("http_user_agent", string("test/1.0")),
        ("http_x_multi", string("a, b")),
        ("http_cookie", string("c=1; d=2")),
        ("http_x_absent", None),
        ("http_", None),
        ("request.path", string("/hello?x=1")),
        ("request.nope", None),
        ("nope", None),
        ("request", None),
        ("\u{ff}", None),
    ];
    let got = results(&vm, STREAM_PATHS);
    for ((path, value), (want_path, want_value)) in got.iter().zip(&want) {
        assert_eq!(path, want_path);
        assert_eq!(value, want_value, "{path}");
    }
    assert_eq!(got.len(), want.len());
}

const TLS_PATHS: &[&str] = &[
    "connection\0mtls",
    "connection\0tls_version",
    "connection\0requested_server_name",
    "connection\0subject_local_certificate",
    "connection\0dns_san_local_certificate",
    "connection\0uri_san_local_certificate",
    "connection\0subject_peer_certificate",
    "connection\0dns_san_peer_certificate",
    "connection\0uri_san_peer_certificate",
    "connection\0sha256_peer_certificate_digest",
    "https",
    "ssl_protocol",
    "ssl_server_name",
    "ssl_cipher",
    "ssl_client_verify",
    "ssl_client_s_dn",
    "ssl_client_i_dn",
    "ssl_client_serial",
    "ssl_nope",
];

/// What plugins read about an HTTPS client with a certificate, without
/// one, and on plain HTTP (Envoy's `connection.*` and nginx's `ssl_*`).
#[test]
fn tls_properties_follow_the_handshake() {
    use crate::tls::{CertNames, PeerCert, TlsInfo};
    let w = Wat::new();
    let body = reads(&w, TLS_PATHS);
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
    ));
    let mut vm = start(&module);
    let root = vm.configure(1, b"").unwrap();
    let local = CertNames {
        subject: "CN=api.example.com".into(),
        issuer: "CN=ca".into(),
        serial: "01".into(),
        dns_san: Some("api.example.com".into()),
        uri_san: None,
    };
    let peer = PeerCert {
        names: CertNames {
            subject: "CN=client,O=Example".into(),
            issuer: "CN=client ca".into(),
            serial: "0A1B".into(),
            dns_san: None,
            uri_san: Some("spiffe://example/client".into()),
        },
        sha256: "ab".repeat(32),
    };
    let info = |peer: Option<PeerCert>| TlsInfo {
        version: "TLSv1.2",
        sni: Some("api.example.com".into()),
        cipher: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        local: std::sync::Arc::new(local.clone()),
        peer,
    };
    let read = |vm: &mut PluginVm, tls: Option<TlsInfo>| {
        let ctx = vm.create_http_context(root).unwrap();
        let mut ex = stream();
        ex.info.tls = tls.map(std::sync::Arc::new);
        vm.on_request_headers(ctx, &mut ex, true).unwrap();
        results(vm, TLS_PATHS)
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    let digest = "ab".repeat(32);
    let with_cert = read(&mut vm, Some(info(Some(peer.clone()))));
    #[rustfmt::skip]
    let want = vec![
        Some(vec![1]), string("TLSv1.2"), string("api.example.com"),
        string("CN=api.example.com"), string("api.example.com"), None,
        string("CN=client,O=Example"), None, string("spiffe://example/client"),
        string(&digest),
        string("on"), string("TLSv1.2"), string("api.example.com"),
        string("ECDHE-ECDSA-AES128-GCM-SHA256"), string("SUCCESS"),
        string("CN=client,O=Example"), string("CN=client ca"), string("0A1B"),
        None,
    ];
    assert_eq!(with_cert, want);
    let without_cert = read(&mut vm, Some(info(None)));
    #[rustfmt::skip]
    let want = vec![
        Some(vec![0]), string("TLSv1.2"), string("api.example.com"),
        string("CN=api.example.com"), string("api.example.com"), None,
        None, None, None, None,
        string("on"), string("TLSv1.2"), string("api.example.com"),
        string("ECDHE-ECDSA-AES128-GCM-SHA256"), string("NONE"),
        None, None, None, None,
    ];
    assert_eq!(without_cert, want);
    let plain = read(&mut vm, None);
    let mut want = vec![None; TLS_PATHS.len()];
    want[0] = Some(vec![0]);
    want[10] = Some(Vec::new());
    assert_eq!(plain, want);
}

#[test]
fn request_headers_property_is_the_serialized_request_map() {
    let w = Wat::new();
    let body = reads(&w, &["request\0headers"]);
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
    ));
    let mut vm = start(&module);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = stream();
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    let got = results(&vm, &["request\0headers"]).remove(0).1.unwrap();
    assert_eq!(got, pairs::serialize(ex.request_headers.iter()));
    let parsed = pairs::parse(&got).unwrap();
    assert_eq!(
        parsed[0],
        (b":method".to_vec(), b"GET".to_vec()),
        "pseudo-headers included"
    );
    assert_eq!(
        parsed.iter().filter(|(k, _)| k == b"x-multi").count(),
        2,
        "repeated names stay separate"
    );
}

#[test]
fn response_code_and_fallbacks_once_known() {
    let w = Wat::new();
    let paths = [
        "response\0code",
        "request\0id",
        "source\0address",
        "request\0time",
    ];
    let body = reads(&w, &paths);
    let module = w.module(&format!(
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
    ));
    let mut vm = start(&module);
    let root = vm.configure(1, b"").unwrap();

    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = stream();
    ex.info.response_code = Some(201);
    vm.on_response_headers(ctx, &mut ex, true).unwrap();
    assert_eq!(results(&vm, &paths)[0].1, int(201));

    // No StreamInfo at all: :status, the x-request-id header, and nothing.
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = stream();
    ex.info = StreamInfo::default();
    vm.on_response_headers(ctx, &mut ex, true).unwrap();
    let got: Vec<_> = results(&vm, &paths).into_iter().map(|r| r.1).collect();
    assert_eq!(got, [int(200), string("from-header"), None, None]);
}

#[test]
fn set_property_values_are_read_back_and_shadow_computed_ones() {
    let w = Wat::new();
    let set = |slot: u32, path: &str, value: &str| {
        store_slot(
            slot,
            &format!("(call $proxy_set_property {} {})", w.s(path), w.s(value)),
        )
    };
    let request = [
        set(0, "tinygate_test\0value", "first"),
        set(1, "tinygate_test\0value", "set-by-plugin"),
        set(2, "request\0path", "/shadow"),
        set(3, "wasm_process_req_body", "x"),
    ]
    .concat();
    let paths = ["tinygate_test\0value", "request\0path", "request\0url_path"];
    let response = reads(&w, &paths);
    let configure = [
        set(9, "tinygate_test\0root", "r"),
        reads_at(&w, &["tinygate_test\0root"], 12),
    ]
    .concat();
    let module = w.module(&format!(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) {configure} (i32.const 1))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {request} (i32.const 0))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) {response} (i32.const 0))"#
    ));
    let mut vm = start(&module);
    let root = vm.configure(1, b"").unwrap();
    assert_eq!(slots(&vm, 10)[9], 0, "a root context has no stream: OK");
    assert_eq!(
        results_at(&vm, &["tinygate_test\0root"], 12)[0].1,
        None,
        "dropped, so NOT_FOUND"
    );
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = stream();
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    assert_eq!(slots(&vm, 4), [0, 0, 0, 0]);
    assert_eq!(
        ex.properties,
        [
            (b"tinygate_test\0value".to_vec(), b"set-by-plugin".to_vec()),
            (b"request\0path".to_vec(), b"/shadow".to_vec()),
            (b"wasm_process_req_body".to_vec(), b"x".to_vec()),
        ],
        "one value per path, visible to the proxy"
    );
    // A later hook of the same request reads them back.
    vm.on_response_headers(ctx, &mut ex, true).unwrap();
    let got: Vec<_> = results(&vm, &paths).into_iter().map(|r| r.1).collect();
    assert_eq!(
        got,
        [string("set-by-plugin"), string("/shadow"), string("/hello")],
        "only the exact path is shadowed"
    );
}

#[test]
fn plugin_properties_are_readable_in_root_contexts() {
    let w = Wat::new();
    let paths = [
        "plugin_name",
        "plugin_root_id",
        "plugin_vm_id",
        "request\0path",
        "source\0address",
    ];
    let body = reads(&w, &paths);
    let module = w.module(&format!(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) {body} (i32.const 1))"#
    ));
    let mut vm = start_with(&module, |spec| {
        spec.name = "props".into();
        spec.root_id = "root-a".into();
    });
    vm.configure(1, b"").unwrap();
    let got: Vec<_> = results(&vm, &paths).into_iter().map(|r| r.1).collect();
    assert_eq!(
        got,
        [
            string("props"),
            string("root-a"),
            string("props"),
            None,
            None
        ]
    );
}

#[test]
fn empty_values_are_ok_with_no_data() {
    let w = Wat::new();
    let body = reads(&w, &["args", "request\0query", "plugin_root_id"]);
    let module = w.module(&format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
    ));
    let mut vm = start(&module);
    let root = vm.configure(1, b"").unwrap();
    let ctx = vm.create_http_context(root).unwrap();
    let mut ex = stream();
    ex.request_headers.replace(b":path", b"/plain");
    vm.on_request_headers(ctx, &mut ex, true).unwrap();
    assert_eq!(slots(&vm, 9), [0, 0, 0, 0, 0, 0, 0, 0, 0], "OK, (0, 0)");
}
