//! `llmd-sidecar`: the decode-side routing sidecar (see `llmd_epp::sidecar`).

use std::process::ExitCode;

use clap::Parser;
use llmd_epp::cli::LogFormat;
use llmd_epp::sidecar::cli::SidecarCli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = SidecarCli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match llmd_epp::sidecar::serve::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "llmd-sidecar stopped");
            ExitCode::FAILURE
        }
    }
}
