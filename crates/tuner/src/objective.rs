//! What the tuner optimises: a latency users feel, measured by the EndpointPicker.

use crate::histogram::Histogram;

/// Which statistic of time to first token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    MeanTtft,
    P90Ttft,
}

/// The objective: lower is better; with a target, a deployment that meets it is
/// left alone (no experiment costs it anything).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    pub metric: Metric,
    /// Seconds.
    pub target: Option<f64>,
}

impl Default for Objective {
    fn default() -> Self {
        Objective {
            metric: Metric::MeanTtft,
            target: None,
        }
    }
}

impl Objective {
    /// The objective's value over `window`, in seconds.
    pub fn score(&self, window: &Histogram) -> Option<f64> {
        match self.metric {
            Metric::MeanTtft => window.mean(),
            Metric::P90Ttft => window.quantile(0.9),
        }
    }

    /// How it reads in a reason: `TTFT mean`, `TTFT P90`.
    pub fn name(&self) -> &'static str {
        match self.metric {
            Metric::MeanTtft => "TTFT mean",
            Metric::P90Ttft => "TTFT P90",
        }
    }

    /// Whether `score` meets the target (never, without one).
    pub fn met(&self, score: f64) -> bool {
        self.target.is_some_and(|t| score <= t)
    }
}

/// Seconds as people read them: `850 ms`, `1.80 s`.
pub fn seconds(value: f64) -> String {
    if value < 1.0 {
        format!("{:.0} ms", value * 1000.0)
    } else {
        format!("{value:.2} s")
    }
}
