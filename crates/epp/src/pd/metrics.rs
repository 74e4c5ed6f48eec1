//! Metrics of the P/D two-step, the same families wherever it runs (the EPP's proxy
//! as `llmd_epp_pd_*`, the decode-side sidecar as `llmd_sidecar_pd_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::legs::{Cause, Leg};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `prefill` or `decode`: the leg that failed.
    pub stage: &'static str,
    /// What went wrong, one of [`Cause::label`].
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabels {
    pub leg: &'static str,
}

fn leg_histogram() -> Histogram {
    Histogram::new(crate::telemetry::latency_buckets())
}

/// The P/D families; cheap to clone (handles inside).
#[derive(Clone)]
pub struct PdMetrics {
    /// KV transfers that did not happen as asked, by leg and cause.
    pub failures: Family<FailureLabels, Counter>,
    /// Prefill leg: until the prefiller's whole answer. Decode leg: until the first
    /// byte of the decode answer (the KV pull and the first token).
    pub leg_seconds: Family<LegLabels, Histogram, fn() -> Histogram>,
    /// Requests split into a prefill and a decode leg.
    pub splits: Counter,
}

impl Default for PdMetrics {
    fn default() -> Self {
        let failures = Family::<FailureLabels, Counter>::default();
        // Every (leg, cause) starts at 0: the KV-transfer alert and the error panels
        // find their series before the first failure.
        for leg in Leg::ALL {
            for cause in Cause::ALL {
                failures
                    .get_or_create(&FailureLabels {
                        stage: leg.label(),
                        cause: cause.label(),
                    })
                    .inc_by(0);
            }
        }
        PdMetrics {
            failures,
            leg_seconds: Family::new_with_constructor(leg_histogram),
            splits: Counter::default(),
        }
    }
}

impl PdMetrics {
    /// Registers the families in `registry` (whose prefix they take); returns their
    /// names as registered (counters without `_total`).
    pub fn register(&self, registry: &mut Registry) -> [&'static str; 3] {
        registry.register(
            "pd_failures",
            "P/D requests whose KV transfer did not happen as asked, by stage (prefill or decode) and cause",
            self.failures.clone(),
        );
        registry.register(
            "pd_leg_duration_seconds",
            "Duration of each P/D leg: prefill until the prefiller's answer, decode until the first byte of the decode answer",
            self.leg_seconds.clone(),
        );
        registry.register(
            "pd_splits",
            "Requests run as a prefill leg and a decode leg",
            self.splits.clone(),
        );
        ["pd_failures", "pd_leg_duration_seconds", "pd_splits"]
    }

    pub fn failed(&self, leg: Leg, cause: Cause) {
        self.failures
            .get_or_create(&FailureLabels {
                stage: leg.label(),
                cause: cause.label(),
            })
            .inc();
    }

    pub fn leg_took(&self, leg: Leg, seconds: f64) {
        self.leg_seconds
            .get_or_create(&LegLabels { leg: leg.label() })
            .observe(seconds);
    }
}
