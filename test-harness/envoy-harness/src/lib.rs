//! Real Envoy on loopback, for tests, benchmarks and the local gateway.
//!
//! - [`EnvoyProcess`] starts the real Envoy binary (`$ENVOY_BIN`, installed by `make envoy`)
//!   with a YAML template whose `{{port:NAME}}`, `{{var:NAME}}` and `{{dir}}` placeholders
//!   it fills in, waits until the admin endpoint says `/ready`, and always stops it again.
//! - [`config`] builds the pieces our templates repeat: the wasm filter block for a `.wasm`
//!   in `dist/`, and the native filters tests put around it.
//! - [`MockUpstream`] is an HTTP/1.1 upstream that names itself, answers with the status a
//!   request asks for, leaks the headers a gateway must strip, and has a control port for
//!   fault rules (fail / reset / delay the next N requests) and per-method/path counts.
//! - [`ClosedPort`] is a loopback port that refuses every connection: an upstream that is
//!   down, without the race of a port that is merely unused.
//! - [`client`] is a deliberately small blocking HTTP/1.1 client: it returns the response
//!   exactly as it came off the wire (duplicate headers included), which is what a test of
//!   response headers must look at.
//!
//! Everything listens on 127.0.0.1 only.

pub mod client;
mod closed_port;
pub mod config;
mod envoy;
mod error;
pub mod local_gateway;
mod mock;
pub mod paths;

pub use closed_port::ClosedPort;
pub use envoy::{wait_until, EnvoyBuilder, EnvoyProcess};
pub use error::{Error, Result};
pub use mock::{Fault, FaultRule, MockAddresses, MockService, MockUpstream, RecordedRequest};
