//! envoyfilter-manifests/: the order contract (DESIGN.md §3) under a simulation of Istio's
//! patch application, proven to fail on mutated copies; real Envoy accepts every patch
//! value and rejects broken ones; the module ConfigMaps stay under 1 MiB with their sha256
//! recorded; the Envoy-side settings agree with the filters and the rate-limit service.
//!
//! Needs `make wasm` (dist/*.wasm) and `make envoy` (ENVOY_BIN); `make manifests-test`
//! runs both first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use manifest_check::envoyfilter::{
    self, check_modules, check_order, dist_dir, envoy_bin, simulate, validate_with_envoy, Baseline,
};
use manifest_check::{catalog, check, kustomize, local_reply, policy, ratelimit, repo_root};
use serde_json::{json, Value};

fn dirs(root: &Path) -> Vec<PathBuf> {
    vec![root.join("envoyfilter-manifests"), root.join("istio")]
}

fn rendered() -> Vec<Value> {
    envoyfilter::render_all(&dirs(&repo_root())).expect("render (run `make wasm` first)")
}

fn ef_mut<'a>(objs: &'a mut [Value], name: &str) -> &'a mut Value {
    objs.iter_mut()
        .find(|o| o["kind"] == "EnvoyFilter" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("EnvoyFilter {name} not rendered"))
}

fn ef<'a>(objs: &'a [Value], name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == "EnvoyFilter" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("EnvoyFilter {name} not rendered"))
}

/// The wasm `configuration` JSON of an EnvoyFilter's first patch.
fn wasm_config(objs: &[Value], name: &str) -> Value {
    let s = ef(objs, name)["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
        ["configuration"]["value"]
        .as_str()
        .unwrap();
    serde_json::from_str(s).unwrap()
}

#[test]
fn schema_valid_and_policy_clean_with_the_istio_tree() {
    let cat = catalog().expect("schema catalog (run `make manifest-deps`)");
    let mut pol = policy::Policies::load(&repo_root().join("policy")).unwrap();
    let mut all = dirs(&repo_root());
    all.push(repo_root().join("istio/argocd"));
    let report = check(&cat, &mut pol, &all).unwrap();
    assert!(
        report.findings.is_empty(),
        "findings:\n{}",
        report.findings.join("\n")
    );
    let objs = rendered();
    let efs = objs.iter().filter(|o| o["kind"] == "EnvoyFilter").count();
    assert_eq!(efs, 5, "five EnvoyFilters expected");
}

/// The brief's baseline and the exact resulting chain, spelled out here (not derived from
/// DESIGN_ORDER, so a change of that constant fails too).
#[test]
fn order_contract_exact_chain_on_the_gateway_baseline() {
    let base: Vec<String> = Baseline::FULL
        .http_filters()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        base,
        [
            "envoy.filters.http.jwt_authn",
            "istio_authn",
            "envoy.filters.http.rbac",
            "istio.stats",
            "envoy.filters.http.router"
        ]
    );
    let (cfg, results) = simulate(&rendered(), Baseline::FULL).unwrap();
    assert!(results.iter().all(|r| r.applied), "{results:#?}");
    assert_eq!(
        cfg.http_filter_names(),
        [
            "svcgw.security_headers",             // 1 security-headers (first)
            "envoy.filters.http.jwt_authn",       // 2 RequestAuthentication
            "istio_authn",                        // 3 Istio authn
            "envoy.filters.http.rbac",            // 3 AuthorizationPolicy
            "istio.stats",                        //   Istio's, before the router
            "svcgw.jwt_authz",                    // 4
            "svcgw.ratelimit_tagger",             // 5
            "envoy.filters.http.local_ratelimit", // 6 backstop
            "envoy.filters.http.ratelimit",       // 6 global
            "envoy.filters.http.router",          // 7
        ]
    );
    // Every baseline (no istio.stats, no rbac, cors/fault present) keeps the contract.
    check_order(&rendered()).unwrap();
}

type Mutation = (&'static str, Box<dyn Fn(&mut Vec<Value>)>, &'static str);

/// A changed patch operation, anchor, priority or patch order breaks the contract.
#[test]
fn order_contract_fails_on_mutated_copies() {
    let cases: Vec<Mutation> = vec![
        (
            "security-headers inserted before the router instead of first",
            Box::new(|o| {
                let p = &mut ef_mut(o, "svcgw-security-headers")["spec"]["configPatches"][0];
                p["patch"]["operation"] = json!("INSERT_BEFORE");
                p["match"]["listener"]["filterChain"]["filter"]["subFilter"] =
                    json!({"name": "envoy.filters.http.router"});
            }),
            "HTTP filter chain",
        ),
        (
            "jwt-authz and ratelimit-tagger priorities swapped",
            Box::new(|o| {
                ef_mut(o, "svcgw-jwt-authz")["spec"]["priority"] = json!(20);
                ef_mut(o, "svcgw-ratelimit-tagger")["spec"]["priority"] = json!(10);
            }),
            "HTTP filter chain",
        ),
        (
            "local_ratelimit and ratelimit patches swapped",
            Box::new(|o| {
                let ps = ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"]
                    .as_array_mut()
                    .unwrap();
                ps.swap(0, 1);
            }),
            "HTTP filter chain",
        ),
        (
            "jwt-authz anchored after rbac (absent without an AuthorizationPolicy)",
            Box::new(|o| {
                let p = &mut ef_mut(o, "svcgw-jwt-authz")["spec"]["configPatches"][0];
                p["patch"]["operation"] = json!("INSERT_AFTER");
                p["match"]["listener"]["filterChain"]["filter"]["subFilter"] =
                    json!({"name": "envoy.filters.http.rbac"});
            }),
            // On the full baseline it lands before istio.stats; without rbac it vanishes.
            "jwt",
        ),
        (
            "jwt-authz inserted first",
            Box::new(|o| {
                let p = &mut ef_mut(o, "svcgw-jwt-authz")["spec"]["configPatches"][0];
                p["patch"]["operation"] = json!("INSERT_FIRST");
            }),
            "HTTP filter chain",
        ),
        (
            "two patch sets with one priority (order left to creation time)",
            Box::new(|o| {
                ef_mut(o, "svcgw-ratelimit")["spec"]["priority"] = json!(20);
            }),
            "share priority",
        ),
        (
            "ratelimit-tagger's patch dropped",
            Box::new(|o| {
                o.retain(|x| x["metadata"]["name"] != "svcgw-ratelimit-tagger");
            }),
            "HTTP filter chain",
        ),
    ];
    let base = rendered();
    check_order(&base).unwrap();
    for (what, mutate, expect) in cases {
        let mut objs = base.clone();
        mutate(&mut objs);
        let err = check_order(&objs).expect_err(what).to_string();
        assert!(err.contains(expect), "{what}: {err}");
    }
}

/// The same on disk: a one-line edit of a manifest fails the check.
#[test]
fn order_contract_fails_on_an_edited_manifest() {
    let root = repo_root();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("envoyfilter-manifests");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(root.join("envoyfilter-manifests")).unwrap() {
        let p = e.unwrap().path();
        let to = copy.join(p.file_name().unwrap());
        if p.is_dir() {
            // modules/ (the wasm files the ConfigMaps package): read through a link.
            std::os::unix::fs::symlink(&p, to).unwrap();
        } else {
            std::fs::copy(&p, to).unwrap();
        }
    }
    std::os::unix::fs::symlink(dist_dir(), tmp.path().join("dist")).unwrap();
    let render = || {
        let mut objs = kustomize::render(&copy).unwrap();
        objs.extend(kustomize::render(&root.join("istio")).unwrap());
        objs
    };
    check_order(&render()).unwrap();
    let file = copy.join("envoyfilter-jwt-authz.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("  priority: 10\n"));
    std::fs::write(&file, text.replace("  priority: 10\n", "  priority: 25\n")).unwrap();
    let err = check_order(&render()).unwrap_err().to_string();
    assert!(err.contains("svcgw.jwt_authz"), "{err}");
}

#[test]
fn real_envoy_accepts_every_patch_value() {
    let log = validate_with_envoy(&rendered(), &envoy_bin(), &dist_dir()).unwrap();
    for root in ["security-headers", "jwt-authz", "ratelimit-tagger"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("{root} ")) && l.contains(": configured")),
            "{root} was not configured:\n{log}"
        );
    }
}

/// The Envoy check has teeth: a broken value in any kind of patch fails it.
#[test]
fn real_envoy_rejects_broken_patch_values() {
    let cases: Vec<Mutation> = vec![
        (
            "bad enum in the ratelimit filter",
            Box::new(|o| {
                ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"][1]["patch"]["value"]
                    ["typed_config"]["enable_x_ratelimit_headers"] = json!("DRAFT_VERSION_3");
            }),
            "DRAFT_VERSION_3",
        ),
        (
            "unknown key in security-headers' configuration",
            Box::new(|o| {
                ef_mut(o, "svcgw-security-headers")["spec"]["configPatches"][0]["patch"]["value"]
                    ["typed_config"]["config"]["configuration"]["value"] =
                    json!(r#"{"hsts": true}"#);
            }),
            "configuration rejected",
        ),
        (
            "jwt-authz configuration without rules",
            Box::new(|o| {
                let v = &mut ef_mut(o, "svcgw-jwt-authz")["spec"]["configPatches"][0]["patch"]
                    ["value"]["typed_config"]["config"]["configuration"]["value"];
                let mut c: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
                c["clockSkewSeconds"] = json!(900);
                *v = json!(c.to_string());
            }),
            "rejected",
        ),
        (
            "route action without a header name",
            Box::new(|o| {
                ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"][1]["patch"]["value"]
                    ["typed_config"]["rate_limits"][0]["actions"][0]["request_headers"]
                    ["header_name"] = json!("");
            }),
            "header_name",
        ),
        (
            "local reply mapper with an unknown comparison",
            Box::new(|o| {
                mapper_mut(o, "svcgw_local_reply_400")["filter"]["and_filter"]["filters"][0]
                    ["status_code_filter"]["comparison"]["op"] = json!("EQQ");
            }),
            "EQQ",
        ),
        (
            "local reply CEL expression that does not parse",
            Box::new(|o| {
                *expression_mut(o, CATCH_ALL) = json!("response.code_details.startsWith(");
            }),
            "Not able to parse filter expression",
        ),
        (
            "unknown field in the cluster patch",
            Box::new(|o| {
                ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"][2]["patch"]["value"]
                    ["connect_timeoutt"] = json!("0.25s");
            }),
            "connect_timeoutt",
        ),
    ];
    let base = rendered();
    for (what, mutate, expect) in cases {
        let mut objs = base.clone();
        mutate(&mut objs);
        let err = validate_with_envoy(&objs, &envoy_bin(), &dist_dir())
            .expect_err(what)
            .to_string();
        assert!(err.contains(expect), "{what}: {err}");
    }
}

#[test]
fn module_configmaps_fit_carry_dist_and_are_mounted() {
    let objs = rendered();
    let findings = check_modules(&objs, &dist_dir()).unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    let cms: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" && o["binaryData"].is_object())
        .collect();
    assert_eq!(cms.len(), 3, "one ConfigMap per module");
    for cm in &cms {
        assert_eq!(cm["metadata"]["namespace"], "gateway");
        let size = envoyfilter::stored_size(cm).unwrap();
        assert!(size < envoyfilter::MAX_OBJECT_BYTES, "{size}");
        eprintln!(
            "{}: {size} bytes stored ({} bytes as JSON)",
            kustomize::id(cm),
            serde_json::to_vec(cm).unwrap().len()
        );
    }

    // A stale record, a module that outgrew 1 MiB, a missing mount: each is reported.
    let mut stale = objs.clone();
    for o in stale
        .iter_mut()
        .filter(|o| o["metadata"]["name"] == "wasm-jwt-authz")
    {
        o["metadata"]["annotations"][envoyfilter::SHA_ANNOTATION] = json!("0".repeat(64));
    }
    let f = check_modules(&stale, &dist_dir()).unwrap();
    assert!(
        f.iter()
            .any(|m| m.contains("wasm-jwt-authz") && m.contains("annotation")),
        "{f:#?}"
    );
    assert!(f.iter().any(|m| m.contains("svcgw-jwt-authz")), "{f:#?}");

    let mut big = objs.clone();
    for o in big
        .iter_mut()
        .filter(|o| o["metadata"]["name"] == "wasm-ratelimit-tagger")
    {
        o["binaryData"]["ratelimit-tagger.wasm"] =
            json!(kustomize::kustomize_base64(&vec![7u8; 1024 * 1024]));
    }
    let f = check_modules(&big, &dist_dir()).unwrap();
    assert!(f.iter().any(|m| m.contains("1 MiB")), "{f:#?}");

    let mut unmounted = objs.clone();
    for o in unmounted
        .iter_mut()
        .filter(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "istio-ingressgateway")
    {
        o["spec"]["template"]["spec"]["volumes"][1]["configMap"]["optional"] = json!(true);
    }
    let f = check_modules(&unmounted, &dist_dir()).unwrap();
    assert!(
        f.iter()
            .any(|m| m.contains("does not mount ConfigMap wasm-jwt-authz")),
        "{f:#?}"
    );
}

/// Every HTTP error Envoy itself produces gets the gateway's JSON body; the filters' own
/// local replies (no response flag) are left alone. 429 matches on the status alone: the
/// backstop's flag is set only after the mapper ran (filters/ratelimit-tagger/README.md).
/// jwt_authn's rejections and rbac's no-token 403 become jwt-authz's own answers.
#[test]
fn local_reply_mappers_use_the_gateway_error_body() {
    let objs = rendered();
    let hcm = &ef(&objs, "svcgw-hcm")["spec"]["configPatches"][0]["patch"]["value"]["typed_config"];
    assert_eq!(hcm["server_header_transformation"], "PASS_THROUGH");
    let findings = local_reply::check(&objs).unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    let mappers = hcm["local_reply_config"]["mappers"].as_array().unwrap();
    assert_eq!(mappers, &local_reply::mappers(&objs).unwrap());
    let mut by_status = std::collections::BTreeMap::new();
    for m in mappers {
        let bo = &m["body_format_override"];
        assert_eq!(bo["content_type"], "application/json");
        let body = bo["text_format_source"]["inline_string"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(body).unwrap();
        let code: &'static str = match parsed["error"].as_str().unwrap() {
            "not_found" => "not_found",
            "rate_limited" => "rate_limited",
            "service_unavailable" => "service_unavailable",
            "upstream_timeout" => "upstream_timeout",
            "bad_gateway" => "bad_gateway",
            "bad_request" => "bad_request",
            "payload_too_large" => "payload_too_large",
            "internal_error" => "internal_error",
            "access_denied" => "access_denied",
            "invalid_token" => "invalid_token",
            "unauthorized" => "unauthorized",
            other => panic!("unexpected error code {other}"),
        };
        // Byte for byte what the filters render for the same code and message.
        assert_eq!(
            body,
            gateway_core::error_body::render(code, parsed["message"].as_str().unwrap())
        );
        // Status → code for the mappers that keep Envoy's status.
        if m.get("status_code").is_none() {
            let filters: Vec<Value> = match m["filter"]["and_filter"]["filters"].as_array() {
                Some(f) => f.clone(),
                None => vec![m["filter"].clone()],
            };
            for f in &filters {
                let c = &f["status_code_filter"]["comparison"];
                if c["op"] == "EQ" {
                    by_status.insert(c["value"]["default_value"].as_u64().unwrap(), code);
                }
            }
        }
    }
    for (status, code) in [
        (400, "bad_request"),
        (404, "not_found"),
        (413, "payload_too_large"),
        (429, "rate_limited"),
        (502, "bad_gateway"),
        (503, "service_unavailable"),
        (504, "upstream_timeout"),
    ] {
        assert_eq!(by_status.get(&status), Some(&code), "{status}");
    }
    // rbac's 403s match on its response code details, not the status (`local_reply::check`
    // holds them to access_denied).
    assert_eq!(
        mappers
            .iter()
            .filter(|m| local_reply::classify(m) == Ok(local_reply::Kind::RbacDenied))
            .count(),
        1
    );
    // The 429 mapper comes before the 4xx catch-all (first match wins).
    let first_429 = mappers
        .iter()
        .position(|m| {
            m["filter"]["status_code_filter"]["comparison"]["value"]["default_value"] == 429
        })
        .unwrap();
    let catch_all = mappers
        .iter()
        .position(|m| m.to_string().contains("svcgw_local_reply_4xx_min"))
        .unwrap();
    assert!(first_429 < catch_all);
}

/// The authentication mappers, spelled out: jwt_authn's rejections (by response code
/// details) and the no-token DENY rule's 403 answer exactly as jwt-authz does for the same
/// token (gateway_core::jwt::decision: status, challenge with jwt-authz's realm, body).
#[test]
fn authentication_mappers_give_jwt_authzs_answers() {
    use gateway_core::jwt::{Denial, DenyReason};
    use local_reply::Kind;
    let objs = rendered();
    let realm = local_reply::jwt_authz_realm(&objs).unwrap();
    assert_eq!(realm, "api.exchange.example.com");
    let mappers = local_reply::mappers(&objs).unwrap();
    let kinds: Vec<Kind> = mappers
        .iter()
        .map(|m| local_reply::classify(m).unwrap())
        .collect();
    let details =
        |reason: &str| Kind::JwtAuthn(Some(format!("jwt_authn_access_denied{{{reason}}}")));
    // First, in this order (first match wins; the catch-all last of them).
    let expected = [
        (details("Jwt_is_expired"), DenyReason::Expired),
        (details("Jwt_not_yet_valid"), DenyReason::NotYetValid),
        (
            details("Audiences_in_Jwt_are_not_allowed"),
            DenyReason::AudienceMismatch,
        ),
        // The generic answer, the same for every check jwt-authz does not name.
        (Kind::JwtAuthn(None), DenyReason::BadSignature),
        (
            Kind::RbacNoToken("ns[gateway]-policy[require-jwt-on-api]-rule[0]".into()),
            DenyReason::MissingToken,
        ),
    ];
    assert_eq!(
        kinds[..expected.len()],
        expected.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    // The only ones that rewrite status or headers.
    assert!(kinds[expected.len()..]
        .iter()
        .all(|k| matches!(k, Kind::Flagged | Kind::RateLimited | Kind::RbacDenied)));
    for ((kind, reason), mapper) in expected.iter().zip(&mappers) {
        let denial = Denial::new(*reason, &realm, &[], None);
        assert_eq!(mapper["status_code"], denial.status, "{kind:?}");
        let headers = mapper["headers_to_add"].as_array().unwrap();
        assert_eq!(headers.len(), 1, "{kind:?}");
        assert_eq!(headers[0]["header"]["key"], "www-authenticate");
        assert_eq!(
            headers[0]["header"]["value"],
            denial.www_authenticate.unwrap(),
            "{kind:?}"
        );
        assert_eq!(headers[0]["append_action"], "OVERWRITE_IF_EXISTS_OR_ADD");
        assert_eq!(
            mapper["body_format_override"]["text_format_source"]["inline_string"], denial.body,
            "{kind:?}"
        );
    }
    // The catch-all's message is the one jwt-authz gives for every unnamed check.
    for reason in [
        DenyReason::UnknownKey,
        DenyReason::UnknownIssuer,
        DenyReason::MalformedToken,
    ] {
        assert_eq!(
            Denial::new(reason, &realm, &[], None).body,
            Denial::new(DenyReason::BadSignature, &realm, &[], None).body
        );
    }
    // The id is istiod's for the namespace kustomize deploys the policy in.
    let policy = objs
        .iter()
        .find(|o| {
            o["kind"] == "AuthorizationPolicy" && o["metadata"]["name"] == "require-jwt-on-api"
        })
        .unwrap();
    assert_eq!(policy["metadata"]["namespace"], "gateway");
    assert_eq!(policy["spec"]["action"], "DENY");
    assert_eq!(
        policy["spec"]["rules"][0]["from"],
        json!([{"source": {"notRequestPrincipals": ["*"]}}])
    );
}

fn mappers_mut(o: &mut [Value]) -> &mut Vec<Value> {
    ef_mut(o, "svcgw-hcm")["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
        ["local_reply_config"]["mappers"]
        .as_array_mut()
        .unwrap()
}

/// The mapper whose JSON contains `needle` (exactly one).
fn mapper_mut<'a>(o: &'a mut [Value], needle: &str) -> &'a mut Value {
    let mappers = mappers_mut(o);
    let found: Vec<usize> = mappers
        .iter()
        .enumerate()
        .filter(|(_, m)| m.to_string().contains(needle))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(found.len(), 1, "{needle}: {found:?}");
    &mut mappers[found[0]]
}

fn position(o: &mut [Value], needle: &str) -> usize {
    mappers_mut(o)
        .iter()
        .position(|m| m.to_string().contains(needle))
        .unwrap()
}

const NO_TOKEN: &str = "require-jwt-on-api]-rule[0]";
const EXPIRED: &str = "Jwt_is_expired";
const CATCH_ALL: &str = "startsWith('jwt_authn";
const RBAC_DENIED: &str = "startsWith('rbac_access_denied";

/// The CEL expression of the mapper whose JSON contains `needle`.
fn expression_mut<'a>(o: &'a mut [Value], needle: &str) -> &'a mut Value {
    &mut mapper_mut(o, needle)["filter"]["extension_filter"]["typed_config"]["expression"]
}

/// The local reply checks have teeth: a mapper that would rewrite replies it is not meant
/// for, lose jwt-authz's challenge, or never be reached fails them.
#[test]
fn local_reply_checks_fail_on_mutated_copies() {
    let base = rendered();
    assert!(local_reply::check(&base).unwrap().is_empty());
    let cases: Vec<Mutation> = vec![
        (
            "an rbac mapper on rbac's dynamic metadata (which is not there at local reply time)",
            Box::new(|o| {
                mapper_mut(o, NO_TOKEN)["filter"] = json!({"and_filter": {"filters": [
                    {"status_code_filter": {"comparison": {"op": "EQ", "value": {
                        "default_value": 403, "runtime_key": "svcgw_local_reply_403"}}}},
                    {"metadata_filter": {"matcher": {"filter": "envoy.filters.http.rbac",
                        "path": [{"key": "enforced_effective_policy_id"}],
                        "value": {"string_match": {"exact":
                            "ns[gateway]-policy[require-jwt-on-api]-rule[0]"}}},
                        "match_if_key_not_found": false}}]}});
            }),
            "metadata is not there to match",
        ),
        (
            "no-token mapper naming the policy in another namespace",
            Box::new(|o| {
                *expression_mut(o, NO_TOKEN) = json!(
                    "response.code_details == 'rbac_access_denied_matched_policy[ns[istio-system]-policy[require-jwt-on-api]-rule[0]]'"
                );
            }),
            "no DENY rule",
        ),
        (
            "no-token mapper on rbac's `none` (no ALLOW rule matched: a token for another service)",
            Box::new(|o| {
                *expression_mut(o, NO_TOKEN) =
                    json!("response.code_details == 'rbac_access_denied_matched_policy[none]'");
            }),
            "could match replies that are not",
        ),
        (
            "the DENY policy deployed in another namespace than the mapper names",
            Box::new(|o| {
                for p in o.iter_mut().filter(|p| p["kind"] == "AuthorizationPolicy") {
                    p["metadata"]["namespace"] = json!("edge");
                }
            }),
            "mappers for the no-token DENY rule ns[edge]",
        ),
        (
            "another DENY rule (not about credentials) answered 401",
            Box::new(|o| {
                let policy = o
                    .iter_mut()
                    .find(|p| p["metadata"]["name"] == "require-jwt-on-api")
                    .unwrap();
                policy["spec"]["rules"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"to": [{"operation": {"paths": ["/internal/*"]}}]}));
                *expression_mut(o, NO_TOKEN) = json!(
                    "response.code_details == 'rbac_access_denied_matched_policy[ns[gateway]-policy[require-jwt-on-api]-rule[1]]'"
                );
            }),
            "other conditions than a missing token",
        ),
        (
            "no-token mapper after the rbac-denied one",
            Box::new(|o| {
                let from = position(o, NO_TOKEN);
                let m = mappers_mut(o).remove(from);
                let to = position(o, RBAC_DENIED) + 1;
                mappers_mut(o).insert(to, m);
            }),
            "comes after",
        ),
        (
            "no-token mapper dropped",
            Box::new(|o| {
                let at = position(o, NO_TOKEN);
                mappers_mut(o).remove(at);
            }),
            "0 mappers for the no-token DENY rule",
        ),
        (
            "challenge appended beside jwt_authn's (the default append action)",
            Box::new(|o| {
                mapper_mut(o, EXPIRED)["headers_to_add"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("append_action");
            }),
            "append_action",
        ),
        (
            "a realm that is not jwt-authz's",
            Box::new(|o| {
                mapper_mut(o, CATCH_ALL)["headers_to_add"][0]["header"]["value"] =
                    json!(r#"Bearer realm="exchange", error="invalid_token""#);
            }),
            "realm",
        ),
        (
            "jwt_authn's 403 (audience) kept as 403",
            Box::new(|o| {
                mapper_mut(o, "Audiences_in_Jwt")
                    .as_object_mut()
                    .unwrap()
                    .remove("status_code");
            }),
            "status_code",
        ),
        (
            "a CEL expression that also matches jwt-authz's replies",
            Box::new(|o| {
                *expression_mut(o, CATCH_ALL) =
                    json!("response.code_details.startsWith('jwt_auth')");
            }),
            "could match replies that are not jwt_authn's",
        ),
        (
            "a CEL expression on the status",
            Box::new(|o| {
                *expression_mut(o, EXPIRED) = json!("response.code == 401");
            }),
            "could match replies that are not jwt_authn's",
        ),
        (
            "catch-all before a specific jwt_authn mapper",
            Box::new(|o| {
                let from = position(o, CATCH_ALL);
                let m = mappers_mut(o).remove(from);
                mappers_mut(o).insert(0, m);
            }),
            "unreachable",
        ),
        (
            "jwt_authn catch-all dropped",
            Box::new(|o| {
                let at = position(o, CATCH_ALL);
                mappers_mut(o).remove(at);
            }),
            "0 jwt_authn catch-all",
        ),
        (
            "jwt_authn rejection answered access_denied",
            Box::new(|o| {
                mapper_mut(o, EXPIRED)["body_format_override"]["text_format_source"]
                    ["inline_string"] = json!(
                    r#"{"error":"access_denied","message":"access to this resource is denied"}"#
                );
            }),
            "this kind answers `invalid_token`",
        ),
        (
            "a 503 mapper on the status alone (would rewrite every local 503, the filters' too)",
            Box::new(|o| {
                let m = mapper_mut(o, "svcgw_local_reply_503");
                m["filter"] = m["filter"]["and_filter"]["filters"][0].clone();
            }),
            "only for 429",
        ),
        (
            "rbac mapper that keeps 403 but adds a challenge",
            Box::new(|o| {
                mapper_mut(o, RBAC_DENIED)["headers_to_add"] =
                    json!([{"header": {"key": "www-authenticate", "value": "Bearer"}}]);
            }),
            "keeps Envoy's status and headers",
        ),
    ];
    for (what, mutate, expect) in cases {
        let mut objs = base.clone();
        mutate(&mut objs);
        let f = local_reply::check(&objs).unwrap();
        assert!(
            f.iter().any(|m| m.contains(expect)),
            "{what}: {expect} not in {f:#?}"
        );
    }
}

/// The tagger README's Envoy side, verified there on Envoy 1.39.3: the manifests carry the
/// same local_ratelimit and ratelimit filter configuration (the cluster aside: Istio's
/// `outbound|...` cluster instead of the README's plain one), the same 429 mapper and the
/// same header removal.
#[test]
fn envoy_side_is_the_tagger_readmes() {
    let readme =
        std::fs::read_to_string(repo_root().join("filters/ratelimit-tagger/README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    let filters: Value = serde_yaml::from_str(blocks[0]).unwrap();
    let readme_filter = |name: &str| {
        filters
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("README has no {name}"))["typed_config"]
            .clone()
    };
    let objs = rendered();
    let (cfg, _) = simulate(&objs, Baseline::FULL).unwrap();
    let ours = |name: &str| {
        cfg.http_filters()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["typed_config"]
            .clone()
    };
    assert_eq!(
        ours("envoy.filters.http.local_ratelimit"),
        readme_filter("envoy.filters.http.local_ratelimit")
    );
    let mut rl = ours("envoy.filters.http.ratelimit");
    assert_eq!(
        rl["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"],
        "outbound|8081||ratelimit.gateway.svc.cluster.local"
    );
    rl["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"] = json!("ratelimit");
    // skip_if_absent: false is spelled out in the manifest; the README relies on the default.
    for r in rl["rate_limits"].as_array_mut().unwrap() {
        for a in r["actions"].as_array_mut().unwrap() {
            let rh = a["request_headers"].as_object_mut().unwrap();
            if rh.get("skip_if_absent") == Some(&json!(false)) {
                rh.remove("skip_if_absent");
            }
        }
    }
    assert_eq!(rl, readme_filter("envoy.filters.http.ratelimit"));
    // Spelled out, as the brief and the README require.
    assert_eq!(rl["timeout"], "0.05s");
    assert_eq!(rl["failure_mode_deny"], false);
    assert_eq!(rl["enable_x_ratelimit_headers"], "DRAFT_VERSION_03");
    assert_eq!(rl["disable_x_envoy_ratelimited_header"], true);
    assert_eq!(rl["domain"], "svc-gateway");
    // The virtual host only strips the headers; no route-level rate_limits.
    let vhost: Value = serde_yaml::from_str(blocks[1]).unwrap();
    for vh in cfg.route_config["virtual_hosts"].as_array().unwrap() {
        assert!(vh.get("rate_limits").is_none(), "{vh}");
        assert_eq!(
            vh["request_headers_to_remove"],
            vhost["virtual_hosts"][0]["request_headers_to_remove"]
        );
    }
    // The README's 429 mapper is ours, verbatim.
    let local_reply: Value = serde_yaml::from_str(blocks[2]).unwrap();
    let theirs = &local_reply["local_reply_config"]["mappers"][0];
    let mappers = cfg.hcm["typed_config"]["local_reply_config"]["mappers"]
        .as_array()
        .unwrap();
    assert!(mappers.contains(theirs), "{theirs}");
}

/// The filter's descriptor actions read exactly the headers the tagger writes, the virtual
/// host strips them all, and the descriptors they build match the rate-limit service's
/// table (and every limit there is reachable), in its domain.
#[test]
fn ratelimit_settings_agree_with_the_tagger_and_the_service() {
    let objs = rendered();
    let tagger = wasm_config(&objs, "svcgw-ratelimit-tagger");
    let written: BTreeSet<String> = tagger["descriptorHeaders"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let patches = ef(&objs, "svcgw-ratelimit")["spec"]["configPatches"]
        .as_array()
        .unwrap();
    let vhost = patches
        .iter()
        .find(|p| p["applyTo"] == "VIRTUAL_HOST")
        .unwrap();
    let removed: BTreeSet<String> = vhost["patch"]["value"]["request_headers_to_remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(removed, written, "every x-rl-* header is stripped upstream");
    assert_eq!(
        vhost["patch"]["value"].as_object().unwrap().len(),
        1,
        "the VIRTUAL_HOST merge carries request_headers_to_remove only"
    );
    let rl = patches
        .iter()
        .find(|p| p["patch"]["value"]["name"] == "envoy.filters.http.ratelimit")
        .unwrap();
    let tc = &rl["patch"]["value"]["typed_config"];
    let weight = tagger["descriptorHeaders"]["weight"].as_str().unwrap();
    let mut keys = BTreeSet::new();
    for r in tc["rate_limits"].as_array().unwrap() {
        assert_eq!(r["hits_addend"]["format"], format!("%REQ({weight})%"));
        for a in r["actions"].as_array().unwrap() {
            let h = a["request_headers"]["header_name"].as_str().unwrap();
            assert!(written.contains(h), "{h} is not a tagger header");
            // The user descriptor is not sent at all for anonymous requests.
            assert_ne!(a["request_headers"]["skip_if_absent"], true, "{a}");
            keys.insert(
                a["request_headers"]["descriptor_key"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert_eq!(tc["failure_mode_deny"], false);
    assert_eq!(tc["enable_x_ratelimit_headers"], "DRAFT_VERSION_03");
    let (text, cfg) = ratelimit::load_service(&repo_root()).unwrap();
    assert_eq!(tc["domain"], cfg["domain"]);
    assert_eq!(cfg["domain"], "svc-gateway");
    let mut service_keys = BTreeSet::new();
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        for d in v["descriptors"].as_array().into_iter().flatten() {
            out.insert(d["key"].as_str().unwrap().to_owned());
            walk(d, out);
        }
    }
    walk(&cfg, &mut service_keys);
    assert_eq!(keys, service_keys);
    // Descriptor by descriptor (envoyproxy/ratelimit's matching), the shipped copy and the
    // service Deployment.
    let f = ratelimit::check_descriptors(&objs, &cfg).unwrap();
    assert!(f.is_empty(), "{f:#?}");
    let f = ratelimit::check_service(&objs, &text, &cfg);
    assert!(f.is_empty(), "{f:#?}");
    let f = ratelimit::check_copy(&repo_root());
    assert!(f.is_empty(), "{f:#?}");
    // The filter talks to the cluster the CLUSTER patch tunes.
    let cluster = tc["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .unwrap();
    let cp = patches.iter().find(|p| p["applyTo"] == "CLUSTER").unwrap();
    assert_eq!(
        cluster,
        format!(
            "outbound|{}||{}",
            cp["match"]["cluster"]["portNumber"],
            cp["match"]["cluster"]["service"].as_str().unwrap()
        )
    );
}

fn ratelimit_filter_mut(o: &mut [Value]) -> &mut Value {
    &mut ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"][1]["patch"]["value"]["typed_config"]
}

fn ratelimit_deploy_mut(o: &mut [Value]) -> &mut Value {
    o.iter_mut()
        .find(|x| x["kind"] == "Deployment" && x["metadata"]["name"] == "ratelimit")
        .unwrap()
}

fn set_env(o: &mut [Value], name: &str, value: &str) {
    let env = ratelimit_deploy_mut(o)["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap();
    let e = env.iter_mut().find(|e| e["name"] == name).unwrap();
    e["value"] = json!(value);
}

type ServiceMutation = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

/// The rate-limit checks have teeth: route-level actions, a descriptor key or class typo on
/// either side, a dropped weight, a wrong domain, a wrongly mounted service configuration.
#[test]
fn ratelimit_checks_fail_on_mutated_copies() {
    let base = rendered();
    let (text, service) = ratelimit::load_service(&repo_root()).unwrap();
    let all = |objs: &[Value], service: &Value| -> Vec<String> {
        let mut f = ratelimit::check_descriptors(objs, service).unwrap();
        f.extend(ratelimit::check_service(objs, &text, service));
        f
    };
    assert!(all(&base, &service).is_empty());
    let cases: Vec<Mutation> = vec![
        (
            "actions back on the virtual host",
            Box::new(|o| {
                let rls = ratelimit_filter_mut(o)["rate_limits"].clone();
                ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"][3]["patch"]["value"]
                    ["rate_limits"] = rls;
            }),
            "belong on the",
        ),
        (
            "actions moved off the filter",
            Box::new(|o| {
                ratelimit_filter_mut(o)
                    .as_object_mut()
                    .unwrap()
                    .remove("rate_limits");
            }),
            "no rate_limits",
        ),
        (
            "descriptor key typo",
            Box::new(|o| {
                ratelimit_filter_mut(o)["rate_limits"][2]["actions"][1]["request_headers"]
                    ["descriptor_key"] = json!("user_id");
            }),
            "matches no limit",
        ),
        (
            "a header the tagger does not write",
            Box::new(|o| {
                ratelimit_filter_mut(o)["rate_limits"][0]["actions"][0]["request_headers"]
                    ["header_name"] = json!("x-forwarded-for");
            }),
            "does not write",
        ),
        (
            "weight not counted",
            Box::new(|o| {
                ratelimit_filter_mut(o)["rate_limits"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("hits_addend");
            }),
            "hits_addend",
        ),
        (
            "user descriptor with skip_if_absent: true (anonymous requests send [class])",
            Box::new(|o| {
                ratelimit_filter_mut(o)["rate_limits"][2]["actions"][1]["request_headers"]
                    ["skip_if_absent"] = json!(true);
            }),
            "skip_if_absent",
        ),
        (
            "user action dropped: the per-user limits are never reached",
            Box::new(|o| {
                ratelimit_filter_mut(o)["rate_limits"][2]["actions"]
                    .as_array_mut()
                    .unwrap()
                    .remove(1);
            }),
            "never reached",
        ),
        (
            "tagger class renamed",
            Box::new(|o| {
                let p = &mut ef_mut(o, "svcgw-ratelimit-tagger")["spec"]["configPatches"][0]
                    ["patch"]["value"]["typed_config"]["config"]["configuration"]["value"];
                *p = json!(p
                    .as_str()
                    .unwrap()
                    .replace("\"order_cancel\"", "\"order-cancel\""));
            }),
            "order-cancel",
        ),
        (
            "filter domain differs",
            Box::new(|o| {
                ratelimit_filter_mut(o)["domain"] = json!("gateway");
            }),
            "domain",
        ),
        (
            "RUNTIME_WATCH_ROOT left at true",
            Box::new(|o| set_env(o, "RUNTIME_WATCH_ROOT", "true")),
            "RUNTIME_WATCH_ROOT",
        ),
        (
            "dotfiles loaded",
            Box::new(|o| set_env(o, "RUNTIME_IGNOREDOTFILES", "false")),
            "RUNTIME_IGNOREDOTFILES",
        ),
        (
            "Redis default timeout",
            Box::new(|o| set_env(o, "REDIS_TIMEOUT", "10s")),
            "REDIS_TIMEOUT",
        ),
        (
            "wrong subdirectory",
            Box::new(|o| set_env(o, "RUNTIME_SUBDIRECTORY", "rl")),
            "is not mounted at /data/rl/config",
        ),
        (
            "subPath mount (never updated)",
            Box::new(|o| {
                ratelimit_deploy_mut(o)["spec"]["template"]["spec"]["containers"][0]
                    ["volumeMounts"][0]["subPath"] = json!("config.yaml");
            }),
            "without subPath",
        ),
        (
            "placeholder shipped instead of the service file",
            Box::new(|o| {
                let cm = o
                    .iter_mut()
                    .find(|x| {
                        x["kind"] == "ConfigMap" && x["metadata"]["name"] == "ratelimit-config"
                    })
                    .unwrap();
                cm["data"]["config.yaml"] = json!("domain: svc-gateway\ndescriptors: []\n");
            }),
            "byte for byte",
        ),
    ];
    for (what, mutate, expect) in cases {
        let mut objs = base.clone();
        mutate(&mut objs);
        let f = all(&objs, &service);
        assert!(
            f.iter().any(|m| m.contains(expect)),
            "{what}: {expect} not in {f:#?}"
        );
    }
    // Mutations of the service table: a class typo leaves a limit nothing reaches; a
    // dropped class leaves a tagger class without a limit; another domain.
    let svc_cases: Vec<ServiceMutation> = vec![
        (
            "class value typo",
            Box::new(|s| {
                for d in s["descriptors"].as_array_mut().unwrap() {
                    if d["value"] == "order_cancel" {
                        d["value"] = json!("order-cancel");
                    }
                }
            }),
            "never reached",
        ),
        (
            "class dropped",
            Box::new(|s| {
                s["descriptors"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|d| d["value"] != "withdrawal");
            }),
            "route class withdrawal",
        ),
        (
            "nested key typo",
            Box::new(|s| {
                for d in s["descriptors"].as_array_mut().unwrap() {
                    if d["value"] == "order" {
                        d["descriptors"][0]["key"] = json!("user_id");
                    }
                }
            }),
            "never reached",
        ),
        (
            "another domain",
            Box::new(|s| s["domain"] = json!("edge")),
            "domain",
        ),
    ];
    for (what, mutate, expect) in svc_cases {
        let mut s = service.clone();
        mutate(&mut s);
        let f = all(&base, &s);
        assert!(
            f.iter().any(|m| m.contains(expect)),
            "{what}: {expect} not in {f:#?}"
        );
    }
}

/// The ConfigMap ships the tagger's file: a copy that drifts by one byte fails the build.
#[test]
fn ratelimit_service_copy_must_be_byte_identical() {
    let root = repo_root();
    assert!(ratelimit::check_copy(&root).is_empty());
    let tmp = tempfile::tempdir().unwrap();
    for rel in [ratelimit::SERVICE_SOURCE, ratelimit::SERVICE_COPY] {
        let to = tmp.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), &to).unwrap();
    }
    assert!(ratelimit::check_copy(tmp.path()).is_empty());
    let copy = tmp.path().join(ratelimit::SERVICE_COPY);
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.push(b'\n');
    std::fs::write(&copy, &bytes).unwrap();
    let f = ratelimit::check_copy(tmp.path());
    assert!(f.iter().any(|m| m.contains("differs")), "{f:#?}");
    std::fs::remove_file(&copy).unwrap();
    assert!(!ratelimit::check_copy(tmp.path()).is_empty());
}

/// Each wasm filter: its own VM, V8, a module under /etc/istio/extensions/<f>/<f>.wasm, the
/// failure policy the README documents.
#[test]
fn wasm_filters_have_their_own_vm_and_policy() {
    let (cfg, _) = simulate(&rendered(), Baseline::FULL).unwrap();
    let mut vm_ids = BTreeSet::new();
    for (name, policy) in [
        ("svcgw.security_headers", "FAIL_RELOAD"),
        ("svcgw.jwt_authz", "FAIL_CLOSED"),
        ("svcgw.ratelimit_tagger", "FAIL_RELOAD"),
    ] {
        let f = cfg
            .http_filters()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap();
        let c = &f["typed_config"]["config"];
        let root = c["root_id"].as_str().unwrap();
        assert_eq!(c["vm_config"]["vm_id"], root);
        assert!(vm_ids.insert(root.to_owned()), "vm_id {root} shared");
        assert_eq!(c["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
        assert_eq!(
            c["vm_config"]["code"]["local"]["filename"],
            format!("/etc/istio/extensions/{root}/{root}.wasm")
        );
        assert_eq!(c["failure_policy"], policy, "{name}");
        // jwt-authz pauses on headers (JWKS refetch): the body must be held back too.
        if name == "svcgw.jwt_authz" {
            assert_eq!(c["allow_on_headers_stop_iteration"], false);
        }
        assert_eq!(
            c["configuration"]["@type"],
            "type.googleapis.com/google.protobuf.StringValue"
        );
    }
}

/// The kustomize subset renders binaryData byte for byte like kubectl's kustomize (with
/// the load restrictor the README documents).
#[test]
fn render_matches_kubectl_kustomize() {
    let Ok(out) = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        eprintln!("kubectl not installed: parity check not run (covered in CI)");
        return;
    };
    assert!(out.status.success());
    let dir = repo_root().join("envoyfilter-manifests");
    let out = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = kustomize::parse_yaml_stream(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let ours = kustomize::render(&dir).unwrap();
    let key = |v: &Vec<Value>| {
        let mut s: Vec<String> = v.iter().map(|o| o.to_string()).collect();
        s.sort();
        s
    };
    assert_eq!(key(&ours), key(&theirs));
}

/// Schema-valid but wrong: only the Rego policies catch these; a typo fails the schema.
#[test]
fn policies_and_schemas_catch_broken_envoyfilters() {
    let cat = catalog().expect("schema catalog (run `make manifest-deps`)");
    let mut pol = policy::Policies::load(&repo_root().join("policy")).unwrap();
    let base = rendered();
    let wasm = |o: &mut Vec<Value>, name: &str| -> Value {
        ef_mut(o, name)["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
            .clone()
    };
    let set = |o: &mut Vec<Value>, name: &str, c: Value| {
        ef_mut(o, name)["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"] = c;
    };
    let cases: Vec<Mutation> = vec![
        (
            "jwt-authz fails open",
            Box::new(move |o| {
                let mut c = wasm(o, "svcgw-jwt-authz");
                c["failure_policy"] = json!("FAIL_OPEN");
                set(o, "svcgw-jwt-authz", c);
            }),
            "SVCGW-EF-003",
        ),
        (
            "security-headers without a failure policy",
            Box::new(move |o| {
                let mut c = wasm(o, "svcgw-security-headers");
                c.as_object_mut().unwrap().remove("failure_policy");
                set(o, "svcgw-security-headers", c);
            }),
            "SVCGW-EF-002",
        ),
        (
            "tagger shares jwt-authz's VM",
            Box::new(move |o| {
                let mut c = wasm(o, "svcgw-ratelimit-tagger");
                c["vm_config"]["vm_id"] = json!("jwt-authz");
                set(o, "svcgw-ratelimit-tagger", c);
            }),
            "SVCGW-EF-008",
        ),
        (
            "ratelimit fails closed",
            Box::new(|o| {
                ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"][1]["patch"]["value"]
                    ["typed_config"]["failure_mode_deny"] = json!(true);
            }),
            "SVCGW-EF-006",
        ),
        (
            "descriptor actions on the virtual host",
            Box::new(|o| {
                let rls = ratelimit_filter_mut(o)["rate_limits"].clone();
                ef_mut(o, "svcgw-ratelimit")["spec"]["configPatches"][3]["patch"]["value"]
                    ["rate_limits"] = rls;
            }),
            "SVCGW-EF-010",
        ),
        (
            "no workload selector",
            Box::new(|o| {
                ef_mut(o, "svcgw-hcm")["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("workloadSelector");
            }),
            "SVCGW-EF-001",
        ),
        (
            "typo in the EnvoyFilter spec",
            Box::new(|o| {
                let spec = ef_mut(o, "svcgw-jwt-authz")["spec"]
                    .as_object_mut()
                    .unwrap();
                let v = spec.remove("priority").unwrap();
                spec.insert("priorty".into(), v);
            }),
            "priorty",
        ),
        (
            "bad patch operation",
            Box::new(|o| {
                ef_mut(o, "svcgw-jwt-authz")["spec"]["configPatches"][0]["patch"]["operation"] =
                    json!("INSERT_BEFOR");
            }),
            "operation",
        ),
    ];
    for (what, mutate, expect) in cases {
        let mut objs = base.clone();
        mutate(&mut objs);
        let report = manifest_check::check_objects(&cat, &mut pol, &objs).unwrap();
        assert!(
            report.findings.iter().any(|f| f.contains(expect)),
            "{what}: {expect} not reported: {:#?}",
            report.findings
        );
    }
}
