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

/// Run until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let managed =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let lds: Api<LLMDeployment> = Api::all(client.clone());
    Controller::new(lds, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), managed.clone())
        .owns(Api::<Deployment>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), managed.clone())
        .owns(Api::<Role>::all(client.clone()), managed.clone())
        .owns(Api::<RoleBinding>::all(client.clone()), managed)
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
}
