//! `mock-upstream`: the e2e suite's mock upstream as a program, for the kind cluster
//! (test-harness/kind/), where it stands in for svc-trading-api, svc-wallet and
//! svc-risk-control. Same answers, header steering and control API as the in-process mock
//! (see `src/mock.rs`).
//!
//! ```text
//! mock-upstream --name svc-wallet [--listen 127.0.0.1:8080] [--control 127.0.0.1:9090]
//! ```
//! Both default to loopback; in a pod `--listen 0.0.0.0:8080` is needed because the Istio
//! sidecar forwards inbound traffic to the pod IP, while the control port stays on loopback
//! (reached by `kubectl port-forward`, never through the mesh). Runs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use envoy_harness::{Error, MockAddresses, MockService, MockUpstream, Result};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock-upstream: {error}");
            ExitCode::FAILURE
        }
    }
}

fn address(flag: &str, value: &str) -> Result<SocketAddr> {
    value
        .parse()
        .map_err(|_| Error::new(format!("{flag} {value:?} is not an address:port")))
}

fn run() -> Result<()> {
    let mut name = None;
    let mut addresses = MockAddresses {
        listen: address("--listen", "127.0.0.1:8080")?,
        control: address("--control", "127.0.0.1:9090")?,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| Error::new(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--name" => name = Some(value),
            "--listen" => addresses.listen = address(&flag, &value)?,
            "--control" => addresses.control = address(&flag, &value)?,
            other => return Err(Error::new(format!("unknown flag {other}"))),
        }
    }
    let name =
        name.ok_or_else(|| Error::new("--name is required (the service it stands in for)"))?;
    let mock = MockUpstream::start_on(&name, &MockService::new(), addresses)?;
    println!(
        "mock-upstream {name}: HTTP on {}, control API on {}",
        addresses.listen, addresses.control
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
        Ok::<_, Error>(())
    })?;
    drop(mock);
    Ok(())
}
