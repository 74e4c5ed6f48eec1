//! Scheduling, as pure functions over plain values: role filters, weighted scorers,
//! the max-score picker and the P/D decider. One decision is filter -> weighted
//! scorers -> max-score pick for the decode profile, then the P/D decider and, when
//! it says so, the prefill profile.

pub mod candidate;
pub mod filter;
pub mod pd_decider;
pub mod picker;
pub mod scorer;

use std::sync::Arc;

use rand::Rng;

use crate::scheduling::candidate::{Candidate, RequestFeatures};
use llmd_api::endpoint_picker_config::{Profile, SchedulerConfig};

/// The winner of one profile, with the scores that made it win.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfilePick {
    pub profile: String,
    pub address: Arc<str>,
    pub total: f64,
    /// (scorer name, unweighted score of the winner).
    pub scores: Vec<(String, f64)>,
    pub matched_blocks: usize,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub decode: ProfilePick,
    /// Set when the request is disaggregated.
    pub prefill: Option<ProfilePick>,
}

/// Runs one profile over `candidates`, skipping `exclude`.
pub fn run_profile(
    profile: &Profile,
    candidates: &[Candidate],
    request: &RequestFeatures,
    exclude: Option<&str>,
    rng: &mut impl Rng,
) -> Option<ProfilePick> {
    let eligible: Vec<&Candidate> = filter::apply(&profile.filters, candidates)
        .into_iter()
        .filter(|c| exclude != Some(&*c.address))
        .collect();
    if eligible.is_empty() {
        return None;
    }
    let per_scorer: Vec<Vec<f64>> = profile
        .scorers
        .iter()
        .map(|s| scorer::score(s.kind, &eligible, request))
        .collect();
    let totals: Vec<f64> = (0..eligible.len())
        .map(|i| {
            profile
                .scorers
                .iter()
                .zip(&per_scorer)
                .map(|(s, v)| s.weight * v[i])
                .sum()
        })
        .collect();
    let winner = picker::pick_max(&totals, rng)?;
    let chosen = eligible[winner];
    Some(ProfilePick {
        profile: profile.name.clone(),
        address: chosen.address.clone(),
        total: totals[winner],
        scores: profile
            .scorers
            .iter()
            .zip(&per_scorer)
            .map(|(s, v)| (s.name.clone(), v[winner]))
            .collect(),
        matched_blocks: chosen.matched_blocks,
    })
}

/// The full decision, or `None` when no endpoint can serve decode.
pub fn schedule(
    config: &SchedulerConfig,
    candidates: &[Candidate],
    request: &RequestFeatures,
    rng: &mut impl Rng,
) -> Option<Decision> {
    let decode = run_profile(&config.decode, candidates, request, None, rng)?;
    let prefill = match &config.prefill {
        Some(profile) => {
            let cached = decode.matched_blocks * request.block_size_tokens;
            if pd_decider::should_disaggregate(
                request.prompt_tokens,
                cached,
                config.non_cached_tokens,
            ) {
                run_profile(profile, candidates, request, Some(&decode.address), rng)
            } else {
                None
            }
        }
        None => None,
    };
    Some(Decision { decode, prefill })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;
    use crate::scheduling::candidate::Load;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn cand(addr: &str, role: Role, waiting: f64, matched: usize) -> Candidate {
        Candidate {
            address: Arc::from(addr),
            role,
            load: Some(Load {
                waiting,
                running: 0.0,
                kv_usage: 0.1,
            }),
            in_flight: 0,
            matched_blocks: matched,
        }
    }

    fn features(blocks: usize) -> RequestFeatures {
        RequestFeatures {
            prompt_blocks: blocks,
            block_size_tokens: 16,
            prompt_tokens: blocks * 16,
            session_endpoint: None,
        }
    }

    #[test]
    fn the_prefix_holder_wins_over_an_equally_loaded_peer() {
        let cfg = SchedulerConfig::default_config();
        let cands = [
            cand("a", Role::Decode, 1.0, 0),
            cand("b", Role::Decode, 1.0, 8),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&cfg, &cands, &features(10), &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "b");
        assert_eq!(d.decode.scores[0], ("prefix-cache-scorer".to_string(), 0.8));
        assert!(d.prefill.is_none());
    }

    #[test]
    fn a_deep_queue_outweighs_a_small_prefix_match() {
        let cfg = SchedulerConfig::default_config();
        let cands = [
            cand("a", Role::Decode, 0.0, 0),
            cand("b", Role::Decode, 20.0, 1),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&cfg, &cands, &features(10), &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "a");
    }

    #[test]
    fn no_decode_capable_endpoint_means_no_decision() {
        let cfg = SchedulerConfig::default_config();
        let cands = [cand("p", Role::Prefill, 0.0, 0)];
        let mut rng = StdRng::seed_from_u64(3);
        assert!(schedule(&cfg, &cands, &features(1), &mut rng).is_none());
    }

    fn pd_config(threshold: usize) -> SchedulerConfig {
        let mut cfg = SchedulerConfig::default_config();
        let mut prefill = cfg.decode.clone();
        prefill.name = "prefill".into();
        prefill.filters = vec![llmd_api::endpoint_picker_config::RoleFilter::Prefill];
        cfg.decode.name = "decode".into();
        cfg.prefill = Some(prefill);
        cfg.non_cached_tokens = threshold;
        cfg
    }

    #[test]
    fn long_uncached_prompts_are_disaggregated_to_a_prefill_endpoint() {
        let cands = [
            cand("d", Role::Decode, 0.0, 0),
            cand("p", Role::Prefill, 0.0, 0),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&pd_config(64), &cands, &features(10), &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "d");
        assert_eq!(
            d.prefill.map(|p| p.address.to_string()),
            Some("p".to_string())
        );
    }

    #[test]
    fn cached_prompts_and_short_prompts_stay_aggregated() {
        let cands = [
            cand("d", Role::Decode, 0.0, 9),
            cand("p", Role::Prefill, 0.0, 0),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&pd_config(64), &cands, &features(10), &mut rng).expect("decision");
        assert!(d.prefill.is_none(), "16 uncached tokens < 64");
        let fresh = [
            cand("d", Role::Decode, 0.0, 0),
            cand("p", Role::Prefill, 0.0, 0),
        ];
        let d = schedule(&pd_config(64), &fresh, &features(2), &mut rng).expect("decision");
        assert!(d.prefill.is_none(), "32 tokens < 64");
    }

    #[test]
    fn a_both_endpoint_is_never_its_own_prefiller() {
        let cands = [cand("b", Role::Both, 0.0, 0)];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&pd_config(1), &cands, &features(10), &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "b");
        assert!(d.prefill.is_none());
    }
}
