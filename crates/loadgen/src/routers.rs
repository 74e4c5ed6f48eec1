//! The routers compared: client-side round-robin and random straight to the sims,
//! llmd-epp's proxy (approximate or precise prefix matching, one replica or several
//! sharing the traffic, or P/D), vllm-router's policies and sglang-router's (`smg`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llmd_api::endpoint_picker::flag;
use llmd_api::endpoint_picker_config::{EndpointPickerConfig, plugin};
use llmd_api::{RouterSpec, ScorerWeights};
use rand::Rng;

use crate::fleet::{Proc, free_port, spawn, wait_healthy};

/// Where llmd-epp's prefix matches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// From the requests it routed itself.
    Approximate,
    /// From the engines' KV events (the fleet must offer them), prompts tokenized
    /// by an engine's `/tokenize` (the default).
    Precise,
    /// Precise, prompts tokenized in process the way the simulator tokenizes
    /// (`token-producer` with `source: simulator`): what the `/tokenize` round trip costs.
    PreciseInProcess,
}

impl Prefix {
    /// Whether matches come from the engines' KV events.
    pub fn precise(self) -> bool {
        self != Prefix::Approximate
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Random,
    /// Each request straight to the sim the oracle's replay placed it on (the
    /// replay's plan, set on the router): how well those placements do on the real
    /// simulators rather than in the replay's model of them.
    OraclePlacements,
    /// llmd-epp's proxy; with several replicas the client spreads requests over them.
    Epp {
        prefix: Prefix,
        replicas: usize,
    },
    /// llmd-epp with the P/D profile handler over prefill and decode sims.
    EppPd,
    /// llmd-epp with the latency-scorer (routing by predicted TTFT): alone, or at
    /// weight 1 beside the default 3/2/2 weights (`blend`).
    EppLatency {
        prefix: Prefix,
        blend: bool,
    },
    VllmRouter(&'static str),
    /// sglang-router's gateway (`smg launch`).
    Sglang(&'static str),
}

impl Policy {
    /// One llmd-epp with approximate prefix matching.
    pub const EPP: Policy = Policy::Epp {
        prefix: Prefix::Approximate,
        replicas: 1,
    };

    pub fn label(self) -> String {
        match self {
            Policy::RoundRobin => "round-robin".into(),
            Policy::Random => "random".into(),
            Policy::OraclePlacements => "oracle's placements (measured)".into(),
            Policy::Epp { prefix, replicas } => {
                let mut label = match prefix {
                    Prefix::Approximate => "llmd-epp".to_string(),
                    Prefix::Precise => "llmd-epp precise".to_string(),
                    Prefix::PreciseInProcess => {
                        "llmd-epp precise, tokenized in process".to_string()
                    }
                };
                if replicas > 1 {
                    label.push_str(&format!(" ({replicas} replicas)"));
                }
                label
            }
            Policy::EppPd => "llmd-epp P/D".into(),
            Policy::EppLatency { prefix, blend } => {
                let mut label = "llmd-epp".to_string();
                if prefix.precise() {
                    label.push_str(" precise,");
                }
                label.push_str(if blend {
                    " 3/2/2 + latency 1"
                } else {
                    " predicted latency"
                });
                label
            }
            Policy::VllmRouter(p) => format!("vllm-router {p}"),
            Policy::Sglang(p) => format!("sglang-router {p}"),
        }
    }
}

/// A running router: where to send each request.
pub struct Router {
    pub policy: Policy,
    bases: Vec<String>,
    next: AtomicUsize,
    procs: Vec<Proc>,
    /// llmd-epp's metrics, one per replica.
    pub metrics_urls: Vec<String>,
    /// For [`Policy::OraclePlacements`]: the sim of each request, in order.
    pub plan: Vec<usize>,
    _config: Option<PathBuf>,
}

impl Router {
    /// Base URL for the next request.
    pub fn base(&self) -> &str {
        match self.policy {
            Policy::Random => &self.bases[rand::rng().random_range(0..self.bases.len())],
            // Round-robin over the sims, or over the EPP replicas (one base otherwise);
            // the planned sim where there is a plan.
            _ => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                let i = self.plan.get(i).copied().unwrap_or(i);
                &self.bases[i % self.bases.len()]
            }
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(p) = &self._config {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Clone, Copy)]
pub struct Binaries<'a> {
    pub epp: &'a Path,
    /// llmd-sidecar (the overhead benchmark's pass-through hop).
    pub sidecar: &'a Path,
    pub vllm_router: Option<&'a Path>,
    /// sglang-router's `smg`.
    pub sglang_router: Option<&'a Path>,
    /// The port of every sim's address where it offers KV events (precise mode).
    pub kv_events_port: Option<u16>,
}

/// P/D config with the default weights: disaggregate when at least `non_cached`
/// prompt tokens are uncached.
fn pd_config(non_cached: usize) -> String {
    let mut router = RouterSpec::default();
    router.disaggregation.non_cached_tokens = i32::try_from(non_cached).unwrap_or(i32::MAX);
    EndpointPickerConfig::for_router(&router, &router.scorers, true).to_yaml()
}

/// The default weights in precise mode, the token-producer tokenizing in process as
/// the simulator does.
fn in_process_tokens_config() -> String {
    let mut router = RouterSpec::default();
    router.prefix_cache.mode = llmd_api::PrefixCacheMode::Precise;
    let mut config = EndpointPickerConfig::for_router(&router, &router.scorers, false);
    for p in &mut config.plugins {
        if p.plugin_type == plugin::TOKEN_PRODUCER {
            p.parameters = Some(serde_json::json!({"source": "simulator"}));
        }
    }
    config.to_yaml()
}

/// The latency-scorer alone, or with `blend` at weight 1 beside the default weights.
fn latency_config(blend: bool) -> String {
    let router = RouterSpec::default();
    let weights = if blend {
        ScorerWeights {
            latency: 1.0,
            ..ScorerWeights::default()
        }
    } else {
        ScorerWeights {
            prefix_cache: 0.0,
            queue: 0.0,
            kv_cache_utilization: 0.0,
            latency: 1.0,
            ..ScorerWeights::default()
        }
    };
    EndpointPickerConfig::for_router(&router, &weights, false).to_yaml()
}

/// Starts `policy` in front of `sims` (`host:port[=role]` entries).
pub async fn start(
    policy: Policy,
    sims: &[String],
    bins: &Binaries<'_>,
    client: &reqwest::Client,
) -> Result<Router, String> {
    let plain: Vec<String> = sims
        .iter()
        .map(|s| s.split('=').next().unwrap_or(s).to_string())
        .collect();
    let mut router = Router {
        policy,
        bases: Vec::new(),
        next: AtomicUsize::new(0),
        procs: Vec::new(),
        metrics_urls: Vec::new(),
        plan: Vec::new(),
        _config: None,
    };
    match policy {
        Policy::RoundRobin | Policy::Random | Policy::OraclePlacements => {
            router.bases = plain.iter().map(|a| format!("http://{a}")).collect();
        }
        Policy::Epp { .. } | Policy::EppPd | Policy::EppLatency { .. } => {
            let replicas = match policy {
                Policy::Epp { replicas, .. } => replicas.max(1),
                _ => 1,
            };
            let kv_events = match policy {
                Policy::Epp { prefix, .. } | Policy::EppLatency { prefix, .. }
                    if prefix.precise() =>
                {
                    Some(
                        bins.kv_events_port
                            .ok_or("precise mode needs a fleet offering KV events")?,
                    )
                }
                _ => None,
            };
            for _ in 0..replicas {
                let (proxy, grpc, health, metrics) =
                    (free_port()?, free_port()?, free_port()?, free_port()?);
                let mut cmd = Command::new(bins.epp);
                cmd.args(["--static-endpoints", &sims.join(",")])
                    .args(["--proxy-addr", &format!("127.0.0.1:{proxy}")])
                    .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
                    .args(["--grpc-health-addr", &format!("127.0.0.1:{health}")])
                    .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
                    .env("RUST_LOG", "warn");
                if let Some(port) = kv_events {
                    cmd.arg(format!("--{}", flag::KV_EVENTS_PORT))
                        .arg(port.to_string());
                }
                let config = match policy {
                    Policy::EppPd => Some(pd_config(256)),
                    Policy::EppLatency { blend, .. } => Some(latency_config(blend)),
                    Policy::Epp {
                        prefix: Prefix::PreciseInProcess,
                        ..
                    } => Some(in_process_tokens_config()),
                    _ => None,
                };
                if let Some(config) = config {
                    let path = std::env::temp_dir().join(format!("llmd-bench-{proxy}.yaml"));
                    std::fs::write(&path, config).map_err(|e| format!("write config: {e}"))?;
                    cmd.arg("--config-file").arg(&path);
                    router._config = Some(path);
                }
                router.procs.push(spawn("llmd-epp", &mut cmd)?);
                router.bases.push(format!("http://127.0.0.1:{proxy}"));
                router
                    .metrics_urls
                    .push(format!("http://127.0.0.1:{metrics}/metrics"));
                wait_healthy(
                    client,
                    &format!("http://127.0.0.1:{proxy}/health"),
                    Duration::from_secs(20),
                )
                .await?;
            }
            // Let the first scrapes land so the first picks see load.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if kv_events.is_some() {
                wait_flowing(client, &router.metrics_urls, &plain).await?;
            }
        }
        Policy::VllmRouter(p) => {
            let bin = bins
                .vllm_router
                .ok_or("vllm-router not installed (make bench-peers)")?;
            start_peer(
                &mut router,
                "vllm-router",
                Command::new(bin),
                p,
                &plain,
                client,
            )
            .await?;
        }
        Policy::Sglang(p) => {
            let bin = bins
                .sglang_router
                .ok_or("sglang-router not installed (make bench-peers)")?;
            let mut cmd = Command::new(bin);
            cmd.arg("launch");
            start_peer(&mut router, "sglang-router", cmd, p, &plain, client).await?;
        }
    }
    Ok(router)
}

/// Starts a peer router (vllm-router and sglang-router share their command line)
/// with `policy` in front of `workers`.
async fn start_peer(
    router: &mut Router,
    name: &str,
    mut cmd: Command,
    policy: &str,
    workers: &[String],
    client: &reqwest::Client,
) -> Result<(), String> {
    let port = free_port()?;
    let prom = free_port()?;
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--policy", policy, "--log-level", "error"])
        .args(["--prometheus-port", &prom.to_string()])
        .arg("--worker-urls")
        .args(workers.iter().map(|a| format!("http://{a}")));
    router.procs.push(spawn(name, &mut cmd)?);
    router.bases = vec![format!("http://127.0.0.1:{port}")];
    wait_healthy(
        client,
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(60),
    )
    .await
}

/// Warms every pod with a short prompt of its own until each replica routes every
/// pod from its KV events (PUB/SUB drops what precedes a subscription).
async fn wait_flowing(
    client: &reqwest::Client,
    metrics_urls: &[String],
    pods: &[String],
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        for (i, pod) in pods.iter().enumerate() {
            let body = serde_json::json!({
                "model": "bench-model",
                // Longer than a block: only full blocks are stored and reported.
                "prompt": format!("warm-up {round} of pod {i}: {}", "events please ".repeat(24)),
                "max_tokens": 1,
            });
            let _ = client
                .post(format!("http://{pod}/v1/completions"))
                .json(&body)
                .send()
                .await;
        }
        let mut flowing = Vec::new();
        let mut seen = String::new();
        for url in metrics_urls {
            let text = match client.get(url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            for line in text.lines().filter(|l| l.starts_with("llmd_epp_kv_events")) {
                seen.push_str(line);
                seen.push_str("; ");
            }
            flowing.push(
                text.lines()
                    .filter(|l| l.starts_with("llmd_epp_endpoint_prefix_precise{"))
                    .filter(|l| l.ends_with(" 1"))
                    .count(),
            );
        }
        if flowing.iter().all(|n| *n >= pods.len()) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "KV events flow from {flowing:?} of {} pods on the replicas ({seen})",
                pods.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
