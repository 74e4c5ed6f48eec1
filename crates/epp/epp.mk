# llmd-epp targets (included by the root Makefile). Its benchmarks live with
# llmd-loadgen (crates/loadgen/loadgen.mk).

.PHONY: epp-fuzz
epp-fuzz: ## run the llmd-epp fuzz target for 60s (needs cargo-fuzz and nightly)
	cd crates/epp/fuzz && cargo +nightly fuzz run request_parsing -- -max_total_time=60
