//! What the tuner reports after each slice: the weights for the next one, and the
//! verdict of an experiment that ended, with its evidence.

use llmd_api::ScorerWeights;

use crate::candidates::Signals;
use crate::histogram::Histogram;

/// What one slice measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slice {
    pub seconds: f64,
    /// Time to first token of the requests that got their first token in the slice.
    pub ttft: Histogram,
    pub signals: Signals,
}

/// How an experiment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The candidate beat the incumbent and replaced it.
    Kept,
    /// The candidate did not beat the incumbent.
    RolledBack,
    /// The candidate's first slice was clearly worse than the incumbent's recent
    /// record: rolled back without running the rest of the experiment.
    StoppedEarly,
    /// Not enough requests to judge (traffic fell, or stayed too thin).
    Abandoned,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Kept,
        Outcome::RolledBack,
        Outcome::StoppedEarly,
        Outcome::Abandoned,
    ];

    /// Its name, as the operator's metric labels and Events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Kept => "Kept",
            Outcome::RolledBack => "RolledBack",
            Outcome::StoppedEarly => "StoppedEarly",
            Outcome::Abandoned => "Abandoned",
        }
    }
}

/// An experiment's end, with its evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub incumbent: ScorerWeights,
    pub candidate: ScorerWeights,
    /// The objective over the incumbent's and the candidate's slices, seconds.
    pub incumbent_score: Option<f64>,
    pub candidate_score: Option<f64>,
    /// Requests in each arm.
    pub incumbent_requests: f64,
    pub candidate_requests: f64,
    /// One sentence, in numbers.
    pub reason: String,
}

/// What the next slice runs, and anything worth recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub weights: ScorerWeights,
    /// An experiment that ended with this slice.
    pub verdict: Option<Verdict>,
    /// An experiment that starts with the next slice: why.
    pub started: Option<String>,
    /// Why nothing is being explored, when that is the case.
    pub holding: Option<String>,
}
