//! `llmd-epp` start-up: flags, logging, discovery, scraping, config watch and the
//! three servers (HTTP proxy, ext-proc gRPC with health, metrics).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use llmd_api::endpoint_picker_config::SchedulerConfig;
use llmd_epp::cli::{Cli, LogFormat};
use llmd_epp::config_watch;
use llmd_epp::endpoint_picker::EndpointPicker;
use llmd_epp::frontend::admission::Admission;
use llmd_epp::frontend::ext_proc::ExtProcService;
use llmd_epp::frontend::proxy::ProxyState;
use llmd_epp::pd::Legs;
use llmd_epp::pool::endpoint::EndpointRegistry;
use llmd_epp::pool::scrape::{self, ScrapeSettings};
use llmd_epp::pool::{pod_watch, static_endpoints};
use llmd_epp::prefix::kv_subscriber::KvSubscriber;
use llmd_epp::prefix::precise::PreciseIndex;
use llmd_epp::serve;
use llmd_epp::telemetry::Telemetry;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "llmd-epp stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let telemetry = Arc::new(Telemetry::new());
    let config = match &cli.config_file {
        Some(path) => match config_watch::load(path) {
            Ok(c) => c,
            Err(e) => {
                // A bad or missing file at start must not keep the pool dark: run on the
                // defaults and pick the file up when it becomes valid.
                tracing::error!(reason = %e, "config refused at start; running on defaults");
                telemetry.record_config_rejected();
                SchedulerConfig::default_config()
            }
        },
        None => SchedulerConfig::default_config(),
    };
    tracing::info!(hash = %config.hash, "config in force");

    let registry = Arc::new(EndpointRegistry::new());
    let mut picker = EndpointPicker::new(
        registry.clone(),
        config,
        telemetry.clone(),
        cli.metrics_staleness,
    );
    {
        // Precise prefix matching is on while the config has a
        // precise-prefix-cache-producer (or `--kv-events-port` pins it on).
        let config = picker.config();
        let prefix = &config.prefix;
        let index = PreciseIndex::new(prefix.block_size_tokens, prefix.lru_capacity_per_server);
        let subscriber = KvSubscriber::new(Arc::new(index), cli.kv_events_port, telemetry.clone());
        subscriber.configure(config.kv_events);
        tokio::spawn(
            subscriber
                .clone()
                .follow_registry(registry.clone(), Duration::from_secs(1)),
        );
        picker = picker.with_kv_events(subscriber);
    }
    let picker = Arc::new(picker);

    let kube_client = api_client(&cli).await?;
    start_discovery(&cli, kube_client.clone(), registry).await?;

    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        // Requests go to pool members only: a redirect from an engine is not followed.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    tokio::spawn(scrape::run(
        picker.clone(),
        client.clone(),
        ScrapeSettings {
            interval: cli.scrape_interval,
            timeout: cli.scrape_timeout,
            models_interval: Duration::from_secs(5),
        },
    ));
    let api_source = Arc::new(config_watch::ApiSource::default());
    if let (Some(name), Some(client)) = (&cli.config_map, &kube_client) {
        tokio::spawn(config_watch::watch_config_map(
            client.clone(),
            pool_namespace(&cli, client),
            name.clone(),
            picker.clone(),
            api_source.clone(),
        ));
    }
    if let Some(path) = cli.config_file.clone() {
        tokio::spawn(config_watch::watch_file(
            path,
            cli.config_poll_interval,
            picker.clone(),
            api_source,
        ));
    }

    let admission = Arc::new(Admission::new(cli.max_concurrent_requests as usize));
    serve::run(
        &cli,
        Arc::new(ProxyState {
            picker: picker.clone(),
            legs: Legs {
                client,
                first_byte_timeout: cli.engine_first_byte_timeout,
                metrics: telemetry.pd.clone(),
            },
            max_body_bytes: cli.max_body_bytes,
            admission: admission.clone(),
            draining: Arc::new(AtomicBool::new(false)),
        }),
        ExtProcService::server(picker, admission, cli.max_body_bytes),
        telemetry,
    )
    .await
}

/// A client for the API, when anything needs one: pod discovery (no
/// `--static-endpoints`) or the config watch (`--config-map`).
async fn api_client(cli: &Cli) -> Result<Option<kube::Client>, String> {
    if cli.static_endpoints.is_some() && cli.config_map.is_none() {
        return Ok(None);
    }
    match kube::Client::try_default().await {
        Ok(client) => Ok(Some(client)),
        Err(e) if cli.static_endpoints.is_some() => {
            tracing::warn!(error = %e, "no Kubernetes API access: --config-map is ignored");
            Ok(None)
        }
        Err(e) => Err(format!(
            "no --static-endpoints and no Kubernetes API access: {e}"
        )),
    }
}

/// The pool's namespace: the flag, else the client's default (in-cluster: the pod's).
fn pool_namespace(cli: &Cli, client: &kube::Client) -> String {
    cli.pool_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string())
}

async fn start_discovery(
    cli: &Cli,
    client: Option<kube::Client>,
    registry: Arc<EndpointRegistry>,
) -> Result<(), String> {
    if let Some(list) = &cli.static_endpoints {
        let endpoints = static_endpoints::parse(list).map_err(|e| e.to_string())?;
        tracing::info!(endpoints = endpoints.len(), "static endpoints");
        registry.replace_all(endpoints);
        return Ok(());
    }
    let client = client.ok_or("give --static-endpoints or run with Kubernetes API access")?;
    let namespace = pool_namespace(cli, &client);
    let (selector, target_port) = match (&cli.selector, &cli.pool_name) {
        (Some(sel), _) => (sel.clone(), cli.target_port),
        (None, Some(pool)) => pod_watch::pool_selector(&client, &namespace, pool)
            .await
            .map_err(|e| format!("InferencePool {namespace}/{pool}: {e}"))?,
        (None, None) => {
            return Err("give --static-endpoints, --selector or --pool-name".into());
        }
    };
    tracing::info!(%namespace, %selector, target_port, "watching pods");
    tokio::spawn(pod_watch::run(
        client,
        pod_watch::PodWatchSettings {
            namespace,
            selector,
            target_port,
        },
        registry,
    ));
    Ok(())
}
