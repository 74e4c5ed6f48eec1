//! The runner as a whole: clean up after a previous instance, make the bridge,
//! register the nodes, watch the pods bound to them, give each pod a
//! supervisor, and on SIGTERM/SIGINT stop every pod and remove what was made.
//!
//! A restarted runner does not adopt the processes of its predecessor (it is not
//! their parent, so it could not see them exit at once): it stops them, removes
//! their namespaces and veths, and starts the pods again, with each container's
//! restartCount incremented as for any other restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::config::Config;
use crate::context::Shared;
use crate::events::Events;
use crate::network::{IpAllocator, Network};
use crate::node::Nodes;
use crate::probe::Prober;
use crate::process;
use crate::supervisor::{self, PodHandle, PodMsg};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("state dir {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("pod network: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("probe client: {0}")]
    Prober(#[from] reqwest::Error),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// Stop processes a previous runner left (found by their pid files).
async fn stop_leftover_processes(config: &Config) {
    let Ok(pods) = std::fs::read_dir(config.state_dir.join("pods")) else {
        return;
    };
    for pod in pods.flatten() {
        let Ok(files) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "pid") {
                tracing::info!(pid_file = %path.display(), "stopping a process left by a previous runner");
                process::stop_recorded(&path, config.shutdown_grace()).await;
            }
        }
    }
}

/// A store kept current by a watch, bumping `changes` on every event.
fn watched<K>(api: Api<K>, changes: watch::Sender<u64>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changes.send_modify(|n| *n = n.wrapping_add(1)),
                Err(e) => tracing::warn!(error = %e, "watch error"),
            }
        }
    });
    store
}

pub async fn run(config: Config, client: kube::Client) -> Result<(), RunnerError> {
    let pods_dir = config.state_dir.join("pods");
    std::fs::create_dir_all(&pods_dir).map_err(|source| RunnerError::StateDir {
        path: pods_dir.display().to_string(),
        source,
    })?;
    stop_leftover_processes(&config).await;
    let network = Network::new(config.network.clone());
    let (namespaces, links) = network.remove_leftovers().await?;
    if namespaces + links > 0 {
        tracing::info!(
            namespaces,
            links,
            "removed the network of a previous runner"
        );
    }
    let made_bridge = network.ensure_bridge().await?;
    tracing::info!(bridge = %config.network.bridge, cidr = %config.network.cidr, made_bridge, "pod network ready");

    let nodes = Arc::new(Nodes::new(
        client.clone(),
        config.nodes.clone(),
        config.network.gateway(),
    ));
    nodes.register().await?;
    tracing::info!(nodes = ?nodes.names(), "nodes registered");
    let heartbeat = {
        let nodes = nodes.clone();
        tokio::spawn(async move { nodes.heartbeat().await })
    };

    let (changes_tx, config_changes) = watch::channel(0u64);
    let config_maps = watched(Api::<ConfigMap>::all(client.clone()), changes_tx.clone());
    let secrets = watched(Api::<Secret>::all(client.clone()), changes_tx);
    let _ = tokio::time::timeout(Duration::from_secs(30), config_maps.wait_until_ready()).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), secrets.wait_until_ready()).await;

    let ips = IpAllocator::persistent(
        config.network.cidr,
        &config.state_dir.join("ip-allocations.json"),
    );
    let shared = Arc::new(Shared {
        events: Events::new(client.clone()),
        prober: Prober::new()?,
        ips: std::sync::Mutex::new(ips),
        network,
        config_maps,
        secrets,
        config_changes,
        client: client.clone(),
        config,
    });

    // One watch per node (a field selector takes one value).
    let mut stores = Vec::new();
    let mut streams = Vec::new();
    for node in nodes.names() {
        let (store, writer) = reflector::store::<Pod>();
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let s = watcher(Api::<Pod>::all(client.clone()), cfg)
            .default_backoff()
            .reflect(writer)
            .map(|e| e.map(|_| ()));
        stores.push(store);
        streams.push(s.boxed());
    }
    let mut events = stream::select_all(streams);
    let mut handles: HashMap<String, PodHandle> = HashMap::new();
    let mut draining: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut allocations_pruned = false;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunnerError::Signal)?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(RunnerError::Signal)?;
    tracing::info!("running");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            event = events.next() => {
                match event {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pod watch error");
                        continue;
                    }
                    None => break,
                }
                reconcile(&shared, &stores, &mut handles, &mut draining);
                if !allocations_pruned && stores.iter().all(|s| s.wait_until_ready().now_or_never().is_some()) {
                    let live: HashSet<String> = handles.keys().cloned().collect();
                    if let Ok(mut ips) = shared.ips.lock() {
                        let _ = ips.retain(&|uid| live.contains(uid));
                    }
                    allocations_pruned = true;
                }
            }
        }
    }

    tracing::info!(pods = handles.len(), "stopping");
    for handle in handles.values() {
        let _ = handle.tx.send(PodMsg::Shutdown);
    }
    draining.extend(handles.into_values().map(|h| h.task));
    let bound = shared.config.shutdown_grace() + Duration::from_secs(5);
    let _ = tokio::time::timeout(bound, futures::future::join_all(draining)).await;
    heartbeat.abort();
    if let Err(e) = shared.network.remove_leftovers().await {
        tracing::warn!(error = %e, "cannot remove pod networks");
    }
    if made_bridge && let Err(e) = shared.network.remove_bridge().await {
        tracing::warn!(error = %e, "cannot remove the bridge");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), nodes.post_status(false)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Bring the supervisors in line with the pods bound to our nodes.
fn reconcile(
    shared: &Arc<Shared>,
    stores: &[Store<Pod>],
    handles: &mut HashMap<String, PodHandle>,
    draining: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let mut seen = HashSet::new();
    for pod in stores.iter().flat_map(Store::state) {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        seen.insert(uid.clone());
        match handles.get_mut(&uid) {
            None => {
                tracing::info!(
                    pod = %format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name.as_deref().unwrap_or_default()),
                    %uid, "new pod"
                );
                handles.insert(uid, supervisor::spawn(shared.clone(), pod));
            }
            Some(handle) => {
                if handle.resource_version != pod.metadata.resource_version {
                    handle.resource_version = pod.metadata.resource_version.clone();
                    let _ = handle.tx.send(PodMsg::Update(pod));
                }
            }
        }
    }
    let gone: Vec<String> = handles
        .keys()
        .filter(|uid| !seen.contains(*uid))
        .cloned()
        .collect();
    for uid in gone {
        if let Some(handle) = handles.remove(&uid) {
            let _ = handle.tx.send(PodMsg::Gone);
            draining.push(handle.task);
        }
    }
    draining.retain(|t| !t.is_finished());
}
