//! The controller: watches LLMDeployments and the children they own, and runs the
//! reconcile for each change.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Api, Client};
use llmd_api::{LLMDeployment, labels};
use tracing::{debug, warn};

use crate::context::Context;
use crate::error::Error;
use crate::reconcile::reconcile;

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
/// `namespace`, only that namespace is watched.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    namespace: Option<String>,
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
    // The embedded scheduler reads the controller's cache and stops with it.
    let tuner = tokio::spawn(crate::tuner::run(ctx.clone(), controller.store(), stop_rx));
    // InferencePools are watched too when their CRD is served at start-up (one
    // installed later is still reconciled, on the periodic resync).
    let controller = match crate::discovery::inference_pool_served(&client).await {
        Ok(true) => controller.owns(
            scoped_api::<llmd_api::inference_pool::InferencePool>(&client, ns),
            managed.clone(),
        ),
        Ok(false) => controller,
        Err(e) => {
            warn!(error = %e, "cannot tell whether InferencePools are served; not watching them");
            controller
        }
    };
    controller
        .owns(scoped_api::<StatefulSet>(&client, ns), managed.clone())
        .owns(scoped_api::<Deployment>(&client, ns), managed.clone())
        .owns(scoped_api::<Service>(&client, ns), managed.clone())
        .owns(scoped_api::<ConfigMap>(&client, ns), managed.clone())
        .owns(scoped_api::<ServiceAccount>(&client, ns), managed.clone())
        .owns(scoped_api::<Role>(&client, ns), managed.clone())
        .owns(scoped_api::<RoleBinding>(&client, ns), managed)
        .with_config(Config::default().debounce(std::time::Duration::from_millis(200)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(name = %object.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    tuner.abort();
}
