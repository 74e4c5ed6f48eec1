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
tools: ## build the pinned e2e toolchain (kube, etcd, kwok, helm, inference-sim) into the cache
	$(E2E_HACK)/build-tools.sh

cluster-up: tools ## start (or reuse) the local control plane with fake GPU nodes
	LLMD_CLUSTER_DIR=$(E2E_CLUSTER_DIR) $(E2E_HACK)/cluster-up.sh

cluster-down: ## stop the local control plane and remove its state
	LLMD_CLUSTER_DIR=$(E2E_CLUSTER_DIR) $(E2E_HACK)/cluster-down.sh
