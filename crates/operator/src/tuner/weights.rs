//! Scorer weights as the embedded scheduler keeps them in `status.routing.weights`
//! (plugin type -> weight, every scorer, zeros included).

use std::collections::BTreeMap;

use llmd_api::ScorerWeights;
use llmd_api::endpoint_picker_config::plugin;

const SCORERS: [&str; 5] = [
    plugin::PREFIX_CACHE_SCORER,
    plugin::QUEUE_SCORER,
    plugin::KV_CACHE_UTILIZATION_SCORER,
    plugin::ACTIVE_REQUEST_SCORER,
    plugin::SESSION_AFFINITY_SCORER,
];

fn fields(weights: &ScorerWeights) -> [f64; 5] {
    [
        weights.prefix_cache,
        weights.queue,
        weights.kv_cache_utilization,
        weights.active_requests,
        weights.session_affinity,
    ]
}

/// Every scorer's weight, zeros included, as the tuner records them.
pub fn weights_to_status(weights: &ScorerWeights) -> BTreeMap<String, f64> {
    SCORERS
        .iter()
        .zip(fields(weights))
        .map(|(name, weight)| (name.to_string(), weight))
        .collect()
}

/// The weights recorded in status by the tuner (which records all of them); `None`
/// when the map is not the tuner's.
pub fn weights_from_status(weights: &BTreeMap<String, f64>) -> Option<ScorerWeights> {
    let get = |name: &str| weights.get(name).copied();
    Some(ScorerWeights {
        prefix_cache: get(plugin::PREFIX_CACHE_SCORER)?,
        queue: get(plugin::QUEUE_SCORER)?,
        kv_cache_utilization: get(plugin::KV_CACHE_UTILIZATION_SCORER)?,
        active_requests: get(plugin::ACTIVE_REQUEST_SCORER)?,
        session_affinity: get(plugin::SESSION_AFFINITY_SCORER)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_weights_round_trip_and_need_every_scorer() {
        let tuned = ScorerWeights {
            prefix_cache: 5.0,
            queue: 0.0,
            ..ScorerWeights::default()
        };
        let mut map = weights_to_status(&tuned);
        assert_eq!(map.len(), 5);
        assert_eq!(weights_from_status(&map), Some(tuned));
        map.remove(plugin::QUEUE_SCORER);
        assert_eq!(weights_from_status(&map), None);
    }
}
