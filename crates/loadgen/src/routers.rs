//! The routers compared: client-side round-robin and random straight to the sims,
//! llmd-epp's proxy (aggregated or P/D), and vllm-router's policies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llmd_api::RouterSpec;
use llmd_api::endpoint_picker_config::EndpointPickerConfig;
use rand::Rng;

use crate::fleet::{Proc, free_port, spawn, wait_healthy};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Random,
    Epp,
    /// llmd-epp with the P/D profile handler over prefill and decode sims.
    EppPd,
    VllmRouter(&'static str),
}

impl Policy {
    pub fn label(self) -> String {
        match self {
            Policy::RoundRobin => "round-robin".into(),
            Policy::Random => "random".into(),
            Policy::Epp => "llmd-epp".into(),
            Policy::EppPd => "llmd-epp P/D".into(),
            Policy::VllmRouter(p) => format!("vllm-router {p}"),
        }
    }
}

/// A running router: where to send each request.
pub struct Router {
    pub policy: Policy,
    bases: Vec<String>,
    next: AtomicUsize,
    pub proc: Option<Proc>,
    pub metrics_url: Option<String>,
    _config: Option<PathBuf>,
}

impl Router {
    /// Base URL for the next request.
    pub fn base(&self) -> &str {
        match self.policy {
            Policy::RoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                &self.bases[i % self.bases.len()]
            }
            Policy::Random => &self.bases[rand::rng().random_range(0..self.bases.len())],
            _ => &self.bases[0],
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

pub struct Binaries<'a> {
    pub epp: &'a Path,
    pub vllm_router: Option<&'a Path>,
}

/// P/D config with the default weights: disaggregate when at least `non_cached`
/// prompt tokens are uncached.
fn pd_config(non_cached: usize) -> String {
    let mut router = RouterSpec::default();
    router.disaggregation.non_cached_tokens = i32::try_from(non_cached).unwrap_or(i32::MAX);
    EndpointPickerConfig::for_router(&router, &router.scorers, true).to_yaml()
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
        proc: None,
        metrics_url: None,
        _config: None,
    };
    match policy {
        Policy::RoundRobin | Policy::Random => {
            router.bases = plain.iter().map(|a| format!("http://{a}")).collect();
        }
        Policy::Epp | Policy::EppPd => {
            let (proxy, grpc, health, metrics) =
                (free_port()?, free_port()?, free_port()?, free_port()?);
            let mut cmd = Command::new(bins.epp);
            cmd.args(["--static-endpoints", &sims.join(",")])
                .args(["--proxy-addr", &format!("127.0.0.1:{proxy}")])
                .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
                .args(["--grpc-health-addr", &format!("127.0.0.1:{health}")])
                .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
                .env("RUST_LOG", "warn");
            if policy == Policy::EppPd {
                let path = std::env::temp_dir().join(format!("llmd-bench-pd-{proxy}.yaml"));
                std::fs::write(&path, pd_config(256)).map_err(|e| format!("write config: {e}"))?;
                cmd.arg("--config-file").arg(&path);
                router._config = Some(path);
            }
            router.proc = Some(spawn("llmd-epp", &mut cmd)?);
            router.bases = vec![format!("http://127.0.0.1:{proxy}")];
            router.metrics_url = Some(format!("http://127.0.0.1:{metrics}/metrics"));
            wait_healthy(
                client,
                &format!("http://127.0.0.1:{proxy}/health"),
                Duration::from_secs(20),
            )
            .await?;
            // Let the first scrapes land so the first picks see load.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Policy::VllmRouter(p) => {
            let bin = bins
                .vllm_router
                .ok_or("vllm-router not installed (make bench-vllm-router)")?;
            let port = free_port()?;
            let prom = free_port()?;
            let mut cmd = Command::new(bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--policy", p, "--log-level", "error"])
                .args(["--prometheus-port", &prom.to_string()])
                .arg("--worker-urls")
                .args(plain.iter().map(|a| format!("http://{a}")));
            router.proc = Some(spawn("vllm-router", &mut cmd)?);
            router.bases = vec![format!("http://127.0.0.1:{port}")];
            wait_healthy(
                client,
                &format!("http://127.0.0.1:{port}/health"),
                Duration::from_secs(60),
            )
            .await?;
        }
    }
    Ok(router)
}
