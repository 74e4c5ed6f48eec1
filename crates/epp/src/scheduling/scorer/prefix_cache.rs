//! prefix-cache-scorer: the fraction of the prompt's blocks the endpoint probably
//! holds in its KV cache, from the approximate prefix index.

use crate::scheduling::candidate::{Candidate, RequestFeatures};

pub fn score(candidates: &[&Candidate], request: &RequestFeatures) -> Vec<f64> {
    candidates
        .iter()
        .map(|c| request.prefix_match(c.matched_blocks))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;

    #[test]
    fn scores_the_matched_fraction_of_blocks() {
        let mut a = Candidate::new("a", Role::Decode);
        a.matched_blocks = 3;
        let b = Candidate::new("b", Role::Decode);
        let req = RequestFeatures {
            prompt_blocks: 4,
            ..Default::default()
        };
        assert_eq!(score(&[&a, &b], &req), vec![0.75, 0.0]);
    }

    #[test]
    fn a_prompt_shorter_than_a_block_scores_zero_everywhere() {
        let a = Candidate::new("a", Role::Decode);
        assert_eq!(score(&[&a], &RequestFeatures::default()), vec![0.0]);
    }
}
