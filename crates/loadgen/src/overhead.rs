//! What the llmd-epp proxy and the decode pods' llmd-sidecar add to a request: the
//! same tiny requests, one at a time, in turn straight to one sim, through the
//! sidecar in front of it (as a decode pod serves them) and through the proxy.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fleet::{self, SimModel};
use crate::routers::{self, Binaries, Policy};

pub struct Overhead {
    pub direct_p50: f64,
    pub direct_p99: f64,
    pub proxy_p50: f64,
    pub proxy_p99: f64,
    pub sidecar_p50: f64,
    pub sidecar_p99: f64,
}

async fn time_one(client: &reqwest::Client, url: &str) -> Result<f64, String> {
    let body = json!({"model": "bench-model", "prompt": "ping", "max_tokens": 1});
    let t = Instant::now();
    let r = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("status {}", r.status()));
    }
    r.bytes().await.map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// llmd-sidecar in front of the sim listening on `sim_port` (pass-through: no
/// prefiller named), on a free port of its own.
async fn start_sidecar(
    bin: &std::path::Path,
    sim_port: u16,
    client: &reqwest::Client,
) -> Result<(fleet::Proc, String), String> {
    fleet::with_fresh_ports("llmd-sidecar", || async {
        let port = fleet::free_port()?;
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["--port", &port.to_string()])
            .args(["--model-server-port", &sim_port.to_string()])
            .env("RUST_LOG", "warn");
        let proc = fleet::spawn("llmd-sidecar", &mut cmd)?;
        let base = format!("http://127.0.0.1:{port}");
        fleet::wait_healthy(client, &format!("{base}/health"), Duration::from_secs(20)).await?;
        Ok((proc, base))
    })
    .await
}

pub async fn measure(
    sim_bin: &std::path::Path,
    model: &SimModel,
    bins: &Binaries<'_>,
    client: &reqwest::Client,
    n: usize,
) -> Result<Overhead, String> {
    let sims = fleet::start_fleet(sim_bin, model, 1, client, fleet::KvEvents::Off).await?;
    let addr = sims[0].address.clone();
    let router = routers::start(Policy::EPP, std::slice::from_ref(&addr), bins, client).await?;
    let sim_port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in {addr}"))?;
    let (_sidecar, sidecar_base) = start_sidecar(bins.sidecar, sim_port, client).await?;
    let direct_url = format!("http://{addr}/v1/completions");
    let proxy_url = format!("{}/v1/completions", router.base());
    let sidecar_url = format!("{sidecar_base}/v1/completions");
    // Warm every path's connections.
    for _ in 0..20 {
        time_one(client, &direct_url).await?;
        time_one(client, &sidecar_url).await?;
        time_one(client, &proxy_url).await?;
    }
    let mut times = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    for _ in 0..n {
        for (url, samples) in [&direct_url, &sidecar_url, &proxy_url]
            .iter()
            .zip(&mut times)
        {
            samples.push(time_one(client, url).await?);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for samples in &mut times {
        samples.sort_by(f64::total_cmp);
    }
    let [direct, sidecar, proxy] = &times;
    Ok(Overhead {
        direct_p50: pct(direct, 50.0),
        direct_p99: pct(direct, 99.0),
        proxy_p50: pct(proxy, 50.0),
        proxy_p99: pct(proxy, 99.0),
        sidecar_p50: pct(sidecar, 50.0),
        sidecar_p99: pct(sidecar, 99.0),
    })
}
