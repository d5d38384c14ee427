//! `tinygate bench-plugin FILE CONF [ITERATIONS]`: times one plugin's
//! request lifecycle with no network, for `scripts/bench.sh`.
//!
//! It drives the same host code the proxy uses: load (compile, instantiate,
//! start, configure), then per request create a context, run the request
//! and response header hooks on a typical header map, and finish
//! (done, log, delete). Prints `plugin load: X us` and
//! `plugin lifecycle: Y ns/request`.

use crate::http::HeaderMap;
use crate::wasm::{Engine, Exchange, Plugin, PluginSpec, PluginVm};
use std::sync::Arc;
use std::time::Instant;

/// Runs the micro-benchmark; `Err` carries a message for stderr.
pub fn run(args: &[String]) -> Result<(), String> {
    let [file, conf, rest @ ..] = args else {
        return Err("usage: tinygate bench-plugin FILE CONF [ITERATIONS]".into());
    };
    let iterations: u32 = match rest.first() {
        Some(n) => n.parse().map_err(|_| format!("not a number: {n:?}"))?,
        None => 100_000,
    };
    let spec = PluginSpec {
        name: "bench".into(),
        file: file.into(),
        ..PluginSpec::default()
    };
    let engine = Engine::new();
    let loads = 20;
    let started = Instant::now();
    let mut last = None;
    for _ in 0..loads {
        let plugin = Arc::new(Plugin::load(&engine, spec.clone()).map_err(|e| e.to_string())?);
        let mut vm = PluginVm::start(plugin).map_err(|e| e.to_string())?;
        let root = vm
            .configure(1, conf.as_bytes())
            .map_err(|e| e.to_string())?;
        last = Some((vm, root));
    }
    let load = started.elapsed() / loads;
    let (mut vm, root) = last.expect("at least one load");

    let request = typical_request();
    let response = typical_response();
    let mut ex = Exchange::default();
    let lifecycle = |vm: &mut PluginVm, ex: &mut Exchange| -> Result<(), String> {
        ex.request_headers.clone_from(&request);
        ex.response_headers.clone_from(&response);
        let ctx = vm.create_http_context(root).map_err(|e| e.to_string())?;
        vm.on_request_headers(ctx, ex, true)
            .map_err(|e| e.to_string())?;
        vm.on_response_headers(ctx, ex, false)
            .map_err(|e| e.to_string())?;
        vm.finish(ctx, ex).map(|_| ()).map_err(|e| e.to_string())
    };
    for _ in 0..iterations / 10 {
        lifecycle(&mut vm, &mut ex)?;
    }
    let started = Instant::now();
    for _ in 0..iterations {
        lifecycle(&mut vm, &mut ex)?;
    }
    let per_request = started.elapsed().as_nanos() as f64 / f64::from(iterations.max(1));
    println!("plugin load: {:.1} us", load.as_nanos() as f64 / 1000.0);
    println!("plugin lifecycle: {per_request:.0} ns/request");
    Ok(())
}

/// The headers `wrk` sends, as the proxy presents them to plugins.
fn typical_request() -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in [
        (":method", "GET"),
        (":path", "/"),
        (":authority", "127.0.0.1:9080"),
        (":scheme", "http"),
    ] {
        m.add(k.as_bytes(), v.as_bytes());
    }
    m
}

/// A small upstream response.
fn typical_response() -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in [
        (":status", "200"),
        ("server", "nginx"),
        ("date", "Wed, 25 Nov 2026 12:00:00 GMT"),
        ("content-type", "text/plain"),
        ("content-length", "6"),
    ] {
        m.add(k.as_bytes(), v.as_bytes());
    }
    m
}
