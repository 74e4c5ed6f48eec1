//! latency-scorer: the endpoint predicted to give the earliest first token scores 1,
//! one predicted twice as slow 0.5; an endpoint without a prediction scores 0 (all
//! score 1 when none has one, so the scorer is neutral until models exist). With a
//! TTFT objective, endpoints predicted to miss it score 0 while any is predicted to
//! meet it.

use crate::scheduling::candidate::{Candidate, RequestFeatures};

/// Whether `predicted` (seconds) meets the request's TTFT objective.
pub fn meets(predicted: Option<f64>, request: &RequestFeatures) -> bool {
    match (request.slo_ttft, predicted) {
        (None, _) => true,
        (Some(slo), Some(p)) => p <= slo,
        (Some(_), None) => false,
    }
}

pub fn score(candidates: &[&Candidate], request: &RequestFeatures) -> Vec<f64> {
    let some_meet = candidates.iter().any(|c| meets(c.predicted_ttft, request));
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
            Some(t) if some_meet && !meets(Some(t), request) => 0.0,
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
        assert!(meets(Some(0.1), &slo(0.1)));
        assert!(!meets(None, &slo(0.1)));
        assert!(meets(None, &RequestFeatures::default()));
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
