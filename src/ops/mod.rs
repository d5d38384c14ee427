//! Operating the gateway, beside the request path: metrics (their families
//! and help texts) and the status listener, the access log, the start-up
//! memory lock, giving memory back after a burst, and the built-in demo
//! upstream.
//!
//! Everything here is reached from above (workers count into `metrics`,
//! the request path fills an access-log `Record`, `main` starts the
//! listeners); nothing here reaches into the request path, routes or
//! plugin instances.

pub mod access_log;
pub mod demo;
pub mod families;
pub mod hardening;
pub mod memory;
pub mod metrics;
pub mod status;
