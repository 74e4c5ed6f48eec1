//! One experiment: its arms, and how it is judged and ended.

use super::{Resting, Tuner};
use crate::candidates::{Candidate, describe_change, lean};
use crate::histogram::Histogram;
use crate::objective::{Metric, Objective, seconds};
use crate::settings::Settings;
use crate::verdict::{Outcome, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arm {
    Incumbent,
    Candidate,
}

#[derive(Clone, Debug)]
pub(super) struct Trial {
    pub(super) candidate: Candidate,
    pub(super) running: Arm,
    pub(super) incumbent_arm: Histogram,
    pub(super) candidate_arm: Histogram,
    pub(super) incumbent_slices: u32,
    pub(super) candidate_slices: u32,
    /// Each slice in order, candidate first: adjacent slices form the pairs whose
    /// votes guard against a change of workload in the middle of the experiment.
    pub(super) slices: Vec<Histogram>,
    /// The incumbent's recent slices before the experiment began.
    pub(super) before: Histogram,
}

impl Trial {
    /// After the candidate's first slice: worse than the incumbent's recent record
    /// by the early-stop share and by more than the noise of the two means.
    pub(super) fn clearly_losing(&self, settings: &Settings) -> bool {
        if self.candidate_slices != 1 || self.incumbent_slices != 0 {
            return false;
        }
        let objective = settings.objective;
        let enough = |h: &Histogram| h.count >= settings.min_samples / 2.0;
        if !enough(&self.candidate_arm) || !enough(&self.before) {
            return false;
        }
        let (Some(before), Some(now)) = (
            objective.score(&self.before),
            objective.score(&self.candidate_arm),
        ) else {
            return false;
        };
        let noise = match objective.metric {
            Metric::MeanTtft => self
                .before
                .mean_stderr()
                .zip(self.candidate_arm.mean_stderr())
                .map(|(a, b)| (a * a + b * b).sqrt())
                .unwrap_or(f64::INFINITY),
            Metric::P90Ttft => 0.0,
        };
        now - before > (settings.early_stop * before).max(noise)
    }
}

impl Trial {
    /// After an incumbent slice: why the experiment no longer compares like with
    /// like, when the incumbent (the control: the weights it ran before) moved from
    /// its record before the experiment as far as a change of workload moves it.
    pub(super) fn workload_moved(&self, settings: &Settings, slice: &Histogram) -> Option<String> {
        if self.running != Arm::Incumbent || slice.count < settings.min_samples / 2.0 {
            return None;
        }
        let objective = settings.objective;
        let before = objective.score(&self.before)?;
        let now = objective.score(slice)?;
        (before > 0.0 && ((now - before) / before).abs() > super::SHIFT).then(|| {
            format!(
                "the workload changed mid-experiment (the incumbent's {} went {} -> {})",
                objective.name(),
                seconds(before),
                seconds(now)
            )
        })
    }
}

/// Adjacent (candidate, incumbent) slices whose loads are comparable must mostly
/// favour the candidate: a pooled win carried by one pair that straddled a change of
/// workload is not a win.
fn pairs_agree(slices: &[Histogram], objective: &Objective) -> bool {
    let votes: Vec<bool> = slices
        .chunks_exact(2)
        .filter(|pair| {
            let (c, i) = (pair[0].count, pair[1].count);
            c >= 3.0 && i >= 3.0 && (c - i).abs() <= 0.5 * c.max(i)
        })
        .filter_map(|pair| Some(objective.score(&pair[0])? < objective.score(&pair[1])?))
        .collect();
    let wins = votes.iter().filter(|v| **v).count();
    !votes.is_empty() && wins * 2 > votes.len()
}

impl Tuner {
    /// Keep the candidate only when it beat the incumbent by the margin and by more
    /// than twice the noise of the means.
    pub(super) fn judge(&mut self) -> Verdict {
        let Some(trial) = self.trial.as_ref() else {
            return self.end_trial(Outcome::Abandoned);
        };
        let objective = self.settings.objective;
        let (inc, cand) = (
            objective.score(&trial.incumbent_arm),
            objective.score(&trial.candidate_arm),
        );
        let noise = match objective.metric {
            Metric::MeanTtft => trial
                .incumbent_arm
                .mean_stderr()
                .zip(trial.candidate_arm.mean_stderr())
                .map(|(a, b)| 2.0 * (a * a + b * b).sqrt())
                .unwrap_or(0.0),
            Metric::P90Ttft => 0.0,
        };
        let pooled = match (inc, cand) {
            (Some(i), Some(c)) => i - c > (self.settings.margin * i).max(noise),
            _ => false,
        };
        let better = pooled && pairs_agree(&trial.slices, &objective);
        self.end_trial(if better {
            Outcome::Kept
        } else {
            Outcome::RolledBack
        })
    }

    /// The pause before the next experiment: the dwell, doubled for each rollback
    /// in a row, at most `max_pause`.
    fn pause(&self) -> u32 {
        let s = &self.settings;
        let doubled = 1u32
            .checked_shl(self.losses)
            .map_or(u32::MAX, |f| s.dwell.saturating_mul(f));
        doubled.min(s.max_pause.max(s.dwell))
    }

    /// Abandons the experiment for `why` (the workload moved under it).
    pub(super) fn abandon(&mut self, why: &str) -> Verdict {
        let mut verdict = self.end_trial(Outcome::Abandoned);
        let change = describe_change(&verdict.incumbent, &verdict.candidate);
        verdict.reason = format!("abandoned {change}: {why}");
        verdict
    }

    pub(super) fn end_trial(&mut self, outcome: Outcome) -> Verdict {
        let objective = self.settings.objective;
        let Some(trial) = self.trial.take() else {
            return Verdict {
                outcome: Outcome::Abandoned,
                incumbent: self.incumbent.clone(),
                candidate: self.incumbent.clone(),
                incumbent_score: None,
                candidate_score: None,
                incumbent_requests: 0.0,
                candidate_requests: 0.0,
                reason: "no experiment".to_string(),
            };
        };
        // Stopped early, the incumbent's evidence is its record before the experiment.
        let incumbent_arm = match outcome {
            Outcome::StoppedEarly => &trial.before,
            _ => &trial.incumbent_arm,
        };
        let (inc, cand) = (
            objective.score(incumbent_arm),
            objective.score(&trial.candidate_arm),
        );
        let (ni, nc) = (incumbent_arm.count, trial.candidate_arm.count);
        let change = describe_change(&self.incumbent, &trial.candidate.weights);
        let fmt = |s: Option<f64>| s.map_or("n/a".to_string(), seconds);
        let reason = match outcome {
            Outcome::Kept => format!(
                "{} {} -> {} over {:.0} requests after {change}",
                objective.name(),
                fmt(inc),
                fmt(cand),
                ni + nc
            ),
            Outcome::RolledBack => format!(
                "kept the incumbent: {change} gave {} {} vs {} over {:.0} requests",
                objective.name(),
                fmt(cand),
                fmt(inc),
                ni + nc
            ),
            Outcome::StoppedEarly => format!(
                "kept the incumbent: {change} gave {} {} over {:.0} requests vs {} over the {:.0} before it",
                objective.name(),
                fmt(cand),
                nc,
                fmt(inc),
                ni
            ),
            Outcome::Abandoned => format!(
                "abandoned {change}: {:.0} and {:.0} requests are too few to judge",
                ni, nc
            ),
        };
        let verdict = Verdict {
            outcome,
            incumbent: self.incumbent.clone(),
            candidate: trial.candidate.weights.clone(),
            incumbent_score: inc,
            candidate_score: cand,
            incumbent_requests: ni,
            candidate_requests: nc,
            reason,
        };
        match outcome {
            Outcome::Kept => {
                self.incumbent = trial.candidate.weights;
                self.losses = 0;
                self.resting.clear();
                self.baseline = cand;
            }
            Outcome::RolledBack | Outcome::StoppedEarly => {
                self.losses = self.losses.saturating_add(1);
                let cooldown = self
                    .resting
                    .iter()
                    .find(|r| r.weights == trial.candidate.weights)
                    .map_or(self.settings.cooldown, |r| r.cooldown.saturating_mul(2));
                self.resting
                    .retain(|r| r.weights != trial.candidate.weights);
                self.resting.push(Resting {
                    // Clearly worse at once says the direction is wrong; losing
                    // by a little says only this step is.
                    lean: (outcome == Outcome::StoppedEarly)
                        .then(|| lean(&self.incumbent, &trial.candidate.weights))
                        .flatten(),
                    weights: trial.candidate.weights,
                    slices_left: cooldown,
                    cooldown,
                });
                self.baseline = inc.or(self.baseline);
            }
            Outcome::Abandoned => {}
        }
        self.restart_record(None);
        self.dwell_left = self.pause();
        verdict
    }
}
