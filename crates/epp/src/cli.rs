//! Command-line flags of `llmd-epp`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The llm-d style EndpointPicker: prefix-, load- and KV-aware routing with P/D
/// disaggregation, behind an Envoy ext-proc service and an OpenAI-compatible proxy.
///
/// Endpoints come either from the Kubernetes API (Ready pods matching --selector in
/// --pool-namespace, or the selector of InferencePool --pool-name) or from
/// --static-endpoints for local runs.
#[derive(Parser, Debug, Clone)]
#[command(name = "llmd-epp", version)]
pub struct Cli {
    /// Static endpoints instead of watching the API: `host:port[=role],...` where
    /// role is prefill, decode, both or prefill-decode (none = aggregated server).
    #[arg(long, env = "LLMD_EPP_STATIC_ENDPOINTS")]
    pub static_endpoints: Option<String>,

    /// InferencePool whose selector and target port to use when --selector is not given.
    #[arg(long)]
    pub pool_name: Option<String>,

    /// Namespace of the pool's pods (default: the in-cluster namespace, else "default").
    #[arg(long)]
    pub pool_namespace: Option<String>,

    /// API group of the InferencePool (accepted for compatibility with llm-d's EPP).
    #[arg(long, default_value = "inference.networking.k8s.io")]
    pub pool_group: String,

    /// Label selector of the pool's pods, e.g. `app=x,llm-d.ai/inference-serving=true`.
    #[arg(long)]
    pub selector: Option<String>,

    /// Port of the model server on each pod.
    #[arg(long, default_value_t = 8000)]
    pub target_port: u16,

    /// EndpointPickerConfig YAML; polled and applied live on change. Without it the
    /// defaults apply (prefix-cache 3, queue 2, kv-cache-utilization 2).
    #[arg(long)]
    pub config_file: Option<PathBuf>,

    /// How often --config-file is checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub config_poll_interval: Duration,

    /// OpenAI-compatible HTTP proxy (`/v1/completions`, `/v1/chat/completions`, `/v1/models`).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub proxy_addr: SocketAddr,

    /// Envoy ext-proc gRPC service.
    #[arg(long, default_value = "0.0.0.0:9002")]
    pub grpc_addr: SocketAddr,

    /// gRPC health service (service name `inference-extension`).
    #[arg(long, default_value = "0.0.0.0:9003")]
    pub grpc_health_addr: SocketAddr,

    /// Prometheus metrics at `/metrics`.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// How often each endpoint's `/metrics` is scraped.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub scrape_interval: Duration,

    /// Timeout of one scrape.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub scrape_timeout: Duration,

    /// Scraped metrics older than this are ignored, and an endpoint without fresh
    /// metrics is left out of picks while other endpoints have them.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub metrics_staleness: Duration,

    /// Largest request body accepted by the proxy and the ext-proc service.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Log format (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Parses `250ms`, `2s`, `1m` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 50ms or 2s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn accepts_the_operator_deployment_args() {
        let cli = Cli::try_parse_from([
            "llmd-epp",
            "--pool-namespace",
            "ns",
            "--selector",
            "app.kubernetes.io/instance=x,llm-d.ai/inference-serving=true",
            "--target-port",
            "8000",
            "--config-file",
            "/etc/llmd-epp/config.yaml",
            "--proxy-addr",
            "0.0.0.0:8080",
            "--grpc-addr",
            "0.0.0.0:9002",
            "--grpc-health-addr",
            "0.0.0.0:9003",
            "--metrics-addr",
            "0.0.0.0:9090",
            "--log-format",
            "json",
        ])
        .expect("operator args parse");
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.grpc_addr.port(), 9002);
        Cli::command().debug_assert();
    }
}
