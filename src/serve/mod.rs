//! Serving, the top of the layers: listening sockets and worker threads
//! (`server.rs`, which knows no routes or plugins), what each worker
//! thread serves its connections with (`worker.rs`: the plugins' state
//! and the proxy's node connections), and the main thread's signals once
//! serving (`signals.rs`). `main` wires them; nothing else depends on
//! this module.

mod server;
pub mod signals;
mod worker;

pub use server::{bind_all, spawn_workers, Endpoint, Scheme, OPEN_CONNECTIONS};
pub use worker::WorkerThread;
