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

/// `tenants` contexts of about `context_tokens` tokens each.
fn tenant_contexts(rng: &mut StdRng, tenants: usize, context_tokens: usize) -> Vec<String> {
    (0..tenants)
        .map(|t| {
            let mut s = format!("System: you are the assistant of tenant {t}. Knowledge base: ");
            words(rng, context_tokens, &mut s);
            s
        })
        .collect()
}

/// Request `i` of a random tenant: its context and a short question (~12 tokens).
fn hot_tenant_prompt(rng: &mut StdRng, contexts: &[String], i: usize) -> String {
    let tenant = rng.random_range(0..contexts.len());
    let mut prompt = contexts[tenant].clone();
    prompt.push_str(&format!("\nUser question {i}: "));
    words(rng, 8, &mut prompt);
    prompt
}

/// Request `i`'s prompt of about `tokens` tokens, distinct from its first token on.
fn unique_prompt(rng: &mut StdRng, i: usize, tokens: usize) -> String {
    let mut prompt = format!("request{i}x{} ", rng.random::<u32>());
    words(rng, tokens, &mut prompt);
    prompt
}

/// `tenants` contexts of about `context_tokens` tokens; questions of ~12 tokens.
pub fn shared_prefix(shape: Shape, tenants: usize, context_tokens: usize) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let contexts = tenant_contexts(&mut rng, tenants, context_tokens);
    arrivals(shape, &mut rng)
        .into_iter()
        .enumerate()
        .map(|(i, at_secs)| Request {
            at_secs,
            prompt: hot_tenant_prompt(&mut rng, &contexts, i),
        })
        .collect()
}

/// Every prompt distinct from its first token on.
pub fn no_shared_prefix(shape: Shape, prompt_tokens: usize) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(shape.seed ^ 0x5eed);
    arrivals(shape, &mut rng)
        .into_iter()
        .enumerate()
        .map(|(i, at_secs)| Request {
            at_secs,
            prompt: unique_prompt(&mut rng, i, prompt_tokens),
        })
        .collect()
}

/// Hot tenants with long one-off prompts among them: each request is, with
/// probability `long_fraction`, a prompt of about `long_tokens` tokens distinct from
/// its first token on (as in [`no_shared_prefix`]), else a question of one of
/// `tenants` tenants after its shared context of about `context_tokens` tokens (as
/// in [`shared_prefix`]).
pub fn mixed(
    shape: Shape,
    tenants: usize,
    context_tokens: usize,
    long_fraction: f64,
    long_tokens: usize,
) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(shape.seed ^ 0x313e_d000);
    let contexts = tenant_contexts(&mut rng, tenants.max(1), context_tokens);
    arrivals(shape, &mut rng)
        .into_iter()
        .enumerate()
        .map(|(i, at_secs)| {
            // Not `random_bool`, which panics outside [0, 1].
            let prompt = if rng.random::<f64>() < long_fraction {
                unique_prompt(&mut rng, i, long_tokens)
            } else {
                hot_tenant_prompt(&mut rng, &contexts, i)
            };
            Request { at_secs, prompt }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        requests: 2000,
        rate: 100.0,
        seed: 7,
    };

    fn is_long(r: &Request) -> bool {
        r.prompt.starts_with("request")
    }

    #[test]
    fn mixed_is_deterministic_for_the_seed() {
        let a = mixed(SHAPE, 6, 50, 0.25, 300);
        let b = mixed(SHAPE, 6, 50, 0.25, 300);
        assert_eq!(a.len(), SHAPE.requests);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.prompt, y.prompt);
            assert_eq!(x.at_secs, y.at_secs);
        }
        let other = mixed(Shape { seed: 8, ..SHAPE }, 6, 50, 0.25, 300);
        assert!(a.iter().zip(&other).any(|(x, y)| x.prompt != y.prompt));
    }

    #[test]
    fn mixed_has_about_the_long_fraction_and_long_prompts_are_distinct() {
        let requests = mixed(SHAPE, 6, 50, 0.25, 300);
        let long: Vec<&Request> = requests.iter().filter(|r| is_long(r)).collect();
        let fraction = long.len() as f64 / requests.len() as f64;
        assert!((0.21..0.29).contains(&fraction), "{fraction}");
        // Distinct from the first token on, and about `long_tokens` long.
        let first: std::collections::HashSet<&str> = long
            .iter()
            .filter_map(|r| r.prompt.split_whitespace().next())
            .collect();
        assert_eq!(first.len(), long.len());
        assert!(
            long.iter()
                .all(|r| r.prompt.split_whitespace().count() == 301)
        );
        // The rest are hot tenants: 6 shared contexts.
        let contexts: std::collections::HashSet<&str> = requests
            .iter()
            .filter(|r| !is_long(r))
            .filter_map(|r| r.prompt.split("\nUser question").next())
            .collect();
        assert_eq!(contexts.len(), 6);
        assert!(mixed(SHAPE, 6, 50, 0.0, 300).iter().all(|r| !is_long(r)));
        assert!(mixed(SHAPE, 6, 50, 1.0, 300).iter().all(is_long));
    }
}
