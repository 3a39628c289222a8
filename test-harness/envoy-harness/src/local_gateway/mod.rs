//! The local gateway (`make run`, and the in-process target of `tests/e2e.rs`): real Envoy
//! configured from the manifests ([`envoy_config`]), the three mock upstreams behind mTLS
//! with the dev CA ([`pki`], [`mtls_front`]), the dev token issuer and its JWKS
//! ([`dev_issuer`]), and rls-peer as the rate-limit service with the ConfigMap's YAML.

pub mod dev_issuer;
pub mod envoy_config;
pub mod mtls_front;
pub mod pki;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rls_peer::RlsPeer;

use self::dev_issuer::{DevIssuer, JwksServer};
use self::envoy_config::{LocalInputs, Port};
use self::mtls_front::MtlsFront;
use self::pki::DevPki;
use crate::error::{Error, Result};
use crate::{paths, EnvoyProcess, MockService, MockUpstream, RecordedRequest};

/// The rate-limit service configuration as the ConfigMap packages it
/// (`manifest-check` checks it is byte-identical to the tagger's source file).
pub const RATELIMIT_CONFIG: &str = manifest_check::ratelimit::SERVICE_COPY;

/// Where `make run` keeps its state (dev CA, issuer key), relative to the repository root.
pub const STATE_DIR: &str = "build/local-gateway";

/// Listener ports: fixed (`make run`) or picked free (tests).
#[derive(Clone, Debug)]
pub struct Ports {
    pub https: Port,
    pub http: Port,
    pub readiness: Port,
    pub stats: Port,
}

impl Ports {
    /// The ports an Istio ingress gateway uses, each overridable by an environment
    /// variable: `GATEWAY_HTTPS_PORT` (8443), `GATEWAY_HTTP_PORT` (8080),
    /// `GATEWAY_READINESS_PORT` (15021), `GATEWAY_STATS_PORT` (15090).
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            https: Port::Fixed(env_port("GATEWAY_HTTPS_PORT", 8443)?),
            http: Port::Fixed(env_port("GATEWAY_HTTP_PORT", 8080)?),
            readiness: Port::Fixed(env_port("GATEWAY_READINESS_PORT", 15021)?),
            stats: Port::Fixed(env_port("GATEWAY_STATS_PORT", 15090)?),
        })
    }

    /// Free ports, picked when Envoy starts.
    pub fn pick() -> Self {
        Self {
            https: Port::Pick("https"),
            http: Port::Pick("http"),
            readiness: Port::Pick("readiness"),
            stats: Port::Pick("stats"),
        }
    }
}

fn env_port(name: &str, default: u16) -> Result<u16> {
    match std::env::var(name) {
        Ok(text) => text
            .parse::<u16>()
            .map_err(|_| Error::new(format!("{name}={text:?} is not a port"))),
        Err(_) => Ok(default),
    }
}

/// Replicas per upstream service: two, so outlier detection has somewhere to move traffic
/// (`maxEjectionPercent: 50` never ejects the last pod).
pub const REPLICAS: usize = 2;

/// One pod of an upstream service: its mock and the mTLS front Envoy connects to.
pub struct Replica {
    pub mock: MockUpstream,
    pub front: MtlsFront,
}

/// One upstream service (a DestinationRule's host) and its replicas, which share fault
/// rules and service-wide counters ([`MockService`]).
pub struct Upstream {
    pub host: String,
    pub replicas: Vec<Replica>,
    pub service: MockService,
}

impl Upstream {
    /// `svc-wallet` for `svc-wallet.wallet.svc.cluster.local`.
    pub fn service(&self) -> &str {
        self.host.split('.').next().unwrap_or_default()
    }

    /// Requests for `method` and `path` over all replicas.
    pub fn request_count(&self, method: &str, path: &str) -> u64 {
        self.replicas
            .iter()
            .map(|r| r.mock.request_count(method, path))
            .sum()
    }

    /// What all replicas received (replica by replica, each in arrival order).
    pub fn received(&self) -> Vec<RecordedRequest> {
        self.replicas
            .iter()
            .flat_map(|r| r.mock.received())
            .collect()
    }

    /// The control API of the service (any replica's answers for all of them).
    pub fn control_port(&self) -> Option<u16> {
        self.replicas.first().map(|r| r.mock.control_port())
    }
}

/// Everything `make run` starts. Dropping it stops Envoy first, then the rest.
pub struct LocalGateway {
    // Field order is drop order: Envoy goes before the things it talks to.
    pub envoy: EnvoyProcess,
    pub upstreams: Vec<Upstream>,
    pub rate_limit_service: RlsPeer,
    pub issuer: DevIssuer,
    jwks: JwksServer,
    pub ca_path: PathBuf,
    pub state_dir: PathBuf,
}

impl LocalGateway {
    /// Starts the gateway with its state in `state_dir`.
    pub fn start(ports: Ports, state_dir: &Path) -> Result<Self> {
        let root = paths::repo_root();
        let dist = paths::dist_dir();
        let objects = envoy_config::render_manifests(&root)?;

        let pki = DevPki::create(
            state_dir,
            &["localhost", "127.0.0.1", "api.exchange.example.com"],
        )?;
        let issuer = DevIssuer::load_or_create(state_dir)?;
        let jwks = JwksServer::start(&issuer.jwks())?;
        let rate_limit_service = RlsPeer::from_yaml_file(root.join(RATELIMIT_CONFIG))
            .map_err(|e| Error::new(format!("rls-peer with {RATELIMIT_CONFIG}: {e}")))?;

        let mut upstreams = Vec::new();
        let rules = objects
            .iter()
            .filter(|o| o.get("kind").and_then(|k| k.as_str()) == Some("DestinationRule"));
        for rule in rules {
            let Some(host) = rule.pointer("/spec/host").and_then(|h| h.as_str()) else {
                continue;
            };
            let Some(service) = host.split('.').next().filter(|s| s.starts_with("svc-")) else {
                continue;
            };
            let cert = pki.issue_upstream(host, &envoy_config::upstream_spiffe_id(host))?;
            let mock_service = MockService::new();
            let mut replicas = Vec::new();
            for _ in 0..REPLICAS {
                let mock = MockUpstream::start_replica(service, &mock_service)?;
                let front = MtlsFront::start(&pki.ca_der, &cert, mock.port())?;
                replicas.push(Replica { mock, front });
            }
            upstreams.push(Upstream {
                host: host.to_owned(),
                replicas,
                service: mock_service,
            });
        }
        let upstream_ports: BTreeMap<String, Vec<u16>> = upstreams
            .iter()
            .map(|u| {
                let ports = u.replicas.iter().map(|r| r.front.port()).collect();
                (u.host.clone(), ports)
            })
            .collect();

        let inputs = LocalInputs {
            dist_dir: &dist,
            https: ports.https.clone(),
            http: ports.http.clone(),
            readiness: ports.readiness.clone(),
            stats: ports.stats.clone(),
            upstream_ports: &upstream_ports,
            rls_port: rate_limit_service.port(),
            jwks_port: jwks.port(),
            ca_path: &pki.ca_path,
            listener_cert: &pki.listener_cert_path,
            listener_key: &pki.listener_key_path,
            client_cert: &pki.client_cert_path,
            client_key: &pki.client_key_path,
        };
        let template = envoy_config::bootstrap_template(&objects, &inputs)?;
        std::fs::write(state_dir.join("envoy-bootstrap.json"), &template)?;
        let envoy = EnvoyProcess::builder(template).start()?;
        Ok(Self {
            envoy,
            upstreams,
            rate_limit_service,
            issuer,
            jwks,
            ca_path: pki.ca_path,
            state_dir: state_dir.to_owned(),
        })
    }

    /// The port of a listener (`https`, `http`, `readiness`, `stats`), fixed or picked.
    pub fn port(&self, ports: &Ports, listener: &str) -> Result<u16> {
        let port = match listener {
            "https" => &ports.https,
            "http" => &ports.http,
            "readiness" => &ports.readiness,
            "stats" => &ports.stats,
            other => return Err(Error::new(format!("no listener {other}"))),
        };
        match port {
            Port::Fixed(port) => Ok(*port),
            Port::Pick(name) => self.envoy.port(name),
        }
    }

    /// The upstream of a service name (`svc-wallet`).
    pub fn upstream(&self, service: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.service() == service)
    }

    pub fn jwks_port(&self) -> u16 {
        self.jwks.port()
    }
}
