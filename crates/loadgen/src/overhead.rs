//! What the llmd-epp proxy adds to a request: the same tiny requests, one at a time,
//! alternately straight to one sim and through the proxy in front of it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fleet::{self, SimModel};
use crate::routers::{self, Binaries, Policy};

pub struct Overhead {
    pub direct_p50: f64,
    pub direct_p99: f64,
    pub proxy_p50: f64,
    pub proxy_p99: f64,
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
    let direct_url = format!("http://{addr}/v1/completions");
    let proxy_url = format!("{}/v1/completions", router.base());
    // Warm both paths' connections.
    for _ in 0..20 {
        time_one(client, &direct_url).await?;
        time_one(client, &proxy_url).await?;
    }
    let (mut direct, mut proxy) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        direct.push(time_one(client, &direct_url).await?);
        proxy.push(time_one(client, &proxy_url).await?);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    direct.sort_by(f64::total_cmp);
    proxy.sort_by(f64::total_cmp);
    Ok(Overhead {
        direct_p50: pct(&direct, 50.0),
        direct_p99: pct(&direct, 99.0),
        proxy_p50: pct(&proxy, 50.0),
        proxy_p99: pct(&proxy, 99.0),
    })
}
