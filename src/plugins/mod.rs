//! The plugin layer: everything between the proxy-wasm host (`wasm/`) and
//! the request path (`proxy/`) — running a route's plugins for a request
//! (`chain.rs`), performing the HTTP calls plugins make (`calls.rs`), and
//! when a root context that failed may run again (`restarts.rs`).

pub mod calls;
pub mod chain;
pub mod restarts;
