//! Processes on loopback: the llm-d-inference-sim fleet and the routers under test.
//! Every process is killed when its handle drops.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kv_forward;
use llmd_kv_relay::Relay;

pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

pub struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc, String> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(Proc { child })
}

/// A port found free can be taken (by an outgoing connection's ephemeral port, say)
/// before the process that was given it binds it: starts are tried this many times,
/// with fresh ports each time.
pub const START_ATTEMPTS: usize = 3;

/// Runs `start` until it succeeds, at most [`START_ATTEMPTS`] times.
pub async fn with_fresh_ports<T, Fut>(
    what: &str,
    mut start: impl FnMut() -> Fut,
) -> Result<T, String>
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for attempt in 1..=START_ATTEMPTS {
        match start().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                eprintln!("{what}: start attempt {attempt} failed: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

/// Polls `url` until it answers 2xx, for at most `timeout`.
pub async fn wait_healthy(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{url} not healthy after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Latency model of every sim in the fleet.
#[derive(Clone, Debug)]
pub struct SimModel {
    pub prefill_overhead: &'static str,
    pub prefill_per_token: &'static str,
    pub inter_token: &'static str,
    pub max_num_seqs: u32,
    pub kv_cache_blocks: u32,
    pub kv_transfer_per_token: &'static str,
}

/// The fleet of `make bench`: every sim prefills at 5 ms + 0.4 ms per uncached
/// token, decodes at 5 ms per token, runs 4 requests at once and caches 512 blocks.
pub const BENCH_MODEL: SimModel = SimModel {
    prefill_overhead: "5ms",
    prefill_per_token: "400us",
    inter_token: "5ms",
    max_num_seqs: 4,
    kv_cache_blocks: 512,
    kv_transfer_per_token: "20us",
};

pub struct Sim {
    pub address: String,
    _proc: Proc,
    _events: Option<Relay>,
}

/// Whether the fleet's engines offer KV events, as vLLM pods do with
/// `--kv-events-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvEvents {
    Off,
    /// Each simulator gets its own loopback address (as a pod has its own IP) and
    /// offers its events on this port of it.
    On {
        port: u16,
    },
}

/// The loopback address of simulator `i` when it offers KV events: the EPP tells
/// pods apart by IP, and every 127.0.0.0/8 address is local.
fn pod_ip(i: usize) -> String {
    format!("127.0.{}.{}", 1 + i / 250, 2 + i % 250)
}

pub async fn start_fleet(
    bin: &Path,
    model: &SimModel,
    n: usize,
    client: &reqwest::Client,
    events: KvEvents,
) -> Result<Vec<Sim>, String> {
    let mut sims = Vec::new();
    for i in 0..n {
        let port = free_port()?;
        let (ip, forwarder, event_flags) = match events {
            KvEvents::Off => (
                "127.0.0.1".to_string(),
                None,
                vec!["--zmq-endpoint".to_string(), String::new()],
            ),
            KvEvents::On { port: events_port } => {
                let ip = pod_ip(i);
                let (forwarder, flags) = kv_forward::start(&ip, events_port).await?;
                (ip, Some(forwarder), flags)
            }
        };
        let proc = spawn(
            &format!("sim-{i}"),
            Command::new(bin)
                .args(["--port", &port.to_string(), "--model", "bench-model"])
                .args(["--enable-kvcache", "--force-dummy-tokenizer"])
                .args(&event_flags)
                .args(["--latency-calculator", "per-token"])
                .args(["--prefill-overhead", model.prefill_overhead])
                .args(["--prefill-time-per-token", model.prefill_per_token])
                .args(["--inter-token-latency", model.inter_token])
                .args([
                    "--kv-cache-transfer-time-per-token",
                    model.kv_transfer_per_token,
                ])
                .args(["--kv-cache-transfer-latency", "1ms"])
                .args(["--max-num-seqs", &model.max_num_seqs.to_string()])
                .args(["--kv-cache-size", &model.kv_cache_blocks.to_string()])
                .args([
                    "--max-model-len",
                    "16384",
                    "--seed",
                    &(1000 + i).to_string(),
                ])
                .env("POD_IP", &ip)
                .env("POD_NAME", format!("sim-{i}"))
                .env("POD_NAMESPACE", "bench"),
        )?;
        sims.push(Sim {
            address: format!("{ip}:{port}"),
            _proc: proc,
            _events: forwarder,
        });
    }
    for s in &sims {
        wait_healthy(
            client,
            &format!("http://{}/health", s.address),
            Duration::from_secs(30),
        )
        .await?;
    }
    Ok(sims)
}
