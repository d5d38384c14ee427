//! tinygate: a small HTTP reverse proxy that reads APISIX's standalone
//! configuration and runs proxy-wasm plugins in the wasmi interpreter.
//!
//! `main` only wires things together: parse the command line, load and
//! check the configuration, bind the listeners, start the workers. See
//! docs/architecture.md for the layers and the map of modules.

mod balancer;
mod bench;
mod config;
mod etcd;
mod expr;
mod gateway;
mod health;
mod http;
#[cfg(test)]
mod layers;
mod live;
mod net;
mod ops;
mod order;
mod plugins;
mod proxy;
mod router;
mod runner;
mod serve;
mod tls;
mod upstream;
mod wasm;
mod worker;
mod yaml;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: tinygate [-c CONFIG] [-t]
       tinygate etcd put [-c CONFIG] FILE
       tinygate test [--format text|json|junit] FILE...

Serves HTTP as configured by CONFIG (default conf/config.yaml) and the
routes file next to it (apisix.yaml unless tinygate.routes_file says
otherwise), or the routes in etcd with config_provider: etcd. `etcd put`
loads an apisix.yaml into that etcd. `test` runs plugin test files
(see tinygate test --help).

options:
  -c, --config PATH   the config.yaml to use
  -t, --test          check the configuration and plugins, then exit:
                      0 and \"configuration ok\", or 1 and every problem
  -V, --version       print the version
  -h, --help          print this help

environment:
  RUST_LOG            log filter, e.g. warn or info,wasm=debug (default info)
";

/// What the command line asks for.
enum Command {
    Serve(PathBuf),
    Test(PathBuf),
    Version,
    Help,
}

fn main() -> ExitCode {
    // Start-up, -t, reloads, `tinygate test` and `bench-plugin` run plugin
    // code: on a thread with the plugin stack, not on the main thread,
    // whose stack is whatever `ulimit -s` says.
    match wasm::run_on_plugin_stack(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tinygate: cannot start the main thread: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("etcd") {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        return etcd::command(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("test") {
        return runner::command(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("bench-plugin") {
        return match bench::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tinygate bench-plugin: {e}");
                ExitCode::from(1)
            }
        };
    }
    let command = match parse_args(args.into_iter()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tinygate: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!(
                "tinygate {} (wasmi 2.0, proxy-wasm ABI 0.1.0 0.2.0 0.2.1)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Command::Test(path) => match check(&path) {
            Ok(()) => {
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                eprintln!("configuration test failed");
                ExitCode::from(1)
            }
        },
        Command::Serve(path) => match serve(&path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(problems) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                ExitCode::from(1)
            }
        },
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = PathBuf::from("conf/config.yaml");
    let mut test = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                config = args
                    .next()
                    .ok_or_else(|| format!("{arg} needs a path"))?
                    .into();
            }
            "-t" | "--test" => test = true,
            "-V" | "--version" => return Ok(Command::Version),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(if test {
        Command::Test(config)
    } else {
        Command::Serve(config)
    })
}

/// `-t`: load both files, compile and start every plugin, configure every
/// route's plugin conf.
fn check(path: &std::path::Path) -> Result<(), Vec<String>> {
    let mut config = config::load(path).map_err(|e| e.problems)?;
    etcd::load_for_check(&mut config).map_err(|e| e.problems)?;
    let gateway = gateway::Gateway::build(config, &wasm::Engine::new()).map_err(lines)?;
    gateway.check_plugins().map_err(lines)
}

fn serve(path: &std::path::Path) -> Result<(), Vec<String>> {
    let mut config = config::load(path).map_err(|e| e.problems)?;
    let etcd = etcd::load_for_serving(&mut config).map_err(|e| e.problems)?;
    // Before any plugin is compiled or worker started, so that nothing
    // tinygate runs ever had the chance to make memory executable.
    if config.main.deny_exec_memory {
        match ops::hardening::deny_exec_memory() {
            Ok(()) => log::info!("memory lock: no mapping can become executable (PR_SET_MDWE)"),
            Err(e) => log::warn!(
                "memory lock not taken: {e}; tinygate still never maps executable memory itself \
                 (set tinygate.deny_exec_memory: false to silence this)"
            ),
        }
    }
    // One engine replica per worker: no plugin call touches another
    // worker's engine state.
    let engine = wasm::Engine::with_replicas(config.main.workers);
    let gateway = gateway::Gateway::build(config, &engine).map_err(lines)?;
    // What `-t` and a reload check too: every plugin starts, and
    // configures for every route that uses it, or tinygate does not start.
    gateway.check_plugins().map_err(lines)?;
    let main = gateway.config.main.clone();
    let source = match &main.etcd {
        Some(etcd) => format!("etcd {}", etcd.prefix),
        None => main.routes_file.display().to_string(),
    };
    log::info!(
        "loaded {source} with {} routes and {} plugins",
        gateway.config.routes.routes.len(),
        gateway.plugins.len()
    );
    if let Some(addr) = main.demo_upstream {
        let bound = ops::demo::start(addr).map_err(|e| vec![e.to_string()])?;
        log::info!("demo upstream serving on {bound}");
    }
    ops::access_log::configure(&main.access_log).map_err(|e| vec![e.to_string()])?;
    if let Some(addr) = main.status_listen {
        let bound = ops::status::start(addr).map_err(|e| vec![e.to_string()])?;
        log::info!("status and metrics on http://{bound}/apisix/prometheus/metrics");
    }
    match net::fd_limit::raise_to_hard() {
        Ok(Some(n)) if n < main.limits.max_connections as u64 => log::warn!(
            "only {n} open files allowed (ulimit -Hn): fewer than max_connections ({}); \
             connections past it are refused by the kernel",
            main.limits.max_connections
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open files limit: {e}"),
    }
    let listen: Vec<serve::Endpoint> = (main.listen.iter())
        .map(|&a| (a, serve::Scheme::Http))
        .chain(main.ssl.listen.iter().map(|&a| (a, serve::Scheme::Https)))
        .collect();
    let (sockets, bound) =
        serve::bind_all(&listen, main.workers).map_err(|e| vec![e.to_string()])?;
    let live = live::Live::new(gateway, engine);
    live.follow_plugin_metrics();
    if let Some(watcher) = etcd {
        etcd::spawn(&live, watcher).map_err(|e| vec![e.to_string()])?;
    }
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let workers = serve::WorkerThread::maker(&live, &stop_rx);
    serve::spawn_workers(sockets, workers).map_err(|e| vec![e.to_string()])?;
    let signals = serve::signals::install().map_err(|e| vec![e.to_string()])?;
    let mut stdout = std::io::stdout().lock();
    for (addr, scheme) in &bound {
        match scheme {
            serve::Scheme::Http => writeln!(stdout, "listening on {addr}"),
            serve::Scheme::Https => writeln!(stdout, "listening on {addr} (https)"),
        }
        .ok();
    }
    let _ = stdout.flush();
    drop(stdout);
    log::info!("serving with {} workers", main.workers);
    serve::signals::run(signals, &live, &stop_tx, main.shutdown_grace)
        .map_err(|e| vec![e.to_string()])
}

/// A gateway's problems as the lines `main` prints.
fn lines(e: gateway::GatewayError) -> Vec<String> {
    config::ConfigError::from(e).problems
}
