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
use llmd_loadgen::oracle::{self, Placement};
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
    /// llmd-sidecar binary (the overhead workload's decode-pod hop).
    #[arg(long, default_value = "target/release/llmd-sidecar")]
    sidecar_bin: PathBuf,
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
    /// Share of the mixed workload's requests that are long one-off prompts.
    #[arg(long, default_value_t = 0.25)]
    long_fraction: f64,
    /// Approximate tokens of each long prompt of the mixed workload.
    #[arg(long, default_value_t = 2000)]
    long_tokens: usize,
    /// Arrival rate of the mixed workload, requests per second (Poisson). Default:
    /// 80% of the fleet's slot capacity as the oracle's placements use it (see
    /// `default_mixed_rate`; 76 req/s at the defaults).
    #[arg(long)]
    mixed_rate: Option<f64>,
    /// Output tokens per request.
    #[arg(long, default_value_t = 8)]
    max_tokens: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the SVG charts go (one per workload).
    #[arg(long, default_value = "target/bench")]
    plot_dir: PathBuf,
    /// Runs of every router, the same schedule each time; a row is the run with the
    /// median mean TTFT, its note gives the spread.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Only the routers with these labels (as the tables print them), all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Workloads to run: shared, unique, pd, pressure, replicas, mixed, overhead.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shared,unique,pd,pressure,replicas,mixed,overhead"
    )]
    workloads: Vec<String>,
}

const MODEL: SimModel = fleet::BENCH_MODEL;

fn policies(have_vllm_router: bool) -> Vec<Policy> {
    let mut p = vec![
        Policy::RoundRobin,
        Policy::Random,
        Policy::EPP,
        Policy::EppLatency {
            prefix: Prefix::Approximate,
            blend: false,
        },
        Policy::EppLatency {
            prefix: Prefix::Approximate,
            blend: true,
        },
    ];
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
/// peers' cache-aware policies; precise also tokenizing in process, to show what
/// asking the engine's `/tokenize` costs.
fn pressure_policies(bins: &Binaries<'_>) -> Vec<Policy> {
    let mut p = vec![Policy::RoundRobin];
    if bins.vllm_router.is_some() {
        p.push(Policy::VllmRouter("cache_aware"));
    }
    if bins.sglang_router.is_some() {
        p.push(Policy::Sglang("cache_aware"));
    }
    p.extend(replica_policies().into_iter().skip(1));
    p.push(Policy::Epp {
        prefix: Prefix::PreciseInProcess,
        replicas: 1,
    });
    p
}

/// Hot tenants and long prompts: the peers' cache-aware policies and llmd-epp,
/// weighted and by predicted latency.
fn mixed_policies(bins: &Binaries<'_>) -> Vec<Policy> {
    let mut p = vec![Policy::RoundRobin, Policy::OraclePlacements];
    if bins.vllm_router.is_some() {
        p.push(Policy::VllmRouter("cache_aware"));
    }
    if bins.sglang_router.is_some() {
        p.push(Policy::Sglang("cache_aware"));
    }
    for prefix in [Prefix::Approximate, Prefix::Precise] {
        p.push(Policy::Epp {
            prefix,
            replicas: 1,
        });
        p.push(Policy::EppLatency {
            prefix,
            blend: false,
        });
        p.push(Policy::EppLatency {
            prefix,
            blend: true,
        });
    }
    p
}

/// Prompt tokens of a hot-tenant request a cache-aware router still prefills: its
/// question (~12 tokens) and the part of its context past the last full block (8
/// of 16 on average).
const HOT_UNCACHED_TOKENS: usize = 20;

/// Share of hot-tenant requests that find their context cached under the oracle's
/// placements on the mixed workload (78% of them at 70-104 req/s, with the replay's
/// first cache model, a plain LRU; kept, as it sets the workload's default rate): a
/// tenant's first request on each sim its context is copied to misses, and the long
/// prompts' blocks push contexts out of the caches.
const HOT_HIT_SHARE: f64 = 0.75;

/// Share of the fleet's slot capacity the mixed workload's default rate asks for.
const MIXED_LOAD: f64 = 0.8;

/// The mixed workload's default rate: [`MIXED_LOAD`] of the fleet's slot capacity
/// as a router with exact knowledge (the oracle) uses it. A request holds a slot for
/// `prefill_overhead + uncached tokens x prefill_per_token + (max_tokens - 1) x
/// inter_token`. At the defaults a long prompt (~2000 tokens, none cached) holds
/// one 5 + 800 + 35 = 840 ms; a hot question with its context cached (about
/// [`HOT_UNCACHED_TOKENS`] left) 5 + 8 + 35 = 48 ms, without it (~1225 tokens)
/// 5 + 490 + 35 = 530 ms, so 0.75 x 48 + 0.25 x 530 = 168 ms at
/// [`HOT_HIT_SHARE`]. The mean hold is 0.25 x 840 + 0.75 x 168 = 336 ms, 8 sims x 4
/// slots serve 32 / 0.336 = 95 req/s, and 80% of that is 76 req/s. (Were every
/// context always cached, the capacity would be 32 / 0.246 = 130 req/s: out of
/// reach, the oracle's replay is saturated there. Round-robin, finding few contexts
/// cached, is overloaded at 76.)
fn default_mixed_rate(args: &Args, model: &oracle::Model) -> f64 {
    let hold = |uncached: usize| model.prefill(uncached) + model.decode(args.max_tokens);
    // The whole hot prompt: a 13-token header, the context, a 12-token question.
    let context = args.context_tokens + 25;
    let hot = HOT_HIT_SHARE * hold(HOT_UNCACHED_TOKENS) + (1.0 - HOT_HIT_SHARE) * hold(context);
    let f = args.long_fraction.clamp(0.0, 1.0);
    let mean = f * hold(args.long_tokens + 1) + (1.0 - f) * hot;
    MIXED_LOAD * (args.sims * model.max_num_seqs) as f64 / mean
}

/// The oracle's summary for `requests` and how the round-robin replay compares with
/// the measured round-robin row (a check of the replay).
fn oracle_lines(
    args: &Args,
    model: &oracle::Model,
    requests: &[workload::Request],
    rows: &[report::Summary],
) -> String {
    let summary = |label: &str, placement| {
        let (samples, wall) =
            oracle::samples(model, args.sims, args.max_tokens, requests, placement);
        report::summarize(label.to_string(), &samples, wall, String::new())
    };
    let best = summary("oracle (exact pending work)", Placement::Oracle);
    let rr = summary("round-robin replay", Placement::RoundRobin);
    let measured = rows
        .iter()
        .find(|r| r.label == Policy::RoundRobin.label())
        .map(|m| {
            format!(
                " (measured: mean {:.1} ms, p90 {:.1} ms; replay/measured {:.2})",
                m.ttft_mean * 1e3,
                m.ttft_p90 * 1e3,
                rr.ttft_mean / m.ttft_mean
            )
        })
        .unwrap_or_default();
    format!(
        "{}\n{}: mean TTFT {:.1} ms, p90 {:.1} ms{measured}",
        report::versus_oracle(rows, &best),
        rr.label,
        rr.ttft_mean * 1e3,
        rr.ttft_p90 * 1e3,
    )
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
    if let Some(median) = report::histogram_median(&pages, "llmd_epp_ttft_prediction_error_ratio") {
        note.push_str(&format!(
            ", median TTFT prediction error {:.0}%",
            median * 100.0
        ));
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
    let mut router = routers::start(policy, &entries, bins, client).await?;
    if policy == Policy::OraclePlacements {
        let model = oracle::Model::from_sim(&MODEL)?;
        router.plan = oracle::placements(&model, args.sims, args.max_tokens, requests);
    }
    let router = Arc::new(router);
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
        sidecar: &args.sidecar_bin,
        vllm_router,
        sglang_router,
        kv_events_port: None,
    };
    let shape = Shape {
        requests: args.requests,
        rate: args.rate,
        seed: args.seed,
    };
    let model = match oracle::Model::from_sim(&MODEL) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sim model: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mixed_rate = args
        .mixed_rate
        .unwrap_or_else(|| default_mixed_rate(&args, &model));
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
                    "\n### proxy overhead (1000 sequential 1-token requests, one sim)\n\n| path | p50 ms | p99 ms |\n|---|---:|---:|\n| direct to the sim | {:.2} | {:.2} |\n| through llmd-sidecar (a decode pod's hop) | {:.2} | {:.2} |\n| added by llmd-sidecar | {:.2} | {:.2} |\n| through llmd-epp | {:.2} | {:.2} |\n| added by llmd-epp | {:.2} | {:.2} |\n",
                    o.direct_p50 * 1e3,
                    o.direct_p99 * 1e3,
                    o.sidecar_p50 * 1e3,
                    o.sidecar_p99 * 1e3,
                    (o.sidecar_p50 - o.direct_p50) * 1e3,
                    (o.sidecar_p99 - o.direct_p99) * 1e3,
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
        let events = matches!(w.as_str(), "pressure" | "replicas" | "mixed");
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
            "mixed" => (
                format!(
                    "mixed: {:.0}% long prompts of ~{} tokens among {} hot tenants x ~{} token context, {mixed_rate:.0} req/s",
                    100.0 * args.long_fraction,
                    args.long_tokens,
                    args.tenants,
                    args.context_tokens
                ),
                workload::mixed(
                    Shape {
                        rate: mixed_rate,
                        ..shape
                    },
                    args.tenants,
                    args.context_tokens,
                    args.long_fraction,
                    args.long_tokens,
                ),
                mixed_policies(&bins),
            ),
            other => {
                eprintln!(
                    "unknown workload {other:?} (shared, unique, pd, pressure, replicas, mixed, overhead)"
                );
                return ExitCode::FAILURE;
            }
        };
        let policies: Vec<Policy> = policies
            .into_iter()
            .filter(|p| args.only.is_empty() || args.only.contains(&p.label()))
            .collect();
        // Repeats go round the routers, so a drift of the machine touches them all.
        let mut runs: Vec<Vec<report::Summary>> = vec![Vec::new(); policies.len()];
        for repeat in 1..=args.repeats.max(1) {
            for (p, runs) in policies.iter().zip(runs.iter_mut()) {
                eprintln!("running {w} / {} ({repeat}/{})", p.label(), args.repeats);
                match run_one(&args, &client, *p, &requests, &bins).await {
                    Ok(s) => runs.push(s),
                    Err(e) => {
                        eprintln!("{}: {e}", p.label());
                        failed = true;
                    }
                }
            }
        }
        let rows: Vec<report::Summary> = runs.into_iter().filter_map(report::median_run).collect();
        println!("{}", report::table(&title, &rows));
        let svg = args.plot_dir.join(format!("{w}.svg"));
        match std::fs::create_dir_all(&args.plot_dir)
            .map_err(|e| format!("{}: {e}", args.plot_dir.display()))
            .and_then(|()| plot::ttft_bars(&svg, &title, &rows))
        {
            Ok(()) => println!("chart: {}", svg.display()),
            Err(e) => eprintln!("{w}: {e}"),
        }
        if w == "mixed" {
            println!("{}", oracle_lines(&args, &model, &requests, &rows));
            let latency = Policy::EppLatency {
                prefix: Prefix::Approximate,
                blend: false,
            };
            println!("{}", report::versus(&rows, &latency.label()));
        } else if events {
            if w == "pressure" {
                println!("{}", oracle_lines(&args, &model, &requests, &rows));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mixed_rate_is_the_documented_one() {
        let args = Args::parse_from(["llmd-loadgen", "--sim-bin", "sim"]);
        let model = oracle::Model::from_sim(&MODEL);
        let rate = model.map(|m| default_mixed_rate(&args, &m));
        assert!(
            matches!(rate, Ok(r) if (75.5..76.5).contains(&r)),
            "{rate:?}"
        );
        assert!(args.workloads.iter().any(|w| w == "mixed"));
    }
}
