//! Integration tests: the real `tinygate` binary on loopback, real upstream
//! servers, real `.wasm` plugins from `fixtures/`.

mod util;

/// The whole proxy-wasm HTTP ABI: bodies, pause, calls, ticks, queues,
/// metrics, properties.
mod abi;
/// APISIX's standalone files as they are (issue #19): services, plugin
/// configs, global rules, route `vars` and `remote_addrs`, WebSocket,
/// `${{VAR}}`.
mod apisix;
/// APISIX's own `config.yaml` and `apisix.yaml` as its users write them,
/// through `tinygate -t`.
mod apisix_files;
/// The article's scenario and the shipped `conf/`.
mod article;
/// Request and response bodies streamed through intact.
mod bodies;
/// Certificates made in the test (rcgen) and a blocking TLS client.
mod certs;
/// `tinygate -t`, `--version`, `--help` and bad command lines.
mod cli;
/// Real clients' habits and quirky nodes, byte for byte, as nginx answers
/// them.
mod clients;
/// The documentation's relative links and #anchors resolve (issue #21).
mod docs;
/// Strict request parsing, limits and timeouts, upstream framing, retries.
mod edge;
/// tinygate's own error replies on a matched route (502, 503, 504, 4xx)
/// through the plugins' response hooks, as APISIX and Envoy.
mod error_replies;
/// Configuration from etcd.
mod etcd;
/// etcd over TLS with client certificates, and with user authentication.
mod etcd_tls;
/// Nodes that stall, reset, fail or die under load (issue #17).
mod failover;
/// Plugin faults in every hook, failure policies, restart backoff, memory
/// bounds, bad pointers, host ABI fuzzing, load and reload faults (issue #4).
mod faults;
/// Framing headers set by plugins never reach the wire (issue #15).
mod framing;
/// No executable memory: the MDWE lock and /proc/<pid>/maps.
mod hardening;
/// Health checks, failover, balancers and timeouts that hold (issue #17).
mod health;
/// Memory per idle keep-alive connection, and given back (issue #16.5).
mod idle;
/// Reloads that cost what changed: one route rebuilt, the others' state
/// kept; bad items refused; atomic swaps (issue #20).
mod incremental;
/// The scrape as Prometheus text, plugin families across reloads, and the
/// Grafana dashboard checked against a running tinygate (issue #21).
mod metrics;
/// Reload, graceful drain, signals and the access log.
mod ops;
/// Path and host normalisation: one path for routing, plugins, the access
/// log and the node (issue #15).
mod paths;
/// Plugins editing requests and responses, answering locally, failing.
mod plugins;
/// Root contexts across a thousand reloads (routes file and etcd): kept
/// when unchanged, deleted when gone; tick rate and memory flat.
mod reloads;
/// Route matching: exact, prefix, hosts, methods, priority, 404.
mod routing;
/// tinygate test: the plugin test runner.
mod runner;
/// The official SDKs' example plugins, run as their READMEs run them in
/// Envoy.
mod sdk_examples;
/// Plugins from every SDK and Go-sized modules; module limits (issue #14).
mod sdks;
/// Plugin code on the plugin stack wherever it runs; nesting bounds
/// (issue #14.5).
mod stacks;
/// HTTPS listeners with SNI certificates, HTTPS upstreams, mTLS both
/// ways, certificate rotation (issue #18).
mod tls;
/// The TLS clients and upstreams of `tls.rs`.
mod tls_peers;
/// Balancing, retries, 502 and 504, header rules.
mod upstreams;
