//! The config an LLMDeployment asks for: one scorer plugin per weight above zero, the
//! decode profile, and with prefill pods the prefill profile and the P/D decider.

use serde_json::json;

use super::plugins::{plugin, profile};
use super::{
    API_VERSION, EndpointPickerConfig, KIND, PluginSpec, ProfilePlugin, SchedulingProfile,
};
use crate::{
    KV_EVENTS_PORT, KV_EVENTS_REPLAY_PORT, LLMDeploymentSpec, PrefixCacheMode, RouterSpec,
    ScorerWeights,
};

/// How many leading prompt blocks the prefix index matches.
const MAX_PREFIX_BLOCKS_TO_MATCH: u64 = 2048;

/// The prefix-cache-scorer's parameters for a router: they size the prefix index,
/// whichever plugins read it.
pub(super) fn prefix_cache_parameters(router: &RouterSpec) -> serde_json::Value {
    let prefix = &router.prefix_cache;
    json!({
        "blockSizeTokens": prefix.block_size_tokens,
        "maxPrefixBlocksToMatch": MAX_PREFIX_BLOCKS_TO_MATCH,
        "lruCapacityPerServer": prefix.lru_capacity_per_server,
    })
}

pub(super) fn plugin(plugin_type: &str, parameters: Option<serde_json::Value>) -> PluginSpec {
    PluginSpec {
        plugin_type: plugin_type.to_string(),
        name: None,
        parameters,
    }
}

/// A profile: `filters` in order, the weighted `scorers`, the max-score picker.
pub(super) fn profile(name: &str, filters: &[&str], scorers: &[(&str, f64)]) -> SchedulingProfile {
    let mut plugins: Vec<ProfilePlugin> = filters
        .iter()
        .map(|filter| ProfilePlugin {
            plugin_ref: filter.to_string(),
            weight: None,
        })
        .collect();
    plugins.extend(scorers.iter().map(|(scorer, weight)| ProfilePlugin {
        plugin_ref: scorer.to_string(),
        weight: Some(*weight),
    }));
    plugins.push(ProfilePlugin {
        plugin_ref: plugin::MAX_SCORE_PICKER.to_string(),
        weight: None,
    });
    SchedulingProfile {
        name: name.to_string(),
        plugins,
    }
}

impl EndpointPickerConfig {
    /// The config for a spec and the weights in force (the spec's, or the tuner's).
    pub fn for_spec(spec: &LLMDeploymentSpec, weights: &ScorerWeights) -> EndpointPickerConfig {
        EndpointPickerConfig::for_router(&spec.router, weights, spec.active_prefill().is_some())
    }

    /// The config for a router section, the weights in force, and whether prefill pods
    /// exist (then the P/D decider and the prefill profile are added).
    pub fn for_router(
        router: &RouterSpec,
        weights: &ScorerWeights,
        disaggregated: bool,
    ) -> EndpointPickerConfig {
        let scorers: Vec<(&str, f64)> = weights
            .active()
            .into_iter()
            .map(|(scorer, weight)| (scorer.plugin_type(), weight))
            .collect();
        let mut plugins: Vec<PluginSpec> = scorers
            .iter()
            .map(|(scorer, _)| {
                let parameters = (*scorer == plugin::PREFIX_CACHE_SCORER)
                    .then(|| prefix_cache_parameters(router));
                plugin(scorer, parameters)
            })
            .collect();
        if weights.latency > 0.0 || router.slo.is_some() {
            // llm-d lists the model that feeds the latency-scorer as its own plugin;
            // it carries the deployment's default objectives.
            let slo = router.slo.as_ref().map(|slo| {
                let mut p = serde_json::Map::new();
                if let Some(ms) = slo.ttft_ms {
                    p.insert("defaultTtftSloMs".into(), ms.into());
                }
                if let Some(ms) = slo.tpot_ms {
                    p.insert("defaultTpotSloMs".into(), ms.into());
                }
                serde_json::Value::Object(p)
            });
            plugins.insert(0, plugin(plugin::PREDICTED_LATENCY_PRODUCER, slo));
        }
        plugins.push(plugin(plugin::DECODE_FILTER, None));
        plugins.push(plugin(plugin::MAX_SCORE_PICKER, None));
        let profiles = vec![profile(profile::DECODE, &[plugin::DECODE_FILTER], &scorers)];
        assemble(router, disaggregated, plugins, profiles, || {
            profile(profile::PREFILL, &[plugin::PREFILL_FILTER], &scorers)
        })
    }
}

/// In precise mode, llm-d's producers feeding the prefix-cache-scorer: the engines'
/// KV events, dialed on each pod's events port, and the prompt's tokens.
fn precise_producers(router: &RouterSpec) -> Vec<PluginSpec> {
    if router.prefix_cache.mode != PrefixCacheMode::Precise {
        return Vec::new();
    }
    vec![
        plugin(plugin::TOKEN_PRODUCER, None),
        plugin(
            plugin::PRECISE_PREFIX_CACHE_PRODUCER,
            Some(json!({
                "kvEventsConfig": {
                    "topicFilter": "kv@",
                    "discoverPods": true,
                    "podDiscoveryConfig": {
                        "socketPort": KV_EVENTS_PORT,
                        "replayPort": KV_EVENTS_REPLAY_PORT,
                    },
                },
                "indexerConfig": {
                    "tokenProcessorConfig": {"blockSize": router.prefix_cache.block_size_tokens},
                },
            })),
        ),
    ]
}

/// The config from its decode-side `plugins` and `profiles`: the precise producers
/// first when asked for; with `disaggregated`, the prefill filter, the P/D profile
/// handler, the P/D decider with the router's `nonCachedTokens` and the prefill
/// profile; otherwise the single-profile handler.
pub(super) fn assemble(
    router: &RouterSpec,
    disaggregated: bool,
    plugins: Vec<PluginSpec>,
    mut profiles: Vec<SchedulingProfile>,
    prefill_profile: impl FnOnce() -> SchedulingProfile,
) -> EndpointPickerConfig {
    let mut plugins = [precise_producers(router), plugins].concat();
    if disaggregated {
        plugins.push(plugin(plugin::PREFILL_FILTER, None));
        plugins.push(plugin(plugin::DISAGG_PROFILE_HANDLER, None));
        plugins.push(plugin(
            plugin::PD_DECIDER,
            Some(json!({"nonCachedTokens": router.disaggregation.non_cached_tokens})),
        ));
        profiles.push(prefill_profile());
    } else {
        plugins.push(plugin(plugin::SINGLE_PROFILE_HANDLER, None));
    }
    EndpointPickerConfig {
        api_version: API_VERSION.to_string(),
        kind: KIND.to_string(),
        plugins,
        scheduling_profiles: profiles,
    }
}
