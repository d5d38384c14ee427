//! The network layer: each worker thread's reactor (epoll and timers),
//! non-blocking TCP sockets on it, a one-shot flag for its tasks,
//! timeouts around any I/O future, and the process's open-file limit.
//!
//! This is the bottom of tinygate's layers: it knows file descriptors,
//! sockets and deadlines, and nothing about HTTP, routes or plugins.
//! Everything above reaches the kernel through here (or through smol on
//! the main thread).

pub mod fd_limit;
pub mod flag;
mod reactor;
pub mod tcp;
mod timeout;

pub use flag::Flag;
pub use reactor::{block_on, prepare, Prepared, Timer};
pub use tcp::{TcpListener, TcpStream};
pub use timeout::with_timeout;
