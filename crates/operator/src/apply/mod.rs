//! The apply step: bring every desired child to its desired state, delete the
//! children the spec no longer asks for, and hand back the live objects. A child whose
//! name is taken by an object this LLMDeployment does not control is skipped and
//! reported; the others are still applied.

pub mod object;

pub use object::{Conflict, Ensured, FIELD_MANAGER, Outcome};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Client, Resource};
use llmd_api::conditions::reason;
use llmd_api::inference_pool::InferencePool;
use llmd_api::leader_worker_set::LeaderWorkerSet;

use crate::build::{Children, Owner};
use crate::children::{Child, ChildKind};
use crate::conditions::Failure;
use crate::context::Context;
use crate::error::Result;
use crate::metrics::KindLabel;
use crate::rendering::{self, Kept, Rendered};

/// What the apply step did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every desired child as the API server answered (or as it already was).
    pub live: Vec<Child>,
    /// `Kind/name` of each child written.
    pub written: Vec<String>,
    /// `Kind/name` of each child deleted.
    pub removed: Vec<String>,
    /// Objects in the way of a child, left alone.
    pub conflicts: Vec<Conflict>,
    /// Model-server workloads that keep the rendering they hold.
    pub kept: Vec<Kept>,
}

impl Applied {
    /// `Degraded` with reason `ChildConflict` when an object was in the way, naming
    /// each and who controls it.
    pub fn conflict_failure(&self) -> Option<Failure> {
        if self.conflicts.is_empty() {
            return None;
        }
        let each: Vec<String> = self.conflicts.iter().map(Conflict::to_string).collect();
        Some(Failure {
            reason: reason::CHILD_CONFLICT,
            message: format!(
                "objects in the way of this LLMDeployment's children, left alone: {}. It does not adopt what it does not control: delete or rename them and it creates its own",
                each.join("; ")
            ),
        })
    }
}

trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
{
}

async fn ensure<K: Namespaced>(ctx: &Context, owner: &Owner, desired: &K) -> Result<Ensured<K>> {
    object::ensure(&ctx.client, &owner.reference.uid, desired).await
}

/// Applies a model-server workload; unless `fresh`, it keeps the rendering it holds
/// while the pod-shaping spec is unchanged (see [`rendering`]).
async fn ensure_workload<K: Namespaced + Rendered>(
    ctx: &Context,
    owner: &Owner,
    desired: &K,
    fresh: bool,
) -> Result<(Ensured<K>, Option<Kept>)> {
    object::ensure_adjusted(
        &ctx.client,
        &owner.reference.uid,
        desired,
        |live, desired| {
            if fresh {
                None
            } else {
                rendering::keep(desired, live)
            }
        },
    )
    .await
}

/// Applies one child; returns it as it is live, or what is in its way, and whether
/// a workload kept its rendering.
async fn apply_child(
    ctx: &Context,
    owner: &Owner,
    child: &Child,
    fresh: bool,
) -> Result<(Ensured<Child>, Option<Kept>)> {
    // Only model-server workloads keep a rendering.
    let plain = |ensured: Ensured<Child>| (ensured, None);
    Ok(match child {
        Child::StatefulSet(o) => {
            let (ensured, kept) = ensure_workload(ctx, owner, o, fresh).await?;
            (ensured.map(Child::StatefulSet), kept)
        }
        Child::LeaderWorkerSet(o) => {
            let (ensured, kept) = ensure_workload(ctx, owner, o.as_ref(), fresh).await?;
            (ensured.map(|l| Child::LeaderWorkerSet(Box::new(l))), kept)
        }
        Child::ConfigMap(o) => plain(ensure(ctx, owner, o).await?.map(Child::ConfigMap)),
        Child::Service(o) => plain(ensure(ctx, owner, o).await?.map(Child::Service)),
        Child::ServiceAccount(o) => plain(ensure(ctx, owner, o).await?.map(Child::ServiceAccount)),
        Child::Role(o) => plain(ensure(ctx, owner, o).await?.map(Child::Role)),
        Child::RoleBinding(o) => plain(ensure(ctx, owner, o).await?.map(Child::RoleBinding)),
        Child::Deployment(o) => plain(ensure(ctx, owner, o).await?.map(Child::Deployment)),
        Child::PodDisruptionBudget(o) => {
            plain(ensure(ctx, owner, o).await?.map(Child::PodDisruptionBudget))
        }
        Child::NetworkPolicy(o) => plain(ensure(ctx, owner, o).await?.map(Child::NetworkPolicy)),
        Child::InferencePool(o) => plain(ensure(ctx, owner, o).await?.map(Child::InferencePool)),
    })
}

/// Deletes one undesired child if it exists and `owner` controls it.
async fn remove_child(client: &Client, owner: &Owner, kind: ChildKind, name: &str) -> Result<bool> {
    let (ns, uid) = (owner.namespace.as_str(), owner.reference.uid.as_str());
    match kind {
        ChildKind::ConfigMap => object::remove::<ConfigMap>(client, ns, name, uid).await,
        ChildKind::Service => object::remove::<Service>(client, ns, name, uid).await,
        ChildKind::StatefulSet => object::remove::<StatefulSet>(client, ns, name, uid).await,
        ChildKind::ServiceAccount => object::remove::<ServiceAccount>(client, ns, name, uid).await,
        ChildKind::Role => object::remove::<Role>(client, ns, name, uid).await,
        ChildKind::RoleBinding => object::remove::<RoleBinding>(client, ns, name, uid).await,
        ChildKind::Deployment => object::remove::<Deployment>(client, ns, name, uid).await,
        ChildKind::PodDisruptionBudget => {
            object::remove::<PodDisruptionBudget>(client, ns, name, uid).await
        }
        ChildKind::NetworkPolicy => object::remove::<NetworkPolicy>(client, ns, name, uid).await,
        ChildKind::InferencePool => object::remove::<InferencePool>(client, ns, name, uid).await,
        // Not served (no CRD): nothing to remove, as for any absent object.
        ChildKind::LeaderWorkerSet => {
            object::remove::<LeaderWorkerSet>(client, ns, name, uid).await
        }
    }
}

/// Applies every desired child in order, then (with `prune`) deletes the undesired
/// ones. InferencePools are left alone while their CRD is not served. Model-server
/// workloads keep the rendering they hold unless `fresh` (see [`rendering`]).
pub async fn apply(
    ctx: &Context,
    owner: &Owner,
    children: &Children,
    inference_pool_served: bool,
    fresh: bool,
    prune: bool,
) -> Result<Applied> {
    let mut applied = Applied::default();
    for child in children.in_apply_order() {
        let (ensured, kept) = apply_child(ctx, owner, &child, fresh).await?;
        applied.kept.extend(kept);
        let (live, outcome) = match ensured {
            Ensured::Live(live, outcome) => (live, outcome),
            Ensured::Conflict(conflict) => {
                applied.conflicts.push(conflict);
                continue;
            }
        };
        if outcome == Outcome::Applied {
            let kind = format!("{:?}", child.kind());
            ctx.metrics
                .applies
                .get_or_create(&KindLabel { kind: kind.clone() })
                .inc();
            applied.written.push(format!("{kind}/{}", child.name()));
        }
        applied.live.push(live);
    }
    let undesired = if prune {
        children.undesired(owner)
    } else {
        Vec::new()
    };
    for (kind, name) in undesired {
        if kind == ChildKind::InferencePool && !inference_pool_served {
            continue;
        }
        if remove_child(&ctx.client, owner, kind, &name).await? {
            let kind = format!("{kind:?}");
            ctx.metrics
                .deletes
                .get_or_create(&KindLabel { kind: kind.clone() })
                .inc();
            applied.removed.push(format!("{kind}/{name}"));
        }
    }
    Ok(applied)
}
