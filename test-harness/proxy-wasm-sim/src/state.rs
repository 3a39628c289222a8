//! Everything the host functions and the driver share: the `Store` data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wasmtime::{Memory, TypedFunc};

use crate::abi::metrics::Metrics;
use crate::error::Status;
use crate::header_map::HeaderMap;
use crate::properties::PropertyValue;
use crate::shared_data::SharedData;
use crate::types::{HttpCall, LocalReply, LogEntry, LogLevel};

/// A host-side implementation of a foreign function (`proxy_call_foreign_function`).
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// Which guest export is running; decides what maps/buffers are reachable and which
/// hostcalls are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callback {
    None,
    Initialize,
    ContextCreate,
    VmStart,
    Configure,
    Tick,
    QueueReady,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    HttpCallResponse,
    Log,
    Done,
    Delete,
}

/// Work Envoy queues during a VM call and runs after it returns (never re-entrant).
#[derive(Debug, Clone)]
pub(crate) enum Deferred {
    Continue {
        stream: u32,
        request: bool,
    },
    Close {
        stream: u32,
    },
    LocalReply {
        stream: u32,
        reply: PendingLocalReply,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct PendingLocalReply {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// -1 = none (Rust SDK default for plain HTTP replies).
    pub grpc_status: i32,
}

/// One direction (request or response) of a stream.
#[derive(Debug, Default)]
pub(crate) struct Direction {
    pub headers: HeaderMap,
    pub trailers: HeaderMap,
    /// Body bytes buffered at this filter (visible to the plugin as the body buffer).
    pub body: Vec<u8>,
    /// Body bytes that went past this filter (to the upstream / to the client).
    pub forwarded_body: Vec<u8>,
    pub headers_seen: bool,
    pub ended: bool,
    /// Envoy keeps a pointer to the header map only while it is "current": inside the
    /// headers callback and while the stream is stopped there.
    pub headers_current: bool,
    pub body_current: bool,
    pub trailers_current: bool,
    /// Stopped at the headers (StopAllIterationAndWatermark): later data is held back.
    pub paused_at_headers: bool,
    pub held_body: Vec<u8>,
    pub held_end: bool,
    pub held_trailers: bool,
    pub resumed: bool,
}

#[derive(Debug)]
pub(crate) struct StreamState {
    pub context_created: bool,
    pub deleted: bool,
    pub request: Direction,
    pub response: Direction,
    pub closed: bool,
    pub local_reply: Option<LocalReply>,
    /// A local reply is running through the plugin's response callbacks; Envoy guards
    /// against a second one.
    pub local_reply_in_flight: bool,
    /// `proxy_set_property` values (Envoy filter state `wasm.<path>`).
    pub filter_state: BTreeMap<Vec<String>, Vec<u8>>,
    pub property_overrides: Vec<(Vec<String>, PropertyValue)>,
    pub source_address: Option<String>,
    pub started_at: SystemTime,
    pub completed: bool,
}

impl StreamState {
    pub fn new(started_at: SystemTime) -> StreamState {
        StreamState {
            context_created: false,
            deleted: false,
            request: Direction::default(),
            response: Direction::default(),
            closed: false,
            local_reply: None,
            local_reply_in_flight: false,
            filter_state: BTreeMap::new(),
            property_overrides: Vec::new(),
            source_address: None,
            started_at,
            completed: false,
        }
    }

    pub fn direction_mut(&mut self, request: bool) -> &mut Direction {
        if request {
            &mut self.request
        } else {
            &mut self.response
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PendingCallout {
    pub call: HttpCall,
    /// Virtual-clock instant at which Envoy would time the call out.
    pub deadline: Option<Duration>,
}

/// The response being delivered to `proxy_on_http_call_response` (maps 6/7, buffer 4).
#[derive(Debug, Clone, Default)]
pub(crate) struct CalloutResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// Virtual clock: wall time = `start + elapsed`; monotonic time = `elapsed` (+1 s so it is
/// never zero).
#[derive(Debug, Clone, Copy)]
pub(crate) struct VirtualClock {
    pub start: SystemTime,
    pub elapsed: Duration,
}

impl VirtualClock {
    pub fn now(&self) -> SystemTime {
        self.start + self.elapsed
    }

    pub fn monotonic_nanos(&self) -> u64 {
        u64::try_from((self.elapsed + Duration::from_secs(1)).as_nanos()).unwrap_or(u64::MAX)
    }
}

pub(crate) struct HostState {
    /// Distinguishes Hosts sharing one `SharedData` (queue ownership).
    pub host_uid: u64,
    pub memory: Option<Memory>,
    pub allocator: Option<TypedFunc<i32, i32>>,
    /// Calls into `proxy_on_memory_allocate` (VM entries of their own on Envoy).
    pub allocator_calls: u64,
    /// Host calls a test asked to fail: name -> (status returned, calls left to fail).
    pub injected_failures: Vec<(String, u32, usize)>,
    /// Shared-data keys (by prefix) a test hid from this VM: prefix -> reads left.
    pub hidden_shared_data: Vec<(String, usize)>,
    /// Inside `proxy_on_memory_allocate` (called from a hostcall).
    pub allocating: bool,
    pub callback: Callback,
    pub current_context: u32,
    pub effective_context: Option<u32>,
    pub root_id: u32,
    pub next_context_id: u32,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub streams: BTreeMap<u32, StreamState>,
    pub tick_period: Option<Duration>,
    pub next_tick_at: Option<Duration>,
    pub clock: VirtualClock,
    pub callouts: BTreeMap<u32, PendingCallout>,
    pub last_callout_token: u32,
    pub clusters: Option<BTreeSet<String>>,
    pub callout_response: Option<CalloutResponse>,
    /// `proxy_get_status`: code and message of the last callout on the root context.
    pub last_status: (u32, Vec<u8>),
    pub metrics: Metrics,
    pub shared: SharedData,
    pub vm_id: String,
    pub plugin_name: String,
    pub plugin_root_id: String,
    pub properties: Vec<(Vec<String>, PropertyValue)>,
    pub source_address: String,
    pub destination_address: String,
    pub request_protocol: String,
    pub foreign_functions: BTreeMap<String, ForeignFunction>,
    pub environment: Vec<(String, String)>,
    pub rng_state: u64,
    pub log_level: LogLevel,
    pub logs: Vec<LogEntry>,
    pub deferred: Vec<Deferred>,
    /// The CRITICAL message the SDK panic hook logged during the running callback.
    pub panic_message: Option<String>,
    /// `proxy_send_local_response` was called during the running callback (Envoy then
    /// forces the callback's result to Stop).
    pub local_reply_requested: bool,
}

impl HostState {
    /// `contextOrEffectiveContext()`: the effective context if one was set and still
    /// exists, otherwise the context of the running callback.
    pub fn target_context(&self) -> u32 {
        match self.effective_context {
            Some(id) if self.context_exists(id) => id,
            _ => self.current_context,
        }
    }

    pub fn context_exists(&self, id: u32) -> bool {
        id == self.root_id
            || self
                .streams
                .get(&id)
                .is_some_and(|s| s.context_created && !s.deleted)
    }

    /// The stream the current hostcall acts on; `None` from a root context.
    pub fn target_stream(&self) -> Option<(u32, &StreamState)> {
        let id = self.target_context();
        self.streams.get(&id).map(|s| (id, s))
    }

    pub fn target_stream_mut(&mut self) -> Option<(u32, &mut StreamState)> {
        let id = self.target_context();
        self.streams.get_mut(&id).map(|s| (id, s))
    }

    pub fn log(&mut self, level: LogLevel, message: String) {
        log::debug!(target: "proxy_wasm_sim", "[{level:?}] {message}");
        if level == LogLevel::Critical {
            self.panic_message = Some(message.clone());
        }
        self.logs.push(LogEntry { level, message });
    }

    /// splitmix64: deterministic bytes for `random_get`.
    pub fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
