//! The access log settings of `config.yaml` (`tinygate.access_log`,
//! `tinygate.access_log_format`), as values: what `ops::access_log` writes
//! and where. Only the types live here, so that the configuration depends
//! on nothing that operates the gateway.

use std::path::PathBuf;

/// Where access log lines go (`tinygate.access_log`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    #[default]
    Off,
    Stdout,
    File(PathBuf),
}

/// The line format (`tinygate.access_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// APISIX's default: nginx combined plus host and upstream fields.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}
