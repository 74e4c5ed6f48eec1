//! The stateful EndpointPicker: the pool, the prefix index and the config in force,
//! glued to the pure scheduler. Both front ends (ext-proc and the HTTP proxy) call
//! [`EndpointPicker::pick`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::frontend::request::InferenceRequest;
use crate::frontend::slo::Objectives;
use crate::pool::endpoint::{EndpointRegistry, EndpointState, ScrapedMetrics};
use crate::predict::pod::Priors;
use crate::predict::{FleetModel, Prediction, Ticket};
use crate::prefix::engine_tokenizer::EngineTokenizer;
use crate::prefix::engine_tokens::sim_token_ids;
use crate::prefix::hash::hash_prompt;
use crate::prefix::index::PrefixIndex;
use crate::prefix::kv_subscriber::KvSubscriber;
use crate::prefix::precise::{block_keys, root_key};
use crate::scheduling::candidate::{Candidate, Load, RequestFeatures};
use crate::scheduling::scorer::latency;
use crate::scheduling::{Decision, explain, schedule};
use crate::telemetry::{
    DecisionLabels, EndpointLabels, ObjectiveLabels, OutcomeLabels, ScorerLabels, Telemetry,
};
use llmd_api::endpoint_picker_config::{SchedulerConfig, TokenSource};

/// What a pick needs from a request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickRequest<'a> {
    pub model: &'a str,
    pub prompt: &'a str,
    /// Value of the `x-session-token` header.
    pub session_token: Option<&'a str>,
    /// An endpoint not to pick (one that just refused a connection).
    pub exclude: Option<&'a str>,
    /// Explain the decision (`x-llmd-explain: true`): keeps the best losers, which
    /// is work a pick otherwise never does.
    pub explain: bool,
    /// The request's latency objectives.
    pub slo: Objectives,
    /// The prompt's token ids as the engine computed them
    /// ([`EndpointPicker::engine_tokens`]), for the precise index.
    pub tokens: Option<&'a [u32]>,
}

/// A decision with the live endpoint states it names.
#[derive(Debug)]
pub struct Routing {
    pub decision: Decision,
    pub decode: Arc<EndpointState>,
    pub prefill: Option<Arc<EndpointState>>,
    /// The `x-llmd-explain` JSON, when asked for.
    pub explanation: Option<String>,
    /// The request's place in the latency model of the endpoint that prefills it:
    /// call [`Ticket::first_token`] when its first token arrives, drop it at the end.
    pub ticket: Option<Ticket>,
    /// The objectives (`ttft`, `tpot`) the endpoints chosen were not predicted to
    /// meet (none was).
    pub slo_misses: Vec<&'static str>,
}

/// Keeps only endpoints with fresh metrics when any has them: an endpoint whose
/// `/metrics` stopped answering for longer than the staleness limit is presumed down
/// (or not yet up). When that would leave no endpoint that serves decode (start-up,
/// scrape trouble, a rolling update whose new pod is Ready but not scraped yet)
/// all stay, so routing never stops for lack of signals.
fn drop_unhealthy(
    candidates: Vec<Candidate>,
    states: Vec<Arc<EndpointState>>,
) -> (Vec<Candidate>, Vec<Arc<EndpointState>>) {
    let fresh_decoder = candidates
        .iter()
        .any(|c| c.load.is_some() && c.role.serves_decode());
    if !fresh_decoder || candidates.iter().all(|c| c.load.is_some()) {
        return (candidates, states);
    }
    candidates
        .into_iter()
        .zip(states)
        .filter(|(c, _)| c.load.is_some())
        .unzip()
}

/// The token a client sends back in `x-session-token` to stay on an endpoint.
pub fn session_token_for(address: &str) -> String {
    URL_SAFE_NO_PAD.encode(address)
}

fn session_endpoint(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    String::from_utf8(bytes).ok()
}

pub struct EndpointPicker {
    pub registry: Arc<EndpointRegistry>,
    pub index: PrefixIndex,
    pub telemetry: Arc<Telemetry>,
    config: ArcSwap<SchedulerConfig>,
    staleness: Duration,
    /// The engines' KV events, when precise prefix routing is on.
    kv_events: Option<Arc<KvSubscriber>>,
    /// The TTFT model over every endpoint, each endpoint's prior.
    fleet_latency: Arc<FleetModel>,
    /// Token ids from the engines' `/tokenize`, for the precise index.
    tokenizer: EngineTokenizer,
}

impl EndpointPicker {
    pub fn new(
        registry: Arc<EndpointRegistry>,
        config: SchedulerConfig,
        telemetry: Arc<Telemetry>,
        staleness: Duration,
    ) -> Self {
        telemetry.record_config_applied(&config);
        let cache_size = match config.tokens {
            TokenSource::Engine { cache_size, .. } => cache_size,
            TokenSource::Simulator => 0,
        };
        EndpointPicker {
            registry,
            index: PrefixIndex::new(config.prefix.lru_capacity_per_server),
            tokenizer: EngineTokenizer::new(telemetry.clone(), cache_size),
            telemetry,
            config: ArcSwap::from_pointee(config),
            staleness,
            kv_events: None,
            fleet_latency: Arc::default(),
        }
    }

    /// Matches prompts against the blocks engines report in their KV events, for
    /// each pod whose events flow (the approximate index stands in for the others).
    pub fn with_kv_events(mut self, subscriber: Arc<KvSubscriber>) -> Self {
        self.kv_events = Some(subscriber);
        self
    }

    pub fn config(&self) -> Arc<SchedulerConfig> {
        self.config.load_full()
    }

    /// Puts `config` in force atomically; the prefix index is kept (resized only).
    pub fn apply_config(&self, config: SchedulerConfig) {
        let old = self.config.load();
        if old.prefix.block_size_tokens != config.prefix.block_size_tokens {
            // Hashes of another block size never match again; they age out of the LRU.
            tracing::warn!(
                old = old.prefix.block_size_tokens,
                new = config.prefix.block_size_tokens,
                "blockSizeTokens changed: prefix index restarts warming"
            );
        }
        self.index
            .set_capacity(config.prefix.lru_capacity_per_server);
        if let Some(sub) = &self.kv_events {
            sub.configure(config.kv_events);
        }
        if let TokenSource::Engine { cache_size, .. } = config.tokens {
            self.tokenizer.resize(cache_size);
        }
        self.telemetry.record_config_applied(&config);
        self.config.store(Arc::new(config));
    }

    /// Stores a scrape and lowers the index bound to the engine's real KV capacity.
    pub fn record_scrape(
        &self,
        state: &EndpointState,
        metrics: llmd_api::engine_metrics::EngineMetrics,
    ) {
        if let Some(tokens) = metrics.kv_capacity_tokens() {
            let block = self.config.load().prefix.block_size_tokens as u64;
            let blocks = (tokens / block.max(1)) as usize;
            self.index
                .set_engine_capacity(&state.endpoint.address, blocks);
            if let Some(sub) = &self.kv_events {
                let precise = sub.index();
                let blocks = tokens / (precise.block_size() as u64).max(1);
                precise.set_engine_capacity(&state.endpoint.address, blocks as usize);
            }
        }
        let labels = EndpointLabels {
            endpoint: state.endpoint.address.to_string(),
        };
        state
            .latency()
            .observe_scrape(metrics.running, metrics.waiting, metrics.kv_usage);
        let t = &self.telemetry;
        t.endpoint_waiting
            .get_or_create(&labels)
            .set(metrics.waiting as i64);
        t.endpoint_running
            .get_or_create(&labels)
            .set(metrics.running as i64);
        t.endpoint_kv_cache_usage
            .get_or_create(&labels)
            .set(metrics.kv_usage);
        state.metrics.store(Some(Arc::new(ScrapedMetrics {
            metrics,
            at: Instant::now(),
            in_flight_at_scrape: state.in_flight.load(Ordering::Relaxed),
        })));
    }

    /// Current candidates with their signals and prefix matches: of the engine-keyed
    /// `precise` blocks for pods whose KV events flow, else of the approximate `hashes`.
    pub fn candidates(
        &self,
        hashes: &[u64],
        precise: Option<&[u64]>,
    ) -> (Vec<Candidate>, Vec<Arc<EndpointState>>) {
        let pool = self.registry.snapshot();
        let now = Instant::now();
        let states: Vec<Arc<EndpointState>> = pool.values().cloned().collect();
        let addresses = || states.iter().map(|s| &*s.endpoint.address);
        let mut matched = self.index.matched_blocks(addresses(), hashes);
        // `precise` is given only while precise mode is on.
        if let (Some(sub), Some(keys)) = (&self.kv_events, precise) {
            let exact = sub.matched_blocks(addresses(), keys, now);
            for (m, exact) in matched.iter_mut().zip(exact) {
                // Both count blocks of the same size from the prompt's start; the
                // approximate count is capped at the prompt's engine block count.
                *m = exact.unwrap_or((*m).min(keys.len()));
            }
        }
        let candidates: Vec<Candidate> = states
            .iter()
            .zip(matched)
            .map(|(s, matched_blocks)| {
                let in_flight = s.in_flight.load(Ordering::Relaxed);
                let load = s.metrics.load().as_ref().and_then(|m| {
                    (now.saturating_duration_since(m.at) <= self.staleness).then(|| Load {
                        // Requests sent since the scrape count as waiting: without
                        // this, every pick between two scrapes sees the same queues
                        // and herds onto one endpoint.
                        waiting: m.metrics.waiting
                            + in_flight.saturating_sub(m.in_flight_at_scrape) as f64,
                        running: m.metrics.running,
                        kv_usage: m.metrics.kv_usage,
                    })
                });
                let lora = s.metrics.load().as_ref().and_then(|m| {
                    (now.saturating_duration_since(m.at) <= self.staleness)
                        .then(|| m.metrics.lora.clone())
                        .flatten()
                });
                Candidate {
                    address: s.endpoint.address.clone(),
                    role: s.endpoint.role,
                    load,
                    in_flight,
                    matched_blocks,
                    predicted_ttft: None,
                    predicted_itl: None,
                    kv_compatibility: s.endpoint.kv_compatibility.clone(),
                    lora,
                }
            })
            .collect();
        drop_unhealthy(candidates, states)
    }

    /// `req`'s token ids from an engine of the pool, when the precise index is on and
    /// its token-producer asks the engine (`None` otherwise, or when no engine
    /// answered in time: the approximate index then stands in for this request).
    pub async fn engine_tokens(&self, req: &InferenceRequest) -> Option<Arc<[u32]>> {
        self.kv_events.as_ref().filter(|s| s.enabled())?;
        let TokenSource::Engine { timeout_ms, .. } = self.config.load().tokens else {
            return None;
        };
        self.tokenizer
            .tokens(&self.registry, req, Duration::from_millis(timeout_ms))
            .await
    }

    /// Picks endpoints for a request and records the prompt in the prefix index.
    /// `None` when no endpoint can serve it.
    pub fn pick(&self, req: PickRequest<'_>) -> Option<Routing> {
        let config = self.config.load_full();
        let p = &config.prefix;
        let blocks = hash_prompt(
            req.model,
            req.prompt,
            p.block_size_tokens,
            p.max_prefix_blocks,
        );
        // With KV events: the prompt as the engine tokenizes it, keyed like its events.
        // Without them (not asked, or not in time) the approximate index stands in.
        let kv_events = self.kv_events.as_ref().filter(|s| s.enabled());
        let engine = kv_events.and_then(|sub| {
            let simulated;
            let tokens = match (req.tokens, config.tokens) {
                (Some(t), _) => t,
                (None, TokenSource::Simulator) => {
                    simulated = sim_token_ids(req.prompt);
                    &simulated
                }
                (None, TokenSource::Engine { .. }) => return None,
            };
            let block = sub.index().block_size();
            let keys = block_keys(root_key(None), tokens, block, p.max_prefix_blocks);
            Some((keys, tokens.len(), block))
        });
        let precise = engine.as_ref().map(|(keys, _, _)| keys.as_slice());
        let (mut candidates, mut states) = self.candidates(&blocks.hashes, precise);
        // Never the excluded endpoint; for a model (an adapter loaded at run time),
        // only endpoints that list it or have not said what they serve.
        (candidates, states) = candidates
            .into_iter()
            .zip(states)
            .filter(|(c, s)| req.exclude != Some(&*c.address) && s.may_serve(req.model))
            .unzip();
        let (prompt_blocks, block_size_tokens, prompt_tokens) = match &engine {
            Some((keys, tokens, block)) => (keys.len(), *block, *tokens),
            None => (blocks.hashes.len(), blocks.block_size, blocks.total_tokens),
        };
        let features = RequestFeatures {
            model: req.model.to_string(),
            prompt_blocks,
            block_size_tokens,
            prompt_tokens,
            session_endpoint: req.session_token.and_then(session_endpoint),
            slo_ttft: req.slo.ttft,
            slo_tpot: req.slo.tpot,
        };
        let now = Instant::now();
        let (prior, itl_prior) = self.fleet_latency.priors();
        let priors = Priors {
            ttft: &prior,
            itl: &itl_prior,
        };
        let predictions: Vec<Prediction> = candidates
            .iter_mut()
            .zip(&states)
            .map(|(c, s)| {
                let cached = c.matched_blocks * features.block_size_tokens;
                let uncached = features.prompt_tokens.saturating_sub(cached);
                let p =
                    s.latency()
                        .predict(uncached, cached.min(features.prompt_tokens), now, priors);
                c.predicted_ttft = Some(p.ttft);
                c.predicted_itl = Some(p.itl);
                p
            })
            .collect();
        let runners_up = if req.explain { explain::RUNNERS_UP } else { 0 };
        let Some(decision) = schedule(
            &config,
            &candidates,
            &features,
            runners_up,
            &mut rand::rng(),
        ) else {
            self.telemetry.no_endpoint.inc();
            return None;
        };
        let position = |addr: &str| states.iter().position(|s| &*s.endpoint.address == addr);
        let find = |addr: &str| position(addr).map(|i| states[i].clone());
        let decode = find(&decision.decode.address)?;
        let prefill = decision.prefill.as_ref().and_then(|p| find(&p.address));
        self.index.record(&decode.endpoint.address, &blocks.hashes);
        if let Some(p) = &prefill {
            self.index.record(&p.endpoint.address, &blocks.hashes);
        }
        let computes = decision.prefill.as_ref().unwrap_or(&decision.decode);
        if let (Some(sub), Some((keys, _, _))) = (kv_events, &engine) {
            // The pod that computes the prompt stores the blocks it lacked: they count
            // as its own until its engine reports them (and it must report them).
            sub.routed(&computes.address, keys, computes.matched_blocks, now);
            if decision.prefill.is_some() {
                // The decode pod receives the prompt's KV over the fabric.
                let d = &decision.decode;
                sub.index().speculate(&d.address, keys, now);
            }
        }
        // The endpoint that computes the prompt carries the prediction to learn from.
        let ticket = position(&computes.address).map(|i| {
            Ticket::dispatch(
                states[i].clone(),
                predictions[i],
                features.prompt_tokens,
                (prior, itl_prior),
                self.fleet_latency.clone(),
                self.telemetry.clone(),
            )
        });
        self.observe(&decision, features.prompt_blocks);
        // The first token comes from the pod that prefills; the others from where
        // the decode profile chose.
        let slo_misses: Vec<&'static str> = [
            (
                "ttft",
                latency::meets_ttft(computes.predicted_ttft, &features),
            ),
            (
                "tpot",
                latency::meets_tpot(decision.decode.predicted_itl, &features),
            ),
        ]
        .into_iter()
        .filter(|(_, met)| !met)
        .map(|(objective, _)| objective)
        .collect();
        for objective in &slo_misses {
            self.telemetry
                .slo_predicted_misses
                .get_or_create(&ObjectiveLabels { objective })
                .inc();
        }
        let explanation = req.explain.then(|| explain::render(&decision, &features));
        Some(Routing {
            decision,
            decode,
            prefill,
            explanation,
            ticket,
            slo_misses,
        })
    }

    fn observe(&self, decision: &Decision, prompt_blocks: usize) {
        let t = &self.telemetry;
        for pick in std::iter::once(&decision.decode).chain(decision.prefill.as_ref()) {
            t.decisions
                .get_or_create(&DecisionLabels {
                    endpoint: pick.address.to_string(),
                    profile: pick.profile.clone(),
                })
                .inc();
            for s in &pick.scores {
                let labels = ScorerLabels {
                    profile: pick.profile.clone(),
                    scorer: s.scorer.clone(),
                };
                t.scorer_scores.get_or_create(&labels).observe(s.score);
                // What this scorer contributed to the win; no share of nothing.
                if pick.total > 0.0 {
                    t.winner_scorer_share
                        .get_or_create(&labels)
                        .observe((s.weight * s.score / pick.total).clamp(0.0, 1.0));
                }
            }
        }
        if prompt_blocks > 0 {
            t.prefix_match_ratio
                .observe(decision.decode.matched_blocks as f64 / prompt_blocks as f64);
        }
        let outcome = if decision.prefill.is_some() {
            "disaggregated"
        } else if decision.no_compatible_prefill {
            "aggregated_no_kv_compatible_prefill"
        } else {
            "aggregated"
        };
        t.pd_decisions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::endpoint::{Endpoint, Role};

    fn picker(endpoints: &[(&str, Role)]) -> EndpointPicker {
        let reg = Arc::new(EndpointRegistry::new());
        reg.replace_all(endpoints.iter().map(|(a, r)| Endpoint::new(*a, *r)));
        EndpointPicker::new(
            reg,
            SchedulerConfig::default_config(),
            Arc::new(Telemetry::new()),
            Duration::from_secs(2),
        )
    }

    fn long_prompt(tenant: &str) -> String {
        format!("{tenant} {}", "shared context words ".repeat(40))
    }

    #[test]
    fn repeated_prefixes_stick_to_the_first_endpoint() {
        let p = picker(&[
            ("a:1", Role::Decode),
            ("b:1", Role::Decode),
            ("c:1", Role::Decode),
        ]);
        let prompt = long_prompt("tenant1");
        let first = p
            .pick(PickRequest {
                model: "m",
                prompt: &prompt,
                session_token: None,
                ..PickRequest::default()
            })
            .expect("routed");
        for _ in 0..10 {
            let again = p
                .pick(PickRequest {
                    model: "m",
                    prompt: &format!("{prompt} question"),
                    session_token: None,
                    ..PickRequest::default()
                })
                .expect("routed");
            assert_eq!(again.decision.decode.address, first.decision.decode.address);
        }
    }

    #[test]
    fn session_token_pins_the_endpoint_when_configured() {
        let p = picker(&[("a:1", Role::Decode), ("b:1", Role::Decode)]);
        let mut cfg = SchedulerConfig::default_config();
        cfg.decode.scorers = vec![llmd_api::endpoint_picker_config::WeightedScorer {
            name: "session-affinity-scorer".into(),
            kind: llmd_api::endpoint_picker_config::Scorer::SessionAffinity,
            weight: 1.0,
        }];
        p.apply_config(cfg);
        let token = session_token_for("b:1");
        for _ in 0..10 {
            let r = p
                .pick(PickRequest {
                    model: "m",
                    prompt: "hi",
                    session_token: Some(&token),
                    ..PickRequest::default()
                })
                .expect("routed");
            assert_eq!(&*r.decision.decode.address, "b:1");
        }
    }

    #[test]
    fn an_adapter_goes_only_where_it_is_loaded_until_every_endpoint_says() {
        let p = picker(&[("a:1", Role::Decode), ("b:1", Role::Decode)]);
        let lists = |address: &str, models: &[&str]| {
            let state = p.registry.get(address).expect("registered");
            state.models.store(Some(Arc::new(
                models.iter().map(|m| m.to_string()).collect(),
            )));
        };
        let pick = |model: &str, prompt: &str| {
            p.pick(PickRequest {
                model,
                prompt,
                ..PickRequest::default()
            })
            .map(|r| r.decision.decode.address.to_string())
        };
        lists("a:1", &["base"]);
        // b has not answered /v1/models yet: it may serve anything.
        for i in 0..8 {
            assert_eq!(pick("sql", &format!("q{i}")).as_deref(), Some("b:1"));
        }
        lists("b:1", &["base"]);
        assert_eq!(pick("sql", "q"), None, "nobody lists the adapter");
        lists("a:1", &["base", "sql"]);
        for i in 0..8 {
            assert_eq!(pick("sql", &format!("r{i}")).as_deref(), Some("a:1"));
        }
        // The base model (and a request naming none) goes anywhere.
        let spread: std::collections::HashSet<String> = (0..40)
            .filter_map(|i| pick(if i % 2 == 0 { "base" } else { "" }, &format!("s{i}")))
            .collect();
        assert_eq!(spread.len(), 2, "{spread:?}");
    }

    #[test]
    fn an_empty_pool_refuses_and_counts() {
        let p = picker(&[]);
        assert!(p.pick(PickRequest::default()).is_none());
        assert_eq!(p.telemetry.no_endpoint.get(), 1);
    }

    #[test]
    fn requests_sent_since_the_last_scrape_count_as_waiting() {
        let p = picker(&[("a:1", Role::Decode)]);
        let state = p.registry.get("a:1").expect("present");
        let m = llmd_api::engine_metrics::EngineMetrics {
            waiting: 2.0,
            ..Default::default()
        };
        p.record_scrape(&state, m);
        let _g1 = crate::pool::endpoint::InFlightGuard::new(state.clone());
        let _g2 = crate::pool::endpoint::InFlightGuard::new(state.clone());
        let (c, _) = p.candidates(&[], None);
        assert_eq!(c[0].load.map(|l| l.waiting), Some(4.0));
    }

    #[test]
    fn endpoints_without_fresh_metrics_are_dropped_while_others_have_them() {
        let p = picker(&[("up:1", Role::Decode), ("down:1", Role::Decode)]);
        let (c, _) = p.candidates(&[], None);
        assert_eq!(c.len(), 2, "no signals anywhere: keep all");
        let up = p.registry.get("up:1").expect("present");
        p.record_scrape(&up, Default::default());
        let (c, s) = p.candidates(&[], None);
        assert_eq!(c.len(), 1);
        assert_eq!(&*c[0].address, "up:1");
        assert_eq!(&*s[0].endpoint.address, "up:1");
    }

    #[test]
    fn a_fresh_prefill_endpoint_alone_does_not_drop_an_unscraped_decoder() {
        // Mid-upgrade: the new decode pod is Ready but not scraped yet.
        let p = picker(&[("p:1", Role::Prefill), ("new:1", Role::Decode)]);
        let prefill = p.registry.get("p:1").expect("present");
        p.record_scrape(&prefill, Default::default());
        let (c, _) = p.candidates(&[], None);
        assert_eq!(c.len(), 2, "the decoder stays: routing never stops");
    }

    #[test]
    fn stale_metrics_are_ignored() {
        let p = EndpointPicker::new(
            Arc::new(EndpointRegistry::new()),
            SchedulerConfig::default_config(),
            Arc::new(Telemetry::new()),
            Duration::ZERO,
        );
        p.registry.replace_all([Endpoint::new("a:1", Role::Decode)]);
        let state = p.registry.get("a:1").expect("present");
        p.record_scrape(&state, Default::default());
        std::thread::sleep(Duration::from_millis(2));
        let (c, _) = p.candidates(&[], None);
        assert_eq!(c[0].load, None);
    }

    /// The value of the sample `name{labels}` in the exposition text.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn the_winners_total_is_split_into_scorer_shares() {
        let p = picker(&[("a:1", Role::Decode)]);
        let state = p.registry.get("a:1").expect("present");
        let m = llmd_api::engine_metrics::EngineMetrics {
            kv_usage: 0.5,
            ..Default::default()
        };
        p.record_scrape(&state, m);
        // No prefix match (0 x 3), the only queue (1 x 2), half the KV free (0.5 x 2).
        p.pick(PickRequest {
            model: "m",
            prompt: "hi",
            ..Default::default()
        })
        .expect("routed");
        let text = p.telemetry.encode();
        let share = |scorer: &str, what: &str| {
            let series = format!(
                "llmd_epp_winner_scorer_share_{what}{{profile=\"default\",scorer=\"{scorer}\"}}"
            );
            sample(&text, &series).unwrap_or_else(|| panic!("{series} in {text}"))
        };
        assert!((share("queue-scorer", "sum") - 2.0 / 3.0).abs() < 1e-9);
        assert!((share("kv-cache-utilization-scorer", "sum") - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(share("prefix-cache-scorer", "sum"), 0.0);
        assert_eq!(share("queue-scorer", "count"), 1.0);
        assert!(
            text.contains(
                "llmd_epp_winner_scorer_share_bucket{le=\"0.6\",profile=\"default\",scorer=\"queue-scorer\"} 0"
            ) && text.contains(
                "llmd_epp_winner_scorer_share_bucket{le=\"0.7\",profile=\"default\",scorer=\"queue-scorer\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_winner_with_a_zero_total_records_no_share() {
        let p = picker(&[("a:1", Role::Decode)]);
        let mut cfg = SchedulerConfig::default_config();
        for s in &mut cfg.decode.scorers {
            s.weight = 0.0;
        }
        p.apply_config(cfg);
        p.pick(PickRequest {
            model: "m",
            prompt: "hi",
            ..Default::default()
        })
        .expect("routed");
        let text = p.telemetry.encode();
        assert!(text.contains("llmd_epp_scorer_score_count"), "{text}");
        assert!(
            !text.contains("llmd_epp_winner_scorer_share_count"),
            "{text}"
        );
    }

    #[test]
    fn an_explanation_is_rendered_only_when_asked_for() {
        let p = picker(&[("a:1", Role::Decode), ("b:1", Role::Decode)]);
        let quiet = p.pick(PickRequest::default()).expect("routed");
        assert_eq!(quiet.explanation, None);
        assert!(quiet.decision.decode.runners_up.is_empty());
        let explained = p
            .pick(PickRequest {
                explain: true,
                ..Default::default()
            })
            .expect("routed");
        let json: serde_json::Value =
            serde_json::from_str(explained.explanation.as_deref().unwrap_or_default())
                .expect("valid JSON");
        let winner = &*explained.decision.decode.address;
        assert_eq!(json["decode"]["endpoint"], winner);
        let other = if winner == "a:1" { "b:1" } else { "a:1" };
        assert_eq!(json["decodeCandidates"][0]["endpoint"], other);
    }
}
