//! The sidecar process: one serving port per data-parallel rank, the optional
//! metrics port, the prefill-pod watch behind SSRF protection, and draining on
//! SIGTERM (no new connections; requests in flight finish within the timeout).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::allowlist::{self, Allowlist};
use super::cli::SidecarCli;
use super::{SidecarMetrics, SidecarState, router};
use crate::pd::Legs;
use crate::serve::{bind, metrics_app, shutdown_signal};

/// Serves until a signal, then drains; `Err` when it cannot start or a server fails.
pub async fn run(cli: SidecarCli) -> Result<(), String> {
    cli.check()?;
    let metrics = Arc::new(SidecarMetrics::default());
    let allowlist = Arc::new(if cli.enable_ssrf_protection {
        Allowlist::enforced()
    } else {
        tracing::warn!("SSRF protection is off: any prefiller a request names is called");
        Allowlist::open()
    });
    if let Some(selector) = cli
        .prefill_selector
        .clone()
        .filter(|_| cli.enable_ssrf_protection)
    {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("SSRF protection needs API access to watch prefill pods: {e}"))?;
        let namespace = cli
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        tokio::spawn(allowlist::watch(
            client,
            namespace,
            selector,
            allowlist.clone(),
        ));
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let legs = Legs {
        client,
        first_byte_timeout: cli.engine_first_byte_timeout,
        metrics: metrics.pd.clone(),
    };

    let (drain_tx, drain) = watch::channel(false);
    let mut servers = JoinSet::new();
    for rank in 0..cli.data_parallel_size {
        let addr = SocketAddr::from(([0, 0, 0, 0], cli.port + rank));
        let listener = bind(addr, "the serving port").await?;
        let state = Arc::new(SidecarState {
            legs: legs.clone(),
            engine: format!("127.0.0.1:{}", cli.model_server_port + rank),
            allowlist: allowlist.clone(),
            max_body_bytes: cli.max_body_bytes,
            metrics: metrics.clone(),
        });
        let mut drain = drain.clone();
        servers.spawn(
            axum::serve(listener, router(state))
                .with_graceful_shutdown(async move {
                    let _ = drain.wait_for(|d| *d).await;
                })
                .into_future(),
        );
    }
    let mut metrics_server = None;
    if cli.metrics_port != 0 {
        let listener = bind(
            SocketAddr::from(([0, 0, 0, 0], cli.metrics_port)),
            "metrics",
        )
        .await?;
        let m = metrics.clone();
        metrics_server = Some(tokio::spawn(
            axum::serve(listener, metrics_app(move || m.encode())).into_future(),
        ));
    }
    tracing::info!(
        port = cli.port,
        engine_port = cli.model_server_port,
        ranks = cli.data_parallel_size,
        ssrf_protection = cli.enable_ssrf_protection,
        "llmd-sidecar serving"
    );
    tokio::select! {
        Some(r) = servers.join_next() => {
            return Err(format!("a serving port stopped: {r:?}"));
        }
        () = shutdown_signal() => {}
    }
    tracing::info!(timeout = ?cli.drain_timeout, "draining: finishing requests in flight");
    let _ = drain_tx.send(true);
    if tokio::time::timeout(cli.drain_timeout, async {
        while servers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("drain timeout: cutting the requests still in flight");
        servers.abort_all();
    }
    if let Some(m) = metrics_server {
        m.abort();
    }
    Ok(())
}
