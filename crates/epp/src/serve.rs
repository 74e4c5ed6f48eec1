//! The four servers (OpenAI proxy, ext-proc gRPC, gRPC health, metrics) and how the
//! process ends: on SIGTERM or SIGINT the EPP reports not serving, stops accepting,
//! lets in-flight requests and streams finish within `--drain-timeout`, then exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use llmd_api::endpoint_picker::HEALTH_SERVICE;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::cli::Cli;
use crate::frontend::ext_proc::ExtProcService;
use crate::frontend::proxy::{self, ProxyState};
use crate::telemetry::Telemetry;

pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

/// Resolves once `flag` turns true.
async fn raised(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

/// `/metrics` in the OpenMetrics text format, `encode` rendering the page.
pub fn metrics_app(encode: impl Fn() -> String + Clone + Send + Sync + 'static) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let encode = encode.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(),
                )
            }
        }),
    )
}

/// Serves until a signal, then drains; `Err` when a server fails.
pub async fn run(
    cli: &Cli,
    proxy_state: Arc<ProxyState>,
    ext_proc: ExternalProcessorServer<ExtProcService>,
    telemetry: Arc<Telemetry>,
) -> Result<(), String> {
    let proxy_listener = bind(cli.proxy_addr, "proxy").await?;
    let metrics_listener = bind(cli.metrics_addr, "metrics").await?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service in [HEALTH_SERVICE, ""] {
        health_reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    // `drain` stops the serving front ends; `stop` everything else, at the end.
    let (drain_tx, drain) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let draining = proxy_state.draining.clone();
    let proxy_app = proxy::router(proxy_state).fallback(proxy::not_found);
    let mut proxy = tokio::spawn(
        axum::serve(proxy_listener, proxy_app)
            .with_graceful_shutdown(raised(drain.clone()))
            .into_future(),
    );
    let mut grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ext_proc)
            .serve_with_shutdown(cli.grpc_addr, raised(drain.clone())),
    );
    let mut health = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_shutdown(cli.grpc_health_addr, raised(stop.clone())),
    );
    let mut metrics = tokio::spawn(
        axum::serve(metrics_listener, metrics_app(move || telemetry.encode()))
            .with_graceful_shutdown(raised(stop))
            .into_future(),
    );
    tracing::info!(
        proxy = %cli.proxy_addr, grpc = %cli.grpc_addr, health = %cli.grpc_health_addr,
        metrics = %cli.metrics_addr, "llmd-epp serving"
    );
    let failed = |what: &str, r: Result<Result<(), String>, tokio::task::JoinError>| {
        Err(match r {
            Ok(Ok(())) => format!("{what} stopped"),
            Ok(Err(e)) => format!("{what}: {e}"),
            Err(e) => format!("{what}: {e}"),
        })
    };
    tokio::select! {
        r = &mut proxy => return failed("proxy", r.map(|r| r.map_err(|e| e.to_string()))),
        r = &mut grpc => return failed("ext-proc", r.map(|r| r.map_err(|e| e.to_string()))),
        r = &mut health => return failed("health", r.map(|r| r.map_err(|e| e.to_string()))),
        r = &mut metrics => return failed("metrics", r.map(|r| r.map_err(|e| e.to_string()))),
        () = shutdown_signal() => {}
    }

    tracing::info!(timeout = ?cli.drain_timeout, "draining: not serving, finishing requests in flight");
    for service in [HEALTH_SERVICE, ""] {
        health_reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    draining.store(true, Ordering::Relaxed);
    let _ = drain_tx.send(true);
    let finished = tokio::time::timeout(cli.drain_timeout, async {
        let _ = (&mut proxy).await;
        let _ = (&mut grpc).await;
    })
    .await;
    match finished {
        Ok(()) => tracing::info!("drained"),
        Err(_) => {
            tracing::warn!("drain timeout: cutting the requests still in flight");
            proxy.abort();
            grpc.abort();
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::join!(health, metrics);
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
