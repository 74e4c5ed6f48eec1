//! max-score-picker: the highest total wins; equal totals are broken at random so
//! that idle, equally good endpoints share the load.

use rand::Rng;

/// Scores closer than this count as equal.
const TIE: f64 = 1e-9;

/// Index of the highest score, ties broken uniformly at random. `None` if empty.
pub fn pick_max(scores: &[f64], rng: &mut impl Rng) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut ties = 0u32;
    for (i, &s) in scores.iter().enumerate() {
        match best {
            None => {
                best = Some(i);
                ties = 1;
            }
            Some(b) if s > scores[b] + TIE => {
                best = Some(i);
                ties = 1;
            }
            Some(b) if (s - scores[b]).abs() <= TIE => {
                ties += 1;
                // Reservoir sampling: each tied index ends up chosen with p = 1/ties.
                if rng.random_range(0..ties) == 0 {
                    best = Some(i);
                }
            }
            Some(_) => {}
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_highest_score_wins() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(pick_max(&[0.1, 0.9, 0.5], &mut rng), Some(1));
        assert_eq!(pick_max(&[], &mut rng), None);
    }

    #[test]
    fn ties_are_broken_at_random_over_all_tied() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            let i = pick_max(&[1.0, 0.2, 1.0, 1.0], &mut rng).expect("non-empty");
            seen[i] += 1;
        }
        assert_eq!(seen[1], 0);
        for i in [0, 2, 3] {
            assert!(seen[i] > 1000, "index {i} chosen {} times", seen[i]);
        }
    }
}
