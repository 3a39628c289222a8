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
