//! Prometheus metrics of the operator.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Category;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// The operator's metrics, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub errors: Family<CategoryLabel, Counter>,
    pub duration: Histogram,
    pub applies: Family<KindLabel, Counter>,
    pub deletes: Family<KindLabel, Counter>,
    pub status_writes: Counter,
    pub tuner_rounds: Counter,
    pub tuner_writes: Counter,
    /// Ended tuning experiments by outcome (kept, rolled back, stopped early,
    /// abandoned), all deployments together.
    pub tuner_verdicts: Family<OutcomeLabel, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("llmd_operator");
        let reconciles = Counter::default();
        let errors = Family::<CategoryLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let applies = Family::<KindLabel, Counter>::default();
        let deletes = Family::<KindLabel, Counter>::default();
        let status_writes = Counter::default();
        let tuner_rounds = Counter::default();
        let tuner_writes = Counter::default();
        let tuner_verdicts = Family::<OutcomeLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "child_applies",
            "Server-side applies of child objects, by kind",
            applies.clone(),
        );
        registry.register(
            "child_deletes",
            "Deletions of children no longer desired, by kind",
            deletes.clone(),
        );
        registry.register(
            "status_writes",
            "Writes of LLMDeployment status",
            status_writes.clone(),
        );
        registry.register(
            "tuner_rounds",
            "Rounds of the tuner (one per deployment and interval)",
            tuner_rounds.clone(),
        );
        registry.register(
            "tuner_writes",
            "Writes of status.routing by the tuner",
            tuner_writes.clone(),
        );
        registry.register(
            "tuner_verdicts",
            "Tuning experiments ended, by outcome",
            tuner_verdicts.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            applies,
            deletes,
            status_writes,
            tuner_rounds,
            tuner_writes,
            tuner_verdicts,
            leader,
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, took: Duration, error: Option<Category>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(category) = error {
            self.count_error(category);
        }
    }

    pub fn count_error(&self, category: Category) {
        self.errors
            .get_or_create(&CategoryLabel {
                category: category.as_str(),
            })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_category() {
        let m = Metrics::default();
        m.observe_reconcile(Duration::from_millis(3), None);
        m.observe_reconcile(Duration::from_millis(3), Some(Category::Transient));
        let text = m.encode();
        assert!(text.contains("llmd_operator_reconciles_total 2"), "{text}");
        assert!(
            text.contains("llmd_operator_reconcile_errors_total{category=\"transient\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("llmd_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
