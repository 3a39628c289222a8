//! `make token`: prints a token signed by the local gateway's dev issuer (the key `make run`
//! publishes in its JWKS, persisted in `build/local-gateway/`).
//!
//! ```text
//! dev-token [--sub S] [--scope "a b"] [--aud A] [--ttl SECONDS] [--iss URL] [--kid K]
//!           [--nbf SECONDS] [--auth-time SECONDS] [--acr V]
//! ```
//! Times are relative to now: `--ttl -60` is a token that expired a minute ago, `--nbf 60`
//! one valid in a minute, `--auth-time -600` a login ten minutes ago. `--aud` defaults to the
//! service of the first scope (`trade:*` → svc-trading-api, `wallet:*` → svc-wallet,
//! `risk:*` → svc-risk-control); empty values mean "default", so make variables can be
//! passed through unset.
//!
//! `dev-token --print-jwks` prints the issuer's JWKS instead (test-harness/kind/ serves it
//! in the cluster as the issuer's `/.well-known/jwks.json`).

use std::process::ExitCode;

use envoy_harness::local_gateway::dev_issuer::{DevIssuer, TokenRequest};
use envoy_harness::local_gateway::STATE_DIR;
use envoy_harness::{paths, Error, Result};

fn main() -> ExitCode {
    match run() {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dev-token: {error}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(flag: &str, value: &str) -> Result<i64> {
    value
        .parse()
        .map_err(|_| Error::new(format!("{flag} {value:?} is not a number of seconds")))
}

fn run() -> Result<String> {
    let mut request = TokenRequest::new("user-42", "trade:read");
    let mut audience: Option<String> = None;
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--print-jwks") {
        let issuer = DevIssuer::load_or_create(&paths::repo_root().join(STATE_DIR))?;
        return Ok(issuer.jwks().to_string());
    }
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| Error::new(format!("{flag} needs a value")))?;
        if value.is_empty() {
            continue;
        }
        match flag.as_str() {
            "--sub" => request.subject = value,
            "--scope" => request.scope = value,
            "--aud" => audience = Some(value),
            "--ttl" => request.ttl_seconds = seconds(&flag, &value)?,
            "--iss" => request.issuer = value,
            "--kid" => request.kid = Some(value),
            "--nbf" => request.not_before_seconds = Some(seconds(&flag, &value)?),
            "--auth-time" => request.auth_time_seconds = seconds(&flag, &value)?,
            "--acr" => request.acr = Some(value),
            other => return Err(Error::new(format!("unknown flag {other}"))),
        }
    }
    request.audience =
        audience.unwrap_or_else(|| TokenRequest::audience_for_scope(&request.scope).to_owned());
    let issuer = DevIssuer::load_or_create(&paths::repo_root().join(STATE_DIR))?;
    issuer.sign(&request)
}
