//! The plugins of an EndpointPickerConfig as types: which plugin type is a scorer, a
//! filter, the picker, a profile handler or the P/D decider, and the scorer weights of
//! an LLMDeployment keyed by scorer plugin.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ScorerWeights;

/// Plugin type names, as llm-d spells them.
pub mod plugin {
    pub const PREFIX_CACHE_SCORER: &str = "prefix-cache-scorer";
    pub const QUEUE_SCORER: &str = "queue-scorer";
    pub const KV_CACHE_UTILIZATION_SCORER: &str = "kv-cache-utilization-scorer";
    pub const ACTIVE_REQUEST_SCORER: &str = "active-request-scorer";
    pub const SESSION_AFFINITY_SCORER: &str = "session-affinity-scorer";
    /// Scores each endpoint by the TTFT the request is predicted to see there.
    pub const LATENCY_SCORER: &str = "latency-scorer";
    /// Prefers endpoints running the request's LoRA adapter, then those with room
    /// to load it (from `vllm:lora_requests_info`).
    pub const LORA_AFFINITY_SCORER: &str = "lora-affinity-scorer";
    /// Learns each endpoint's latency model from the TTFTs the EPP observes.
    pub const PREDICTED_LATENCY_PRODUCER: &str = "predicted-latency-producer";
    pub const DECODE_FILTER: &str = "decode-filter";
    pub const PREFILL_FILTER: &str = "prefill-filter";
    pub const PREFIX_CACHE_AFFINITY_FILTER: &str = "prefix-cache-affinity-filter";
    pub const MAX_SCORE_PICKER: &str = "max-score-picker";
    pub const DISAGG_PROFILE_HANDLER: &str = "disagg-profile-handler";
    pub const SINGLE_PROFILE_HANDLER: &str = "single-profile-handler";
    pub const PD_DECIDER: &str = "prefix-based-pd-decider";
    /// Feeds the prefix-cache-scorer from the engines' KV events (precise mode).
    pub const PRECISE_PREFIX_CACHE_PRODUCER: &str = "precise-prefix-cache-producer";
    /// Tokenizes prompts as the engine does, for the precise producer.
    pub const TOKEN_PRODUCER: &str = "token-producer";
    /// llm-d's older, deprecated name: a prefix-cache-scorer fed from KV events.
    pub const PRECISE_PREFIX_CACHE_SCORER: &str = "precise-prefix-cache-scorer";
}

/// Scheduling profile names.
pub mod profile {
    pub const DECODE: &str = "decode";
    pub const PREFILL: &str = "prefill";
}

/// The scorers: each maps a pick's candidates to scores in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scorer {
    PrefixCache,
    Queue,
    KvCacheUtilization,
    ActiveRequest,
    SessionAffinity,
    /// latency-scorer: the predicted TTFT on each endpoint (its own latency model).
    Latency,
    /// lora-affinity-scorer: the request's adapter already running there (1), room
    /// to load it (0.8), only waiting there (0.6), neither (0).
    LoraAffinity,
}

impl Scorer {
    /// Every scorer, in the order configs list them.
    pub const ALL: [Scorer; 7] = [
        Scorer::PrefixCache,
        Scorer::Queue,
        Scorer::KvCacheUtilization,
        Scorer::ActiveRequest,
        Scorer::SessionAffinity,
        Scorer::Latency,
        Scorer::LoraAffinity,
    ];

    pub fn plugin_type(self) -> &'static str {
        match self {
            Scorer::PrefixCache => plugin::PREFIX_CACHE_SCORER,
            Scorer::Queue => plugin::QUEUE_SCORER,
            Scorer::KvCacheUtilization => plugin::KV_CACHE_UTILIZATION_SCORER,
            Scorer::ActiveRequest => plugin::ACTIVE_REQUEST_SCORER,
            Scorer::SessionAffinity => plugin::SESSION_AFFINITY_SCORER,
            Scorer::Latency => plugin::LATENCY_SCORER,
            Scorer::LoraAffinity => plugin::LORA_AFFINITY_SCORER,
        }
    }

    pub fn from_plugin_type(t: &str) -> Option<Scorer> {
        Scorer::ALL.into_iter().find(|s| s.plugin_type() == t)
    }
}

/// Role filters: which endpoints a scheduling profile may consider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleFilter {
    /// decode, both, prefill-decode and unlabeled endpoints.
    Decode,
    /// prefill, both and prefill-decode endpoints.
    Prefill,
}

impl RoleFilter {
    pub fn plugin_type(self) -> &'static str {
        match self {
            RoleFilter::Decode => plugin::DECODE_FILTER,
            RoleFilter::Prefill => plugin::PREFILL_FILTER,
        }
    }

    pub fn from_plugin_type(t: &str) -> Option<RoleFilter> {
        [RoleFilter::Decode, RoleFilter::Prefill]
            .into_iter()
            .find(|f| f.plugin_type() == t)
    }
}

/// The filter plugin types. A filter's parameters, when it takes any, are read into
/// its validated form, [`Filter`](super::Filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    Role(RoleFilter),
    /// prefix-cache-affinity-filter: keeps only the endpoints that hold most of the
    /// prompt and are not overloaded, when there are any.
    PrefixCacheAffinity,
}

impl FilterKind {
    pub fn from_plugin_type(t: &str) -> Option<FilterKind> {
        if let Some(role) = RoleFilter::from_plugin_type(t) {
            return Some(FilterKind::Role(role));
        }
        (t == plugin::PREFIX_CACHE_AFFINITY_FILTER).then_some(FilterKind::PrefixCacheAffinity)
    }
}

/// Plugins that produce what scorers read, per request or from the engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Producer {
    /// precise-prefix-cache-producer: the engines' KV events.
    PrecisePrefixCache,
    /// token-producer: the prompt's token ids.
    Token,
    /// predicted-latency-producer: the per-endpoint latency model (always learning
    /// in llmd-epp; listing it is accepted for llm-d compatibility).
    PredictedLatency,
}

/// What one plugin type is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PluginKind {
    Scorer(Scorer),
    /// precise-prefix-cache-scorer, the deprecated name: a prefix-cache-scorer and its
    /// precise producer in one plugin.
    PrecisePrefixCacheScorer,
    Producer(Producer),
    Filter(FilterKind),
    Picker,
    ProfileHandler {
        disagg: bool,
    },
    PdDecider,
}

impl PluginKind {
    /// `None` for a type this project does not implement.
    pub fn of(plugin_type: &str) -> Option<PluginKind> {
        if let Some(s) = Scorer::from_plugin_type(plugin_type) {
            return Some(PluginKind::Scorer(s));
        }
        if let Some(f) = FilterKind::from_plugin_type(plugin_type) {
            return Some(PluginKind::Filter(f));
        }
        match plugin_type {
            plugin::MAX_SCORE_PICKER => Some(PluginKind::Picker),
            plugin::DISAGG_PROFILE_HANDLER => Some(PluginKind::ProfileHandler { disagg: true }),
            plugin::SINGLE_PROFILE_HANDLER => Some(PluginKind::ProfileHandler { disagg: false }),
            plugin::PD_DECIDER => Some(PluginKind::PdDecider),
            plugin::PRECISE_PREFIX_CACHE_SCORER => Some(PluginKind::PrecisePrefixCacheScorer),
            plugin::PRECISE_PREFIX_CACHE_PRODUCER => {
                Some(PluginKind::Producer(Producer::PrecisePrefixCache))
            }
            plugin::TOKEN_PRODUCER => Some(PluginKind::Producer(Producer::Token)),
            plugin::PREDICTED_LATENCY_PRODUCER => {
                Some(PluginKind::Producer(Producer::PredictedLatency))
            }
            _ => None,
        }
    }
}

/// Parameters of the prefix-cache-scorer.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PrefixCacheParameters {
    #[serde(alias = "blockSize")]
    pub block_size_tokens: Option<u64>,
    pub max_prefix_blocks_to_match: Option<u64>,
    pub lru_capacity_per_server: Option<u64>,
}

/// Parameters of the token-producer: where the prompt's token ids come from.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TokenProducerParameters {
    /// `engine` (the default: the serving engine's `/tokenize`) or `simulator`.
    pub source: Option<String>,
    /// Requests whose token ids are kept.
    pub cache_size: Option<u64>,
    /// How long a pick waits for the engine to tokenize.
    pub timeout_ms: Option<u64>,
    /// llm-d's tokenizer plugins name the model; the engine knows its own.
    #[serde(rename = "modelName")]
    pub _model_name: Option<serde::de::IgnoredAny>,
}

/// Parameters of the precise-prefix-cache-producer (and of the deprecated
/// precise-prefix-cache-scorer), in llm-d's shape. What llmd-epp does not implement
/// differently is refused by name: a central `zmqEndpoint` (pods are dialed), pod
/// discovery switched off, an engine other than vLLM. Other fields llm-d documents
/// (concurrency, index backends) are accepted and have no effect here.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PrecisePrefixCacheParameters {
    pub kv_events_config: Option<KvEventsConfig>,
    pub indexer_config: Option<IndexerConfig>,
    /// The deprecated scorer's prefix-cache fields.
    #[serde(flatten)]
    pub prefix: PrefixCacheParameters,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KvEventsConfig {
    pub zmq_endpoint: Option<String>,
    pub topic_filter: Option<String>,
    pub engine_type: Option<String>,
    pub discover_pods: Option<bool>,
    pub pod_discovery_config: Option<PodDiscoveryConfig>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodDiscoveryConfig {
    pub socket_port: Option<u64>,
    /// Ours: each pod's vLLM `replay_endpoint` port.
    pub replay_port: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexerConfig {
    pub token_processor_config: Option<TokenProcessorConfig>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenProcessorConfig {
    pub block_size: Option<u64>,
}

/// Parameters of the prefix-cache-affinity-filter. Unknown fields are refused, so a
/// misspelt threshold is an error rather than a silent default.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PrefixCacheAffinityParameters {
    pub affinity_threshold: Option<f64>,
    pub max_waiting_requests: Option<u64>,
}

/// Parameters of the predicted-latency-producer: the objectives of requests that
/// carry none in their headers.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PredictedLatencyParameters {
    pub default_ttft_slo_ms: Option<u64>,
    pub default_tpot_slo_ms: Option<u64>,
}

/// Parameters of the prefix-based-pd-decider.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PdDeciderParameters {
    pub non_cached_tokens: Option<u64>,
}

/// Parameters of the disagg-profile-handler (older configs put the threshold here).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DisaggHandlerParameters {
    pub threshold: Option<u64>,
}

impl ScorerWeights {
    /// Prefix-cache, queue and KV-cache-utilization weights, the others off.
    pub fn of(prefix_cache: f64, queue: f64, kv_cache_utilization: f64) -> ScorerWeights {
        ScorerWeights {
            prefix_cache,
            queue,
            kv_cache_utilization,
            active_requests: 0.0,
            session_affinity: 0.0,
            latency: 0.0,
            lora_affinity: None,
        }
    }

    /// The weight of one scorer.
    pub fn get(&self, scorer: Scorer) -> f64 {
        match scorer {
            Scorer::PrefixCache => self.prefix_cache,
            Scorer::Queue => self.queue,
            Scorer::KvCacheUtilization => self.kv_cache_utilization,
            Scorer::ActiveRequest => self.active_requests,
            Scorer::SessionAffinity => self.session_affinity,
            Scorer::Latency => self.latency,
            Scorer::LoraAffinity => self.lora_affinity.unwrap_or(0.0),
        }
    }

    /// The scorers in use (weight above 0) with their weights, in config order.
    pub fn active(&self) -> Vec<(Scorer, f64)> {
        Scorer::ALL
            .into_iter()
            .map(|s| (s, self.get(s)))
            .filter(|(_, weight)| *weight > 0.0)
            .collect()
    }

    /// Every scorer's weight by plugin type, zeros included (how `status.routing`
    /// records the weights the tuner chose).
    pub fn by_plugin(&self) -> BTreeMap<String, f64> {
        Scorer::ALL
            .into_iter()
            .map(|s| (s.plugin_type().to_string(), self.get(s)))
            .collect()
    }

    /// The weights from a map by plugin type; `None` unless every scorer is in it
    /// (the latency and LoRA-affinity scorers, newer than the others, count as 0 when
    /// absent).
    pub fn from_plugins(weights: &BTreeMap<String, f64>) -> Option<ScorerWeights> {
        let get = |s: Scorer| weights.get(s.plugin_type()).copied();
        Some(ScorerWeights {
            prefix_cache: get(Scorer::PrefixCache)?,
            queue: get(Scorer::Queue)?,
            kv_cache_utilization: get(Scorer::KvCacheUtilization)?,
            active_requests: get(Scorer::ActiveRequest)?,
            session_affinity: get(Scorer::SessionAffinity)?,
            latency: get(Scorer::Latency).unwrap_or(0.0),
            lora_affinity: Some(get(Scorer::LoraAffinity).unwrap_or(0.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_types_round_trip() {
        for s in Scorer::ALL {
            assert_eq!(Scorer::from_plugin_type(s.plugin_type()), Some(s));
            assert_eq!(PluginKind::of(s.plugin_type()), Some(PluginKind::Scorer(s)));
        }
        assert_eq!(Scorer::from_plugin_type("decode-filter"), None);
        assert_eq!(
            PluginKind::of("prefill-filter"),
            Some(PluginKind::Filter(FilterKind::Role(RoleFilter::Prefill)))
        );
        assert_eq!(
            PluginKind::of("prefix-cache-affinity-filter"),
            Some(PluginKind::Filter(FilterKind::PrefixCacheAffinity))
        );
        assert_eq!(PluginKind::of("no-such-plugin"), None);
    }

    #[test]
    fn zero_weights_are_left_out() {
        let weights = ScorerWeights {
            prefix_cache: 1.5,
            queue: 0.0,
            kv_cache_utilization: 2.0,
            active_requests: 0.0,
            session_affinity: 4.0,
            latency: 0.0,
            lora_affinity: Some(0.0),
        };
        assert_eq!(
            weights.active(),
            [
                (Scorer::PrefixCache, 1.5),
                (Scorer::KvCacheUtilization, 2.0),
                (Scorer::SessionAffinity, 4.0)
            ]
        );
    }

    #[test]
    fn status_weights_round_trip_and_need_every_scorer() {
        // Weights in status are resolved: the LoRA-affinity weight is a number.
        let tuned = ScorerWeights {
            prefix_cache: 5.0,
            queue: 0.0,
            lora_affinity: Some(0.0),
            ..ScorerWeights::default()
        };
        let mut map = tuned.by_plugin();
        assert_eq!(map.len(), 7);
        assert_eq!(ScorerWeights::from_plugins(&map), Some(tuned.clone()));
        // Recorded before the latency scorer existed: it counts as off.
        map.remove(plugin::LATENCY_SCORER);
        map.remove(plugin::LORA_AFFINITY_SCORER);
        assert_eq!(ScorerWeights::from_plugins(&map), Some(tuned));
        map.remove(plugin::QUEUE_SCORER);
        assert_eq!(ScorerWeights::from_plugins(&map), None);
    }
}
