package main

import rego.v1

required_labels := [
	"app.kubernetes.io/name",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
	"app.kubernetes.io/component",
	"app.kubernetes.io/part-of",
	"app.kubernetes.io/managed-by",
]

deny contains msg if {
	is_string(input.kind)
	some label in required_labels
	not input.metadata.labels[label]
	msg := sprintf("SVCGW-LBL-001: %s: missing label %s", [name_of(input), label])
}

deny contains msg if {
	input.metadata.labels["app.kubernetes.io/part-of"]
	input.metadata.labels["app.kubernetes.io/part-of"] != "svc-gateway"
	msg := sprintf("SVCGW-LBL-002: %s: app.kubernetes.io/part-of must be svc-gateway", [name_of(input)])
}
