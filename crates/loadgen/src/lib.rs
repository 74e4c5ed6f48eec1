//! Benchmarks of llmd-operator's EndpointPicker and tuner over fleets of
//! llm-d-inference-sim processes on loopback: `llmd-loadgen` (routing, behind
//! `make bench`) and `llmd-bench-tuner` (the tuner against fixed weightings, behind
//! `make bench-tuner`).

pub mod driver;
pub mod fleet;
pub mod kv_forward;
pub mod oracle;
pub mod overhead;
pub mod plot;
pub mod report;
pub mod routers;
pub mod tuner_bench;
pub mod workload;
