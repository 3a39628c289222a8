package main

import rego.v1

pod_sc(obj) := object.get(pod_spec(obj), "securityContext", {})

# A container setting wins over the pod setting, like in Kubernetes.
effective(obj, c, field) := c.securityContext[field] if {
	c.securityContext[field] != null
} else := pod_sc(obj)[field]

deny contains msg if {
	some c in containers(input)
	not effective(input, c, "runAsNonRoot") == true
	msg := sprintf("SVCGW-POD-001: %s: container %s must set runAsNonRoot: true", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	not c.securityContext.readOnlyRootFilesystem == true
	msg := sprintf("SVCGW-POD-002: %s: container %s must set readOnlyRootFilesystem: true", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	not c.securityContext.allowPrivilegeEscalation == false
	msg := sprintf("SVCGW-POD-003: %s: container %s must set allowPrivilegeEscalation: false", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	not "ALL" in object.get(c, ["securityContext", "capabilities", "drop"], [])
	msg := sprintf("SVCGW-POD-004: %s: container %s must drop ALL capabilities", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	count(object.get(c, ["securityContext", "capabilities", "add"], [])) > 0
	msg := sprintf("SVCGW-POD-005: %s: container %s adds capabilities", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	c.securityContext.privileged == true
	msg := sprintf("SVCGW-POD-006: %s: container %s is privileged", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	not effective(input, c, "seccompProfile").type == "RuntimeDefault"
	msg := sprintf("SVCGW-POD-007: %s: container %s must use seccompProfile RuntimeDefault", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	some field in ["requests.cpu", "requests.memory", "limits.memory"]
	parts := split(field, ".")
	not c.resources[parts[0]][parts[1]]
	msg := sprintf("SVCGW-POD-008: %s: container %s must set resources.%s", [name_of(input), c.name, field])
}

deny contains msg if {
	some c in containers(input)
	not c.readinessProbe
	msg := sprintf("SVCGW-POD-009: %s: container %s needs a readinessProbe", [name_of(input), c.name])
}

deny contains msg if {
	some c in containers(input)
	not c.livenessProbe
	msg := sprintf("SVCGW-POD-010: %s: container %s needs a livenessProbe", [name_of(input), c.name])
}

deny contains msg if {
	pod_spec(input).hostNetwork == true
	msg := sprintf("SVCGW-POD-011: %s: hostNetwork is not allowed", [name_of(input)])
}

# Images by digest only: a tag can be re-pushed, a digest cannot.
deny contains msg if {
	some c in containers(input)
	not regex.match(`^[^@\s]+@sha256:[a-f0-9]{64}$`, c.image)
	msg := sprintf("SVCGW-IMG-001: %s: container %s image %s is not pinned by sha256 digest", [name_of(input), c.name, c.image])
}
