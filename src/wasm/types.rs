//! The proxy-wasm ABI's enums, mirroring the spec's "Types" tables
//! (`abi-versions/v0.2.1/README.md`), plus the few WASI errno values the
//! host returns.
//!
//! Owns the numeric values and their `TryFrom<u32>` conversions; an unknown
//! value converts to `Err(Status::BadArgument)`, as the spec asks. Knows
//! nothing about wasmi, memory or HTTP.

/// `proxy_status_t`: what every `env.proxy_*` host function returns.
#[allow(dead_code)] // mirrors the spec table; `Ok` is written as 0 by `abi::status`
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// `proxy_log_level_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    /// Clamps any value to a level: `proxy_log` must never fail on a bad
    /// level, because the Rust SDK panics on anything but `OK`.
    pub(crate) fn clamped(raw: u32) -> LogLevel {
        match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }

    /// The `log` crate level this maps to (`Critical` becomes `Error`).
    pub(crate) fn to_log(self) -> log::Level {
        match self {
            LogLevel::Trace => log::Level::Trace,
            LogLevel::Debug => log::Level::Debug,
            LogLevel::Info => log::Level::Info,
            LogLevel::Warn => log::Level::Warn,
            LogLevel::Error | LogLevel::Critical => log::Level::Error,
        }
    }

    /// The proxy-wasm level matching the host's current `log` filter, for
    /// `proxy_get_log_level`. `Off` reports `Critical`, the quietest level.
    pub(crate) fn from_filter(filter: log::LevelFilter) -> LogLevel {
        match filter {
            log::LevelFilter::Trace => LogLevel::Trace,
            log::LevelFilter::Debug => LogLevel::Debug,
            log::LevelFilter::Info => LogLevel::Info,
            log::LevelFilter::Warn => LogLevel::Warn,
            log::LevelFilter::Error => LogLevel::Error,
            log::LevelFilter::Off => LogLevel::Critical,
        }
    }
}

/// `proxy_map_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapType {
    HttpRequestHeaders = 0,
    HttpRequestTrailers = 1,
    HttpResponseHeaders = 2,
    HttpResponseTrailers = 3,
    GrpcCallInitialMetadata = 4,
    GrpcCallTrailingMetadata = 5,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

impl TryFrom<u32> for MapType {
    type Error = Status;
    fn try_from(raw: u32) -> Result<Self, Status> {
        Ok(match raw {
            0 => MapType::HttpRequestHeaders,
            1 => MapType::HttpRequestTrailers,
            2 => MapType::HttpResponseHeaders,
            3 => MapType::HttpResponseTrailers,
            4 => MapType::GrpcCallInitialMetadata,
            5 => MapType::GrpcCallTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// `proxy_buffer_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    DownstreamData = 2,
    UpstreamData = 3,
    HttpCallResponseBody = 4,
    GrpcCallMessage = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
    ForeignFunctionArguments = 8,
}

impl TryFrom<u32> for BufferType {
    type Error = Status;
    fn try_from(raw: u32) -> Result<Self, Status> {
        Ok(match raw {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcCallMessage,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::ForeignFunctionArguments,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// `proxy_stream_type_t` (0.2.0+).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamType {
    HttpRequest = 0,
    HttpResponse = 1,
    Downstream = 2,
    Upstream = 3,
}

impl TryFrom<u32> for StreamType {
    type Error = Status;
    fn try_from(raw: u32) -> Result<Self, Status> {
        Ok(match raw {
            0 => StreamType::HttpRequest,
            1 => StreamType::HttpResponse,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// `proxy_metric_type_t`; public because [`crate::wasm::metrics_snapshot`]
/// reports it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only ever goes up.
    Counter = 0,
    /// Goes up and down.
    Gauge = 1,
    /// Recorded samples; the snapshot reports their sum.
    Histogram = 2,
}

impl MetricKind {
    /// `TryFrom<u32>`, kept crate-private because `Status` is.
    pub(crate) fn from_raw(raw: u32) -> Result<Self, Status> {
        Ok(match raw {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// The ABI version a module declares with its `proxy_abi_version_*` export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum AbiVersion {
    V0_1_0,
    V0_2_0,
    V0_2_1,
}

impl AbiVersion {
    /// Marker export names, oldest first.
    pub(crate) const MARKERS: [(&'static str, AbiVersion); 3] = [
        ("proxy_abi_version_0_1_0", AbiVersion::V0_1_0),
        ("proxy_abi_version_0_2_0", AbiVersion::V0_2_0),
        ("proxy_abi_version_0_2_1", AbiVersion::V0_2_1),
    ];
}

/// `wasi_errno_t` values the host returns (WASI preview1 `errno`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) u32);

impl Errno {
    pub(crate) const SUCCESS: Errno = Errno(0);
    pub(crate) const BADF: Errno = Errno(8);
    pub(crate) const FAULT: Errno = Errno(21);
    pub(crate) const INVAL: Errno = Errno(28);
    pub(crate) const IO: Errno = Errno(29);
    pub(crate) const NOENT: Errno = Errno(44);
    pub(crate) const NOSYS: Errno = Errno(52);
    pub(crate) const NOTDIR: Errno = Errno(54);
    pub(crate) const NOTSUP: Errno = Errno(58);
}

impl From<Status> for Errno {
    /// Guest-memory helpers report `InvalidMemoryAccess`; WASI calls that
    /// `FAULT`.
    fn from(status: Status) -> Errno {
        match status {
            Status::InvalidMemoryAccess => Errno::FAULT,
            _ => Errno::INVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_reject_unknown_values() {
        assert_eq!(MapType::try_from(2), Ok(MapType::HttpResponseHeaders));
        assert_eq!(MapType::try_from(8), Err(Status::BadArgument));
        assert_eq!(BufferType::try_from(7), Ok(BufferType::PluginConfiguration));
        assert_eq!(BufferType::try_from(9), Err(Status::BadArgument));
        assert_eq!(StreamType::try_from(4), Err(Status::BadArgument));
        assert_eq!(MetricKind::from_raw(3), Err(Status::BadArgument));
        assert_eq!(Status::Unimplemented as u32, 12);
        assert_eq!(Status::InvalidMemoryAccess as u32, 6);
    }

    #[test]
    fn log_levels_clamp_instead_of_failing() {
        assert_eq!(LogLevel::clamped(0), LogLevel::Trace);
        assert_eq!(LogLevel::clamped(5), LogLevel::Critical);
        assert_eq!(LogLevel::clamped(u32::MAX), LogLevel::Critical);
        assert_eq!(LogLevel::Critical.to_log(), log::Level::Error);
        assert_eq!(
            LogLevel::from_filter(log::LevelFilter::Off),
            LogLevel::Critical
        );
    }
}
