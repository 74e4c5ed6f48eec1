//! The `<name>-epp-config` ConfigMap: scorer weights and the P/D decider in llm-d's
//! EndpointPickerConfig format, which both our EPP and an upstream llm-d EPP read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use llmd_api::LLMDeploymentSpec;
use llmd_api::ScorerWeights;
use llmd_api::endpoint_picker_config::{
    API_VERSION, EndpointPickerConfig, KIND, PluginSpec, ProfilePlugin, SchedulingProfile, plugin,
    profile,
};
use serde_json::json;

use super::meta::{Component, Owner};

/// Key of the config file inside the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";

pub fn name(owner: &Owner) -> String {
    owner.child_name("epp-config")
}

/// Scorer plugin types paired with their weights; zero weights are left out.
pub fn weighted_scorers(weights: &ScorerWeights) -> Vec<(&'static str, f64)> {
    [
        (plugin::PREFIX_CACHE_SCORER, weights.prefix_cache),
        (plugin::QUEUE_SCORER, weights.queue),
        (
            plugin::KV_CACHE_UTILIZATION_SCORER,
            weights.kv_cache_utilization,
        ),
        (plugin::ACTIVE_REQUEST_SCORER, weights.active_requests),
        (plugin::SESSION_AFFINITY_SCORER, weights.session_affinity),
    ]
    .into_iter()
    .filter(|(_, weight)| *weight > 0.0)
    .collect()
}

fn plugin(plugin_type: &str, parameters: Option<serde_json::Value>) -> PluginSpec {
    PluginSpec {
        plugin_type: plugin_type.to_string(),
        name: None,
        parameters,
    }
}

fn profile(name: &str, filter: &str, scorers: &[(&str, f64)]) -> SchedulingProfile {
    let mut plugins = vec![ProfilePlugin {
        plugin_ref: filter.to_string(),
        weight: None,
    }];
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

/// The config for a spec and the weights in force (the spec's, or the tuner's).
pub fn config(spec: &LLMDeploymentSpec, weights: &ScorerWeights) -> EndpointPickerConfig {
    let scorers = weighted_scorers(weights);
    let disaggregated = spec.active_prefill().is_some();
    let prefix = &spec.router.prefix_cache;
    let mut plugins: Vec<PluginSpec> = scorers
        .iter()
        .map(|(scorer, _)| {
            let parameters = (*scorer == plugin::PREFIX_CACHE_SCORER).then(|| {
                json!({
                    "blockSizeTokens": prefix.block_size_tokens,
                    "maxPrefixBlocksToMatch": 2048,
                    "lruCapacityPerServer": prefix.lru_capacity_per_server,
                })
            });
            plugin(scorer, parameters)
        })
        .collect();
    plugins.push(plugin(plugin::DECODE_FILTER, None));
    plugins.push(plugin(plugin::MAX_SCORE_PICKER, None));
    let mut profiles = vec![profile(profile::DECODE, plugin::DECODE_FILTER, &scorers)];
    if disaggregated {
        plugins.push(plugin(plugin::PREFILL_FILTER, None));
        plugins.push(plugin(plugin::DISAGG_PROFILE_HANDLER, None));
        plugins.push(plugin(
            plugin::PD_DECIDER,
            Some(json!({"nonCachedTokens": spec.router.disaggregation.non_cached_tokens})),
        ));
        profiles.push(profile(profile::PREFILL, plugin::PREFILL_FILTER, &scorers));
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

/// The ConfigMap holding the config as YAML.
pub fn config_map(
    owner: &Owner,
    config: &EndpointPickerConfig,
) -> Result<ConfigMap, serde_yaml::Error> {
    Ok(ConfigMap {
        metadata: owner.object_meta(name(owner), Component::EndpointPicker),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            serde_yaml::to_string(config)?,
        )])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_weights_are_left_out() {
        let weights = ScorerWeights {
            prefix_cache: 1.5,
            queue: 0.0,
            kv_cache_utilization: 2.0,
            active_requests: 0.0,
            session_affinity: 4.0,
        };
        assert_eq!(
            weighted_scorers(&weights),
            [
                (plugin::PREFIX_CACHE_SCORER, 1.5),
                (plugin::KV_CACHE_UTILIZATION_SCORER, 2.0),
                (plugin::SESSION_AFFINITY_SCORER, 4.0)
            ]
        );
    }
}
