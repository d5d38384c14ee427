//! One loaded configuration, ready to serve: validated config, its route
//! table, and every wasm plugin compiled (once per worker engine replica).
//!
//! Building a `Gateway` is where config meets the wasm engine; it is also
//! what `tinygate -t` checks, by additionally starting every plugin and
//! configuring it with every route's conf. Workers share it through an
//! `Arc` and never mutate it.

use crate::config::{Config, ConfigError};
use crate::router::Router;
use crate::wasm::{file_content_id, Engine, Plugin, PluginSpec, PluginVm};
use std::sync::Arc;

/// A configuration ready to serve.
pub struct Gateway {
    pub config: Config,
    pub router: Router,
    /// Compiled plugins, indexed like `config.main.plugins`.
    pub plugins: Vec<Arc<Plugin>>,
}

impl Gateway {
    /// Compiles every plugin named in `config`.
    ///
    /// # Errors
    /// One problem per plugin that fails to load, naming plugin and file.
    pub fn build(config: Config, engine: &Engine) -> Result<Gateway, ConfigError> {
        Gateway::build_reusing(config, engine, None)
    }

    /// Like [`Gateway::build`], but a plugin whose settings and file are
    /// unchanged from `previous` keeps its compiled module (and so workers
    /// keep its running instances).
    ///
    /// # Errors
    /// One problem per plugin that fails to load, naming plugin and file.
    pub fn build_reusing(
        config: Config,
        engine: &Engine,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, ConfigError> {
        let mut plugins: Vec<Arc<Plugin>> = Vec::new();
        let mut problems = Vec::new();
        for spec in &config.main.plugins {
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
                Err(e) => problems.push(format!(
                    "{}: wasm.plugins {:?}: {e}",
                    config.main.config_file.display(),
                    spec.name
                )),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let router = Router::new(&config.routes.routes);
        Ok(Gateway {
            config,
            router,
            plugins,
        })
    }

    /// A gateway whose plugins (indexed like `config.main.plugins`) are
    /// loaded already: `tinygate test` loads them itself, to report a
    /// plugin that fails to load in its own file's terms.
    pub fn with_plugins(config: Config, plugins: Vec<Arc<Plugin>>) -> Gateway {
        let router = Router::new(&config.routes.routes);
        Gateway {
            config,
            router,
            plugins,
        }
    }

    /// Starts each plugin once and runs `proxy_on_vm_start` and
    /// `proxy_on_configure` for every route's plugin conf, as `-t` does.
    ///
    /// # Errors
    /// Every failure, naming route, plugin and hook.
    pub fn check_plugins(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let config_file = self.config.main.config_file.display();
        let mut vms: Vec<Option<PluginVm>> = self
            .plugins
            .iter()
            .map(|plugin| match PluginVm::start(Arc::clone(plugin)) {
                Ok(vm) => Some(vm),
                Err(fault) => {
                    problems.push(format!(
                        "{config_file}: wasm.plugins {:?}: {fault}",
                        plugin.name()
                    ));
                    None
                }
            })
            .collect();
        let routes_file = self.config.main.routes_file.display();
        for rp in &self.config.routes.global_plugins {
            let Some(vm) = vms[rp.plugin].as_mut() else {
                continue;
            };
            if let Err(fault) = vm.configure(rp.key, &rp.conf) {
                problems.push(format!(
                    "{routes_file}: global_rules plugins.{}: {fault}",
                    rp.name
                ));
            }
        }
        for route in &self.config.routes.routes {
            for rp in &route.plugins {
                let Some(vm) = vms[rp.plugin].as_mut() else {
                    continue;
                };
                if let Err(fault) = vm.configure(rp.key, &rp.conf) {
                    problems.push(format!(
                        "{routes_file}: route {:?} plugins.{}: {fault}",
                        route.id, rp.name
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
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
