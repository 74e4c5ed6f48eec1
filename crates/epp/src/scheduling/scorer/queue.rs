//! queue-scorer: fewer waiting requests is better (min-max normalised across the
//! candidates; unknown load scores 0). The waiting count is the scraped one plus the
//! requests this EPP sent since that scrape (see `EndpointPicker::candidates`).

use super::fewer_is_better;
use crate::scheduling::candidate::Candidate;

pub fn score(candidates: &[&Candidate]) -> Vec<f64> {
    let waiting: Vec<Option<f64>> = candidates
        .iter()
        .map(|c| c.load.map(|l| l.waiting))
        .collect();
    fewer_is_better(&waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::Role;
    use crate::scheduling::scorer::test_support::with_load;

    #[test]
    fn shortest_queue_scores_highest() {
        let a = with_load("a", 0.0, 0.0);
        let b = with_load("b", 4.0, 0.0);
        let c = with_load("c", 2.0, 0.0);
        let unknown = Candidate::new("d", Role::Decode);
        assert_eq!(score(&[&a, &b, &c, &unknown]), vec![1.0, 0.0, 0.5, 0.0]);
    }
}
