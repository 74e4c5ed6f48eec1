//! The upstream-style prefix-affinity gate with load spreading, as a config: the
//! prefix-cache-affinity-filter narrows the candidates to the endpoints that hold
//! most of the prompt (when one is not overloaded), and queue and KV-cache
//! utilisation choose among what is left. Unlike [`EndpointPickerConfig::for_router`]
//! the prefix match is a gate, not a weighted score; benchmarks run it as a fixed
//! baseline against the weighted config.

use serde_json::json;

use super::for_spec::{assemble, plugin, prefix_cache_parameters, profile};
use super::plugins::{plugin, profile};
use super::{AffinityGate, EndpointPickerConfig};
use crate::RouterSpec;

impl EndpointPickerConfig {
    /// The prefix-affinity gate config for a router section: per profile, the role
    /// filter, the prefix-cache-affinity-filter (threshold 0.8, at most 8 waiting),
    /// queue-scorer 1 and kv-cache-utilization-scorer 1, the max-score picker. With
    /// `disaggregated`, the prefill profile (the same gate and scorers behind the
    /// prefill-filter) and the P/D decider with the router's `nonCachedTokens`.
    ///
    /// The prefix-cache-scorer plugin is declared, unweighted in every profile, for
    /// its parameters: they size the prefix index the gate reads.
    pub fn affinity_gate(router: &RouterSpec, disaggregated: bool) -> EndpointPickerConfig {
        let scorers = [
            (plugin::QUEUE_SCORER, 1.0),
            (plugin::KV_CACHE_UTILIZATION_SCORER, 1.0),
        ];
        let plugins = vec![
            plugin(
                plugin::PREFIX_CACHE_SCORER,
                Some(prefix_cache_parameters(router)),
            ),
            plugin(
                plugin::PREFIX_CACHE_AFFINITY_FILTER,
                Some(json!({
                    "affinityThreshold": AffinityGate::DEFAULT_AFFINITY_THRESHOLD,
                    "maxWaitingRequests": AffinityGate::DEFAULT_MAX_WAITING_REQUESTS,
                })),
            ),
            plugin(plugin::QUEUE_SCORER, None),
            plugin(plugin::KV_CACHE_UTILIZATION_SCORER, None),
            plugin(plugin::DECODE_FILTER, None),
            plugin(plugin::MAX_SCORE_PICKER, None),
        ];
        let gated = |name: &str, role_filter: &str| {
            profile(
                name,
                &[role_filter, plugin::PREFIX_CACHE_AFFINITY_FILTER],
                &scorers,
            )
        };
        let profiles = vec![gated(profile::DECODE, plugin::DECODE_FILTER)];
        assemble(router, disaggregated, plugins, profiles, || {
            gated(profile::PREFILL, plugin::PREFILL_FILTER)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint_picker_config::{Filter, RoleFilter, Scorer};

    fn router() -> RouterSpec {
        let mut router = RouterSpec::default();
        router.disaggregation.non_cached_tokens = 96;
        router
    }

    #[test]
    fn the_gate_config_validates_to_the_gate_and_two_load_scorers() {
        let router = router();
        let config = EndpointPickerConfig::affinity_gate(&router, false).validate();
        let config = config.expect("the rendered gate config is valid");
        assert_eq!(
            config.decode.filters,
            vec![
                Filter::Role(RoleFilter::Decode),
                Filter::PrefixCacheAffinity(AffinityGate::default())
            ]
        );
        let scorers: Vec<(Scorer, f64)> = config
            .decode
            .scorers
            .iter()
            .map(|s| (s.kind, s.weight))
            .collect();
        assert_eq!(
            scorers,
            [(Scorer::Queue, 1.0), (Scorer::KvCacheUtilization, 1.0)]
        );
        assert!(config.prefill.is_none());
        assert_eq!(
            config.prefix.block_size_tokens as i64,
            i64::from(router.prefix_cache.block_size_tokens),
            "the prefix index is sized by the router's prefix-cache section"
        );
    }

    #[test]
    fn the_disaggregated_gate_config_adds_the_gated_prefill_profile_and_decider() {
        let config = EndpointPickerConfig::affinity_gate(&router(), true);
        let parsed = EndpointPickerConfig::parse(&config.to_yaml()).expect("parses");
        assert_eq!(parsed, config);
        let config = parsed.validate().expect("valid");
        assert_eq!(config.non_cached_tokens, 96);
        let prefill = config.prefill.expect("prefill profile");
        assert_eq!(
            prefill.filters,
            vec![
                Filter::Role(RoleFilter::Prefill),
                Filter::PrefixCacheAffinity(AffinityGate::default())
            ]
        );
        assert_eq!(prefill.scorers.len(), 2);
    }
}
