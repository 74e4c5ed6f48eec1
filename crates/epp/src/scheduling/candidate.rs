//! What scheduling sees of an endpoint and a request: plain values, so every
//! scorer, filter and the P/D decider is a pure function over them.

use std::sync::Arc;

use llmd_api::engine_metrics::LoraState;

use crate::pool::endpoint::Role;

/// Load signals from a fresh scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    pub waiting: f64,
    pub running: f64,
    /// 0..=1
    pub kv_usage: f64,
}

/// One endpoint as a pick sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub address: Arc<str>,
    pub role: Role,
    /// `None` when metrics were never scraped or are stale.
    pub load: Option<Load>,
    /// Requests this EPP has in flight there.
    pub in_flight: u64,
    /// Leading prompt blocks the prefix index says it holds.
    pub matched_blocks: usize,
    /// The TTFT (seconds) its latency model predicts for this request.
    pub predicted_ttft: Option<f64>,
    /// The mean time between this request's tokens (seconds) it predicts.
    pub predicted_itl: Option<f64>,
    /// Its KV-compatibility value: prefill and decode are paired only when equal.
    pub kv_compatibility: Option<Arc<str>>,
    /// The LoRA adapters it runs, from a fresh scrape.
    pub lora: Option<LoraState>,
}

impl Candidate {
    /// A candidate with no signals yet (tests, fresh endpoints).
    pub fn new(address: &str, role: Role) -> Self {
        Candidate {
            address: Arc::from(address),
            role,
            load: None,
            in_flight: 0,
            matched_blocks: 0,
            predicted_ttft: None,
            predicted_itl: None,
            kv_compatibility: None,
            lora: None,
        }
    }
}

/// What scheduling needs of a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestFeatures {
    /// The model the request names (a LoRA adapter's name for adapter requests).
    pub model: String,
    /// Full prompt blocks hashed (capped by `maxPrefixBlocksToMatch`).
    pub prompt_blocks: usize,
    pub block_size_tokens: usize,
    /// Approximate prompt length in tokens.
    pub prompt_tokens: usize,
    /// Endpoint named by the `x-session-token` header, if any.
    pub session_endpoint: Option<String>,
    /// The request's TTFT objective in seconds, if it carries one.
    pub slo_ttft: Option<f64>,
    /// Its time-per-output-token objective in seconds, if it carries one.
    pub slo_tpot: Option<f64>,
}

impl RequestFeatures {
    /// The fraction of the prompt's blocks `matched_blocks` covers, in [0, 1]; 0 for
    /// a prompt shorter than one block (nothing to match).
    pub fn prefix_match(&self, matched_blocks: usize) -> f64 {
        if self.prompt_blocks == 0 {
            0.0
        } else {
            (matched_blocks as f64 / self.prompt_blocks as f64).clamp(0.0, 1.0)
        }
    }
}
