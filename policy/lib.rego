# Shared helpers for the svc-gateway policies. Everything is in package `main`, the
# package conftest evaluates by default; the same files run in `make test` through the
# regorus crate (tools/manifest-check). OPA v1 syntax (`contains`/`if`), no v0 forms.
package main

import rego.v1

# "Kind/namespace/name" for messages.
name_of(obj) := sprintf("%s/%s/%s", [obj.kind, object.get(obj, ["metadata", "namespace"], "-"), object.get(obj, ["metadata", "name"], "?")])

workload_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# The pod spec of any workload (CronJob one level deeper, bare Pods directly).
pod_spec(obj) := obj.spec.template.spec if workload_kinds[obj.kind]

pod_spec(obj) := obj.spec.jobTemplate.spec.template.spec if obj.kind == "CronJob"

pod_spec(obj) := obj.spec if obj.kind == "Pod"

# Every container, init containers included.
containers(obj) := array.concat(object.get(pod_spec(obj), "containers", []), object.get(pod_spec(obj), "initContainers", []))
