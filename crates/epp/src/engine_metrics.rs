//! The vLLM `/metrics` parser, shared with the operator's embedded scheduler.

pub use llmd_api::engine_metrics::*;
