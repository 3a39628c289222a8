//! Plain data types of the public API.

use std::time::Duration;

/// Identifies one HTTP stream (the proxy-wasm context id of its http context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

/// What a stream callback told Envoy to do with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Iteration continues (headers/body go to the next filter / upstream).
    Continue,
    /// Iteration stopped: the plugin paused, sent a local reply, or the callback never
    /// reached the plugin because the stream is paused or failed.
    Pause,
}

/// proxy-wasm log levels, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub(crate) fn from_abi(level: i32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    pub(crate) fn to_abi(self) -> u32 {
        match self {
            LogLevel::Trace => 0,
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
            LogLevel::Critical => 5,
        }
    }
}

/// One captured log line (from `proxy_log` or from WASI stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    pub message: String,
}

/// A local reply as the client sees it: after the plugin's own `on_response_headers` /
/// `on_response_body` ran on it (for replies sent from the request path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub grpc_status: Option<i32>,
    /// Envoy's response code details (`wasm_fail_stream` for a failed VM, the plugin's
    /// details otherwise, usually empty with the Rust SDK).
    pub details: String,
}

impl LocalReply {
    /// First value of a reply header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A pending HTTP callout (`proxy_http_call`), waiting for the test to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    /// The Envoy cluster name the plugin asked for.
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// Zero means "no timeout" (Envoy semantics).
    pub timeout: Duration,
}

impl HttpCall {
    /// First value of a callout request header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Kind of a plugin-defined metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Teardown order of `complete()`. Envoy's HTTP filter runs the access-log pass before
/// filter destruction (log → done → delete); the spec says done → log → delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeardownOrder {
    #[default]
    LogDoneDelete,
    DoneLogDelete,
}
