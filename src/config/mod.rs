//! tinygate's configuration: APISIX's standalone files, validated into types
//! the request path can use without further checks.
//!
//! `conf/config.yaml` says where to listen and which wasm plugins exist;
//! `apisix.yaml` (next to it unless `tinygate.routes_file` says otherwise)
//! holds routes and upstreams and must end with `#END`, as in APISIX. Loading
//! reads those two files and resolves upstream host names, nothing else: it
//! does not open sockets or compile plugins. Every problem is reported with
//! its file and key path, and all of them are listed, not only the first.
//!
//! Settings that belong to the code acting on them are that code's types,
//! which this module parses into from above: the balancer's `HashKey`,
//! health's `Checks`, the connection side's `UpstreamTls`. Health learns
//! of the upstreams served through [`Routes::upstreams_to_watch`], and of
//! what the proxy saw on a node through [`Upstream::report_failure`] and
//! [`Upstream::report_response`], so it never names this module.

pub mod access_log;
mod balancing;
mod checks;
mod deployment;
mod env_vars;
mod main_file;
mod merge;
mod nginx_config;
mod plugin_entries;
mod requests;
mod reuse;
mod route;
mod routes_file;
mod sections;
mod services;
mod split;
mod ssl;
mod ssls;
pub(crate) mod tree;
mod upstream;
mod upstream_tls;

#[cfg(test)]
mod tests;

pub use reuse::{KeyMap, Reuse};
pub use routes_file::{
    parse_routes, parse_routes_and_document, parse_routes_document, parse_routes_sections,
    parse_routes_skipping_invalid, RouteRules, Routes,
};
pub use sections::Sections;
pub use ssl::SslConfig;
#[allow(unused_imports)] // `Ssl` is used by the HTTPS wiring (issue #18 B)
pub use ssls::{Ssl, Ssls};
// For `tinygate test`, whose test files take the plugin keys of
// `config.yaml` with the same checks.
pub(crate) use main_file::{json_bytes, plugin_limits};

use crate::balancer::{Algorithm, Balancer, HashKey, Member};
use crate::expr::{Expr, IpMatcher, RequestVars};
use crate::health::{self, Checks, NodeToWatch, UpstreamToWatch};
use crate::upstream::UpstreamTls;
use crate::wasm::PluginSpec;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Everything tinygate needs to serve, as loaded from both files.
#[derive(Debug)]
pub struct Config {
    /// The settings from `config.yaml`.
    pub main: MainConfig,
    /// Routes and upstreams from the routes file.
    pub routes: Routes,
}

/// The settings from `config.yaml`.
#[derive(Debug, Clone)]
pub struct MainConfig {
    /// Path of `config.yaml` as given.
    pub config_file: PathBuf,
    /// Path of the routes file (`apisix.yaml`).
    pub routes_file: PathBuf,
    /// `apisix.node_listen`: where to accept client connections.
    pub listen: Vec<SocketAddr>,
    /// `apisix.ssl`: HTTPS listeners and TLS settings.
    #[allow(dead_code)] // read by the HTTPS wiring (issue #18 B)
    pub ssl: SslConfig,
    /// `tinygate.workers`: worker threads, each with its own executor,
    /// listener socket, connection pool and plugin instances.
    pub workers: usize,
    /// `tinygate.demo_upstream`: serve a built-in hello-world upstream here.
    pub demo_upstream: Option<SocketAddr>,
    /// `tinygate.shutdown_grace`: how long `SIGTERM` waits for requests in
    /// flight before exiting (default 10 s).
    pub shutdown_grace: Duration,
    /// `tinygate.deny_exec_memory` (default true): at start-up, lock the
    /// process with `PR_SET_MDWE` so no mapping can ever become executable
    /// (Linux 6.3 or later; elsewhere a warning, see `ops/hardening.rs`).
    pub deny_exec_memory: bool,
    /// `wasm.plugins`, in file order.
    pub plugins: Vec<DeclaredPlugin>,
    /// Per-connection limits and timeouts for clients.
    pub limits: ClientLimits,
    /// `tinygate.access_log`: `off` (default), `stdout`, or a file path.
    pub access_log: access_log::Target,
    /// `tinygate.access_log_format`: `combined` (default) or `json`.
    pub access_log_format: access_log::Format,
    /// `tinygate.status_listen`: where to serve Prometheus metrics and
    /// status (off by default; `true` means 127.0.0.1:9091).
    pub status_listen: Option<SocketAddr>,
    /// `deployment.etcd`, present exactly when
    /// `deployment.role_data_plane.config_provider` is `etcd`: routes and
    /// upstreams then come from etcd, not from the routes file.
    pub etcd: Option<EtcdConfig>,
}

impl MainConfig {
    /// What the routes file is validated against: the plugins it may name
    /// and the path normalisation its routes' `uri`s get.
    pub fn route_rules(&self) -> RouteRules<'_> {
        RouteRules {
            plugins: &self.plugins,
            paths: self.limits.paths,
        }
    }
}

/// One `wasm.plugins[]` entry: how to load the plugin (the wasm host's
/// [`PluginSpec`], which it derefs to) and what a request does when it
/// fails (the proxy's decision, so kept out of the spec). Route plugin
/// entries copy the policy ([`RoutePlugin::policy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredPlugin {
    /// Name, file, priority and the settings of its instances.
    pub spec: PluginSpec,
    /// `failure_policy`.
    pub failure_policy: FailurePolicy,
}

impl std::ops::Deref for DeclaredPlugin {
    type Target = PluginSpec;
    fn deref(&self) -> &PluginSpec {
        &self.spec
    }
}

impl From<PluginSpec> for DeclaredPlugin {
    /// A plugin with the default failure policy.
    fn from(spec: PluginSpec) -> DeclaredPlugin {
        DeclaredPlugin {
            spec,
            failure_policy: FailurePolicy::default(),
        }
    }
}

/// `wasm.plugins[].failure_policy`: what a request does when one of its
/// plugins fails (traps, runs out of fuel, exits, fails to start or to
/// configure, or is refused while its instance backs off after repeated
/// failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// `fail_closed` (default): `503` in the request and header phases, as
    /// APISIX answers.
    #[default]
    FailClosed,
    /// `fail_open`: the plugin is skipped for the rest of that request, which
    /// goes on as if it had returned `Continue`.
    FailOpen,
}

/// `deployment.etcd`: where a data plane reads its routes and upstreams
/// (APISIX's keys, plus tinygate's `snapshot`).
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `host`: the cluster's client URLs, tried in order, failing over to
    /// the next one.
    pub hosts: Vec<EtcdHost>,
    /// `prefix` (default `/apisix`), without a trailing `/`.
    pub prefix: String,
    /// `timeout` (default 30 s): for connecting and for each request.
    pub timeout: Duration,
    /// `startup_retry` (default 2): rounds over all hosts at start before
    /// giving up (or falling back to the snapshot).
    pub startup_retry: u32,
    /// `snapshot` (tinygate): a file rewritten after every change applied
    /// from etcd, and served from at start when no host answers.
    pub snapshot: Option<PathBuf>,
}

/// One etcd client URL, `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdHost {
    /// The URL as written, for messages.
    pub url: String,
    /// `host:port` (port 2379 when the URL has none): what to connect to
    /// and the `Host` header.
    pub authority: String,
    /// How to reach the cluster: TLS for `https://` URLs, credentials.
    /// Shared by every host of the cluster.
    pub access: Arc<EtcdAccess>,
}

/// `deployment.etcd.tls`, `user` and `password`, and whether a host's URL
/// is `https://`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EtcdAccess {
    /// `Some` for an `https://` host: verification (`tls.verify`, default
    /// true, against `apisix.ssl.ssl_trusted_certificate` or the system
    /// store) and the client certificate (`tls.cert`, `tls.key`).
    pub tls: Option<crate::tls::ClientSettings>,
    /// `tls.sni`: the name to send and verify instead of the URL's host.
    pub sni: Option<String>,
    /// `user` and `password`: etcd v3 authentication.
    pub credentials: Option<EtcdCredentials>,
}

/// An etcd user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdCredentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for EtcdCredentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EtcdCredentials({:?}, ***)", self.user)
    }
}

/// How much a client may send and how long it may take (nginx-like
/// defaults; every one is a `tinygate:` key of the same name).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    /// Time to receive a whole request head (slowloris); 408 after it.
    pub client_header_timeout: Duration,
    /// Time between two reads of a request body; 408 after it.
    pub client_body_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// Time a write to the client may block.
    pub send_timeout: Duration,
    /// Largest request body; 413 past it. 0 means no limit.
    pub client_max_body_size: u64,
    /// Largest request head (request line and fields); 431 past it.
    pub max_header_size: usize,
    /// Client connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest body held in memory for plugins that read whole bodies
    /// (413 for a request, 502 for a response past it).
    pub max_buffered_body: usize,
    /// `tinygate.merge_slashes` and `tinygate.path_with_escaped_slashes_action`:
    /// how request paths are normalised before routing.
    pub paths: crate::http::uri::PathOptions,
    /// `tinygate.lingering_time`: most time a lingering close reads and
    /// discards what a refused client still sends (nginx's 30 s).
    pub lingering_time: Duration,
    /// `tinygate.lingering_timeout`: a lingering close ends once the
    /// client sends nothing for this long (nginx's 5 s).
    pub lingering_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            client_max_body_size: 1 << 20,
            max_header_size: 32 * 1024,
            max_connections: 10_000,
            max_buffered_body: 16 << 20,
            paths: crate::http::uri::PathOptions::default(),
            lingering_time: Duration::from_secs(30),
            lingering_timeout: Duration::from_secs(5),
        }
    }
}

/// One route, ready for matching.
#[derive(Debug, Default)]
pub struct Route {
    /// `id`, or `arr_<index>` when absent (as APISIX names it).
    pub id: String,
    /// `uri`/`uris`: at least one.
    pub uris: Vec<UriMatch>,
    /// `host`/`hosts`: empty means any host.
    pub hosts: Vec<HostMatch>,
    /// `methods`: empty means any method.
    pub methods: Vec<String>,
    /// `priority`: higher wins among otherwise equal matches.
    pub priority: i64,
    /// `upstream` or `upstream_id`; `None` for plugin-only routes.
    pub upstream: Option<Arc<Upstream>>,
    /// `plugins`, sorted by descending plugin priority (APISIX order).
    pub plugins: Vec<RoutePlugin>,
    /// `timeout` of the route, else of its upstream, else the defaults.
    pub timeout: Timeouts,
    /// `service_id`: the service the route inherited from, if any.
    #[allow(dead_code)] // read by the request path once wired (#19)
    pub service_id: Option<String>,
    /// `vars`: conditions on the request, compiled; `None` when absent.
    pub vars: Option<Expr>,
    /// `remote_addr`/`remote_addrs`: the client addresses the route is
    /// for; `None` means any.
    pub remote_addrs: Option<IpMatcher>,
    /// `enable_websocket` of the route, else of its service (default off).
    #[allow(dead_code)] // read by the request path once wired (#19)
    pub enable_websocket: bool,
}

impl Route {
    /// True when the route's `remote_addrs` and `vars` hold for `request`.
    /// The router checks them after host, uri and method, as APISIX's
    /// radixtree does: a route that fails them is passed over for the next
    /// candidate.
    pub fn admits(&self, request: &RequestVars) -> bool {
        self.remote_addrs
            .as_ref()
            .is_none_or(|addrs| addrs.contains(request.client.ip()))
            && self.vars.as_ref().is_none_or(|vars| vars.eval(request))
    }
}

/// How a route's `uri` matches a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriMatch {
    /// A plain path: the request path must be exactly this.
    Exact(String),
    /// A path ending in `*`: the request path must start with the rest.
    Prefix(String),
}

/// How a route's `host` matches a request's host (lower-case, no port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Suffix(String),
}

/// A wasm plugin enabled on one route, with that route's conf.
#[derive(Debug)]
pub struct RoutePlugin {
    /// Index into [`MainConfig::plugins`].
    pub plugin: usize,
    /// The plugin name, for logs.
    pub name: String,
    /// `conf` as bytes: a string as written, an object JSON-encoded.
    pub conf: Vec<u8>,
    /// What a request does when the plugin fails: the plugin's declared
    /// `failure_policy`.
    pub policy: FailurePolicy,
    /// Identifies this (route, conf) pair's root context inside a plugin
    /// instance. Fresh (never used before) when parsed; when a reload
    /// serves the same route, plugin and conf again, `Gateway` gives it
    /// the key it had, so the root context lives on.
    pub key: u64,
}

/// An upstream: weighted nodes plus how to talk to them.
#[derive(Debug)]
pub struct Upstream {
    /// `id`, or `route <id>` for an inline upstream.
    pub id: String,
    pub nodes: Vec<Node>,
    /// `type` over `nodes` with their priorities and health, shared by all
    /// workers.
    pub balancer: Balancer,
    /// `hash_on` and `key` of a `chash` upstream.
    pub hash_key: Option<HashKey>,
    pub timeout: Timeouts,
    /// `retries`: extra nodes to try after a connect failure; `None` means
    /// one less than the number of nodes (APISIX's default).
    pub retries: Option<u32>,
    /// `retry_timeout`: how long retries may go on, from the first try
    /// (`None`: no limit, as APISIX's 0).
    pub retry_timeout: Option<Duration>,
    pub pass_host: PassHost,
    /// `scheme: https` and `tls`; `None` for plain HTTP.
    #[allow(dead_code)] // read by the HTTPS wiring (issue #18 B)
    pub tls: Option<UpstreamTls>,
    /// `checks`: active and passive health checks.
    pub checks: Option<Arc<Checks>>,
}

impl Upstream {
    /// An upstream over `nodes` with APISIX's defaults for everything else;
    /// each node keeps the health and load it has in the configuration
    /// being served, if it is still configured there (see `health`).
    pub fn new(id: String, nodes: Vec<Node>, algorithm: Algorithm) -> Upstream {
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let targets = health::targets(&health::resource_key(&id), &addrs);
        let members: Vec<Member> = nodes
            .iter()
            .map(|n| Member {
                id: &n.authority,
                weight: n.weight,
                priority: n.priority,
            })
            .collect();
        let balancer = Balancer::new(algorithm, &members, targets);
        Upstream {
            id,
            nodes,
            balancer,
            hash_key: None,
            timeout: Timeouts::default(),
            retries: None,
            retry_timeout: None,
            pass_host: PassHost::Pass,
            tls: None,
            checks: None,
        }
    }

    /// What a response from node `index` says about it (passive health
    /// check; nothing without `checks`).
    pub fn report_response(&self, index: usize, status: u16) {
        if let Some(checks) = &self.checks {
            health::report_response(checks, &self.id, self.balancer.target(index), status);
        }
    }

    /// A connection to node `index` failed or timed out while proxying
    /// (passive health check; nothing without `checks`).
    pub fn report_failure(&self, index: usize, report: health::Report) {
        if let Some(checks) = &self.checks {
            health::report_failure(checks, &self.id, self.balancer.target(index), report);
        }
    }

    /// This upstream as the health registry watches it.
    fn to_watch(&self) -> UpstreamToWatch<'_> {
        let rewritten_host = match &self.pass_host {
            PassHost::Rewrite(host) => Some(host.as_str()),
            PassHost::Pass | PassHost::Node => None,
        };
        let nodes = self.nodes.iter().enumerate();
        UpstreamToWatch {
            id: &self.id,
            checks: self.checks.as_ref(),
            rewritten_host,
            nodes: nodes
                .map(|(i, node)| NodeToWatch {
                    target: self.balancer.target(i),
                    authority: &node.authority,
                })
                .collect(),
        }
    }
}

impl Routes {
    /// Every upstream, inline ones (routes' order) before named ones, as
    /// the health registry watches them ([`health::watch`]): APISIX lists
    /// routes' checkers first.
    pub fn upstreams_to_watch(&self) -> impl Iterator<Item = UpstreamToWatch<'_>> {
        let inline = self.routes.iter().filter_map(|r| r.upstream.as_ref());
        inline.chain(&self.upstreams).map(|up| up.to_watch())
    }
}

/// One upstream node.
#[derive(Debug, Clone)]
pub struct Node {
    /// `host:port` as written, used as `Host` with `pass_host: node`.
    pub authority: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// `priority` (default 0): higher is used first; lower only when no
    /// higher node may be used.
    pub priority: i64,
}

/// `pass_host`: which `Host` the upstream sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHost {
    /// The client's `Host`.
    Pass,
    /// The node's `host:port`.
    Node,
    /// `upstream_host`.
    Rewrite(String),
}

/// `timeout {connect, send, read}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub send: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    /// nginx's and APISIX's 60 s for each.
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Timeouts {
            connect: minute,
            send: minute,
            read: minute,
        }
    }
}

/// Every problem found while loading, each naming its file and key path.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Loads `config.yaml` at `path` and the routes file it names. With the
/// etcd provider the routes are left empty: reading them is network I/O,
/// which `etcd::load` does.
///
/// # Errors
/// Every problem in either file, each with file and key path.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let main = load_main(path)?;
    let routes = match main.etcd {
        Some(_) => Routes::default(),
        None => load_routes(&main)?,
    };
    Ok(Config { main, routes })
}

/// Loads `config.yaml` alone.
///
/// # Errors
/// Every problem in the file, each with key path.
pub fn load_main(path: &Path) -> Result<MainConfig, ConfigError> {
    main_file::load(path)
}

/// Loads the routes file named by `main`.
///
/// # Errors
/// Every problem in the file, each with file and key path.
pub fn load_routes(main: &MainConfig) -> Result<Routes, ConfigError> {
    let label = main.routes_file.display().to_string();
    let text = std::fs::read_to_string(&main.routes_file).map_err(|e| ConfigError {
        problems: vec![format!("{label}: cannot read: {e}")],
    })?;
    parse_routes(&label, &text, main.route_rules())
}

/// Reads a file as text, or says which file could not be read.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("{}: cannot read: {e}", path.display())],
    })
}

/// Parses YAML text, or gives the parser's message with its position.
fn parse_yaml(label: &str, text: &str) -> Result<serde_yaml::Value, ConfigError> {
    serde_yaml::from_str(text).map_err(|e| ConfigError {
        problems: vec![format!("{label}: {e}")],
    })
}
