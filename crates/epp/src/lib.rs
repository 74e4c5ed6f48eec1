//! `llmd-epp`: an EndpointPicker for llm-d style inference pools.
//!
//! - `scheduling`: pure decisions: filters, scorers, the max-score picker and the
//!   P/D decider over plain candidate values (the config they run is
//!   `llmd_api::endpoint_picker_config::SchedulerConfig`);
//! - `pool`: endpoints, pod discovery and metrics scraping;
//! - `prefix`: prompt block hashing and the approximate prefix index;
//! - `predict`: each endpoint's TTFT model, learned from the first tokens it sends;
//! - `endpoint_picker`: the state (pool, index, config in force) glued to scheduling;
//! - `frontend`: ext-proc and the HTTP proxy, sharing one request-routing path;
//! - `pd`: the P/D two-step the proxy and the decode-side sidecar share;
//! - `sidecar`: the decode-side routing sidecar (`llmd-sidecar`);
//! - `config_watch`, `telemetry`, `cli`: the process around them.

pub mod cli;
pub mod config_watch;
pub mod endpoint_picker;
pub mod frontend;
pub mod fuzz_input;
pub mod openai_error;
pub mod pd;
pub mod pool;
pub mod predict;
pub mod prefix;
pub mod scheduling;
#[cfg(test)]
mod scripted_api;
pub mod serve;
pub mod sidecar;
pub mod telemetry;
