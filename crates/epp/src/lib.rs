//! `llmd-epp`: an EndpointPicker for llm-d style inference pools.
//!
//! Pure scheduling (`candidate`, `scorer`, `filter`, `picker`, `pd_decider`,
//! `scheduler`) is kept apart from the I/O around it (`endpoint_discovery`,
//! `metrics_scraper`, `config_watch`, `proxy`, `ext_proc`).

pub mod candidate;
pub mod cli;
pub mod config_watch;
pub mod endpoint;
pub mod endpoint_picker;
pub mod engine_metrics;
pub mod ext_proc;
pub mod filter;
pub mod fuzz_input;
pub mod inference_request;
pub mod metrics_scraper;
pub mod pd_decider;
pub mod picker;
pub mod pod_watch;
pub mod prefix_hash;
pub mod prefix_index;
pub mod proxy;
pub mod scheduler;
pub mod scheduler_config;
pub mod scorer;
pub mod static_endpoints;
pub mod telemetry;
