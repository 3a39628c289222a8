package main

import rego.v1

full_labels := {
	"app.kubernetes.io/name": "ratelimit",
	"app.kubernetes.io/instance": "svc-gateway",
	"app.kubernetes.io/version": "0.1.0",
	"app.kubernetes.io/component": "ratelimit",
	"app.kubernetes.io/part-of": "svc-gateway",
	"app.kubernetes.io/managed-by": "argocd",
}

test_all_labels_pass if {
	count({m | some m in denies({"kind": "Service", "metadata": {"name": "x", "labels": full_labels}}); startswith(m, "SVCGW-LBL")}) == 0
}

test_missing_label_denied if {
	labels := object.remove(full_labels, ["app.kubernetes.io/component"])
	some m in denies({"kind": "Service", "metadata": {"name": "x", "labels": labels}})
	contains(m, "missing label app.kubernetes.io/component")
}

test_no_labels_denies_all_six if {
	msgs := {m | some m in denies({"kind": "Service", "metadata": {"name": "x"}}); startswith(m, "SVCGW-LBL-001")}
	count(msgs) == 6
}

test_wrong_part_of_denied if {
	labels := object.union(full_labels, {"app.kubernetes.io/part-of": "something-else"})
	some m in denies({"kind": "Service", "metadata": {"name": "x", "labels": labels}})
	startswith(m, "SVCGW-LBL-002")
}

# `deny` for one input (a function, so tests never put `with` on a `some` declaration).
denies(obj) := d if {
	d := deny with input as obj
}
