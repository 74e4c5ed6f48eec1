//! The validated, ready-to-run form of an EndpointPickerConfig. Every rule that can
//! refuse a config lives here, so a refused reload says exactly why.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::ConfigError;
use super::plugins::plugin;
use super::plugins::{
    DisaggHandlerParameters, FilterKind, PdDeciderParameters, PluginKind,
    PrecisePrefixCacheParameters, PredictedLatencyParameters, PrefixCacheAffinityParameters,
    PrefixCacheParameters, Producer, RoleFilter, Scorer, TokenProducerParameters, profile,
};
use super::{API_VERSION, EndpointPickerConfig, KIND, LEGACY_API_VERSION, PluginSpec};

/// A scorer with its weight in one profile.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedScorer {
    /// Plugin instance name (metrics label).
    pub name: String,
    pub kind: Scorer,
    pub weight: f64,
}

/// A filter of one profile, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Filter {
    /// decode-filter or prefill-filter.
    Role(RoleFilter),
    /// prefix-cache-affinity-filter.
    PrefixCacheAffinity(AffinityGate),
}

/// The prefix-cache-affinity-filter's parameters. The gate is closed (only the
/// endpoints it keeps go on to the scorers) when at least one candidate holds at
/// least `affinity_threshold` of the prompt's blocks and has fewer than
/// `max_waiting_requests` waiting; otherwise it is open and every candidate goes on,
/// so load spreading decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffinityGate {
    /// Least prefix-match fraction (matched blocks / prompt blocks), in (0, 1].
    pub affinity_threshold: f64,
    /// Waiting requests (scraped + sent since the scrape) at which an endpoint is
    /// no longer kept, however much of the prompt it holds; at least 1.
    pub max_waiting_requests: u64,
}

impl AffinityGate {
    pub const DEFAULT_AFFINITY_THRESHOLD: f64 = 0.8;
    pub const DEFAULT_MAX_WAITING_REQUESTS: u64 = 8;
    /// Upper bound of `maxWaitingRequests`: far beyond any engine's queue.
    const MAX_WAITING_REQUESTS_LIMIT: u64 = 1_000_000;
}

impl Default for AffinityGate {
    fn default() -> Self {
        AffinityGate {
            affinity_threshold: AffinityGate::DEFAULT_AFFINITY_THRESHOLD,
            max_waiting_requests: AffinityGate::DEFAULT_MAX_WAITING_REQUESTS,
        }
    }
}

/// One scheduling profile, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Applied in order, each to what the previous ones kept.
    pub filters: Vec<Filter>,
    pub scorers: Vec<WeightedScorer>,
}

/// Prefix index parameters (from the prefix-cache-scorer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixParams {
    pub block_size_tokens: usize,
    pub max_prefix_blocks: usize,
    pub lru_capacity_per_server: usize,
}

impl Default for PrefixParams {
    fn default() -> Self {
        PrefixParams {
            block_size_tokens: 16,
            max_prefix_blocks: 256,
            lru_capacity_per_server: 31_250,
        }
    }
}

/// Where the precise-prefix-cache-producer hears the engines: each pool pod's KV
/// events on this port of its IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvEventsParams {
    pub port: u16,
    /// Each pod's replay port (vLLM's `replay_endpoint`), from which missed messages
    /// are asked for again: on connecting, and after a sequence gap.
    pub replay_port: Option<u16>,
}

impl KvEventsParams {
    /// The port llm-d's guides have each engine bind (`tcp://*:5556`).
    pub const DEFAULT_PORT: u16 = crate::KV_EVENTS_PORT as u16;
}

/// Where the precise index gets a prompt's token ids (the token-producer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The serving engine's `/tokenize` (vLLM's, which llm-d-inference-sim also
    /// serves): exactly the engine's tokenizer and chat template, whatever the model.
    /// Answers are cached per request text; a pick waits at most `timeout_ms`, after
    /// which that request is matched against the approximate index.
    Engine { cache_size: usize, timeout_ms: u64 },
    /// llm-d-inference-sim's built-in tokenizer, computed in process (a simulated
    /// fleet only).
    Simulator,
}

impl TokenSource {
    pub const DEFAULT_CACHE_SIZE: usize = 4096;
    pub const DEFAULT_TIMEOUT_MS: u64 = 200;
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource::Engine {
            cache_size: TokenSource::DEFAULT_CACHE_SIZE,
            timeout_ms: TokenSource::DEFAULT_TIMEOUT_MS,
        }
    }
}

/// Latency objectives in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultSlo {
    pub ttft_ms: Option<u64>,
    pub tpot_ms: Option<u64>,
}

/// The validated scheduler configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub decode: Profile,
    /// Present when a disagg-profile-handler and a prefill profile are configured.
    pub prefill: Option<Profile>,
    /// `nonCachedTokens` of the P/D decider; 0 disables disaggregation.
    pub non_cached_tokens: usize,
    pub prefix: PrefixParams,
    /// With a precise-prefix-cache-producer: prefix matches from the engines' KV events.
    pub kv_events: Option<KvEventsParams>,
    /// Where the precise index gets token ids (the token-producer's `source`).
    pub tokens: TokenSource,
    /// Latency objectives of requests that carry none (the predicted-latency-producer's
    /// `defaultTtftSloMs` / `defaultTpotSloMs`).
    pub default_slo: DefaultSlo,
    /// [`EndpointPickerConfig::hash`] of the config, for logs and metrics.
    pub hash: String,
}

fn params<T: for<'de> Deserialize<'de>>(p: &PluginSpec) -> Result<Option<T>, ConfigError> {
    match &p.parameters {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => {
            serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| ConfigError::Parameters {
                    plugin: p.instance_name().to_string(),
                    reason: e.to_string(),
                })
        }
    }
}

fn token_source(name: &str, p: &TokenProducerParameters) -> Result<TokenSource, ConfigError> {
    match p.source.as_deref() {
        None | Some("engine") => Ok(TokenSource::Engine {
            cache_size: match p.cache_size {
                Some(n) => bounded(name, "cacheSize", n, 0, 1_000_000)?,
                None => TokenSource::DEFAULT_CACHE_SIZE,
            },
            timeout_ms: match p.timeout_ms {
                Some(ms) => bounded(name, "timeoutMs", ms, 1, 60_000)? as u64,
                None => TokenSource::DEFAULT_TIMEOUT_MS,
            },
        }),
        Some("simulator") => Ok(TokenSource::Simulator),
        Some(other) => Err(ConfigError::Parameters {
            plugin: name.to_string(),
            reason: format!("source {other:?} is not one of engine, simulator"),
        }),
    }
}

fn bounded(plugin: &str, field: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    if (min..=max).contains(&v) {
        Ok(v as usize)
    } else {
        Err(ConfigError::Parameters {
            plugin: plugin.to_string(),
            reason: format!("{field} must be in {min}..={max}, got {v}"),
        })
    }
}

/// The prefix-cache-affinity-filter's parameters, defaults filled in and checked.
/// The prefix index parameters one prefix-cache plugin asks for.
fn prefix_params(name: &str, parsed: &PrefixCacheParameters) -> Result<PrefixParams, ConfigError> {
    let d = PrefixParams::default();
    let pick = |v: Option<u64>, dflt: usize| v.unwrap_or(dflt as u64);
    Ok(PrefixParams {
        block_size_tokens: bounded(
            name,
            "blockSizeTokens",
            pick(parsed.block_size_tokens, d.block_size_tokens),
            1,
            4096,
        )?,
        max_prefix_blocks: bounded(
            name,
            "maxPrefixBlocksToMatch",
            pick(parsed.max_prefix_blocks_to_match, d.max_prefix_blocks),
            1,
            65_536,
        )?,
        lru_capacity_per_server: bounded(
            name,
            "lruCapacityPerServer",
            pick(parsed.lru_capacity_per_server, d.lru_capacity_per_server),
            1,
            100_000_000,
        )?,
    })
}

/// Several prefix-cache plugins must agree on the block size.
fn merge_prefix(prefix: &mut Option<PrefixParams>, this: PrefixParams) -> Result<(), ConfigError> {
    if prefix.is_some_and(|p| p.block_size_tokens != this.block_size_tokens) {
        return Err(ConfigError::ConflictingPrefixParams);
    }
    *prefix = Some(this);
    Ok(())
}

/// Where to hear the engines, from llm-d's `kvEventsConfig`; what llmd-epp does
/// differently is refused by name.
fn kv_events_params(
    name: &str,
    parsed: &PrecisePrefixCacheParameters,
) -> Result<KvEventsParams, ConfigError> {
    let refuse = |reason: String| ConfigError::Parameters {
        plugin: name.to_string(),
        reason,
    };
    let Some(k) = &parsed.kv_events_config else {
        return Ok(KvEventsParams {
            port: KvEventsParams::DEFAULT_PORT,
            replay_port: None,
        });
    };
    if k.zmq_endpoint.as_deref().is_some_and(|e| !e.is_empty()) {
        return Err(refuse(
            "kvEventsConfig.zmqEndpoint (one socket all engines connect to) is not \
             supported: llmd-epp dials each pod on podDiscoveryConfig.socketPort"
                .to_string(),
        ));
    }
    if k.discover_pods == Some(false) {
        return Err(refuse(
            "kvEventsConfig.discoverPods: false is not supported: the pods are the pool's"
                .to_string(),
        ));
    }
    if let Some(engine) = k.engine_type.as_deref().filter(|e| *e != "vllm") {
        return Err(refuse(format!(
            "kvEventsConfig.engineType {engine:?} is not supported (vllm only)"
        )));
    }
    if let Some(filter) = k.topic_filter.as_deref().filter(|f| !"kv@".starts_with(*f)) {
        return Err(refuse(format!(
            "kvEventsConfig.topicFilter {filter:?} would drop the engines' `kv@` topics"
        )));
    }
    let port = k
        .pod_discovery_config
        .as_ref()
        .and_then(|d| d.socket_port)
        .map_or(Ok(usize::from(KvEventsParams::DEFAULT_PORT)), |p| {
            bounded(
                name,
                "kvEventsConfig.podDiscoveryConfig.socketPort",
                p,
                1,
                65_535,
            )
        })?;
    let replay_port = k
        .pod_discovery_config
        .as_ref()
        .and_then(|d| d.replay_port)
        .map(|p| {
            bounded(
                name,
                "kvEventsConfig.podDiscoveryConfig.replayPort",
                p,
                1,
                65_535,
            )
        })
        .transpose()?;
    Ok(KvEventsParams {
        port: u16::try_from(port).unwrap_or(KvEventsParams::DEFAULT_PORT),
        replay_port: replay_port.and_then(|p| u16::try_from(p).ok()),
    })
}

fn affinity_gate(p: &PluginSpec) -> Result<AffinityGate, ConfigError> {
    let name = p.instance_name();
    let parsed = params::<PrefixCacheAffinityParameters>(p)?.unwrap_or_default();
    let threshold = parsed
        .affinity_threshold
        .unwrap_or(AffinityGate::DEFAULT_AFFINITY_THRESHOLD);
    // NaN fails the range check too.
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(ConfigError::Parameters {
            plugin: name.to_string(),
            reason: format!(
                "affinityThreshold must be a fraction of the prompt in (0, 1], got {threshold}"
            ),
        });
    }
    let max_waiting = parsed
        .max_waiting_requests
        .unwrap_or(AffinityGate::DEFAULT_MAX_WAITING_REQUESTS);
    bounded(
        name,
        "maxWaitingRequests",
        max_waiting,
        1,
        AffinityGate::MAX_WAITING_REQUESTS_LIMIT,
    )?;
    Ok(AffinityGate {
        affinity_threshold: threshold,
        max_waiting_requests: max_waiting,
    })
}

/// The default config text (prefix-cache 3, queue 2, kv-cache-utilization 2), the
/// same weights llm-d and KServe ship.
pub const DEFAULT_CONFIG: &str = r#"apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: decode-filter
- type: prefix-cache-scorer
  parameters: {blockSizeTokens: 16, maxPrefixBlocksToMatch: 256, lruCapacityPerServer: 31250}
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: decode-filter
  - pluginRef: prefix-cache-scorer
    weight: 3
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: max-score-picker
"#;

impl SchedulerConfig {
    /// The built-in default.
    pub fn default_config() -> SchedulerConfig {
        // The default text is a constant checked by a unit test.
        SchedulerConfig::from_yaml(DEFAULT_CONFIG)
            .unwrap_or_else(|e| panic!("built-in default EndpointPickerConfig is invalid: {e}"))
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<SchedulerConfig, ConfigError> {
        EndpointPickerConfig::parse(text)?.validate()
    }
}

impl EndpointPickerConfig {
    /// Validates the config into its ready-to-run form.
    pub fn validate(&self) -> Result<SchedulerConfig, ConfigError> {
        let api = self;
        if api.api_version != API_VERSION && api.api_version != LEGACY_API_VERSION {
            return Err(ConfigError::ApiVersion(api.api_version.clone()));
        }
        if api.kind != KIND {
            return Err(ConfigError::Kind(api.kind.clone()));
        }
        let mut roles: HashMap<&str, PluginKind> = HashMap::new();
        let mut filters: HashMap<&str, Filter> = HashMap::new();
        let mut prefix: Option<PrefixParams> = None;
        let mut disagg = false;
        let mut non_cached_tokens: Option<usize> = None;
        let mut kv_events: Option<KvEventsParams> = None;
        let mut default_slo = DefaultSlo::default();
        let mut precise_block: Option<usize> = None;
        let mut tokens = TokenSource::default();
        for p in &api.plugins {
            let name = p.instance_name();
            let role = PluginKind::of(&p.plugin_type)
                .ok_or_else(|| ConfigError::UnknownPluginType(p.plugin_type.clone()))?;
            if roles.insert(name, role).is_some() {
                return Err(ConfigError::DuplicatePlugin(name.to_string()));
            }
            match role {
                PluginKind::Filter(FilterKind::Role(f)) => {
                    filters.insert(name, Filter::Role(f));
                }
                PluginKind::Filter(FilterKind::PrefixCacheAffinity) => {
                    filters.insert(name, Filter::PrefixCacheAffinity(affinity_gate(p)?));
                }
                PluginKind::Scorer(Scorer::PrefixCache) => {
                    let parsed = params::<PrefixCacheParameters>(p)?.unwrap_or_default();
                    merge_prefix(&mut prefix, prefix_params(name, &parsed)?)?;
                }
                PluginKind::PrecisePrefixCacheScorer => {
                    // The deprecated name: the scorer and its producer in one plugin.
                    roles.insert(name, PluginKind::Scorer(Scorer::PrefixCache));
                    let parsed = params::<PrecisePrefixCacheParameters>(p)?.unwrap_or_default();
                    merge_prefix(&mut prefix, prefix_params(name, &parsed.prefix)?)?;
                    kv_events = Some(kv_events_params(name, &parsed)?);
                }
                PluginKind::Producer(Producer::PrecisePrefixCache) => {
                    let parsed = params::<PrecisePrefixCacheParameters>(p)?.unwrap_or_default();
                    let block = parsed
                        .indexer_config
                        .as_ref()
                        .and_then(|i| i.token_processor_config.as_ref())
                        .and_then(|t| t.block_size);
                    if let Some(b) = block {
                        precise_block = Some(bounded(name, "blockSize", b, 1, 4096)?);
                    }
                    kv_events = Some(kv_events_params(name, &parsed)?);
                }
                PluginKind::Producer(Producer::Token) => {
                    let parsed = params::<TokenProducerParameters>(p)?.unwrap_or_default();
                    tokens = token_source(name, &parsed)?;
                }
                PluginKind::ProfileHandler { disagg: true } => {
                    disagg = true;
                    if let Some(t) = params::<DisaggHandlerParameters>(p)?.and_then(|x| x.threshold)
                    {
                        non_cached_tokens.get_or_insert(bounded(
                            name,
                            "threshold",
                            t,
                            0,
                            10_000_000,
                        )?);
                    }
                }
                PluginKind::Producer(Producer::PredictedLatency) => {
                    let parsed = params::<PredictedLatencyParameters>(p)?.unwrap_or_default();
                    let ms = |field: &str, v: Option<u64>, max: u64| {
                        v.map(|v| bounded(name, field, v, 1, max).map(|v| v as u64))
                            .transpose()
                    };
                    default_slo = DefaultSlo {
                        ttft_ms: ms("defaultTtftSloMs", parsed.default_ttft_slo_ms, 3_600_000)?,
                        tpot_ms: ms("defaultTpotSloMs", parsed.default_tpot_slo_ms, 60_000)?,
                    };
                }
                PluginKind::PdDecider => {
                    let t = params::<PdDeciderParameters>(p)?
                        .and_then(|x| x.non_cached_tokens)
                        .unwrap_or(0);
                    non_cached_tokens = Some(bounded(name, "nonCachedTokens", t, 0, 10_000_000)?);
                }
                _ => {}
            }
        }

        let mut seen = HashSet::new();
        let mut profiles = Vec::new();
        for sp in &api.scheduling_profiles {
            if !seen.insert(sp.name.as_str()) {
                return Err(ConfigError::DuplicateProfile(sp.name.clone()));
            }
            let mut prof = Profile {
                name: sp.name.clone(),
                filters: Vec::new(),
                scorers: Vec::new(),
            };
            let mut gate: Option<&str> = None;
            for r in &sp.plugins {
                let role =
                    roles
                        .get(r.plugin_ref.as_str())
                        .ok_or_else(|| ConfigError::UnknownRef {
                            profile: sp.name.clone(),
                            plugin: r.plugin_ref.clone(),
                        })?;
                match *role {
                    PluginKind::Scorer(kind) => {
                        let weight = r.weight.unwrap_or(1.0);
                        if !weight.is_finite() || weight < 0.0 {
                            return Err(ConfigError::BadWeight {
                                profile: sp.name.clone(),
                                plugin: r.plugin_ref.clone(),
                            });
                        }
                        prof.scorers.push(WeightedScorer {
                            name: r.plugin_ref.clone(),
                            kind,
                            weight,
                        });
                    }
                    _ if r.weight.is_some() => {
                        return Err(ConfigError::WeightOnNonScorer {
                            profile: sp.name.clone(),
                            plugin: r.plugin_ref.clone(),
                        });
                    }
                    PluginKind::Filter(_) => {
                        // Every filter plugin was read into `filters` above.
                        let Some(filter) = filters.get(r.plugin_ref.as_str()) else {
                            continue;
                        };
                        match (filter, gate) {
                            (Filter::Role(_), Some(gate)) => {
                                return Err(ConfigError::RoleFilterAfterGate {
                                    profile: sp.name.clone(),
                                    role: r.plugin_ref.clone(),
                                    gate: gate.to_string(),
                                });
                            }
                            (Filter::PrefixCacheAffinity(_), _) => gate = Some(&r.plugin_ref),
                            (Filter::Role(_), None) => {}
                        }
                        prof.filters.push(*filter);
                    }
                    _ => {}
                }
            }
            profiles.push(prof);
        }
        if profiles.is_empty() {
            return Err(ConfigError::NoProfile);
        }
        let find = |n: &str| profiles.iter().position(|p| p.name == n);
        let (decode, prefill) = if disagg {
            match (find(profile::DECODE), find(profile::PREFILL)) {
                (Some(d), Some(p)) => (profiles[d].clone(), Some(profiles[p].clone())),
                _ => return Err(ConfigError::DisaggProfiles),
            }
        } else {
            let d = find(profile::DECODE).unwrap_or(0);
            (profiles[d].clone(), None)
        };
        let prefix = prefix.unwrap_or_default();
        if let Some(b) = precise_block.filter(|b| *b != prefix.block_size_tokens) {
            return Err(ConfigError::Parameters {
                plugin: plugin::PRECISE_PREFIX_CACHE_PRODUCER.to_string(),
                reason: format!(
                    "indexerConfig.tokenProcessorConfig.blockSize {b} differs from the \
                     prefix-cache-scorer's blockSizeTokens {}: blocks would never match",
                    prefix.block_size_tokens
                ),
            });
        }
        Ok(SchedulerConfig {
            decode,
            prefill,
            non_cached_tokens: non_cached_tokens.unwrap_or(0),
            prefix,
            kv_events,
            tokens,
            default_slo,
            hash: self.hash(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PD: &str = r#"
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefix-cache-scorer
  parameters: {blockSizeTokens: 8, maxPrefixBlocksToMatch: 64, lruCapacityPerServer: 1000}
- type: queue-scorer
- type: decode-filter
- type: prefill-filter
- type: max-score-picker
- type: disagg-profile-handler
- type: prefix-based-pd-decider
  parameters: {nonCachedTokens: 32}
schedulingProfiles:
- name: decode
  plugins:
  - pluginRef: decode-filter
  - pluginRef: prefix-cache-scorer
    weight: 3
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: max-score-picker
- name: prefill
  plugins:
  - pluginRef: prefill-filter
  - pluginRef: queue-scorer
  - pluginRef: max-score-picker
"#;

    #[test]
    fn the_default_is_prefix_3_queue_2_kv_2() {
        let c = SchedulerConfig::default_config();
        let w: Vec<(Scorer, f64)> = c
            .decode
            .scorers
            .iter()
            .map(|s| (s.kind, s.weight))
            .collect();
        assert_eq!(
            w,
            vec![
                (Scorer::PrefixCache, 3.0),
                (Scorer::Queue, 2.0),
                (Scorer::KvCacheUtilization, 2.0)
            ]
        );
        assert!(c.prefill.is_none());
        assert_eq!(c.non_cached_tokens, 0);
    }

    #[test]
    fn reads_a_pd_config() {
        let c = SchedulerConfig::from_yaml(PD).expect("valid");
        assert_eq!(c.decode.filters, vec![Filter::Role(RoleFilter::Decode)]);
        assert_eq!(
            c.prefill.as_ref().map(|p| p.filters.clone()),
            Some(vec![Filter::Role(RoleFilter::Prefill)])
        );
        assert_eq!(c.non_cached_tokens, 32);
        assert_eq!(
            c.prefix,
            PrefixParams {
                block_size_tokens: 8,
                max_prefix_blocks: 64,
                lru_capacity_per_server: 1000
            }
        );
        assert_eq!(c.prefill.map(|p| p.scorers[0].weight), Some(1.0));
    }

    #[test]
    fn accepts_the_legacy_api_group() {
        let text = DEFAULT_CONFIG.replace("llm-d.ai/v1alpha1", LEGACY_API_VERSION);
        assert!(SchedulerConfig::from_yaml(&text).is_ok());
    }

    #[test]
    fn refuses_invalid_configs_with_a_reason() {
        let cases: Vec<(String, ConfigError)> = vec![
            (
                DEFAULT_CONFIG.replace("queue-scorer\n", "queue-scorerx\n"),
                ConfigError::UnknownPluginType("queue-scorerx".into()),
            ),
            (
                DEFAULT_CONFIG.replace(
                    "weight: 2\n  - pluginRef: kv",
                    "weight: -2\n  - pluginRef: kv",
                ),
                ConfigError::BadWeight {
                    profile: "default".into(),
                    plugin: "queue-scorer".into(),
                },
            ),
            (
                DEFAULT_CONFIG.replace("pluginRef: queue-scorer", "pluginRef: nope"),
                ConfigError::UnknownRef {
                    profile: "default".into(),
                    plugin: "nope".into(),
                },
            ),
            (
                DEFAULT_CONFIG.replace("kind: EndpointPickerConfig", "kind: Other"),
                ConfigError::Kind("Other".into()),
            ),
            (
                DEFAULT_CONFIG.replace("blockSizeTokens: 16", "blockSizeTokens: 0"),
                ConfigError::Parameters {
                    plugin: "prefix-cache-scorer".into(),
                    reason: "blockSizeTokens must be in 1..=4096, got 0".into(),
                },
            ),
            (
                PD.replace("- name: prefill", "- name: other"),
                ConfigError::DisaggProfiles,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(SchedulerConfig::from_yaml(&text), Err(want));
        }
        assert!(matches!(
            SchedulerConfig::from_yaml("plugins: [oops"),
            Err(ConfigError::Yaml(_))
        ));
        assert!(matches!(
            SchedulerConfig::from_yaml(
                &DEFAULT_CONFIG.replace("blockSizeTokens: 16", "blockSizeTokens: many")
            ),
            Err(ConfigError::Parameters { .. })
        ));
    }

    /// The default config with a prefix-cache-affinity-filter after the decode-filter.
    fn gated(parameters: &str) -> String {
        DEFAULT_CONFIG
            .replace(
                "- type: decode-filter\n",
                &format!(
                    "- type: decode-filter\n- type: prefix-cache-affinity-filter\n{parameters}"
                ),
            )
            .replace(
                "  - pluginRef: decode-filter\n",
                "  - pluginRef: decode-filter\n  - pluginRef: prefix-cache-affinity-filter\n",
            )
    }

    #[test]
    fn reads_the_affinity_gate_with_its_defaults_and_parameters() {
        let c = SchedulerConfig::from_yaml(&gated("")).expect("valid");
        assert_eq!(
            c.decode.filters,
            vec![
                Filter::Role(RoleFilter::Decode),
                Filter::PrefixCacheAffinity(AffinityGate {
                    affinity_threshold: 0.8,
                    max_waiting_requests: 8
                })
            ]
        );
        let c = SchedulerConfig::from_yaml(&gated(
            "  parameters: {affinityThreshold: 0.5, maxWaitingRequests: 3}\n",
        ))
        .expect("valid");
        assert_eq!(
            c.decode.filters[1],
            Filter::PrefixCacheAffinity(AffinityGate {
                affinity_threshold: 0.5,
                max_waiting_requests: 3
            })
        );
    }

    #[test]
    fn refuses_bad_affinity_gate_parameters_with_a_reason() {
        let refused = |parameters: &str| match SchedulerConfig::from_yaml(&gated(&format!(
            "  parameters: {parameters}\n"
        ))) {
            Err(ConfigError::Parameters { plugin, reason }) => {
                assert_eq!(plugin, "prefix-cache-affinity-filter");
                reason
            }
            other => panic!("{parameters}: {other:?}"),
        };
        for threshold in ["0", "-0.1", "1.5"] {
            let reason = refused(&format!("{{affinityThreshold: {threshold}}}"));
            assert!(
                reason.starts_with("affinityThreshold must be a fraction of the prompt in (0, 1]"),
                "{reason}"
            );
        }
        assert_eq!(
            refused("{maxWaitingRequests: 0}"),
            "maxWaitingRequests must be in 1..=1000000, got 0"
        );
        assert!(refused("{maxWaitingRequests: -1}").contains("invalid value"));
        assert!(refused("{affinityTreshold: 0.5}").contains("unknown field `affinityTreshold`"));
        assert!(
            SchedulerConfig::from_yaml(&gated("  parameters: {affinityThreshold: 1}\n")).is_ok()
        );
    }

    #[test]
    fn refuses_a_role_filter_after_the_affinity_gate() {
        let text = gated("").replace(
            "  - pluginRef: decode-filter\n  - pluginRef: prefix-cache-affinity-filter\n",
            "  - pluginRef: prefix-cache-affinity-filter\n  - pluginRef: decode-filter\n",
        );
        assert_eq!(
            SchedulerConfig::from_yaml(&text),
            Err(ConfigError::RoleFilterAfterGate {
                profile: "default".into(),
                role: "decode-filter".into(),
                gate: "prefix-cache-affinity-filter".into(),
            })
        );
    }

    /// llm-d's precise prefix-cache config: the producer and token producer feeding
    /// the prefix-cache-scorer.
    fn precise(producer_parameters: &str) -> String {
        format!(
            r#"
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: token-producer
- type: precise-prefix-cache-producer
  parameters: {producer_parameters}
- type: prefix-cache-scorer
- type: decode-filter
- type: max-score-picker
- type: single-profile-handler
schedulingProfiles:
- name: decode
  plugins:
  - pluginRef: decode-filter
  - pluginRef: prefix-cache-scorer
    weight: 3
  - pluginRef: max-score-picker
"#
        )
    }

    #[test]
    fn reads_llm_ds_precise_prefix_cache_producer() {
        let c = SchedulerConfig::from_yaml(&precise(
            "{kvEventsConfig: {topicFilter: \"kv@\", concurrency: 4, discoverPods: true, \
             podDiscoveryConfig: {socketPort: 5557, podLabelSelector: \"x=y\"}}, \
             indexerConfig: {tokenProcessorConfig: {blockSize: 16}}}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.kv_events,
            Some(KvEventsParams {
                port: 5557,
                replay_port: None
            })
        );
        assert_eq!(c.decode.scorers[0].kind, Scorer::PrefixCache);
        let c = SchedulerConfig::from_yaml(&precise(
            "{kvEventsConfig: {podDiscoveryConfig: {socketPort: 5557, replayPort: 5558}}}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.kv_events.and_then(|k| k.replay_port), Some(5558));
        let c = SchedulerConfig::from_yaml(&precise("{}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.kv_events,
            Some(KvEventsParams {
                port: 5556,
                replay_port: None
            })
        );
        assert_eq!(SchedulerConfig::default_config().kv_events, None);
    }

    #[test]
    fn reads_the_deprecated_precise_prefix_cache_scorer_as_scorer_and_producer() {
        let c = SchedulerConfig::from_yaml(
            r#"
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    blockSize: 64
    kvEventsConfig: {topicFilter: "kv", podDiscoveryConfig: {socketPort: 5556}}
- type: max-score-picker
- type: single-profile-handler
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: precise-prefix-cache-scorer
    weight: 5
  - pluginRef: max-score-picker
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.kv_events,
            Some(KvEventsParams {
                port: 5556,
                replay_port: None
            })
        );
        assert_eq!(c.prefix.block_size_tokens, 64);
        assert_eq!(c.decode.scorers[0].kind, Scorer::PrefixCache);
        assert_eq!(c.decode.scorers[0].weight, 5.0);
    }

    #[test]
    fn refuses_what_the_precise_producer_does_differently_by_name() {
        let refused = |p: &str| match SchedulerConfig::from_yaml(&precise(p)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {p}"),
        };
        assert!(
            refused("{kvEventsConfig: {zmqEndpoint: \"tcp://*:5557\"}}").contains(
                "kvEventsConfig.zmqEndpoint (one socket all engines connect to) is not supported"
            )
        );
        assert!(refused("{kvEventsConfig: {engineType: sglang}}").contains("vllm only"));
        assert!(refused("{kvEventsConfig: {topicFilter: \"other\"}}").contains("`kv@`"));
        assert!(
            refused("{kvEventsConfig: {podDiscoveryConfig: {socketPort: 70000}}}")
                .contains("socketPort")
        );
        assert!(
            refused("{kvEventsConfig: {podDiscoveryConfig: {replayPort: 0}}}")
                .contains("replayPort")
        );
        assert!(
            refused("{indexerConfig: {tokenProcessorConfig: {blockSize: 64}}}")
                .contains("blockSize 64 differs from the prefix-cache-scorer's blockSizeTokens 16")
        );
    }

    #[test]
    fn the_token_producer_asks_the_engine_unless_told_the_fleet_is_simulated() {
        let with = |params: &str| {
            SchedulerConfig::from_yaml(&precise("{}").replace(
                "- type: token-producer\n",
                &format!("- type: token-producer\n  parameters: {params}\n"),
            ))
        };
        let tokens = |params: &str| with(params).map(|c| c.tokens).map_err(|e| e.to_string());
        let default = SchedulerConfig::from_yaml(&precise("{}")).map(|c| c.tokens);
        assert_eq!(default.ok(), Some(TokenSource::default()));
        assert_eq!(
            tokens("{source: engine, cacheSize: 10, timeoutMs: 50, modelName: m}"),
            Ok(TokenSource::Engine {
                cache_size: 10,
                timeout_ms: 50
            })
        );
        assert_eq!(tokens("{source: simulator}"), Ok(TokenSource::Simulator));
        let refused = |p: &str| tokens(p).err().unwrap_or_default();
        assert!(refused("{source: hf}").contains("source \"hf\" is not one of engine, simulator"));
        assert!(refused("{timeoutMs: 0}").contains("timeoutMs"));
        assert!(refused("{tokenizer: x}").contains("unknown field `tokenizer`"));
    }
}
