//! The request mixes: a shared-prefix workload (many tenants, each with a long
//! shared context and short distinct questions, like llm-d's B2B SaaS benchmark
//! scaled down) and a workload with no shared prefix. Both are deterministic for a
//! seed, so every router sees the same requests at the same times.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct Request {
    /// Offset from the start of the run (open-loop Poisson arrivals).
    pub at_secs: f64,
    pub prompt: String,
}

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub requests: usize,
    pub rate: f64,
    pub seed: u64,
}

const WORDS: &[&str] = &[
    "account", "billing", "contract", "delivery", "invoice", "ledger", "policy", "region",
    "service", "ticket", "upgrade", "vendor", "warranty", "quota", "refund", "schedule", "license",
    "support", "report", "metric", "budget", "order", "client", "product",
];

fn arrivals(shape: Shape, rng: &mut StdRng) -> Vec<f64> {
    let mut t = 0.0;
    (0..shape.requests)
        .map(|_| {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            t += -u.ln() / shape.rate;
            t
        })
        .collect()
}

fn words(rng: &mut StdRng, n: usize, out: &mut String) {
    for _ in 0..n {
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        out.push(' ');
    }
}

/// `tenants` contexts of about `context_tokens` tokens; questions of ~12 tokens.
pub fn shared_prefix(shape: Shape, tenants: usize, context_tokens: usize) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let contexts: Vec<String> = (0..tenants)
        .map(|t| {
            let mut s = format!("System: you are the assistant of tenant {t}. Knowledge base: ");
            words(&mut rng, context_tokens, &mut s);
            s
        })
        .collect();
    arrivals(shape, &mut rng)
        .into_iter()
        .enumerate()
        .map(|(i, at_secs)| {
            let tenant = rng.random_range(0..tenants);
            let mut prompt = contexts[tenant].clone();
            prompt.push_str(&format!("\nUser question {i}: "));
            words(&mut rng, 8, &mut prompt);
            Request { at_secs, prompt }
        })
        .collect()
}

/// Every prompt distinct from its first token on.
pub fn no_shared_prefix(shape: Shape, prompt_tokens: usize) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(shape.seed ^ 0x5eed);
    arrivals(shape, &mut rng)
        .into_iter()
        .enumerate()
        .map(|(i, at_secs)| {
            let mut prompt = format!("request{i}x{} ", rng.random::<u32>());
            words(&mut rng, prompt_tokens, &mut prompt);
            Request { at_secs, prompt }
        })
        .collect()
}
