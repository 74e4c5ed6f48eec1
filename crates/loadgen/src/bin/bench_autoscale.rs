//! `llmd-bench-autoscale`: built-in autoscaling of prefill and decode against fixed
//! splits of the same GPU budget, on the live local stack (every pod a real process).
//! Each configuration is applied as an LLMDeployment in turn, driven through its
//! EndpointPicker pod by the same open-loop schedule (calm, a surge of long uncached
//! prompts, calm again), and measured: time-to-first-token SLO attainment and
//! percentiles, and the GPU-seconds its pods held (sampled every second).
//!
//! Run by `make bench-autoscale` (a private cluster with the operator watching the
//! benchmark's namespace); it drives the cluster with kubectl from `LLMD_BIN_DIR`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use llmd_loadgen::driver::{self, Sample};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "llmd-bench-autoscale",
    about = "Autoscaled prefill/decode against fixed splits on the live local stack"
)]
struct Args {
    /// Namespace the operator watches (its pods run on live nodes).
    #[arg(long, default_value = "bench-autoscale")]
    namespace: String,
    /// GPUs the fixed splits share (one per pod); the autoscaled roles may use up
    /// to this many each, and the peak is reported.
    #[arg(long, default_value_t = 4)]
    gpus: i32,
    /// Seconds of each phase: calm, surge, calm.
    #[arg(long, value_delimiter = ',', default_value = "20,60,40")]
    phases: Vec<u64>,
    /// Requests per second while calm (short prompts) and in the surge (long ones).
    #[arg(long, default_value_t = 1.0)]
    calm_rate: f64,
    #[arg(long, default_value_t = 5.0)]
    surge_rate: f64,
    /// Words of each surge prompt (about one token each).
    #[arg(long, default_value_t = 750)]
    long_words: usize,
    /// The time-to-first-token objective, milliseconds.
    #[arg(long, default_value_t = 1500)]
    slo_ttft_ms: u64,
    /// Only the configurations whose label contains one of these.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the results as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

struct Config {
    label: String,
    prefill: String,
    decode: String,
}

const MODEL: &str = "bench/model";
/// Both roles run two sequences at a time, so a pod's capacity is finite.
const ROLE_ARGS: &str = "    args: [--max-num-seqs, \"2\"]\n";

fn configs(gpus: i32) -> Vec<Config> {
    let mut out = vec![Config {
        label: "autoscaled".into(),
        prefill: format!(
            "    replicas: 1\n{ROLE_ARGS}    autoscaling: {{maxReplicas: {}, target: {{ttftMs: 750}}, intervalSeconds: 5, scaleDownStabilizationSeconds: 20}}\n",
            gpus - 1
        ),
        decode: format!(
            "    replicas: 1\n{ROLE_ARGS}    autoscaling: {{maxReplicas: {}, target: {{waitingPerPod: 2}}, intervalSeconds: 5, scaleDownStabilizationSeconds: 20}}\n",
            gpus - 1
        ),
    }];
    for p in 1..gpus {
        out.push(Config {
            label: format!("fixed {p}P/{}D", gpus - p),
            prefill: format!("    replicas: {p}\n{ROLE_ARGS}"),
            decode: format!("    replicas: {}\n{ROLE_ARGS}", gpus - p),
        });
    }
    out
}

fn manifest(name: &str, c: &Config) -> String {
    format!(
        "apiVersion: llmd.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    name: {MODEL}\n    uri: hf://{MODEL}\n  prefill:\n{}  decode:\n{}  router:\n    disaggregation:\n      nonCachedTokens: 64\n",
        c.prefill, c.decode
    )
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let bin = std::env::var("LLMD_BIN_DIR").map_err(|_| "LLMD_BIN_DIR is not set")?;
    let mut cmd = Command::new(format!("{bin}/kubectl"));
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("kubectl: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("kubectl stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_of(args: &[&str]) -> Result<Value, String> {
    serde_json::from_str(&kubectl(args, None)?).map_err(|e| format!("kubectl {args:?}: {e}"))
}

/// Polls `check` every 500 ms for up to `secs`.
async fn wait(secs: u64, what: &str, mut check: impl FnMut() -> Option<()>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("timed out after {secs} s waiting for {what}"))
}

/// The pods with `labels`, as kubectl prints them.
fn pods_json(ns: &str, labels: &str) -> Result<Value, String> {
    json_of(&["get", "pods", "-n", ns, "-o", "json", "-l", labels])
}

/// The deployment's serving pods that hold a node (GPUs), by role.
fn pods_on_nodes(ns: &str, name: &str) -> Result<(i32, i32), String> {
    let pods = pods_json(
        ns,
        &format!("app.kubernetes.io/instance={name},llm-d.ai/inference-serving=true"),
    )?;
    let mut counts = (0, 0);
    for p in pods["items"].as_array().into_iter().flatten() {
        let placed = p["spec"]["nodeName"].is_string()
            && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        match (placed, p["metadata"]["labels"]["llm-d.ai/role"].as_str()) {
            (true, Some("prefill")) => counts.0 += 1,
            (true, Some("decode")) => counts.1 += 1,
            _ => {}
        }
    }
    Ok(counts)
}

fn ready_and_splitting(ns: &str, name: &str) -> Option<String> {
    let ld = json_of(&["get", "llmd", name, "-n", ns, "-o", "json"]).ok()?;
    let ready = ld["status"]["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let hash = ld["status"]["routing"]["configHash"].as_str()?.to_string();
    let epp = pods_json(
        ns,
        &format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=endpoint-picker"),
    )
    .ok()?;
    let ip = epp["items"][0]["status"]["podIP"].as_str()?.to_string();
    (ready && ld["status"]["kvTransfer"]["proven"] == true).then_some(())?;
    let page = Command::new("curl")
        .args([
            "-fsS",
            "--noproxy",
            "*",
            &format!("http://{ip}:9090/metrics"),
        ])
        .output()
        .ok()?;
    let page = String::from_utf8_lossy(&page.stdout);
    page.lines()
        .any(|l| l.starts_with("llmd_epp_config_info") && l.contains(&hash) && l.ends_with(" 1"))
        .then_some(ip)
}

struct Run {
    label: String,
    samples: Vec<(usize, Sample)>,
    gpu_seconds: f64,
    peak_gpus: i32,
    timeline: Vec<(f64, i32, i32)>,
}

/// The open-loop schedule: (phase, arrival second, prompt).
fn schedule(args: &Args) -> Vec<(usize, f64, String)> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut out = Vec::new();
    let mut start = 0.0;
    for (phase, secs) in args.phases.iter().enumerate() {
        let rate = if phase == 1 {
            args.surge_rate
        } else {
            args.calm_rate
        };
        let Ok(gap) = Exp::new(rate) else { continue };
        let mut t = start;
        loop {
            t += gap.sample(&mut rng);
            if t >= start + *secs as f64 {
                break;
            }
            let n = out.len();
            let prompt = if phase == 1 {
                let clauses = args.long_words / 5;
                (0..clauses)
                    .map(|c| format!("clause {c} of agreement {n} applies"))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                format!("short question {n}: what is the time?")
            };
            out.push((phase, t, prompt));
        }
        start += *secs as f64;
    }
    out
}

async fn run_one(args: &Args, c: &Config, index: usize) -> Result<Run, String> {
    let ns = args.namespace.as_str();
    let name = format!("bench-{index}");
    kubectl(&["apply", "-n", ns, "-f", "-"], Some(&manifest(&name, c)))?;
    let mut epp = None;
    wait(
        240,
        "Ready, the KV fabric proven and the EPP on its config",
        || {
            epp = ready_and_splitting(ns, &name);
            epp.as_ref().map(|_| ())
        },
    )
    .await?;
    let epp = epp.ok_or("no EndpointPicker")?;
    let url = format!("http://{epp}:8080/v1/completions");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;

    // GPU-seconds: pods holding a node, sampled every second.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, ns, name) = (stop.clone(), ns.to_string(), name.clone());
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut timeline = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((p, d)) = pods_on_nodes(&ns, &name) {
                    timeline.push((started.elapsed().as_secs_f64(), p, d));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            timeline
        })
    };
    let started = Instant::now();
    let mut handles = Vec::new();
    for (phase, at, prompt) in schedule(args) {
        tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
        let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 16, "ignore_eos": true, "stream": true});
        let (client, url) = (client.clone(), url.clone());
        handles.push(tokio::spawn(async move {
            let s = driver::one_within(&client, &url, &body, Duration::from_secs(120)).await;
            (phase, s)
        }));
    }
    let mut samples = Vec::new();
    for h in handles {
        if let Ok(s) = h.await {
            samples.push(s);
        }
    }
    let total: u64 = args.phases.iter().sum();
    tokio::time::sleep_until((started + Duration::from_secs(total)).into()).await;
    stop.store(true, Ordering::Relaxed);
    let timeline = sampler.await.map_err(|e| e.to_string())?;
    let gpu_seconds = timeline
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * f64::from(w[0].1 + w[0].2))
        .sum();
    let peak_gpus = timeline.iter().map(|(_, p, d)| p + d).max().unwrap_or(0);
    kubectl(&["delete", "llmd", &name, "-n", ns, "--wait=true"], None)?;
    wait(120, "the pods gone", || {
        pods_on_nodes(ns, &name)
            .ok()
            .filter(|c| *c == (0, 0))
            .map(|_| ())
    })
    .await?;
    Ok(Run {
        label: c.label.clone(),
        samples,
        gpu_seconds,
        peak_gpus,
        timeline,
    })
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn table(args: &Args, runs: &[Run]) -> String {
    let slo = args.slo_ttft_ms as f64 / 1000.0;
    let mut out = format!(
        "| configuration | requests | failed | TTFT <= {} ms | p50 TTFT | p90 TTFT | surge p90 TTFT | GPU-seconds | peak GPUs |\n|---|---|---|---|---|---|---|---|---|\n",
        args.slo_ttft_ms
    );
    for r in runs {
        let ok: Vec<&Sample> = r.samples.iter().map(|(_, s)| s).filter(|s| s.ok).collect();
        let met = r
            .samples
            .iter()
            .filter(|(_, s)| s.ok && s.ttft <= slo)
            .count();
        let ttfts: Vec<f64> = ok.iter().map(|s| s.ttft).collect();
        let surge: Vec<f64> = r
            .samples
            .iter()
            .filter(|(p, s)| *p == 1 && s.ok)
            .map(|(_, s)| s.ttft)
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {:.1}% | {:.2} s | {:.2} s | {:.2} s | {:.0} | {} |\n",
            r.label,
            r.samples.len(),
            r.samples.len() - ok.len(),
            100.0 * met as f64 / r.samples.len().max(1) as f64,
            percentile(ttfts.clone(), 0.5),
            percentile(ttfts, 0.9),
            percentile(surge, 0.9),
            r.gpu_seconds,
            r.peak_gpus,
        ));
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut runs = Vec::new();
    for (i, c) in configs(args.gpus).iter().enumerate() {
        if !args.only.is_empty() && !args.only.iter().any(|o| c.label.contains(o.as_str())) {
            continue;
        }
        eprintln!("llmd-bench-autoscale: {}", c.label);
        match run_one(&args, c, i).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("llmd-bench-autoscale: {}: {e}", c.label);
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{}", table(&args, &runs));
    if let Some(path) = &args.out {
        let doc = json!({
            "args": format!("{args:?}"),
            "runs": runs.iter().map(|r| json!({
                "label": r.label,
                "gpu_seconds": r.gpu_seconds,
                "peak_gpus": r.peak_gpus,
                "timeline": r.timeline,
                "samples": r.samples.iter().map(|(p, s)| json!([p, s.ttft, s.ok])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        if let Err(e) = std::fs::write(path, doc.to_string()) {
            eprintln!("llmd-bench-autoscale: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
