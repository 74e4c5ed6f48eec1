//! Scorers: each maps the candidates of one pick to scores in `[0, 1]`, higher is
//! better. A profile combines them as a weighted sum.

pub mod active_request;
pub mod kv_cache_utilization;
pub mod latency;
pub mod lora_affinity;
pub mod prefix_cache;
pub mod queue;
pub mod session_affinity;

use llmd_api::endpoint_picker_config::Scorer;

use crate::scheduling::candidate::{Candidate, RequestFeatures};

/// Scores of `scorer` for `candidates`, index for index.
pub fn score(scorer: Scorer, candidates: &[&Candidate], request: &RequestFeatures) -> Vec<f64> {
    match scorer {
        Scorer::PrefixCache => prefix_cache::score(candidates, request),
        Scorer::Queue => queue::score(candidates),
        Scorer::KvCacheUtilization => kv_cache_utilization::score(candidates),
        Scorer::ActiveRequest => active_request::score(candidates),
        Scorer::SessionAffinity => session_affinity::score(candidates, request),
        Scorer::Latency => latency::score(candidates, request),
        Scorer::LoraAffinity => lora_affinity::score(candidates, request),
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
    use crate::pool::endpoint::Role;
    use crate::scheduling::candidate::{Candidate, Load};

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
}
