package main

import rego.v1

# --- per object -------------------------------------------------------------------

# No PeerAuthentication may relax mTLS: only STRICT (UNSET inherits, which we forbid too:
# every policy we ship states its mode).
deny contains msg if {
	input.kind == "PeerAuthentication"
	mode := object.get(input, ["spec", "mtls", "mode"], "UNSET")
	mode != "STRICT"
	msg := sprintf("SVCGW-MTLS-001: %s: mtls.mode is %s, must be STRICT", [name_of(input), mode])
}

deny contains msg if {
	input.kind == "PeerAuthentication"
	some port, cfg in object.get(input, ["spec", "portLevelMtls"], {})
	cfg.mode != "STRICT"
	msg := sprintf("SVCGW-MTLS-002: %s: port %v is %s, must be STRICT", [name_of(input), port, cfg.mode])
}

# Traffic to in-mesh services must use Istio mTLS.
deny contains msg if {
	input.kind == "DestinationRule"
	endswith(input.spec.host, ".svc.cluster.local")
	mode := object.get(input, ["spec", "trafficPolicy", "tls", "mode"], "UNSET")
	mode != "ISTIO_MUTUAL"
	msg := sprintf("SVCGW-MTLS-003: %s: tls.mode for in-mesh host %s is %s, must be ISTIO_MUTUAL", [name_of(input), input.spec.host, mode])
}

deny contains msg if {
	input.kind == "DestinationRule"
	some pls in object.get(input, ["spec", "trafficPolicy", "portLevelSettings"], [])
	pls.tls.mode == "DISABLE"
	msg := sprintf("SVCGW-MTLS-004: %s: a port disables TLS", [name_of(input)])
}

# --- whole render (conftest --combine: input is [{path, contents}]) -----------------

combined_objects contains obj if {
	is_array(input)
	some doc in input
	obj := doc.contents
}

mesh_strict if {
	some obj in combined_objects
	obj.kind == "PeerAuthentication"
	obj.metadata.namespace == "istio-system"
	not obj.spec.selector
	obj.spec.mtls.mode == "STRICT"
}

gateway_ns_strict if {
	some obj in combined_objects
	obj.kind == "PeerAuthentication"
	obj.metadata.namespace == "gateway"
	not obj.spec.selector
	obj.spec.mtls.mode == "STRICT"
}

deny contains "SVCGW-MTLS-010: no mesh-wide PeerAuthentication with mode STRICT in istio-system" if {
	is_array(input)
	not mesh_strict
}

deny contains "SVCGW-MTLS-011: no namespace-wide PeerAuthentication with mode STRICT in gateway" if {
	is_array(input)
	not gateway_ns_strict
}
