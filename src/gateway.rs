//! One loaded configuration, ready to serve: validated config, its route
//! table, and every wasm plugin compiled (once per worker engine replica).
//!
//! Building a `Gateway` is where config meets the wasm engine (and the
//! TLS settings of both files meet: `ssls` with `apisix.ssl`, upstream
//! `tls` with the trusted CAs); it is also what `tinygate -t` checks, by
//! additionally starting every plugin and configuring it with every
//! route's conf. Workers share it through an `Arc` and never mutate it.

use crate::config::{Config, ConfigError, KeyMap, MainConfig, RoutePlugin, Routes};
use crate::router::Router;
use crate::tls::Acceptor;
use crate::wasm::{file_content_id, Engine, Fault, LoadError, Plugin, PluginSpec, PluginVm};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A configuration ready to serve.
pub struct Gateway {
    pub config: Config,
    pub router: Router,
    /// Compiled plugins, indexed like `config.main.plugins`.
    pub plugins: Vec<Arc<Plugin>>,
    /// The certificates of `ssls` for HTTPS listeners
    /// (`apisix.ssl.listen`). A reload brings a new one: new handshakes
    /// use it, open connections keep what they agreed.
    pub acceptor: Acceptor,
    /// The plugin (index into `plugins`) of each plugin entry, by key:
    /// what a reload and each worker look entries up in, once built.
    entry_plugins: KeyMap<usize>,
}

impl Gateway {
    /// Compiles every plugin named in `config`.
    ///
    /// # Errors
    /// One problem per plugin that fails to load, naming plugin and file.
    pub fn build(config: Config, engine: &Engine) -> Result<Gateway, GatewayError> {
        Gateway::build_reusing(config, engine, None)
    }

    /// Like [`Gateway::build`], but a plugin whose settings and file are
    /// unchanged from `previous` keeps its compiled module (and so workers
    /// keep its running instances). (A plugin entry whose route, plugin and
    /// conf are unchanged keeps its key, and so its root contexts, from the
    /// config layer: `config/reuse.rs`.)
    ///
    /// # Errors
    /// One problem per plugin that fails to load, naming plugin and file.
    pub fn build_reusing(
        mut config: Config,
        engine: &Engine,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, GatewayError> {
        let mut plugins: Vec<Arc<Plugin>> = Vec::new();
        let mut problems = Vec::new();
        let acceptor = tls_setup(&mut config, previous, &mut problems);
        let config_file = &config.main.config_file;
        for declared in &config.main.plugins {
            let spec = &declared.spec;
            let reused = previous.and_then(|prev| {
                let now = file_content_id(&spec.file)?;
                prev.plugins
                    .iter()
                    .find(|p| p.content_id() == now && same_spec(p.spec(), spec))
                    .map(Arc::clone)
            });
            if let Some(p) = reused {
                plugins.push(p);
                continue;
            }
            match Plugin::load_sharing(engine, spec.clone(), &plugins) {
                Ok(p) => plugins.push(Arc::new(p)),
                Err(error) => problems.push(Problem::Load {
                    config_file: config_file.clone(),
                    plugin: spec.name.clone(),
                    error,
                }),
            }
        }
        if !problems.is_empty() {
            return Err(GatewayError { problems });
        }
        let router = Router::new(&config.routes.routes);
        Ok(Gateway {
            entry_plugins: entry_plugins(&config.routes),
            config,
            router,
            plugins,
            acceptor,
        })
    }

    /// Every plugin entry served (routes' first, then global rules'), with
    /// its route's id (`None` for a global rule's) and its plugin.
    pub fn plugin_entries(
        &self,
    ) -> impl Iterator<Item = (Option<&str>, &Arc<Plugin>, &RoutePlugin)> {
        entries(&self.config.routes).map(|(route, rp)| (route, &self.plugins[rp.plugin], rp))
    }

    /// The plugin of the plugin entry with `key`, if this gateway has one.
    pub fn entry_plugin(&self, key: u64) -> Option<&Arc<Plugin>> {
        self.entry_plugins.get(&key).map(|&i| &self.plugins[i])
    }

    /// The id of the route whose plugin entry has `key` (`None` for a
    /// global rule's, or none).
    pub fn route_of(&self, key: u64) -> Option<&str> {
        entries(&self.config.routes)
            .find(|(_, rp)| rp.key == key)
            .and_then(|(route, _)| route)
    }

    /// A gateway whose plugins (indexed like `config.main.plugins`) are
    /// loaded already: `tinygate test` loads them itself, to report a
    /// plugin that fails to load in its own file's terms.
    pub fn with_plugins(config: Config, plugins: Vec<Arc<Plugin>>) -> Gateway {
        let router = Router::new(&config.routes.routes);
        Gateway {
            entry_plugins: entry_plugins(&config.routes),
            config,
            router,
            plugins,
            acceptor: Acceptor::new(crate::tls::SniTable::new(None), Vec::new()),
        }
    }

    /// Starts each plugin once and runs `proxy_on_vm_start` and
    /// `proxy_on_configure` for every route's plugin conf, as `-t` does.
    ///
    /// # Errors
    /// Every failure, naming route, plugin and hook.
    pub fn check_plugins(&self) -> Result<(), GatewayError> {
        self.check_plugins_where(|_| true, |_| true)
    }

    /// [`Gateway::check_plugins`] for a reload from `previous`: only what
    /// `previous` did not serve. A plugin it has (the same compiled module
    /// and settings) was started when `previous` was checked, and an entry
    /// it has (the same key: route, plugin and conf unchanged) configured
    /// then; so only plugins loaded anew are started, and only entries with
    /// a new key or a plugin loaded anew are configured. With one route
    /// changed among 10,000, that is one `proxy_on_configure`.
    ///
    /// # Errors
    /// Every failure, naming route, plugin and hook.
    pub fn check_changes(&self, previous: &Gateway) -> Result<(), GatewayError> {
        let loaded_anew: Vec<bool> = self
            .plugins
            .iter()
            .map(|p| !previous.plugins.iter().any(|q| Arc::ptr_eq(p, q)))
            .collect();
        let changed = |rp: &RoutePlugin| {
            loaded_anew[rp.plugin] || !previous.entry_plugins.contains_key(&rp.key)
        };
        let mut start = loaded_anew.clone();
        for (_, _, rp) in self.plugin_entries().filter(|(_, _, rp)| changed(rp)) {
            start[rp.plugin] = true;
        }
        self.check_plugins_where(|i| start[i], changed)
    }

    /// Starts the plugins `start` takes (by index) and configures the
    /// entries `configure` takes.
    fn check_plugins_where(
        &self,
        start: impl Fn(usize) -> bool,
        configure: impl Fn(&RoutePlugin) -> bool,
    ) -> Result<(), GatewayError> {
        let mut problems = Vec::new();
        let main = &self.config.main;
        let mut vms: Vec<Option<PluginVm>> = self
            .plugins
            .iter()
            .enumerate()
            .map(|(i, plugin)| {
                if !start(i) {
                    return None;
                }
                match PluginVm::start(Arc::clone(plugin)) {
                    Ok(vm) => Some(vm),
                    Err(fault) => {
                        problems.push(Problem::Start {
                            config_file: main.config_file.clone(),
                            plugin: plugin.name().to_string(),
                            fault,
                        });
                        None
                    }
                }
            })
            .collect();
        let owned = self
            .config
            .routes
            .routes
            .iter()
            .flat_map(|r| r.plugins.iter().map(move |rp| (Some(r.id.as_str()), rp)));
        let global = self
            .config
            .routes
            .global_plugins
            .iter()
            .map(|rp| (None, rp));
        for (route, rp) in global.chain(owned).filter(|(_, rp)| configure(rp)) {
            let slot = &mut vms[rp.plugin];
            let Some(vm) = slot.as_mut() else {
                continue;
            };
            if let Err(fault) = vm.configure(rp.key, &rp.conf) {
                problems.push(Problem::Configure {
                    at: entry_location(main, route, &rp.name),
                    fault,
                });
                // A trap leaves the instance unsound, and every later call
                // into it would fail with that: the entries after it are
                // checked on a fresh instance, as a worker restarts one.
                if vm.is_broken() {
                    *slot = PluginVm::start(Arc::clone(&self.plugins[rp.plugin])).ok();
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(GatewayError { problems })
        }
    }
}

/// Where the plugin entry `plugin` of `route` (of the global rules when
/// `None`) is written: `apisix.yaml: route "r1" plugins.auth` in a routes
/// file, `etcd /apisix/routes/r1: plugins.auth` in etcd (the key of a
/// route is its id under the prefix, as the etcd provider reads it; the
/// global rules are merged into one list, so their entries name the
/// section).
fn entry_location(main: &MainConfig, route: Option<&str>, plugin: &str) -> String {
    match (&main.etcd, route) {
        (Some(etcd), Some(route)) => {
            format!("etcd {}/routes/{route}: plugins.{plugin}", etcd.prefix)
        }
        (Some(etcd), None) => format!("etcd {}/global_rules: plugins.{plugin}", etcd.prefix),
        (None, Some(route)) => format!(
            "{}: route {route:?} plugins.{plugin}",
            main.routes_file.display()
        ),
        (None, None) => format!(
            "{}: global_rules plugins.{plugin}",
            main.routes_file.display()
        ),
    }
}

/// Why a configuration cannot be served: every problem its plugins have.
#[derive(Debug)]
pub struct GatewayError {
    pub problems: Vec<Problem>,
}

/// One plugin problem, with the file and key it comes from.
#[derive(Debug)]
pub enum Problem {
    /// A `wasm.plugins[]` entry whose module does not load.
    Load {
        config_file: PathBuf,
        plugin: String,
        error: LoadError,
    },
    /// A plugin whose instance does not start (`_start`, `_initialize`).
    Start {
        config_file: PathBuf,
        plugin: String,
        fault: Fault,
    },
    /// A plugin that fails on a route's or a global rule's conf:
    /// `proxy_on_vm_start` or `proxy_on_configure` said no, or it trapped.
    Configure {
        /// Where the entry is written: see [`entry_location`].
        at: String,
        fault: Fault,
    },
    /// The TLS side of the configuration: an upstream whose TLS client
    /// cannot be made (no CA to verify with), or `ssls` rustls refused.
    Tls {
        /// The routes file, or `etcd <prefix>`.
        source: String,
        /// `upstream "<id>"` or `ssls "<id>"`.
        item: String,
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Tls {
                source,
                item,
                reason,
            } => write!(f, "{source}: {item}: {reason}"),
            Problem::Load {
                config_file,
                plugin,
                error,
            } => write!(
                f,
                "{}: wasm.plugins {plugin:?}: {error}",
                config_file.display()
            ),
            Problem::Start {
                config_file,
                plugin,
                fault,
            } => write!(
                f,
                "{}: wasm.plugins {plugin:?}: {fault}",
                config_file.display()
            ),
            Problem::Configure { at, fault } => write!(f, "{at}: {fault}"),
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GatewayError {}

impl From<GatewayError> for ConfigError {
    /// The problems as the lines start-up and reloads print.
    fn from(e: GatewayError) -> ConfigError {
        ConfigError {
            problems: e.problems.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The plugin index of every plugin entry of `routes`, by key.
fn entry_plugins(routes: &Routes) -> KeyMap<usize> {
    entries(routes).map(|(_, rp)| (rp.key, rp.plugin)).collect()
}

/// Every plugin entry of `routes`, routes' first, in order, with its
/// route's id (`None` for a global rule's).
fn entries(routes: &Routes) -> impl Iterator<Item = (Option<&str>, &RoutePlugin)> {
    let of_routes = routes
        .routes
        .iter()
        .flat_map(|r| r.plugins.iter().map(move |rp| (Some(r.id.as_str()), rp)));
    let global = routes.global_plugins.iter().map(|rp| (None, rp));
    of_routes.chain(global)
}

/// The TLS side of a configuration: a TLS client for each HTTPS upstream
/// (verifying against `apisix.ssl.ssl_trusted_certificate`), and the
/// acceptor for HTTPS listeners. An `ssls` entry that failed its checks on
/// reload keeps serving in the version `previous` had (APISIX keeps the
/// last good value of an item), so a bad rotation never takes a
/// certificate away.
fn tls_setup(
    config: &mut Config,
    previous: Option<&Gateway>,
    problems: &mut Vec<Problem>,
) -> Acceptor {
    let routes_file = match &config.main.etcd {
        Some(etcd) => format!("etcd {}", etcd.prefix),
        None => config.main.routes_file.display().to_string(),
    };
    let trusted = &config.main.ssl.trusted;
    let inline = config
        .routes
        .routes
        .iter()
        .filter_map(|r| r.upstream.as_ref());
    for upstream in config.routes.upstreams.iter().chain(inline) {
        let check = upstream.checks.as_ref().and_then(|c| c.active.tls.as_ref());
        for tls in upstream.tls.iter().chain(check) {
            if let Err(reason) = tls.prepare(trusted) {
                problems.push(Problem::Tls {
                    source: routes_file.clone(),
                    item: format!("upstream {:?}", upstream.id),
                    reason,
                });
            }
        }
    }
    let ssls = &mut config.routes.ssls;
    if let Some(previous) = previous {
        for id in &ssls.invalid_ids {
            let old = previous
                .config
                .routes
                .ssls
                .entries
                .iter()
                .find(|e| &e.id == id);
            if let Some(old) = old {
                log::warn!(
                    "ssls {id:?}: keeping the version served before (the new one is invalid)"
                );
                ssls.entries.push(Arc::clone(old));
            }
        }
    }
    ssls.acceptor(&config.main.ssl)
        .unwrap_or_else(|(id, reason)| {
            problems.push(Problem::Tls {
                source: routes_file,
                item: format!("ssls {id:?}"),
                reason,
            });
            Acceptor::new(crate::tls::SniTable::new(None), Vec::new())
        })
}

/// True when two plugin settings would start identical instances.
fn same_spec(a: &PluginSpec, b: &PluginSpec) -> bool {
    a.name == b.name
        && a.file == b.file
        && a.priority == b.priority
        && a.root_id == b.root_id
        && a.vm_config == b.vm_config
        && a.env == b.env
        && a.fuel_per_callback == b.fuel_per_callback
        && a.memory_limit == b.memory_limit
}
