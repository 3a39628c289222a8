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
	p := {"applyTo": "HTTP_FILTER", "match": {"context": "GATEWAY"}, "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.filters.http.ratelimit", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit", "domain": "svc-gateway"}}}}
	count(ef_denies(ef([p], gw_selector))) == 0
}

test_missing_vm_id_denied if {
	p := wasm_patch("security-headers", {"failure_policy": "FAIL_RELOAD"})
	no_vm := json.remove(p, ["patch/value/typed_config/config/vm_config/vm_id"])
	some m in ef_denies(ef([no_vm], gw_selector))
	startswith(m, "SVCGW-EF-005")
}

rl_patch(deny_on_failure) := {
	"applyTo": "HTTP_FILTER",
	"match": {"context": "GATEWAY"},
	"patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.filters.http.ratelimit", "typed_config": {
		"@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
		"domain": "svc-gateway",
		"failure_mode_deny": deny_on_failure,
	}}},
}

test_ratelimit_fail_open_passes if {
	count(ef_denies(ef([rl_patch(false)], gw_selector))) == 0
}

test_ratelimit_fail_closed_denied if {
	some m in ef_denies(ef([rl_patch(true)], gw_selector))
	startswith(m, "SVCGW-EF-006")
}

test_gateway_patch_without_context_denied if {
	p := json.remove(rl_patch(false), ["match/context"])
	some m in ef_denies(ef([p], gw_selector))
	startswith(m, "SVCGW-EF-007")
}

test_sidecar_context_on_gateway_denied if {
	p := object.union(rl_patch(false), {"match": {"context": "SIDECAR_INBOUND"}})
	some m in ef_denies(ef([p], gw_selector))
	startswith(m, "SVCGW-EF-007")
}

test_distinct_vm_ids_pass if {
	a := ef([wasm_patch("jwt-authz", {"failure_policy": "FAIL_CLOSED"})], gw_selector)
	b := ef([wasm_patch("ratelimit-tagger", {"failure_policy": "FAIL_RELOAD"})], gw_selector)
	count({m | some m in denies(combined([a, b])); startswith(m, "SVCGW-EF-008")}) == 0
}

test_shared_vm_id_denied if {
	shared := {"failure_policy": "FAIL_CLOSED", "vm_config": {"vm_id": "shared"}}
	a := ef([wasm_patch("jwt-authz", shared)], gw_selector)
	b := ef([wasm_patch("ratelimit-tagger", shared)], gw_selector)
	some m in denies(combined([a, b]))
	startswith(m, "SVCGW-EF-008")
}

test_jwt_stop_iteration_denied if {
	some m in ef_denies(ef([wasm_patch("jwt-authz", {"failure_policy": "FAIL_CLOSED", "allow_on_headers_stop_iteration": true})], gw_selector))
	startswith(m, "SVCGW-EF-009")
}

test_jwt_explicit_false_passes if {
	count(ef_denies(ef([wasm_patch("jwt-authz", {"failure_policy": "FAIL_CLOSED", "allow_on_headers_stop_iteration": false})], gw_selector))) == 0
}

vhost_patch(value) := {
	"applyTo": "VIRTUAL_HOST",
	"match": {"context": "GATEWAY"},
	"patch": {"operation": "MERGE", "value": value},
}

test_vhost_header_removal_passes if {
	p := vhost_patch({"request_headers_to_remove": ["x-rl-client-ip"]})
	count({m | some m in ef_denies(ef([p], gw_selector)); startswith(m, "SVCGW-EF-010")}) == 0
}

test_vhost_rate_limits_denied if {
	p := vhost_patch({"rate_limits": [{"actions": [{"request_headers": {"header_name": "x-rl-client-ip", "descriptor_key": "client_ip"}}], "hits_addend": {"format": "%REQ(x-rl-weight)%"}}]})
	some m in ef_denies(ef([p], gw_selector))
	startswith(m, "SVCGW-EF-010")
}

test_route_rate_limits_denied if {
	p := {
		"applyTo": "HTTP_ROUTE",
		"match": {"context": "GATEWAY"},
		"patch": {"operation": "MERGE", "value": {"route": {"rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "x"}}]}]}}},
	}
	some m in ef_denies(ef([p], gw_selector))
	startswith(m, "SVCGW-EF-010")
}

test_filter_rate_limits_pass if {
	p := json.patch(rl_patch(false), [{"op": "add", "path": "patch/value/typed_config/rate_limits", "value": [{"actions": [{"request_headers": {"header_name": "x-rl-client-ip", "descriptor_key": "client_ip"}}]}]}])
	count(ef_denies(ef([p], gw_selector))) == 0
}
