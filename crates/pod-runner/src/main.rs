//! llmd-pod-runner: the kubelet of the local test cluster. It registers "live"
//! nodes and runs every pod bound to them as local processes, one network
//! namespace per pod, with Ready following the containers' real probes.
//! See the crate README for the config file and what maps to what.

mod backoff;
mod config;
mod container;
mod context;
mod env;
mod events;
mod files;
mod kv_forwarder;
mod network;
mod node;
mod pod_status;
mod probe;
mod process;
mod runner;
mod stand_in;
mod supervisor;
mod token;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "llmd-pod-runner", version, about)]
struct Cli {
    /// The runner's YAML config (nodes, pod network, image table).
    #[arg(long, env = "LLMD_POD_RUNNER_CONFIG")]
    config: PathBuf,
    /// Kubeconfig of the runner's own API access (default: KUBECONFIG, then
    /// ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log format: text or json (level from RUST_LOG, default info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn client(kubeconfig: Option<PathBuf>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    let config = match config::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match client(cli.kubeconfig).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("no Kubernetes API access: {e}");
                return ExitCode::FAILURE;
            }
        };
        match runner::run(config, client).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}
