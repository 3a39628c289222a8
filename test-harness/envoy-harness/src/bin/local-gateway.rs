//! `make run`: the local gateway. Real Envoy configured from the manifests (`istio/`,
//! `envoyfilter-manifests/`), the three filters, mock upstreams behind mTLS with a dev CA,
//! a dev token issuer (JWKS) and the rate-limit service stand-in. Foreground; Ctrl-C (or
//! SIGTERM) stops everything it started.
//!
//! Ports (environment): `GATEWAY_HTTPS_PORT` (8443), `GATEWAY_HTTP_PORT` (8080, redirects
//! to HTTPS), `GATEWAY_READINESS_PORT` (15021, `/healthz/ready`), `GATEWAY_STATS_PORT`
//! (15090, `/stats/prometheus`). State (dev CA, issuer key): `build/local-gateway/`.

use std::process::ExitCode;
use std::time::Duration;

use envoy_harness::local_gateway::{LocalGateway, Ports, STATE_DIR};
use envoy_harness::{paths, EnvoyProcess, Error, Result};

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
    let ports = Ports::from_env()?;
    let state_dir = paths::repo_root().join(STATE_DIR);
    let mut gateway = LocalGateway::start(ports.clone(), &state_dir).map_err(|error| {
        error.context(
            "starting the local gateway (ports busy? GATEWAY_HTTPS_PORT, GATEWAY_HTTP_PORT, \
             GATEWAY_READINESS_PORT and GATEWAY_STATS_PORT choose others)",
        )
    })?;
    let https = gateway.port(&ports, "https")?;
    let http = gateway.port(&ports, "http")?;
    let readiness = gateway.port(&ports, "readiness")?;
    let stats = gateway.port(&ports, "stats")?;
    let ca = gateway.ca_path.display().to_string();

    println!("svc-gateway (local) is up; Ctrl-C stops it.");
    println!("  HTTPS       https://127.0.0.1:{https}/  (host api.exchange.example.com, 127.0.0.1 or localhost)");
    println!("  HTTP        http://127.0.0.1:{http}/  -> 301 to HTTPS");
    println!("  readiness   http://127.0.0.1:{readiness}/healthz/ready");
    println!("  stats       http://127.0.0.1:{stats}/stats/prometheus");
    println!("  dev CA      {ca}");
    for upstream in &gateway.upstreams {
        let replicas: Vec<String> = upstream
            .replicas
            .iter()
            .map(|r| {
                format!(
                    "mTLS :{} -> mock :{}, control :{}",
                    r.front.port(),
                    r.mock.port(),
                    r.mock.control_port()
                )
            })
            .collect();
        println!("  upstream    {} ({})", upstream.host, replicas.join(", "));
    }
    println!(
        "  rate limit  rls-peer on :{} ({})",
        gateway.rate_limit_service.port(),
        envoy_harness::local_gateway::RATELIMIT_CONFIG
    );
    println!(
        "  issuer      {} (JWKS on :{}, kid {})",
        envoy_harness::local_gateway::dev_issuer::DEV_ISSUER,
        gateway.jwks_port(),
        gateway.issuer.kid()
    );
    println!("  Envoy log   {}", gateway.envoy.log_path().display());
    println!(
        "  try         curl --cacert {ca} -H \"authorization: Bearer $(make -s token SCOPE=trade:read)\" \
         https://127.0.0.1:{https}/api/v1/trade/orders"
    );

    let reason = wait_for_shutdown(&mut gateway.envoy)?;
    println!("local-gateway: {reason}; stopping");
    gateway.envoy.stop();
    if reason.starts_with("Envoy exited") {
        let log = gateway.envoy.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        return Err(Error::new(reason));
    }
    drop(gateway);
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
