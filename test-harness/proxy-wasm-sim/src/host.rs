//! `Host`: one VM + one plugin (root context), driven the way Envoy drives it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Instance, Store, WasmParams, WasmResults};

use crate::abi;
use crate::abi::metrics::MetricValue;
use crate::engine::load_module;
use crate::error::{SimError, Status};
use crate::header_map::HeaderMap;
use crate::properties::PropertyValue;
use crate::shared_data::SharedData;
use crate::state::{
    Callback, CalloutResponse, Deferred, ForeignFunction, HostState, PendingLocalReply,
    StreamState, VirtualClock,
};
use crate::types::{
    Action, HttpCall, LocalReply, LogEntry, LogLevel, MetricKind, StreamId, TeardownOrder,
};

/// 2026-01-01T00:00:00Z: the default virtual wall clock, so tests are reproducible.
const DEFAULT_START_SECS: u64 = 1_767_225_600;
/// Enough for any real filter callback (RSA verification included), small enough that an
/// infinite loop fails within seconds.
const DEFAULT_FUEL: u64 = 2_000_000_000;
/// Envoy's details for the reply of a stream whose VM failed.
const FAIL_STREAM_DETAILS: &str = "wasm_fail_stream";
const GRPC_UNAVAILABLE: i32 = 14;

fn next_host_uid() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn to_path(segments: &[&str]) -> Vec<String> {
    segments.iter().map(|s| (*s).to_string()).collect()
}

/// Configures a [`Host`]. Every setting has an Envoy-like default.
pub struct HostBuilder {
    wasm: PathBuf,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    clusters: Option<BTreeSet<String>>,
    properties: Vec<(Vec<String>, PropertyValue)>,
    shared: Option<SharedData>,
    time: SystemTime,
    foreign_functions: BTreeMap<String, ForeignFunction>,
    environment: Vec<(String, String)>,
    vm_id: String,
    plugin_name: Option<String>,
    root_id: String,
    source_address: String,
    destination_address: String,
    request_protocol: String,
    fuel: u64,
    seed: u64,
    log_level: LogLevel,
    teardown: TeardownOrder,
}

impl HostBuilder {
    /// Plugin configuration (readable by the plugin only during `on_configure`).
    pub fn plugin_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.plugin_config = config.into();
        self
    }

    /// VM configuration (readable any time).
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.vm_config = config.into();
        self
    }

    /// Declares the Envoy clusters; callouts to any other cluster get BAD_ARGUMENT.
    /// Without this, every cluster name is accepted.
    pub fn clusters(mut self, names: &[&str]) -> Self {
        self.clusters = Some(names.iter().map(|n| (*n).to_string()).collect());
        self
    }

    /// Overrides (or adds) a property for every context; sub-paths of a map resolve into it.
    pub fn property(mut self, path: &[&str], value: PropertyValue) -> Self {
        self.properties.push((to_path(path), value));
        self
    }

    /// Shares one shared-data/queue store between several Hosts (several worker VMs).
    pub fn shared_data(mut self, shared: SharedData) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Start of the virtual wall clock (default 2026-01-01T00:00:00Z).
    pub fn time(mut self, start: SystemTime) -> Self {
        self.time = start;
        self
    }

    /// Registers a host-side foreign function (`proxy_call_foreign_function`); unknown
    /// names answer NOT_FOUND like Envoy.
    pub fn foreign_function(
        mut self,
        name: &str,
        function: impl Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
    ) -> Self {
        self.foreign_functions
            .insert(name.to_string(), Arc::new(function));
        self
    }

    /// An environment variable visible through WASI `environ_get` (Envoy:
    /// `vm_config.environment_variables`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.environment.push((key.to_string(), value.to_string()));
        self
    }

    /// `vm_id` (shared data and queues are scoped per vm_id in Envoy).
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.to_string();
        self
    }

    /// `plugin_name` property (default: the wasm file stem).
    pub fn plugin_name(mut self, name: &str) -> Self {
        self.plugin_name = Some(name.to_string());
        self
    }

    /// `plugin_root_id` property (default empty → NOT_FOUND).
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.root_id = root_id.to_string();
        self
    }

    /// Default downstream address for new streams, "ip:port" (default 127.0.0.1:45000).
    pub fn source_address(mut self, address: &str) -> Self {
        self.source_address = address.to_string();
        self
    }

    /// Listener address, "ip:port" (default 127.0.0.1:8080).
    pub fn destination_address(mut self, address: &str) -> Self {
        self.destination_address = address.to_string();
        self
    }

    /// `request.protocol` (default "HTTP/1.1").
    pub fn request_protocol(mut self, protocol: &str) -> Self {
        self.request_protocol = protocol.to_string();
        self
    }

    /// Instruction budget per callback (fuel); exhausting it is a trap.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = fuel;
        self
    }

    /// Seed of WASI `random_get`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// What `proxy_get_log_level` reports (default Trace). All logs are captured anyway.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Order of `on_log` / `on_done` in [`Host::complete`] (default Envoy's log → done).
    pub fn teardown_order(mut self, order: TeardownOrder) -> Self {
        self.teardown = order;
        self
    }

    /// Instantiates the module, runs `_initialize`, creates the root context, then
    /// `on_vm_start` and `on_configure`. A false `on_configure` is not an error: see
    /// [`Host::configured`].
    pub fn build(self) -> Result<Host, SimError> {
        let module = load_module(&self.wasm)?;
        let linker = abi::linker(&module).map_err(|e| SimError::Instantiate(format!("{e:?}")))?;
        let plugin_name = self.plugin_name.unwrap_or_else(|| {
            self.wasm
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let state = HostState {
            host_uid: next_host_uid(),
            memory: None,
            allocator: None,
            allocator_calls: 0,
            injected_failures: Vec::new(),
            hidden_shared_data: Vec::new(),
            allocating: false,
            callback: Callback::None,
            current_context: 0,
            effective_context: None,
            root_id: 0,
            // Envoy: one per-VM counter starting at 1 for root and stream contexts.
            next_context_id: 1,
            vm_config: self.vm_config,
            plugin_config: self.plugin_config,
            streams: BTreeMap::new(),
            tick_period: None,
            next_tick_at: None,
            clock: VirtualClock {
                start: self.time,
                elapsed: Duration::ZERO,
            },
            callouts: BTreeMap::new(),
            last_callout_token: 0,
            clusters: self.clusters,
            callout_response: None,
            last_status: (0, Vec::new()),
            metrics: Default::default(),
            shared: self.shared.unwrap_or_default(),
            vm_id: self.vm_id,
            plugin_name,
            plugin_root_id: self.root_id,
            properties: self.properties,
            source_address: self.source_address,
            destination_address: self.destination_address,
            request_protocol: self.request_protocol,
            foreign_functions: self.foreign_functions,
            environment: self.environment,
            rng_state: self.seed,
            log_level: self.log_level,
            logs: Vec::new(),
            deferred: Vec::new(),
            panic_message: None,
            local_reply_requested: false,
        };
        let mut store = Store::new(module.engine(), state);
        store
            .set_fuel(self.fuel)
            .map_err(|e| SimError::Instantiate(e.to_string()))?;
        let instance = linker
            .instantiate(&mut store, &module)
            .map_err(|e| SimError::Instantiate(format!("{e:?}")))?;
        if instance
            .get_func(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
        {
            return Err(SimError::Instantiate(
                "missing or unknown Proxy-Wasm ABI version (no proxy_abi_version_0_2_1 export)"
                    .into(),
            ));
        }
        let memory = instance.get_memory(&mut store, "memory");
        let allocator = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .ok();
        store.data_mut().memory = memory;
        store.data_mut().allocator = allocator;

        let mut host = Host {
            store,
            instance,
            configured: false,
            fuel: self.fuel,
            failure: None,
            fuel_consumed: 0,
            vm_calls: 0,
            teardown: self.teardown,
            running_deferred: false,
        };
        host.initialize()?;
        Ok(host)
    }
}

/// One proxy-wasm VM running one plugin, with Envoy's host behaviour. See the crate docs.
///
/// `Debug` shows a summary (so `build().unwrap_err()` works in tests).
pub struct Host {
    store: Store<HostState>,
    instance: Instance,
    configured: bool,
    fuel: u64,
    failure: Option<String>,
    teardown: TeardownOrder,
    running_deferred: bool,
    /// Fuel the guest burnt in every VM call so far (see [`Host::guest_instructions`]).
    fuel_consumed: u64,
    /// VM calls made so far (see [`Host::vm_calls`]).
    vm_calls: u64,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.store.data();
        f.debug_struct("Host")
            .field("root_context_id", &state.root_id)
            .field("configured", &self.configured)
            .field("failure", &self.failure)
            .field("streams", &state.streams.len())
            .field("pending_http_calls", &state.callouts.len())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Starts configuring a Host for the module at `wasm`.
    pub fn builder(wasm: impl AsRef<Path>) -> HostBuilder {
        HostBuilder {
            wasm: wasm.as_ref().to_path_buf(),
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            clusters: None,
            properties: Vec::new(),
            shared: None,
            time: UNIX_EPOCH + Duration::from_secs(DEFAULT_START_SECS),
            foreign_functions: BTreeMap::new(),
            environment: Vec::new(),
            vm_id: String::new(),
            plugin_name: None,
            root_id: String::new(),
            source_address: "127.0.0.1:45000".into(),
            destination_address: "127.0.0.1:8080".into(),
            request_protocol: "HTTP/1.1".into(),
            fuel: DEFAULT_FUEL,
            seed: 0x5EED,
            log_level: LogLevel::Trace,
            teardown: TeardownOrder::default(),
        }
    }

    fn initialize(&mut self) -> Result<(), SimError> {
        let has =
            |host: &mut Host, name: &str| host.instance.get_func(&mut host.store, name).is_some();
        if has(self, "_initialize") {
            self.call::<(), ()>(Callback::Initialize, 0, "_initialize", ())?;
        } else if has(self, "_start") {
            self.call::<(), ()>(Callback::Initialize, 0, "_start", ())?;
        }
        let root = self.allocate_context_id();
        self.store.data_mut().root_id = root;
        self.call_if_exported::<(i32, i32), ()>(
            Callback::ContextCreate,
            root,
            "proxy_on_context_create",
            (root as i32, 0),
            (),
        )?;
        let vm_config_len = self.store.data().vm_config.len() as i32;
        let started: i32 = self.call_if_exported(
            Callback::VmStart,
            root,
            "proxy_on_vm_start",
            (root as i32, vm_config_len),
            1,
        )?;
        if started == 0 {
            return Err(SimError::Instantiate(
                "proxy_on_vm_start returned false".into(),
            ));
        }
        self.run_configure()?;
        Ok(())
    }

    fn run_configure(&mut self) -> Result<bool, SimError> {
        let root = self.root_context_id();
        let len = self.store.data().plugin_config.len() as i32;
        let ok: i32 = self.call_if_exported(
            Callback::Configure,
            root,
            "proxy_on_configure",
            (root as i32, len),
            1,
        )?;
        self.configured = ok != 0;
        self.run_deferred()?;
        Ok(self.configured)
    }

    fn allocate_context_id(&mut self) -> u32 {
        let state = self.store.data_mut();
        let id = state.next_context_id;
        state.next_context_id += 1;
        id
    }

    /// The root context id (1, like the first plugin of an Envoy VM).
    pub fn root_context_id(&self) -> u32 {
        self.store.data().root_id
    }

    /// What `on_configure` returned the last time it ran.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Runs `on_configure` again with a new plugin configuration (Envoy config update).
    pub fn reconfigure(&mut self, config: impl Into<Vec<u8>>) -> Result<bool, SimError> {
        self.ensure_alive()?;
        self.store.data_mut().plugin_config = config.into();
        self.run_configure()
    }

    /// The wasm instructions (wasmtime fuel: about one per instruction) the guest has
    /// executed in all VM calls since the host was built: a deterministic measure of the
    /// module's own work, unaffected by the machine's load. Host calls cost no fuel.
    pub fn guest_instructions(&self) -> u64 {
        self.fuel_consumed
    }

    /// Makes the next `times` calls of host function `name` (e.g.
    /// `"proxy_set_header_map_pairs"`) answer `status` (e.g. 2, BAD_ARGUMENT) without doing
    /// anything, to test a filter's error paths. Supported for the header-map and property
    /// calls: `proxy_{get,set}_header_map_pairs`, `proxy_get_header_map_value`,
    /// `proxy_{add,replace,remove}_header_map_value`, `proxy_{get,set}_property`.
    pub fn fail_host_call(&mut self, name: &str, status: u32, times: usize) {
        self.store
            .data_mut()
            .injected_failures
            .push((name.to_owned(), status, times));
    }

    /// Makes this VM's next `reads` reads of shared-data keys starting with `key_prefix`
    /// answer NOT_FOUND: the value another VM wrote is not visible yet. Envoy's workers run on
    /// their own threads, so a VM can read a key just before another VM writes it; this
    /// stages such interleavings deterministically.
    pub fn hide_shared_data(&mut self, key_prefix: &str, reads: usize) {
        self.store
            .data_mut()
            .hidden_shared_data
            .push((key_prefix.to_owned(), reads));
    }

    /// The calls into the module (VM entries: callbacks and `proxy_on_memory_allocate`
    /// when the host hands data over) since the host was built. On Envoy each one costs
    /// about 2,000 instructions of V8 entry and exit, whatever the guest then does.
    pub fn vm_calls(&self) -> u64 {
        self.vm_calls + self.store.data().allocator_calls
    }

    /// The trap message if the VM failed.
    pub fn failed(&self) -> Option<String> {
        self.failure.clone()
    }

    fn ensure_alive(&self) -> Result<(), SimError> {
        match &self.failure {
            Some(message) => Err(SimError::VmFailed(message.clone())),
            None => Ok(()),
        }
    }

    /// Calls a guest export as one Envoy VM call: fresh fuel, no effective context, trap
    /// → VM failed + FAIL_CLOSED reply on the stream in question.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: Callback,
        context: u32,
        export: &str,
        params: P,
    ) -> Result<R, SimError> {
        self.ensure_alive()?;
        let function = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, export)
            .map_err(|_| SimError::MissingExport(export.to_string()))?;
        {
            let state = self.store.data_mut();
            state.callback = callback;
            state.current_context = context;
            state.effective_context = None;
            state.panic_message = None;
            state.local_reply_requested = false;
        }
        self.store
            .set_fuel(self.fuel)
            .map_err(|e| SimError::Misuse(e.to_string()))?;
        self.vm_calls += 1;
        let result = function.call(&mut self.store, params);
        let left = self.store.get_fuel().unwrap_or(0);
        self.fuel_consumed += self.fuel.saturating_sub(left);
        let target = self.store.data().target_context();
        {
            let state = self.store.data_mut();
            state.callback = Callback::None;
            state.effective_context = None;
            state.allocating = false;
        }
        result.map_err(|error| {
            let panic_message = self.store.data_mut().panic_message.take();
            let trap = error.downcast_ref::<wasmtime::Trap>().copied();
            let message = match (trap, panic_message) {
                // A Rust panic: the SDK's hook logged the message, then `unreachable` ran.
                (Some(wasmtime::Trap::UnreachableCodeReached), Some(panic)) => panic,
                (Some(trap), Some(critical)) => format!("{trap} (last CRITICAL log: {critical})"),
                (Some(trap), None) => trap.to_string(),
                (None, _) => error.root_cause().to_string(),
            };
            self.fail(&[context, target], &message);
            SimError::Trap {
                callback: export.to_string(),
                message,
            }
        })
    }

    /// [`Host::call`] for a callback Envoy treats as optional: like proxy-wasm-cpp-host, a
    /// module that does not export it is simply not called, and the host goes on with
    /// `missing` (Continue for the header/body/trailer callbacks, `true` for `on_done`,
    /// `on_vm_start` and `on_configure`). Filters rely on this: `make wasm` drops the
    /// exports a filter does not use, so Envoy skips those VM calls on every request.
    fn call_if_exported<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: Callback,
        context: u32,
        export: &str,
        params: P,
        missing: R,
    ) -> Result<R, SimError> {
        self.ensure_alive()?;
        if self.instance.get_func(&mut self.store, export).is_none() {
            return Ok(missing);
        }
        self.call(callback, context, export, params)
    }

    /// Marks the VM failed; the affected streams get Envoy's FAIL_CLOSED 503.
    fn fail(&mut self, contexts: &[u32], message: &str) {
        self.failure = Some(message.to_string());
        let state = self.store.data_mut();
        state.deferred.clear();
        state.callout_response = None;
        state.log(LogLevel::Critical, format!("[sim] VM failed: {message}"));
        for id in contexts {
            if let Some(stream) = state.streams.get_mut(id) {
                fail_stream(stream);
            }
        }
    }

    fn stream_state(&self, stream: StreamId) -> Result<&StreamState, SimError> {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .ok_or_else(|| SimError::Misuse(format!("unknown stream {}", stream.0)))
    }

    fn stream_state_mut(&mut self, stream: StreamId) -> Result<&mut StreamState, SimError> {
        match self.store.data_mut().streams.get_mut(&stream.0) {
            Some(state) if state.completed => Err(SimError::Misuse(format!(
                "stream {} is already complete",
                stream.0
            ))),
            Some(state) => Ok(state),
            None => Err(SimError::Misuse(format!("unknown stream {}", stream.0))),
        }
    }

    /// On a failed VM, Envoy (FAIL_CLOSED) answers every stream with a 503.
    fn check_vm_for_stream(&mut self, stream: StreamId) -> Result<(), SimError> {
        if let Some(message) = self.failure.clone() {
            if let Some(state) = self.store.data_mut().streams.get_mut(&stream.0) {
                fail_stream(state);
            }
            return Err(SimError::VmFailed(message));
        }
        Ok(())
    }

    /// A new HTTP stream; its context is created at its first callback.
    pub fn new_stream(&mut self) -> StreamId {
        let id = self.allocate_context_id();
        let now = self.store.data().clock.now();
        self.store
            .data_mut()
            .streams
            .insert(id, StreamState::new(now));
        StreamId(id)
    }

    /// Like [`Host::new_stream`] with a specific downstream address ("ip:port").
    pub fn new_stream_from(&mut self, source_address: &str) -> StreamId {
        let stream = self.new_stream();
        if let Some(state) = self.store.data_mut().streams.get_mut(&stream.0) {
            state.source_address = Some(source_address.to_string());
        }
        stream
    }

    /// Overrides a property for one stream only.
    pub fn set_stream_property(
        &mut self,
        stream: StreamId,
        path: &[&str],
        value: PropertyValue,
    ) -> Result<(), SimError> {
        self.stream_state_mut(stream)?
            .property_overrides
            .push((to_path(path), value));
        Ok(())
    }

    fn ensure_context(&mut self, stream: StreamId) -> Result<(), SimError> {
        if self.stream_state(stream)?.context_created {
            return Ok(());
        }
        self.stream_state_mut(stream)?.context_created = true;
        let root = self.root_context_id() as i32;
        self.call_if_exported::<(i32, i32), ()>(
            Callback::ContextCreate,
            stream.0,
            "proxy_on_context_create",
            (stream.0 as i32, root),
            (),
        )
    }

    /// Whether `send_local_response` was called during the callback that just ran (Envoy
    /// then forces the callback's result to Stop).
    fn take_local_reply_request(&mut self) -> bool {
        std::mem::take(&mut self.store.data_mut().local_reply_requested)
    }

    fn finish_headers_callback(
        &mut self,
        stream: StreamId,
        request: bool,
        raw_action: i32,
    ) -> Result<Action, SimError> {
        let forced_stop = self.take_local_reply_request();
        let direction = self.stream_state_mut(stream)?.direction_mut(request);
        if raw_action == 0 && !forced_stop {
            direction.headers_current = false;
            Ok(Action::Continue)
        } else {
            direction.paused_at_headers = true;
            Ok(Action::Pause)
        }
    }

    /// Request headers arrive (`proxy_on_request_headers`). Names are lower-cased.
    pub fn request_headers(
        &mut self,
        stream: StreamId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
            .collect();
        self.request_headers_bytes(stream, headers, end_of_stream)
    }

    /// Request headers with raw (possibly non-UTF-8) values.
    pub fn request_headers_bytes(
        &mut self,
        stream: StreamId,
        headers: Vec<(String, Vec<u8>)>,
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        self.headers_arrive(stream, true, headers, end_of_stream)
    }

    /// Response headers arrive from the upstream (`proxy_on_response_headers`).
    pub fn response_headers(
        &mut self,
        stream: StreamId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
            .collect();
        self.response_headers_bytes(stream, headers, end_of_stream)
    }

    /// Response headers with raw (possibly non-UTF-8) values.
    pub fn response_headers_bytes(
        &mut self,
        stream: StreamId,
        headers: Vec<(String, Vec<u8>)>,
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        self.headers_arrive(stream, false, headers, end_of_stream)
    }

    fn headers_arrive(
        &mut self,
        stream: StreamId,
        request: bool,
        headers: Vec<(String, Vec<u8>)>,
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        self.check_vm_for_stream(stream)?;
        let state = self.stream_state_mut(stream)?;
        if !request && state.local_reply.is_some() {
            return Err(SimError::Misuse(format!(
                "stream {} was answered by a local reply; no upstream response follows",
                stream.0
            )));
        }
        if state.closed {
            return Err(SimError::Misuse(format!(
                "stream {} was reset by the plugin",
                stream.0
            )));
        }
        let direction = state.direction_mut(request);
        if direction.headers_seen {
            return Err(SimError::Misuse(format!(
                "headers already sent on stream {}",
                stream.0
            )));
        }
        direction.headers = HeaderMap::from_pairs(headers);
        direction.headers_seen = true;
        direction.ended = end_of_stream;
        direction.headers_current = true;
        let count = direction.headers.len() as i32;
        self.ensure_context(stream)?;
        let (callback, export) = if request {
            (Callback::RequestHeaders, "proxy_on_request_headers")
        } else {
            (Callback::ResponseHeaders, "proxy_on_response_headers")
        };
        let raw: i32 = self.call_if_exported(
            callback,
            stream.0,
            export,
            (stream.0 as i32, count, i32::from(end_of_stream)),
            0,
        )?;
        let action = self.finish_headers_callback(stream, request, raw)?;
        self.run_deferred()?;
        Ok(action)
    }

    /// A request body chunk (`proxy_on_request_body` with the cumulative buffered size).
    /// Held back (not shown to the plugin) while the stream is paused at its headers.
    pub fn request_body(
        &mut self,
        stream: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        self.body_arrives(stream, true, chunk, end_of_stream)
    }

    /// A response body chunk (`proxy_on_response_body`).
    pub fn response_body(
        &mut self,
        stream: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        self.body_arrives(stream, false, chunk, end_of_stream)
    }

    fn body_arrives(
        &mut self,
        stream: StreamId,
        request: bool,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        self.check_vm_for_stream(stream)?;
        let state = self.stream_state_mut(stream)?;
        let answered = state.local_reply.is_some() || state.closed;
        let direction = state.direction_mut(request);
        if !direction.headers_seen {
            return Err(SimError::Misuse(format!(
                "body before headers on stream {}",
                stream.0
            )));
        }
        if direction.ended {
            return Err(SimError::Misuse(format!(
                "body after end_of_stream on stream {}",
                stream.0
            )));
        }
        if answered {
            // The stream is over for Envoy (local reply sent or reset): data is dropped.
            direction.ended = end_of_stream;
            return Ok(Action::Pause);
        }
        if direction.paused_at_headers {
            // StopAllIteration: Envoy buffers the data without calling the filter.
            direction.held_body.extend_from_slice(chunk);
            direction.held_end = end_of_stream;
            direction.ended = end_of_stream;
            return Ok(Action::Pause);
        }
        let action = self.deliver_body(stream, request, chunk.to_vec(), end_of_stream)?;
        self.run_deferred()?;
        Ok(action)
    }

    fn deliver_body(
        &mut self,
        stream: StreamId,
        request: bool,
        chunk: Vec<u8>,
        end_of_stream: bool,
    ) -> Result<Action, SimError> {
        let direction = self.stream_state_mut(stream)?.direction_mut(request);
        direction.body.extend_from_slice(&chunk);
        // Held data delivered on resume: the stream may already have ended (trailers).
        direction.ended |= end_of_stream;
        direction.body_current = true;
        let size = direction.body.len() as i32;
        let (callback, export) = if request {
            (Callback::RequestBody, "proxy_on_request_body")
        } else {
            (Callback::ResponseBody, "proxy_on_response_body")
        };
        let raw: i32 = self.call_if_exported(
            callback,
            stream.0,
            export,
            (stream.0 as i32, size, i32::from(end_of_stream)),
            0,
        )?;
        let forced_stop = self.take_local_reply_request();
        let direction = self.stream_state_mut(stream)?.direction_mut(request);
        if raw == 0 && !forced_stop {
            let body = std::mem::take(&mut direction.body);
            direction.forwarded_body.extend_from_slice(&body);
            direction.body_current = false;
            Ok(Action::Continue)
        } else {
            // StopIterationAndBuffer: the next chunk's size is cumulative.
            Ok(Action::Pause)
        }
    }

    /// Request trailers (`proxy_on_request_trailers`); ends the request.
    pub fn request_trailers(
        &mut self,
        stream: StreamId,
        trailers: &[(&str, &str)],
    ) -> Result<Action, SimError> {
        self.trailers_arrive(stream, true, trailers)
    }

    /// Response trailers (`proxy_on_response_trailers`); ends the response.
    pub fn response_trailers(
        &mut self,
        stream: StreamId,
        trailers: &[(&str, &str)],
    ) -> Result<Action, SimError> {
        self.trailers_arrive(stream, false, trailers)
    }

    fn trailers_arrive(
        &mut self,
        stream: StreamId,
        request: bool,
        trailers: &[(&str, &str)],
    ) -> Result<Action, SimError> {
        self.check_vm_for_stream(stream)?;
        let state = self.stream_state_mut(stream)?;
        let answered = state.local_reply.is_some() || state.closed;
        let direction = state.direction_mut(request);
        if !direction.headers_seen || direction.ended {
            return Err(SimError::Misuse(format!(
                "trailers without an open body on stream {}",
                stream.0
            )));
        }
        direction.trailers = HeaderMap::from_pairs(trailers.iter().copied());
        direction.ended = true;
        if answered {
            return Ok(Action::Pause);
        }
        if direction.paused_at_headers {
            // Held back with the body until the plugin resumes the stream.
            direction.held_trailers = true;
            return Ok(Action::Pause);
        }
        let action = self.deliver_trailers(stream, request)?;
        self.run_deferred()?;
        Ok(action)
    }

    fn deliver_trailers(&mut self, stream: StreamId, request: bool) -> Result<Action, SimError> {
        let direction = self.stream_state_mut(stream)?.direction_mut(request);
        direction.trailers_current = true;
        let count = direction.trailers.len() as i32;
        let (callback, export) = if request {
            (Callback::RequestTrailers, "proxy_on_request_trailers")
        } else {
            (Callback::ResponseTrailers, "proxy_on_response_trailers")
        };
        let raw: i32 =
            self.call_if_exported(callback, stream.0, export, (stream.0 as i32, count), 0)?;
        let forced_stop = self.take_local_reply_request();
        let direction = self.stream_state_mut(stream)?.direction_mut(request);
        Ok(if raw == 0 && !forced_stop {
            direction.trailers_current = false;
            Action::Continue
        } else {
            Action::Pause
        })
    }

    /// Ends the stream like Envoy: `on_log`, `on_done`, `on_delete` (order configurable).
    pub fn complete(&mut self, stream: StreamId) -> Result<(), SimError> {
        self.ensure_alive()?;
        self.stream_state_mut(stream)?;
        // Envoy creates the context even for a stream that never reached the filter.
        self.ensure_context(stream)?;
        let id = stream.0 as i32;
        let log = |host: &mut Host| {
            host.call_if_exported::<i32, ()>(Callback::Log, stream.0, "proxy_on_log", id, ())
        };
        let done = |host: &mut Host| {
            host.call_if_exported::<i32, i32>(Callback::Done, stream.0, "proxy_on_done", id, 1)
                .map(|_| ())
        };
        match self.teardown {
            TeardownOrder::LogDoneDelete => {
                log(self)?;
                done(self)?;
            }
            TeardownOrder::DoneLogDelete => {
                done(self)?;
                log(self)?;
            }
        }
        self.call_if_exported::<i32, ()>(Callback::Delete, stream.0, "proxy_on_delete", id, ())?;
        if let Some(state) = self.store.data_mut().streams.get_mut(&stream.0) {
            state.completed = true;
            state.deleted = true;
        }
        self.run_deferred()
    }

    /// Runs Envoy's after-VM-call actions (continue, reset, local reply) and queue
    /// notifications until none are left. Never re-entrant.
    fn run_deferred(&mut self) -> Result<(), SimError> {
        if self.running_deferred {
            return Ok(());
        }
        self.running_deferred = true;
        let result = self.run_deferred_loop();
        self.running_deferred = false;
        result
    }

    fn run_deferred_loop(&mut self) -> Result<(), SimError> {
        // Bounded: a plugin that re-triggers work forever is a bug worth reporting.
        for _ in 0..10_000 {
            let state = self.store.data_mut();
            if !state.deferred.is_empty() {
                let next = state.deferred.remove(0);
                match next {
                    Deferred::Continue { stream, request } => {
                        self.resume(StreamId(stream), request)?
                    }
                    Deferred::Close { stream } => {
                        if let Some(state) = self.store.data_mut().streams.get_mut(&stream) {
                            state.closed = true;
                        }
                    }
                    Deferred::LocalReply { stream, reply } => {
                        self.send_local_reply(StreamId(stream), reply)?
                    }
                }
                continue;
            }
            let owner = state.host_uid;
            let ready = state.shared.with(|store| store.take_ready(owner));
            if ready.is_empty() {
                return Ok(());
            }
            let root = self.root_context_id();
            for queue in ready {
                self.call_if_exported::<(i32, i32), ()>(
                    Callback::QueueReady,
                    root,
                    "proxy_on_queue_ready",
                    (root as i32, queue as i32),
                    (),
                )?;
            }
        }
        Err(SimError::Misuse(
            "deferred actions keep re-triggering (more than 10000)".into(),
        ))
    }

    fn resume(&mut self, stream: StreamId, request: bool) -> Result<(), SimError> {
        let Some(state) = self.store.data_mut().streams.get_mut(&stream.0) else {
            return Ok(());
        };
        if state.completed || state.local_reply.is_some() {
            return Ok(());
        }
        let direction = state.direction_mut(request);
        direction.resumed = true;
        if direction.paused_at_headers {
            direction.paused_at_headers = false;
            direction.headers_current = false;
            // Data Envoy held back while the filter was stopped reaches it now.
            let held = std::mem::take(&mut direction.held_body);
            let end = std::mem::take(&mut direction.held_end);
            let trailers = std::mem::take(&mut direction.held_trailers);
            if !held.is_empty() || end {
                self.deliver_body(stream, request, held, end)?;
            }
            if trailers {
                self.deliver_trailers(stream, request)?;
            }
        } else if direction.body_current {
            let body = std::mem::take(&mut direction.body);
            direction.forwarded_body.extend_from_slice(&body);
            direction.body_current = false;
        }
        Ok(())
    }

    fn send_local_reply(
        &mut self,
        stream: StreamId,
        reply: PendingLocalReply,
    ) -> Result<(), SimError> {
        let Some(state) = self.store.data_mut().streams.get_mut(&stream.0) else {
            return Ok(());
        };
        if state.completed || state.local_reply.is_some() {
            return Ok(());
        }
        let is_grpc = state
            .request
            .headers
            .first("content-type")
            .is_some_and(|v| v.starts_with(b"application/grpc"));
        let (headers, body) = local_reply_shape(&reply, is_grpc);
        let grpc_status = (reply.grpc_status >= 0).then_some(reply.grpc_status);
        if state.response.headers_seen {
            // The upstream response already started: Envoy sends the reply directly,
            // without running the encoder filters (this plugin) again.
            state.response.headers = headers.clone();
            state.response.forwarded_body = body.clone();
            state.local_reply = Some(LocalReply {
                status: status_of(&headers).unwrap_or(reply.status),
                body,
                headers: headers.to_string_pairs(),
                grpc_status,
                details: reply.details,
            });
            return Ok(());
        }
        // Through the filter chain: the plugin's own response callbacks see the reply.
        state.local_reply_in_flight = true;
        state.response = Default::default();
        state.response.headers = headers;
        state.response.headers_seen = true;
        state.response.headers_current = true;
        state.response.ended = body.is_empty();
        let count = state.response.headers.len() as i32;
        let end = i32::from(body.is_empty());
        let outcome = self
            .call_if_exported::<(i32, i32, i32), i32>(
                Callback::ResponseHeaders,
                stream.0,
                "proxy_on_response_headers",
                (stream.0 as i32, count, end),
                0,
            )
            .and_then(|raw| self.finish_headers_callback(stream, false, raw))
            .and_then(|_| {
                if body.is_empty() {
                    Ok(Action::Continue)
                } else {
                    self.deliver_body(stream, false, body, true)
                }
            });
        if let Some(state) = self.store.data_mut().streams.get_mut(&stream.0) {
            state.local_reply_in_flight = false;
            if outcome.is_ok() {
                let response = &mut state.response;
                let mut final_body = std::mem::take(&mut response.forwarded_body);
                final_body.extend_from_slice(&response.body);
                response.forwarded_body = final_body.clone();
                state.local_reply = Some(LocalReply {
                    status: status_of(&state.response.headers).unwrap_or(reply.status),
                    body: final_body,
                    headers: state.response.headers.to_string_pairs(),
                    grpc_status,
                    details: reply.details,
                });
            }
        }
        outcome.map(|_| ())
    }

    // ---------------------------------------------------------------- callouts

    /// Pending HTTP callouts, oldest first.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.store
            .data()
            .callouts
            .values()
            .map(|c| c.call.clone())
            .collect()
    }

    /// Delivers a callout response (headers incl. `:status`) to the plugin
    /// (`proxy_on_http_call_response` on the root context, like Envoy).
    pub fn respond_http_call(
        &mut self,
        token: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), SimError> {
        self.ensure_alive()?;
        if self.store.data_mut().callouts.remove(&token).is_none() {
            return Err(SimError::Misuse(format!(
                "no pending HTTP callout with token {token}"
            )));
        }
        let response = CalloutResponse {
            headers: HeaderMap::from_pairs(headers.iter().copied()),
            body: body.to_vec(),
            trailers: HeaderMap::new(),
        };
        self.deliver_callout(token, Some(response))
    }

    /// Fails a callout like a reset / connection failure: `(0, 0, 0)` sizes and
    /// `proxy_get_status` = (11, "reset").
    pub fn fail_http_call(&mut self, token: u32) -> Result<(), SimError> {
        self.ensure_alive()?;
        if self.store.data_mut().callouts.remove(&token).is_none() {
            return Err(SimError::Misuse(format!(
                "no pending HTTP callout with token {token}"
            )));
        }
        self.deliver_callout(token, None)
    }

    fn deliver_callout(
        &mut self,
        token: u32,
        response: Option<CalloutResponse>,
    ) -> Result<(), SimError> {
        let root = self.root_context_id();
        let sizes = match &response {
            Some(r) => (
                r.headers.len() as i32,
                r.body.len() as i32,
                r.trailers.len() as i32,
            ),
            None => (0, 0, 0),
        };
        {
            let state = self.store.data_mut();
            state.last_status = if response.is_some() {
                (0, Vec::new())
            } else {
                (11, b"reset".to_vec())
            };
            state.callout_response = response;
        }
        let result = self.call_if_exported::<(i32, i32, i32, i32, i32), ()>(
            Callback::HttpCallResponse,
            root,
            "proxy_on_http_call_response",
            (root as i32, token as i32, sizes.0, sizes.1, sizes.2),
            (),
        );
        self.store.data_mut().callout_response = None;
        // The originating stream is already stopped; nothing to force here.
        self.take_local_reply_request();
        result?;
        self.run_deferred()
    }

    // ---------------------------------------------------------------- time

    /// The virtual wall clock now.
    pub fn now(&self) -> SystemTime {
        self.store.data().clock.now()
    }

    /// The tick period the plugin set, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick_period
    }

    /// Moves the virtual clock forward, firing every due tick and callout timeout in time
    /// order. A timed-out callout is delivered the way Envoy's async client reports it: a
    /// 504 response with body "upstream request timeout".
    pub fn advance(&mut self, by: Duration) -> Result<(), SimError> {
        self.ensure_alive()?;
        let target = self.store.data().clock.elapsed + by;
        loop {
            let state = self.store.data();
            let tick = state.next_tick_at.filter(|at| *at <= target);
            let timeout = state
                .callouts
                .iter()
                .filter_map(|(token, c)| c.deadline.filter(|d| *d <= target).map(|d| (d, *token)))
                .min();
            let fire_tick = match (tick, timeout) {
                (None, None) => break,
                (Some(t), Some((d, _))) => t <= d,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if fire_tick {
                let at = tick.unwrap_or(target);
                self.store.data_mut().clock.elapsed = at;
                let root = self.root_context_id();
                self.call_if_exported::<i32, ()>(
                    Callback::Tick,
                    root,
                    "proxy_on_tick",
                    root as i32,
                    (),
                )?;
                let state = self.store.data_mut();
                if let (Some(period), Some(next)) = (state.tick_period, state.next_tick_at) {
                    if next <= at {
                        state.next_tick_at = Some(at + period);
                    }
                }
                self.run_deferred()?;
            } else if let Some((at, token)) = timeout {
                self.store.data_mut().clock.elapsed = at;
                self.store.data_mut().callouts.remove(&token);
                let response = CalloutResponse {
                    headers: HeaderMap::from_pairs([
                        (":status", "504"),
                        ("content-type", "text/plain"),
                        ("content-length", "24"),
                    ]),
                    body: b"upstream request timeout".to_vec(),
                    trailers: HeaderMap::new(),
                };
                self.deliver_callout(token, Some(response))?;
            }
        }
        self.store.data_mut().clock.elapsed = target;
        Ok(())
    }

    // ---------------------------------------------------------------- inspection

    fn headers_of(&self, stream: StreamId, request: bool) -> Option<&HeaderMap> {
        self.store.data().streams.get(&stream.0).map(|s| {
            if request {
                &s.request.headers
            } else {
                &s.response.headers
            }
        })
    }

    /// First value of a request header, as the upstream would see it (after the plugin ran).
    pub fn request_header(&self, stream: StreamId, name: &str) -> Option<String> {
        self.request_header_bytes(stream, name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    pub fn request_header_bytes(&self, stream: StreamId, name: &str) -> Option<Vec<u8>> {
        self.headers_of(stream, true)?
            .first(name)
            .map(<[u8]>::to_vec)
    }

    /// Every value of a request header.
    pub fn request_header_values(&self, stream: StreamId, name: &str) -> Vec<String> {
        self.headers_of(stream, true)
            .map(|m| {
                m.all(name)
                    .into_iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All request headers after the plugin ran.
    pub fn request_headers_of(&self, stream: StreamId) -> Vec<(String, String)> {
        self.headers_of(stream, true)
            .map(HeaderMap::to_string_pairs)
            .unwrap_or_default()
    }

    /// First value of a response header (the upstream response, or the local reply).
    pub fn response_header(&self, stream: StreamId, name: &str) -> Option<String> {
        self.response_header_bytes(stream, name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    pub fn response_header_bytes(&self, stream: StreamId, name: &str) -> Option<Vec<u8>> {
        self.headers_of(stream, false)?
            .first(name)
            .map(<[u8]>::to_vec)
    }

    pub fn response_header_values(&self, stream: StreamId, name: &str) -> Vec<String> {
        self.headers_of(stream, false)
            .map(|m| {
                m.all(name)
                    .into_iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn response_headers_of(&self, stream: StreamId) -> Vec<(String, String)> {
        self.headers_of(stream, false)
            .map(HeaderMap::to_string_pairs)
            .unwrap_or_default()
    }

    /// Request trailers after the plugin ran.
    pub fn request_trailers_of(&self, stream: StreamId) -> Vec<(String, String)> {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .map(|s| s.request.trailers.to_string_pairs())
            .unwrap_or_default()
    }

    /// Response trailers after the plugin ran.
    pub fn response_trailers_of(&self, stream: StreamId) -> Vec<(String, String)> {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .map(|s| s.response.trailers.to_string_pairs())
            .unwrap_or_default()
    }

    /// Request body bytes that went past the plugin (to the upstream).
    pub fn forwarded_request_body(&self, stream: StreamId) -> Vec<u8> {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .map(|s| s.request.forwarded_body.clone())
            .unwrap_or_default()
    }

    /// Response body bytes that went past the plugin (to the client).
    pub fn forwarded_response_body(&self, stream: StreamId) -> Vec<u8> {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .map(|s| s.response.forwarded_body.clone())
            .unwrap_or_default()
    }

    /// The local reply the client received on this stream, if any.
    pub fn local_reply(&self, stream: StreamId) -> Option<LocalReply> {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .and_then(|s| s.local_reply.clone())
    }

    /// Whether the plugin called `continue_stream` (request or response) on this stream.
    pub fn stream_resumed(&self, stream: StreamId) -> bool {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .is_some_and(|s| s.request.resumed || s.response.resumed)
    }

    pub fn request_resumed(&self, stream: StreamId) -> bool {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .is_some_and(|s| s.request.resumed)
    }

    pub fn response_resumed(&self, stream: StreamId) -> bool {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .is_some_and(|s| s.response.resumed)
    }

    /// Whether the request is still stopped at its headers (paused, not resumed).
    pub fn request_paused(&self, stream: StreamId) -> bool {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .is_some_and(|s| s.request.paused_at_headers)
    }

    /// Whether the plugin reset the stream (`close_stream`).
    pub fn stream_closed(&self, stream: StreamId) -> bool {
        self.store
            .data()
            .streams
            .get(&stream.0)
            .is_some_and(|s| s.closed)
    }

    /// Every captured log line (plugin logs, stdout/stderr, and `[sim]` notes).
    pub fn logs(&self) -> Vec<LogEntry> {
        self.store.data().logs.clone()
    }

    /// Whether a line at `level` or more severe contains `needle`.
    pub fn has_log(&self, level: LogLevel, needle: &str) -> bool {
        self.store
            .data()
            .logs
            .iter()
            .any(|e| e.level >= level && e.message.contains(needle))
    }

    /// Forgets the captured logs (e.g. between phases of a test).
    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    pub fn counter(&self, name: &str) -> Option<u64> {
        match self.store.data().metrics.value(name, MetricKind::Counter)? {
            MetricValue::Counter(v) => Some(*v),
            _ => None,
        }
    }

    pub fn gauge(&self, name: &str) -> Option<i64> {
        match self.store.data().metrics.value(name, MetricKind::Gauge)? {
            MetricValue::Gauge(v) => Some(*v),
            _ => None,
        }
    }

    /// Recorded samples of a histogram.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        match self
            .store
            .data()
            .metrics
            .value(name, MetricKind::Histogram)?
        {
            MetricValue::Histogram(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Every metric: counters and gauges with their value, histograms with their sample count.
    pub fn metrics(&self) -> Vec<(String, MetricKind, i64)> {
        self.store.data().metrics.all()
    }

    /// The shared-data store of this Host (clone it into another Host's builder to share).
    pub fn shared_data(&self) -> SharedData {
        self.store.data().shared.clone()
    }

    pub fn shared_data_get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.data().shared.get(key)
    }

    /// Runs pending `on_queue_ready` notifications for queues this Host's plugin
    /// registered (e.g. after another Host enqueued into them).
    pub fn deliver_queue_notifications(&mut self) -> Result<(), SimError> {
        self.ensure_alive()?;
        self.run_deferred()
    }
}

fn status_of(headers: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.first(":status")?)
        .ok()?
        .parse()
        .ok()
}

/// HTTP status → gRPC status, as Envoy's `Grpc::Utility::httpToGrpcStatus`.
fn grpc_status_for_http(status: u32) -> i32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The reply Envoy builds in `Utility::sendLocalReply`.
fn local_reply_shape(reply: &PendingLocalReply, is_grpc: bool) -> (HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::new();
    if is_grpc {
        // gRPC clients get a trailers-only response.
        headers.add(":status", b"200");
        headers.add("content-type", b"application/grpc");
        let grpc = if reply.grpc_status >= 0 {
            reply.grpc_status
        } else {
            grpc_status_for_http(reply.status)
        };
        headers.add("grpc-status", grpc.to_string().as_bytes());
        if !reply.body.is_empty() {
            headers.add("grpc-message", &reply.body);
        }
        for (key, value) in &reply.headers {
            headers.add(key, value);
        }
        return (headers, Vec::new());
    }
    headers.add(":status", reply.status.to_string().as_bytes());
    for (key, value) in &reply.headers {
        headers.add(key, value);
    }
    if reply.body.is_empty() {
        headers.remove("content-length");
        headers.remove("content-type");
    } else {
        headers.replace("content-length", reply.body.len().to_string().as_bytes());
        if headers.first("content-type").is_none() {
            headers.add("content-type", b"text/plain");
        }
    }
    (headers, reply.body.clone())
}

/// Envoy's FAIL_CLOSED answer for a stream whose VM failed (once per stream).
fn fail_stream(stream: &mut StreamState) {
    if stream.local_reply.is_some() || stream.completed {
        return;
    }
    stream.local_reply = Some(LocalReply {
        status: 503,
        body: Vec::new(),
        headers: vec![(":status".into(), "503".into())],
        grpc_status: Some(GRPC_UNAVAILABLE),
        details: FAIL_STREAM_DETAILS.into(),
    });
}
