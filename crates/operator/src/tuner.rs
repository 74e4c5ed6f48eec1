//! Scorer weights as the embedded scheduler keeps them in `status.routing.weights`
//! (plugin type -> weight).

use std::collections::BTreeMap;

use llmd_api::ScorerWeights;
use llmd_api::endpoint_picker_config::plugin;

/// The weights recorded in status, if they name every load scorer.
pub fn weights_from_status(weights: &BTreeMap<String, f64>) -> Option<ScorerWeights> {
    let get = |name: &str| weights.get(name).copied();
    Some(ScorerWeights {
        prefix_cache: get(plugin::PREFIX_CACHE_SCORER)?,
        queue: get(plugin::QUEUE_SCORER)?,
        kv_cache_utilization: get(plugin::KV_CACHE_UTILIZATION_SCORER)?,
        active_requests: get(plugin::ACTIVE_REQUEST_SCORER).unwrap_or(0.0),
        session_affinity: get(plugin::SESSION_AFFINITY_SCORER).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_weights_round_trip_and_need_the_load_scorers() {
        let mut weights = BTreeMap::from([
            (plugin::PREFIX_CACHE_SCORER.to_string(), 5.0),
            (plugin::QUEUE_SCORER.to_string(), 1.0),
            (plugin::KV_CACHE_UTILIZATION_SCORER.to_string(), 0.5),
        ]);
        let parsed = weights_from_status(&weights).expect("complete");
        assert_eq!(parsed.prefix_cache, 5.0);
        assert_eq!(parsed.active_requests, 0.0);
        weights.remove(plugin::QUEUE_SCORER);
        assert_eq!(weights_from_status(&weights), None);
    }
}
