package main

import rego.v1

wasm_patch(name, policy) := {
	"applyTo": "HTTP_FILTER",
	"match": {"context": "GATEWAY"},
	"patch": {"operation": "INSERT_BEFORE", "value": {
		"name": name,
		"typed_config": {
			"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
			"config": object.union({"name": name, "vm_config": {"vm_id": name}}, policy),
		},
	}},
}

ef(patches, selector) := {
	"kind": "EnvoyFilter",
	"metadata": {"name": "f", "namespace": "istio-system"},
	"spec": object.union({"configPatches": patches}, selector),
}

gw_selector := {"workloadSelector": {"labels": {"istio": "ingressgateway"}}}

ef_denies(obj) := {m | some m in denies(obj); startswith(m, "SVCGW-EF")}

test_selected_wasm_with_policy_passes if {
	count(ef_denies(ef([wasm_patch("jwt-authz", {"failure_policy": "FAIL_CLOSED"})], gw_selector))) == 0
}

test_missing_selector_denied if {
	some m in ef_denies(ef([wasm_patch("security-headers", {"failure_policy": "FAIL_CLOSED"})], {}))
	startswith(m, "SVCGW-EF-001")
}

test_empty_selector_denied if {
	some m in ef_denies(ef([], {"workloadSelector": {"labels": {}}}))
	startswith(m, "SVCGW-EF-001")
}

test_missing_failure_policy_denied if {
	some m in ef_denies(ef([wasm_patch("ratelimit-tagger", {})], gw_selector))
	startswith(m, "SVCGW-EF-002")
}

test_jwt_fail_open_denied if {
	some m in ef_denies(ef([wasm_patch("jwt-authz", {"failure_policy": "FAIL_OPEN"})], gw_selector))
	startswith(m, "SVCGW-EF-003")
}

test_tagger_fail_open_allowed if {
	count(ef_denies(ef([wasm_patch("ratelimit-tagger", {"failure_policy": "FAIL_OPEN"})], gw_selector))) == 0
}

test_legacy_fail_open_denied if {
	some m in ef_denies(ef([wasm_patch("security-headers", {"failure_policy": "FAIL_CLOSED", "fail_open": true})], gw_selector))
	startswith(m, "SVCGW-EF-004")
}

test_non_wasm_patch_needs_no_policy if {
	p := {"applyTo": "HTTP_FILTER", "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.filters.http.ratelimit", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit", "domain": "svc-gateway"}}}}
	count(ef_denies(ef([p], gw_selector))) == 0
}
