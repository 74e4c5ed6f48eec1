//! Command-line flags of `llmd-epp`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use llmd_api::MODEL_SERVER_PORT;
use llmd_api::endpoint_picker::{EXT_PROC_PORT, GRPC_HEALTH_PORT, HTTP_PORT, METRICS_PORT, flag};

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
    #[arg(long = flag::STATIC_ENDPOINTS, env = "LLMD_EPP_STATIC_ENDPOINTS")]
    pub static_endpoints: Option<String>,

    /// InferencePool whose selector and target port to use when --selector is not given.
    #[arg(long = flag::POOL_NAME)]
    pub pool_name: Option<String>,

    /// Namespace of the pool's pods (default: the in-cluster namespace, else "default").
    #[arg(long = flag::POOL_NAMESPACE)]
    pub pool_namespace: Option<String>,

    /// API group of the InferencePool (accepted for compatibility with llm-d's EPP).
    #[arg(long, default_value = "inference.networking.k8s.io")]
    pub pool_group: String,

    /// Label selector of the pool's pods, e.g. `app=x,llm-d.ai/inference-serving=true`.
    #[arg(long = flag::SELECTOR)]
    pub selector: Option<String>,

    /// Port of the model server on each pod.
    #[arg(long = flag::TARGET_PORT, default_value_t = MODEL_SERVER_PORT as u16)]
    pub target_port: u16,

    /// EndpointPickerConfig YAML; polled and applied live on change. Without it the
    /// defaults apply (prefix-cache 3, queue 2, kv-cache-utilization 2).
    #[arg(long = flag::CONFIG_FILE)]
    pub config_file: Option<PathBuf>,

    /// The ConfigMap holding the config (key `config.yaml`) in --pool-namespace,
    /// watched through the API so a change is in force within a second or two;
    /// --config-file then stands in only while the watch fails.
    #[arg(long = flag::CONFIG_MAP)]
    pub config_map: Option<String>,

    /// How often --config-file is checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub config_poll_interval: Duration,

    /// OpenAI-compatible HTTP proxy (`/v1/completions`, `/v1/chat/completions`, `/v1/models`).
    #[arg(long = flag::PROXY_ADDR, default_value_t = any_interface(HTTP_PORT))]
    pub proxy_addr: SocketAddr,

    /// Envoy ext-proc gRPC service.
    #[arg(long = flag::GRPC_ADDR, default_value_t = any_interface(EXT_PROC_PORT))]
    pub grpc_addr: SocketAddr,

    /// gRPC health service (service name `inference-extension`).
    #[arg(long = flag::GRPC_HEALTH_ADDR, default_value_t = any_interface(GRPC_HEALTH_PORT))]
    pub grpc_health_addr: SocketAddr,

    /// Prometheus metrics at `/metrics`.
    #[arg(long = flag::METRICS_ADDR, default_value_t = any_interface(METRICS_PORT))]
    pub metrics_addr: SocketAddr,

    /// How often each endpoint's `/metrics` is scraped.
    #[arg(long, default_value = "50ms", value_parser = parse_positive_duration)]
    pub scrape_interval: Duration,

    /// Timeout of one scrape.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub scrape_timeout: Duration,

    /// Scraped metrics older than this are ignored, and an endpoint without fresh
    /// metrics is left out of picks while other endpoints have them.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub metrics_staleness: Duration,

    /// Largest request body accepted by the proxy and the ext-proc service.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Requests in flight at once across the proxy and ext-proc; more are refused
    /// with 429 and Retry-After (each may buffer up to --max-body-bytes).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,

    /// How long a model server may take to send its response headers (a
    /// non-streamed completion sends them when generation ends). Streams then run
    /// as long as they run.
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration)]
    pub engine_first_byte_timeout: Duration,

    /// Precise prefix routing: subscribe to every model-server pod's KV events on
    /// this port (each engine binds `tcp://*:<port>`, as llm-d configures vLLM's
    /// `--kv-events-config`) and match prompts against the blocks the engines report.
    /// Pods whose events do not flow are matched with the approximate index. The
    /// config's precise-prefix-cache-producer turns this on too; the flag pins it on.
    #[arg(long = flag::KV_EVENTS_PORT, env = "LLMD_EPP_KV_EVENTS_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub kv_events_port: Option<u16>,

    /// On SIGTERM: how long requests and streams in flight may take to finish
    /// before the process exits anyway (keep it below the pod's grace period).
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format (level from RUST_LOG, default info).
    #[arg(long = flag::LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

fn any_interface(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// Parses `400us`, `250ms`, `2s`, `1m` (or a bare number of seconds).
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
        "us" | "µs" => n / 1e6,
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be us, ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// [`parse_duration`], refusing zero (an interval of zero would spin).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("400us"), Ok(Duration::from_micros(400)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn parses_what_the_operator_renders() {
        let args = llmd_api::endpoint_picker::Args::for_pool("llama", "ns", "llama-epp-config")
            .with_kv_events(5556);
        let cli = Cli::try_parse_from(std::iter::once("llmd-epp".to_string()).chain(args.render()))
            .expect("operator args parse");
        assert_eq!(cli.pool_name.as_deref(), Some(args.pool_name.as_str()));
        assert_eq!(
            cli.pool_namespace.as_deref(),
            Some(args.pool_namespace.as_str())
        );
        assert_eq!(cli.selector.as_deref(), Some(args.selector.as_str()));
        assert_eq!(cli.target_port, args.target_port);
        assert_eq!(
            cli.config_file.as_deref(),
            Some(std::path::Path::new(&args.config_file))
        );
        assert_eq!(cli.config_map.as_deref(), Some(args.config_map.as_str()));
        assert_eq!(cli.proxy_addr.to_string(), args.proxy_addr);
        assert_eq!(cli.grpc_addr.to_string(), args.grpc_addr);
        assert_eq!(cli.grpc_health_addr.to_string(), args.grpc_health_addr);
        assert_eq!(cli.metrics_addr.to_string(), args.metrics_addr);
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(args.log_format, "json");
        assert_eq!(cli.kv_events_port, args.kv_events_port);
        Cli::command().debug_assert();
    }

    #[test]
    fn zero_intervals_are_refused_at_start() {
        for flag in [
            "--scrape-interval",
            "--scrape-timeout",
            "--config-poll-interval",
        ] {
            let err = Cli::try_parse_from(["llmd-epp", flag, "0s"]).expect_err(flag);
            assert!(
                err.to_string().contains("longer than zero"),
                "{flag}: {err}"
            );
        }
        assert!(Cli::try_parse_from(["llmd-epp", "--scrape-interval", "10ms"]).is_ok());
    }

    #[test]
    fn defaults_are_the_contract_ports() {
        let cli = Cli::try_parse_from(["llmd-epp"]).expect("no args needed");
        assert_eq!(cli.grpc_addr.port(), EXT_PROC_PORT);
        assert_eq!(cli.grpc_health_addr.port(), GRPC_HEALTH_PORT);
        assert_eq!(cli.proxy_addr.port(), HTTP_PORT);
        assert_eq!(cli.metrics_addr.port(), METRICS_PORT);
    }
}
