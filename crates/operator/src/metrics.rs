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
    /// KV fabric probes finished, by outcome (proven or failed).
    pub fabric_probes: Family<OutcomeLabel, Counter>,
    /// Runtime LoRA adapter operations on engines, by outcome (loaded, unloaded,
    /// failed).
    pub adapter_operations: Family<OutcomeLabel, Counter>,
    pub leader: Gauge,
}

/// A finished KV fabric probe's outcome label.
pub fn probe_outcome(proven: bool) -> &'static str {
    if proven { "proven" } else { "failed" }
}

/// The outcomes of `adapter_operations`.
pub const ADAPTER_OUTCOMES: [&str; 3] = ["loaded", "unloaded", "failed"];

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
        let fabric_probes = Family::<OutcomeLabel, Counter>::default();
        let adapter_operations = Family::<OutcomeLabel, Counter>::default();
        let leader = Gauge::default();
        // Every label value these counters can take starts at 0, so dashboards and
        // alert rules find their series (and rate() its first increase) before the
        // first error, verdict or probe.
        for category in Category::ALL {
            errors
                .get_or_create(&CategoryLabel {
                    category: category.as_str(),
                })
                .inc_by(0);
        }
        for outcome in llmd_tuner::Outcome::ALL {
            tuner_verdicts
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.as_str(),
                })
                .inc_by(0);
        }
        for proven in [true, false] {
            fabric_probes
                .get_or_create(&OutcomeLabel {
                    outcome: probe_outcome(proven),
                })
                .inc_by(0);
        }
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
            "kv_fabric_probes",
            "KV fabric probes (a real NIXL transfer between a prefill and a decode node) finished, by outcome: proven or failed",
            fabric_probes.clone(),
        );
        for outcome in ADAPTER_OUTCOMES {
            adapter_operations
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(0);
        }
        registry.register(
            "adapter_operations",
            "Runtime LoRA adapter loads and unloads on engines, by outcome: loaded, unloaded or failed",
            adapter_operations.clone(),
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
            fabric_probes,
            adapter_operations,
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

    #[test]
    fn event_counters_start_at_zero_for_every_label_value() {
        let text = Metrics::default().encode();
        for line in [
            "llmd_operator_reconcile_errors_total{category=\"internal\"} 0",
            "llmd_operator_reconcile_errors_total{category=\"invalid_spec\"} 0",
            "llmd_operator_tuner_verdicts_total{outcome=\"RolledBack\"} 0",
            "llmd_operator_tuner_verdicts_total{outcome=\"StoppedEarly\"} 0",
            "llmd_operator_kv_fabric_probes_total{outcome=\"failed\"} 0",
            "llmd_operator_kv_fabric_probes_total{outcome=\"proven\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    /// The chart's dashboards and alert rules name only `llmd_operator_*` families
    /// this registry holds: a renamed metric fails here, not on a dashboard.
    #[test]
    fn dashboards_and_alerts_name_only_metrics_the_operator_exports() {
        let m = Metrics::default();
        // Families print only once they have a label set.
        m.count_error(Category::Transient);
        for family in [&m.applies, &m.deletes] {
            family
                .get_or_create(&KindLabel { kind: "Pod".into() })
                .inc();
        }
        m.tuner_verdicts
            .get_or_create(&OutcomeLabel { outcome: "Kept" })
            .inc();
        m.fabric_probes
            .get_or_create(&OutcomeLabel { outcome: "failed" })
            .inc();
        let text = m.encode();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let chart =
            std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../../manifests/charts/llmd-operator");
        let mut sources = vec![chart.join("templates/prometheusrule.yaml")];
        for name in ["fleet", "model-servers", "routing", "operator"] {
            sources.push(chart.join(format!("dashboards/llmd-{name}.json")));
        }
        let mut seen = 0;
        for path in sources {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (at, _) in text.match_indices("llmd_operator_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let family = ["_bucket", "_sum", "_count", "_total"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    families.contains(&family),
                    "{} names {name}, not an operator metric ({families:?})",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(seen >= 8, "the operator dashboard and rules ({seen} names)");
    }
}
