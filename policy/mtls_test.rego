package main

import rego.v1

pa(ns, mode) := {"kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": mode}}}

mtls_denies(obj) := {m | some m in denies(obj); startswith(m, "SVCGW-MTLS")}

test_strict_passes if {
	count(mtls_denies(pa("gateway", "STRICT"))) == 0
}

test_permissive_denied if {
	some m in mtls_denies(pa("gateway", "PERMISSIVE"))
	contains(m, "PERMISSIVE")
}

test_unset_mode_denied if {
	count(mtls_denies({"kind": "PeerAuthentication", "metadata": {"name": "d"}, "spec": {}})) == 1
}

test_permissive_port_denied if {
	obj := object.union(pa("gateway", "STRICT"), {"spec": {"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}})
	some m in mtls_denies(obj)
	startswith(m, "SVCGW-MTLS-002")
}

dr(mode) := {"kind": "DestinationRule", "metadata": {"name": "d"}, "spec": {"host": "svc-wallet.wallet.svc.cluster.local", "trafficPolicy": {"tls": {"mode": mode}}}}

test_dr_istio_mutual_passes if {
	count(mtls_denies(dr("ISTIO_MUTUAL"))) == 0
}

test_dr_disable_denied if {
	some m in mtls_denies(dr("DISABLE"))
	startswith(m, "SVCGW-MTLS-003")
}

test_dr_external_host_simple_passes if {
	count(mtls_denies({"kind": "DestinationRule", "metadata": {"name": "j"}, "spec": {"host": "auth.exchange.example.com", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}})) == 0
}

combined(objs) := [{"path": "render", "contents": o} | some o in objs]

test_combined_both_strict_passes if {
	count(mtls_denies(combined([pa("istio-system", "STRICT"), pa("gateway", "STRICT")]))) == 0
}

test_combined_missing_mesh_wide_denied if {
	some m in mtls_denies(combined([pa("gateway", "STRICT")]))
	startswith(m, "SVCGW-MTLS-010")
}

test_combined_missing_namespace_denied if {
	some m in mtls_denies(combined([pa("istio-system", "STRICT")]))
	startswith(m, "SVCGW-MTLS-011")
}

test_combined_selector_scoped_policy_does_not_count if {
	scoped := object.union(pa("istio-system", "STRICT"), {"spec": {"selector": {"matchLabels": {"app": "x"}}, "mtls": {"mode": "STRICT"}}})
	some m in mtls_denies(combined([scoped, pa("gateway", "STRICT")]))
	startswith(m, "SVCGW-MTLS-010")
}
