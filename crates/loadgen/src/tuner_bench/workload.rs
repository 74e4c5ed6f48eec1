//! A phased workload, as a YAML file a user can write, and its seeded request
//! schedule: every configuration of a run sees the same requests at the same times.
//!
//! ```yaml
//! fleet: {pods: 4, kvCacheBlocks: 1024, blockSize: 16, maxNumSeqs: 5}   # optional
//! phases:
//! - {name: steady, seconds: 60, rate: 6, tenants: 8, sharedPrefixTokens: 600,
//!    questionTokens: 40, outputTokens: 8, skew: 0}    # skew: Zipf exponent over tenants
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// The model servers every configuration runs on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Fleet {
    pub pods: usize,
    pub kv_cache_blocks: u32,
    pub block_size: u32,
    pub max_num_seqs: u32,
    /// llm-d-inference-sim latency model (Go durations).
    pub prefill_overhead: String,
    pub prefill_time_per_token: String,
    pub inter_token_latency: String,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            pods: 4,
            kv_cache_blocks: 1024,
            block_size: 16,
            max_num_seqs: 5,
            prefill_overhead: "5ms".into(),
            prefill_time_per_token: "1ms".into(),
            inter_token_latency: "5ms".into(),
        }
    }
}

/// One phase of the workload.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    /// Requests per second (Poisson arrivals).
    pub rate: f64,
    /// Tenants; each has its own shared context.
    #[serde(default = "one")]
    pub tenants: usize,
    /// Tokens of each tenant's shared context (0: every prompt is unique).
    #[serde(default)]
    pub shared_prefix_tokens: usize,
    /// Tokens of each request's own part.
    pub question_tokens: usize,
    pub output_tokens: u32,
    /// Zipf exponent over tenants: 0 is uniform, 1.2 makes a few tenants hot.
    #[serde(default)]
    pub skew: f64,
    /// Number of the first tenant: phases with different offsets have different
    /// tenants (tenant churn).
    #[serde(default)]
    pub tenant_offset: usize,
}

fn one() -> usize {
    1
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub fleet: Fleet,
    pub phases: Vec<Phase>,
    /// Seconds per tuning slice of the tuned run (the compressed autoTune interval).
    #[serde(default = "default_slice")]
    pub slice_seconds: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_slice() -> f64 {
    3.0
}

fn default_seed() -> u64 {
    7
}

impl Workload {
    /// Reads and checks a workload file's text.
    pub fn parse(text: &str) -> Result<Workload, String> {
        let w: Workload = serde_yaml::from_str(text).map_err(|e| format!("workload: {e}"))?;
        if w.phases.is_empty() {
            return Err("workload: no phases".into());
        }
        for p in &w.phases {
            if !(p.seconds > 0.0 && p.rate > 0.0 && p.tenants > 0 && p.output_tokens > 0) {
                return Err(format!(
                    "phase {}: seconds, rate, tenants and outputTokens must be positive",
                    p.name
                ));
            }
            if !(p.skew >= 0.0 && p.skew.is_finite()) {
                return Err(format!("phase {}: skew must be >= 0", p.name));
            }
        }
        if w.slice_seconds.is_nan() || w.slice_seconds <= 0.0 || w.fleet.pods == 0 {
            return Err("workload: sliceSeconds and fleet.pods must be positive".into());
        }
        Ok(w)
    }

    pub fn seconds(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }

    /// The requests, in arrival order.
    pub fn schedule(&self) -> Vec<Request> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut out = Vec::new();
        let mut start = 0.0;
        for (index, phase) in self.phases.iter().enumerate() {
            let weights: Vec<f64> = (0..phase.tenants)
                .map(|t| 1.0 / ((t + 1) as f64).powf(phase.skew))
                .collect();
            let total: f64 = weights.iter().sum();
            let mut t = start;
            loop {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                t += -u.ln() / phase.rate;
                if t >= start + phase.seconds {
                    break;
                }
                let mut pick = rng.random_range(0.0..total);
                let tenant = weights
                    .iter()
                    .position(|w| {
                        pick -= w;
                        pick < 0.0
                    })
                    .unwrap_or(phase.tenants - 1)
                    + phase.tenant_offset;
                out.push(Request {
                    at_secs: t,
                    phase: index,
                    tenant,
                    prompt: prompt(&mut rng, phase, tenant),
                    output_tokens: phase.output_tokens,
                });
            }
            start += phase.seconds;
        }
        out
    }
}

/// One request of the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub at_secs: f64,
    pub phase: usize,
    /// Whose context the prompt starts with.
    pub tenant: usize,
    pub prompt: String,
    pub output_tokens: u32,
}

/// The tenant's context (one simulator token per word), then the request's own words.
fn prompt(rng: &mut StdRng, phase: &Phase, tenant: usize) -> String {
    let mut words: Vec<String> = (0..phase.shared_prefix_tokens)
        .map(|i| format!("t{tenant}c{i}"))
        .collect();
    words.extend(
        (0..phase.question_tokens).map(|_| format!("q{}", rng.random_range(0..100_000u32))),
    );
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
phases:
- {name: hot, seconds: 20, rate: 5, tenants: 4, sharedPrefixTokens: 10, questionTokens: 3, outputTokens: 8, skew: 1.5}
- {name: surge, seconds: 10, rate: 2, questionTokens: 50, outputTokens: 4, tenantOffset: 100}
";

    #[test]
    fn a_schedule_is_the_same_for_a_seed_and_follows_the_phases() {
        let w = Workload::parse(YAML).expect("valid");
        assert_eq!(w.fleet, Fleet::default());
        let a = w.schedule();
        assert_eq!(a, w.schedule(), "deterministic");
        let hot: Vec<_> = a.iter().filter(|r| r.phase == 0).collect();
        let surge: Vec<_> = a.iter().filter(|r| r.phase == 1).collect();
        assert!((70..=130).contains(&hot.len()), "{}", hot.len());
        assert!((8..=35).contains(&surge.len()), "{}", surge.len());
        assert!(hot.iter().all(|r| r.at_secs < 20.0));
        assert!(surge.iter().all(|r| (20.0..30.0).contains(&r.at_secs)));
        assert_eq!(hot[0].prompt.split(' ').count(), 13);
        assert!(surge[0].prompt.split(' ').count() == 50 && !surge[0].prompt.contains('c'));
        let tenant = |t: usize| {
            hot.iter()
                .filter(|r| r.prompt.starts_with(&format!("t{t}c0 ")))
                .count()
        };
        assert!(
            tenant(0) > 3 * tenant(3),
            "skew 1.5 makes tenant 0 hot: {} vs {}",
            tenant(0),
            tenant(3)
        );
    }

    #[test]
    fn bad_workloads_are_refused_with_a_reason() {
        assert!(Workload::parse("phases: []").is_err());
        let err = Workload::parse(&YAML.replace("rate: 5", "rate: 0")).expect_err("zero rate");
        assert!(err.contains("hot"), "{err}");
        assert!(Workload::parse("phases:\n- {name: x, seconds: 1, rate: 1, questionTokens: 1, outputTokens: 1, bogus: 1}").is_err());
    }
}
