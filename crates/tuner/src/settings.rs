//! How the tuner experiments: the objective, the bounds, and the sizes and pauses
//! of its experiments.

use crate::objective::Objective;

/// How the tuner experiments.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub objective: Objective,
    pub min_weight: f64,
    pub max_weight: f64,
    /// Multiplicative step of a candidate's weight.
    pub step: f64,
    /// Requests each arm needs before a verdict.
    pub min_samples: f64,
    /// Requests per second below which nothing is explored.
    pub min_rate: f64,
    /// Relative improvement a candidate must show.
    pub margin: f64,
    /// Slices each arm runs at least.
    pub slices_per_arm: u32,
    /// Slices each arm runs at most before an experiment short of samples is abandoned.
    pub max_slices_per_arm: u32,
    /// Slices the incumbent runs alone after a verdict; doubled after each rollback
    /// in a row (a kept candidate resets it), up to `max_pause`.
    pub dwell: u32,
    /// The longest pause between experiments, in slices.
    pub max_pause: u32,
    /// A candidate whose first slice is worse than the incumbent's recent record by
    /// this share (and by more than the noise) is rolled back at once.
    pub early_stop: f64,
    /// Slices a candidate that lost rests at first (doubling each time it loses again).
    pub cooldown: u32,
    /// Pins the incumbent: no experiment.
    pub frozen: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            objective: Objective::default(),
            min_weight: 0.1,
            max_weight: 10.0,
            step: 1.5,
            min_samples: 40.0,
            min_rate: 0.5,
            margin: 0.05,
            slices_per_arm: 2,
            max_slices_per_arm: 6,
            dwell: 2,
            max_pause: 16,
            early_stop: 0.1,
            cooldown: 8,
            frozen: false,
        }
    }
}
