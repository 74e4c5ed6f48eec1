//! Which weighting to try next: one scorer's weight a step up or down, ordered by
//! what the EndpointPicker's signals suggest, within the bounds, a scorer that is
//! off staying off.

use llmd_api::ScorerWeights;
use llmd_api::endpoint_picker_config::Scorer;

/// Queue imbalance ((max - min) / (mean + 1) of waiting requests) above which
/// spreading load looks worth trying first.
pub const UNEVEN: f64 = 1.0;
/// Share of prompt blocks found cached above which locality looks worth more...
pub const LOCAL: f64 = 0.3;
/// ...and above which it is already won: more prefix weight cannot find more cache,
/// while a little less of it lets load spread.
pub const SATURATED: f64 = 0.8;

/// What the EndpointPicker saw over a window, used only to order candidates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    pub queue_imbalance: Option<f64>,
    pub prefix_match: Option<f64>,
}

/// A weighting to try, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub weights: ScorerWeights,
    pub why: String,
}

fn short(scorer: Scorer) -> &'static str {
    match scorer {
        Scorer::PrefixCache => "prefix",
        Scorer::Queue => "queue",
        Scorer::KvCacheUtilization => "kv",
        Scorer::ActiveRequest => "active",
        Scorer::SessionAffinity => "session",
        Scorer::Latency => "latency",
        Scorer::LoraAffinity => "lora",
    }
}

fn set(weights: &mut ScorerWeights, scorer: Scorer, value: f64) {
    match scorer {
        Scorer::PrefixCache => weights.prefix_cache = value,
        Scorer::Queue => weights.queue = value,
        Scorer::KvCacheUtilization => weights.kv_cache_utilization = value,
        Scorer::ActiveRequest => weights.active_requests = value,
        Scorer::SessionAffinity => weights.session_affinity = value,
        Scorer::Latency => weights.latency = value,
        Scorer::LoraAffinity => weights.lora_affinity = Some(value),
    }
}

/// `prefix 3 -> 4.5, queue 2 -> 1.33`: the weights that differ.
pub fn describe_change(from: &ScorerWeights, to: &ScorerWeights) -> String {
    Scorer::ALL
        .into_iter()
        .filter(|s| (from.get(*s) - to.get(*s)).abs() > 1e-9)
        .map(|s| {
            format!(
                "{} {} -> {}",
                short(s),
                round(from.get(s)),
                round(to.get(s))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn round(w: f64) -> String {
    let r = (w * 100.0).round() / 100.0;
    format!("{r}")
}

/// Share of prompt blocks found cached under which no prompt found anything: every
/// prompt is new, the prefix scorer scores every endpoint 0 and its weight changes
/// no pick.
pub const NOTHING_FOUND: f64 = 0.01;

/// Which way a weighting leans against another: toward where contexts are (prefix,
/// session and LoRA affinity) or toward spreading load (queue, KV cache, requests in
/// flight, predicted latency). Weights are relative, so prefix 3 -> 2 and queue
/// 2 -> 3 both spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lean {
    Locality,
    Spread,
}

const LOCALITY_SCORERS: [Scorer; 3] = [
    Scorer::PrefixCache,
    Scorer::SessionAffinity,
    Scorer::LoraAffinity,
];

/// How `to` leans against `from`, by the share of weight on locality; `None` when
/// that share does not move (a scorer family off, or a change within one family).
pub fn lean(from: &ScorerWeights, to: &ScorerWeights) -> Option<Lean> {
    let share = |w: &ScorerWeights| {
        let total: f64 = Scorer::ALL.iter().map(|s| w.get(*s)).sum();
        let local: f64 = LOCALITY_SCORERS.iter().map(|s| w.get(*s)).sum();
        (total > 0.0).then(|| local / total)
    };
    let moved = share(to)? - share(from)?;
    if moved.abs() < 1e-9 {
        None
    } else if moved > 0.0 {
        Some(Lean::Locality)
    } else {
        Some(Lean::Spread)
    }
}

/// Prompts find their cache (more than [`LOCAL`] of blocks) without locality being
/// won ([`SATURATED`]).
fn finds_cache(signals: &Signals) -> bool {
    signals
        .prefix_match
        .is_some_and(|p| p > LOCAL && p < SATURATED)
}

/// Candidates around `incumbent`, best guess first. `spec` (the user's weights) is
/// offered too when the incumbent has moved away from it.
pub fn around(
    incumbent: &ScorerWeights,
    spec: &ScorerWeights,
    signals: &Signals,
    step: f64,
    min: f64,
    max: f64,
) -> Vec<Candidate> {
    let uneven = signals.queue_imbalance.is_some_and(|i| i > UNEVEN);
    let saturated = signals.prefix_match.is_some_and(|p| p >= SATURATED) && !uneven;
    let local = signals.prefix_match.is_some_and(|p| p > LOCAL) && !uneven && !saturated;
    let mut moves: Vec<(Scorer, bool)> = if uneven {
        vec![
            (Scorer::Queue, true),
            (Scorer::PrefixCache, false),
            (Scorer::KvCacheUtilization, true),
        ]
    } else if saturated {
        vec![
            (Scorer::PrefixCache, false),
            (Scorer::Queue, true),
            (Scorer::KvCacheUtilization, true),
        ]
    } else if local {
        vec![
            (Scorer::PrefixCache, true),
            (Scorer::Queue, false),
            (Scorer::KvCacheUtilization, false),
        ]
    } else {
        vec![]
    };
    for scorer in Scorer::ALL {
        for up in [true, false] {
            if !moves.contains(&(scorer, up)) {
                moves.push((scorer, up));
            }
        }
    }
    // The classic trap: while prompts find their cache but locality is not yet won,
    // less prefix weight evens queues out by sending tenants where their contexts are
    // not, and the misses outlast the experiment.
    if finds_cache(signals) {
        moves.retain(|m| *m != (Scorer::PrefixCache, false));
    }
    // Nothing to find: an experiment on the prefix weight could learn nothing, and
    // would still be in force when prompts that share contexts come back.
    if signals.prefix_match.is_some_and(|p| p < NOTHING_FOUND) {
        moves.retain(|(scorer, _)| *scorer != Scorer::PrefixCache);
    }
    let mut out: Vec<Candidate> = Vec::new();
    for (scorer, up) in moves {
        let now = incumbent.get(scorer);
        if now <= 0.0 {
            continue; // off stays off
        }
        let next = if up { now * step } else { now / step }.clamp(min, max);
        if (next - now).abs() < 1e-9 {
            continue;
        }
        let mut weights = incumbent.clone();
        set(&mut weights, scorer, next);
        let cached = signals.prefix_match.unwrap_or(0.0) * 100.0;
        let hint = if uneven {
            format!(
                "queues uneven (imbalance {:.2})",
                signals.queue_imbalance.unwrap_or(0.0)
            )
        } else if saturated {
            format!("locality won ({cached:.0}% of blocks found cached)")
        } else if local {
            format!("prompts found cached ({cached:.0}% of blocks)")
        } else {
            "next neighbour".to_string()
        };
        out.push(Candidate {
            why: format!("{hint}: try {}", describe_change(incumbent, &weights)),
            weights,
        });
    }
    if incumbent != spec {
        out.push(Candidate {
            weights: spec.clone(),
            why: format!(
                "back toward spec.router.scorers: try {}",
                describe_change(incumbent, spec)
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(prefix: f64, queue: f64, kv: f64) -> ScorerWeights {
        ScorerWeights::of(prefix, queue, kv)
    }

    /// Candidates around `weights` (also the spec) with these signals, steps of 1.5
    /// within [0.1, 10].
    fn around_with(
        weights: ScorerWeights,
        queue_imbalance: f64,
        prefix_match: f64,
    ) -> Vec<Candidate> {
        let signals = Signals {
            queue_imbalance: Some(queue_imbalance),
            prefix_match: Some(prefix_match),
        };
        around(&weights, &weights, &signals, 1.5, 0.1, 10.0)
    }

    #[test]
    fn uneven_queues_try_more_queue_weight_first_and_off_stays_off() {
        let c = around_with(w(3.0, 2.0, 0.0), 2.5, 0.9);
        assert_eq!(c[0].weights, w(3.0, 3.0, 0.0));
        assert!(c[0].why.contains("queues uneven"), "{}", c[0].why);
        assert_eq!(c[1].weights, w(2.0, 2.0, 0.0));
        assert!(c.iter().all(|c| c.weights.kv_cache_utilization == 0.0));
        assert_eq!(c.len(), 4, "two scorers on, up and down each");
    }

    #[test]
    fn while_prompts_find_their_cache_less_prefix_weight_is_never_tried() {
        for imbalance in [0.1, 2.5] {
            let c = around_with(w(3.0, 2.0, 2.0), imbalance, 0.63);
            assert!(!c.is_empty());
            assert!(
                c.iter().all(|c| c.weights.prefix_cache >= 3.0),
                "imbalance {imbalance}: {c:?}"
            );
        }
        // Uneven queues without much cache found, or with locality won: it is tried.
        for found in [0.2, 0.9] {
            let c = around_with(w(3.0, 2.0, 2.0), 2.5, found);
            assert_eq!(c[1].weights, w(2.0, 2.0, 2.0), "found {found}");
        }
    }

    #[test]
    fn when_no_prompt_finds_anything_the_prefix_weight_is_left_alone() {
        let c = around_with(w(3.0, 2.0, 2.0), 0.0, 0.0);
        assert!(!c.is_empty());
        assert!(c.iter().all(|c| c.weights.prefix_cache == 3.0), "{c:?}");
        // A little found (a low prefix weight sends prompts from their contexts):
        // more prefix weight is worth a try.
        let c = around_with(w(0.5, 2.0, 2.0), 0.0, 0.1);
        assert!(c.iter().any(|c| c.weights.prefix_cache == 0.75), "{c:?}");
    }

    #[test]
    fn when_locality_is_won_less_prefix_weight_is_tried_first() {
        let c = around_with(w(3.0, 2.0, 2.0), 0.1, 0.95);
        assert_eq!(c[0].weights, w(2.0, 2.0, 2.0));
        assert!(c[0].why.starts_with("locality won (95%"), "{}", c[0].why);
    }

    #[test]
    fn cached_prompts_on_even_queues_try_more_prefix_weight_first() {
        let c = around_with(w(3.0, 2.0, 2.0), 0.1, 0.7);
        assert_eq!(c[0].weights, w(4.5, 2.0, 2.0));
        assert_eq!(
            c[0].why,
            "prompts found cached (70% of blocks): try prefix 3 -> 4.5"
        );
    }

    #[test]
    fn bounds_hold_and_the_spec_is_offered_once_away_from_it() {
        let c = around(
            &w(10.0, 0.1, 2.0),
            &w(3.0, 2.0, 2.0),
            &Signals::default(),
            1.5,
            0.1,
            10.0,
        );
        assert!(
            c.iter()
                .all(|c| (0.1..=10.0).contains(&c.weights.prefix_cache))
        );
        assert!(
            !c.iter()
                .any(|c| c.weights.prefix_cache > 10.0 || c.weights.queue < 0.1)
        );
        assert_eq!(c.last().map(|c| &c.weights), Some(&w(3.0, 2.0, 2.0)));
    }

    #[test]
    fn less_prefix_and_more_load_weight_both_spread() {
        let at = w(3.0, 2.0, 2.0);
        assert_eq!(lean(&at, &w(2.0, 2.0, 2.0)), Some(Lean::Spread));
        assert_eq!(lean(&at, &w(3.0, 3.0, 2.0)), Some(Lean::Spread));
        assert_eq!(lean(&at, &w(3.0, 2.0, 3.0)), Some(Lean::Spread));
        assert_eq!(lean(&at, &w(4.5, 2.0, 2.0)), Some(Lean::Locality));
        assert_eq!(lean(&at, &w(3.0, 1.33, 2.0)), Some(Lean::Locality));
        // Scaling every weight changes no pick; prefix off leans nowhere.
        assert_eq!(lean(&at, &w(6.0, 4.0, 4.0)), None);
        assert_eq!(lean(&w(0.0, 2.0, 2.0), &w(0.0, 3.0, 2.0)), None);
    }

    #[test]
    fn changes_read_as_scorer_from_to() {
        assert_eq!(
            describe_change(&w(3.0, 2.0, 2.0), &w(4.5, 1.3333, 2.0)),
            "prefix 3 -> 4.5, queue 2 -> 1.33"
        );
    }
}
