//! The apply step: bring every desired child to its desired state, delete the
//! children the spec no longer asks for, and hand back the live objects.

pub mod object;

pub use object::{FIELD_MANAGER, Outcome};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Client, Resource};
use llmd_api::inference_pool::InferencePool;

use crate::build::{Children, Owner};
use crate::children::{Child, ChildKind};
use crate::context::Context;
use crate::error::Result;
use crate::metrics::KindLabel;

/// What the apply step did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every desired child as the API server answered (or as it already was).
    pub live: Vec<Child>,
    /// `Kind/name` of each child written.
    pub written: Vec<String>,
    /// `Kind/name` of each child deleted.
    pub removed: Vec<String>,
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

async fn ensure<K: Namespaced>(ctx: &Context, desired: &K) -> Result<(K, Outcome)> {
    object::ensure(&ctx.client, desired).await
}

/// Applies one child; returns it as it is live.
async fn apply_child(ctx: &Context, child: &Child) -> Result<(Child, Outcome)> {
    fn wrap<K>(f: fn(K) -> Child, (live, outcome): (K, Outcome)) -> (Child, Outcome) {
        (f(live), outcome)
    }
    Ok(match child {
        Child::ConfigMap(o) => wrap(Child::ConfigMap, ensure(ctx, o).await?),
        Child::Service(o) => wrap(Child::Service, ensure(ctx, o).await?),
        Child::StatefulSet(o) => wrap(Child::StatefulSet, ensure(ctx, o).await?),
        Child::ServiceAccount(o) => wrap(Child::ServiceAccount, ensure(ctx, o).await?),
        Child::Role(o) => wrap(Child::Role, ensure(ctx, o).await?),
        Child::RoleBinding(o) => wrap(Child::RoleBinding, ensure(ctx, o).await?),
        Child::Deployment(o) => wrap(Child::Deployment, ensure(ctx, o).await?),
        Child::InferencePool(o) => wrap(Child::InferencePool, ensure(ctx, o).await?),
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
        ChildKind::InferencePool => object::remove::<InferencePool>(client, ns, name, uid).await,
    }
}

/// Applies every desired child in order, then deletes the undesired ones.
/// InferencePools are left alone while their CRD is not served.
pub async fn apply(
    ctx: &Context,
    owner: &Owner,
    children: &Children,
    inference_pool_served: bool,
) -> Result<Applied> {
    let mut applied = Applied::default();
    for child in children.in_apply_order() {
        let (live, outcome) = apply_child(ctx, &child).await?;
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
    for (kind, name) in children.undesired(owner) {
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
