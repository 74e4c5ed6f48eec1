//! The inter-token latency model: the time between a response's tokens once it
//! decodes, from the decode pressure on the endpoint when the request was sent (the
//! requests running there with it, and the share of its KV cache in use).

use crate::predict::regression::{Regression, Update, dot};

/// The terms of the inter-token model, in the order of [`ItlFeatures::vector`].
pub const ITL_TERMS: [&str; 3] = [
    "itl_intercept_seconds",
    "itl_seconds_per_running_request",
    "itl_seconds_per_kv_cache_usage",
];

const K: usize = ITL_TERMS.len();

/// Longest inter-token latency taken as real (seconds).
const MAX_ITL: f64 = 60.0;

/// Decode pressure on an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ItlFeatures {
    /// Requests running there with this one (this one included).
    pub running: f64,
    /// Share of its KV cache in use, 0..=1.
    pub kv_usage: f64,
}

impl ItlFeatures {
    fn vector(&self) -> [f64; K] {
        [1.0, self.running, self.kv_usage]
    }
}

/// Coefficients of [`ITL_TERMS`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItlCoefficients(pub [f64; K]);

impl ItlCoefficients {
    /// Before any observation: 20 ms a token, load not yet known to matter.
    pub const UNINFORMED: ItlCoefficients = ItlCoefficients([0.02, 0.0, 0.0]);

    pub fn predict(&self, x: &ItlFeatures) -> f64 {
        dot(&self.0, &x.vector())
    }
}

/// The inter-token model: [`Regression`] over [`ITL_TERMS`].
#[derive(Clone, Debug, Default)]
pub struct ItlRegression(Regression<K>);

impl ItlRegression {
    pub fn coefficients(&self, prior: &ItlCoefficients) -> ItlCoefficients {
        ItlCoefficients(self.0.coefficients(&prior.0))
    }

    /// Learns from one response's mean inter-token latency `y` (seconds).
    pub fn observe(&mut self, x: &ItlFeatures, y: f64, prior: &ItlCoefficients) -> Update {
        self.0.observe(x.vector(), y, &prior.0, MAX_ITL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_how_decoding_slows_with_running_requests() {
        // The simulator with --time-factor-under-load 4 and 4 slots: 5 ms a token
        // alone, 20 ms with 4 running (5 ms x (1 + (4 - 1) x (n - 1) / 3)).
        let mut m = ItlRegression::default();
        for i in 0..300 {
            let running = (1 + i % 4) as f64;
            let x = ItlFeatures {
                running,
                kv_usage: 0.1 * running,
            };
            m.observe(&x, 0.005 * running, &ItlCoefficients::UNINFORMED);
        }
        let c = m.coefficients(&ItlCoefficients::UNINFORMED);
        let busy = ItlFeatures {
            running: 4.0,
            kv_usage: 0.4,
        };
        let idle = ItlFeatures {
            running: 1.0,
            kv_usage: 0.1,
        };
        assert!((c.predict(&busy) - 0.02).abs() < 0.002, "{c:?}");
        assert!((c.predict(&idle) - 0.005).abs() < 0.002, "{c:?}");
    }

    #[test]
    fn absurd_inter_token_latencies_are_refused() {
        let mut m = ItlRegression::default();
        let x = ItlFeatures::default();
        for y in [-0.1, f64::NAN, 3600.0] {
            assert_eq!(
                m.observe(&x, y, &ItlCoefficients::UNINFORMED),
                Update::Refused
            );
        }
        assert_eq!(
            m.coefficients(&ItlCoefficients::UNINFORMED),
            ItlCoefficients::UNINFORMED
        );
    }
}
