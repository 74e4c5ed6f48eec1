//! Prometheus metrics of the EndpointPicker, served on `--metrics-addr`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use llmd_api::endpoint_picker_config::SchedulerConfig;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::pd::PdMetrics;

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
pub struct KvEventRefusalLabels {
    pub endpoint: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScorerLabels {
    pub profile: String,
    pub scorer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    pub hash: String,
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
pub struct FrontendLabels {
    /// `proxy` or `ext-proc`.
    pub frontend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectiveLabels {
    /// `ttft` or `tpot`.
    pub objective: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeaderLabels {
    pub header: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoefficientLabels {
    pub endpoint: String,
    /// One of `predict::regression::TERMS`.
    pub term: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

/// Buckets 0, 0.1, ..., 1 for values in [0, 1], computed as tenths so the bounds
/// print as `0.3`, not `0.30000000000000004`.
fn fraction_histogram() -> Histogram {
    Histogram::new((0..=10).map(|i| f64::from(i) / 10.0))
}

/// Latency buckets 10% apart from 1 ms to about 90 s, so two weightings whose
/// latencies differ by 10% land in different buckets (what the tuner compares).
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 1.1, 120)
}

/// Relative prediction errors, |predicted - observed| / observed.
fn prediction_error_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0,
    ])
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

const PREFIX: &str = "llmd_epp";

/// A registry that remembers the full name of each family it registers.
struct Registering {
    registry: Registry,
    families: Vec<String>,
}

impl Registering {
    fn add(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.families.push(format!("{PREFIX}_{name}"));
        self.registry.register(name, help, metric);
    }
}

/// The outcomes of `pd_decisions` (see `EndpointPicker::observe`).
pub const PD_DECISION_OUTCOMES: [&str; 3] = [
    "disaggregated",
    "aggregated_no_kv_compatible_prefill",
    "aggregated",
];

/// The outcomes of `ttft_observations` (see `predict::ticket`).
pub const TTFT_OBSERVATION_OUTCOMES: [&str; 3] = ["learned", "clipped", "refused"];

/// The outcomes of `engine_tokenize` (see `prefix::engine_tokenizer`).
pub const ENGINE_TOKENIZE_OUTCOMES: [&str; 5] =
    ["cached", "tokenized", "failed", "timeout", "no_endpoint"];

/// All metrics; cheap to clone handles are inside.
pub struct Telemetry {
    pub registry: Registry,
    /// Every family's full name (`llmd_epp_...`), also those with no sample yet.
    pub families: Vec<String>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub scorer_scores: Family<ScorerLabels, Histogram, fn() -> Histogram>,
    /// The share of the winner's total each scorer contributed (weight x score /
    /// total), per profile: which scorer actually decides. Labels come from the
    /// config, never from requests or endpoints.
    pub winner_scorer_share: Family<ScorerLabels, Histogram, fn() -> Histogram>,
    pub prefix_match_ratio: Histogram,
    pub pd_decisions: Family<OutcomeLabels, Counter>,
    /// The P/D two-step run by the proxy: failures by leg and cause, leg
    /// durations, splits.
    pub pd: PdMetrics,
    pub no_endpoint: Counter,
    /// Requests refused at the admission limit.
    pub shed: Counter,
    pub proxy_requests: Family<ProxyLabels, Counter>,
    /// Time to first token as the client sees it through this EPP, per front end.
    pub ttft: Family<FrontendLabels, Histogram, fn() -> Histogram>,
    /// Time between streamed chunks (about one token each), per front end.
    pub inter_token_latency: Family<FrontendLabels, Histogram, fn() -> Histogram>,
    /// Time to the end of the response, per front end.
    pub request_duration: Family<FrontendLabels, Histogram, fn() -> Histogram>,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    /// 1 for the hash of the config in force (`EndpointPickerConfig::hash`, the
    /// value `status.routing.configHash` shows).
    pub config_info: Family<ConfigLabels, Gauge>,
    /// Weight of each scorer per profile in the config in force.
    pub scorer_weights: Family<ScorerLabels, Gauge<f64, AtomicU64>>,
    pub endpoints: Family<RoleLabels, Gauge>,
    pub scrape_errors: Counter,
    /// Metric samples ignored as NaN, negative or absurd.
    pub rejected_samples: Counter,
    pub endpoint_waiting: Family<EndpointLabels, Gauge>,
    pub endpoint_running: Family<EndpointLabels, Gauge>,
    /// KV-cache use per endpoint (0..1), from its last scrape: the autoscaler's
    /// kvCacheUtilization signal.
    pub endpoint_kv_cache_usage: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    /// 1 while an endpoint's prefix matches come from its engine's KV events, 0
    /// while the approximate index stands in (only with `--kv-events-port`).
    pub endpoint_prefix_precise: Family<EndpointLabels, Gauge>,
    /// KV-event messages (or events in them) refused, by endpoint and cause.
    pub kv_events_refused: Family<KvEventRefusalLabels, Counter>,
    pub kv_events_messages: Family<EndpointLabels, Counter>,
    /// KV-event messages applied from a pod's replay endpoint.
    pub kv_events_replayed: Family<EndpointLabels, Counter>,
    /// Relative error of each TTFT prediction, |predicted - observed| / observed.
    pub ttft_prediction_error: Histogram,
    /// Relative error of each inter-token latency prediction (a response's mean).
    pub itl_prediction_error: Histogram,
    /// TTFT observations offered to the latency models: learned, clipped (an
    /// outlier, learned only in part) or refused (not a plausible TTFT).
    pub ttft_observations: Family<OutcomeLabels, Counter>,
    /// Prompts the precise index asked the engine to tokenize, by outcome.
    pub engine_tokenize: Family<OutcomeLabels, Counter>,
    /// Each endpoint's fitted TTFT model, per term.
    pub latency_model_coefficient: Family<CoefficientLabels, Gauge<f64, AtomicU64>>,
    /// Requests whose objective no endpoint was predicted to meet, per objective.
    pub slo_predicted_misses: Family<ObjectiveLabels, Counter>,
    /// Objective headers ignored because their value was not a usable number.
    pub slo_headers_invalid: Family<HeaderLabels, Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registering {
            registry: Registry::with_prefix(PREFIX),
            families: Vec::new(),
        };
        let t = Telemetry {
            decisions: Family::default(),
            scorer_scores: Family::new_with_constructor(fraction_histogram),
            winner_scorer_share: Family::new_with_constructor(fraction_histogram),
            prefix_match_ratio: fraction_histogram(),
            pd_decisions: Family::default(),
            pd: PdMetrics::default(),
            no_endpoint: Counter::default(),
            shed: Counter::default(),
            proxy_requests: Family::default(),
            ttft: Family::new_with_constructor(latency_histogram),
            inter_token_latency: Family::new_with_constructor(latency_histogram),
            request_duration: Family::new_with_constructor(latency_histogram),
            config_reloads: Family::default(),
            config_info: Family::default(),
            scorer_weights: Family::default(),
            endpoints: Family::default(),
            scrape_errors: Counter::default(),
            rejected_samples: Counter::default(),
            endpoint_waiting: Family::default(),
            endpoint_running: Family::default(),
            endpoint_kv_cache_usage: Family::default(),
            endpoint_prefix_precise: Family::default(),
            kv_events_refused: Family::default(),
            kv_events_messages: Family::default(),
            kv_events_replayed: Family::default(),
            ttft_prediction_error: prediction_error_histogram(),
            itl_prediction_error: prediction_error_histogram(),
            ttft_observations: Family::default(),
            engine_tokenize: Family::default(),
            latency_model_coefficient: Family::default(),
            slo_predicted_misses: Family::default(),
            slo_headers_invalid: Family::default(),
            registry: Registry::default(),
            families: Vec::new(),
        };
        // The latency histograms of both front ends start empty, so the first
        // requests show as an increase (rate() skips a series' first sample).
        for frontend in crate::frontend::latency::Frontend::ALL {
            let labels = frontend.label();
            drop(t.ttft.get_or_create(&labels));
            drop(t.inter_token_latency.get_or_create(&labels));
            drop(t.request_duration.get_or_create(&labels));
        }
        // Every objective and header starts at 0: the SLO panels find their series
        // before the first miss or bad header.
        for (objective, headers) in crate::frontend::slo::OBJECTIVES {
            t.slo_predicted_misses
                .get_or_create(&ObjectiveLabels { objective })
                .inc_by(0);
            for header in headers {
                t.slo_headers_invalid
                    .get_or_create(&HeaderLabels { header })
                    .inc_by(0);
            }
        }
        // Every P/D decision and TTFT-observation outcome starts at 0 too: a
        // rarer outcome seen late adds no series (label cardinality is fixed per pod).
        for outcome in PD_DECISION_OUTCOMES {
            t.pd_decisions
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc_by(0);
        }
        for outcome in TTFT_OBSERVATION_OUTCOMES {
            t.ttft_observations
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc_by(0);
        }
        for outcome in ENGINE_TOKENIZE_OUTCOMES {
            t.engine_tokenize
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc_by(0);
        }
        registry.add(
            "scheduling_decisions",
            "Requests routed, per endpoint and scheduling profile",
            t.decisions.clone(),
        );
        registry.add(
            "scorer_score",
            "Unweighted score of the chosen endpoint, per scorer and profile",
            t.scorer_scores.clone(),
        );
        registry.add(
            "winner_scorer_share",
            "Share of the chosen endpoint's total score each scorer contributed (weight x score / total), per scorer and profile",
            t.winner_scorer_share.clone(),
        );
        registry.add(
            "prefix_match_ratio",
            "Fraction of prompt blocks the chosen decode endpoint already held",
            t.prefix_match_ratio.clone(),
        );
        registry.add(
            "pd_decisions",
            "P/D decider outcomes (disaggregated or aggregated)",
            t.pd_decisions.clone(),
        );
        for name in t.pd.register(&mut registry.registry) {
            registry.families.push(format!("{PREFIX}_{name}"));
        }
        registry.add(
            "no_endpoint",
            "Requests refused because no endpoint could serve them",
            t.no_endpoint.clone(),
        );
        registry.add(
            "requests_shed",
            "Requests refused with 429 because the admission limit was reached",
            t.shed.clone(),
        );
        registry.add(
            "proxy_requests",
            "Requests answered by the HTTP proxy, per path and status code",
            t.proxy_requests.clone(),
        );
        registry.add(
            "time_to_first_token_seconds",
            "Time from request arrival to the first response byte from the model server, per front end",
            t.ttft.clone(),
        );
        registry.add(
            "inter_token_latency_seconds",
            "Time between streamed response chunks (about one token each), per front end",
            t.inter_token_latency.clone(),
        );
        registry.add(
            "request_duration_seconds",
            "Time from request arrival to the end of the response, per front end",
            t.request_duration.clone(),
        );
        registry.add(
            "config_reloads",
            "Config loads, outcome applied or rejected",
            t.config_reloads.clone(),
        );
        registry.add(
            "config_info",
            "1 for the hash of the EndpointPickerConfig in force",
            t.config_info.clone(),
        );
        registry.add(
            "scorer_weight",
            "Weight of each scorer per scheduling profile in the config in force",
            t.scorer_weights.clone(),
        );
        registry.add(
            "endpoints",
            "Endpoints in the pool, per role",
            t.endpoints.clone(),
        );
        registry.add(
            "metrics_scrape_errors",
            "Failed scrapes of model-server /metrics",
            t.scrape_errors.clone(),
        );
        registry.add(
            "metrics_rejected_samples",
            "Model-server metric samples ignored as NaN, negative or absurd",
            t.rejected_samples.clone(),
        );
        registry.add(
            "endpoint_waiting_requests",
            "Waiting requests per endpoint, from its last scrape",
            t.endpoint_waiting.clone(),
        );
        registry.add(
            "endpoint_running_requests",
            "Running requests per endpoint, from its last scrape",
            t.endpoint_running.clone(),
        );
        registry.add(
            "endpoint_kv_cache_usage",
            "KV-cache use (0 to 1) per endpoint, from its last scrape",
            t.endpoint_kv_cache_usage.clone(),
        );
        registry.add(
            "endpoint_prefix_precise",
            "1 while the endpoint's prefix matches come from its engine's KV events, 0 while the approximate index stands in",
            t.endpoint_prefix_precise.clone(),
        );
        registry.add(
            "kv_events_refused",
            "KV-event messages or events refused, by endpoint and cause",
            t.kv_events_refused.clone(),
        );
        registry.add(
            "kv_events_messages",
            "KV-event messages applied, by endpoint",
            t.kv_events_messages.clone(),
        );
        registry.add(
            "kv_events_replayed",
            "KV-event messages applied from a pod's replay endpoint (what its events port did not deliver)",
            t.kv_events_replayed.clone(),
        );
        registry.add(
            "ttft_prediction_error_ratio",
            "Relative error of each TTFT prediction, |predicted - observed| / observed",
            t.ttft_prediction_error.clone(),
        );
        registry.add(
            "itl_prediction_error_ratio",
            "Relative error of each inter-token latency prediction (a streamed response's mean), |predicted - observed| / observed",
            t.itl_prediction_error.clone(),
        );
        registry.add(
            "ttft_observations",
            "TTFT observations offered to the latency models, by outcome: learned, clipped (an outlier, learned in part) or refused",
            t.ttft_observations.clone(),
        );
        registry.add(
            "engine_tokenize",
            "Prompts the precise prefix index needed token ids for, by outcome: cached, tokenized (by an engine's /tokenize), failed, timeout or no_endpoint (each of the last three matched against the approximate index)",
            t.engine_tokenize.clone(),
        );
        registry.add(
            "latency_model_coefficient",
            "Each endpoint's fitted TTFT model, per term",
            t.latency_model_coefficient.clone(),
        );
        registry.add(
            "slo_predicted_misses",
            "Requests whose latency objective no endpoint was predicted to meet, per objective",
            t.slo_predicted_misses.clone(),
        );
        registry.add(
            "slo_headers_invalid",
            "Objective headers ignored because their value was not a positive number of milliseconds, per header",
            t.slo_headers_invalid.clone(),
        );
        Telemetry {
            registry: registry.registry,
            families: registry.families,
            ..t
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// A config was put in force: count it and expose its hash and weights.
    pub fn record_config_applied(&self, config: &SchedulerConfig) {
        self.config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: "applied".into(),
            })
            .inc();
        self.config_info.clear();
        self.config_info
            .get_or_create(&ConfigLabels {
                hash: config.hash.clone(),
            })
            .set(1);
        self.scorer_weights.clear();
        for profile in std::iter::once(&config.decode).chain(&config.prefill) {
            for scorer in &profile.scorers {
                self.scorer_weights
                    .get_or_create(&ScorerLabels {
                        profile: profile.name.clone(),
                        scorer: scorer.name.clone(),
                    })
                    .set(scorer.weight);
            }
        }
    }

    /// A config was refused; the one in force stays.
    pub fn record_config_rejected(&self) {
        self.config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: "rejected".into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_config_in_force_with_its_hash_and_weights() {
        let t = Telemetry::new();
        let config = SchedulerConfig::default_config();
        t.record_config_applied(&config);
        t.record_config_rejected();
        let text = t.encode();
        assert!(
            text.contains("llmd_epp_config_reloads_total{outcome=\"applied\"} 1"),
            "{text}"
        );
        assert!(text.contains("llmd_epp_config_reloads_total{outcome=\"rejected\"} 1"));
        assert!(text.contains(&format!(
            "llmd_epp_config_info{{hash=\"{}\"}} 1",
            config.hash
        )));
        assert!(
            text.contains(
                "llmd_epp_scorer_weight{profile=\"default\",scorer=\"prefix-cache-scorer\"} 3.0"
            ),
            "{text}"
        );
    }

    #[test]
    fn event_counters_start_at_zero_for_every_label_value() {
        let text = Telemetry::new().encode();
        for line in [
            "llmd_epp_slo_predicted_misses_total{objective=\"tpot\"} 0",
            "llmd_epp_slo_headers_invalid_total{header=\"x-slo-ttft-ms\"} 0",
            "llmd_epp_pd_failures_total{stage=\"decode\",cause=\"unreachable\"} 0",
            "llmd_epp_pd_failures_total{stage=\"prefill\",cause=\"no_kv_transfer_params\"} 0",
            "llmd_epp_time_to_first_token_seconds_count{frontend=\"ext-proc\"} 0",
            "llmd_epp_request_duration_seconds_count{frontend=\"proxy\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
