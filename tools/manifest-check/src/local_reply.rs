//! The gateway's local reply mappers (`envoyfilter-manifests/envoyfilter-hcm.yaml`), checked
//! for what `envoy --mode validate` cannot see: which replies each mapper rewrites.
//!
//! First match wins, and a mapper's filter runs on every local reply, the filters' own
//! included. So every mapper must be one of these shapes, each matching only replies its
//! filter leaves a trace on:
//!
//! * [`Kind::Flagged`]: status filters and a response flag filter. Envoy's own errors carry a
//!   flag; jwt-authz's and the tagger's replies (already in the JSON body) carry none.
//! * [`Kind::RateLimited`]: status 429 alone (`filters/ratelimit-tagger/README.md`: the
//!   backstop sets its flag after the mapper ran).
//! * [`Kind::RbacDenied`]: the CEL access-log filter on rbac's response code details,
//!   `startsWith('rbac_access_denied_matched_policy[')`: a DENY rule matched or no ALLOW rule
//!   did (`[none]`). 403 access_denied.
//! * [`Kind::RbacNoToken`]: rbac's details `== 'rbac_access_denied_matched_policy[<id>]'`
//!   where `<id>` is the id istiod gives a DENY rule whose only condition is "no request
//!   principal" (RFC 6750 §3.1: 401 with a bare challenge, jwt-authz's MissingToken answer).
//!   Every such rule has one, no other rule has one, and it comes before the RbacDenied
//!   mapper, which also matches.
//! * [`Kind::JwtAuthn`]: jwt_authn's details (`jwt_authn_access_denied{...}`), in the same two
//!   forms: `==` one details string, or `startsWith` the prefix (one catch-all, after every
//!   `==` one). 401 invalid_token.
//!
//! Response code details are what tells those filters' replies apart: neither sets a
//! response flag, and rbac's dynamic metadata is no help (a `metadata_filter` with
//! `match_if_key_not_found: false` on `enforced_engine_result` or
//! `enforced_effective_policy_id` matched none of rbac's denials on Envoy 1.39.3; Envoy's
//! default, true, matches every reply without that metadata, the filters' own too). jwt-authz
//! replies with `jwt_authz_denied`, the tagger with `ratelimit_tagger_*`. The two
//! authentication kinds override the status with 401 and replace (never append to)
//! `WWW-Authenticate` with jwt-authz's challenge and realm; the other kinds keep Envoy's
//! status and headers. Every body is `{"error","message"}` JSON with the error code its kind
//! implies.

// Reads go through serde_json's `Index`, which never panics (missing = Null).
#![allow(clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::envoyfilter::{self, Baseline};

pub const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";
pub const CEL_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter";
/// jwt_authn's response code details: this prefix, its message with `_` for spaces, `}`.
pub const JWT_AUTHN_DETAILS_PREFIX: &str = "jwt_authn_access_denied{";
/// rbac's response code details (Envoy's `RBAC::responseDetail`): this prefix, the id of the
/// policy that decided (`none`: no ALLOW rule matched), `]`.
pub const RBAC_DETAILS_PREFIX: &str = "rbac_access_denied_matched_policy[";
/// Replaces the header a filter already set (the default appends a second one).
pub const OVERWRITE: &str = "OVERWRITE_IF_EXISTS_OR_ADD";
const JWT_AUTHZ_FILTER: &str = "svcgw.jwt_authz";

/// What a mapper matches (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Flagged,
    RateLimited,
    RbacDenied,
    /// The policy id it matches.
    RbacNoToken(String),
    /// `Some(details)`: exactly those details; `None`: every jwt_authn rejection.
    JwtAuthn(Option<String>),
}

/// The mappers Envoy gets: the simulated gateway's HCM after every EnvoyFilter applied.
pub fn mappers(objs: &[Value]) -> Result<Vec<Value>> {
    let (cfg, _) = envoyfilter::simulate(objs, Baseline::FULL)?;
    cfg.hcm["typed_config"]["local_reply_config"]["mappers"]
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow!("the gateway's HCM has no local_reply_config.mappers"))
}

/// jwt-authz's `realm`, the one every challenge of the gateway names.
pub fn jwt_authz_realm(objs: &[Value]) -> Result<String> {
    let (cfg, _) = envoyfilter::simulate(objs, Baseline::FULL)?;
    let filter = cfg
        .http_filters()
        .iter()
        .find(|f| f["name"] == JWT_AUTHZ_FILTER)
        .ok_or_else(|| anyhow!("no {JWT_AUTHZ_FILTER} in the gateway's chain"))?;
    let text = filter
        .pointer("/typed_config/config/configuration/value")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{JWT_AUTHZ_FILTER} has no configuration"))?;
    let config: Value =
        serde_json::from_str(text).context("jwt-authz's configuration is not JSON")?;
    config["realm"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("jwt-authz's configuration has no realm"))
}

/// The DENY rules of the AuthorizationPolicies that select the gateway, by the id istiod
/// gives them (`ns[<namespace>]-policy[<name>]-rule[<index>]`, pilot/pkg/security/authz),
/// each with whether its only condition is "no request principal" (`from` sources that are
/// all exactly `notRequestPrincipals: ["*"]`, no `when`).
pub fn deny_rules(objs: &[Value]) -> Result<BTreeMap<String, bool>> {
    let mut out = BTreeMap::new();
    for policy in objs.iter().filter(|o| o["kind"] == "AuthorizationPolicy") {
        let spec = &policy["spec"];
        if spec["action"] != "DENY" {
            continue;
        }
        if !envoyfilter::selects_gateway_pods(&spec["selector"]["matchLabels"]) {
            continue;
        }
        let name = policy["metadata"]["name"].as_str().unwrap_or("?");
        // istiod names the rule after the namespace the policy lives in; kustomize sets it.
        let namespace = policy["metadata"]["namespace"].as_str().ok_or_else(|| {
            anyhow!("AuthorizationPolicy {name} has no namespace: its rules' ids are unknown")
        })?;
        for (index, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
            let sources = rule["from"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let no_principal = !sources.is_empty()
                && rule.get("when").is_none()
                && sources.iter().all(|s| {
                    s.as_object().is_some_and(|o| o.len() == 1)
                        && s["source"].as_object().is_some_and(|o| o.len() == 1)
                        && s["source"]["notRequestPrincipals"] == serde_json::json!(["*"])
                });
            out.insert(
                format!("ns[{namespace}]-policy[{name}]-rule[{index}]"),
                no_principal,
            );
        }
    }
    Ok(out)
}

/// The shape of one mapper's filter, or why it is none of the accepted ones.
pub fn classify(mapper: &Value) -> std::result::Result<Kind, String> {
    let filter = &mapper["filter"];
    if let Some(status) = filter.get("status_code_filter") {
        if only_key(filter) && status_is(status, 429) {
            return Ok(Kind::RateLimited);
        }
        return Err("a filter on the status alone is only for 429".into());
    }
    if let Some(extension) = filter.get("extension_filter") {
        if !only_key(filter) {
            return Err("extension_filter beside other filters".into());
        }
        return details_filter(extension);
    }
    let Some(parts) = filter["and_filter"]["filters"].as_array() else {
        return Err("neither an and_filter, a 429 status filter nor a CEL filter".into());
    };
    let (flags, rest): (Vec<&Value>, Vec<&Value>) = parts
        .iter()
        .partition(|f| f.get("response_flag_filter").is_some());
    let (statuses, rest): (Vec<&Value>, Vec<&Value>) = rest
        .into_iter()
        .partition(|f| f.get("status_code_filter").is_some() && only_key(f));
    if !flags.is_empty() {
        if statuses.is_empty() || !rest.is_empty() || flags.len() != 1 {
            return Err("a flagged mapper is status filters and one response_flag_filter".into());
        }
        return Ok(Kind::Flagged);
    }
    Err(
        "no response flag: the mapper would also rewrite the filters' own replies; rbac's \
         and jwt_authn's are told apart by their response code details (a CEL filter), their \
         metadata is not there to match"
            .into(),
    )
}

fn only_key(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.len() == 1)
}

fn status_is(filter: &Value, status: u64) -> bool {
    let c = &filter["comparison"];
    c["op"] == "EQ" && c["value"]["default_value"].as_u64() == Some(status)
}

/// Whether the status filters of a flagged mapper admit `status`.
fn admits(mapper: &Value, status: u64) -> bool {
    mapper["filter"]["and_filter"]["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("status_code_filter"))
        .all(|f| {
            let c = &f["comparison"];
            let value = c["value"]["default_value"].as_u64().unwrap_or_default();
            match c["op"].as_str() {
                Some("EQ") => status == value,
                Some("GE") => status >= value,
                Some("LE") => status <= value,
                _ => true,
            }
        })
}

/// A CEL filter on response code details: which filter's replies, and which of them.
fn details_filter(extension: &Value) -> std::result::Result<Kind, String> {
    if extension["name"] != CEL_FILTER || extension["typed_config"]["@type"] != CEL_TYPE {
        return Err(format!("extension_filter other than {CEL_FILTER}"));
    }
    let expression = extension["typed_config"]["expression"]
        .as_str()
        .unwrap_or_default();
    let quoted = |rest: &str| -> Option<String> {
        let inner = rest.strip_prefix('\'')?.strip_suffix('\'')?;
        (!inner.contains(['\'', '\\'])).then(|| inner.to_owned())
    };
    let prefix = expression
        .strip_prefix("response.code_details.startsWith(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(quoted);
    match prefix.as_deref() {
        Some(JWT_AUTHN_DETAILS_PREFIX) => return Ok(Kind::JwtAuthn(None)),
        Some(RBAC_DETAILS_PREFIX) => return Ok(Kind::RbacDenied),
        _ => {}
    }
    if let Some(details) = expression
        .strip_prefix("response.code_details == ")
        .and_then(quoted)
    {
        let reason = details
            .strip_prefix(JWT_AUTHN_DETAILS_PREFIX)
            .and_then(|r| r.strip_suffix('}'));
        if reason.is_some_and(|r| !r.is_empty() && !r.contains(['{', '}', ' '])) {
            return Ok(Kind::JwtAuthn(Some(details)));
        }
        let policy = details
            .strip_prefix(RBAC_DETAILS_PREFIX)
            .and_then(|r| r.strip_suffix(']'));
        if let Some(id) = policy.filter(|id| !id.is_empty() && *id != "none" && !id.contains(' ')) {
            return Ok(Kind::RbacNoToken(id.to_owned()));
        }
    }
    Err(format!(
        "CEL expression {expression:?} is neither `response.code_details == '<details>'` nor \
         `response.code_details.startsWith('<prefix>')` for {JWT_AUTHN_DETAILS_PREFIX}...}} or \
         {RBAC_DETAILS_PREFIX}<policy id>]: it could match replies that are not jwt_authn's or \
         rbac's"
    ))
}

/// Every finding about the mappers of the rendered `objs` (empty = pass).
pub fn check(objs: &[Value]) -> Result<Vec<String>> {
    let mappers = mappers(objs)?;
    let realm = jwt_authz_realm(objs)?;
    let deny = deny_rules(objs)?;
    let mut findings = Vec::new();
    let mut kinds = Vec::new();
    for (index, mapper) in mappers.iter().enumerate() {
        let mut problems = Vec::new();
        match classify(mapper) {
            Ok(kind) => {
                check_rewrite(mapper, &kind, &realm, &deny, &mut problems);
                kinds.push((index, kind));
            }
            Err(why) => problems.push(why),
        }
        check_body(mapper, &mut problems);
        findings.extend(
            problems
                .into_iter()
                .map(|p| format!("LOCAL REPLY: mappers[{index}]: {p}")),
        );
    }
    findings.extend(
        check_order(&mappers, &kinds, &deny)
            .into_iter()
            .map(|p| format!("LOCAL REPLY: {p}")),
    );
    Ok(findings)
}

/// Status override, headers and error code for the kind.
fn check_rewrite(
    mapper: &Value,
    kind: &Kind,
    realm: &str,
    deny: &BTreeMap<String, bool>,
    problems: &mut Vec<String>,
) {
    let code = mapper["body_format_override"]["text_format_source"]["inline_string"]
        .as_str()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .and_then(|b| b["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let (challenge, want_code) = match kind {
        Kind::Flagged => {
            if matches!(code.as_str(), "unauthorized" | "invalid_token") {
                problems.push(format!("Envoy's own error answered as `{code}`"));
            }
            (None, None)
        }
        Kind::RateLimited => (None, Some("rate_limited")),
        Kind::RbacDenied => (None, Some("access_denied")),
        Kind::RbacNoToken(id) => {
            match deny.get(id) {
                Some(true) => {}
                Some(false) => problems.push(format!(
                    "{id} is a DENY rule with other conditions than a missing token: its 403 \
                     stays access_denied"
                )),
                None => problems.push(format!(
                    "no DENY rule of an AuthorizationPolicy selecting the gateway has the id \
                     {id} (istiod: ns[<namespace>]-policy[<name>]-rule[<index>]); DENY rules: \
                     {:?}",
                    deny.keys().collect::<Vec<_>>()
                )),
            }
            (
                Some(format!("Bearer realm=\"{realm}\"")),
                Some("unauthorized"),
            )
        }
        Kind::JwtAuthn(_) => (
            Some(format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")),
            Some("invalid_token"),
        ),
    };
    if let Some(want) = want_code {
        if code != want {
            problems.push(format!("body error `{code}`, this kind answers `{want}`"));
        }
    }
    match challenge {
        None => {
            for field in ["status_code", "headers_to_add"] {
                if mapper.get(field).is_some() {
                    problems.push(format!(
                        "{field}: this kind keeps Envoy's status and headers"
                    ));
                }
            }
        }
        Some(challenge) => {
            if mapper["status_code"].as_u64() != Some(401) {
                problems.push(format!(
                    "status_code {}: authentication failures are 401 (RFC 6750)",
                    mapper["status_code"]
                ));
            }
            let headers = mapper["headers_to_add"].as_array().map(Vec::as_slice);
            match headers {
                Some([h])
                    if h["header"]["key"]
                        .as_str()
                        .is_some_and(|k| k.eq_ignore_ascii_case("www-authenticate")) =>
                {
                    if h["header"]["value"] != challenge.as_str() {
                        problems.push(format!(
                            "WWW-Authenticate {} is not jwt-authz's {challenge:?} (its realm)",
                            h["header"]["value"]
                        ));
                    }
                    if h["append_action"] != OVERWRITE {
                        problems.push(format!(
                            "WWW-Authenticate append_action {}: must be {OVERWRITE}, or the \
                             challenge is sent beside the one the filter set",
                            h["append_action"]
                        ));
                    }
                }
                _ => problems.push(format!(
                    "headers_to_add must be exactly one WWW-Authenticate: {challenge}"
                )),
            }
        }
    }
}

fn check_body(mapper: &Value, problems: &mut Vec<String>) {
    let body = &mapper["body_format_override"];
    if body["content_type"] != "application/json" {
        problems.push("content_type must be application/json".into());
    }
    let Some(text) = body["text_format_source"]["inline_string"].as_str() else {
        return problems.push("no body_format_override.text_format_source.inline_string".into());
    };
    if text.contains('%') {
        problems.push(format!("command operators in the body {text}"));
    }
    let keys: Option<Vec<String>> = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        let o = v.as_object()?;
        let mut keys: Vec<String> = o.keys().cloned().collect();
        keys.sort();
        o.values().all(Value::is_string).then_some(keys)
    });
    if keys.as_deref() != Some(&["error".to_owned(), "message".to_owned()][..]) {
        problems.push(format!("body {text} is not {{\"error\",\"message\"}}"));
    }
}

/// First match wins: nothing an earlier mapper shadows, every no-token rule answered.
fn check_order(
    mappers: &[Value],
    kinds: &[(usize, Kind)],
    deny: &BTreeMap<String, bool>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let position = |want: &dyn Fn(&Kind) -> bool| -> Vec<usize> {
        kinds
            .iter()
            .filter(|(_, k)| want(k))
            .map(|(i, _)| *i)
            .collect()
    };
    let catch_all = position(&|k| *k == Kind::JwtAuthn(None));
    match catch_all.as_slice() {
        [at] => {
            for (i, kind) in kinds {
                if matches!(kind, Kind::JwtAuthn(Some(_))) && i > at {
                    problems.push(format!(
                        "mappers[{i}] ({kind:?}) is unreachable: the jwt_authn catch-all \
                         mappers[{at}] comes first"
                    ));
                }
            }
        }
        other => problems.push(format!(
            "{} jwt_authn catch-all mappers (startsWith '{JWT_AUTHN_DETAILS_PREFIX}'): one, or \
             some rejections keep jwt_authn's plain-text answer",
            other.len()
        )),
    }
    let mut seen = BTreeSet::new();
    for (i, kind) in kinds {
        if let Kind::JwtAuthn(Some(details)) = kind {
            if !seen.insert(details.clone()) {
                problems.push(format!("mappers[{i}]: {details} matched twice"));
            }
        }
    }
    let denied = position(&|k| *k == Kind::RbacDenied);
    for (id, _) in deny.iter().filter(|(_, no_principal)| **no_principal) {
        let at = position(&|k| *k == Kind::RbacNoToken(id.clone()));
        match at.as_slice() {
            [at] => {
                if let Some(first) = denied.iter().find(|d| *d < at) {
                    problems.push(format!(
                        "mappers[{at}] (no token, {id}) comes after mappers[{first}] (rbac \
                         denied), which answers the same reply 403"
                    ));
                }
            }
            other => problems.push(format!(
                "{} mappers for the no-token DENY rule {id}: one (401, bare challenge)",
                other.len()
            )),
        }
    }
    let limited = position(&|k| *k == Kind::RateLimited);
    match limited.as_slice() {
        [at] => {
            for (i, kind) in kinds {
                if *kind == Kind::Flagged
                    && i < at
                    && mappers.get(*i).is_some_and(|m| admits(m, 429))
                {
                    problems.push(format!(
                        "mappers[{i}] (flagged, admits 429) comes before the 429 mapper \
                         mappers[{at}]"
                    ));
                }
            }
        }
        other => problems.push(format!("{} 429 mappers: one", other.len())),
    }
    problems
}
