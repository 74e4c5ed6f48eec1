//! One run of one configuration: a fresh fleet (cold caches), a fresh llmd-epp with
//! the configuration's EndpointPickerConfig file, the seeded schedule replayed
//! open-loop, and for the tuned run the tuner library stepping every slice on the
//! EPP's own metrics and rewriting the config file (which llmd-epp applies live), as
//! the operator does through the ConfigMap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llmd_api::ScorerWeights;
use llmd_tuner::epp_metrics::Snapshot;
use llmd_tuner::{Settings, Slice, Step, Tuner};
use serde_json::json;
use tokio::sync::Mutex;

use super::configs::{self, Config};
use super::workload::{Fleet, Request, Workload};
use crate::driver::{self, Sample};
use crate::fleet::{Proc, free_port, spawn, wait_healthy, with_fresh_ports};

/// The binaries a run starts.
pub struct Binaries<'a> {
    pub epp: &'a Path,
    pub sim: &'a Path,
}

/// A weight change of the tuned run.
#[derive(Clone, Debug)]
pub struct Change {
    pub at_secs: f64,
    pub weights: ScorerWeights,
    pub reason: String,
}

/// One request of a run and what it measured.
pub struct Measured {
    pub phase: usize,
    /// When it was sent, in seconds from the start.
    pub at_secs: f64,
    pub tenant: usize,
    pub sample: Sample,
}

/// What one run measured, and the tuned run's weight changes.
pub struct RunResult {
    pub samples: Vec<Measured>,
    pub changes: Vec<Change>,
}

impl RunResult {
    /// The weights in force over the run as a path to replay: each change of the
    /// weights, at the moment it was made.
    pub fn weight_path(&self) -> Vec<(f64, ScorerWeights)> {
        let mut path: Vec<(f64, ScorerWeights)> = Vec::new();
        let mut in_force = ScorerWeights::default();
        for c in &self.changes {
            if c.weights != in_force {
                in_force = c.weights.clone();
                path.push((c.at_secs, in_force.clone()));
            }
        }
        path
    }
}

fn start_fleet(bin: &Path, fleet: &Fleet, seed: u64) -> Result<(Vec<Proc>, Vec<String>), String> {
    let mut procs = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..fleet.pods {
        let port = free_port()?;
        procs.push(spawn(
            &format!("sim-{i}"),
            Command::new(bin)
                .args(["--port", &port.to_string(), "--model", "bench-model"])
                .args([
                    "--force-dummy-tokenizer",
                    "--enable-kvcache",
                    "--zmq-endpoint",
                    "",
                ])
                .args(["--latency-calculator", "per-token"])
                .args(["--prefill-overhead", &fleet.prefill_overhead])
                .args(["--prefill-time-per-token", &fleet.prefill_time_per_token])
                .args(["--inter-token-latency", &fleet.inter_token_latency])
                .args(["--max-num-seqs", &fleet.max_num_seqs.to_string()])
                .args(["--kv-cache-size", &fleet.kv_cache_blocks.to_string()])
                .args(["--block-size", &fleet.block_size.to_string()])
                .args(["--max-model-len", "32768"])
                .args(["--seed", &(seed * 100 + i as u64).to_string()])
                .env("POD_IP", "127.0.0.1")
                .env("POD_NAME", format!("sim-{i}"))
                .env("POD_NAMESPACE", "bench"),
        )?);
        addresses.push(format!("127.0.0.1:{port}"));
    }
    Ok((procs, addresses))
}

struct Epp {
    _proc: Proc,
    proxy: String,
    metrics: String,
}

async fn start_epp(
    bin: &Path,
    endpoints: &[String],
    config: &Path,
    client: &reqwest::Client,
) -> Result<Epp, String> {
    let (proxy, metrics, grpc, health) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let proc = spawn(
        "llmd-epp",
        Command::new(bin)
            .args(["--static-endpoints", &endpoints.join(",")])
            .arg("--config-file")
            .arg(config)
            .args(["--config-poll-interval", "100ms"])
            .args(["--proxy-addr", &format!("127.0.0.1:{proxy}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--grpc-health-addr", &format!("127.0.0.1:{health}")])
            .env("RUST_LOG", "warn"),
    )?;
    let epp = Epp {
        _proc: proc,
        proxy: format!("http://127.0.0.1:{proxy}"),
        metrics: format!("http://127.0.0.1:{metrics}/metrics"),
    };
    wait_healthy(
        client,
        &format!("{}/health", epp.proxy),
        Duration::from_secs(20),
    )
    .await?;
    Ok(epp)
}

async fn scrape(client: &reqwest::Client, url: &str) -> Option<Snapshot> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(Snapshot::parse(&text))
}

/// Where a tuned run writes down what its tuner did.
struct Log {
    started: Instant,
    changes: Arc<Mutex<Vec<Change>>>,
    /// Also print every step (`--trace`).
    trace: bool,
}

/// Steps the tuner every slice until `stop`, rewriting `config` when the weights
/// in force change.
async fn tune(
    client: reqwest::Client,
    metrics: String,
    config: std::path::PathBuf,
    workload: Workload,
    stop: Arc<AtomicBool>,
    log: Log,
) {
    let spec = ScorerWeights::default();
    let mut tuner = Tuner::new(bench_settings(), spec.clone(), spec);
    let mut previous = scrape(&client, &metrics).await.unwrap_or_default();
    let mut in_force = tuner.in_force().clone();
    let slice = Duration::from_secs_f64(workload.slice_seconds);
    let mut tick = tokio::time::interval_at((Instant::now() + slice).into(), slice);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let Some(now) = scrape(&client, &metrics).await else {
            continue;
        };
        let slice = now.since(&previous, workload.slice_seconds);
        let step = tuner.step(&slice);
        previous = now;
        let at_secs = log.started.elapsed().as_secs_f64();
        if log.trace {
            eprintln!("{}", trace_line(at_secs, &slice, &step));
        }
        let reason = change_reason(&step);
        if step.weights != in_force {
            in_force = step.weights.clone();
            let _ = tokio::fs::write(&config, configs::render(&workload.fleet, &in_force)).await;
        }
        if let Some(reason) = reason {
            log.changes.lock().await.push(Change {
                at_secs,
                weights: in_force.clone(),
                reason,
            });
        }
    }
}

/// Why the tuner changed course this step (a verdict, or an experiment started).
fn change_reason(step: &Step) -> Option<String> {
    match (&step.verdict, &step.started) {
        (Some(v), _) => Some(v.reason.clone()),
        (None, Some(why)) => Some(format!("experiment: {why}")),
        (None, None) => None,
    }
}

/// One line per slice for `--trace`: what the slice measured and what the tuner did.
fn trace_line(at_secs: f64, slice: &Slice, step: &Step) -> String {
    let mean = (slice.ttft.count > 0.0).then(|| slice.ttft.sum / slice.ttft.count);
    let what = change_reason(step).unwrap_or_else(|| match &step.holding {
        Some(why) => format!("hold: {why}"),
        None => "experiment goes on".to_string(),
    });
    let w = &step.weights;
    format!(
        "{at_secs:6.1} s  {:4.0} requests  mean {}  match {}  imbalance {}  next {:.2}/{:.2}/{:.2}  {what}",
        slice.ttft.count,
        mean.map_or("-".to_string(), |m| format!("{:.3} s", m)),
        slice
            .signals
            .prefix_match
            .map_or("-".to_string(), |p| format!("{p:.2}")),
        slice
            .signals
            .queue_imbalance
            .map_or("-".to_string(), |i| format!("{i:.2}")),
        w.prefix_cache,
        w.queue,
        w.kv_cache_utilization,
    )
}

/// Sets each weighting of `path` at its moment, as the tuned run did.
async fn replay(path: Vec<(f64, ScorerWeights)>, config: PathBuf, fleet: Fleet, started: Instant) {
    for (at, weights) in path {
        tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
        let _ = tokio::fs::write(&config, configs::render(&fleet, &weights)).await;
    }
}

/// The tuner's settings on the benchmark's compressed clock: the same logic as in
/// the operator, with slices of seconds instead of `autoTune.interval`.
pub fn bench_settings() -> Settings {
    Settings {
        min_samples: 25.0,
        ..Settings::default()
    }
}

/// Runs `config` once over `schedule`.
pub async fn run_once(
    bins: &Binaries<'_>,
    workload: &Workload,
    schedule: &[Request],
    config: &Config,
    repeat: u64,
    trace: bool,
) -> Result<RunResult, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let (_fleet, endpoints) = with_fresh_ports("simulators", || async {
        let (fleet, endpoints) = start_fleet(bins.sim, &workload.fleet, workload.seed + repeat)?;
        for address in &endpoints {
            wait_healthy(
                &client,
                &format!("http://{address}/health"),
                Duration::from_secs(30),
            )
            .await?;
        }
        Ok((fleet, endpoints))
    })
    .await?;
    let dir = std::env::temp_dir().join(format!(
        "llmd-bench-tuner-{}-{}",
        std::process::id(),
        config.label().replace([':', '/'], "_")
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config.initial(&workload.fleet))
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let epp = with_fresh_ports("llmd-epp", || {
        start_epp(bins.epp, &endpoints, &config_path, &client)
    })
    .await?;
    // Let the first scrapes land so the first picks see load.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let tuner = (*config == Config::Tuned).then(|| {
        tokio::spawn(tune(
            client.clone(),
            epp.metrics.clone(),
            config_path.clone(),
            workload.clone(),
            stop.clone(),
            Log {
                started,
                changes: changes.clone(),
                trace,
            },
        ))
    });
    let replayer = match config {
        Config::Replay { path, .. } => Some(tokio::spawn(replay(
            path.clone(),
            config_path.clone(),
            workload.fleet.clone(),
            started,
        ))),
        _ => None,
    };
    let url = format!("{}/v1/completions", epp.proxy);
    let mut handles = Vec::with_capacity(schedule.len());
    for r in schedule {
        tokio::time::sleep_until((started + Duration::from_secs_f64(r.at_secs)).into()).await;
        let body = json!({"model": "bench-model", "prompt": r.prompt, "max_tokens": r.output_tokens,
                          "ignore_eos": true, "stream": true,
                          "stream_options": {"include_usage": true}});
        let (client, url, phase, at_secs, tenant) =
            (client.clone(), url.clone(), r.phase, r.at_secs, r.tenant);
        handles.push(tokio::spawn(async move {
            let sample = driver::one_within(&client, &url, &body, Duration::from_secs(60)).await;
            Measured {
                phase,
                at_secs,
                tenant,
                sample,
            }
        }));
    }
    let mut samples = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(s) = h.await {
            samples.push(s);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tuner.into_iter().chain(replayer) {
        task.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let changes = changes.lock().await.clone();
    Ok(RunResult { samples, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_path_keeps_each_change_of_the_weights_in_force() {
        let change = |at_secs: f64, prefix: f64, reason: &str| Change {
            at_secs,
            weights: ScorerWeights::of(prefix, 2.0, 2.0),
            reason: reason.into(),
        };
        let run = RunResult {
            samples: Vec::new(),
            changes: vec![
                change(15.0, 2.0, "experiment: try prefix 3 -> 2"),
                change(27.0, 3.0, "kept the incumbent"),
                // A verdict that keeps what is in force changes nothing.
                change(42.0, 3.0, "kept the incumbent"),
                change(54.0, 4.5, "experiment: try prefix 3 -> 4.5"),
            ],
        };
        let path = run.weight_path();
        let at: Vec<f64> = path.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, vec![15.0, 27.0, 54.0]);
        assert_eq!(path[0].1, ScorerWeights::of(2.0, 2.0, 2.0));
        assert_eq!(path[2].1, ScorerWeights::of(4.5, 2.0, 2.0));
    }
}
