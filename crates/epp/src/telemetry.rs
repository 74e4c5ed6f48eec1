//! Prometheus metrics of the EndpointPicker, served on `--metrics-addr`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub endpoint: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScorerLabels {
    pub profile: String,
    pub scorer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    pub path: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

fn score_histogram() -> Histogram {
    Histogram::new(linear_buckets(0.0, 0.1, 11))
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metrics; cheap to clone handles are inside.
pub struct Telemetry {
    pub registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub scorer_scores: Family<ScorerLabels, Histogram, fn() -> Histogram>,
    pub prefix_match_ratio: Histogram,
    pub pd_decisions: Family<OutcomeLabels, Counter>,
    pub no_endpoint: Counter,
    pub proxy_requests: Family<ProxyLabels, Counter>,
    pub proxy_ttft: Histogram,
    pub proxy_latency: Histogram,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub config_info_hash: Gauge,
    pub endpoints: Family<RoleLabels, Gauge>,
    pub scrape_errors: Counter,
    pub endpoint_waiting: Family<EndpointLabels, Gauge>,
    pub endpoint_running: Family<EndpointLabels, Gauge>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llmd_epp");
        let t = Telemetry {
            decisions: Family::default(),
            scorer_scores: Family::new_with_constructor(score_histogram),
            prefix_match_ratio: Histogram::new(linear_buckets(0.0, 0.1, 11)),
            pd_decisions: Family::default(),
            no_endpoint: Counter::default(),
            proxy_requests: Family::default(),
            proxy_ttft: seconds_histogram(),
            proxy_latency: seconds_histogram(),
            config_reloads: Family::default(),
            config_info_hash: Gauge::default(),
            endpoints: Family::default(),
            scrape_errors: Counter::default(),
            endpoint_waiting: Family::default(),
            endpoint_running: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "scheduling_decisions",
            "Requests routed, per endpoint and scheduling profile",
            t.decisions.clone(),
        );
        registry.register(
            "scorer_score",
            "Unweighted score of the chosen endpoint, per scorer and profile",
            t.scorer_scores.clone(),
        );
        registry.register(
            "prefix_match_ratio",
            "Fraction of prompt blocks the chosen decode endpoint already held",
            t.prefix_match_ratio.clone(),
        );
        registry.register(
            "pd_decisions",
            "P/D decider outcomes (disaggregated or aggregated)",
            t.pd_decisions.clone(),
        );
        registry.register(
            "no_endpoint",
            "Requests refused because no endpoint could serve them",
            t.no_endpoint.clone(),
        );
        registry.register(
            "proxy_requests",
            "Requests answered by the HTTP proxy, per path and status code",
            t.proxy_requests.clone(),
        );
        registry.register(
            "proxy_time_to_first_token_seconds",
            "Time from request arrival to the first response byte from the model server",
            t.proxy_ttft.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "Time from request arrival to the end of the response",
            t.proxy_latency.clone(),
        );
        registry.register(
            "config_reloads",
            "Config loads, outcome applied or rejected",
            t.config_reloads.clone(),
        );
        registry.register(
            "config_hash_prefix",
            "First 8 hex digits of the sha256 of the config in force, as an integer",
            t.config_info_hash.clone(),
        );
        registry.register(
            "endpoints",
            "Endpoints in the pool, per role",
            t.endpoints.clone(),
        );
        registry.register(
            "metrics_scrape_errors",
            "Failed scrapes of model-server /metrics",
            t.scrape_errors.clone(),
        );
        registry.register(
            "endpoint_waiting_requests",
            "Waiting requests per endpoint, from its last scrape",
            t.endpoint_waiting.clone(),
        );
        registry.register(
            "endpoint_running_requests",
            "Running requests per endpoint, from its last scrape",
            t.endpoint_running.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn record_config_reload(&self, applied: bool, hash: &str) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        if applied {
            let prefix = hash.get(..8).and_then(|h| i64::from_str_radix(h, 16).ok());
            self.config_info_hash.set(prefix.unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_families() {
        let t = Telemetry::new();
        t.record_config_reload(true, "0000000a-rest");
        t.record_config_reload(false, "");
        let text = t.encode();
        assert!(
            text.contains("llmd_epp_config_reloads_total{outcome=\"applied\"} 1"),
            "{text}"
        );
        assert!(text.contains("llmd_epp_config_reloads_total{outcome=\"rejected\"} 1"));
        assert!(text.contains("llmd_epp_config_hash_prefix 10"));
    }
}
