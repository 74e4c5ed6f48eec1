//! Test fixtures: llm-d-inference-sim processes and an `llmd-epp` process on
//! loopback, each killed when dropped.
#![allow(dead_code)]

pub mod kv_events;
pub mod recorder;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Locates llm-d-inference-sim: `LLMD_SIM_BIN`, else the e2e toolchain cache
/// (`make tools`). A data-plane test without its simulator fails, it never skips.
pub fn sim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LLMD_SIM_BIN").map(PathBuf::from) {
        assert!(p.is_file(), "LLMD_SIM_BIN={} does not exist", p.display());
        return p;
    }
    let root =
        Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..");
    let out = Command::new(root.join("e2e/hack/build-tools.sh"))
        .arg("--print-bin-dir")
        .output()
        .expect("e2e/hack/build-tools.sh runs");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let bin = PathBuf::from(dir).join("llm-d-inference-sim");
    assert!(
        bin.is_file(),
        "llm-d-inference-sim not found at {}: set LLMD_SIM_BIN or run `make tools`",
        bin.display()
    );
    bin
}

/// The EndpointPickerConfig of a P/D deployment with the default weights, splitting
/// requests with at least `non_cached_tokens` uncached prompt tokens.
pub fn pd_config(non_cached_tokens: i32) -> String {
    let mut router = llmd_api::RouterSpec::default();
    router.disaggregation.non_cached_tokens = non_cached_tokens;
    llmd_api::endpoint_picker_config::EndpointPickerConfig::for_router(
        &router,
        &router.scorers,
        true,
    )
    .to_yaml()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Until the EPP's proxy answers /health and its gRPC listeners accept (so a
/// test's first ext-proc stream is never refused); false if it exited first (a
/// port was taken) or is not up within 20 s.
fn up(child: &mut Child, proxy: u16, grpc: [u16; 2]) -> bool {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("http client");
    let deadline = Instant::now() + Duration::from_secs(20);
    let serving = || {
        client
            .get(format!("http://127.0.0.1:{proxy}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success())
            && grpc
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok())
    };
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if serving() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub struct Sim {
    pub port: u16,
    /// The loopback address standing for its pod IP (`POD_IP`).
    pub ip: &'static str,
    pub child: Child,
}

impl Sim {
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Starts a sim with the per-token latency model and KV-cache simulation.
    pub fn start(bin: &Path, extra: &[&str]) -> Sim {
        Self::start_at(bin, "127.0.0.1", extra)
    }

    /// Starts a sim whose pod IP is `ip` (a loopback address: it listens on all of
    /// them, and names `ip` in its KV-event topic).
    pub fn start_at(bin: &Path, ip: &'static str, extra: &[&str]) -> Sim {
        let port = free_port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--model",
            "test-model",
            "--enable-kvcache",
            "--zmq-endpoint",
            "",
            "--latency-calculator",
            "per-token",
            "--prefill-overhead",
            "2ms",
            "--prefill-time-per-token",
            "200us",
            "--inter-token-latency",
            "1ms",
            "--max-model-len",
            "8192",
            "--kv-cache-size",
            "4096",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(bin)
            .args(&args)
            .env("POD_IP", ip)
            .env("POD_NAME", format!("sim-{port}"))
            .env("POD_NAMESPACE", "test")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llm-d-inference-sim");
        let sim = Sim { port, ip, child };
        let client = http();
        wait_for("sim health", Duration::from_secs(20), || {
            client
                .get(format!("http://{}/health", sim.address()))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        sim
    }

    pub fn pod_name(&self) -> String {
        format!("sim-{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Epp {
    pub proxy: u16,
    pub grpc: u16,
    pub health: u16,
    pub metrics: u16,
    pub child: Child,
    pub config: Option<tempfile::NamedTempFile>,
}

impl Epp {
    pub fn start(static_endpoints: &str, config: Option<&str>) -> Epp {
        Self::start_with(static_endpoints, config, &[])
    }

    pub fn start_with(static_endpoints: &str, config: Option<&str>, extra: &[&str]) -> Epp {
        let config = config.map(|text| {
            let mut f = tempfile::NamedTempFile::new().expect("temp config");
            f.write_all(text.as_bytes()).expect("write config");
            f
        });
        // A port picked free may be taken by another test before the EPP binds it:
        // the EPP then exits, and is started again on other ports.
        for _ in 0..3 {
            let (proxy, grpc, health, metrics) =
                (free_port(), free_port(), free_port(), free_port());
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmd-epp"));
            cmd.args([
                "--static-endpoints",
                static_endpoints,
                "--proxy-addr",
                &format!("127.0.0.1:{proxy}"),
                "--grpc-addr",
                &format!("127.0.0.1:{grpc}"),
                "--grpc-health-addr",
                &format!("127.0.0.1:{health}"),
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
                "--config-poll-interval",
                "100ms",
            ]);
            if let Some(f) = &config {
                cmd.arg("--config-file").arg(f.path());
            }
            cmd.args(extra);
            let mut child = cmd
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("start llmd-epp");
            if up(&mut child, proxy, [grpc, health]) {
                return Epp {
                    proxy,
                    grpc,
                    health,
                    metrics,
                    child,
                    config,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("llmd-epp did not start on three sets of ports");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy)
    }

    pub fn metrics_text(&self) -> String {
        http()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    /// Rewrites the config file in place, as a ConfigMap update does.
    pub fn write_config(&self, text: &str) {
        let path = self.config.as_ref().expect("started with a config").path();
        std::fs::write(path, text).expect("rewrite config");
    }
}

impl Drop for Epp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A prompt with a long tenant-specific context and a short question.
pub fn tenant_prompt(tenant: usize, question: usize) -> String {
    let mut s = format!("Tenant {tenant} knowledge base. ");
    for i in 0..60 {
        s.push_str(&format!(
            "fact{tenant}x{i} is recorded in section {i} of tenant {tenant}. "
        ));
    }
    s.push_str(&format!(
        "Question {question}: what is fact{tenant}x{question}?"
    ));
    s
}
