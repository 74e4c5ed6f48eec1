//! latency-scorer: the endpoint predicted to give the earliest first token scores 1,
//! one predicted twice as slow 0.5; an endpoint without a prediction scores 0 (all
//! score 1 when none has one, so the scorer is neutral until models exist). With
//! objectives (TTFT, time per output token), endpoints predicted to miss one score 0
//! while any is predicted to meet them all.

use crate::scheduling::candidate::{Candidate, RequestFeatures};

/// Whether `predicted` (seconds) meets the objective `slo`, if any.
fn within(predicted: Option<f64>, slo: Option<f64>) -> bool {
    match (slo, predicted) {
        (None, _) => true,
        (Some(slo), Some(p)) => p <= slo,
        (Some(_), None) => false,
    }
}

/// Whether `predicted` (seconds) meets the request's TTFT objective.
pub fn meets_ttft(predicted: Option<f64>, request: &RequestFeatures) -> bool {
    within(predicted, request.slo_ttft)
}

/// Whether `predicted` (seconds between tokens) meets the request's TPOT objective.
pub fn meets_tpot(predicted: Option<f64>, request: &RequestFeatures) -> bool {
    within(predicted, request.slo_tpot)
}

fn meets(c: &Candidate, request: &RequestFeatures) -> bool {
    meets_ttft(c.predicted_ttft, request) && meets_tpot(c.predicted_itl, request)
}

pub fn score(candidates: &[&Candidate], request: &RequestFeatures) -> Vec<f64> {
    let some_meet = candidates.iter().any(|c| meets(c, request));
    let best = candidates
        .iter()
        .filter_map(|c| c.predicted_ttft)
        .filter(|t| t.is_finite() && *t > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return vec![1.0; candidates.len()];
    }
    candidates
        .iter()
        .map(|c| match c.predicted_ttft {
            Some(_) if some_meet && !meets(c, request) => 0.0,
            Some(t) if t.is_finite() && t > 0.0 => (best / t).clamp(0.0, 1.0),
            _ => 0.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;

    fn predicted(address: &str, ttft: Option<f64>) -> Candidate {
        let mut c = Candidate::new(address, Role::Decode);
        c.predicted_ttft = ttft;
        c
    }

    #[test]
    fn the_fastest_scores_one_and_the_others_by_ratio() {
        let (a, b, c) = (
            predicted("a", Some(0.2)),
            predicted("b", Some(0.4)),
            predicted("c", None),
        );
        let none = RequestFeatures::default();
        assert_eq!(score(&[&a, &b, &c], &none), vec![1.0, 0.5, 0.0]);
    }

    #[test]
    fn with_an_objective_only_endpoints_predicted_to_meet_it_score() {
        let (a, b, c) = (
            predicted("a", Some(0.1)),
            predicted("b", Some(0.2)),
            predicted("c", Some(0.4)),
        );
        let slo = |s: f64| RequestFeatures {
            slo_ttft: Some(s),
            ..RequestFeatures::default()
        };
        assert_eq!(score(&[&a, &b, &c], &slo(0.25)), vec![1.0, 0.5, 0.0]);
        // None can meet it: plain ratios, the fastest still wins.
        assert_eq!(score(&[&a, &b, &c], &slo(0.05)), vec![1.0, 0.5, 0.25]);
        assert!(meets_ttft(Some(0.1), &slo(0.1)));
        assert!(!meets_ttft(None, &slo(0.1)));
        assert!(meets_ttft(None, &RequestFeatures::default()));
    }

    #[test]
    fn a_pod_predicted_to_decode_too_slowly_scores_nothing_while_another_keeps_pace() {
        let mut fast_start = predicted("a", Some(0.1));
        fast_start.predicted_itl = Some(0.05);
        let mut steady = predicted("b", Some(0.2));
        steady.predicted_itl = Some(0.01);
        let tpot = RequestFeatures {
            slo_tpot: Some(0.02),
            ..RequestFeatures::default()
        };
        assert_eq!(score(&[&fast_start, &steady], &tpot), vec![0.0, 0.5]);
        assert!(!meets_tpot(Some(0.05), &tpot));
        assert!(meets_tpot(None, &RequestFeatures::default()));
    }

    #[test]
    fn neutral_without_predictions_and_safe_on_nonsense() {
        let (a, b) = (predicted("a", None), predicted("b", Some(f64::NAN)));
        let none = RequestFeatures::default();
        assert_eq!(score(&[&a, &b], &none), vec![1.0, 1.0]);
        let (c, d) = (predicted("c", Some(0.0)), predicted("d", Some(0.1)));
        assert_eq!(score(&[&c, &d], &none), vec![0.0, 1.0]);
    }
}
