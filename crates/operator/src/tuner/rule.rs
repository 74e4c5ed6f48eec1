//! The tuning rule of the tuner: from live signals, nudge the scorer
//! weights, bounded and with hysteresis. Each change comes with one sentence that
//! explains it from the metrics.
//!
//! - Queues unbalanced (a hot pod): spreading load matters more than cache locality,
//!   so the queue weight goes up and the prefix-cache weight down.
//! - Queues balanced and the engines' prefix cache is paying off: locality matters
//!   more, so the prefix-cache weight goes up.
//! - Neither: weights drift back toward the user's `spec.router.scorers`.
//! - KV cache nearly full somewhere: the kv-cache-utilization weight goes up, so new
//!   work avoids the pod that would have to evict.
//!
//! A scorer the user turned off (weight 0) stays off; every other weight stays within
//! [minWeight, maxWeight]; changes under 5% are not made, so the EPP config does not
//! churn on noise.

use llmd_api::ScorerWeights;

/// Queue imbalance above which load spreading wins.
pub const HOT: f64 = 1.0;
/// Queue imbalance under which the fleet counts as balanced.
pub const CALM: f64 = 0.25;
/// Prefix-cache hit ratio from which locality is worth more weight.
pub const HITS_WORTH_IT: f64 = 0.3;
/// KV-cache usage of the fullest pod from which eviction pressure counts.
pub const KV_HIGH: f64 = 0.85;
/// Multiplicative step of one decision.
pub const STEP: f64 = 1.5;
/// Share of the distance to the spec's weights covered per interval when drifting back.
pub const DRIFT: f64 = 0.25;
/// Relative change below which nothing is written.
pub const HYSTERESIS: f64 = 0.05;

/// What the scheduler measured over one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Signals {
    /// Pods whose metrics were read.
    pub endpoints: usize,
    /// (max waiting - min waiting) / (mean waiting + 1) across pods.
    pub queue_imbalance: f64,
    /// KV-cache usage (0..1) of the fullest pod.
    pub max_kv_usage: f64,
    /// Prefix-cache hits / queries over the interval, when there were queries.
    pub prefix_hit_ratio: Option<f64>,
}

/// The rules of [`decide`], by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    TooFewServers,
    QueueImbalance,
    PrefixLocality,
    DriftToSpec,
    KvPressure,
}

impl Rule {
    /// The name recorded in `status.routing.rules`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooFewServers => "TooFewServers",
            Self::QueueImbalance => "QueueImbalance",
            Self::PrefixLocality => "PrefixLocality",
            Self::DriftToSpec => "DriftToSpec",
            Self::KvPressure => "KvPressure",
        }
    }
}

/// The outcome of one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub weights: ScorerWeights,
    /// The rules that fired, in order.
    pub rules: Vec<Rule>,
    /// One sentence per rule that fired.
    pub reasons: Vec<String>,
    /// Whether the weights moved by more than the hysteresis.
    pub changed: bool,
}

fn scale(weight: &mut f64, factor: f64) {
    *weight *= factor;
}

fn clamp(weight: f64, min: f64, max: f64) -> f64 {
    if weight == 0.0 {
        0.0
    } else {
        weight.clamp(min, max)
    }
}

fn moved(before: f64, after: f64) -> bool {
    (after - before).abs() > HYSTERESIS * before.abs().max(0.1)
}

/// Decide the next weights from the current ones, the spec's (`baseline`) and the signals.
pub fn decide(
    current: &ScorerWeights,
    baseline: &ScorerWeights,
    signals: &Signals,
    min: f64,
    max: f64,
) -> Decision {
    if signals.endpoints < 2 {
        return Decision {
            weights: current.clone(),
            rules: vec![Rule::TooFewServers],
            reasons: vec![format!(
                "{} model server(s) reporting metrics: nothing to balance, weights kept",
                signals.endpoints
            )],
            changed: false,
        };
    }
    let mut w = current.clone();
    let mut rules = Vec::new();
    let mut reasons = Vec::new();
    let imbalance = signals.queue_imbalance;
    match signals.prefix_hit_ratio {
        _ if imbalance > HOT => {
            scale(&mut w.queue, STEP);
            scale(&mut w.prefix_cache, 1.0 / STEP);
            rules.push(Rule::QueueImbalance);
            reasons.push(format!(
                "queues are unbalanced (imbalance {imbalance:.2} > {HOT}): queue weight up, prefix-cache weight down"
            ));
        }
        Some(hits) if imbalance < CALM && hits >= HITS_WORTH_IT => {
            scale(&mut w.prefix_cache, STEP);
            rules.push(Rule::PrefixLocality);
            reasons.push(format!(
                "queues are balanced (imbalance {imbalance:.2}) and {:.0}% of prompt tokens hit the prefix cache: prefix-cache weight up",
                hits * 100.0
            ));
        }
        _ => {
            for (weight, target) in [
                (&mut w.prefix_cache, baseline.prefix_cache),
                (&mut w.queue, baseline.queue),
                (&mut w.kv_cache_utilization, baseline.kv_cache_utilization),
            ] {
                // A step too small to be worth writing finishes the way instead.
                let next = *weight + DRIFT * (target - *weight);
                *weight = if moved(*weight, next) { next } else { target };
            }
            rules.push(Rule::DriftToSpec);
            reasons.push(format!(
                "no pressure (imbalance {imbalance:.2}, prefix hits {}): weights drift back toward spec.router.scorers",
                signals
                    .prefix_hit_ratio
                    .map_or("unknown".to_string(), |h| format!("{:.0}%", h * 100.0))
            ));
        }
    }
    if signals.max_kv_usage > KV_HIGH {
        scale(&mut w.kv_cache_utilization, STEP);
        rules.push(Rule::KvPressure);
        reasons.push(format!(
            "the fullest KV cache is {:.0}% used (> {:.0}%): kv-cache-utilization weight up",
            signals.max_kv_usage * 100.0,
            KV_HIGH * 100.0
        ));
    }
    // A scorer the user turned off stays off.
    for (weight, base) in [
        (&mut w.prefix_cache, baseline.prefix_cache),
        (&mut w.queue, baseline.queue),
        (&mut w.kv_cache_utilization, baseline.kv_cache_utilization),
    ] {
        *weight = if base == 0.0 {
            0.0
        } else {
            clamp(*weight, min, max)
        };
    }
    let changed = moved(current.prefix_cache, w.prefix_cache)
        || moved(current.queue, w.queue)
        || moved(current.kv_cache_utilization, w.kv_cache_utilization);
    Decision {
        weights: if changed { w } else { current.clone() },
        rules,
        reasons,
        changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(imbalance: f64, kv: f64, hits: Option<f64>) -> Signals {
        Signals {
            endpoints: 4,
            queue_imbalance: imbalance,
            max_kv_usage: kv,
            prefix_hit_ratio: hits,
        }
    }

    fn spec() -> ScorerWeights {
        ScorerWeights::default() // prefix 3, queue 2, kv 2
    }

    #[test]
    fn hot_queues_shift_weight_from_prefix_to_queue() {
        let d = decide(&spec(), &spec(), &signals(2.5, 0.3, Some(0.8)), 0.1, 10.0);
        assert!(d.changed);
        assert_eq!(d.rules, [Rule::QueueImbalance]);
        assert_eq!(d.weights.queue, 3.0);
        assert_eq!(d.weights.prefix_cache, 2.0);
        assert!(d.reasons[0].starts_with("queues are unbalanced (imbalance 2.50"));
    }

    #[test]
    fn balanced_queues_with_cache_hits_raise_prefix_weight() {
        let d = decide(&spec(), &spec(), &signals(0.1, 0.3, Some(0.6)), 0.1, 10.0);
        assert_eq!(d.weights.prefix_cache, 4.5);
        assert_eq!(d.weights.queue, 2.0);
        assert!(d.reasons[0].contains("60% of prompt tokens hit the prefix cache"));
    }

    #[test]
    fn full_kv_cache_raises_kv_weight() {
        let d = decide(&spec(), &spec(), &signals(0.5, 0.95, None), 0.1, 10.0);
        assert_eq!(d.weights.kv_cache_utilization, 3.0);
        assert_eq!(d.rules, [Rule::DriftToSpec, Rule::KvPressure]);
        assert!(
            d.reasons
                .iter()
                .any(|r| r.starts_with("the fullest KV cache is 95% used"))
        );
    }

    #[test]
    fn without_pressure_weights_drift_back_to_the_spec() {
        let tuned = ScorerWeights {
            prefix_cache: 7.0,
            queue: 6.0,
            ..spec()
        };
        let d = decide(&tuned, &spec(), &signals(0.5, 0.3, Some(0.1)), 0.1, 10.0);
        assert_eq!(d.weights.prefix_cache, 6.0);
        assert_eq!(d.weights.queue, 5.0);
        // Repeated, it converges to the spec and then stops changing (hysteresis).
        let mut w = tuned;
        for _ in 0..40 {
            w = decide(&w, &spec(), &signals(0.5, 0.3, Some(0.1)), 0.1, 10.0).weights;
        }
        let settled = decide(&w, &spec(), &signals(0.5, 0.3, Some(0.1)), 0.1, 10.0);
        assert!(!settled.changed);
        assert_eq!(w, spec());
    }

    #[test]
    fn weights_stay_within_bounds_and_off_scorers_stay_off() {
        let baseline = ScorerWeights {
            kv_cache_utilization: 0.0,
            ..spec()
        };
        let mut w = baseline.clone();
        for _ in 0..20 {
            w = decide(&w, &baseline, &signals(3.0, 0.99, None), 0.5, 8.0).weights;
        }
        assert_eq!(w.queue, 8.0);
        assert_eq!(w.prefix_cache, 0.5);
        assert_eq!(w.kv_cache_utilization, 0.0);
    }

    #[test]
    fn one_endpoint_changes_nothing() {
        let s = Signals {
            endpoints: 1,
            ..signals(5.0, 0.99, None)
        };
        let d = decide(&spec(), &spec(), &s, 0.1, 10.0);
        assert!(!d.changed);
        assert_eq!(d.weights, spec());
    }
}
