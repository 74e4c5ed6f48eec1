# Benchmarks (included by the root Makefile): llmd-loadgen drives a fleet of
# llm-d-inference-sim through llmd-epp and the peer routers; `pick` times one
# scheduling decision.

# llm-d-inference-sim comes from the pinned e2e toolchain (`make tools`).
BENCH_CACHE ?= $(or $(LLMD_CACHE),$(HOME)/.cache/llmd-operator)
BENCH_SIM_BIN ?= $(or $(LLMD_SIM_BIN),$(E2E_BIN_DIR)/llm-d-inference-sim)
BENCH_VENV := $(BENCH_CACHE)/venv-vllm-router
BENCH_SGLANG_VENV := $(BENCH_CACHE)/venv-sglang-router
BENCH_RELEASE := $(TARGET_DIR)/release

.PHONY: bench-peers
bench-peers: ## install the peer routers from PyPI into venvs in the cache: vllm-router, sglang-router (smg)
	@if [ -x "$(BENCH_VENV)/bin/vllm-router" ]; then echo "vllm-router: $(BENCH_VENV)/bin/vllm-router"; else \
	  python3 -m venv "$(BENCH_VENV)" && "$(BENCH_VENV)/bin/pip" install -q vllm-router && \
	  echo "vllm-router: $(BENCH_VENV)/bin/vllm-router"; fi
	@if [ -x "$(BENCH_SGLANG_VENV)/bin/smg" ]; then echo "sglang-router: $(BENCH_SGLANG_VENV)/bin/smg"; else \
	  python3 -m venv "$(BENCH_SGLANG_VENV)" && "$(BENCH_SGLANG_VENV)/bin/pip" install -q sglang-router && \
	  echo "sglang-router: $(BENCH_SGLANG_VENV)/bin/smg"; fi

.PHONY: bench
bench: tools ## routing benchmark on a fleet of llm-d-inference-sim (peers included), then the pick benchmark (see docs/benchmarks.md)
	-@$(MAKE) --no-print-directory bench-peers
	$(CARGO) build --release -p llmd-epp -p llmd-loadgen
	LLMD_SIM_BIN="$(BENCH_SIM_BIN)" VLLM_ROUTER_BIN="$(BENCH_VENV)/bin/vllm-router" \
	  SGLANG_ROUTER_BIN="$(BENCH_SGLANG_VENV)/bin/smg" \
	  $(BENCH_RELEASE)/llmd-loadgen --epp-bin $(BENCH_RELEASE)/llmd-epp --sidecar-bin $(BENCH_RELEASE)/llmd-sidecar $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-pick

.PHONY: bench-pick
bench-pick: ## time one scheduling decision over 8..256 endpoints (criterion)
	$(CARGO) bench -p llmd-epp --bench pick

# The shipped phased workloads; WORKLOAD=path.yaml runs one of yours instead.
BENCH_TUNER_WORKLOADS := $(wildcard crates/loadgen/workloads/steady-hot-tenants.yaml crates/loadgen/workloads/tenant-churn.yaml crates/loadgen/workloads/long-prompt-surge.yaml)
REPEATS ?= 3

.PHONY: bench-tuner
bench-tuner: tools ## the tuner vs fixed weightings on phased workloads: [WORKLOAD=path.yaml] [OUT=result.json] [REPEATS=3] [BENCH_TUNER_ARGS="--only tuned,3/2/2 --trace"]
	$(CARGO) build --release -p llmd-epp -p llmd-loadgen
	@set -e; for w in $(or $(WORKLOAD),$(BENCH_TUNER_WORKLOADS)); do \
	  out="$(or $(OUT),$(TARGET_DIR)/bench-tuner/$$(basename $$w .yaml).json)"; mkdir -p "$$(dirname "$$out")"; \
	  LLMD_SIM_BIN="$(BENCH_SIM_BIN)" $(BENCH_RELEASE)/llmd-bench-tuner --epp-bin $(BENCH_RELEASE)/llmd-epp \
	    --workload "$$w" --out "$$out" --repeats $(REPEATS) $(BENCH_TUNER_ARGS); \
	  echo "result: $$out"; done

.PHONY: bench-autoscale
bench-autoscale: tools ## built-in autoscaling of prefill/decode vs fixed splits of the same GPUs, on a private live cluster (root): [BENCH_ARGS="--only autoscaled"] (about 12 minutes)
	$(CARGO) build $(LIVE_BINS) -p llmd-loadgen --bin llmd-bench-autoscale
	$(LIVE_BIN_ENV) $(E2E_HACK)/with-cluster.sh $(E2E_HACK)/bench-autoscale.sh $(TARGET_DIR)/debug/llmd-bench-autoscale \
	  --out $(TARGET_DIR)/bench-autoscale.json $(BENCH_ARGS)
