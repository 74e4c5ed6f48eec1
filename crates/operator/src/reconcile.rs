//! The reconcile of one LLMDeployment, as a pipeline:
//! `validate -> build -> apply -> observe -> status`.
//! Only `apply`, `observe` and `status::write` touch the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use llmd_api::conditions::reason;
use llmd_api::inference_pool::InferencePool;
use llmd_api::{KvConnector, LLMDeployment, ScorerWeights};
use tracing::{info, warn};

use crate::apply::{self, Outcome};
use crate::build::{
    self, BuildOptions, Children, Owner, endpoint_picker, kv_transfer, model_server,
};
use crate::conditions::Failure;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::observe::{self, KvFabric, Observed, Workload};
use crate::status::{self, Facts};
use crate::{discovery, validate};

/// How often a settled deployment is looked at again without any event.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a deployment that is still rolling out is looked at again.
const PROGRESS_CHECK: Duration = Duration::from_secs(10);

/// The reconcile entry point the controller calls.
pub async fn reconcile(ld: Arc<LLMDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&ld, &ctx).await;
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.reset_failures(&ld);
    }
    result
}

/// Now, at the second precision the API keeps.
fn now() -> Time {
    let seconds = chrono::Utc::now().timestamp();
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Weights the embedded scheduler chose, kept in status so a reconcile does not undo them.
fn tuned_weights(ld: &LLMDeployment) -> Option<ScorerWeights> {
    if !ld.spec.router.auto_tune.enabled {
        return None;
    }
    let weights = &ld.status.as_ref()?.routing.as_ref()?.weights;
    ScorerWeights::from_plugins(weights)
}

async fn reconcile_inner(ld: &LLMDeployment, ctx: &Context) -> Result<Action> {
    if ld.meta().deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let owner = Owner::of(ld).ok_or(Error::MissingMetadata("namespace or uid"))?;
    let lds: Api<LLMDeployment> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let pool_served = discovery::inference_pool_served(&ctx.client).await?;

    // validate
    let problems = validate::problems(&ld.spec);
    let mut failure = (!problems.is_empty()).then(|| Failure {
        reason: reason::INVALID_SPEC,
        message: problems.join("; "),
    });
    if failure.is_some() {
        ctx.metrics.count_error(crate::error::Category::InvalidSpec);
    }

    // build
    let options = BuildOptions {
        epp_defaults: ctx.epp_defaults.clone(),
        inference_pool_served: pool_served,
        tuned_weights: tuned_weights(ld),
    };
    let children = build::build(&owner, &ld.spec, &options);

    // apply
    let mut refused = None;
    let applied = if failure.is_none() {
        match apply_children(ctx, ld, &owner, &children, pool_served).await {
            Ok(applied) => Some(applied),
            Err(e @ Error::Refused { .. }) => {
                failure = Some(Failure {
                    reason: reason::APPLY_FAILED,
                    message: e.to_string(),
                });
                refused = Some(e);
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };

    // observe
    let mut observed = match applied {
        Some(applied) => applied,
        None => read_workloads(ctx, &owner, &ld.spec).await?,
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    for (workload, component) in observed_workloads(&mut observed) {
        let selector = selector_string(&owner, component);
        observe::unschedulable(&pods, workload, &selector).await?;
    }

    // status
    let facts = Facts {
        router_endpoint: Some(build::endpoint_picker_service::endpoint(&owner)),
        inference_pool: Some(match (ld.spec.inference_pool.enabled, pool_served) {
            (false, _) => "Disabled",
            (true, false) => "CRDNotInstalled",
            (true, true) => "Created",
        }),
        epp_config: Some(children.endpoint_picker.picker_config.clone()),
        routing_reason: Some("static weights from spec.router.scorers".to_string()),
    };
    let new_status = status::desired(ld, &observed, failure.as_ref(), &facts, &now());
    publish_transitions(ctx, ld, &new_status).await;
    if status::write(&lds, ld, new_status).await? {
        ctx.metrics.status_writes.inc();
    }

    if let Some(e) = refused {
        return Err(e);
    }
    if failure.is_some() {
        info!(name = %owner.name, namespace = %owner.namespace, "spec cannot be served; waiting for a change");
        return Ok(Action::await_change());
    }
    let settled = observed
        .prefill
        .iter()
        .chain([&observed.decode, &observed.endpoint_picker])
        .all(Workload::settled);
    Ok(Action::requeue(if settled {
        RESYNC
    } else {
        PROGRESS_CHECK
    }))
}

fn observed_workloads(observed: &mut Observed) -> Vec<(&mut Workload, build::Component)> {
    let mut out = vec![
        (&mut observed.decode, build::Component::Decode),
        (
            &mut observed.endpoint_picker,
            build::Component::EndpointPicker,
        ),
    ];
    if let Some(prefill) = observed.prefill.as_mut() {
        out.push((prefill, build::Component::Prefill));
    }
    out
}

fn selector_string(owner: &Owner, component: build::Component) -> String {
    owner
        .selector_labels(component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn kv_fabric(spec: &llmd_api::LLMDeploymentSpec, config_present: bool) -> KvFabric {
    match spec.effective_connector() {
        KvConnector::None => KvFabric::NotRequired,
        KvConnector::Nixl => KvFabric::Nixl {
            transports: spec.kv_transfer.ucx.transports.clone(),
            side_channel_port: spec.kv_transfer.side_channel_port,
            config_present,
        },
    }
}

/// Applies children one by one and remembers which it wrote.
struct Applier<'a> {
    ctx: &'a Context,
    written: Vec<String>,
}

impl Applier<'_> {
    async fn apply<K>(&mut self, desired: &K) -> Result<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let (live, outcome) = apply::ensure(&self.ctx.client, desired).await?;
        if outcome == Outcome::Applied {
            let kind = K::kind(&()).to_string();
            self.written.push(format!("{kind}/{}", desired.name_any()));
            self.ctx
                .metrics
                .applies
                .get_or_create(&crate::metrics::KindLabel { kind })
                .inc();
        }
        Ok(live)
    }
}

/// Apply every desired child, delete the undesired ones, and return the workloads as
/// the API server answered.
async fn apply_children(
    ctx: &Context,
    ld: &LLMDeployment,
    owner: &Owner,
    children: &Children,
    pool_served: bool,
) -> Result<Observed> {
    let Children {
        prefill,
        decode,
        kv_transfer,
        endpoint_picker: epp,
        inference_pool,
    } = children;
    let mut applier = Applier {
        ctx,
        written: Vec::new(),
    };
    // The fabric first, so pods never start without the ConfigMap they load.
    if let Some(cm) = kv_transfer {
        applier.apply(cm).await?;
    }
    let mut prefill_workload = None;
    if let Some(server) = prefill {
        applier.apply(&server.service).await?;
        let sts = applier.apply(&server.stateful_set).await?;
        prefill_workload = Some(Workload::from_stateful_set(&sts));
    }
    applier.apply(&decode.service).await?;
    let decode_sts = applier.apply(&decode.stateful_set).await?;
    applier.apply(&epp.service_account).await?;
    applier.apply(&epp.role).await?;
    applier.apply(&epp.role_binding).await?;
    applier.apply(&epp.config).await?;
    applier.apply(&epp.service).await?;
    let epp_deployment = applier.apply(&epp.deployment).await?;
    if let Some(pool) = inference_pool {
        applier.apply(pool).await?;
    }
    let written = applier.written;

    let removed = remove_undesired(ctx, owner, children, pool_served).await?;
    if !written.is_empty() || !removed.is_empty() {
        let mut parts = Vec::new();
        if !written.is_empty() {
            parts.push(format!("applied {}", written.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("deleted {}", removed.join(", ")));
        }
        let message = parts.join("; ");
        info!(name = %owner.name, namespace = %owner.namespace, "{message}");
        ctx.publish(
            ld,
            Event {
                type_: EventType::Normal,
                reason: "ChildrenUpdated".into(),
                note: Some(truncate(&message)),
                action: "Reconcile".into(),
                secondary: None,
            },
        )
        .await;
    }

    Ok(Observed {
        prefill: prefill_workload,
        decode: Workload::from_stateful_set(&decode_sts),
        endpoint_picker: Workload::from_deployment(&epp_deployment),
        kv_fabric: kv_fabric(&ld.spec, kv_transfer.is_some()),
    })
}

/// Delete children the spec no longer asks for (e.g. prefill removed).
async fn remove_undesired(
    ctx: &Context,
    owner: &Owner,
    children: &Children,
    pool_served: bool,
) -> Result<Vec<String>> {
    let client = &ctx.client;
    let uid = owner.reference.uid.as_str();
    let ns = owner.namespace.as_str();
    let mut removed = Vec::new();
    let mut record = |kind: &str, name: String, deleted: bool| {
        if deleted {
            ctx.metrics
                .deletes
                .get_or_create(&crate::metrics::KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
            removed.push(format!("{kind}/{name}"));
        }
    };
    if children.prefill.is_none() {
        let name = model_server::name(owner, model_server::Role::Prefill);
        record(
            "StatefulSet",
            name.clone(),
            apply::remove::<StatefulSet>(client, ns, &name, uid).await?,
        );
        record(
            "Service",
            name.clone(),
            apply::remove::<Service>(client, ns, &name, uid).await?,
        );
    }
    if children.kv_transfer.is_none() {
        let name = kv_transfer::name(owner);
        record(
            "ConfigMap",
            name.clone(),
            apply::remove::<ConfigMap>(client, ns, &name, uid).await?,
        );
    }
    if children.inference_pool.is_none() && pool_served {
        let name = owner.name.clone();
        record(
            "InferencePool",
            name.clone(),
            apply::remove::<InferencePool>(client, ns, &name, uid).await?,
        );
    }
    Ok(removed)
}

/// Read the workloads without applying (the spec is invalid: show what runs).
async fn read_workloads(
    ctx: &Context,
    owner: &Owner,
    spec: &llmd_api::LLMDeploymentSpec,
) -> Result<Observed> {
    let ns = &owner.namespace;
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let read_sts = |name: String| {
        let api = sts_api.clone();
        async move {
            let sts = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube(format!("get StatefulSet {name}"), e))?;
            Ok::<_, Error>(sts.map_or_else(
                || Workload {
                    name,
                    ..Workload::default()
                },
                |s| Workload::from_stateful_set(&s),
            ))
        }
    };
    let prefill = match spec.active_prefill() {
        Some(_) => Some(read_sts(model_server::name(owner, model_server::Role::Prefill)).await?),
        None => None,
    };
    let decode = read_sts(model_server::name(owner, model_server::Role::Decode)).await?;
    let epp_name = endpoint_picker::name(owner);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let endpoint_picker = deployments
        .get_opt(&epp_name)
        .await
        .map_err(|e| Error::kube(format!("get Deployment {epp_name}"), e))?
        .map_or_else(
            || Workload {
                name: epp_name,
                ..Workload::default()
            },
            |d| Workload::from_deployment(&d),
        );
    let config_present = {
        let name = kv_transfer::name(owner);
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        cms.get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("get ConfigMap {name}"), e))?
            .is_some()
    };
    Ok(Observed {
        prefill,
        decode,
        endpoint_picker,
        kv_fabric: kv_fabric(spec, config_present),
    })
}

/// Events for the conditions people act on: Ready and Degraded flipping.
async fn publish_transitions(
    ctx: &Context,
    ld: &LLMDeployment,
    new: &llmd_api::LLMDeploymentStatus,
) {
    let old = ld
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for condition in &new.conditions {
        let watched = condition.type_ == llmd_api::conditions::READY
            || condition.type_ == llmd_api::conditions::DEGRADED;
        let before = old.iter().find(|c| c.type_ == condition.type_);
        let flipped =
            before.is_none_or(|b| b.status != condition.status || b.reason != condition.reason);
        if !watched || !flipped {
            continue;
        }
        let healthy =
            (condition.type_ == llmd_api::conditions::READY) == (condition.status == "True");
        if healthy && before.is_none() && condition.type_ == llmd_api::conditions::DEGRADED {
            continue;
        }
        let type_ = if healthy {
            EventType::Normal
        } else {
            EventType::Warning
        };
        if !healthy {
            warn!(name = %ld.name_any(), condition = %condition.type_, reason = %condition.reason, "{}", condition.message);
        }
        ctx.publish(
            ld,
            Event {
                type_,
                reason: condition.reason.clone(),
                note: Some(truncate(&format!(
                    "{}={}: {}",
                    condition.type_, condition.status, condition.message
                ))),
                action: "Reconcile".into(),
                secondary: None,
            },
        )
        .await;
    }
}

/// Event notes are limited to 1 kB.
fn truncate(message: &str) -> String {
    if message.len() <= 1000 {
        return message.to_string();
    }
    let mut end = 1000;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}
