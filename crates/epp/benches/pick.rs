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
                exclude: None,
                explain: false,
            });
        }
    }
    p
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
                    exclude: None,
                    explain: false,
                }))
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
                    exclude: None,
                    explain: false,
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
