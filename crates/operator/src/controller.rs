//! The controller: watches LLMDeployments and the children they own, and runs the
//! reconcile for each change.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use llmd_api::inference_pool::InferencePool;
use llmd_api::leader_worker_set::LeaderWorkerSet;
use llmd_api::{LLMDeployment, labels};
use strum::IntoEnumIterator;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::children::ChildKind;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::leader_election;
use crate::reconcile::reconcile;

/// Reconcile only while this replica may write: once its renew deadline has passed,
/// no new reconcile starts (one under way is stopped at its next write).
async fn reconcile_while_leading(ld: Arc<LLMDeployment>, ctx: Arc<Context>) -> Result<Action> {
    leader_election::ensure_leading()?;
    reconcile(ld, ctx).await
}

/// Aborts the task when dropped, so that a controller dropped mid-run (leadership
/// lost) takes its tuner with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn error_policy(ld: Arc<LLMDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.record_failure(&ld);
    let delay = error.backoff(failures);
    warn!(
        name = %kube::ResourceExt::name_any(ld.as_ref()),
        category = error.category().as_str(),
        retry_in = ?delay,
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

/// Changed InferencePools, from a watch with its own backoff whose errors are logged
/// here rather than passed to the controller (which would hold every watch back).
fn inference_pool_triggers(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<InferencePool, watcher::Error>> + Send + 'static {
    // The backoff goes after `touched_objects`: the watcher's own `Init` event at the
    // start of each relist would otherwise reset it before every attempt.
    watcher::watcher(scoped_api::<InferencePool>(client, namespace), config)
        .touched_objects()
        .default_backoff()
        .filter_map(|changed| async move {
            match changed {
                Ok(pool) => Some(Ok(pool)),
                Err(e) => {
                    warn!(error = %e, "InferencePool watch failed; retrying with backoff");
                    None
                }
            }
        })
}

/// An Api over every namespace, or over one when the operator is namespace-scoped.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run until `shutdown` resolves; in-flight reconciles finish first. With
/// `namespace`, only that namespace is watched. Dropping the future stops everything
/// at once, the tuner included.
///
/// Every watch (LLMDeployments and each kind of child) feeds one trigger stream, and
/// kube-runtime backs that stream off after any error (0.8 s doubling to 30 s). The
/// InferencePool watch, the one that fails for long when its CRD is deleted under a
/// running operator, has a backoff of its own instead and keeps its errors to itself,
/// so it is retried at that pace, not in a loop, and the other watches' events are
/// not held up meanwhile.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let managed =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let ns = namespace.as_deref();
    let lds: Api<LLMDeployment> = scoped_api(&client, ns);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let controller = Controller::new(lds, watcher::Config::default());
    // The tuner, the autoscaler and the adapter loader read the controller's cache and stop with it.
    let tuner = AbortOnDrop(tokio::spawn(crate::tuner::run(
        ctx.clone(),
        controller.store(),
        stop_rx.clone(),
    )));
    let autoscaler = AbortOnDrop(tokio::spawn(crate::autoscaler::run(
        ctx.clone(),
        controller.store(),
        stop_rx.clone(),
    )));
    let adapter_loader = AbortOnDrop(tokio::spawn(crate::adapter_loader::run(
        ctx.clone(),
        controller.store(),
        stop_rx,
    )));
    // Every kind of child is watched, so drift is repaired at once. InferencePools
    // and LeaderWorkerSets only when their CRD is served at start-up (one installed
    // later is still reconciled, on the periodic resync).
    let pools_served = match crate::discovery::inference_pool_served(&client).await {
        Ok(served) => served,
        Err(e) => {
            warn!(error = %e, "cannot tell whether InferencePools are served; not watching them");
            false
        }
    };
    let lws_served = match crate::discovery::leader_worker_set_served(&client).await {
        Ok(served) => served,
        Err(e) => {
            warn!(error = %e, "cannot tell whether LeaderWorkerSets are served; not watching them");
            false
        }
    };
    let mut controller = controller;
    for kind in ChildKind::iter() {
        let (group, resource) = kind.resource();
        let config = managed.clone();
        controller = match kind {
            ChildKind::ConfigMap => controller.owns(scoped_api::<ConfigMap>(&client, ns), config),
            ChildKind::Service => controller.owns(scoped_api::<Service>(&client, ns), config),
            ChildKind::StatefulSet => {
                controller.owns(scoped_api::<StatefulSet>(&client, ns), config)
            }
            ChildKind::ServiceAccount => {
                controller.owns(scoped_api::<ServiceAccount>(&client, ns), config)
            }
            ChildKind::Role => controller.owns(scoped_api::<Role>(&client, ns), config),
            ChildKind::RoleBinding => {
                controller.owns(scoped_api::<RoleBinding>(&client, ns), config)
            }
            ChildKind::Deployment => controller.owns(scoped_api::<Deployment>(&client, ns), config),
            ChildKind::PodDisruptionBudget => {
                controller.owns(scoped_api::<PodDisruptionBudget>(&client, ns), config)
            }
            ChildKind::NetworkPolicy => {
                controller.owns(scoped_api::<NetworkPolicy>(&client, ns), config)
            }
            ChildKind::InferencePool if pools_served => {
                controller.owns_stream(inference_pool_triggers(&client, ns, config))
            }
            ChildKind::InferencePool => continue,
            ChildKind::LeaderWorkerSet if lws_served => {
                controller.owns(scoped_api::<LeaderWorkerSet>(&client, ns), config)
            }
            ChildKind::LeaderWorkerSet => continue,
        };
        debug!(group, resource, "watching children");
    }
    controller
        .with_config(
            Config::default()
                .debounce(std::time::Duration::from_millis(200))
                .concurrency(concurrency),
        )
        .trigger_backoff(watcher::DefaultBackoff::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile_while_leading, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(name = %object.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    drop(tuner);
    drop(autoscaler);
    drop(adapter_loader);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;

    use super::*;
    use crate::metrics::Metrics;

    /// An API server where InferencePools are advertised but every list of them answers
    /// 404, as after their CRD was deleted under a running operator; every other list
    /// is empty and every watch stays open. Lists of pools are counted in `pool_lists`.
    fn api_without_pools(pool_lists: Arc<AtomicUsize>) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or("").to_string();
                let (status, body) = if path == "/apis/inference.networking.k8s.io/v1" {
                    let pools = json!({"name": "inferencepools", "singularName": "inferencepool",
                        "namespaced": true, "kind": "InferencePool", "verbs": ["list", "watch"]});
                    let list = json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": "inference.networking.k8s.io/v1", "resources": [pools]});
                    (StatusCode::OK, list)
                } else if path.ends_with("/inferencepools") {
                    // Past any plausible backoff: stop answering so the clock can move
                    // and the assertion below reports the loop.
                    if pool_lists.fetch_add(1, Ordering::SeqCst) > 1_000 {
                        open.push(send);
                        continue;
                    }
                    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404});
                    (StatusCode::NOT_FOUND, gone)
                } else if query.contains("watch=true") {
                    open.push(send);
                    continue;
                } else {
                    let empty = json!({"kind": "List", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"}, "items": []});
                    (StatusCode::OK, empty)
                };
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response");
                send.send_response(response);
            }
        });
        Client::new(service, "ops")
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_watch_that_keeps_failing_is_retried_with_backoff_not_in_a_loop() {
        let pool_lists = Arc::new(AtomicUsize::new(0));
        let client = api_without_pools(pool_lists.clone());
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            None,
            crate::build::EndpointPickerDefaults::default(),
        ));
        let two_minutes = tokio::time::sleep(Duration::from_secs(120));
        run(client, ctx, Some("ops".into()), 16, two_minutes).await;
        let lists = pool_lists.load(Ordering::SeqCst);
        // 0.8 s doubling to 30 s, with jitter: about eight tries in two minutes.
        assert!(
            (2..=15).contains(&lists),
            "InferencePools listed {lists} times in two minutes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_inference_pool_watch_keeps_its_errors_to_itself() {
        let pool_lists = Arc::new(AtomicUsize::new(0));
        let client = api_without_pools(pool_lists.clone());
        let triggers = inference_pool_triggers(&client, Some("ops"), watcher::Config::default());
        let seen: Vec<_> = triggers
            .take_until(tokio::time::sleep(Duration::from_secs(120)))
            .collect()
            .await;
        assert!(
            seen.is_empty(),
            "no trigger and no error reaches the controller"
        );
        let lists = pool_lists.load(Ordering::SeqCst);
        assert!(
            (2..=15).contains(&lists),
            "listed {lists} times in two minutes"
        );
    }
}
