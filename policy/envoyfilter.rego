package main

import rego.v1

wasm_type := "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"

# EnvoyFilters in istio-system without a selector patch every proxy in the mesh.
deny contains msg if {
	input.kind == "EnvoyFilter"
	count(object.get(input, ["spec", "workloadSelector", "labels"], {})) == 0
	count(object.get(input, ["spec", "targetRefs"], [])) == 0
	msg := sprintf("SVCGW-EF-001: %s: needs a workloadSelector (or targetRefs)", [name_of(input)])
}

# The wasm filter configs (inline HTTP_FILTER or EXTENSION_CONFIG) of an EnvoyFilter.
wasm_configs(ef) := [cp.patch.value.typed_config |
	some cp in object.get(ef, ["spec", "configPatches"], [])
	cp.patch.value.typed_config["@type"] == wasm_type
]

deny contains msg if {
	input.kind == "EnvoyFilter"
	some tc in wasm_configs(input)
	not tc.config.failure_policy
	msg := sprintf("SVCGW-EF-002: %s: wasm filter %s has no failure_policy", [name_of(input), object.get(tc, ["config", "name"], "?")])
}

# Authentication must never fail open.
deny contains msg if {
	input.kind == "EnvoyFilter"
	some tc in wasm_configs(input)
	contains(object.get(tc, ["config", "name"], ""), "jwt")
	tc.config.failure_policy == "FAIL_OPEN"
	msg := sprintf("SVCGW-EF-003: %s: %s must fail closed", [name_of(input), tc.config.name])
}

# The deprecated boolean must not contradict (or stand in for) failure_policy.
deny contains msg if {
	input.kind == "EnvoyFilter"
	some tc in wasm_configs(input)
	tc.config.fail_open == true
	msg := sprintf("SVCGW-EF-004: %s: fail_open: true is not allowed, use failure_policy", [name_of(input)])
}

# One VM per filter: a wasm filter without its own vm_id shares the default VM with every
# other filter that has none, so one filter's crash takes the others down with it.
deny contains msg if {
	input.kind == "EnvoyFilter"
	some tc in wasm_configs(input)
	object.get(tc, ["config", "vm_config", "vm_id"], "") == ""
	msg := sprintf("SVCGW-EF-005: %s: wasm filter %s needs its own vm_config.vm_id", [name_of(input), object.get(tc, ["config", "name"], "?")])
}

# Rate-limit service down must not be an outage (DESIGN.md §4.3): fail open, with the
# local_ratelimit backstop.
deny contains msg if {
	input.kind == "EnvoyFilter"
	some cp in object.get(input, ["spec", "configPatches"], [])
	cp.patch.value.typed_config["@type"] == "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
	cp.patch.value.typed_config.failure_mode_deny == true
	msg := sprintf("SVCGW-EF-006: %s: the ratelimit filter must not deny when the rate-limit service fails (failure_mode_deny: false)", [name_of(input)])
}

# Patches of a gateway EnvoyFilter name their context: without it (ANY) a patch also applies
# to sidecars if the selector ever widens.
deny contains msg if {
	input.kind == "EnvoyFilter"
	input.spec.workloadSelector.labels.istio == "ingressgateway"
	some i, cp in object.get(input, ["spec", "configPatches"], [])
	object.get(cp, ["match", "context"], "ANY") != "GATEWAY"
	msg := sprintf("SVCGW-EF-007: %s: configPatches[%d] must match context GATEWAY", [name_of(input), i])
}

# --- whole render: no two wasm filters share a VM ---------------------------------------

ef_vm_ids contains [id, obj.metadata.name, object.get(tc, ["config", "name"], "?")] if {
	some obj in combined_objects
	obj.kind == "EnvoyFilter"
	some tc in wasm_configs(obj)
	id := object.get(tc, ["config", "vm_config", "vm_id"], "")
	id != ""
}

deny contains msg if {
	is_array(input)
	some a in ef_vm_ids
	some b in ef_vm_ids
	a[0] == b[0]
	a[2] < b[2]
	msg := sprintf("SVCGW-EF-008: wasm filters %s and %s share vm_id %s", [a[2], b[2], a[0]])
}

# jwt-authz pauses requests on headers while a JWKS refetch runs; with
# allow_on_headers_stop_iteration the body could be forwarded before the decision
# (filters/jwt-authz/README.md).
deny contains msg if {
	input.kind == "EnvoyFilter"
	some tc in wasm_configs(input)
	contains(object.get(tc, ["config", "name"], ""), "jwt")
	tc.config.allow_on_headers_stop_iteration == true
	msg := sprintf("SVCGW-EF-009: %s: %s must not set allow_on_headers_stop_iteration", [name_of(input), tc.config.name])
}

# Descriptor actions belong on the envoy.filters.http.ratelimit filter itself: Envoy 1.39.3
# accepts route/virtual-host `rate_limits` with `hits_addend` but never sends the addend
# (filters/ratelimit-tagger/README.md), so every request would count 1 whatever its weight.
route_level_targets := {"VIRTUAL_HOST", "HTTP_ROUTE", "ROUTE_CONFIGURATION"}

deny contains msg if {
	input.kind == "EnvoyFilter"
	some i, cp in object.get(input, ["spec", "configPatches"], [])
	cp.applyTo in route_level_targets
	some path, value
	walk(object.get(cp, ["patch", "value"], {}), [path, value])
	count(path) > 0
	path[count(path) - 1] == "rate_limits"
	msg := sprintf("SVCGW-EF-010: %s: configPatches[%d] (%s) sets rate_limits; put the descriptor actions on the envoy.filters.http.ratelimit filter (route-level hits_addend is never sent)", [name_of(input), i, cp.applyTo])
}
