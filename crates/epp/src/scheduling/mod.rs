//! Scheduling, as pure functions over plain values: filters, weighted scorers, the
//! max-score picker and the P/D decider. One decision is filters -> weighted scorers
//! -> max-score pick for the decode profile, then the P/D decider and, when it says
//! so, the prefill profile.

pub mod candidate;
pub mod explain;
pub mod filter;
pub mod pd_decider;
pub mod picker;
pub mod scorer;

use std::sync::Arc;

use rand::Rng;

use crate::scheduling::candidate::{Candidate, RequestFeatures};
use crate::scheduling::pd_decider::PdInputs;
use llmd_api::endpoint_picker_config::{Profile, SchedulerConfig};

/// One scorer's part in a total: its unweighted score and its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct ScorerScore {
    /// Plugin instance name (metrics label).
    pub scorer: String,
    pub score: f64,
    pub weight: f64,
}

/// A candidate that lost, with its scores (index for index with the winner's
/// [`ProfilePick::scores`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerUp {
    pub address: Arc<str>,
    pub total: f64,
    pub scores: Vec<f64>,
    pub matched_blocks: usize,
    pub predicted_ttft: Option<f64>,
    pub predicted_itl: Option<f64>,
}

/// The winner of one profile, with the scores that made it win.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfilePick {
    pub profile: String,
    pub address: Arc<str>,
    pub total: f64,
    pub scores: Vec<ScorerScore>,
    pub matched_blocks: usize,
    /// The TTFT and mean inter-token latency (seconds) its latency models
    /// predicted for the request.
    pub predicted_ttft: Option<f64>,
    pub predicted_itl: Option<f64>,
    /// Candidates scored (what the filters kept).
    pub eligible: usize,
    /// The best other candidates, best first; empty unless asked for.
    pub runners_up: Vec<RunnerUp>,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub decode: ProfilePick,
    /// Set when the request is disaggregated.
    pub prefill: Option<ProfilePick>,
    /// What the P/D decider weighed; `None` without a prefill profile.
    pub pd: Option<PdInputs>,
    /// The decider asked for a split but no prefill endpoint can hand the chosen
    /// decode endpoint its KV cache (none has its KV-compatibility value).
    pub no_compatible_prefill: bool,
}

/// Indices of the `k` highest `totals` other than `winner`, best first. Runs only
/// when an explanation is asked for.
fn best_others(totals: &[f64], winner: usize, k: usize) -> Vec<usize> {
    let mut others: Vec<usize> = (0..totals.len()).filter(|&i| i != winner).collect();
    others.sort_by(|&a, &b| totals[b].total_cmp(&totals[a]));
    others.truncate(k);
    others
}

/// Runs one profile over `candidates`, skipping `exclude`, and keeps the best
/// `runners_up` losers (0: none, and no work spent on them).
pub fn run_profile(
    profile: &Profile,
    candidates: &[Candidate],
    request: &RequestFeatures,
    exclude: Option<&str>,
    runners_up: usize,
    rng: &mut impl Rng,
) -> Option<ProfilePick> {
    // The exclusion goes first: a gate that kept only the excluded endpoint would
    // otherwise leave nothing, where the others could serve.
    let mut eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| exclude != Some(&*c.address))
        .collect();
    filter::apply(&profile.filters, &mut eligible, request);
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
    let runners_up = if runners_up == 0 {
        Vec::new()
    } else {
        best_others(&totals, winner, runners_up)
            .into_iter()
            .map(|i| RunnerUp {
                address: eligible[i].address.clone(),
                total: totals[i],
                scores: per_scorer.iter().map(|v| v[i]).collect(),
                matched_blocks: eligible[i].matched_blocks,
                predicted_ttft: eligible[i].predicted_ttft,
                predicted_itl: eligible[i].predicted_itl,
            })
            .collect()
    };
    Some(ProfilePick {
        profile: profile.name.clone(),
        address: chosen.address.clone(),
        total: totals[winner],
        scores: profile
            .scorers
            .iter()
            .zip(&per_scorer)
            .map(|(s, v)| ScorerScore {
                scorer: s.name.clone(),
                score: v[winner],
                weight: s.weight,
            })
            .collect(),
        matched_blocks: chosen.matched_blocks,
        predicted_ttft: chosen.predicted_ttft,
        predicted_itl: chosen.predicted_itl,
        eligible: eligible.len(),
        runners_up,
    })
}

/// The full decision, or `None` when no endpoint can serve decode. `runners_up`
/// losers per profile are kept for an explanation (0 for none).
pub fn schedule(
    config: &SchedulerConfig,
    candidates: &[Candidate],
    request: &RequestFeatures,
    runners_up: usize,
    rng: &mut impl Rng,
) -> Option<Decision> {
    let decode = run_profile(&config.decode, candidates, request, None, runners_up, rng)?;
    let Some(profile) = &config.prefill else {
        return Some(Decision {
            decode,
            prefill: None,
            pd: None,
            no_compatible_prefill: false,
        });
    };
    let pd = PdInputs::new(
        request.prompt_tokens,
        decode.matched_blocks * request.block_size_tokens,
        config.non_cached_tokens,
    );
    let mut no_compatible_prefill = false;
    let prefill = if pd.disaggregate() {
        // Only engines that can hand the decode engine their KV cache prefill for
        // it (during an upgrade, old and new engines are never paired).
        let kv = candidates
            .iter()
            .find(|c| c.address == decode.address)
            .and_then(|c| c.kv_compatibility.clone());
        let compatible: Vec<Candidate> = candidates
            .iter()
            .filter(|c| c.kv_compatibility == kv)
            .cloned()
            .collect();
        let pick = run_profile(
            profile,
            &compatible,
            request,
            Some(&decode.address),
            runners_up,
            rng,
        );
        no_compatible_prefill = pick.is_none()
            && compatible.len() < candidates.len()
            && run_profile(profile, candidates, request, Some(&decode.address), 0, rng).is_some();
        pick
    } else {
        None
    };
    Some(Decision {
        decode,
        prefill,
        pd: Some(pd),
        no_compatible_prefill,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;
    use crate::scheduling::candidate::Load;
    use llmd_api::endpoint_picker_config::{AffinityGate, Filter, RoleFilter};
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
            predicted_ttft: None,
            predicted_itl: None,
            kv_compatibility: None,
            lora: None,
        }
    }

    fn features(blocks: usize) -> RequestFeatures {
        RequestFeatures {
            model: String::new(),
            prompt_blocks: blocks,
            block_size_tokens: 16,
            prompt_tokens: blocks * 16,
            session_endpoint: None,
            slo_ttft: None,
            slo_tpot: None,
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
        let d = schedule(&cfg, &cands, &features(10), 0, &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "b");
        assert_eq!(
            d.decode.scores[0],
            ScorerScore {
                scorer: "prefix-cache-scorer".to_string(),
                score: 0.8,
                weight: 3.0
            }
        );
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
        let d = schedule(&cfg, &cands, &features(10), 0, &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "a");
    }

    #[test]
    fn no_decode_capable_endpoint_means_no_decision() {
        let cfg = SchedulerConfig::default_config();
        let cands = [cand("p", Role::Prefill, 0.0, 0)];
        let mut rng = StdRng::seed_from_u64(3);
        assert!(schedule(&cfg, &cands, &features(1), 0, &mut rng).is_none());
    }

    fn pd_config(threshold: usize) -> SchedulerConfig {
        let mut cfg = SchedulerConfig::default_config();
        let mut prefill = cfg.decode.clone();
        prefill.name = "prefill".into();
        prefill.filters = vec![Filter::Role(RoleFilter::Prefill)];
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
        let d = schedule(&pd_config(64), &cands, &features(10), 0, &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "d");
        assert_eq!(
            d.prefill.map(|p| p.address.to_string()),
            Some("p".to_string())
        );
    }

    #[test]
    fn prefill_is_paired_only_with_a_kv_compatible_decode_endpoint() {
        let kv = |mut c: Candidate, v: &str| {
            c.kv_compatibility = Some(Arc::from(v));
            c
        };
        // Mid-upgrade: the old prefill pod is idle, the new one busy.
        let cands = [
            kv(cand("d-new", Role::Decode, 0.0, 0), "new"),
            kv(cand("p-old", Role::Prefill, 0.0, 0), "old"),
            kv(cand("p-new", Role::Prefill, 9.0, 0), "new"),
        ];
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let d = schedule(&pd_config(64), &cands, &features(10), 0, &mut rng).expect("decision");
            assert_eq!(
                d.prefill.map(|p| p.address.to_string()).as_deref(),
                Some("p-new")
            );
            assert!(!d.no_compatible_prefill);
        }
        // Only the old prefill pod is left: served aggregated, and said why.
        let mut rng = StdRng::seed_from_u64(3);
        let d =
            schedule(&pd_config(64), &cands[..2], &features(10), 0, &mut rng).expect("decision");
        assert!(d.prefill.is_none());
        assert!(d.no_compatible_prefill);
        // No prefill endpoint at all is not an incompatibility.
        let d =
            schedule(&pd_config(64), &cands[..1], &features(10), 0, &mut rng).expect("decision");
        assert!(d.prefill.is_none() && !d.no_compatible_prefill);
    }

    #[test]
    fn cached_prompts_and_short_prompts_stay_aggregated() {
        let cands = [
            cand("d", Role::Decode, 0.0, 9),
            cand("p", Role::Prefill, 0.0, 0),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&pd_config(64), &cands, &features(10), 0, &mut rng).expect("decision");
        assert!(d.prefill.is_none(), "16 uncached tokens < 64");
        let fresh = [
            cand("d", Role::Decode, 0.0, 0),
            cand("p", Role::Prefill, 0.0, 0),
        ];
        let d = schedule(&pd_config(64), &fresh, &features(2), 0, &mut rng).expect("decision");
        assert!(d.prefill.is_none(), "32 tokens < 64");
    }

    #[test]
    fn a_both_endpoint_is_never_its_own_prefiller() {
        let cands = [cand("b", Role::Both, 0.0, 0)];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&pd_config(1), &cands, &features(10), 0, &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "b");
        assert!(d.prefill.is_none());
    }

    #[test]
    fn runners_up_are_the_best_losers_best_first_and_only_when_asked() {
        let cfg = SchedulerConfig::default_config();
        let cands = [
            cand("a", Role::Decode, 4.0, 0),
            cand("b", Role::Decode, 0.0, 9),
            cand("c", Role::Decode, 0.0, 0),
            cand("d", Role::Decode, 0.0, 5),
            cand("e", Role::Decode, 2.0, 0),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&cfg, &cands, &features(10), 3, &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "b");
        assert_eq!(d.decode.eligible, 5);
        let losers: Vec<&str> = d.decode.runners_up.iter().map(|r| &*r.address).collect();
        assert_eq!(losers, ["d", "c", "e"]);
        let d_scores = &d.decode.runners_up[0].scores;
        assert_eq!(d_scores.len(), 3);
        assert_eq!(d_scores[0], 0.5, "d's prefix-cache score");
        let d = schedule(&cfg, &cands, &features(10), 0, &mut rng).expect("decision");
        assert!(d.decode.runners_up.is_empty());
    }

    #[test]
    fn the_pd_inputs_are_kept_with_the_decision() {
        let cands = [
            cand("d", Role::Decode, 0.0, 2),
            cand("p", Role::Prefill, 0.0, 0),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&pd_config(64), &cands, &features(10), 0, &mut rng).expect("decision");
        assert_eq!(
            d.pd,
            Some(PdInputs {
                uncached_tokens: 128,
                threshold: 64
            })
        );
        let aggregated = SchedulerConfig::default_config();
        let d = schedule(&aggregated, &cands, &features(10), 0, &mut rng).expect("decision");
        assert_eq!(d.pd, None);
    }

    #[test]
    fn a_gate_holding_only_the_decoder_leaves_the_other_prefillers_to_prefill() {
        let mut cfg = pd_config(16);
        let gate = Filter::PrefixCacheAffinity(AffinityGate::default());
        if let Some(prefill) = cfg.prefill.as_mut() {
            prefill.filters.push(gate);
        }
        // "b" serves both roles and holds the whole prompt; "p" holds none.
        let mut both = cand("b", Role::Both, 0.0, 10);
        both.load = None;
        let cands = [both, cand("p", Role::Prefill, 0.0, 0)];
        let features = RequestFeatures {
            prompt_tokens: 400,
            ..features(10)
        };
        let mut rng = StdRng::seed_from_u64(3);
        let d = schedule(&cfg, &cands, &features, 0, &mut rng).expect("decision");
        assert_eq!(&*d.decode.address, "b");
        assert_eq!(
            d.prefill.map(|p| p.address.to_string()).as_deref(),
            Some("p")
        );
    }
}
