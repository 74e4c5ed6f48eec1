//! `make bench-tuner`: the tuner against fixed weightings on a phased workload, with
//! real llm-d-inference-sim fleets and the real llmd-epp, each configuration on the
//! same seeded schedule, repeated, medians reported.

pub mod configs;
pub mod report;
pub mod run;
pub mod workload;
