//! `make run`: the local gateway. Real Envoy on 127.0.0.1:8080 (`GATEWAY_HTTP_PORT`
//! overrides the port) with security-headers in front of three mock upstreams, one per
//! service of DESIGN.md §1. Ctrl-C (or SIGTERM) stops Envoy and the mocks.
//!
//! First version: plain HTTP, and the Envoy config is written here. Later issues add TLS,
//! jwt-authz, rate limiting, and take the configuration from the manifests instead.

use std::process::ExitCode;
use std::time::Duration;

use envoy_harness::config::{self, WasmFilter};
use envoy_harness::{EnvoyProcess, Error, MockUpstream, Result};

const DEFAULT_HTTP_PORT: u16 = 8080;

/// Route prefix and the service behind it.
const SERVICES: &[(&str, &str)] = &[
    ("/api/v1/trade/", "svc-trading-api"),
    ("/api/v1/wallet/", "svc-wallet"),
    ("/api/v1/risk/", "svc-risk-control"),
];

const GATEWAY: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: {{port:admin}}}}
static_resources:
  listeners:
  - name: gateway
    address: {socket_address: {address: 127.0.0.1, port_value: {{var:HTTP_PORT}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          # Otherwise Envoy writes `server: envoy` after every filter, where security-headers
          # cannot remove it.
          server_header_transformation: PASS_THROUGH
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
          route_config:
            virtual_hosts:
            - name: gateway
              domains: ["*"]
              routes: {{var:ROUTES}}
          http_filters: {{var:FILTERS}}
  clusters: {{var:CLUSTERS}}
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("local-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let http_port = match std::env::var("GATEWAY_HTTP_PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| Error::new(format!("GATEWAY_HTTP_PORT={port:?} is not a port")))?,
        Err(_) => DEFAULT_HTTP_PORT,
    };

    let mocks = SERVICES
        .iter()
        .map(|(_, service)| MockUpstream::start(service))
        .collect::<Result<Vec<_>>>()?;
    let routes: Vec<_> = SERVICES
        .iter()
        .map(|(prefix, service)| {
            serde_json::json!({ "match": { "prefix": prefix }, "route": { "cluster": service } })
        })
        .collect();
    let clusters: Vec<_> = mocks
        .iter()
        .map(|mock| config::loopback_cluster(mock.name(), mock.port()))
        .collect();
    let filters = [
        WasmFilter::from_dist("security-headers", r#"{"preset":"api"}"#)?.to_value(),
        config::router(),
    ];

    let mut envoy = EnvoyProcess::builder(GATEWAY)
        .var("HTTP_PORT", http_port)
        .var("ROUTES", config::inline_list(&routes))
        .var("CLUSTERS", config::inline_list(&clusters))
        .var("FILTERS", config::inline_list(&filters))
        .start()
        .map_err(|error| {
            error.context(format!(
                "is port {http_port} free? (set GATEWAY_HTTP_PORT to use another one)"
            ))
        })?;

    println!("svc-gateway (local) is up; Ctrl-C stops it.");
    for ((prefix, service), mock) in SERVICES.iter().zip(&mocks) {
        println!(
            "  http://127.0.0.1:{http_port}{prefix}...  ->  {service} (mock on :{})",
            mock.port()
        );
    }
    println!("  admin:      http://127.0.0.1:{}/", envoy.admin_port());
    println!("  Envoy log:  {}", envoy.log_path().display());
    println!("  try:        curl -i http://127.0.0.1:{http_port}/api/v1/trade/orders");

    let reason = wait_for_shutdown(&mut envoy)?;
    println!("local-gateway: {reason}; stopping");
    envoy.stop();
    if reason.starts_with("Envoy exited") {
        let log = envoy.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        return Err(Error::new(reason));
    }
    drop(mocks);
    Ok(())
}

/// Blocks until Ctrl-C, SIGTERM, or Envoy exiting by itself.
fn wait_for_shutdown(envoy: &mut EnvoyProcess) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut check_envoy = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    result?;
                    return Ok("interrupted".to_owned());
                }
                _ = terminate.recv() => return Ok("terminated".to_owned()),
                _ = check_envoy.tick() => {
                    if let Some(status) = envoy.exit_status()? {
                        return Ok(format!("Envoy exited by itself ({status})"));
                    }
                }
            }
        }
    })
}
