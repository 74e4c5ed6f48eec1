//! active-request-scorer: fewer requests in flight from this EPP is better. Unlike
//! the scraped queue, this count is exact and current, which matters between scrapes.

use super::fewer_is_better;
use crate::scheduling::candidate::Candidate;

pub fn score(candidates: &[&Candidate]) -> Vec<f64> {
    let counts: Vec<Option<f64>> = candidates
        .iter()
        .map(|c| Some(c.in_flight as f64))
        .collect();
    fewer_is_better(&counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;

    #[test]
    fn fewest_in_flight_scores_highest() {
        let mut a = Candidate::new("a", Role::Decode);
        a.in_flight = 1;
        let mut b = Candidate::new("b", Role::Decode);
        b.in_flight = 3;
        let c = Candidate::new("c", Role::Decode);
        let s = score(&[&a, &b, &c]);
        assert!((s[0] - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s[1], 0.0);
        assert_eq!(s[2], 1.0);
    }
}
