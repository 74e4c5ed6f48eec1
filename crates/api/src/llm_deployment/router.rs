//! The EndpointPicker (router): scorer weights, the P/D split, the prefix-cache index
//! and the tuner that retunes the weights at run time.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The EndpointPicker (router) of the deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouterSpec {
    /// Number of EndpointPicker pods.
    #[serde(default = "default_router_replicas")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: i32,

    /// Container image of the EndpointPicker. Unset means the operator's default
    /// (its --default-epp-image flag, set by the Helm chart or OLM bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Resources of the EndpointPicker container. Unset means the operator's default
    /// (its --default-epp-resources flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Weights of the scorers; the picker takes the endpoint with the highest weighted sum.
    #[serde(default)]
    pub scorers: ScorerWeights,

    /// When a request is split into prefill and decode.
    #[serde(default)]
    pub disaggregation: DisaggregationSpec,

    /// Approximate prefix-cache index of the router.
    #[serde(default)]
    pub prefix_cache: PrefixCacheSpec,

    /// The operator's tuner, which retunes the scorer weights from live metrics.
    #[serde(default)]
    pub auto_tune: AutoTuneSpec,

    /// Latency objectives of requests that carry none of their own (requests set
    /// theirs with the x-llm-d-slo-ttft-ms / x-llm-d-slo-tpot-ms headers). The
    /// latency scorer prefers pods predicted to meet them; a request no pod is
    /// predicted to meet is still served, and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,

    /// The routing sidecar in decode pods (when prefill pods hand them KV cache): it
    /// runs the P/D legs for requests a Gateway sends with the EndpointPicker's
    /// prefiller header.
    #[serde(default, skip_serializing_if = "RoutingSidecarSpec::is_default")]
    pub sidecar: RoutingSidecarSpec,
}

/// The decode pods' routing sidecar.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSidecarSpec {
    /// Off: decode pods serve on their own port, P/D runs only through the
    /// EndpointPicker's OpenAI proxy (behind a Gateway requests are served whole).
    #[serde(default = "default_sidecar_enabled")]
    pub enabled: bool,
    /// The sidecar container's resources (default: 100m CPU and 64Mi requested,
    /// 512Mi memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_sidecar_enabled() -> bool {
    true
}

impl Default for RoutingSidecarSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            resources: None,
        }
    }
}

impl RoutingSidecarSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Latency objectives in milliseconds.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    /// Time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub ttft_ms: Option<u32>,
    /// Time per output token after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub tpot_ms: Option<u32>,
}

fn default_router_replicas() -> i32 {
    1
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            image: None,
            resources: None,
            scorers: ScorerWeights::default(),
            disaggregation: DisaggregationSpec::default(),
            prefix_cache: PrefixCacheSpec::default(),
            auto_tune: AutoTuneSpec::default(),
            slo: None,
            sidecar: RoutingSidecarSpec::default(),
        }
    }
}

/// Weights of the EndpointPicker scorers (each score is in [0, 1]; 0 turns a scorer off).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.prefixCache + self.queue + self.kvCacheUtilization + self.activeRequests + self.sessionAffinity + self.latency + (has(self.loraAffinity) ? self.loraAffinity : 0.0) > 0.0").message("spec.router.scorers: at least one scorer weight must be greater than 0"))]
pub struct ScorerWeights {
    /// Weight of the prefix-cache scorer (share of the prompt the pod probably holds).
    #[serde(default = "default_prefix_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub prefix_cache: f64,
    /// Weight of the queue scorer (fewer waiting requests is better).
    #[serde(default = "default_load_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub queue: f64,
    /// Weight of the KV-cache utilisation scorer (more free KV cache is better).
    #[serde(default = "default_load_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub kv_cache_utilization: f64,
    /// Weight of the active-request scorer (fewer requests in flight from this router is better).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub active_requests: f64,
    /// Weight of session affinity (requests with the same x-session-token header stick to a pod).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub session_affinity: f64,
    /// Weight of the latency scorer: the TTFT the request is predicted to see on each
    /// pod (queued prefill work, uncached prompt tokens and each pod's learned prefill
    /// speed). Used alone it routes to the pod predicted fastest.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub latency: f64,
    /// Weight of the LoRA-affinity scorer (llm-d's lora-affinity-scorer): a request
    /// for an adapter goes where that adapter already runs, else where there is room
    /// to load it (from the engines' `vllm:lora_requests_info`). Unset, it is
    /// [`DEFAULT_LORA_AFFINITY_WEIGHT`] (2) when `spec.model.adapters` lists any and
    /// off otherwise; 0 turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub lora_affinity: Option<f64>,
}

/// The LoRA-affinity weight of a deployment that serves adapters and leaves
/// `spec.router.scorers.loraAffinity` unset.
pub const DEFAULT_LORA_AFFINITY_WEIGHT: f64 = 2.0;

fn default_prefix_weight() -> f64 {
    3.0
}

fn default_load_weight() -> f64 {
    2.0
}

impl Default for ScorerWeights {
    fn default() -> Self {
        Self {
            prefix_cache: 3.0,
            queue: 2.0,
            kv_cache_utilization: 2.0,
            active_requests: 0.0,
            session_affinity: 0.0,
            latency: 0.0,
            lora_affinity: None,
        }
    }
}

/// When a request is split into prefill and decode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DisaggregationSpec {
    /// Split a request when the prompt tokens not cached on the chosen decode pod reach
    /// this many. 0 disables splitting.
    #[serde(default = "default_non_cached_tokens")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub non_cached_tokens: i32,
}

fn default_non_cached_tokens() -> i32 {
    256
}

impl Default for DisaggregationSpec {
    fn default() -> Self {
        Self {
            non_cached_tokens: default_non_cached_tokens(),
        }
    }
}

/// The router's prefix-cache index.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrefixCacheSpec {
    /// Where the router learns which server holds which prompt prefix.
    /// `Approximate`: from the requests it routed itself. `Precise`: from the KV-cache
    /// events each engine publishes (vLLM `--kv-events-config`, port 5556), with the
    /// approximate index standing in for a server whose events do not flow.
    #[serde(default)]
    pub mode: PrefixCacheMode,
    /// Tokens per hashed prompt block; match the engine's KV block size.
    #[serde(default = "default_block_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub block_size_tokens: i32,
    /// Blocks remembered per model server (LRU).
    #[serde(default = "default_lru_capacity")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub lru_capacity_per_server: i32,
}

fn default_block_size() -> i32 {
    16
}

fn default_lru_capacity() -> i32 {
    31_250
}

/// How the router's prefix-cache index is fed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrefixCacheMode {
    #[default]
    Approximate,
    Precise,
}

impl Default for PrefixCacheSpec {
    fn default() -> Self {
        Self {
            mode: PrefixCacheMode::default(),
            block_size_tokens: default_block_size(),
            lru_capacity_per_server: default_lru_capacity(),
        }
    }
}

/// Settings of the tuner that retunes scorer weights at run time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.minWeight <= self.maxWeight").message("spec.router.autoTune.minWeight must not exceed spec.router.autoTune.maxWeight"))]
pub struct AutoTuneSpec {
    /// Turn run-time tuning on.
    #[serde(default)]
    pub enabled: bool,
    /// Length of one tuning slice, as a duration such as 30s or 2m (at least 5s): the
    /// tuner reads the EndpointPicker's latencies this often, and an experiment
    /// alternates slices of a candidate weighting and the incumbent.
    #[serde(default = "default_interval")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]+(s|m|h)$') && duration(self) >= duration('5s')").message("spec.router.autoTune.interval must be a duration of at least 5s, such as 30s or 2m"))]
    pub interval: String,
    /// Lowest weight the tuner may give a scorer.
    #[serde(default = "default_min_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_weight: f64,
    /// Highest weight the tuner may give a scorer.
    #[serde(default = "default_max_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_weight: f64,
    /// What the tuner minimises: the EndpointPicker's time to first token.
    #[serde(default)]
    pub objective: TuningObjective,
    /// Pin the weights now in force: the tuner keeps measuring but changes nothing.
    #[serde(default)]
    pub frozen: bool,
}

/// The latency the tuner minimises, as the EndpointPicker measures it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TuningObjective {
    /// MeanTTFT or P90TTFT.
    #[serde(default)]
    pub metric: TuningMetric,
    /// When set, a deployment meeting it is left alone (no experiment costs it anything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub target_ms: Option<i64>,
}

/// A statistic of time to first token.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TuningMetric {
    #[default]
    #[serde(rename = "MeanTTFT")]
    MeanTtft,
    #[serde(rename = "P90TTFT")]
    P90Ttft,
}

fn default_interval() -> String {
    "30s".to_string()
}

fn default_min_weight() -> f64 {
    0.1
}

fn default_max_weight() -> f64 {
    10.0
}

impl Default for AutoTuneSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_interval(),
            min_weight: default_min_weight(),
            max_weight: default_max_weight(),
            objective: TuningObjective::default(),
            frozen: false,
        }
    }
}
