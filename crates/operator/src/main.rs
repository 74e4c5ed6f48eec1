//! `llmd-operator`: turns LLMDeployment resources into llm-d style inference stacks.

mod adapter_loader;
mod apply;
mod autoscaler;
mod build;
mod children;
mod conditions;
mod context;
mod controller;
mod crdgen;
mod discovery;
mod epp_scrape;
mod error;
mod events;
mod fabric_probe;
mod kv_events_seen;
mod leader_election;
mod metrics;
mod observe;
mod reconcile;
mod rendering;
mod server;
mod status;
mod telemetry;
mod tuner;
mod validate;

#[cfg(test)]
mod reconcile_tests;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::api::ListParams;
use kube::{Api, Client};
use llmd_api::LLMDeployment;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::context::Context;
use crate::leader_election::{Fence, LeaseLock, Timings};
use crate::metrics::Metrics;
use crate::server::ServerState;
use crate::telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "llmd-operator",
    version,
    about = "Kubernetes operator for llm-d style LLM inference stacks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Run the controller. The cluster comes from KUBECONFIG (or ~/.kube/config), else
    /// the in-cluster service account.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Address of the Prometheus metrics endpoint (/metrics).
    #[arg(long, env = "LLMD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address of the health endpoints (/healthz, /readyz).
    #[arg(long, env = "LLMD_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LLMD_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, env = "LLMD_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "llmd-operator-leader")]
    lease_name: String,
    /// How long a standby waits, from when it last saw the lease change, before it
    /// takes the lease, in seconds. Must exceed the renew deadline.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// How long the leader keeps leading without a successful renewal, in seconds; it
    /// then stops and exits. Must exceed the retry period.
    #[arg(long, default_value_t = 10)]
    lease_renew_deadline_seconds: u64,
    /// How often the leader renews and a standby retries, in seconds.
    #[arg(long, default_value_t = 2)]
    lease_retry_seconds: u64,
    /// EndpointPicker image for LLMDeployments that do not set spec.router.image.
    #[arg(long, env = "LLMD_DEFAULT_EPP_IMAGE", default_value = llmd_api::images::DEFAULT_EPP_IMAGE)]
    default_epp_image: String,
    /// EndpointPicker resources (JSON of a ResourceRequirements) for LLMDeployments
    /// that do not set spec.router.resources, e.g. '{"requests":{"cpu":"100m"}}'.
    #[arg(long, env = "LLMD_DEFAULT_EPP_RESOURCES", value_parser = parse_resources)]
    default_epp_resources: Option<ResourceRequirements>,
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "LLMD_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// LLMDeployments reconciled at once. The API server sets the pace; more at
    /// once only costs memory.
    #[arg(long, env = "LLMD_RECONCILE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    reconcile_concurrency: u16,
    /// Identity in the lease (defaults to the pod name or host name plus process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn parse_resources(text: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(text).map_err(|e| format!("not a ResourceRequirements JSON object: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crdgen::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Resolves once on SIGINT or SIGTERM and tells every watcher of the returned channel.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn run(mut args: RunArgs) -> Result<(), String> {
    // OLM passes the target namespace in LLMD_WATCH_NAMESPACE, empty for all namespaces.
    args.namespace = args.namespace.filter(|ns| !ns.is_empty());
    let timings = Timings::from_seconds(
        args.lease_duration_seconds,
        args.lease_renew_deadline_seconds,
        args.lease_retry_seconds,
    )
    .map_err(|e| format!("invalid leader election timings: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    server::serve(args.metrics_addr, server::metrics_router(state.clone()))
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_addr))?;
    server::serve(args.health_addr, server::health_router(state))
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.health_addr))?;

    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}"))?;
    let lds: Api<LLMDeployment> = controller::scoped_api(&client, args.namespace.as_deref());
    lds.list_metadata(&ListParams::default().limit(1)).await.map_err(|e| {
        format!("cannot list llmdeployments.llmd.dev (is the CRD installed? kubectl apply -f crds/): {e}")
    })?;
    ready.store(true, Ordering::Relaxed);

    let stop = shutdown_signal();
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "llmd-operator".into());
        format!("{host}-{}", std::process::id())
    });
    let epp_defaults = build::EndpointPickerDefaults {
        image: args.default_epp_image.clone(),
        resources: args.default_epp_resources.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Some(identity.clone()),
        epp_defaults,
    ));

    if !args.leader_elect {
        info!("leader election off: reconciling");
        controller::run(
            client,
            ctx,
            args.namespace.clone(),
            args.reconcile_concurrency,
            wait_for(stop),
        )
        .await;
        return Ok(());
    }

    let lease = LeaseLock::new(
        Api::<Lease>::namespaced(client.clone(), &args.leader_election_namespace),
        args.lease_name.clone(),
        identity,
        timings,
    );
    info!(identity = lease.identity(), lease = %args.lease_name, ?timings, "waiting to become leader");
    let scope = (args.namespace.clone(), args.reconcile_concurrency);
    lead(lease, client, ctx, scope, &metrics, stop).await
}

/// Wait for the lease, then reconcile while holding it. `Err` when leadership was lost:
/// the process exits non-zero and restarts clean.
async fn lead(
    lease: LeaseLock,
    client: Client,
    ctx: Arc<Context>,
    (namespace, concurrency): (Option<String>, u16),
    metrics: &Metrics,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    // Every write a reconcile makes checks the fence: closed until we lead, closed
    // again the instant the renew deadline passes.
    let fence = Arc::new(Fence::closed());
    leader_election::fence::install(fence.clone());
    let Some(renewed_at) = lease.acquire(stop.clone()).await else {
        return Ok(());
    };
    info!(identity = lease.identity(), "became leader: reconciling");
    fence.open_until(renewed_at + lease.timings().renew_deadline);
    metrics.leader.set(1);
    let lease = Arc::new(lease);
    let mut leading = tokio::spawn({
        let (lease, fence) = (lease.clone(), fence.clone());
        async move { lease.keep_leading(renewed_at, &fence).await }
    });
    let reconciling = controller::run(client, ctx, namespace, concurrency, wait_for(stop));
    tokio::select! {
        // Stopped by a signal: in-flight reconciles finished.
        () = reconciling => {}
        // Leadership ended: leaving this branch drops the controller and its tuner,
        // cancelling whatever they were doing; the fence already refuses their writes.
        lost = &mut leading => {
            fence.close();
            metrics.leader.set(0);
            let why = lost.map_or_else(|e| format!("the renewal task failed: {e}"), |l| l.to_string());
            return Err(format!(
                "stopped leading ({why}): exiting without touching the lease, so that only one replica reconciles and this one restarts clean"
            ));
        }
    }
    leading.abort();
    metrics.leader.set(0);
    // Release only while our last renewal still stands, and only as long as it does.
    let left = fence.time_left(tokio::time::Instant::now());
    fence.close();
    match left {
        Some(left) => match tokio::time::timeout(left, lease.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not release the lease"),
            Err(_) => warn!(timeout = ?left, "releasing the lease timed out"),
        },
        None => warn!("renew deadline passed while stopping: leaving the lease to expire"),
    }
    info!("stopped");
    Ok(())
}
