//! One pick (hash the prompt, look up the prefix index, score, choose) at 16, 256
//! and 1024 endpoints with warm metrics and a populated prefix index. After the
//! criterion run it prints p50/p99 of single picks, the figure the target is set in.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use llmd_api::endpoint_picker_config::SchedulerConfig;
use llmd_api::engine_metrics::EngineMetrics;
use llmd_epp::endpoint_picker::{EndpointPicker, PickRequest};
use llmd_epp::pool::endpoint::{Endpoint, EndpointRegistry, Role};
use llmd_epp::prefix::engine_tokens::sim_token_ids;
use llmd_epp::prefix::kv_events::KvEvent;
use llmd_epp::prefix::precise::{PreciseIndex, block_keys, root_key};
use llmd_epp::telemetry::Telemetry;

const TENANTS: usize = 64;

fn prompt(tenant: usize, question: usize) -> String {
    let mut s = format!("System: assistant of tenant {tenant}. ");
    for i in 0..300 {
        s.push_str(&format!("fact{i} of tenant {tenant} "));
    }
    s.push_str(&format!("question {question}"));
    s
}

fn picker(n: usize) -> EndpointPicker {
    let registry = Arc::new(EndpointRegistry::new());
    registry.replace_all(
        (0..n).map(|i| Endpoint::new(format!("10.0.{}.{}:8000", i / 250, i % 250), Role::Decode)),
    );
    let p = EndpointPicker::new(
        registry,
        SchedulerConfig::default_config(),
        Arc::new(Telemetry::new()),
        Duration::from_secs(3600),
    );
    for (i, state) in p.registry.snapshot().values().enumerate() {
        p.record_scrape(
            state,
            EngineMetrics {
                waiting: (i % 7) as f64,
                running: (i % 5) as f64,
                kv_usage: (i % 10) as f64 / 10.0,
                ..Default::default()
            },
        );
    }
    // Warm the index: every tenant routed a few times.
    for q in 0..3 {
        for t in 0..TENANTS {
            let text = prompt(t, q);
            let _ = p.pick(PickRequest {
                model: "m",
                prompt: &text,
                session_token: None,
                ..PickRequest::default()
            });
        }
    }
    p
}

static POD_NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (0..1024)
        .map(|i| format!("10.0.{}.{}:8000", i / 250, i % 250))
        .collect()
});

/// A precise index where each tenant's context is held by one pod of `n`, as its
/// engine reported.
fn precise_index(n: usize) -> PreciseIndex {
    let index = PreciseIndex::new(16, 100_000);
    for t in 0..TENANTS {
        let tokens = sim_token_ids(&prompt(t, 0));
        let full = tokens.len() / 16 * 16;
        let event = KvEvent::BlockStored {
            block_hashes: (0..full as u64 / 16)
                .map(|b| (t as u64) << 32 | b)
                .collect(),
            parent: None,
            token_ids: tokens[..full].to_vec(),
            block_size: 16,
            lora_name: None,
            medium: Some("GPU".into()),
        };
        let pod: Arc<str> = Arc::from(POD_NAMES[t % n].as_str());
        index.apply(&pod, t as u64, &[event]);
    }
    index
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    let prompts: Vec<String> = (0..TENANTS).map(|t| prompt(t, 99)).collect();
    let mut group = c.benchmark_group("pick");
    for n in [16usize, 256, 1024] {
        let p = picker(n);
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % TENANTS;
                black_box(p.pick(PickRequest {
                    model: "m",
                    prompt: &prompts[i],
                    session_token: None,
                    ..PickRequest::default()
                }))
            })
        });
    }
    group.finish();

    // What precise mode adds to a pick: tokenizing the prompt as the engine does,
    // keying its blocks, and matching them against every pod's reported blocks.
    let mut group = c.benchmark_group("precise-keys");
    for n in [16usize, 256, 1024] {
        let index = precise_index(n);
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % TENANTS;
                let tokens = sim_token_ids(&prompts[i]);
                let keys = block_keys(root_key(None), &tokens, 16, 2048);
                black_box(index.matched_blocks(POD_NAMES[..n].iter().map(String::as_str), &keys))
            })
        });
    }
    group.finish();
    c.final_summary();

    println!("\nsingle-pick latency (prompt ~1500 tokens, {TENANTS} tenants in the index):");
    for n in [16usize, 256, 1024] {
        let p = picker(n);
        let mut samples: Vec<Duration> = (0..5000)
            .map(|i| {
                let t = Instant::now();
                black_box(p.pick(PickRequest {
                    model: "m",
                    prompt: &prompts[i % TENANTS],
                    session_token: None,
                    ..PickRequest::default()
                }));
                t.elapsed()
            })
            .collect();
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "  {n:>5} endpoints: p50 {:>7.1} us   p99 {:>7.1} us",
            at(0.50).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6
        );
    }
}
