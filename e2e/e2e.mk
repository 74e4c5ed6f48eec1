# e2e toolchain and local control plane. Included by the top-level Makefile.
# Everything is parameterized by env (see e2e/hack/lib.sh): LLMD_CACHE,
# LLMD_CLUSTER_DIR, LLMD_BIN_DIR, LLMD_POD_CIDR, LLMD_GPU_NODES, ...

E2E_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
E2E_HACK := $(E2E_DIR)/hack

# Directory with kube-apiserver, kubectl, etcd, kwok, helm, llm-d-inference-sim, ...
E2E_BIN_DIR ?= $(shell $(E2E_HACK)/build-tools.sh --print-bin-dir)
# Admin kubeconfig of the local cluster (written by cluster-up).
E2E_CLUSTER_DIR ?= $(or $(LLMD_CLUSTER_DIR),$(or $(LLMD_CACHE),$(HOME)/.cache/llmd-operator)/cluster)
KUBECONFIG_E2E ?= $(E2E_CLUSTER_DIR)/kubeconfig

.PHONY: tools cluster-up cluster-down
tools: ## build the pinned e2e toolchain (kube, etcd, kwok, helm, inference-sim, prometheus) into the cache
	$(E2E_HACK)/build-tools.sh
	$(E2E_HACK)/build-prometheus.sh
	$(E2E_HACK)/nixl-venv.sh >/dev/null

# Our binaries the local cluster runs: llmd-pod-runner (the live nodes' kubelet) and
# the local stand-ins of our images (ghcr.io/llmd-dev/llmd-epp with llmd-sidecar,
# .../llmd-operator).
LIVE_BINS := -p llmd-pod-runner --bin llmd-pod-runner -p llmd-epp --bin llmd-epp --bin llmd-sidecar -p llmd-operator --bin llmd-operator
LIVE_BIN_ENV := LLMD_POD_RUNNER_BIN=$(TARGET_DIR)/debug/llmd-pod-runner LLMD_EPP_BIN=$(TARGET_DIR)/debug/llmd-epp LLMD_SIDECAR_BIN=$(TARGET_DIR)/debug/llmd-sidecar LLMD_OPERATOR_BIN=$(TARGET_DIR)/debug/llmd-operator

cluster-up: tools ## start (or reuse) the local control plane: fake GPU nodes, and live nodes (as root)
	$(CARGO) build $(LIVE_BINS)
	$(LIVE_BIN_ENV) LLMD_CLUSTER_DIR=$(E2E_CLUSTER_DIR) $(E2E_HACK)/cluster-up.sh

cluster-down: ## stop the local control plane and remove its state
	LLMD_CLUSTER_DIR=$(E2E_CLUSTER_DIR) $(E2E_HACK)/cluster-down.sh

# `make bench-scale`: the operator (release build) under DEPLOYMENTS LLMDeployments on
# NODES fake 8-GPU nodes, the controller-manager's and scheduler's API rate limits
# raised to KUBE_API_QPS so that Ready time measures the operator more than them.
DEPLOYMENTS ?= 1000
NODES ?= 500
KUBE_API_QPS ?= 400

.PHONY: bench-scale
bench-scale: tools ## the operator under many LLMDeployments: [DEPLOYMENTS=1000] [NODES=500] [KUBE_API_QPS=400] (about 10 minutes)
	$(CARGO) build --release -p llmd-operator --bin llmd-operator --bin llmd-bench-scale
	LLMD_GPU_NODES=$(NODES) LLMD_LIVE_NODES=0 LLMD_KUBE_API_QPS=$(KUBE_API_QPS) LLMD_CLUSTER_TIMEOUT=600 \
	  LLMD_OPERATOR_BIN=$(TARGET_DIR)/release/llmd-operator \
	  $(E2E_HACK)/with-cluster.sh $(E2E_HACK)/bench-scale.sh $(TARGET_DIR)/release/llmd-bench-scale \
	  --deployments $(DEPLOYMENTS) $(BENCH_ARGS)
