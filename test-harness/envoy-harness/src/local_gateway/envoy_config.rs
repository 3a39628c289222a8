//! The local gateway's Envoy bootstrap, generated from the manifests.
//!
//! * `istio/` and `envoyfilter-manifests/` are rendered with manifest-check's kustomize
//!   subset, and the EnvoyFilters are applied with its simulation of Istio's patching
//!   ([`manifest_check::envoyfilter::simulate`] / [`bootstrap`](manifest_check::envoyfilter::bootstrap)),
//!   the same code `make manifests-test` runs: the HTTP filter chain (order, wasm
//!   `configuration`, failure policies, local_ratelimit/ratelimit), `local_reply_config` and
//!   `server_header_transformation` come from there.
//! * Routes, timeouts, retries and header removals come from the VirtualServices; circuit
//!   breakers, outlier detection and connect timeouts from the DestinationRules; the
//!   `jwt_authn` provider from the RequestAuthentication; the `rbac` filters (DENY, then
//!   ALLOW) from the AuthorizationPolicies that select the gateway, as istiod builds them. A
//!   field this translation does not know is an error, never ignored, so a manifest change
//!   either shows up here or fails.
//! * Local overrides (the only ones): endpoints point at loopback (mocks behind mTLS, the
//!   rate-limit stand-in, the dev JWKS), the issuer is the dev issuer (in `jwt_authn`,
//!   jwt-authz and the AuthorizationPolicies' `requestPrincipals`), the virtual host also
//!   answers to `127.0.0.1` and `localhost`, and the upstream clusters speak HTTP/1.1 (the
//!   mocks do not speak HTTP/2).

// Reads go through serde_json's `Index`, which yields `Null` instead of panicking.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use manifest_check::envoyfilter::{self, Baseline};
use serde_json::{json, Map, Value};

use super::dev_issuer::{DEV_ISSUER, JWKS_PATH};
use crate::error::{Error, Result};

/// The manifests' IdP cluster (ServiceEntry) and issuer, which the local gateway overrides.
pub const MANIFEST_JWKS_CLUSTER: &str = "outbound|443||auth.exchange.example.com";
pub const MANIFEST_ISSUER: &str = "https://auth.exchange.example.com";
pub const RATELIMIT_CLUSTER: &str = "outbound|8081||ratelimit.gateway.svc.cluster.local";
const RBAC_FILTER: &str = "envoy.filters.http.rbac";
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const JWT_AUTHN_FILTER: &str = "envoy.filters.http.jwt_authn";
/// istiod's `payload_in_metadata` key for every provider.
const JWT_PAYLOAD_KEY: &str = "payload";

/// A listener port: fixed, or a free one the harness picks (`{{port:NAME}}`).
#[derive(Clone, Debug)]
pub enum Port {
    Fixed(u16),
    Pick(&'static str),
}

impl Port {
    fn marker(&self) -> Value {
        match self {
            Self::Fixed(port) => json!(port),
            Self::Pick(name) => json!(format!("__PORT__{name}__")),
        }
    }
}

/// Everything outside the manifests that the bootstrap needs.
pub struct LocalInputs<'a> {
    pub dist_dir: &'a Path,
    pub https: Port,
    pub http: Port,
    pub readiness: Port,
    pub stats: Port,
    /// Upstream host (the DestinationRule's `host`) → its replicas' mTLS ports on loopback.
    pub upstream_ports: &'a BTreeMap<String, Vec<u16>>,
    pub rls_port: u16,
    pub jwks_port: u16,
    pub ca_path: &'a Path,
    pub listener_cert: &'a Path,
    pub listener_key: &'a Path,
    pub client_cert: &'a Path,
    pub client_key: &'a Path,
}

fn err(message: impl Into<String>) -> Error {
    Error::new(message)
}

fn anyhow_err(error: impl std::fmt::Display) -> Error {
    Error::new(format!("{error:#}"))
}

/// The manifests, rendered.
pub fn render_manifests(repo_root: &Path) -> Result<Vec<Value>> {
    let dirs: Vec<PathBuf> = ["istio", "envoyfilter-manifests"]
        .iter()
        .map(|dir| repo_root.join(dir))
        .collect();
    envoyfilter::render_all(&dirs).map_err(anyhow_err)
}

/// The bootstrap as an `EnvoyProcess` template (JSON, with `{{port:NAME}}` where a port is
/// picked at start).
pub fn bootstrap_template(objects: &[Value], inputs: &LocalInputs<'_>) -> Result<String> {
    let bootstrap = generate(objects, inputs)?;
    let mut text = serde_json::to_string_pretty(&bootstrap)?;
    for name in ["admin", "https", "http", "readiness", "stats"] {
        text = text.replace(
            &format!("\"__PORT__{name}__\""),
            &format!("{{{{port:{name}}}}}"),
        );
    }
    Ok(text)
}

fn generate(objects: &[Value], inputs: &LocalInputs<'_>) -> Result<Value> {
    // Baseline::FULL without the Istio-only filters is what a gateway with our
    // AuthorizationPolicy runs (bootstrap() drops istio_authn and istio.stats).
    let (gateway, _) = envoyfilter::simulate(objects, Baseline::FULL).map_err(anyhow_err)?;
    let simulated = envoyfilter::bootstrap(&gateway, inputs.dist_dir).map_err(anyhow_err)?;
    let mut hcm = simulated
        .pointer("/static_resources/listeners/0/filter_chains/0/filters/0")
        .cloned()
        .ok_or_else(|| err("manifest-check's bootstrap has no HCM"))?;

    let virtual_host = virtual_host(objects, &gateway.route_config)?;
    let typed_config = hcm
        .get_mut("typed_config")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| err("HCM without typed_config"))?;
    typed_config.insert("stat_prefix".into(), json!("gateway_https"));
    typed_config.insert(
        "route_config".into(),
        json!({"name": "local-gateway", "virtual_hosts": [virtual_host]}),
    );
    // Client addresses: the socket peer (there is no ALB in front locally).
    typed_config.insert("use_remote_address".into(), json!(true));
    typed_config.insert(
        "access_log".into(),
        json!([{"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"}}]),
    );
    let filters = typed_config
        .get_mut("http_filters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| err("HCM without http_filters"))?;
    for filter in filters.iter_mut() {
        match filter["name"].as_str().unwrap_or_default() {
            "envoy.filters.http.jwt_authn" => {
                let config = jwt_authn(objects)?;
                if let Some(slot) = filter.get_mut("typed_config") {
                    *slot = config;
                }
            }
            "svcgw.jwt_authz" => point_jwt_authz_at_dev_issuer(filter)?,
            "envoy.filters.http.ratelimit" => {
                // Envoy sends the cluster name as the gRPC `:authority`; the `|` in
                // Istio's cluster names is fine for envoyproxy/ratelimit (Go) but the
                // Rust stand-in's HTTP/2 stack resets such a stream. The service's DNS
                // name is what the authority would be anyway.
                if let Some(envoy_grpc) = filter
                    .pointer_mut("/typed_config/rate_limit_service/grpc_service/envoy_grpc")
                    .and_then(Value::as_object_mut)
                {
                    let host = RATELIMIT_CLUSTER.rsplit("||").next().unwrap_or_default();
                    envoy_grpc.insert("authority".into(), json!(host));
                }
            }
            _ => {}
        }
    }
    // The baseline's (empty) rbac slot becomes Istio's translation of the
    // AuthorizationPolicies: DENY filter, then ALLOW filter, at the same position.
    let rbac_slot = filters
        .iter()
        .position(|f| f["name"] == RBAC_FILTER)
        .ok_or_else(|| err("the simulated chain has no rbac filter to translate into"))?;
    let rbac = rbac_filters(objects)?;
    filters.splice(rbac_slot..=rbac_slot, rbac);

    let clusters = clusters(objects, &gateway.clusters, inputs)?;
    let https_listener = json!({
        "name": "https",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": inputs.https.marker()}},
        "filter_chains": [{
            "filters": [hcm],
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"tls_certificates": [{
                    "certificate_chain": {"filename": path_text(inputs.listener_cert)},
                    "private_key": {"filename": path_text(inputs.listener_key)},
                }]},
            }},
        }],
    });
    Ok(json!({
        "node": {"id": "local-gateway", "cluster": "istio-ingressgateway.gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "__PORT__admin__"}}},
        "static_resources": {
            "listeners": [
                https_listener,
                redirect_listener(&inputs.http, &inputs.https),
                plain_listener("readiness", &inputs.readiness, json!({
                    "match": {"path": "/healthz/ready"},
                    "direct_response": {"status": 200, "body": {"inline_string": "ready\n"}},
                })),
                plain_listener("stats", &inputs.stats, json!({
                    "match": {"path": "/stats/prometheus"},
                    "route": {"cluster": "local_admin"},
                })),
            ],
            "clusters": clusters,
        },
    }))
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// HTTP on its own port: every request gets a redirect to the HTTPS listener.
fn redirect_listener(http: &Port, https: &Port) -> Value {
    let redirect = match https {
        Port::Fixed(port) => json!({"https_redirect": true, "port_redirect": port}),
        Port::Pick(_) => json!({"https_redirect": true, "port_redirect": https.marker()}),
    };
    plain_listener(
        "http",
        http,
        json!({"match": {"prefix": "/"}, "redirect": redirect}),
    )
}

/// A plain-HTTP listener with one route (readiness, stats, redirect).
fn plain_listener(name: &str, port: &Port, route: Value) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port.marker()}},
        "filter_chains": [{"filters": [{
            "name": envoyfilter::HCM,
            "typed_config": {
                "@type": envoyfilter::HCM_TYPE,
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": [route]}]},
                "http_filters": [{"name": envoyfilter::ROUTER, "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    })
}

// ------------------------------------------------------------------ routes

/// The VirtualServices' routes in one virtual host that accepts any authority; the
/// EnvoyFilters' VIRTUAL_HOST patches (already applied to the simulated vhost) are kept.
fn virtual_host(objects: &[Value], simulated_routes: &Value) -> Result<Value> {
    let mut vhost = simulated_routes["virtual_hosts"][0]
        .as_object()
        .cloned()
        .ok_or_else(|| err("simulated route configuration has no virtual host"))?;
    vhost.insert("name".into(), json!("local-gateway"));
    let mut services: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "VirtualService")
        .collect();
    // The VirtualServices' hosts as istiod lists them (with and without a port), plus the
    // names a local client uses: another authority gets Envoy's 404 (NR), as at the real
    // gateway, whose Gateway serves api.exchange.example.com only.
    let mut domains: Vec<String> = Vec::new();
    for host in services
        .iter()
        .flat_map(|s| s["spec"]["hosts"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .chain(["127.0.0.1", "localhost"])
    {
        for domain in [host.to_owned(), format!("{host}:*")] {
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
    }
    vhost.insert("domains".into(), json!(domains));
    let mut routes = Vec::new();
    // Istio orders VirtualServices of one host by creation time; the name is the stable
    // stand-in (the prefixes are disjoint, so the order does not change any match).
    services.sort_by_key(|o| {
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    for service in services {
        let name = service["metadata"]["name"].as_str().unwrap_or("?");
        let http = service["spec"]["http"]
            .as_array()
            .ok_or_else(|| err(format!("VirtualService {name}: no spec.http")))?;
        for (index, entry) in http.iter().enumerate() {
            routes.extend(
                vs_routes(entry)
                    .map_err(|e| e.context(format!("VirtualService {name} http[{index}]")))?,
            );
        }
    }
    vhost.insert("routes".into(), Value::Array(routes));
    Ok(Value::Object(vhost))
}

fn unknown_key(value: &Value, known: &[&str]) -> Result<()> {
    if let Some(object) = value.as_object() {
        if let Some(key) = object.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(err(format!(
                "`{key}` has no local translation (add it to local_gateway/envoy_config.rs)"
            )));
        }
    }
    Ok(())
}

fn vs_routes(entry: &Value) -> Result<Vec<Value>> {
    unknown_key(
        entry,
        &[
            "name",
            "match",
            "route",
            "timeout",
            "retries",
            "headers",
            "directResponse",
        ],
    )?;
    let mut action = Map::new();
    let mut route_extra = Map::new();
    if let Some(direct) = entry.get("directResponse") {
        unknown_key(direct, &["status", "body"])?;
        let mut response = json!({"status": direct["status"]});
        if let Some(body) = direct["body"]["string"].as_str() {
            response["body"] = json!({"inline_string": body});
        }
        route_extra.insert("direct_response".into(), response);
    } else {
        let destinations = entry["route"]
            .as_array()
            .ok_or_else(|| err("neither route nor directResponse"))?;
        let [destination] = destinations.as_slice() else {
            return Err(err(
                "only one destination per route has a local translation",
            ));
        };
        unknown_key(destination, &["destination"])?;
        unknown_key(&destination["destination"], &["host", "port"])?;
        let host = destination["destination"]["host"]
            .as_str()
            .ok_or_else(|| err("destination without host"))?;
        let port = destination["destination"]["port"]["number"]
            .as_u64()
            .ok_or_else(|| err("destination without port.number"))?;
        action.insert("cluster".into(), json!(format!("outbound|{port}||{host}")));
        // Istio's default without `timeout` is no timeout (0s).
        action.insert(
            "timeout".into(),
            entry.get("timeout").cloned().unwrap_or(json!("0s")),
        );
        if let Some(retry_policy) = retry_policy(&entry["retries"])? {
            action.insert("retry_policy".into(), retry_policy);
        }
        route_extra.insert("route".into(), Value::Object(action));
    }
    if let Some(headers) = entry.get("headers") {
        unknown_key(headers, &["request"])?;
        unknown_key(&headers["request"], &["remove"])?;
        if let Some(remove) = headers["request"].get("remove") {
            route_extra.insert("request_headers_to_remove".into(), remove.clone());
        }
    }
    if let Some(name) = entry.get("name") {
        route_extra.insert("name".into(), name.clone());
    }
    let matches = match entry["match"].as_array() {
        Some(matches) if !matches.is_empty() => matches.clone(),
        _ => vec![json!({"uri": {"prefix": "/"}})],
    };
    matches
        .iter()
        .map(|m| {
            let mut route = route_extra.clone();
            route.insert("match".into(), route_match(m)?);
            Ok(Value::Object(route))
        })
        .collect()
}

fn string_match(value: &Value) -> Result<Value> {
    unknown_key(value, &["exact", "prefix", "regex"])?;
    if let Some(exact) = value.get("exact") {
        return Ok(json!({"exact": exact}));
    }
    if let Some(prefix) = value.get("prefix") {
        return Ok(json!({"prefix": prefix}));
    }
    if let Some(regex) = value.get("regex") {
        return Ok(json!({"safe_regex": {"regex": regex}}));
    }
    Err(err("empty string match"))
}

fn route_match(m: &Value) -> Result<Value> {
    unknown_key(m, &["uri", "method"])?;
    let mut out = Map::new();
    let uri = &m["uri"];
    unknown_key(uri, &["exact", "prefix", "regex"])?;
    if let Some(exact) = uri.get("exact") {
        out.insert("path".into(), exact.clone());
    } else if let Some(prefix) = uri.get("prefix") {
        out.insert("prefix".into(), prefix.clone());
    } else if let Some(regex) = uri.get("regex") {
        out.insert("safe_regex".into(), json!({"regex": regex}));
    } else {
        out.insert("prefix".into(), json!("/"));
    }
    if let Some(method) = m.get("method") {
        out.insert(
            "headers".into(),
            json!([{"name": ":method", "string_match": string_match(method)?}]),
        );
    }
    Ok(Value::Object(out))
}

/// Istio's translation of `retries`: `attempts: 0` means no retries at all; Istio adds the
/// `previous_hosts` predicate so a retry goes to another endpoint when there is one.
fn retry_policy(retries: &Value) -> Result<Option<Value>> {
    if retries.is_null() {
        return Err(err(
            "no `retries`: Istio's default policy would apply, which the manifests avoid on purpose",
        ));
    }
    unknown_key(retries, &["attempts", "perTryTimeout", "retryOn"])?;
    let attempts = retries["attempts"].as_u64().unwrap_or(0);
    if attempts == 0 {
        return Ok(None);
    }
    let mut policy = json!({
        "num_retries": attempts,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 5,
    });
    if let Some(retry_on) = retries.get("retryOn") {
        policy["retry_on"] = retry_on.clone();
    }
    if let Some(per_try) = retries.get("perTryTimeout") {
        policy["per_try_timeout"] = per_try.clone();
    }
    Ok(Some(policy))
}

// ------------------------------------------------------------------ clusters

fn clusters(
    objects: &[Value],
    simulated: &[Value],
    inputs: &LocalInputs<'_>,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for cluster in simulated {
        let name = cluster["name"].as_str().unwrap_or_default();
        let mut cluster = cluster.clone();
        if name == MANIFEST_JWKS_CLUSTER {
            set_loopback_endpoint(&mut cluster, inputs.jwks_port)?;
        } else if name == RATELIMIT_CLUSTER {
            // gRPC (HTTP/2, from the simulated cluster); plaintext locally, where Istio
            // would use ISTIO_MUTUAL to the ratelimit pods.
            set_loopback_endpoint(&mut cluster, inputs.rls_port)?;
        } else {
            let host = name.rsplit("||").next().unwrap_or_default();
            let Some(ports) = inputs.upstream_ports.get(host) else {
                return Err(err(format!("cluster {name}: no local upstream for {host}")));
            };
            let rule = objects
                .iter()
                .find(|o| o["kind"] == "DestinationRule" && o["spec"]["host"] == host)
                .ok_or_else(|| err(format!("no DestinationRule for {host}")))?;
            cluster = upstream_cluster(name, host, ports, rule, inputs)
                .map_err(|e| e.context(format!("DestinationRule for {host}")))?;
        }
        out.push(cluster);
    }
    out.push(json!({
        "name": "local_admin",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "local_admin", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": "__PORT__admin__"}}}}]}]},
    }));
    Ok(out)
}

fn set_loopback_endpoint(cluster: &mut Value, port: u16) -> Result<()> {
    let object = cluster
        .as_object_mut()
        .ok_or_else(|| err("cluster is not an object"))?;
    object.insert("type".into(), json!("STATIC"));
    let name = object.get("name").cloned().unwrap_or(Value::Null);
    object.insert(
        "load_assignment".into(),
        json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}),
    );
    Ok(())
}

/// SPIFFE identity of an upstream (`svc-wallet.wallet.svc.cluster.local` →
/// `spiffe://cluster.local/ns/wallet/sa/svc-wallet`).
pub fn upstream_spiffe_id(host: &str) -> String {
    let mut parts = host.split('.');
    let service = parts.next().unwrap_or_default();
    let namespace = parts.next().unwrap_or_default();
    format!("spiffe://cluster.local/ns/{namespace}/sa/{service}")
}

fn upstream_cluster(
    name: &str,
    host: &str,
    ports: &[u16],
    rule: &Value,
    inputs: &LocalInputs<'_>,
) -> Result<Value> {
    let spec = &rule["spec"];
    unknown_key(spec, &["host", "exportTo", "trafficPolicy"])?;
    let policy = &spec["trafficPolicy"];
    unknown_key(policy, &["tls", "connectionPool", "outlierDetection"])?;
    if policy["tls"]["mode"] != "ISTIO_MUTUAL" {
        return Err(err("only tls.mode ISTIO_MUTUAL has a local stand-in"));
    }
    let pool = &policy["connectionPool"];
    unknown_key(pool, &["tcp", "http"])?;
    let tcp = &pool["tcp"];
    unknown_key(tcp, &["maxConnections", "connectTimeout", "tcpKeepalive"])?;
    let http = &pool["http"];
    unknown_key(
        http,
        &[
            "http1MaxPendingRequests",
            "http2MaxRequests",
            "maxRequestsPerConnection",
            "maxRetries",
            "idleTimeout",
        ],
    )?;
    let mut thresholds = Map::new();
    for (from, to) in [
        (&tcp["maxConnections"], "max_connections"),
        (&http["http1MaxPendingRequests"], "max_pending_requests"),
        (&http["http2MaxRequests"], "max_requests"),
        (&http["maxRetries"], "max_retries"),
    ] {
        if !from.is_null() {
            thresholds.insert(to.into(), from.clone());
        }
    }
    let mut http_options = json!({"explicit_http_config": {"http_protocol_options": {}}});
    if let Some(idle) = http.get("idleTimeout") {
        http_options["common_http_protocol_options"]["idle_timeout"] = idle.clone();
    }
    if let Some(max) = http["maxRequestsPerConnection"].as_u64().filter(|m| *m > 0) {
        http_options["common_http_protocol_options"]["max_requests_per_connection"] = json!(max);
    }
    http_options["@type"] =
        json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");

    let lb_endpoints: Vec<Value> = ports
        .iter()
        .map(|port| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}))
        .collect();
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": tcp.get("connectTimeout").cloned().unwrap_or(json!("10s")),
        "circuit_breakers": {"thresholds": [Value::Object(thresholds)]},
        // The mocks speak HTTP/1.1; Istio would use HTTP/2 between sidecars.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http_options,
        },
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": host,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": path_text(inputs.client_cert)},
                    "private_key": {"filename": path_text(inputs.client_key)},
                }],
                "validation_context": {
                    "trusted_ca": {"filename": path_text(inputs.ca_path)},
                    // What ISTIO_MUTUAL checks: the upstream's SPIFFE identity.
                    "match_typed_subject_alt_names": [{"san_type": "URI",
                        "matcher": {"exact": upstream_spiffe_id(host)}}],
                },
            },
        }},
    });
    if let Some(keepalive) = tcp.get("tcpKeepalive") {
        unknown_key(keepalive, &["time", "interval", "probes"])?;
        let mut envoy_keepalive = Map::new();
        for (from, to) in [
            ("time", "keepalive_time"),
            ("interval", "keepalive_interval"),
            ("probes", "keepalive_probes"),
        ] {
            if let Some(value) = keepalive.get(from) {
                envoy_keepalive.insert(to.into(), json!(seconds(value)?));
            }
        }
        cluster["upstream_connection_options"] = json!({"tcp_keepalive": envoy_keepalive});
    }
    if let Some(outlier) = policy.get("outlierDetection") {
        cluster["outlier_detection"] = outlier_detection(outlier)?;
    }
    Ok(cluster)
}

/// `300s` → 300 (keepalive fields are integer seconds in Envoy).
fn seconds(value: &Value) -> Result<u64> {
    if let Some(number) = value.as_u64() {
        return Ok(number);
    }
    value
        .as_str()
        .and_then(|text| text.strip_suffix('s'))
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| err(format!("{value} is not a duration in whole seconds")))
}

/// Istio's translation: each consecutive-error threshold that is set is enforced at 100 %,
/// success-rate ejection is off.
fn outlier_detection(outlier: &Value) -> Result<Value> {
    unknown_key(
        outlier,
        &[
            "consecutiveGatewayErrors",
            "consecutive5xxErrors",
            "splitExternalLocalOriginErrors",
            "consecutiveLocalOriginFailures",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
        ],
    )?;
    let mut out = json!({"enforcing_success_rate": 0});
    let mut set = |from: &str, to: &str, enforcing: Option<&str>| {
        if let Some(value) = outlier.get(from) {
            out[to] = value.clone();
            if let Some(enforcing) = enforcing {
                out[enforcing] = json!(100);
            }
        }
    };
    set(
        "consecutiveGatewayErrors",
        "consecutive_gateway_failure",
        Some("enforcing_consecutive_gateway_failure"),
    );
    set(
        "consecutive5xxErrors",
        "consecutive_5xx",
        Some("enforcing_consecutive_5xx"),
    );
    set(
        "splitExternalLocalOriginErrors",
        "split_external_local_origin_errors",
        None,
    );
    set(
        "consecutiveLocalOriginFailures",
        "consecutive_local_origin_failure",
        Some("enforcing_consecutive_local_origin_failure"),
    );
    set("interval", "interval", None);
    set("baseEjectionTime", "base_ejection_time", None);
    set("maxEjectionPercent", "max_ejection_percent", None);
    // Istio leaves consecutive_5xx at Envoy's default (5, enforced) when unset; it never is
    // unset in our manifests, so no default handling is needed here.
    Ok(out)
}

// ------------------------------------------------------------------ authorization

/// The AuthorizationPolicies that select the gateway pods, as istiod turns them into
/// `envoy.filters.http.rbac` filters (pilot/pkg/security/authz): one filter for the DENY
/// policies, then one for the ALLOW policies (an ALLOW filter denies whatever none of its
/// rules matches), each rule a policy named `ns[<ns>]-policy[<name>]-rule[<i>]`. None at all:
/// no rbac filter, as istiod does.
fn rbac_filters(objects: &[Value]) -> Result<Vec<Value>> {
    let mut deny = Map::new();
    let mut allow = Map::new();
    for policy in objects
        .iter()
        .filter(|o| o["kind"] == "AuthorizationPolicy")
    {
        let name = policy["metadata"]["name"].as_str().unwrap_or("?");
        let namespace = policy["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let context = |e: Error| e.context(format!("AuthorizationPolicy {namespace}/{name}"));
        let spec = &policy["spec"];
        unknown_key(spec, &["selector", "action", "rules"]).map_err(context)?;
        unknown_key(&spec["selector"], &["matchLabels"]).map_err(context)?;
        // A policy for other workloads is not the gateway's business. Without a selector it
        // covers its namespace (ours) or, in the root namespace, the mesh.
        if !envoyfilter::selects_gateway_pods(&spec["selector"]["matchLabels"]) {
            continue;
        }
        let target = match spec["action"].as_str().unwrap_or("ALLOW") {
            "ALLOW" => &mut allow,
            "DENY" => &mut deny,
            other => {
                return Err(context(err(format!(
                    "action {other} has no local translation"
                ))))
            }
        };
        for (index, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
            let translated =
                rbac_policy(rule).map_err(|e| context(e.context(format!("rules[{index}]"))))?;
            target.insert(
                format!("ns[{namespace}]-policy[{name}]-rule[{index}]"),
                translated,
            );
        }
    }
    let mut filters = Vec::new();
    for (action, policies) in [("DENY", deny), ("ALLOW", allow)] {
        if policies.is_empty() {
            continue;
        }
        filters.push(json!({
            "name": RBAC_FILTER,
            "typed_config": {
                "@type": RBAC_TYPE,
                "rules": {"action": action, "policies": policies},
                "shadow_rules_stat_prefix": "istio_dry_run_allow_",
            },
        }));
    }
    Ok(filters)
}

/// One rule: `to` (operations) gives the permissions, `from` (sources) and `when`
/// (conditions) the principals; every part left out matches anything.
fn rbac_policy(rule: &Value) -> Result<Value> {
    unknown_key(rule, &["from", "to", "when"])?;
    let mut permissions = Vec::new();
    for operation in rule["to"].as_array().into_iter().flatten() {
        unknown_key(operation, &["operation"])?;
        let operation = &operation["operation"];
        unknown_key(operation, &["paths", "notPaths", "methods", "notMethods"])?;
        let path = |value: &str| json!({"url_path": {"path": istio_string_match(value)}});
        let method = |value: &str| json!({"header": {"name": ":method", "string_match": istio_string_match(value)}});
        let mut rules = Vec::new();
        for (field, negated, matcher) in [
            ("paths", false, &path as &dyn Fn(&str) -> Value),
            ("notPaths", true, &path),
            ("methods", false, &method),
            ("notMethods", true, &method),
        ] {
            if let Some(values) = string_list(operation, field)? {
                let any_of: Vec<Value> = values.iter().map(|v| matcher(v)).collect();
                let any_of = json!({"or_rules": {"rules": any_of}});
                rules.push(if negated {
                    json!({"not_rule": any_of})
                } else {
                    any_of
                });
            }
        }
        permissions.push(and_rules(rules));
    }
    if permissions.is_empty() {
        permissions.push(json!({"any": true}));
    }

    let mut conditions = Vec::new();
    for condition in rule["when"].as_array().into_iter().flatten() {
        unknown_key(condition, &["key", "values", "notValues"])?;
        let key = condition["key"].as_str().unwrap_or_default();
        let claims = claim_path(key)?;
        for (field, negated) in [("values", false), ("notValues", true)] {
            if let Some(values) = string_list(condition, field)? {
                let id = json!({"metadata": claim_matcher(&claims, &values)});
                conditions.push(if negated { json!({"not_id": id}) } else { id });
            }
        }
    }
    let mut principals = Vec::new();
    for source in rule["from"].as_array().into_iter().flatten() {
        unknown_key(source, &["source"])?;
        let source = &source["source"];
        unknown_key(source, &["requestPrincipals", "notRequestPrincipals"])?;
        let mut ids = Vec::new();
        for (field, negated) in [("requestPrincipals", false), ("notRequestPrincipals", true)] {
            if let Some(values) = string_list(source, field)? {
                let any_of = values
                    .iter()
                    .map(|v| request_principal(v))
                    .collect::<Result<Vec<_>>>()?;
                let any_of = json!({"or_ids": {"ids": any_of}});
                ids.push(if negated {
                    json!({"not_id": any_of})
                } else {
                    any_of
                });
            }
        }
        ids.extend(conditions.iter().cloned());
        principals.push(and_ids(ids));
    }
    if principals.is_empty() {
        principals.push(and_ids(conditions));
    }
    Ok(json!({"permissions": permissions, "principals": principals}))
}

fn and_rules(rules: Vec<Value>) -> Value {
    if rules.is_empty() {
        json!({"any": true})
    } else {
        json!({"and_rules": {"rules": rules}})
    }
}

fn and_ids(ids: Vec<Value>) -> Value {
    if ids.is_empty() {
        json!({"any": true})
    } else {
        json!({"and_ids": {"ids": ids}})
    }
}

/// A list of strings, `None` when the field is absent.
fn string_list(object: &Value, field: &str) -> Result<Option<Vec<String>>> {
    let Some(value) = object.get(field) else {
        return Ok(None);
    };
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .map(Some)
        .ok_or_else(|| err(format!("`{field}` is not a list of strings")))
}

/// Istio's value syntax: `*` anything (non-empty), `x*` prefix, `*x` suffix, else exact.
fn istio_string_match(value: &str) -> Value {
    if value == "*" {
        json!({"safe_regex": {"regex": ".+"}})
    } else if let Some(suffix) = value.strip_prefix('*') {
        json!({"suffix": suffix})
    } else if let Some(prefix) = value.strip_suffix('*') {
        json!({"prefix": prefix})
    } else {
        json!({"exact": value})
    }
}

/// A verified token's claim, where jwt_authn left the payload.
fn jwt_claim(claims: &[String], value: Value) -> Value {
    let path: Vec<Value> = std::iter::once(JWT_PAYLOAD_KEY.to_owned())
        .chain(claims.iter().cloned())
        .map(|key| json!({"key": key}))
        .collect();
    json!({"filter": JWT_AUTHN_FILTER, "path": path, "value": value})
}

/// `iss/sub` (the last `/` splits, issuers are URLs) → iss AND sub of the verified token.
/// The manifests' issuer is the dev issuer locally, as in jwt_authn and jwt-authz.
fn request_principal(value: &str) -> Result<Value> {
    let any = json!({"safe_regex": {"regex": ".+"}});
    let (issuer, subject) = match value.rfind('/') {
        Some(at) => (
            value.get(..at).unwrap_or_default(),
            value.get(at + 1..).unwrap_or_default(),
        ),
        None => (value, "*"),
    };
    let (issuer_match, subject_match) = if value == "*" {
        (any.clone(), any)
    } else {
        if issuer != MANIFEST_ISSUER {
            return Err(err(format!(
                "request principal {value:?}: only issuer {MANIFEST_ISSUER} has a local stand-in"
            )));
        }
        let subject_match = if subject == "*" {
            any
        } else {
            istio_string_match(subject)
        };
        (json!({"exact": DEV_ISSUER}), subject_match)
    };
    Ok(json!({"and_ids": {"ids": [
        {"metadata": jwt_claim(&["iss".to_owned()], json!({"string_match": issuer_match}))},
        {"metadata": jwt_claim(&["sub".to_owned()], json!({"string_match": subject_match}))},
    ]}}))
}

/// `request.auth.claims[aud]` → `["aud"]`; nested claims as `[a][b]`.
fn claim_path(key: &str) -> Result<Vec<String>> {
    let claims = key
        .strip_prefix("request.auth.claims")
        .ok_or_else(|| err(format!("condition key {key:?} has no local translation")))?;
    let names: Vec<String> = claims
        .split_terminator(']')
        .map(|part| part.strip_prefix('[').map(str::to_owned))
        .collect::<Option<_>>()
        .filter(|names: &Vec<String>| !names.is_empty())
        .ok_or_else(|| {
            err(format!(
                "condition key {key:?} is not request.auth.claims[<name>]"
            ))
        })?;
    Ok(names)
}

/// A claim equal to one of `values`, or a list claim containing one (istiod's extended JWT
/// matcher: `aud` may be a string or a list).
fn claim_matcher(claims: &[String], values: &[String]) -> Value {
    let any_of: Vec<Value> = values
        .iter()
        .map(|v| json!({"string_match": istio_string_match(v)}))
        .collect();
    let one_value = if let [single] = any_of.as_slice() {
        single.clone()
    } else {
        json!({"or_match": {"value_matchers": any_of}})
    };
    jwt_claim(
        claims,
        json!({"or_match": {"value_matchers": [
            {"list_match": {"one_of": one_value.clone()}},
            one_value,
        ]}}),
    )
}

// ------------------------------------------------------------------ JWT

/// `jwt_authn` from the RequestAuthentication, as Istio generates it: tokens are optional
/// here (`allow_missing`, the AuthorizationPolicy makes them mandatory), a present token
/// must verify. The JWKS is fetched from the dev issuer through the IdP cluster.
fn jwt_authn(objects: &[Value]) -> Result<Value> {
    let rule_sets: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "RequestAuthentication")
        .collect();
    let mut providers = Map::new();
    for request_authentication in rule_sets {
        let name = request_authentication["metadata"]["name"]
            .as_str()
            .unwrap_or("?");
        let spec = &request_authentication["spec"];
        unknown_key(spec, &["selector", "jwtRules"])?;
        for (index, rule) in spec["jwtRules"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            unknown_key(
                rule,
                &[
                    "issuer",
                    "jwksUri",
                    "audiences",
                    "fromHeaders",
                    "forwardOriginalToken",
                ],
            )
            .map_err(|e| e.context(format!("RequestAuthentication {name} jwtRules[{index}]")))?;
            if rule["issuer"] != MANIFEST_ISSUER {
                return Err(err(format!(
                    "RequestAuthentication {name}: issuer {} is not the one the local gateway overrides",
                    rule["issuer"]
                )));
            }
            let from_headers: Vec<Value> = rule["fromHeaders"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| json!({"name": h["name"], "value_prefix": h["prefix"]}))
                .collect();
            providers.insert(
                format!("origins-{index}"),
                json!({
                    "issuer": DEV_ISSUER,
                    "audiences": rule["audiences"],
                    "from_headers": from_headers,
                    "forward": rule["forwardOriginalToken"].as_bool().unwrap_or(false),
                    "remote_jwks": {
                        "http_uri": {"uri": format!("http://127.0.0.1{JWKS_PATH}"),
                            "cluster": MANIFEST_JWKS_CLUSTER, "timeout": "5s"},
                        "cache_duration": "300s",
                    },
                    // Where istiod puts the payload (and how it splits `scope`), which is
                    // what the rbac filters' request.auth.* matchers read.
                    "payload_in_metadata": JWT_PAYLOAD_KEY,
                    "normalize_payload_in_metadata": {"space_delimited_claims": ["scope", "permission"]},
                }),
            );
        }
    }
    let requirements: Vec<Value> = providers
        .keys()
        .map(|name| json!({"provider_name": name}))
        .chain(std::iter::once(json!({"allow_missing": {}})))
        .collect();
    Ok(json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": requirements}}}],
    }))
}

/// jwt-authz keeps its `configuration` from the EnvoyFilter; only the issuer is replaced
/// with the dev issuer (its JWKS cluster name stays, that cluster points at the dev JWKS).
fn point_jwt_authz_at_dev_issuer(filter: &mut Value) -> Result<()> {
    let slot = filter
        .pointer_mut("/typed_config/config/configuration/value")
        .ok_or_else(|| err("svcgw.jwt_authz has no configuration"))?;
    let mut config: Value = serde_json::from_str(slot.as_str().unwrap_or_default())?;
    let issuers = config["issuers"]
        .as_array_mut()
        .ok_or_else(|| err("jwt-authz configuration has no issuers"))?;
    for issuer in issuers.iter_mut() {
        if issuer["issuer"] != MANIFEST_ISSUER
            || issuer["remoteJwks"]["cluster"] != MANIFEST_JWKS_CLUSTER
        {
            return Err(err(format!(
                "jwt-authz issuer {} / cluster {} is not the one the local gateway overrides",
                issuer["issuer"], issuer["remoteJwks"]["cluster"]
            )));
        }
        issuer["issuer"] = json!(DEV_ISSUER);
    }
    *slot = json!(config.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn manifests() -> Vec<Value> {
        render_manifests(&crate::paths::repo_root()).unwrap()
    }

    fn route<'a>(vhost: &'a Value, name: &str) -> &'a Value {
        vhost["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no route {name}"))
    }

    #[test]
    fn routes_carry_the_virtual_services_timeouts_and_retries() {
        let objects = manifests();
        let (gateway, _) = envoyfilter::simulate(&objects, Baseline::FULL).unwrap();
        let vhost = virtual_host(&objects, &gateway.route_config).unwrap();
        assert_eq!(
            vhost["domains"],
            json!([
                "api.exchange.example.com",
                "api.exchange.example.com:*",
                "127.0.0.1",
                "127.0.0.1:*",
                "localhost",
                "localhost:*"
            ])
        );
        // The EnvoyFilter's VIRTUAL_HOST patch survives.
        assert!(vhost["request_headers_to_remove"]
            .as_array()
            .unwrap()
            .contains(&json!("x-rl-user")));

        let read = route(&vhost, "trade-read");
        assert_eq!(read["match"]["prefix"], "/api/v1/trade/");
        assert_eq!(
            read["match"]["headers"][0]["string_match"]["safe_regex"]["regex"],
            "^(GET|HEAD)$"
        );
        assert_eq!(read["route"]["timeout"], "2s");
        assert_eq!(read["route"]["retry_policy"]["num_retries"], 2);
        assert_eq!(read["route"]["retry_policy"]["per_try_timeout"], "1s");
        assert_eq!(
            read["route"]["retry_policy"]["retry_on"],
            "5xx,connect-failure,refused-stream"
        );
        // Writes are only retried when they never reached the upstream.
        let write = route(&vhost, "wallet-write");
        assert_eq!(write["route"]["timeout"], "10s");
        assert_eq!(
            write["route"]["retry_policy"]["retry_on"],
            "connect-failure,refused-stream"
        );
        // attempts: 0 → no retry policy at all.
        assert!(route(&vhost, "risk-other")["route"]
            .get("retry_policy")
            .is_none());
        assert_eq!(route(&vhost, "healthz")["direct_response"]["status"], 200);
    }

    #[test]
    fn a_virtual_service_field_without_translation_is_an_error() {
        let entry = json!({"name": "x", "route": [{"destination": {"host": "h", "port": {"number": 1}}}],
            "retries": {"attempts": 0}, "mirror": {"host": "elsewhere"}});
        let error = vs_routes(&entry).unwrap_err().to_string();
        assert!(error.contains("mirror"), "{error}");
        // And no `retries` (Istio's default policy) is refused too.
        let entry = json!({"route": [{"destination": {"host": "h", "port": {"number": 1}}}]});
        assert!(vs_routes(&entry).is_err());
    }

    #[test]
    fn destination_rules_become_circuit_breakers_and_outlier_detection() {
        let objects = manifests();
        let rule = objects
            .iter()
            .find(|o| o["kind"] == "DestinationRule" && o["metadata"]["name"] == "svc-wallet")
            .unwrap();
        let path = Path::new("/x");
        let ports = BTreeMap::new();
        let inputs = LocalInputs {
            dist_dir: path,
            https: Port::Pick("https"),
            http: Port::Pick("http"),
            readiness: Port::Pick("readiness"),
            stats: Port::Pick("stats"),
            upstream_ports: &ports,
            rls_port: 1,
            jwks_port: 2,
            ca_path: path,
            listener_cert: path,
            listener_key: path,
            client_cert: path,
            client_key: path,
        };
        let host = "svc-wallet.wallet.svc.cluster.local";
        let cluster = upstream_cluster("c", host, &[3, 4], rule, &inputs).unwrap();
        let thresholds = &cluster["circuit_breakers"]["thresholds"][0];
        assert_eq!(thresholds["max_connections"], 256);
        assert_eq!(thresholds["max_pending_requests"], 256);
        assert_eq!(thresholds["max_requests"], 1024);
        assert_eq!(thresholds["max_retries"], 32);
        assert_eq!(cluster["connect_timeout"], "1s");
        let outlier = &cluster["outlier_detection"];
        assert_eq!(outlier["consecutive_gateway_failure"], 5);
        assert_eq!(outlier["enforcing_consecutive_gateway_failure"], 100);
        assert_eq!(outlier["max_ejection_percent"], 50);
        assert_eq!(
            cluster["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
                ["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "spiffe://cluster.local/ns/wallet/sa/svc-wallet"
        );
    }

    fn policy<'a>(filter: &'a Value, name: &str) -> &'a Value {
        let policy = &filter["typed_config"]["rules"]["policies"][name];
        assert!(policy.is_object(), "no policy {name} in {filter}");
        policy
    }

    #[test]
    fn authorization_policies_become_istios_rbac_filters_deny_before_allow() {
        let filters = rbac_filters(&manifests()).unwrap();
        let actions: Vec<&Value> = filters
            .iter()
            .map(|f| &f["typed_config"]["rules"]["action"])
            .collect();
        assert_eq!(actions, [&json!("DENY"), &json!("ALLOW")]);

        // DENY: /api/* without a verified principal (NOT (iss AND sub present)).
        let deny = policy(
            &filters[0],
            "ns[gateway]-policy[require-jwt-on-api]-rule[0]",
        );
        assert_eq!(
            deny["permissions"][0]["and_rules"]["rules"][0]["or_rules"]["rules"][0]["url_path"]
                ["path"],
            json!({"prefix": "/api/"})
        );
        let no_principal = &deny["principals"][0]["and_ids"]["ids"][0]["not_id"]["or_ids"]["ids"]
            [0]["and_ids"]["ids"];
        assert_eq!(
            no_principal[0]["metadata"],
            json!({"filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": "payload"}, {"key": "iss"}],
                "value": {"string_match": {"safe_regex": {"regex": ".+"}}}})
        );

        // ALLOW: the manifests' issuer is the dev issuer locally; aud is checked as a claim
        // that may be a list.
        let trade = policy(
            &filters[1],
            "ns[gateway]-policy[allow-api-by-audience]-rule[0]",
        );
        let ids = &trade["principals"][0]["and_ids"]["ids"];
        assert_eq!(
            ids[0]["or_ids"]["ids"][0]["and_ids"]["ids"][0]["metadata"]["value"],
            json!({"string_match": {"exact": DEV_ISSUER}})
        );
        let audience = &ids[1]["metadata"];
        assert_eq!(
            audience["path"],
            json!([{"key": "payload"}, {"key": "aud"}])
        );
        assert_eq!(
            audience["value"]["or_match"]["value_matchers"][0],
            json!({"list_match": {"one_of": {"string_match": {"exact": "svc-trading-api"}}}})
        );
        assert_eq!(
            trade["permissions"][0]["and_rules"]["rules"][0]["or_rules"]["rules"][0]["url_path"]
                ["path"],
            json!({"prefix": "/api/v1/trade/"})
        );

        // Health: no principal needed, GET/HEAD on two exact paths.
        let health = policy(&filters[1], "ns[gateway]-policy[allow-health]-rule[0]");
        assert_eq!(health["principals"], json!([{"any": true}]));
        let rules = &health["permissions"][0]["and_rules"]["rules"];
        assert_eq!(
            rules[0]["or_rules"]["rules"][1]["url_path"]["path"],
            json!({"exact": "/readyz"})
        );
        assert_eq!(
            rules[1]["or_rules"]["rules"][0]["header"],
            json!({"name": ":method", "string_match": {"exact": "GET"}})
        );
    }

    /// The HCM's no-token mapper (401 instead of rbac's 403) matches rbac's
    /// `enforced_effective_policy_id`: the id must be the one the local DENY filter records,
    /// which is istiod's name for the rule in the namespace kustomize deploys it in.
    #[test]
    fn the_no_token_mapper_names_the_rule_the_local_deny_filter_enforces() {
        use manifest_check::local_reply::{self, Kind};
        let objects = manifests();
        let (gateway, _) = envoyfilter::simulate(&objects, Baseline::FULL).unwrap();
        let ids: Vec<String> = gateway.hcm["typed_config"]["local_reply_config"]["mappers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| match local_reply::classify(m) {
                Ok(Kind::RbacNoToken(id)) => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["ns[gateway]-policy[require-jwt-on-api]-rule[0]"]);
        let filters = rbac_filters(&objects).unwrap();
        let deny = &filters[0]["typed_config"]["rules"];
        assert_eq!(deny["action"], "DENY");
        let policies = deny["policies"].as_object().unwrap();
        assert_eq!(policies.keys().collect::<Vec<_>>(), [&ids[0]]);
        // The rule is "no verified principal" (NOT iss AND sub) on /api/*, nothing else.
        let rule = &policies[&ids[0]];
        assert!(rule["principals"][0]["and_ids"]["ids"][0]["not_id"].is_object());
        assert_eq!(
            rule["principals"][0]["and_ids"]["ids"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Another namespace gives another id, which the mapper would not match.
        let mut moved = objects.clone();
        for policy in moved
            .iter_mut()
            .filter(|o| o["kind"] == "AuthorizationPolicy")
        {
            policy["metadata"]["namespace"] = json!("edge");
        }
        let moved = rbac_filters(&moved).unwrap();
        assert!(moved[0]["typed_config"]["rules"]["policies"]
            .get(&ids[0])
            .is_none());
    }

    #[test]
    fn an_authorization_policy_field_without_translation_is_an_error() {
        let policy = |spec: Value| {
            vec![json!({"kind": "AuthorizationPolicy",
                "metadata": {"name": "p", "namespace": "gateway"}, "spec": spec})]
        };
        let selector = json!({"matchLabels": {"istio": "ingressgateway"}});
        for (spec, field) in [
            (
                json!({"selector": selector, "rules": [{"to": [{"operation": {"hosts": ["a"]}}]}]}),
                "hosts",
            ),
            (
                json!({"selector": selector, "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}),
                "ipBlocks",
            ),
            (
                json!({"selector": selector, "rules": [{"when": [{"key": "source.ip", "values": ["1.2.3.4"]}]}]}),
                "source.ip",
            ),
            (json!({"selector": selector, "action": "CUSTOM"}), "CUSTOM"),
            (
                json!({"selector": selector, "targetRefs": []}),
                "targetRefs",
            ),
            (
                json!({"selector": selector, "rules": [{"from": [{"source": {"requestPrincipals": ["https://other.example/*"]}}]}]}),
                "other.example",
            ),
        ] {
            let error = rbac_filters(&policy(spec)).unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
        }
        // A policy for other workloads is skipped, not translated.
        let other = policy(json!({"selector": {"matchLabels": {"app": "svc-wallet"}},
            "rules": [{"to": [{"operation": {"hosts": ["a"]}}]}]}));
        assert_eq!(rbac_filters(&other).unwrap(), Vec::<Value>::new());
    }
}
