# llmd-epp targets (included by the root Makefile).

# llm-d-inference-sim comes from the pinned e2e toolchain (`make tools`).
EPP_CACHE ?= $(or $(LLMD_CACHE),$(HOME)/.cache/llmd-operator)
EPP_SIM_BIN ?= $(or $(LLMD_SIM_BIN),$(E2E_BIN_DIR)/llm-d-inference-sim)
EPP_VENV := $(EPP_CACHE)/venv-vllm-router
EPP_RELEASE := $(or $(CARGO_TARGET_DIR),target)/release

.PHONY: epp-vllm-router
epp-vllm-router: ## install vllm-router (PyPI) into a venv in the cache
	@if [ -x "$(EPP_VENV)/bin/vllm-router" ]; then echo "vllm-router: $(EPP_VENV)/bin/vllm-router"; else \
	  python3 -m venv "$(EPP_VENV)" && "$(EPP_VENV)/bin/pip" install -q vllm-router && \
	  echo "vllm-router: $(EPP_VENV)/bin/vllm-router"; fi

.PHONY: bench
bench: tools ## routing benchmark on a fleet of llm-d-inference-sim (see docs/benchmarks.md)
	-@$(MAKE) --no-print-directory epp-vllm-router
	$(CARGO) build --release -p llmd-epp -p llmd-loadgen
	LLMD_SIM_BIN="$(EPP_SIM_BIN)" VLLM_ROUTER_BIN="$(EPP_VENV)/bin/vllm-router" \
	  $(EPP_RELEASE)/llmd-loadgen --epp-bin $(EPP_RELEASE)/llmd-epp $(BENCH_ARGS)
	$(CARGO) bench -p llmd-epp --bench pick

.PHONY: epp-fuzz
epp-fuzz: ## run the llmd-epp fuzz target for 60s (needs cargo-fuzz and nightly)
	cd crates/epp/fuzz && cargo +nightly fuzz run request_parsing -- -max_total_time=60
