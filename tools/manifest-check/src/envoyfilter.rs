//! The EnvoyFilters of `envoyfilter-manifests/`, checked the way Istio and Envoy will see them.
//!
//! * [`IstioSim`] applies EnvoyFilter patch sets to a baseline of what istiod generates for
//!   the ingress gateway (one HCM filter chain, its route configuration, the clusters our
//!   patches reference) with Istio's rules: root-namespace patch sets first, then ascending
//!   `priority`, then creation time, then name; patches of one set in list order; an
//!   anchor (`subFilter`) that matches nothing means the patch is silently skipped.
//!   Anything it does not model is an error, never a silent pass.
//! * [`check_order`]: the ORDER CONTRACT of DESIGN.md §3 over several baselines (with and
//!   without `istio.stats`, without `rbac` when no AuthorizationPolicy selects the pod).
//! * [`bootstrap`]: an Envoy bootstrap built from the patched configuration (not a
//!   hand-copied twin) with the module paths pointed at `dist/`, for `envoy --mode
//!   validate`, which also starts each wasm VM and runs its `on_configure`.
//! * [`check_modules`]: each module ConfigMap stays under 1 MiB, carries the module built in
//!   `dist/`, and every recorded sha256 matches; the gateway Deployment mounts each module
//!   at the path its EnvoyFilter loads it from.
//! * [`crate::ratelimit`] (run by [`check_all`]): the rate-limit service configuration and
//!   the filter's descriptor actions agree.
//! * [`crate::local_reply`] (run by [`check_all`]): each local reply mapper only rewrites the
//!   replies it is meant for, in the order that lets it.

// Reads go through serde_json's `Index` (`v["a"]["b"]`), which never panics: a missing key
// or a non-object yields `Null`. Every write uses `get_mut`/`pointer_mut`/`as_*_mut`.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::kustomize;

pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const ROOT_NAMESPACE: &str = "istio-system";
/// Where the module ConfigMaps are mounted in the gateway pods.
pub const MODULE_DIR: &str = "/etc/istio/extensions/";
pub const SHA_ANNOTATION: &str = "svc-gateway.io/module-sha256";
/// The Kubernetes object size limit the module ConfigMaps must stay under.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// DESIGN.md §3, decode order. `istio.stats` is Istio's and sits wherever Istio puts it
/// (before the router); the contract is about every other position.
pub const DESIGN_ORDER: &[&str] = &[
    "svcgw.security_headers",
    "envoy.filters.http.jwt_authn",
    "istio_authn",
    "envoy.filters.http.rbac",
    "istio.stats",
    "svcgw.jwt_authz",
    "svcgw.ratelimit_tagger",
    "envoy.filters.http.local_ratelimit",
    "envoy.filters.http.ratelimit",
    ROUTER,
];

/// Istio's own filters that upstream Envoy has no extension for: they keep their place in
/// the simulation but are left out of the bootstrap for `envoy --mode validate` (they are
/// not our patch values).
pub const ISTIO_ONLY_FILTERS: &[&str] = &["istio_authn", "istio.stats"];

/// Labels of the gateway pods (istio/ingressgateway/deployment.yaml).
pub fn gateway_pod_labels() -> BTreeMap<String, String> {
    [("istio", "ingressgateway"), ("app", "istio-ingressgateway")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether a selector's labels (an EnvoyFilter's `workloadSelector.labels`, a policy's
/// `selector.matchLabels`) pick the gateway pods. No selector selects every pod in scope.
pub fn selects_gateway_pods(selector_labels: &Value) -> bool {
    let labels = gateway_pod_labels();
    selector_labels
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

/// What istiod generates for the gateway, reduced to what our patches touch.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The HCM network filter (`name`, `typed_config` with `http_filters`).
    pub hcm: Value,
    pub route_config: Value,
    pub clusters: Vec<Value>,
}

/// Which of Istio's HTTP filters the baseline has.
#[derive(Clone, Copy, Debug)]
pub struct Baseline {
    pub stats: bool,
    /// Istio only adds rbac when an AuthorizationPolicy selects the workload.
    pub rbac: bool,
    /// cors/fault, which Istio adds for VirtualService features.
    pub cors_fault: bool,
}

impl Baseline {
    /// The brief's baseline: `[jwt_authn, istio_authn, rbac, istio.stats, router]`.
    pub const FULL: Baseline = Baseline {
        stats: true,
        rbac: true,
        cors_fault: false,
    };
    pub const ALL: &'static [Baseline] = &[
        Baseline::FULL,
        Baseline {
            stats: false,
            rbac: true,
            cors_fault: false,
        },
        Baseline {
            stats: true,
            rbac: false,
            cors_fault: false,
        },
        Baseline {
            stats: true,
            rbac: true,
            cors_fault: true,
        },
    ];

    pub fn http_filters(self) -> Vec<Value> {
        let f = |name: &str, ty: &str| json!({"name": name, "typed_config": {"@type": ty}});
        let mut out =
            vec![
            f(
                "envoy.filters.http.jwt_authn",
                "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            ),
            f("istio_authn", "type.googleapis.com/io.istio.network.authn.Config"),
        ];
        if self.rbac {
            out.push(f(
                "envoy.filters.http.rbac",
                "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            ));
        }
        if self.cors_fault {
            out.push(f(
                "envoy.filters.http.cors",
                "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
            ));
            out.push(f(
                "envoy.filters.http.fault",
                "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            ));
        }
        if self.stats {
            out.push(f("istio.stats", "type.googleapis.com/stats.PluginConfig"));
        }
        out.push(f(
            ROUTER,
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        ));
        out
    }

    /// DESIGN_ORDER restricted to the Istio filters this baseline has.
    pub fn expected_order(self) -> Vec<String> {
        let istio: Vec<String> = self
            .http_filters()
            .iter()
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect();
        // Ours always; Istio's only where this baseline has them.
        let ours_or_present = |n: &str| {
            n.starts_with("svcgw.")
                || istio.iter().any(|i| i == n)
                || matches!(
                    n,
                    "envoy.filters.http.local_ratelimit" | "envoy.filters.http.ratelimit"
                )
        };
        let mut out: Vec<String> = DESIGN_ORDER
            .iter()
            .filter(|n| ours_or_present(n))
            .map(|s| (*s).to_owned())
            .collect();
        if self.cors_fault {
            // Istio puts cors/fault before istio.stats; our filters still go right before
            // the router, after them.
            let at = out
                .iter()
                .position(|n| n == "istio.stats" || n == "svcgw.jwt_authz")
                .unwrap_or(out.len());
            out.insert(at, "envoy.filters.http.fault".into());
            out.insert(at, "envoy.filters.http.cors".into());
        }
        out
    }

    pub fn config(self) -> GatewayConfig {
        let cluster = |name: &str, host: &str, port: u16, h2: bool| {
            let mut c = json!({
                "name": name,
                "type": "STRICT_DNS",
                "connect_timeout": "10s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                ]}]}
            });
            if let (true, Some(m)) = (h2, c.as_object_mut()) {
                m.insert("typed_extension_protocol_options".into(), json!({
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                }));
            }
            c
        };
        let route = |prefix: &str, cluster: &str| json!({"match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": "5s"}});
        let trade = "outbound|8080||svc-trading-api.trading.svc.cluster.local";
        let wallet = "outbound|8080||svc-wallet.wallet.svc.cluster.local";
        let risk = "outbound|8080||svc-risk-control.risk.svc.cluster.local";
        GatewayConfig {
            hcm: json!({
                "name": HCM,
                "typed_config": {
                    "@type": HCM_TYPE,
                    "stat_prefix": "outbound_0.0.0.0_8443",
                    "http_filters": self.http_filters(),
                }
            }),
            route_config: json!({
                "name": "https.443.https.svc-gateway.gateway",
                "virtual_hosts": [{
                    "name": "api.exchange.example.com:443",
                    "domains": ["api.exchange.example.com", "api.exchange.example.com:*"],
                    "routes": [
                        route("/api/v1/trade/", trade),
                        route("/api/v1/wallet/", wallet),
                        route("/api/v1/risk/", risk),
                    ]
                }]
            }),
            clusters: vec![
                cluster(
                    trade,
                    "svc-trading-api.trading.svc.cluster.local",
                    8080,
                    true,
                ),
                cluster(wallet, "svc-wallet.wallet.svc.cluster.local", 8080, true),
                cluster(risk, "svc-risk-control.risk.svc.cluster.local", 8080, true),
                cluster(
                    "outbound|8081||ratelimit.gateway.svc.cluster.local",
                    "ratelimit.gateway.svc.cluster.local",
                    8081,
                    true,
                ),
                cluster(
                    "outbound|443||auth.exchange.example.com",
                    "auth.exchange.example.com",
                    443,
                    false,
                ),
            ],
        }
    }
}

impl GatewayConfig {
    pub fn http_filters(&self) -> &[Value] {
        self.hcm["typed_config"]["http_filters"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn http_filter_names(&self) -> Vec<String> {
        self.http_filters()
            .iter()
            .map(|f| f["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn http_filters_mut(&mut self) -> Result<&mut Vec<Value>> {
        self.hcm
            .pointer_mut("/typed_config/http_filters")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| anyhow!("baseline HCM has no http_filters"))
    }
}

/// Istio's proto merge on the JSON form: messages merge field by field, repeated fields
/// are appended, scalars (and well-known scalar types such as Duration) are replaced.
pub fn proto_merge(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) => proto_merge(existing, v),
                    None => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(s)) => d.extend(s.iter().cloned()),
        (d, s) => *d = s.clone(),
    }
}

/// The EnvoyFilters that select the gateway pods, in Istio's application order.
pub fn applicable(objs: &[Value]) -> Result<Vec<Value>> {
    let mut efs: Vec<Value> = objs
        .iter()
        .filter(|o| o["kind"] == "EnvoyFilter")
        .filter(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
            (ns == ROOT_NAMESPACE || ns == "gateway")
                && selects_gateway_pods(&o["spec"]["workloadSelector"]["labels"])
        })
        .cloned()
        .collect();
    let key = |o: &Value| {
        (
            o["metadata"]["namespace"] != ROOT_NAMESPACE,
            o["spec"]["priority"].as_i64().unwrap_or(0),
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    efs.sort_by_key(key);
    // Equal priority: istiod orders by creation time, which nothing here controls.
    for w in efs.windows(2) {
        if let [a, b] = w {
            let (ka, kb) = (key(a), key(b));
            if ka.0 == kb.0 && ka.1 == kb.1 {
                bail!(
                    "EnvoyFilters {} and {} share priority {}: their patch order would depend on creation time",
                    ka.3,
                    kb.3,
                    ka.1
                );
            }
        }
    }
    Ok(efs)
}

/// One patch's outcome, like istiod's `pilot_envoy_filter_status` (applied / not applied).
#[derive(Debug, Clone)]
pub struct PatchResult {
    pub envoy_filter: String,
    pub index: usize,
    pub apply_to: String,
    pub operation: String,
    pub applied: bool,
}

/// Applies every patch of `efs` (already in application order) to `cfg`.
pub fn apply(cfg: &mut GatewayConfig, efs: &[Value]) -> Result<Vec<PatchResult>> {
    let mut results = Vec::new();
    for ef in efs {
        let ef_name = ef["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        let patches = ef["spec"]["configPatches"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (index, p) in patches.iter().enumerate() {
            let apply_to = p["applyTo"].as_str().unwrap_or_default().to_owned();
            let op = p["patch"]["operation"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let ctx = p["match"]["context"].as_str().unwrap_or("ANY");
            let here = format!("{ef_name} configPatches[{index}] ({apply_to} {op})");
            let applied = if !matches!(ctx, "GATEWAY" | "ANY") {
                false
            } else {
                apply_one(cfg, p, &apply_to, &op).with_context(|| here.clone())?
            };
            results.push(PatchResult {
                envoy_filter: ef_name.clone(),
                index,
                apply_to,
                operation: op,
                applied,
            });
        }
    }
    Ok(results)
}

fn apply_one(cfg: &mut GatewayConfig, p: &Value, apply_to: &str, op: &str) -> Result<bool> {
    let value = &p["patch"]["value"];
    let m = &p["match"];
    for unsupported in ["proxy"] {
        if m.get(unsupported).is_some() {
            bail!("match.{unsupported} is not modelled");
        }
    }
    match apply_to {
        "HTTP_FILTER" => {
            let fc = &m["listener"]["filterChain"];
            if fc["filter"]["name"].as_str().is_some_and(|n| n != HCM) {
                return Ok(false);
            }
            if let Some(unknown) = extra_keys(&m["listener"], &["filterChain", "portNumber"])
                .or_else(|| extra_keys(fc, &["filter"]))
                .or_else(|| extra_keys(&fc["filter"], &["name", "subFilter"]))
            {
                bail!("match.listener.{unknown} is not modelled");
            }
            if m["listener"]["portNumber"]
                .as_u64()
                .is_some_and(|p| p != 8443 && p != 443)
            {
                return Ok(false);
            }
            let anchor = fc["filter"]["subFilter"]["name"].as_str();
            let filters = cfg.http_filters_mut()?;
            let pos = anchor.and_then(|a| filters.iter().position(|f| f["name"] == a));
            let need_anchor = || -> Result<Option<usize>> {
                if anchor.is_none() {
                    bail!("{op} needs match.listener.filterChain.filter.subFilter.name");
                }
                Ok(pos)
            };
            match op {
                "INSERT_FIRST" => {
                    if anchor.is_some() && pos.is_none() {
                        return Ok(false);
                    }
                    filters.insert(0, value.clone());
                }
                "ADD" => filters.push(value.clone()),
                "INSERT_BEFORE" => match need_anchor()? {
                    Some(i) => filters.insert(i, value.clone()),
                    None => return Ok(false),
                },
                "INSERT_AFTER" => match need_anchor()? {
                    Some(i) => filters.insert(i + 1, value.clone()),
                    None => return Ok(false),
                },
                "REMOVE" => match need_anchor()? {
                    Some(i) => {
                        filters.remove(i);
                    }
                    None => return Ok(false),
                },
                "REPLACE" => match need_anchor()? {
                    Some(i) => {
                        if let Some(slot) = filters.get_mut(i) {
                            *slot = value.clone();
                        }
                    }
                    None => return Ok(false),
                },
                "MERGE" => match need_anchor()? {
                    Some(i) => {
                        if let Some(slot) = filters.get_mut(i) {
                            merge_typed(slot, value)?;
                        }
                    }
                    None => return Ok(false),
                },
                other => bail!("operation {other} is not modelled for HTTP_FILTER"),
            }
            Ok(true)
        }
        "NETWORK_FILTER" => {
            let name = m["listener"]["filterChain"]["filter"]["name"].as_str();
            if name != Some(HCM) {
                bail!("only NETWORK_FILTER patches on the HCM are modelled");
            }
            match op {
                "MERGE" => {
                    merge_typed(&mut cfg.hcm, value)?;
                    Ok(true)
                }
                other => bail!("operation {other} is not modelled for NETWORK_FILTER"),
            }
        }
        "VIRTUAL_HOST" => {
            if let Some(unknown) = extra_keys(&m["routeConfiguration"], &["vhost"])
                .or_else(|| extra_keys(&m["routeConfiguration"]["vhost"], &["name"]))
            {
                bail!("match.routeConfiguration.{unknown} is not modelled");
            }
            let want = m["routeConfiguration"]["vhost"]["name"].as_str();
            if op != "MERGE" {
                bail!("operation {op} is not modelled for VIRTUAL_HOST");
            }
            let mut any = false;
            for vh in cfg
                .route_config
                .get_mut("virtual_hosts")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if want.is_none_or(|w| vh["name"] == w) {
                    proto_merge(vh, value);
                    any = true;
                }
            }
            Ok(any)
        }
        "CLUSTER" => {
            let cm = &m["cluster"];
            if let Some(unknown) = extra_keys(cm, &["service", "portNumber", "subset", "name"]) {
                bail!("match.cluster.{unknown} is not modelled");
            }
            if op == "ADD" {
                cfg.clusters.push(value.clone());
                return Ok(true);
            }
            let matches = |c: &Value| {
                let name = c["name"].as_str().unwrap_or_default();
                let parts: Vec<&str> = name.split('|').collect();
                let (port, subset, host) = match parts.as_slice() {
                    [_, port, subset, host] => (*port, *subset, *host),
                    _ => ("", "", ""),
                };
                cm["name"].as_str().is_none_or(|n| n == name)
                    && cm["service"].as_str().is_none_or(|s| s == host)
                    && cm["portNumber"]
                        .as_u64()
                        .is_none_or(|p| p.to_string() == port)
                    && cm["subset"].as_str().is_none_or(|s| s == subset)
            };
            let mut any = false;
            match op {
                "MERGE" => {
                    for c in cfg.clusters.iter_mut().filter(|c| matches(c)) {
                        proto_merge(c, value);
                        any = true;
                    }
                }
                "REMOVE" => {
                    let before = cfg.clusters.len();
                    cfg.clusters.retain(|c| !matches(c));
                    any = cfg.clusters.len() != before;
                }
                other => bail!("operation {other} is not modelled for CLUSTER"),
            }
            Ok(any)
        }
        other => bail!("applyTo {other} is not modelled"),
    }
}

fn extra_keys(v: &Value, allowed: &[&str]) -> Option<String> {
    v.as_object()?
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
        .cloned()
}

/// MERGE of a filter: a `typed_config` of another type is an error (istiod would fail the
/// patch), the same type merges field by field.
fn merge_typed(dst: &mut Value, value: &Value) -> Result<()> {
    let (have, want) = (
        dst["typed_config"]["@type"].as_str(),
        value["typed_config"]["@type"].as_str(),
    );
    if let (Some(h), Some(w)) = (have, want) {
        if h != w {
            bail!("MERGE of a {w} into a {h}");
        }
    }
    proto_merge(dst, value);
    Ok(())
}

/// Applies the EnvoyFilters of `objs` to one baseline; every patch must apply.
pub fn simulate(objs: &[Value], base: Baseline) -> Result<(GatewayConfig, Vec<PatchResult>)> {
    let efs = applicable(objs)?;
    if efs.is_empty() {
        bail!("no EnvoyFilter selects the ingress gateway");
    }
    let mut cfg = base.config();
    let results = apply(&mut cfg, &efs)?;
    Ok((cfg, results))
}

/// The ORDER CONTRACT: on every baseline, every patch applies and the HTTP filter chain is
/// exactly DESIGN.md §3.
pub fn check_order(objs: &[Value]) -> Result<()> {
    for &base in Baseline::ALL {
        let (cfg, results) = simulate(objs, base)?;
        let skipped: Vec<String> = results
            .iter()
            .filter(|r| !r.applied)
            .map(|r| {
                format!(
                    "{} configPatches[{}] ({} {})",
                    r.envoy_filter, r.index, r.apply_to, r.operation
                )
            })
            .collect();
        if !skipped.is_empty() {
            bail!("{base:?}: patches that matched nothing: {skipped:?}");
        }
        let got = cfg.http_filter_names();
        let want = base.expected_order();
        if got != want {
            bail!("{base:?}: HTTP filter chain\n  is        {got:?}\n  DESIGN §3 {want:?}");
        }
    }
    Ok(())
}

/// Every wasm filter's module file (`vm_config.code.local.filename`).
pub fn wasm_modules(cfg: &GatewayConfig) -> Vec<(String, String)> {
    cfg.http_filters()
        .iter()
        .filter(|f| f["typed_config"]["@type"] == WASM_TYPE)
        .filter_map(|f| {
            let file = f
                .pointer("/typed_config/config/vm_config/code/local/filename")?
                .as_str()?;
            Some((f["name"].as_str()?.to_owned(), file.to_owned()))
        })
        .collect()
}

/// The Envoy bootstrap for `--mode validate`: the patched HCM on a listener with the patched
/// route configuration inline, the patched clusters, module paths pointing into `dist`.
pub fn bootstrap(cfg: &GatewayConfig, dist: &Path) -> Result<Value> {
    let mut hcm = cfg.hcm.clone();
    let filters = hcm
        .pointer_mut("/typed_config/http_filters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow!("no http_filters"))?;
    filters.retain(|f| !ISTIO_ONLY_FILTERS.contains(&f["name"].as_str().unwrap_or_default()));
    for f in filters.iter_mut() {
        if let Some(file) = f.pointer_mut("/typed_config/config/vm_config/code/local/filename") {
            let path = file.as_str().unwrap_or_default().to_owned();
            let base = path
                .strip_prefix(MODULE_DIR)
                .and_then(|rest| rest.rsplit('/').next())
                .ok_or_else(|| anyhow!("module {path} is not under {MODULE_DIR}"))?;
            let local = dist.join(base);
            if !local.is_file() {
                bail!("{} missing (run `make wasm`)", local.display());
            }
            *file = json!(local.display().to_string());
        }
    }
    let tc = hcm
        .get_mut("typed_config")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("HCM has no typed_config"))?;
    tc.insert("route_config".into(), cfg.route_config.clone());
    Ok(json!({
        "node": {"id": "manifest-check", "cluster": "istio-ingressgateway.gateway"},
        "static_resources": {
            "listeners": [{
                "name": "0.0.0.0_8443",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8443}},
                "filter_chains": [{"filters": [hcm]}]
            }],
            "clusters": cfg.clusters,
        }
    }))
}

/// `ENVOY_BIN`, else `build/bin/envoy` under the repository root.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("build/bin/envoy"))
        .components()
        .collect()
}

/// `SVC_GATEWAY_DIST`, else `dist/` under the repository root.
pub fn dist_dir() -> PathBuf {
    std::env::var_os("SVC_GATEWAY_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("dist"))
}

/// Runs `envoy --mode validate` on `bootstrap`; on success returns Envoy's log. Also fails
/// when a wasm filter did not log `configured` (its on_configure never accepted the config).
pub fn envoy_validate(envoy: &Path, bootstrap: &Value, wasm_roots: &[String]) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("manifest-check-envoy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!(
        "bootstrap-{}.json",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::write(&file, serde_json::to_vec_pretty(bootstrap)?)?;
    let out = Command::new(envoy)
        .args(["--mode", "validate", "-l", "info", "-c"])
        .arg(&file)
        .output()
        .with_context(|| format!("running {} (run `make envoy`)", envoy.display()))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        bail!("envoy --mode validate rejected the patched configuration:\n{log}");
    }
    if let Some(line) = log.lines().find(|l| l.contains("configuration rejected")) {
        bail!("a wasm filter rejected its configuration: {line}");
    }
    for root in wasm_roots {
        if !log
            .lines()
            .any(|l| l.contains(&format!("{root} ")) && l.contains(": configured"))
        {
            bail!("wasm filter {root} never logged `configured`:\n{log}");
        }
    }
    Ok(log)
}

/// Envoy validation of the patched configuration of one baseline.
pub fn validate_with_envoy(objs: &[Value], envoy: &Path, dist: &Path) -> Result<String> {
    let (cfg, _) = simulate(objs, Baseline::FULL)?;
    let roots: Vec<String> = cfg
        .http_filters()
        .iter()
        .filter(|f| f["typed_config"]["@type"] == WASM_TYPE)
        .filter_map(|f| {
            f.pointer("/typed_config/config/root_id")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    envoy_validate(envoy, &bootstrap(&cfg, dist)?, &roots)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Module ConfigMaps (every ConfigMap with binaryData `*.wasm`) and EnvoyFilter module
/// references, against `dist/` and the gateway Deployment. Returns the findings.
pub fn check_modules(objs: &[Value], dist: &Path) -> Result<Vec<String>> {
    let mut findings = Vec::new();
    // module file name -> (ConfigMap name, recorded sha256)
    let mut modules: BTreeMap<String, (String, String)> = BTreeMap::new();
    for cm in objs.iter().filter(|o| o["kind"] == "ConfigMap") {
        let Some(bin) = cm["binaryData"].as_object() else {
            continue;
        };
        let id = kustomize::id(cm);
        let size = stored_size(cm)?;
        if size >= MAX_OBJECT_BYTES {
            findings.push(format!(
                "MODULE {id}: {size} bytes, must stay under {MAX_OBJECT_BYTES} (1 MiB)"
            ));
        }
        let recorded = cm["metadata"]["annotations"][SHA_ANNOTATION]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for (key, v) in bin.iter().filter(|(k, _)| k.ends_with(".wasm")) {
            let bytes = kustomize::decode_binary(v.as_str().unwrap_or_default())
                .with_context(|| format!("{id} binaryData.{key}"))?;
            let actual = sha256_hex(&bytes);
            if recorded != actual {
                findings.push(format!(
                    "MODULE {id}: annotation {SHA_ANNOTATION} is {recorded:?}, the module is {actual} \
                     (a module changed: `cargo run -p manifest-check -- pin-modules envoyfilter-manifests`)"
                ));
            }
            let sha_file = dist.join(format!("{key}.sha256"));
            match std::fs::read_to_string(&sha_file) {
                Ok(t) => {
                    let dist_sha = t.split_whitespace().next().unwrap_or_default();
                    if dist_sha != actual {
                        findings.push(format!(
                            "MODULE {id}: {} says {dist_sha}, the packaged module is {actual}",
                            sha_file.display()
                        ));
                    }
                }
                Err(_) => findings.push(format!(
                    "MODULE {id}: {} missing (run `make wasm`)",
                    sha_file.display()
                )),
            }
            let name = cm["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            modules.insert(key.clone(), (name, recorded.clone()));
        }
    }
    let gateway = objs
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "istio-ingressgateway");
    for ef in objs.iter().filter(|o| o["kind"] == "EnvoyFilter") {
        let id = kustomize::id(ef);
        for p in ef["spec"]["configPatches"].as_array().into_iter().flatten() {
            let Some(file) = p
                .pointer("/patch/value/typed_config/config/vm_config/code/local/filename")
                .and_then(Value::as_str)
            else {
                continue;
            };
            let (dir, base) = file.rsplit_once('/').unwrap_or(("", file));
            let Some((cm_name, sha)) = modules.get(base) else {
                findings.push(format!("MODULE {id}: no ConfigMap carries {base}"));
                continue;
            };
            if ef["metadata"]["annotations"][SHA_ANNOTATION].as_str() != Some(sha.as_str()) {
                findings.push(format!(
                    "MODULE {id}: annotation {SHA_ANNOTATION} differs from ConfigMap {cm_name}'s"
                ));
            }
            if let Some(d) = gateway {
                if !mounts(d, dir, cm_name) {
                    findings.push(format!(
                        "MODULE {id}: Deployment istio-ingressgateway does not mount ConfigMap \
                         {cm_name} (optional: false) at {dir}"
                    ));
                }
            }
        }
    }
    if gateway.is_none() && !modules.is_empty() {
        findings.push("MODULE: Deployment istio-ingressgateway not rendered (pass istio/)".into());
    }
    Ok(findings)
}

/// The size of a ConfigMap as the API server stores it: the raw (decoded) bytes of every
/// `data` / `binaryData` value plus the rest of the object. The API server itself rejects
/// more than 1 MiB of values (`MaxSecretSize`); counting the metadata too keeps a margin
/// for etcd. (In JSON, base64 makes a 757 KB module about 1.01 MB on the wire; that is
/// not what is limited.)
pub fn stored_size(cm: &Value) -> Result<usize> {
    let mut rest = cm.clone();
    let mut size = 0;
    if let Some(o) = rest.as_object_mut() {
        for (k, v) in o
            .remove("data")
            .and_then(|d| d.as_object().cloned())
            .unwrap_or_default()
        {
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        for (k, v) in o
            .remove("binaryData")
            .and_then(|d| d.as_object().cloned())
            .unwrap_or_default()
        {
            size += k.len() + kustomize::decode_binary(v.as_str().unwrap_or_default())?.len();
        }
    }
    Ok(size + serde_json::to_vec(&rest)?.len())
}

fn mounts(deploy: &Value, dir: &str, cm: &str) -> bool {
    let spec = &deploy["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["configMap"]["name"] == cm && v["configMap"]["optional"] == json!(false));
    let Some(vname) = volume.and_then(|v| v["name"].as_str()) else {
        return false;
    };
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == "istio-proxy")
        .flat_map(|c| c["volumeMounts"].as_array().cloned().unwrap_or_default())
        .any(|m| m["name"] == vname && m["mountPath"] == dir && m.get("subPath").is_none())
}

/// Rewrites every recorded module sha256 under `dir` to the one in `dist/<module>.sha256`.
/// Returns the modules whose record changed.
pub fn pin_modules(dir: &Path, dist: &Path) -> Result<Vec<String>> {
    let objs = kustomize::render(dir)?;
    let mut replacements: Vec<(String, String, String)> = Vec::new();
    for cm in objs.iter().filter(|o| o["kind"] == "ConfigMap") {
        let recorded = cm["metadata"]["annotations"][SHA_ANNOTATION].as_str();
        for key in cm["binaryData"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            let sha_file = dist.join(format!("{key}.sha256"));
            let t = std::fs::read_to_string(&sha_file)
                .with_context(|| format!("{} (run `make wasm`)", sha_file.display()))?;
            let new = t.split_whitespace().next().unwrap_or_default().to_owned();
            if let Some(old) = recorded {
                if old != new {
                    replacements.push((key.clone(), old.to_owned(), new));
                }
            }
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let mut new_text = text.clone();
        for (_, old, new) in &replacements {
            new_text = new_text.replace(
                &format!("{SHA_ANNOTATION}: {old}"),
                &format!("{SHA_ANNOTATION}: {new}"),
            );
        }
        if new_text != text {
            std::fs::write(&path, new_text)?;
        }
    }
    Ok(replacements
        .into_iter()
        .map(|(k, _, n)| format!("{k} {n}"))
        .collect())
}

/// Everything above for the rendered `dirs`; returns findings (empty = pass).
pub fn check_all(objs: &[Value], envoy: &Path, dist: &Path) -> Result<Vec<String>> {
    let mut findings = check_modules(objs, dist)?;
    if let Err(e) = check_order(objs) {
        findings.push(format!("ORDER: {e:#}"));
    }
    match validate_with_envoy(objs, envoy, dist) {
        Ok(_) => {}
        Err(e) => findings.push(format!("ENVOY: {e:#}")),
    }
    // Which replies each local reply mapper rewrites (first match wins; Envoy only checks
    // that they parse).
    findings.extend(crate::local_reply::check(objs)?);
    // The rate-limit path: the service configuration shipped byte for byte, loaded as
    // envoyproxy/ratelimit expects, and in agreement with the filter's descriptor actions.
    findings.extend(crate::ratelimit::check_all(objs, &crate::repo_root())?);
    Ok(findings)
}

/// The objects of several kustomize entry points.
pub fn render_all(dirs: &[PathBuf]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for d in dirs {
        out.extend(kustomize::render(d)?);
    }
    Ok(out)
}
