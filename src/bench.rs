//! `tinygate bench-plugin FILE CONF [ITERATIONS]`: times one plugin's
//! request lifecycle with no network, for `scripts/bench.sh`.
//!
//! It drives the same host code the proxy uses: load (compile, instantiate,
//! start, configure), then per request create a context, run the request
//! and response header hooks on a typical header map, and finish
//! (done, log, delete). Prints `plugin load: X us` (the thread's CPU
//! time, as every time here), the memory the
//! compiled module and each instance take (`plugin module: X KiB`,
//! `plugin instance: Y KiB`, growth of the process's resident set, which is
//! what an operator sees), and `plugin lifecycle: Y ns/request`.

use crate::http::HeaderMap;
use crate::wasm::{Engine, Exchange, Plugin, PluginSpec, PluginVm};
use std::sync::Arc;
use std::time::Duration;

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
    // Before anything else, so that memory freed by earlier loads does not
    // hide the growth.
    let (module_kib, instance_kib) = memory_use(&engine, &spec, conf)?;
    let loads = 20;
    let started = cpu_time();
    let mut last = None;
    for _ in 0..loads {
        let plugin = Arc::new(Plugin::load(&engine, spec.clone()).map_err(|e| e.to_string())?);
        let mut vm = PluginVm::start(plugin).map_err(|e| e.to_string())?;
        let root = vm
            .configure(1, conf.as_bytes())
            .map_err(|e| e.to_string())?;
        last = Some((vm, root));
    }
    let load = (cpu_time() - started) / loads;
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
    let started = cpu_time();
    for _ in 0..iterations {
        lifecycle(&mut vm, &mut ex)?;
    }
    let per_request = (cpu_time() - started).as_nanos() as f64 / f64::from(iterations.max(1));
    println!("plugin load: {:.1} us", load.as_nanos() as f64 / 1000.0);
    println!("plugin module: {module_kib} KiB");
    println!("plugin instance: {instance_kib} KiB (mean of {INSTANCES})");
    println!("plugin lifecycle: {per_request:.0} ns/request");
    Ok(())
}

/// CPU time this thread has used. Times are CPU time, not wall time: on a
/// machine shared with other work the wall time of a loop includes the
/// time other processes ran, its CPU time much less so.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Instances started to measure the memory of one.
const INSTANCES: u64 = 16;

/// Resident-set growth, in KiB, of compiling `spec` and of each of [`INSTANCES`] instances started and
/// configured with `conf`. Every instance handles one request first, so
/// the pages a request touches are counted too.
fn memory_use(engine: &Engine, spec: &PluginSpec, conf: &str) -> Result<(u64, u64), String> {
    let before = resident_kib()?;
    let plugin = Arc::new(Plugin::load(engine, spec.clone()).map_err(|e| e.to_string())?);
    let module = resident_kib()?.saturating_sub(before);
    let (request, response) = (typical_request(), typical_response());
    let before = resident_kib()?;
    let mut vms = Vec::new();
    for _ in 0..INSTANCES {
        let mut vm = PluginVm::start(Arc::clone(&plugin)).map_err(|e| e.to_string())?;
        let root = vm
            .configure(1, conf.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut ex = Exchange::default();
        ex.request_headers.clone_from(&request);
        ex.response_headers.clone_from(&response);
        let ctx = vm.create_http_context(root).map_err(|e| e.to_string())?;
        vm.on_request_headers(ctx, &mut ex, true)
            .map_err(|e| e.to_string())?;
        vm.on_response_headers(ctx, &mut ex, false)
            .map_err(|e| e.to_string())?;
        vm.finish(ctx, &mut ex).map_err(|e| e.to_string())?;
        vms.push(vm);
    }
    let instance = resident_kib()?.saturating_sub(before) / INSTANCES;
    Ok((module, instance))
}

/// `VmRSS` of this process, in KiB (Linux `/proc`).
fn resident_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status for memory figures: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_owned())
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
