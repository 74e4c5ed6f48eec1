//! Online linear regressions for one endpoint's latencies: exponentially decayed
//! least squares (so a pod that changes is relearned), ridge-pulled towards a prior
//! (the fleet's coefficients, so a new pod starts from what the others taught), with
//! residuals clipped at a few times their running scale (one stalled request does
//! not teach the model that the pod is slow). [`Regression`] is the fit over `K`
//! terms; [`TtftRegression`] the time to first token over [`TERMS`].

/// The terms of the TTFT model, in the order of [`Features::vector`].
pub const TERMS: [&str; 5] = [
    "intercept_seconds",
    "seconds_per_1k_uncached_tokens",
    "seconds_per_1k_queued_prefill_tokens",
    "slot_wait_factor",
    "seconds_per_1k_cached_tokens",
];

const N: usize = TERMS.len();

/// What a request's TTFT on one endpoint is predicted from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Features {
    /// Prompt tokens the endpoint does not hold (the prefill it must compute).
    pub uncached_tokens: f64,
    /// Uncached tokens of the requests this EPP sent there that have not produced a
    /// first token yet (prefill queued or running ahead of this one).
    pub queued_prefill_tokens: f64,
    /// Seconds until a running request frees a slot, when every slot is busy.
    pub slot_wait: f64,
    /// Prompt tokens the prefix index says the endpoint holds: their price is what
    /// the index's misses cost (an evicted prefix is prefilled after all).
    pub cached_tokens: f64,
}

impl Features {
    /// Tokens in thousands, so every term is of order one.
    fn vector(&self) -> [f64; N] {
        [
            1.0,
            self.uncached_tokens / 1000.0,
            self.queued_prefill_tokens / 1000.0,
            self.slot_wait,
            self.cached_tokens / 1000.0,
        ]
    }
}

/// Coefficients of [`TERMS`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coefficients(pub [f64; N]);

impl Coefficients {
    /// What a model knows before any observation anywhere: a small fixed cost, a
    /// modest prefill speed (0.1 s per 1,000 tokens), prefill queued ahead priced
    /// the same (an engine that prefills one batch at a time, as vLLM does), a
    /// slot wait that counts in full, and an index that is never wrong.
    /// Observations correct each within a few requests; until then only the
    /// ordering of pods matters.
    pub const UNINFORMED: Coefficients = Coefficients([0.01, 0.1, 0.1, 1.0, 0.0]);

    pub fn predict(&self, x: &Features) -> f64 {
        dot(&self.0, &x.vector())
    }
}

/// No prediction is below a millisecond.
const MIN_SECONDS: f64 = 0.001;
/// Each observation's weight decays by this per later observation: a half-life of
/// about 70 observations.
const DECAY: f64 = 0.99;
/// Pseudo-observations pulling each coefficient towards the prior (for an
/// endpoint, the fleet's coefficients).
const RIDGE: f64 = 1.0;
/// Residuals beyond this many running scales are clipped to it.
const CLIP_SCALES: f64 = 4.0;
/// The running residual scale never counts as less than this (seconds).
const MIN_SCALE: f64 = 0.005;

/// What an observation did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// Learned from; `clipped` when the residual was clipped as an outlier.
    Learned { clipped: bool },
    /// Not a TTFT (negative, not finite, or beyond any plausible value): ignored.
    Refused,
}

/// Longest TTFT taken as real (seconds); longer is a stall or a broken clock.
const MAX_TTFT: f64 = 600.0;

/// `theta · v`, never below [`MIN_SECONDS`].
pub fn dot<const K: usize>(theta: &[f64; K], v: &[f64; K]) -> f64 {
    theta
        .iter()
        .zip(v)
        .map(|(t, x)| t * x)
        .sum::<f64>()
        .max(MIN_SECONDS)
}

/// The fit over `K` terms.
#[derive(Clone, Debug)]
pub struct Regression<const K: usize> {
    /// Decayed sums of x xᵀ and x y.
    xx: [[f64; K]; K],
    xy: [f64; K],
    /// Running mean absolute residual; `None` before the first observation.
    scale: Option<f64>,
    coefficients: Option<[f64; K]>,
}

impl<const K: usize> Default for Regression<K> {
    fn default() -> Self {
        Regression {
            xx: [[0.0; K]; K],
            xy: [0.0; K],
            scale: None,
            coefficients: None,
        }
    }
}

impl<const K: usize> Regression<K> {
    /// The fitted coefficients, or `prior` before any observation.
    pub fn coefficients(&self, prior: &[f64; K]) -> [f64; K] {
        self.coefficients.unwrap_or(*prior)
    }

    /// Fitted coefficients, `None` before any observation.
    pub fn fitted(&self) -> Option<[f64; K]> {
        self.coefficients
    }

    /// Learns from one latency `y` (seconds, at most `max_y`) seen with terms `v`,
    /// pulled towards `prior`.
    pub fn observe(&mut self, v: [f64; K], y: f64, prior: &[f64; K], max_y: f64) -> Update {
        if !y.is_finite() || !(0.0..=max_y).contains(&y) || v.iter().any(|x| !x.is_finite()) {
            return Update::Refused;
        }
        let predicted = dot(&self.coefficients(prior), &v);
        let residual = y - predicted;
        let mut clipped = false;
        let y = match self.scale {
            Some(scale) => {
                let limit = CLIP_SCALES * scale.max(MIN_SCALE);
                clipped = residual.abs() > limit;
                predicted + residual.clamp(-limit, limit)
            }
            None => y,
        };
        let abs = (y - predicted).abs();
        self.scale = Some(match self.scale {
            Some(s) => 0.9 * s + 0.1 * abs,
            None => abs.max(MIN_SCALE),
        });
        for i in 0..K {
            for j in 0..K {
                self.xx[i][j] = DECAY * self.xx[i][j] + v[i] * v[j];
            }
            self.xy[i] = DECAY * self.xy[i] + v[i] * y;
        }
        self.coefficients = Some(self.solve(prior));
        Update::Learned { clipped }
    }

    /// argmin Σ wᵢ (yᵢ - θ·xᵢ)² + RIDGE |θ - prior|² over θ >= 0 (no term makes a
    /// request faster): a coefficient the unconstrained fit drives below 0 is held
    /// at 0 and the others refitted without it (clamping alone would leave the
    /// others fitted to a negative partner).
    fn solve(&self, prior: &[f64; K]) -> [f64; K] {
        let mut held = [false; K];
        for _ in 0..K {
            let mut a = self.xx;
            let mut b = self.xy;
            for i in 0..K {
                a[i][i] += RIDGE;
                b[i] += RIDGE * prior[i];
            }
            for i in (0..K).filter(|&i| held[i]) {
                a[i] = [0.0; K];
                for row in a.iter_mut() {
                    row[i] = 0.0;
                }
                a[i][i] = 1.0;
                b[i] = 0.0;
            }
            let Some(theta) = solve_linear(a, b).filter(|t| t.iter().all(|v| v.is_finite())) else {
                return *prior;
            };
            let most_negative = (0..K)
                .filter(|&i| theta[i] < 0.0)
                .min_by(|&i, &j| theta[i].total_cmp(&theta[j]));
            match most_negative {
                Some(i) => held[i] = true,
                None => return theta,
            }
        }
        *prior
    }
}

/// The TTFT model: [`Regression`] over [`TERMS`].
#[derive(Clone, Debug, Default)]
pub struct TtftRegression(Regression<N>);

impl TtftRegression {
    /// The fitted coefficients, or `prior` before any observation.
    pub fn coefficients(&self, prior: &Coefficients) -> Coefficients {
        Coefficients(self.0.coefficients(&prior.0))
    }

    /// Fitted coefficients, `None` before any observation.
    pub fn fitted(&self) -> Option<Coefficients> {
        self.0.fitted().map(Coefficients)
    }

    /// Learns from one TTFT `y` (seconds) seen with features `x`, pulled towards
    /// `prior`.
    pub fn observe(&mut self, x: &Features, y: f64, prior: &Coefficients) -> Update {
        self.0.observe(x.vector(), y, &prior.0, MAX_TTFT)
    }
}

/// Solves `a θ = b` by Gaussian elimination with partial pivoting.
fn solve_linear<const K: usize>(mut a: [[f64; K]; K], mut b: [f64; K]) -> Option<[f64; K]> {
    for col in 0..K {
        let pivot = (col..K).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..K {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut theta = [0.0; K];
    for row in (0..K).rev() {
        let tail: f64 = (row + 1..K).map(|k| a[row][k] * theta[k]).sum();
        theta[row] = (b[row] - tail) / a[row][row];
    }
    Some(theta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(uncached: f64, queued: f64, wait: f64) -> Features {
        Features {
            uncached_tokens: uncached,
            queued_prefill_tokens: queued,
            slot_wait: wait,
            cached_tokens: 0.0,
        }
    }

    /// The simulator's model: 5 ms + 0.4 ms per uncached token, plus the slot wait.
    fn truth(f: &Features) -> f64 {
        0.005 + 0.0004 * f.uncached_tokens + f.slot_wait
    }

    fn trained(n: usize) -> TtftRegression {
        let mut m = TtftRegression::default();
        for i in 0..n {
            let f = x(
                ((i * 37) % 2000) as f64,
                ((i * 53) % 3000) as f64,
                ((i * 7) % 5) as f64 * 0.1,
            );
            m.observe(&f, truth(&f), &Coefficients::UNINFORMED);
        }
        m
    }

    #[test]
    fn learns_the_prefill_speed_and_the_slot_wait() {
        let m = trained(400);
        let c = m.coefficients(&Coefficients::UNINFORMED);
        assert!((c.0[1] - 0.4).abs() < 0.02, "{c:?}");
        assert!(c.0[2] < 0.01, "queued prefill does not matter here: {c:?}");
        assert!((c.0[3] - 1.0).abs() < 0.05, "{c:?}");
        let f = x(1200.0, 0.0, 0.0);
        assert!((c.predict(&f) - truth(&f)).abs() / truth(&f) < 0.05);
    }

    #[test]
    fn a_stalled_request_is_clipped_not_learned_in_full() {
        let mut m = trained(300);
        let f = x(100.0, 0.0, 0.0);
        let before = m.coefficients(&Coefficients::UNINFORMED).predict(&f);
        assert_eq!(
            m.observe(&f, 30.0, &Coefficients::UNINFORMED),
            Update::Learned { clipped: true }
        );
        let after = m.coefficients(&Coefficients::UNINFORMED).predict(&f);
        assert!(after - before < 0.05, "{before} -> {after}");
    }

    #[test]
    fn absurd_ttfts_are_refused() {
        let mut m = TtftRegression::default();
        for y in [-1.0, f64::NAN, f64::INFINITY, 1e6] {
            assert_eq!(
                m.observe(&x(1.0, 0.0, 0.0), y, &Coefficients::UNINFORMED),
                Update::Refused
            );
        }
        assert_eq!(m.fitted(), None, "nothing learned");
    }

    #[test]
    fn a_pod_that_slows_down_is_relearned() {
        let mut m = trained(300);
        for i in 0..400 {
            let f = x(((i * 37) % 2000) as f64, 0.0, 0.0);
            // Twice as slow per token now.
            m.observe(
                &f,
                0.005 + 0.0008 * f.uncached_tokens,
                &Coefficients::UNINFORMED,
            );
        }
        let c = m.coefficients(&Coefficients::UNINFORMED);
        assert!((c.0[1] - 0.8).abs() < 0.05, "{c:?}");
    }

    #[test]
    fn with_few_observations_the_prior_dominates() {
        let prior = Coefficients([0.005, 0.4, 0.0, 1.0, 0.0]);
        let mut m = TtftRegression::default();
        assert_eq!(m.coefficients(&prior), prior);
        m.observe(&x(100.0, 0.0, 0.0), 0.2, &prior);
        let c = m.coefficients(&prior);
        assert!(
            (c.0[1] - 0.4).abs() < 0.1,
            "one observation moves little: {c:?}"
        );
    }

    #[test]
    fn a_term_held_at_zero_does_not_leave_its_partner_overfitted() {
        // Cached requests (1,200 tokens held, 25 to prefill) answer in 15 ms, misses
        // (1,225 to prefill) in 495 ms: the intercept and the cached-token price are
        // nearly collinear, and an unconstrained fit may trade one for the other.
        let mut m = TtftRegression::default();
        for i in 0..300 {
            let (uncached, cached, y) = if i % 5 == 0 {
                (1225.0, 0.0, 0.495)
            } else {
                (25.0, 1200.0, 0.015)
            };
            let f = Features {
                uncached_tokens: uncached,
                cached_tokens: cached,
                ..Features::default()
            };
            m.observe(&f, y, &Coefficients::UNINFORMED);
        }
        let c = m.coefficients(&Coefficients::UNINFORMED);
        let hot = Features {
            uncached_tokens: 25.0,
            cached_tokens: 1200.0,
            ..Features::default()
        };
        let predicted = c.predict(&hot);
        assert!((predicted - 0.015).abs() < 0.005, "{predicted} with {c:?}");
    }

    #[test]
    fn coefficients_never_go_negative_and_predictions_stay_positive() {
        let mut m = TtftRegression::default();
        for i in 0..100 {
            // Longer prompts answered faster: nonsense a fit must not turn into
            // a negative price.
            let f = x(i as f64 * 10.0, 0.0, 0.0);
            m.observe(&f, 1.0 - i as f64 * 0.009, &Coefficients::UNINFORMED);
        }
        let c = m.coefficients(&Coefficients::UNINFORMED);
        assert!(c.0.iter().all(|v| *v >= 0.0), "{c:?}");
        assert!(c.predict(&x(0.0, 0.0, 0.0)) >= MIN_SECONDS);
    }
}
