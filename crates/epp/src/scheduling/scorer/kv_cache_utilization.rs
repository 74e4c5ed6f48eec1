//! kv-cache-utilization-scorer: `1 - usage`, so servers with free KV cache win.

use crate::scheduling::candidate::Candidate;

pub fn score(candidates: &[&Candidate]) -> Vec<f64> {
    candidates
        .iter()
        .map(|c| c.load.map_or(0.0, |l| (1.0 - l.kv_usage).clamp(0.0, 1.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;
    use crate::scheduling::scorer::test_support::with_load;

    #[test]
    fn free_cache_scores_higher_and_unknown_scores_zero() {
        let a = with_load("a", 0.0, 0.25);
        let b = with_load("b", 0.0, 1.0);
        let c = Candidate::new("c", Role::Decode);
        assert_eq!(score(&[&a, &b, &c]), vec![0.75, 0.0, 0.0]);
    }
}
