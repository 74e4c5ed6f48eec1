# llmd-operator: see README.md. `make demo` runs the local demo, `make test` every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

include e2e/e2e.mk
include manifests/manifests.mk
-include crates/epp/epp.mk
-include crates/loadgen/loadgen.mk

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## build every binary (debug)
	$(CARGO) build --workspace --bins

.PHONY: crds
crds: ## regenerate crds/ from the Rust types
	$(CARGO) run -q -p llmd-operator -- crd > crds/llmd.dev_llmdeployments.yaml

.PHONY: lint
lint: ## rustfmt and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: tools ## unit tests, CEL rule tests, the CRD drift test, EPP tests on llm-d-inference-sim (no cluster)
	LLMD_SIM_BIN=$(E2E_BIN_DIR)/llm-d-inference-sim $(CARGO) test --workspace

.PHONY: demo
demo: tools ## local demo: control plane with live GPU nodes, the operator, the P/D sample serving requests
	$(CARGO) build $(LIVE_BINS)
	$(LIVE_BIN_ENV) $(E2E_HACK)/demo.sh

.PHONY: e2e
e2e: tools ## e2e suite on a private local control plane (started and stopped here)
	$(CARGO) build -p llmd-operator --bin llmd-operator --tests -p llmd-epp --bin llmd-epp --bin llmd-sidecar -p llmd-pod-runner --bin llmd-pod-runner
	$(LIVE_BIN_ENV) $(E2E_HACK)/with-cluster.sh $(CARGO) test -p llmd-operator --test e2e -- --ignored --test-threads=$(E2E_THREADS)

E2E_THREADS ?= 2

.PHONY: engine-contract
engine-contract: python-yaml ## check every vLLM flag, key and env var the operator renders against vLLM's wheel from PyPI
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON) crates/operator/hack/engine_contract.py

.PHONY: test
test: lint unit manifests-test e2e ## every test: lint, unit (incl. CRD drift), e2e on a local real control plane
