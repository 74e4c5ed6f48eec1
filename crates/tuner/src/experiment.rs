//! The tuner's experiments. Time is cut into slices (the autoTune interval; shorter
//! in a benchmark). Between experiments the incumbent weighting runs. An experiment
//! alternates slices of a candidate weighting and the incumbent (a switchback, so a
//! change in the workload hits both arms alike) until each arm has enough requests,
//! then keeps the candidate only if its objective beat the incumbent's by more than
//! the margin and the noise; otherwise it rolls back and that candidate rests, for
//! longer each time it loses, so stationary load never flip-flops.
//!
//! Exploring costs what a worse candidate costs, so it is kept cheap: an experiment
//! starts only once the incumbent's recent record has settled (not while caches warm
//! or just after a change of workload), a candidate whose first slice is clearly
//! worse than that record is rolled back at once, and each rollback in a row doubles
//! the pause before the next experiment. A candidate that lost rests; one stopped
//! early rests with every candidate that leans the same way (toward locality or
//! toward spreading load: weights are relative, so prefix 3 -> 2 and queue 2 -> 3 are
//! much the same move). Rests outlast a change of workload, so a workload that comes
//! back (calm, surge, calm) does not pay twice for the same loss. An experiment whose
//! incumbent slices (its control) move as far as a change of workload does is
//! abandoned, not judged. After a verdict or a change of workload the incumbent's
//! record starts again. Quiet traffic, a met target or the `frozen` switch mean no
//! experiment at all.

mod trial;

use std::collections::VecDeque;

use llmd_api::ScorerWeights;

use crate::candidates::{self, Lean};
use crate::histogram::Histogram;
use crate::objective::seconds;
use crate::settings::Settings;
use crate::verdict::{Outcome, Slice, Step, Verdict};
use trial::{Arm, Trial};

/// A candidate that lost: passed over (when `lean` is set, with every candidate
/// leaning its way against the same incumbent) at the next `slices_left` chances to
/// explore (slices with no experiment or pause); `cooldown` is kept after that, so
/// losing again rests it twice as long.
#[derive(Clone, Debug)]
struct Resting {
    weights: ScorerWeights,
    lean: Option<Lean>,
    slices_left: u32,
    cooldown: u32,
}

/// The tuner of one deployment.
#[derive(Clone, Debug)]
pub struct Tuner {
    settings: Settings,
    spec: ScorerWeights,
    incumbent: ScorerWeights,
    trial: Option<Trial>,
    dwell_left: u32,
    /// Experiments rolled back in a row: each doubles the pause before the next.
    losses: u32,
    /// Slices spent waiting for the incumbent's latency to settle.
    waited: u32,
    resting: Vec<Resting>,
    /// The incumbent's last slices, to notice the workload changing.
    recent: VecDeque<Histogram>,
    /// The incumbent's objective when last judged, to compare `recent` with.
    baseline: Option<f64>,
    /// The last slice already looked like a new workload.
    shifting: bool,
}

/// Slices of the incumbent the change detector looks at.
const RECENT: usize = 4;
/// Relative change of the incumbent's objective that counts as a new workload, when
/// seen twice in a row (slice-to-slice noise of bursty traffic is well under it).
const SHIFT: f64 = 0.5;
/// Relative difference between the older and newer halves of the incumbent's recent
/// slices under which its record counts as settled.
const SETTLED: f64 = 0.2;
/// Slices an experiment waits at most for the incumbent's record to settle.
const MAX_SETTLE_WAIT: u32 = RECENT as u32;

impl Tuner {
    /// A tuner whose incumbent is `incumbent` (the weights in force), for a deployment
    /// whose spec asks for `spec`.
    pub fn new(settings: Settings, spec: ScorerWeights, incumbent: ScorerWeights) -> Tuner {
        Tuner {
            dwell_left: settings.dwell,
            losses: 0,
            waited: 0,
            settings,
            spec,
            incumbent,
            trial: None,
            resting: Vec::new(),
            recent: VecDeque::new(),
            baseline: None,
            shifting: false,
        }
    }

    /// The weighting experiments compare against.
    pub fn incumbent(&self) -> &ScorerWeights {
        &self.incumbent
    }

    /// The weights that should be in force now.
    pub fn in_force(&self) -> &ScorerWeights {
        match &self.trial {
            Some(t) if t.running == Arm::Candidate => &t.candidate.weights,
            _ => &self.incumbent,
        }
    }

    /// New settings or spec (the user edited autoTune or the scorers). A trial in
    /// progress goes on; a frozen tuner drops it.
    pub fn reconfigure(&mut self, settings: Settings, spec: ScorerWeights) {
        if settings.frozen {
            self.trial = None;
        }
        self.settings = settings;
        self.spec = spec;
    }

    /// Takes the slice that just ended; returns what the next one runs.
    pub fn step(&mut self, slice: &Slice) -> Step {
        let rate = if slice.seconds > 0.0 {
            slice.ttft.count / slice.seconds
        } else {
            0.0
        };
        if self.settings.frozen {
            return self.hold("frozen: the weights are pinned".to_string());
        }
        if let Some(trial) = self.trial.as_mut() {
            let (arm, slices) = match trial.running {
                Arm::Incumbent => (&mut trial.incumbent_arm, &mut trial.incumbent_slices),
                Arm::Candidate => (&mut trial.candidate_arm, &mut trial.candidate_slices),
            };
            arm.add(&slice.ttft);
            *slices += 1;
            trial.slices.push(slice.ttft.clone());
            if let Some(why) = trial.workload_moved(&self.settings, &slice.ttft) {
                let verdict = self.abandon(&why);
                return self.concluded(verdict);
            }
            if trial.clearly_losing(&self.settings) {
                let verdict = self.end_trial(Outcome::StoppedEarly);
                return self.concluded(verdict);
            }
            if rate < self.settings.min_rate {
                let verdict = self.end_trial(Outcome::Abandoned);
                return Step {
                    weights: self.incumbent.clone(),
                    verdict: Some(verdict),
                    started: None,
                    holding: Some(format!(
                        "{rate:.2} requests/s is under the floor of {}: nothing explored",
                        self.settings.min_rate
                    )),
                };
            }
            return self.advance_trial();
        }
        self.observe_incumbent(&slice.ttft);
        if rate < self.settings.min_rate {
            return self.hold(format!(
                "{rate:.2} requests/s is under the floor of {}: nothing explored",
                self.settings.min_rate
            ));
        }
        if self.dwell_left > 0 {
            self.dwell_left -= 1;
            return self.hold("dwelling after the last change".to_string());
        }
        if let Some(score) = self.recent_score()
            && self.settings.objective.met(score)
        {
            return self.hold(format!(
                "{} {} meets the target",
                self.settings.objective.name(),
                seconds(score)
            ));
        }
        match self.unsettled() {
            // Latency that keeps moving (noisy traffic) waits a while, not forever.
            Some(why) if self.waited < MAX_SETTLE_WAIT => {
                self.waited += 1;
                return self.hold(why);
            }
            _ => self.waited = 0,
        }
        // Rest is counted in chances to explore, so a long pause does not use it up.
        self.tick_resting();
        let next = candidates::around(
            &self.incumbent,
            &self.spec,
            &slice.signals,
            self.settings.step,
            self.settings.min_weight,
            self.settings.max_weight,
        )
        .into_iter()
        .find(|c| !self.rests(&c.weights));
        match next {
            Some(candidate) => {
                let why = candidate.why.clone();
                self.trial = Some(Trial {
                    candidate,
                    running: Arm::Candidate,
                    incumbent_arm: Histogram::default(),
                    candidate_arm: Histogram::default(),
                    incumbent_slices: 0,
                    candidate_slices: 0,
                    slices: Vec::new(),
                    before: self.pooled_recent(),
                });
                Step {
                    weights: self.in_force().clone(),
                    verdict: None,
                    started: Some(why),
                    holding: None,
                }
            }
            None => self
                .hold("nothing to try: every neighbour rests or could change no pick".to_string()),
        }
    }

    /// The next slice after `verdict`: the incumbent.
    fn concluded(&self, verdict: Verdict) -> Step {
        Step {
            weights: self.incumbent.clone(),
            verdict: Some(verdict),
            started: None,
            holding: None,
        }
    }

    fn hold(&self, why: String) -> Step {
        Step {
            weights: self.incumbent.clone(),
            verdict: None,
            started: None,
            holding: Some(why),
        }
    }

    /// Whether `weights` rest: they lost lately, or lean the way a loser did.
    fn rests(&self, weights: &ScorerWeights) -> bool {
        let lean = candidates::lean(&self.incumbent, weights);
        self.resting.iter().any(|r| {
            r.slices_left > 0 && (r.weights == *weights || (r.lean.is_some() && r.lean == lean))
        })
    }

    /// Starts the incumbent's record again from `window` (or from nothing): after a
    /// verdict the slices before the experiment no longer describe it, and after a
    /// change of workload those of the old workload do not.
    pub(super) fn restart_record(&mut self, window: Option<&Histogram>) {
        self.recent = window.cloned().into_iter().collect();
        self.shifting = false;
        self.waited = 0;
    }

    fn tick_resting(&mut self) {
        for r in &mut self.resting {
            r.slices_left = r.slices_left.saturating_sub(1);
        }
    }

    /// Tracks the incumbent's objective; a clear shift means a new workload, whose
    /// record starts with the slice that confirmed it.
    fn observe_incumbent(&mut self, window: &Histogram) {
        self.recent.push_back(window.clone());
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        let Some(now) = self.recent_score() else {
            return;
        };
        match self.baseline {
            Some(base) if base > 0.0 && ((now - base) / base).abs() > SHIFT => {
                if std::mem::replace(&mut self.shifting, true) {
                    self.restart_record(Some(window));
                    self.baseline = self.recent_score();
                }
            }
            None => self.baseline = Some(now),
            Some(_) => self.shifting = false,
        }
    }

    /// Why the incumbent's record is not yet one to compare with: too short, or its
    /// older and newer halves disagree (caches still warming, or a change of
    /// workload still in the window). Experiments wait for it, so the first slice of
    /// a candidate can be judged against it.
    fn unsettled(&self) -> Option<String> {
        if self.recent.len() < RECENT {
            return Some("recording the incumbent".to_string());
        }
        let half = |hs: &[Histogram]| {
            let mut pooled = Histogram::default();
            for h in hs {
                pooled.add(h);
            }
            (pooled.count >= self.settings.min_samples / 2.0)
                .then(|| self.settings.objective.score(&pooled))
                .flatten()
        };
        let slices: Vec<Histogram> = self.recent.iter().cloned().collect();
        let (older, newer) = slices.split_at(RECENT / 2);
        let (Some(older), Some(newer)) = (half(older), half(newer)) else {
            return Some("recording the incumbent".to_string());
        };
        let moved = (newer - older) / older.max(newer).max(f64::MIN_POSITIVE);
        (moved.abs() > SETTLED).then(|| {
            format!(
                "waiting for the incumbent to settle: {} {} -> {}",
                self.settings.objective.name(),
                seconds(older),
                seconds(newer)
            )
        })
    }

    fn pooled_recent(&self) -> Histogram {
        let mut pooled = Histogram::default();
        for h in &self.recent {
            pooled.add(h);
        }
        pooled
    }

    fn recent_score(&self) -> Option<f64> {
        let pooled = self.pooled_recent();
        (pooled.count >= self.settings.min_samples)
            .then(|| self.settings.objective.score(&pooled))
            .flatten()
    }

    fn advance_trial(&mut self) -> Step {
        let s = &self.settings;
        let Some(trial) = self.trial.as_mut() else {
            return self.hold("no experiment".to_string());
        };
        let enough_slices = trial.incumbent_slices >= s.slices_per_arm
            && trial.candidate_slices >= s.slices_per_arm;
        let enough_samples = trial.incumbent_arm.count >= s.min_samples
            && trial.candidate_arm.count >= s.min_samples;
        if enough_slices && enough_samples {
            let verdict = self.judge();
            return self.concluded(verdict);
        }
        if trial.incumbent_slices >= s.max_slices_per_arm
            && trial.candidate_slices >= s.max_slices_per_arm
        {
            let verdict = self.end_trial(Outcome::Abandoned);
            return self.concluded(verdict);
        }
        trial.running = match trial.running {
            Arm::Incumbent => Arm::Candidate,
            Arm::Candidate => Arm::Incumbent,
        };
        Step {
            weights: self.in_force().clone(),
            verdict: None,
            started: None,
            holding: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidates::Signals;
    use crate::objective::{Metric, Objective};

    fn w(prefix: f64, queue: f64, kv: f64) -> ScorerWeights {
        ScorerWeights::of(prefix, queue, kv)
    }

    /// `n` requests in one second, all with TTFT `mean` (buckets 10% apart).
    fn slice(mean: f64, n: f64) -> Slice {
        let mut buckets = Vec::new();
        let mut bound = 0.001;
        while bound < 100.0 {
            buckets.push((bound, if bound >= mean { n } else { 0.0 }));
            bound *= 1.1;
        }
        buckets.push((f64::INFINITY, n));
        Slice {
            seconds: 1.0,
            ttft: Histogram {
                buckets,
                sum: mean * n,
                count: n,
            },
            signals: Signals::default(),
        }
    }

    /// Runs `slices` slices of a world whose TTFT depends on the weights in force.
    fn run(tuner: &mut Tuner, slices: usize, world: impl Fn(&ScorerWeights) -> f64) -> Vec<Step> {
        (0..slices)
            .map(|_| {
                let ttft = world(tuner.in_force());
                tuner.step(&slice(ttft, 50.0))
            })
            .collect()
    }

    /// A tuner at the default weights, fed slices of `ttft` until its first
    /// experiment starts.
    fn experimenting_at(ttft: f64) -> Tuner {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        while tuner.step(&slice(ttft, 50.0)).started.is_none() {}
        tuner
    }

    fn kept(steps: &[Step]) -> Vec<&Verdict> {
        steps
            .iter()
            .filter_map(|s| s.verdict.as_ref())
            .filter(|v| v.outcome == Outcome::Kept)
            .collect()
    }

    #[test]
    fn a_candidate_that_lowers_ttft_is_kept_with_its_evidence_in_numbers() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        // More prefix weight helps up to 6.75; every other move hurts.
        let world = |x: &ScorerWeights| {
            0.4 - 0.02 * x.prefix_cache.min(6.75)
                + 0.01 * (x.queue - 2.0).abs()
                + 0.01 * (x.kv_cache_utilization - 2.0).abs()
        };
        let steps = run(&mut tuner, 80, world);
        let kept = kept(&steps);
        assert!(!kept.is_empty());
        assert_eq!(
            kept[0].reason,
            "TTFT mean 340 ms -> 310 ms over 200 requests after prefix 3 -> 4.5"
        );
        assert_eq!(
            tuner.incumbent().prefix_cache,
            6.75,
            "climbed to the optimum"
        );
        assert_eq!(tuner.incumbent().queue, 2.0);
    }

    #[test]
    fn stationary_load_at_the_optimum_never_flip_flops_and_explores_less_and_less() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        // The spec's weights are best: any move costs 10%.
        let world = |x: &ScorerWeights| if *x == w(3.0, 2.0, 2.0) { 0.30 } else { 0.33 };
        let steps = run(&mut tuner, 400, world);
        assert!(kept(&steps).is_empty(), "nothing worse is ever kept");
        assert_eq!(tuner.incumbent(), &w(3.0, 2.0, 2.0));
        let trials = |range: std::ops::Range<usize>| {
            steps[range].iter().filter(|s| s.started.is_some()).count()
        };
        assert!(
            trials(200..400) < trials(0..200),
            "rejected candidates rest longer each time: {} then {}",
            trials(0..200),
            trials(200..400)
        );
    }

    /// Slices held between each verdict and the next experiment's start.
    fn pauses(steps: &[Step]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut since: Option<usize> = None;
        for (i, s) in steps.iter().enumerate() {
            if s.verdict.is_some() {
                since = Some(i);
            } else if s.started.is_some()
                && let Some(v) = since.take()
            {
                out.push(i - v - 1);
            }
        }
        out
    }

    #[test]
    fn a_clearly_worse_candidate_is_stopped_after_its_first_slice() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        let world = |x: &ScorerWeights| if *x == w(3.0, 2.0, 2.0) { 0.30 } else { 0.40 };
        let steps = run(&mut tuner, 12, world);
        let start = steps
            .iter()
            .position(|s| s.started.is_some())
            .expect("explores");
        let verdict = steps[start + 1].verdict.as_ref().expect("stopped at once");
        assert_eq!(verdict.outcome, Outcome::StoppedEarly);
        assert_eq!(
            verdict.reason,
            "kept the incumbent: prefix 3 -> 4.5 gave TTFT mean 400 ms over 50 requests \
             vs 300 ms over the 200 before it"
        );
        assert_eq!(steps[start + 1].weights, w(3.0, 2.0, 2.0));
    }

    #[test]
    fn experiments_wait_until_the_incumbents_ttft_settles() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        // Caches warming: TTFT falls for five slices, then holds.
        for ttft in [0.9, 0.8, 0.7, 0.6, 0.5] {
            let step = tuner.step(&slice(ttft, 50.0));
            assert!(step.started.is_none(), "explored while warming at {ttft}");
        }
        let holding = tuner.step(&slice(0.5, 50.0)).holding.unwrap_or_default();
        assert!(
            holding.starts_with("waiting for the incumbent to settle: TTFT mean"),
            "{holding}"
        );
        let step = tuner.step(&slice(0.5, 50.0));
        assert!(step.started.is_some(), "settled, it explores: {step:?}");
    }

    #[test]
    fn latency_that_never_settles_delays_experiments_but_does_not_stop_them() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        // Noisy traffic: the mean swings by half every two slices.
        let started = (0..40)
            .map(|i| tuner.step(&slice(if i % 4 < 2 { 0.2 } else { 0.3 }, 50.0)))
            .position(|s| s.started.is_some());
        assert!(
            started.is_some_and(|i| i <= RECENT + MAX_SETTLE_WAIT as usize + 1),
            "{started:?}"
        );
    }

    #[test]
    fn each_rollback_in_a_row_doubles_the_pause_and_a_win_resets_it() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        // Every move costs 3%: too little to stop early, enough to lose.
        let world = |x: &ScorerWeights| if *x == w(3.0, 2.0, 2.0) { 0.300 } else { 0.309 };
        let steps = run(&mut tuner, 60, world);
        assert!(kept(&steps).is_empty());
        // Rests can lengthen a pause (after a loss each way everything rests).
        let p = pauses(&steps);
        assert!(p[0] == 4 && p[1] >= 8 && p[2] >= 16, "{p:?}");
        // Now more queue weight pays: once it is kept, the pause is back to what
        // recording the new incumbent takes (the dwell within it).
        let steps = run(&mut tuner, 200, |x| 0.3 - 0.02 * x.queue.min(4.5));
        let won = steps
            .iter()
            .position(|s| {
                s.verdict
                    .as_ref()
                    .is_some_and(|v| v.outcome == Outcome::Kept)
            })
            .expect("the better weighting is found");
        assert_eq!(pauses(&steps[won..])[0], RECENT - 1);
    }

    #[test]
    fn quiet_traffic_explores_nothing() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        for _ in 0..50 {
            let step = tuner.step(&slice(0.3, 0.2));
            assert_eq!(step.weights, w(3.0, 2.0, 2.0));
            assert!(step.started.is_none() && step.verdict.is_none());
            assert!(
                step.holding
                    .as_deref()
                    .is_some_and(|h| h.contains("under the floor"))
            );
        }
    }

    #[test]
    fn a_trial_is_abandoned_when_traffic_falls_away() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        let mut started = false;
        for _ in 0..10 {
            started |= tuner.step(&slice(0.3, 50.0)).started.is_some();
            if started {
                break;
            }
        }
        assert!(started);
        let step = tuner.step(&slice(0.3, 0.1));
        let verdict = step.verdict.expect("the trial ends");
        assert_eq!(verdict.outcome, Outcome::Abandoned);
        assert_eq!(step.weights, w(3.0, 2.0, 2.0), "back on the incumbent");
    }

    #[test]
    fn frozen_pins_the_weights() {
        let settings = Settings {
            frozen: true,
            ..Settings::default()
        };
        let mut tuner = Tuner::new(settings, w(3.0, 2.0, 2.0), w(4.0, 2.0, 2.0));
        let steps = run(&mut tuner, 50, |x| 1.0 - 0.1 * x.prefix_cache);
        assert!(steps.iter().all(|s| s.weights == w(4.0, 2.0, 2.0)));
    }

    #[test]
    fn a_met_target_costs_no_experiment() {
        let settings = Settings {
            objective: Objective {
                metric: Metric::MeanTtft,
                target: Some(0.5),
            },
            ..Settings::default()
        };
        let mut tuner = Tuner::new(settings, w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        let steps = run(&mut tuner, 50, |x| 0.4 - 0.01 * x.prefix_cache);
        assert!(steps.iter().all(|s| s.started.is_none()));
        assert!(
            steps
                .last()
                .and_then(|s| s.holding.as_deref())
                .is_some_and(|h| h.contains("meets the target"))
        );
    }

    #[test]
    fn weights_stay_in_bounds_and_a_scorer_set_to_zero_stays_off() {
        let settings = Settings {
            min_weight: 0.5,
            max_weight: 4.0,
            ..Settings::default()
        };
        let mut tuner = Tuner::new(settings, w(3.0, 2.0, 0.0), w(3.0, 2.0, 0.0));
        // Unbounded appetite for prefix weight and for less queue weight.
        let steps = run(&mut tuner, 300, |x| {
            1.0 - 0.05 * x.prefix_cache + 0.05 * x.queue
        });
        for s in &steps {
            assert!(
                (0.5..=4.0).contains(&s.weights.prefix_cache),
                "{:?}",
                s.weights
            );
            assert!((0.5..=4.0).contains(&s.weights.queue), "{:?}", s.weights);
            assert_eq!(s.weights.kv_cache_utilization, 0.0);
        }
        assert_eq!(tuner.incumbent().prefix_cache, 4.0);
    }

    #[test]
    fn a_new_workload_is_followed() {
        let mut tuner = Tuner::new(Settings::default(), w(3.0, 2.0, 2.0), w(3.0, 2.0, 2.0));
        // Phase A: locality pays; phase B: spreading pays (and TTFT jumps).
        run(&mut tuner, 120, |x| 0.3 - 0.01 * x.prefix_cache.min(4.5));
        assert_eq!(tuner.incumbent().prefix_cache, 4.5);
        run(&mut tuner, 300, |x| {
            0.9 - 0.1 * x.queue.min(4.5) + 0.01 * x.prefix_cache
        });
        assert_eq!(tuner.incumbent().queue, 4.5, "{:?}", tuner.incumbent());
    }

    #[test]
    fn a_direction_stopped_early_is_not_paid_for_again_when_its_workload_returns() {
        let default = w(3.0, 2.0, 2.0);
        let spreads = |x: &ScorerWeights| candidates::lean(&default, x) == Some(Lean::Spread);
        /// Spreading experiments started over `slices` slices of `world`.
        fn phase(
            tuner: &mut Tuner,
            slices: usize,
            world: &dyn Fn(&ScorerWeights) -> f64,
            signals: &Signals,
            spreads: &dyn Fn(&ScorerWeights) -> bool,
        ) -> usize {
            (0..slices)
                .map(|_| {
                    let mut s = slice(world(tuner.in_force()), 50.0);
                    s.signals = signals.clone();
                    tuner.step(&s)
                })
                .filter(|s| s.started.is_some() && spreads(&s.weights))
                .count()
        }
        let mut tuner = Tuner::new(Settings::default(), default.clone(), default.clone());
        // Hot tenants whose contexts are all found: spreading them costs misses.
        let calm = |x: &ScorerWeights| if spreads(x) { 0.10 } else { 0.06 };
        let locality_won = Signals {
            queue_imbalance: Some(0.0),
            prefix_match: Some(0.96),
        };
        let tried = phase(&mut tuner, 10, &calm, &locality_won, &spreads);
        assert_eq!(tried, 1, "tried once, stopped early");
        // A surge of unique prompts (nothing found, every weighting alike), then
        // the hot tenants again.
        let tried = phase(&mut tuner, 10, &|_| 1.5, &Signals::default(), &spreads);
        assert_eq!(tried, 0);
        // The change of workload was noticed, and spreading still rests, every way
        // of doing it.
        assert_eq!(tuner.baseline, Some(1.5));
        for spread in [w(2.0, 2.0, 2.0), w(3.0, 3.0, 2.0), w(3.0, 2.0, 3.0)] {
            assert!(tuner.rests(&spread), "{spread:?}");
        }
        let tried = phase(&mut tuner, 10, &calm, &locality_won, &spreads);
        assert_eq!(tried, 0, "not tried again");
    }

    #[test]
    fn a_win_carried_by_a_change_of_workload_mid_experiment_is_not_kept() {
        let mut tuner = experimenting_at(0.3);
        // Candidate and incumbent tie, then the workload turns heavy just as the
        // incumbent's second slice runs.
        assert!(tuner.step(&slice(0.3, 50.0)).verdict.is_none());
        assert!(tuner.step(&slice(0.3, 50.0)).verdict.is_none());
        assert!(tuner.step(&slice(0.3, 50.0)).verdict.is_none());
        let verdict = tuner.step(&slice(0.9, 50.0)).verdict.expect("judged");
        assert_eq!(verdict.outcome, Outcome::Abandoned, "{}", verdict.reason);
        assert_eq!(
            verdict.reason,
            "abandoned prefix 3 -> 4.5: the workload changed mid-experiment \
             (the incumbent's TTFT mean went 300 ms -> 900 ms)"
        );
        assert_eq!(tuner.incumbent(), &w(3.0, 2.0, 2.0));
    }

    #[test]
    fn a_win_carried_by_one_pair_of_slices_is_not_kept() {
        let mut tuner = experimenting_at(0.3);
        // A tie, then load grows by less than a change of workload just as the
        // incumbent's second slice runs: pooled, the candidate is 17% ahead.
        for _ in 0..3 {
            assert!(tuner.step(&slice(0.3, 50.0)).verdict.is_none());
        }
        let verdict = tuner.step(&slice(0.42, 50.0)).verdict.expect("judged");
        assert_eq!(verdict.outcome, Outcome::RolledBack, "{}", verdict.reason);
        assert_eq!(tuner.incumbent(), &w(3.0, 2.0, 2.0));
    }
}
