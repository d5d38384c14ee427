//! What one worker thread owns besides its sockets: its plugin host (the
//! configuration it serves, plugin instances and what they ask for:
//! `plugins/`), whether the process is draining, and its counters and
//! access log buffer. Shared-nothing: nothing here is touched by another
//! thread, so the request path takes no lock. It knows nothing about
//! routes or HTTP.

use crate::gateway::Gateway;
use crate::live::Live;
use crate::net::Flag;
use crate::ops::access_log::{self, Record};
use crate::ops::metrics::Stats;
use crate::plugins::{Mode, Plugins};
use smol::channel::Receiver;
use smol::LocalExecutor;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// Access log bytes a worker gathers before writing them out.
const ACCESS_LOG_BUFFER: usize = 32 * 1024;

/// One worker thread's state.
pub struct Worker {
    plugins: Rc<Plugins>,
    /// Closed when the process starts draining.
    stop: Receiver<()>,
    /// Set when the process starts draining (the `stop` channel closes);
    /// what connections wait on, so that no request touches the channel
    /// every worker shares.
    drain: Flag,
    /// Access log lines not yet written out.
    access_buf: access_log::Buffer,
    /// This worker's counters for the status listener.
    stats: Arc<Mutex<Stats>>,
}

impl Worker {
    /// A worker whose plugin instances run on engine replica `replica` and
    /// meet the world as `mode` says.
    pub fn new(
        live: Arc<Live>,
        stop: Receiver<()>,
        executor: Rc<LocalExecutor<'static>>,
        replica: usize,
        mode: Mode,
    ) -> Rc<Worker> {
        let stats = crate::ops::metrics::register();
        let plugins = Plugins::new(
            live,
            Rc::clone(&executor),
            replica,
            Arc::clone(&stats),
            mode,
        );
        let worker = Rc::new(Worker {
            plugins,
            stop,
            drain: Flag::default(),
            access_buf: access_log::Buffer::register(),
            stats,
        });
        let w = Rc::clone(&worker);
        executor
            .spawn(async move {
                let _ = w.stop.recv().await;
                w.plugins.stop();
                w.drain.set();
            })
            .detach();
        worker
    }

    /// The configuration to serve the next request with.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.plugins.gateway()
    }

    /// This worker's plugin host.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// True once the process is draining: finish, don't take more.
    pub fn stopping(&self) -> bool {
        self.stop.is_closed()
    }

    /// Resolves when the process starts draining.
    pub async fn stopped(&self) {
        self.drain.wait().await;
    }

    /// Counts one finished request in the metrics and writes it to the
    /// access log, if that is on.
    pub fn record_request(&self, gateway: &Gateway, record: &Record) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(record);
        let main = &gateway.config.main;
        if main.access_log == access_log::Target::Off {
            return;
        }
        self.access_buf
            .append(record, main.access_log_format, ACCESS_LOG_BUFFER);
    }

    /// Writes out buffered access log lines.
    pub fn flush_access_log(&self) {
        self.access_buf.flush();
    }
}
