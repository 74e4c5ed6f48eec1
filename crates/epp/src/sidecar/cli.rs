//! Command-line flags of `llmd-sidecar`.

use std::time::Duration;

use clap::Parser;
use llmd_api::routing_sidecar::{self, flag};

use crate::cli::{LogFormat, parse_positive_duration};

/// The decode-side routing sidecar: owns the decode pod's serving port, runs the
/// P/D two-step for requests that name a prefiller (`x-prefiller-host-port`, as the
/// EndpointPicker answers a Gateway) and passes everything else to the local engine.
#[derive(Parser, Debug, Clone)]
#[command(name = "llmd-sidecar", version)]
pub struct SidecarCli {
    /// Port clients (the Gateway, the EndpointPicker's proxy) reach the pod on.
    #[arg(long = flag::PORT, default_value_t = routing_sidecar::PORT as u16)]
    pub port: u16,

    /// Port of the local engine (llm-d's `--vllm-port` is accepted too).
    #[arg(long = flag::MODEL_SERVER_PORT, alias = "vllm-port", default_value_t = routing_sidecar::ENGINE_PORT as u16)]
    pub model_server_port: u16,

    /// Data-parallel ranks that each serve their own port: rank r listens on
    /// port + r and forwards to model-server-port + r.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub data_parallel_size: u16,

    /// Accept only prefillers that are Ready pods matching --prefill-selector
    /// (their `http` ports), watched through the API; anything else is refused with
    /// 403 and never contacted.
    #[arg(long = flag::ENABLE_SSRF_PROTECTION)]
    pub enable_ssrf_protection: bool,

    /// Label selector of the pool's prefill pods, e.g.
    /// `app.kubernetes.io/instance=chat,llm-d.ai/role=prefill`.
    #[arg(long = flag::PREFILL_SELECTOR)]
    pub prefill_selector: Option<String>,

    /// Namespace of the prefill pods (default: the pod's own).
    #[arg(long = flag::NAMESPACE, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// Port of the sidecar's own `/metrics` (0: not served).
    #[arg(long = flag::METRICS_PORT, default_value_t = 0)]
    pub metrics_port: u16,

    /// How long an engine may take to send its response headers (a non-streamed
    /// completion sends them when generation ends).
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration)]
    pub engine_first_byte_timeout: Duration,

    /// Largest request body accepted.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// On SIGTERM: how long requests in flight may take to finish.
    #[arg(long, default_value = "25s", value_parser = crate::cli::parse_duration)]
    pub drain_timeout: Duration,

    /// Log format (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl SidecarCli {
    /// Flags that contradict each other.
    pub fn check(&self) -> Result<(), String> {
        if self.enable_ssrf_protection && self.prefill_selector.is_none() {
            return Err(format!(
                "--{} needs --{} (the prefill pods to accept)",
                flag::ENABLE_SSRF_PROTECTION,
                flag::PREFILL_SELECTOR
            ));
        }
        let last = |base: u16| u32::from(base) + u32::from(self.data_parallel_size) - 1;
        if last(self.port) > u32::from(u16::MAX)
            || last(self.model_server_port) > u32::from(u16::MAX)
        {
            return Err("--data-parallel-size runs the ports past 65535".into());
        }
        if self.port.abs_diff(self.model_server_port) < self.data_parallel_size {
            return Err(format!(
                "--{} and --{} overlap across {} ranks",
                flag::PORT,
                flag::MODEL_SERVER_PORT,
                self.data_parallel_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> SidecarCli {
        SidecarCli::try_parse_from(std::iter::once("llmd-sidecar").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn defaults_are_llm_ds_ports() {
        let cli = parse(&[]);
        assert_eq!((cli.port, cli.model_server_port), (8000, 8200));
        assert!(!cli.enable_ssrf_protection);
        assert!(cli.check().is_ok());
        assert_eq!(parse(&["--vllm-port", "9000"]).model_server_port, 9000);
    }

    #[test]
    fn contradictions_are_refused() {
        let e = parse(&["--enable-ssrf-protection"]).check().unwrap_err();
        assert!(e.contains("--prefill-selector"), "{e}");
        let e = parse(&[
            "--port",
            "8000",
            "--model-server-port",
            "8001",
            "--data-parallel-size",
            "2",
        ])
        .check()
        .unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        assert!(
            parse(&["--port", "65535", "--data-parallel-size", "2"])
                .check()
                .is_err()
        );
    }
}
