//! `llmd-loadgen`: the routing benchmark behind `make bench`.
//!
//! For each workload and each router it starts a fresh fleet of
//! llm-d-inference-sim processes on loopback (cold caches, same seeds), starts the
//! router, replays the same open-loop request schedule, and prints one table per
//! workload with each router as a ratio to round-robin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use llmd_loadgen::fleet::{KvEvents, SimModel};
use llmd_loadgen::routers::{Binaries, Policy, Prefix};
use llmd_loadgen::workload::Shape;
use llmd_loadgen::{driver, fleet, overhead, plot, report, routers, workload};

#[derive(Parser, Debug)]
#[command(
    name = "llmd-loadgen",
    about = "Routing benchmark over a fleet of llm-d-inference-sim"
)]
struct Args {
    /// llmd-epp binary.
    #[arg(long, default_value = "target/release/llmd-epp")]
    epp_bin: PathBuf,
    /// llm-d-inference-sim binary.
    #[arg(long, env = "LLMD_SIM_BIN")]
    sim_bin: PathBuf,
    /// vllm-router binary (rows are skipped when absent).
    #[arg(long, env = "VLLM_ROUTER_BIN")]
    vllm_router_bin: Option<PathBuf>,
    /// sglang-router's `smg` binary (rows are skipped when absent).
    #[arg(long, env = "SGLANG_ROUTER_BIN")]
    sglang_router_bin: Option<PathBuf>,
    /// Sims in the fleet.
    #[arg(long, default_value_t = 8)]
    sims: usize,
    /// Requests per run.
    #[arg(long, default_value_t = 900)]
    requests: usize,
    /// Mean arrival rate, requests per second (Poisson).
    #[arg(long, default_value_t = 70.0)]
    rate: f64,
    /// Tenants of the shared-prefix workload.
    #[arg(long, default_value_t = 24)]
    tenants: usize,
    /// Approximate tokens of each tenant's shared context.
    #[arg(long, default_value_t = 1200)]
    context_tokens: usize,
    /// Tenants of the cache-pressure workload: their contexts together are about
    /// twice the fleet's KV cache at the defaults (112 x 1200 tokens vs 8 x 512
    /// blocks of 16).
    #[arg(long, default_value_t = 112)]
    pressure_tenants: usize,
    /// Approximate tokens of each no-shared-prefix prompt.
    #[arg(long, default_value_t = 600)]
    unique_tokens: usize,
    /// Output tokens per request.
    #[arg(long, default_value_t = 8)]
    max_tokens: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the SVG charts go (one per workload).
    #[arg(long, default_value = "target/bench")]
    plot_dir: PathBuf,
    /// Workloads to run: shared, unique, pd, pressure, replicas, overhead.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shared,unique,pd,pressure,replicas,overhead"
    )]
    workloads: Vec<String>,
}

const MODEL: SimModel = SimModel {
    prefill_overhead: "5ms",
    prefill_per_token: "400us",
    inter_token: "5ms",
    max_num_seqs: 4,
    kv_cache_blocks: 512,
    kv_transfer_per_token: "20us",
};

fn policies(have_vllm_router: bool) -> Vec<Policy> {
    let mut p = vec![Policy::RoundRobin, Policy::Random, Policy::EPP];
    if have_vllm_router {
        p.push(Policy::VllmRouter("cache_aware"));
        p.push(Policy::VllmRouter("power_of_two"));
    }
    p
}

const PRECISE: Policy = Policy::Epp {
    prefix: Prefix::Precise,
    replicas: 1,
};

/// llmd-epp with two replicas sharing the traffic.
fn two_replicas(prefix: Prefix) -> Policy {
    Policy::Epp {
        prefix,
        replicas: 2,
    }
}

/// One EPP replica against two sharing the traffic, approximate and precise.
fn replica_policies() -> Vec<Policy> {
    vec![
        Policy::RoundRobin,
        Policy::EPP,
        two_replicas(Prefix::Approximate),
        PRECISE,
        two_replicas(Prefix::Precise),
    ]
}

/// Under cache pressure: precise against approximate (one replica and two) and the
/// peers' cache-aware policies.
fn pressure_policies(bins: &Binaries<'_>) -> Vec<Policy> {
    let mut p = vec![Policy::RoundRobin];
    if bins.vllm_router.is_some() {
        p.push(Policy::VllmRouter("cache_aware"));
    }
    if bins.sglang_router.is_some() {
        p.push(Policy::Sglang("cache_aware"));
    }
    p.extend(replica_policies().into_iter().skip(1));
    p
}

async fn epp_note(client: &reqwest::Client, router: &routers::Router) -> String {
    if router.metrics_urls.is_empty() {
        return String::new();
    }
    let mut pages = Vec::new();
    for url in &router.metrics_urls {
        if let Ok(r) = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            pages.push(r.text().await.unwrap_or_default());
        }
    }
    // Summed over the replicas.
    let value = |prefix: &str| -> f64 {
        pages
            .iter()
            .filter_map(|text| {
                text.lines()
                    .find(|l| l.starts_with(prefix))
                    .and_then(|l| l.split_whitespace().last())
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .sum()
    };
    let ratio_sum = value("llmd_epp_prefix_match_ratio_sum");
    let ratio_count = value("llmd_epp_prefix_match_ratio_count");
    let disagg = value("llmd_epp_pd_decisions_total{outcome=\"disaggregated\"}");
    let mut note = format!(
        "prefix match {:.0}%",
        100.0 * ratio_sum / ratio_count.max(1.0)
    );
    if router.policy == Policy::EppPd {
        note.push_str(&format!(", {disagg:.0} disaggregated"));
    }
    note
}

async fn run_one(
    args: &Args,
    client: &reqwest::Client,
    policy: Policy,
    requests: &[workload::Request],
    bins: &Binaries<'_>,
) -> Result<report::Summary, String> {
    let events = match bins.kv_events_port {
        Some(port) => KvEvents::On { port },
        None => KvEvents::Off,
    };
    let sims = fleet::start_fleet(&args.sim_bin, &MODEL, args.sims, client, events).await?;
    let entries: Vec<String> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| match policy {
            // P/D: a quarter of the fleet prefills, the rest decodes.
            Policy::EppPd if i < args.sims / 4 => format!("{}=prefill", s.address),
            Policy::EppPd => format!("{}=decode", s.address),
            _ => s.address.clone(),
        })
        .collect();
    let router = Arc::new(routers::start(policy, &entries, bins, client).await?);
    let (samples, wall) = driver::run(
        router.clone(),
        client.clone(),
        requests,
        args.max_tokens,
        Duration::from_secs(60),
    )
    .await;
    let note = epp_note(client, &router).await;
    let label = match policy {
        Policy::EppPd => format!(
            "{} ({}P+{}D)",
            policy.label(),
            args.sims / 4,
            args.sims - args.sims / 4
        ),
        _ => policy.label(),
    };
    Ok(report::summarize(label, &samples, wall, note))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("http client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let vllm_router = args.vllm_router_bin.as_deref().filter(|p| p.is_file());
    if vllm_router.is_none() {
        eprintln!("note: vllm-router not found; its rows are skipped (make bench-peers)");
    }
    let sglang_router = args.sglang_router_bin.as_deref().filter(|p| p.is_file());
    if sglang_router.is_none() {
        eprintln!("note: sglang-router (smg) not found; its rows are skipped (make bench-peers)");
    }
    let bins = Binaries {
        epp: &args.epp_bin,
        vllm_router,
        sglang_router,
        kv_events_port: None,
    };
    let shape = Shape {
        requests: args.requests,
        rate: args.rate,
        seed: args.seed,
    };
    println!(
        "fleet: {} x llm-d-inference-sim (per-token: prefill {} + {}/token, {}/output token, max-num-seqs {}, kv-cache {} blocks of 16); {} requests at {} req/s (Poisson), {} output tokens, streamed",
        args.sims,
        MODEL.prefill_overhead,
        MODEL.prefill_per_token,
        MODEL.inter_token,
        MODEL.max_num_seqs,
        MODEL.kv_cache_blocks,
        args.requests,
        args.rate,
        args.max_tokens
    );
    let mut failed = false;
    for w in &args.workloads {
        if w == "overhead" {
            match overhead::measure(&args.sim_bin, &MODEL, &bins, &client, 1000).await {
                Ok(o) => println!(
                    "\n### proxy overhead (1000 sequential 1-token requests, one sim)\n\n| path | p50 ms | p99 ms |\n|---|---:|---:|\n| direct to the sim | {:.2} | {:.2} |\n| through llmd-epp | {:.2} | {:.2} |\n| added by llmd-epp | {:.2} | {:.2} |\n",
                    o.direct_p50 * 1e3,
                    o.direct_p99 * 1e3,
                    o.proxy_p50 * 1e3,
                    o.proxy_p99 * 1e3,
                    (o.proxy_p50 - o.direct_p50) * 1e3,
                    (o.proxy_p99 - o.direct_p99) * 1e3,
                ),
                Err(e) => {
                    eprintln!("overhead: {e}");
                    failed = true;
                }
            }
            continue;
        }
        // The precise cases run every router on a fleet offering KV events.
        let events = matches!(w.as_str(), "pressure" | "replicas");
        let bins = Binaries {
            kv_events_port: if events {
                match fleet::free_port() {
                    Ok(port) => Some(port),
                    Err(e) => {
                        eprintln!("{w}: {e}");
                        failed = true;
                        continue;
                    }
                }
            } else {
                None
            },
            ..bins
        };
        let (title, requests, policies) = match w.as_str() {
            "shared" => (
                format!(
                    "shared prefix: {} tenants x ~{} token context, short questions",
                    args.tenants, args.context_tokens
                ),
                workload::shared_prefix(shape, args.tenants, args.context_tokens),
                policies(vllm_router.is_some()),
            ),
            "unique" => (
                format!(
                    "no shared prefix: ~{} token distinct prompts",
                    args.unique_tokens
                ),
                workload::no_shared_prefix(shape, args.unique_tokens),
                policies(vllm_router.is_some()),
            ),
            "pd" => (
                "P/D through the llmd-epp proxy (shared-prefix workload, nonCachedTokens 256)"
                    .to_string(),
                workload::shared_prefix(shape, args.tenants, args.context_tokens),
                vec![Policy::RoundRobin, Policy::EPP, Policy::EppPd],
            ),
            "pressure" => (
                format!(
                    "cache pressure: {} tenants x ~{} token context (about twice the fleet's KV cache), engines publishing KV events",
                    args.pressure_tenants, args.context_tokens
                ),
                workload::shared_prefix(shape, args.pressure_tenants, args.context_tokens),
                pressure_policies(&bins),
            ),
            "replicas" => (
                format!(
                    "EPP replicas sharing the traffic: {} tenants x ~{} token context, engines publishing KV events",
                    args.tenants, args.context_tokens
                ),
                workload::shared_prefix(shape, args.tenants, args.context_tokens),
                replica_policies(),
            ),
            other => {
                eprintln!(
                    "unknown workload {other:?} (shared, unique, pd, pressure, replicas, overhead)"
                );
                return ExitCode::FAILURE;
            }
        };
        let mut rows = Vec::new();
        for p in policies {
            eprintln!("running {w} / {}", p.label());
            match run_one(&args, &client, p, &requests, &bins).await {
                Ok(s) => rows.push(s),
                Err(e) => {
                    eprintln!("{}: {e}", p.label());
                    failed = true;
                }
            }
        }
        println!("{}", report::table(&title, &rows));
        let svg = args.plot_dir.join(format!("{w}.svg"));
        match std::fs::create_dir_all(&args.plot_dir)
            .map_err(|e| format!("{}: {e}", args.plot_dir.display()))
            .and_then(|()| plot::ttft_bars(&svg, &title, &rows))
        {
            Ok(()) => println!("chart: {}", svg.display()),
            Err(e) => eprintln!("{w}: {e}"),
        }
        if events {
            println!("{}", report::versus(&rows, &PRECISE.label()));
            println!(
                "{}",
                report::versus(&rows, &two_replicas(Prefix::Precise).label())
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
