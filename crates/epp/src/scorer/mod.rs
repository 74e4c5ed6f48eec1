//! Scorers: each maps the candidates of one pick to scores in `[0, 1]`, higher is
//! better. A profile combines them as a weighted sum.

pub mod active_request;
pub mod kv_cache_utilization;
pub mod prefix_cache;
pub mod queue;
pub mod session_affinity;

use llmd_api::endpoint_picker_config::plugin;

use crate::candidate::{Candidate, RequestFeatures};

/// The scorers llmd-epp implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScorerKind {
    PrefixCache,
    Queue,
    KvCacheUtilization,
    ActiveRequest,
    SessionAffinity,
}

impl ScorerKind {
    pub fn from_plugin_type(t: &str) -> Option<ScorerKind> {
        match t {
            plugin::PREFIX_CACHE_SCORER => Some(ScorerKind::PrefixCache),
            plugin::QUEUE_SCORER => Some(ScorerKind::Queue),
            plugin::KV_CACHE_UTILIZATION_SCORER => Some(ScorerKind::KvCacheUtilization),
            plugin::ACTIVE_REQUEST_SCORER => Some(ScorerKind::ActiveRequest),
            plugin::SESSION_AFFINITY_SCORER => Some(ScorerKind::SessionAffinity),
            _ => None,
        }
    }

    pub fn plugin_type(self) -> &'static str {
        match self {
            ScorerKind::PrefixCache => plugin::PREFIX_CACHE_SCORER,
            ScorerKind::Queue => plugin::QUEUE_SCORER,
            ScorerKind::KvCacheUtilization => plugin::KV_CACHE_UTILIZATION_SCORER,
            ScorerKind::ActiveRequest => plugin::ACTIVE_REQUEST_SCORER,
            ScorerKind::SessionAffinity => plugin::SESSION_AFFINITY_SCORER,
        }
    }

    /// Scores for `candidates`, index for index.
    pub fn score(self, candidates: &[&Candidate], request: &RequestFeatures) -> Vec<f64> {
        match self {
            ScorerKind::PrefixCache => prefix_cache::score(candidates, request),
            ScorerKind::Queue => queue::score(candidates),
            ScorerKind::KvCacheUtilization => kv_cache_utilization::score(candidates),
            ScorerKind::ActiveRequest => active_request::score(candidates),
            ScorerKind::SessionAffinity => session_affinity::score(candidates, request),
        }
    }
}

/// Min-max normalisation where fewer is better: the least loaded gets 1, the most
/// loaded 0, and all get 1 when they are equal. `None` (unknown) scores 0.
pub(crate) fn fewer_is_better(values: &[Option<f64>]) -> Vec<f64> {
    let known = values.iter().flatten();
    let min = known.clone().copied().fold(f64::INFINITY, f64::min);
    let max = known.copied().fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|v| match v {
            None => 0.0,
            Some(_) if max <= min => 1.0,
            Some(v) => ((max - v) / (max - min)).clamp(0.0, 1.0),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::candidate::{Candidate, Load};
    use crate::endpoint::Role;

    pub fn with_load(address: &str, waiting: f64, kv_usage: f64) -> Candidate {
        let mut c = Candidate::new(address, Role::Decode);
        c.load = Some(Load {
            waiting,
            running: 0.0,
            kv_usage,
        });
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_is_better_normalises_and_handles_ties_and_unknowns() {
        assert_eq!(
            fewer_is_better(&[Some(0.0), Some(5.0), Some(10.0), None]),
            vec![1.0, 0.5, 0.0, 0.0]
        );
        assert_eq!(fewer_is_better(&[Some(3.0), Some(3.0)]), vec![1.0, 1.0]);
        assert_eq!(fewer_is_better(&[None, None]), vec![0.0, 0.0]);
    }

    #[test]
    fn plugin_types_round_trip() {
        for k in [
            ScorerKind::PrefixCache,
            ScorerKind::Queue,
            ScorerKind::KvCacheUtilization,
            ScorerKind::ActiveRequest,
            ScorerKind::SessionAffinity,
        ] {
            assert_eq!(ScorerKind::from_plugin_type(k.plugin_type()), Some(k));
        }
        assert_eq!(ScorerKind::from_plugin_type("decode-filter"), None);
    }
}
