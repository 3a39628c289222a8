//! The global rate-limit path across files: what Envoy's `ratelimit` filter sends (the
//! descriptor actions of `envoyfilter-manifests/envoyfilter-ratelimit.yaml` over the headers
//! ratelimit-tagger writes) against what envoyproxy/ratelimit is configured to limit
//! (`filters/ratelimit-tagger/envoy/ratelimit-service.yaml`, shipped as the byte-identical
//! copy `istio/ratelimit/config.yaml`), and how the service's Deployment loads that file.
//!
//! * [`check_copy`]: the copy kustomize packages is the tagger's file, byte for byte.
//! * [`check_service`]: a ConfigMap ships that exact text under a `*.yaml` key, and the
//!   envoyproxy/ratelimit Deployment mounts it at `RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config/`
//!   (no `subPath`, `RUNTIME_WATCH_ROOT=false`, dotfiles ignored), talks to Redis over TCP
//!   with a short timeout, and the filter's domain is the file's (`svc-gateway`).
//! * [`check_descriptors`]: the descriptor actions live on the filter (route/vhost
//!   `rate_limits` never send `hits_addend` on Envoy 1.39.3), every one counts the tagger's
//!   weight header, and the descriptors they build from every value the tagger can write hit
//!   a limit of the service; every limit of the service is reachable by some descriptor.
//!   Matching is envoyproxy/ratelimit's: per entry, a node with the same key and value, else
//!   the node with the key and no value.

// Reads go through serde_json's `Index`, which never panics (missing = Null).
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::kustomize;

/// The service configuration as ratelimit-tagger defines and tests it (rls-peer loads it).
pub const SERVICE_SOURCE: &str = "filters/ratelimit-tagger/envoy/ratelimit-service.yaml";
/// The copy `istio/ratelimit/` packages (kustomize only reads files below its directory).
pub const SERVICE_COPY: &str = "istio/ratelimit/config.yaml";
pub const RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit";
/// The domain of the gateway's descriptors.
pub const DOMAIN: &str = "svc-gateway";
/// Redis must answer (or fail) well within this; envoyproxy/ratelimit's default is 10s.
pub const MAX_REDIS_TIMEOUT_MS: u64 = 1000;

/// The service configuration source (`SERVICE_SOURCE` under `root`).
pub fn load_service(root: &Path) -> Result<(String, Value)> {
    let path = root.join(SERVICE_SOURCE);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let v: Value = serde_yaml::from_str(&text).with_context(|| path.display().to_string())?;
    Ok((text, v))
}

/// `SERVICE_COPY` is byte-identical to `SERVICE_SOURCE`.
pub fn check_copy(root: &Path) -> Vec<String> {
    let (src, copy) = (root.join(SERVICE_SOURCE), root.join(SERVICE_COPY));
    match (std::fs::read(&src), std::fs::read(&copy)) {
        (Ok(a), Ok(b)) if a == b => Vec::new(),
        (Ok(_), Ok(_)) => vec![format!(
            "RATELIMIT: {SERVICE_COPY} differs from {SERVICE_SOURCE}; the manifests must ship \
             the tested file: cp {SERVICE_SOURCE} {SERVICE_COPY}"
        )],
        (a, b) => vec![format!(
            "RATELIMIT: cannot compare {SERVICE_COPY} with {SERVICE_SOURCE}: {:?} / {:?}",
            a.err().map(|e| e.to_string()),
            b.err().map(|e| e.to_string())
        )],
    }
}

/// The `envoy.filters.http.ratelimit` typed_configs of the EnvoyFilter patches.
fn ratelimit_filters(objs: &[Value]) -> Vec<(String, &Value)> {
    objs.iter()
        .filter(|o| o["kind"] == "EnvoyFilter")
        .flat_map(|ef| {
            let id = kustomize::id(ef);
            ef["spec"]["configPatches"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["patch"]["value"]["typed_config"]["@type"] == RATELIMIT_TYPE)
                .map(move |p| (id.clone(), &p["patch"]["value"]["typed_config"]))
        })
        .collect()
}

fn env_of(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}

/// A Go duration of the simple forms envoyproxy/ratelimit is given (`250ms`, `1s`, `150us`),
/// in milliseconds (rounded down).
fn go_duration_ms(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ns" => Some(n / 1_000_000),
        "us" | "µs" => Some(n / 1000),
        "ms" => Some(n),
        "s" => Some(n * 1000),
        "m" => Some(n * 60_000),
        _ => None,
    }
}

/// The shipped ConfigMap carries `service_text`, the service Deployment loads it the way
/// envoyproxy/ratelimit reads its configuration, and the domain agrees with the filter.
pub fn check_service(objs: &[Value], service_text: &str, service: &Value) -> Vec<String> {
    let mut findings = Vec::new();
    if service["domain"] != DOMAIN {
        findings.push(format!(
            "RATELIMIT: {SERVICE_SOURCE} has domain {}, the gateway's is {DOMAIN}",
            service["domain"]
        ));
    }
    for (id, tc) in ratelimit_filters(objs) {
        if tc["domain"] != service["domain"] {
            findings.push(format!(
                "RATELIMIT {id}: ratelimit filter domain {} is not the service's {}",
                tc["domain"], service["domain"]
            ));
        }
    }
    // The ConfigMap(s) shipping the exact text.
    let shipping: Vec<(&Value, String)> = objs
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .flat_map(|cm| {
            cm["data"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.as_str() == Some(service_text))
                .map(move |(k, _)| (cm, k.clone()))
        })
        .collect();
    let [(cm, key)] = shipping.as_slice() else {
        findings.push(format!(
            "RATELIMIT: {} ConfigMaps ship {SERVICE_SOURCE} byte for byte, want exactly one \
             (istio/ratelimit/ configMapGenerator over {SERVICE_COPY})",
            shipping.len()
        ));
        return findings;
    };
    let cm_name = cm["metadata"]["name"].as_str().unwrap_or_default();
    let cm_ns = &cm["metadata"]["namespace"];
    if !key.ends_with(".yaml") {
        findings.push(format!(
            "RATELIMIT ConfigMap {cm_name}: key {key} must end in .yaml (envoyproxy/ratelimit loads *.yaml)"
        ));
    }
    // Every other key of that ConfigMap is loaded too (same directory).
    if cm["data"].as_object().map_or(0, |m| m.len()) != 1 || cm.get("binaryData").is_some() {
        findings.push(format!(
            "RATELIMIT ConfigMap {cm_name}: must hold the service configuration only"
        ));
    }
    let deploys: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "Deployment" && &o["metadata"]["namespace"] == cm_ns)
        .filter(|d| {
            d["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["configMap"]["name"] == cm_name)
        })
        .collect();
    let [deploy] = deploys.as_slice() else {
        findings.push(format!(
            "RATELIMIT: {} Deployments in the ConfigMap's namespace mount ConfigMap {cm_name}, want one (envoyproxy/ratelimit)",
            deploys.len()
        ));
        return findings;
    };
    let did = kustomize::id(deploy);
    let spec = &deploy["spec"]["template"]["spec"];
    let vol = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["configMap"]["name"] == cm_name)
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default();
    let Some(c) = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| env_of(c, "RUNTIME_ROOT").is_some())
    else {
        findings.push(format!("RATELIMIT {did}: no container sets RUNTIME_ROOT"));
        return findings;
    };
    let mut want = |name: &str, ok: &dyn Fn(Option<&str>) -> bool, why: &str| {
        let v = env_of(c, name);
        if !ok(v.as_deref()) {
            findings.push(format!("RATELIMIT {did}: {name}={v:?}: {why}"));
        }
    };
    want(
        "RUNTIME_WATCH_ROOT",
        &|v| v == Some("false"),
        "must be \"false\": the kubelet swaps a ConfigMap mount's ..data symlink, so the \
         config directory itself must be watched",
    );
    want(
        "RUNTIME_IGNOREDOTFILES",
        &|v| v == Some("true"),
        "must be \"true\": otherwise the mount's ..data/ copies load as a second, duplicate domain",
    );
    want(
        "RUNTIME_SUBDIRECTORY",
        &|v| v.is_some_and(|s| !s.is_empty()),
        "must be set",
    );
    want(
        "REDIS_SOCKET_TYPE",
        &|v| v == Some("tcp"),
        "must be \"tcp\" (the default is a unix socket)",
    );
    want(
        "REDIS_URL",
        &|v| v.is_some_and(|s| s.contains(':')),
        "must be host:port of the Redis Service",
    );
    want(
        "REDIS_TIMEOUT",
        &|v| {
            v.and_then(go_duration_ms)
                .is_some_and(|ms| ms > 0 && ms <= MAX_REDIS_TIMEOUT_MS)
        },
        "must be set and short (the default is 10s): a hung Redis must fail fast",
    );
    let dir = format!(
        "{}/{}/{}",
        env_of(c, "RUNTIME_ROOT")
            .unwrap_or_default()
            .trim_end_matches('/'),
        env_of(c, "RUNTIME_SUBDIRECTORY")
            .unwrap_or_default()
            .trim_matches('/'),
        env_of(c, "RUNTIME_APPDIRECTORY")
            .unwrap_or_else(|| "config".into())
            .trim_matches('/'),
    );
    let mounted = c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
        m["name"] == vol
            && m["mountPath"].as_str().map(|p| p.trim_end_matches('/')) == Some(dir.as_str())
            && m.get("subPath").is_none()
    });
    if !mounted {
        findings.push(format!(
            "RATELIMIT {did}: ConfigMap {cm_name} (volume {vol}) is not mounted at {dir} \
             (RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY) without subPath"
        ));
    }
    findings
}

/// One descriptor entry as the filter builds it: key and value.
type Entry = (String, String);

/// envoyproxy/ratelimit's lookup: the node of the last entry, if every entry matched.
fn lookup<'a>(service: &'a Value, entries: &[Entry]) -> Option<&'a Value> {
    let mut level = service;
    let mut node = None;
    for (k, v) in entries {
        let nodes = level["descriptors"].as_array()?;
        let exact = nodes.iter().find(|n| n["key"] == *k && n["value"] == *v);
        let any = nodes
            .iter()
            .find(|n| n["key"] == *k && n["value"].as_str().is_none_or(str::is_empty));
        let n = exact.or(any)?;
        node = Some(n);
        level = n;
    }
    node
}

/// Every path (key, value or `*`) of the service that ends at a `rate_limit`.
fn limit_paths(
    level: &Value,
    prefix: &mut Vec<(String, Option<String>)>,
    out: &mut Vec<Vec<(String, Option<String>)>>,
) {
    for n in level["descriptors"].as_array().into_iter().flatten() {
        let key = n["key"].as_str().unwrap_or_default().to_owned();
        let value = n["value"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        prefix.push((key, value));
        if n.get("rate_limit").is_some() {
            out.push(prefix.clone());
        }
        limit_paths(n, prefix, out);
        prefix.pop();
    }
}

/// Whether a descriptor's entries land on the node of `path` (same keys; a valued path
/// node needs that value, a key-only node takes any value the exact nodes do not).
fn lands_on(service: &Value, entries: &[Entry], path: &[(String, Option<String>)]) -> bool {
    let Some(node) = lookup(service, entries) else {
        return false;
    };
    // Walk the path to its node and compare identities.
    let mut level = service;
    let mut target = None;
    for (k, v) in path {
        let Some(n) = level["descriptors"].as_array().and_then(|ns| {
            ns.iter().find(|n| {
                n["key"] == *k && n["value"].as_str().filter(|s| !s.is_empty()) == v.as_deref()
            })
        }) else {
            return false;
        };
        target = Some(n);
        level = n;
    }
    target.is_some_and(|t| std::ptr::eq(t, node))
}

/// The descriptor actions and the service table agree (see the module docs). `service` is
/// the parsed service configuration.
pub fn check_descriptors(objs: &[Value], service: &Value) -> Result<Vec<String>> {
    let mut findings = Vec::new();
    // Route-level rate_limits anywhere else: accepted by Envoy, but their hits_addend is
    // never sent (filters/ratelimit-tagger/README.md).
    for ef in objs.iter().filter(|o| o["kind"] == "EnvoyFilter") {
        for (i, p) in ef["spec"]["configPatches"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let v = &p["patch"]["value"];
            if v["typed_config"]["@type"] == RATELIMIT_TYPE {
                continue;
            }
            if contains_key(v, "rate_limits") {
                findings.push(format!(
                    "RATELIMIT {} configPatches[{i}] ({}): `rate_limits` belong on the \
                     envoy.filters.http.ratelimit filter, not on a route or virtual host \
                     (Envoy 1.39.3 never sends their hits_addend)",
                    kustomize::id(ef),
                    p["applyTo"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    let filters = ratelimit_filters(objs);
    let [(fid, tc)] = filters.as_slice() else {
        findings.push(format!(
            "RATELIMIT: {} envoy.filters.http.ratelimit patches, want one",
            filters.len()
        ));
        return Ok(findings);
    };
    // What the tagger writes: its EnvoyFilter's wasm configuration.
    let tagger: Value = objs
        .iter()
        .filter(|o| o["kind"] == "EnvoyFilter")
        .flat_map(|ef| ef["spec"]["configPatches"].as_array().into_iter().flatten())
        .map(|p| &p["patch"]["value"]["typed_config"]["config"])
        .find(|c| c["root_id"] == "ratelimit-tagger")
        .and_then(|c| c["configuration"]["value"].as_str())
        .ok_or_else(|| anyhow!("no ratelimit-tagger wasm filter among the EnvoyFilters"))
        .and_then(|s| serde_json::from_str(s).context("ratelimit-tagger configuration"))?;
    let header = |field: &str, default: &str| -> String {
        tagger["descriptorHeaders"][field]
            .as_str()
            .unwrap_or(default)
            .to_owned()
    };
    let (ip_h, user_h, class_h, weight_h) = (
        header("clientIp", "x-rl-client-ip"),
        header("user", "x-rl-user"),
        header("class", "x-rl-class"),
        header("weight", "x-rl-weight"),
    );
    let mut classes: BTreeSet<String> = tagger["routeClasses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["class"].as_str().map(str::to_owned))
        .collect();
    if let Some(d) = tagger["defaultClass"]["class"].as_str() {
        classes.insert(d.to_owned());
    }
    // Every value the tagger can write per header (addresses: one of each shape; the
    // user header is absent for anonymous requests).
    let values = |h: &str| -> Option<Vec<Option<String>>> {
        if h == ip_h {
            Some(
                ["203.0.113.7", "2001:db8:1:2::/64", "unknown"]
                    .iter()
                    .map(|s| Some((*s).to_owned()))
                    .collect(),
            )
        } else if h == user_h {
            Some(vec![Some("user-42".into()), None])
        } else if h == class_h {
            Some(classes.iter().cloned().map(Some).collect())
        } else {
            None
        }
    };
    let rate_limits = tc["rate_limits"].as_array().cloned().unwrap_or_default();
    if rate_limits.is_empty() {
        findings.push(format!(
            "RATELIMIT {fid}: the ratelimit filter has no rate_limits: no descriptor is ever sent"
        ));
    }
    let mut sent: Vec<Vec<Entry>> = Vec::new();
    for (i, rl) in rate_limits.iter().enumerate() {
        let want = format!("%REQ({weight_h})%");
        if rl["hits_addend"]["format"] != want.as_str() {
            findings.push(format!(
                "RATELIMIT {fid}: rate_limits[{i}].hits_addend.format is {}, want {want:?} (the request's weight)",
                rl["hits_addend"]["format"]
            ));
        }
        // The descriptors this entry sends, over every combination of header values.
        let mut combos: Vec<Option<Vec<Entry>>> = vec![Some(Vec::new())];
        for (j, a) in rl["actions"].as_array().into_iter().flatten().enumerate() {
            let rh = &a["request_headers"];
            let (Some(h), Some(key)) = (rh["header_name"].as_str(), rh["descriptor_key"].as_str())
            else {
                findings.push(format!(
                    "RATELIMIT {fid}: rate_limits[{i}].actions[{j}] is not a request_headers action (not modelled): {a}"
                ));
                combos.clear();
                break;
            };
            let Some(vals) = values(h) else {
                findings.push(format!(
                    "RATELIMIT {fid}: rate_limits[{i}].actions[{j}] reads {h}, which ratelimit-tagger does not write"
                ));
                combos.clear();
                break;
            };
            let skip = rh["skip_if_absent"] == true;
            if skip {
                findings.push(format!(
                    "RATELIMIT {fid}: rate_limits[{i}].actions[{j}] sets skip_if_absent: true; \
                     filters/ratelimit-tagger/README.md requires false (a request without {h} \
                     must not send a shortened descriptor)"
                ));
            }
            let mut next = Vec::new();
            for c in &combos {
                for v in &vals {
                    next.push(match (c, v) {
                        (None, _) => None,
                        (Some(c), Some(v)) => {
                            let mut c = c.clone();
                            c.push((key.to_owned(), v.clone()));
                            Some(c)
                        }
                        // Absent header: the entry is skipped, or the descriptor not sent.
                        (Some(c), None) if skip => Some(c.clone()),
                        (Some(_), None) => None,
                    });
                }
            }
            combos = next;
        }
        let descriptors: Vec<Vec<Entry>> = combos
            .into_iter()
            .flatten()
            .filter(|d| !d.is_empty())
            .collect();
        let limited = descriptors
            .iter()
            .filter(|d| lookup(service, d).is_some_and(|n| n.get("rate_limit").is_some()))
            .count();
        if limited == 0 {
            let keys: Vec<&str> = rl["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["request_headers"]["descriptor_key"].as_str())
                .collect();
            findings.push(format!(
                "RATELIMIT {fid}: rate_limits[{i}] sends [{}], which matches no limit of {SERVICE_SOURCE}",
                keys.join(", ")
            ));
        }
        sent.extend(descriptors);
    }
    // Every limit of the service is reached by some descriptor (a key or class typo leaves
    // a limit that never applies).
    let mut paths = Vec::new();
    limit_paths(service, &mut Vec::new(), &mut paths);
    for p in &paths {
        if !sent.iter().any(|d| lands_on(service, d, p)) {
            let shown: Vec<String> = p
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("*")))
                .collect();
            findings.push(format!(
                "RATELIMIT: the limit [{}] of {SERVICE_SOURCE} is never reached by a descriptor the filter sends",
                shown.join(", ")
            ));
        }
    }
    // Every class the tagger writes has a limit of its own.
    for class in &classes {
        let has = sent.iter().any(|d| {
            d.iter().any(|(k, v)| k == "class" && v == class)
                && lookup(service, d).is_some_and(|n| n.get("rate_limit").is_some())
        });
        if !has {
            findings.push(format!(
                "RATELIMIT: route class {class} (ratelimit-tagger) has no limit in {SERVICE_SOURCE}"
            ));
        }
    }
    Ok(findings)
}

fn contains_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| k == key || contains_key(x, key)),
        Value::Array(a) => a.iter().any(|x| contains_key(x, key)),
        _ => false,
    }
}

/// Everything above; returns the findings.
pub fn check_all(objs: &[Value], root: &Path) -> Result<Vec<String>> {
    let mut findings = check_copy(root);
    let (text, service) = load_service(root)?;
    findings.extend(check_service(objs, &text, &service));
    findings.extend(check_descriptors(objs, &service)?);
    Ok(findings)
}
