package main

import rego.v1

good_container := {
	"name": "app",
	"image": "docker.io/library/redis:7.4.6-alpine@sha256:3b73847e72874be07e6657b129a94761662b79bc0f679273757d4218573b2a98",
	"securityContext": {
		"allowPrivilegeEscalation": false,
		"readOnlyRootFilesystem": true,
		"runAsNonRoot": true,
		"capabilities": {"drop": ["ALL"]},
	},
	"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
	"readinessProbe": {"tcpSocket": {"port": 6379}},
	"livenessProbe": {"tcpSocket": {"port": 6379}},
}

deployment(c) := deployment_psc(c, {"seccompProfile": {"type": "RuntimeDefault"}})

deployment_psc(c, psc) := {
	"kind": "Deployment",
	"metadata": {"name": "d", "namespace": "gateway"},
	"spec": {"template": {"spec": {"securityContext": psc, "containers": [c]}}},
}

# object.union merges recursively, so replace whole sub-objects explicitly.
with_sc(c, sc) := object.union(object.remove(c, ["securityContext"]), {"securityContext": sc})

pod_denies(obj) := {m | some m in denies(obj); regex.match(`^SVCGW-(POD|IMG)`, m)}

test_hardened_container_passes if {
	count(pod_denies(deployment(good_container))) == 0
}

test_root_denied if {
	c := object.union(good_container, {"securityContext": object.union(good_container.securityContext, {"runAsNonRoot": false})})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-001")
}

test_pod_level_non_root_is_enough if {
	c := with_sc(good_container, object.remove(good_container.securityContext, ["runAsNonRoot"]))
	obj := deployment_psc(c, {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
	count(pod_denies(obj)) == 0
}

test_no_run_as_non_root_anywhere_denied if {
	c := with_sc(good_container, object.remove(good_container.securityContext, ["runAsNonRoot"]))
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-001")
}

test_writable_rootfs_denied if {
	c := with_sc(good_container, object.remove(good_container.securityContext, ["readOnlyRootFilesystem"]))
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-002")
}

test_privilege_escalation_denied if {
	c := object.union(good_container, {"securityContext": object.union(good_container.securityContext, {"allowPrivilegeEscalation": true})})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-003")
}

test_capabilities_not_dropped_denied if {
	c := object.union(good_container, {"securityContext": object.union(good_container.securityContext, {"capabilities": {"drop": ["NET_RAW"]}})})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-004")
}

test_added_capability_denied if {
	c := object.union(good_container, {"securityContext": object.union(good_container.securityContext, {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}})})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-005")
}

test_privileged_denied if {
	c := object.union(good_container, {"securityContext": object.union(good_container.securityContext, {"privileged": true})})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-006")
}

test_missing_seccomp_denied if {
	obj := deployment_psc(good_container, {})
	some m in pod_denies(obj)
	startswith(m, "SVCGW-POD-007")
}

test_unconfined_seccomp_denied if {
	c := object.union(good_container, {"securityContext": object.union(good_container.securityContext, {"seccompProfile": {"type": "Unconfined"}})})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-POD-007")
}

test_missing_resources_denied if {
	c := object.remove(good_container, ["resources"])
	msgs := {m | some m in pod_denies(deployment(c)); startswith(m, "SVCGW-POD-008")}
	count(msgs) == 3
}

test_missing_probes_denied if {
	c := object.remove(good_container, ["readinessProbe", "livenessProbe"])
	msgs := {m | some m in pod_denies(deployment(c)); regex.match(`^SVCGW-POD-0(09|10)`, m)}
	count(msgs) == 2
}

test_tag_only_image_denied if {
	c := object.union(good_container, {"image": "docker.io/library/redis:7.4.6-alpine"})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-IMG-001")
}

test_short_digest_denied if {
	c := object.union(good_container, {"image": "redis@sha256:abc123"})
	some m in pod_denies(deployment(c))
	startswith(m, "SVCGW-IMG-001")
}

test_init_containers_checked if {
	bad := object.union(good_container, {"name": "init", "image": "busybox:latest"})
	d := deployment(good_container)
	obj := object.union(d, {"spec": {"template": {"spec": {"initContainers": [bad]}}}})
	some m in pod_denies(obj)
	contains(m, "container init image busybox:latest")
}

test_statefulset_checked if {
	c := object.remove(good_container, ["securityContext"])
	obj := object.union(deployment(c), {"kind": "StatefulSet"})
	count(pod_denies(obj)) >= 4
}
