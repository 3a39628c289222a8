package main

import rego.v1

# Routes that place orders or move funds: a request there must never be sent twice.
sensitive_prefixes := ["/api/v1/trade", "/api/v1/wallet"]

# Retry conditions that prove the request never reached the upstream.
safe_retry_on := {"connect-failure", "refused-stream"}

idempotent_method_regexes := {"^(GET|HEAD)$", "^(HEAD|GET)$", "^GET$", "^HEAD$"}

match_path(m) := m.uri.prefix if m.uri.prefix

match_path(m) := m.uri.exact if m.uri.exact

match_path(m) := m.uri.regex if m.uri.regex

sensitive_match(m) if {
	some p in sensitive_prefixes
	startswith(match_path(m), p)
}

# A route with no match at all catches everything, sensitive paths included.
sensitive_route(r) if not r.match

sensitive_route(r) if {
	some m in r.match
	sensitive_match(m)
}

idempotent_match(m) if m.method.exact in {"GET", "HEAD"}

idempotent_match(m) if m.method.regex in idempotent_method_regexes

# Every match of the route is restricted to GET/HEAD.
read_only_route(r) if {
	count(r.match) > 0
	count([m | some m in r.match; not idempotent_match(m)]) == 0
}

retry_conditions(r) := {trim_space(c) | some c in split(r.retries.retryOn, ",")}

unsafe_retry(r) if {
	object.get(r, ["retries", "attempts"], 0) > 0
	count(retry_conditions(r) - safe_retry_on) > 0
}

deny contains msg if {
	input.kind == "VirtualService"
	some r in input.spec.http
	sensitive_route(r)
	not read_only_route(r)
	unsafe_retry(r)
	msg := sprintf("SVCGW-RETRY-001: %s: route %s retries on %v; order/withdrawal writes may only retry on connect-failure,refused-stream", [name_of(input), object.get(r, "name", "?"), retry_conditions(r) - safe_retry_on])
}

# Without a retries block Istio applies its default policy (2 attempts, including
# `unavailable`/`cancelled`/`retriable-status-codes`): on these routes it must be explicit.
deny contains msg if {
	input.kind == "VirtualService"
	some r in input.spec.http
	sensitive_route(r)
	not r.retries
	not r.directResponse
	not r.redirect
	msg := sprintf("SVCGW-RETRY-002: %s: route %s has no explicit retries (Istio's default would retry writes)", [name_of(input), object.get(r, "name", "?")])
}

# An explicit retryOn is required whenever attempts > 0 (the default list is unsafe).
deny contains msg if {
	input.kind == "VirtualService"
	some r in input.spec.http
	sensitive_route(r)
	object.get(r, ["retries", "attempts"], 0) > 0
	not r.retries.retryOn
	msg := sprintf("SVCGW-RETRY-003: %s: route %s retries without retryOn", [name_of(input), object.get(r, "name", "?")])
}
