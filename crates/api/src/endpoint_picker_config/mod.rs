//! llm-d's `EndpointPickerConfig`: the one definition of the routing config. The
//! operator renders it for a spec ([`EndpointPickerConfig::for_spec`]) into the
//! `<name>-epp-config` ConfigMap; the EndpointPicker parses and validates it into a
//! [`SchedulerConfig`]; both identify it by [`EndpointPickerConfig::hash`], computed
//! over the canonical YAML rendering, so `status.routing.configHash` and the hash the
//! running EndpointPicker reports can be compared.
//!
//! ```yaml
//! apiVersion: llm-d.ai/v1alpha1
//! kind: EndpointPickerConfig
//! plugins:
//! - type: prefix-cache-scorer
//!   parameters: {blockSizeTokens: 16}
//! schedulingProfiles:
//! - name: decode
//!   plugins:
//!   - pluginRef: prefix-cache-scorer
//!     weight: 3
//! ```

mod affinity_gate;
mod config_error;
mod for_spec;
mod plugins;
mod scheduler_config;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use config_error::ConfigError;
pub use plugins::{FilterKind, PluginKind, Producer, RoleFilter, Scorer, plugin, profile};
pub use scheduler_config::{
    AffinityGate, DEFAULT_CONFIG, DefaultSlo, Filter, KvEventsParams, PrefixParams, Profile,
    SchedulerConfig, TokenSource, WeightedScorer,
};

pub const API_VERSION: &str = "llm-d.ai/v1alpha1";
/// The older group upstream configs still use; accepted when reading.
pub const LEGACY_API_VERSION: &str = "inference.networking.x-k8s.io/v1alpha1";
pub const KIND: &str = "EndpointPickerConfig";
/// Key of the config file inside the `<name>-epp-config` ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";

/// The whole config file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
    #[serde(default)]
    pub scheduling_profiles: Vec<SchedulingProfile>,
}

/// One plugin instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PluginSpec {
    /// Plugin type, e.g. `queue-scorer`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Instance name; defaults to the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Type-specific parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

impl PluginSpec {
    /// The name profiles refer to this plugin by.
    pub fn instance_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.plugin_type)
    }
}

/// A scheduling profile: filters, weighted scorers and a picker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SchedulingProfile {
    pub name: String,
    #[serde(default)]
    pub plugins: Vec<ProfilePlugin>,
}

/// A reference from a profile to a plugin, with a weight for scorers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProfilePlugin {
    pub plugin_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

impl EndpointPickerConfig {
    /// Reads YAML text (not yet validated: see [`EndpointPickerConfig::validate`]).
    pub fn parse(text: &str) -> Result<EndpointPickerConfig, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))
    }

    /// The canonical YAML rendering: what the ConfigMap carries and what the hash is
    /// computed over.
    pub fn to_yaml(&self) -> String {
        // Strings, numbers and JSON values with string keys always render as YAML.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// Identity of the config: the first 16 hex digits of the sha256 of its canonical
    /// YAML. Two configs that say the same thing have the same hash however their
    /// source text was formatted.
    pub fn hash(&self) -> String {
        crate::content_hash::content_hash(self.to_yaml().as_bytes())
    }

    /// The weight of each scorer in the first profile (the decode profile), by plugin
    /// instance name.
    pub fn weights(&self) -> BTreeMap<String, f64> {
        self.scheduling_profiles
            .first()
            .map(|profile| {
                profile
                    .plugins
                    .iter()
                    .filter_map(|p| Some((p.plugin_ref.clone(), p.weight?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LLMDeployment, ScorerWeights};

    const PD_SAMPLE: &str = include_str!("../../../../config/samples/llmd_v1alpha1_pd_nixl.yaml");

    fn pd_spec() -> crate::LLMDeploymentSpec {
        let ld: LLMDeployment = serde_yaml::from_str(PD_SAMPLE).expect("sample parses");
        ld.spec
    }

    #[test]
    fn the_rendering_of_a_spec_parses_back_to_the_same_config_and_hash() {
        let spec = pd_spec();
        let config = EndpointPickerConfig::for_spec(&spec, &spec.router.scorers);
        let parsed = EndpointPickerConfig::parse(&config.to_yaml()).expect("parses");
        assert_eq!(parsed, config);
        assert_eq!(parsed.hash(), config.hash());
        let validated = parsed.validate().expect("the operator's config is valid");
        assert_eq!(validated.hash, config.hash());
        assert!(validated.prefill.is_some());
    }

    #[test]
    fn precise_mode_renders_llm_ds_producers_and_the_epp_reads_them_back() {
        let mut spec = pd_spec();
        assert_eq!(
            EndpointPickerConfig::for_spec(&spec, &spec.router.scorers)
                .validate()
                .map(|c| c.kv_events),
            Ok(None)
        );
        spec.router.prefix_cache.mode = crate::PrefixCacheMode::Precise;
        let config = EndpointPickerConfig::for_spec(&spec, &spec.router.scorers);
        let types: Vec<&str> = config
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(
            types[..3],
            [
                plugin::TOKEN_PRODUCER,
                plugin::PRECISE_PREFIX_CACHE_PRODUCER,
                plugin::PREFIX_CACHE_SCORER
            ]
        );
        let validated = EndpointPickerConfig::parse(&config.to_yaml())
            .and_then(|c| c.validate())
            .expect("the operator's precise config is valid");
        assert_eq!(
            validated.kv_events,
            Some(KvEventsParams {
                port: crate::KV_EVENTS_PORT as u16,
                replay_port: Some(crate::KV_EVENTS_REPLAY_PORT as u16),
            })
        );
    }

    #[test]
    fn the_hash_ignores_formatting_and_follows_the_weights() {
        let spec = pd_spec();
        let config = EndpointPickerConfig::for_spec(&spec, &spec.router.scorers);
        let reformatted = config.to_yaml().replace("weight: 3.0", "weight: 3");
        let reparsed = EndpointPickerConfig::parse(&reformatted).expect("parses");
        assert_eq!(reparsed.hash(), config.hash());
        let heavier = ScorerWeights {
            prefix_cache: 4.0,
            ..spec.router.scorers.clone()
        };
        assert_ne!(
            EndpointPickerConfig::for_spec(&spec, &heavier).hash(),
            config.hash()
        );
        assert_eq!(config.hash().len(), 16);
    }

    #[test]
    fn weights_are_read_from_the_decode_profile() {
        let spec = pd_spec();
        let config = EndpointPickerConfig::for_spec(&spec, &spec.router.scorers);
        assert_eq!(
            config.weights(),
            BTreeMap::from([
                (plugin::PREFIX_CACHE_SCORER.to_string(), 3.0),
                (plugin::QUEUE_SCORER.to_string(), 2.0),
                (plugin::KV_CACHE_UTILIZATION_SCORER.to_string(), 2.0),
            ])
        );
    }

    #[test]
    fn the_latency_scorer_and_default_objectives_render_and_parse_back() {
        let router = crate::RouterSpec {
            slo: Some(crate::SloSpec {
                ttft_ms: Some(750),
                tpot_ms: None,
            }),
            ..crate::RouterSpec::default()
        };
        let weights = ScorerWeights {
            latency: 2.0,
            ..ScorerWeights::default()
        };
        let config = EndpointPickerConfig::for_router(&router, &weights, false);
        let parsed = config.validate().expect("valid");
        assert_eq!(
            parsed.default_slo,
            DefaultSlo {
                ttft_ms: Some(750),
                tpot_ms: None
            }
        );
        assert!(
            parsed
                .decode
                .scorers
                .iter()
                .any(|s| s.kind == Scorer::Latency && s.weight == 2.0)
        );
        let bad = config
            .to_yaml()
            .replace("defaultTtftSloMs: 750", "defaultTtftSloMs: 0");
        assert_ne!(bad, config.to_yaml());
        let err = SchedulerConfig::from_yaml(&bad).expect_err("0 ms refused");
        assert!(err.to_string().contains("defaultTtftSloMs"), "{err}");
    }
}
