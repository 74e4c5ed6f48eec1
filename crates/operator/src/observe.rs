//! The observe step: what the reconcile saw of its children (replica counts, rollout
//! progress, the KV fabric, scheduling failures), from the objects the apply step
//! got back or, when nothing was applied, read from the API.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use llmd_api::endpoint_picker::selector_string;
use llmd_api::leader_worker_set::LeaderWorkerSet;
use llmd_api::{KvConnector, LLMDeploymentSpec, PrefixCacheMode, RoleSpec};

use crate::build::{Component, Owner, endpoint_picker, kv_transfer, model_server};
use crate::children::Child;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::fabric_probe::Probe;
use crate::kv_events_seen::{self, KvEventsSeen};

/// Replica counts of one StatefulSet or Deployment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Workload {
    pub name: String,
    pub exists: bool,
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The workload's controller has seen its latest spec.
    pub generation_observed: bool,
    /// The scheduler's message for a pod it cannot place.
    pub unschedulable: Option<String>,
}

impl Workload {
    /// Every pod exists, is ready and runs the current template.
    pub fn settled(&self) -> bool {
        self.generation_observed
            && self.replicas == self.desired
            && self.ready >= self.desired
            && self.updated >= self.desired
    }

    pub fn from_stateful_set(sts: &StatefulSet) -> Self {
        let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = sts.status.clone().unwrap_or_default();
        Self {
            name: sts.name_any(),
            exists: true,
            desired,
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            generation_observed: status.observed_generation >= sts.metadata.generation,
            unschedulable: None,
        }
    }

    /// A LeaderWorkerSet's counts are of groups (a replica spanning nodes). It
    /// reports no observedGeneration of its own: its conditions carry it.
    pub fn from_leader_worker_set(lws: &LeaderWorkerSet) -> Self {
        let status = lws.status.clone().unwrap_or_default();
        Self {
            name: lws.name_any(),
            exists: true,
            desired: lws.spec.replicas.unwrap_or(1),
            replicas: status.replicas,
            ready: status.ready_replicas,
            updated: status.updated_replicas,
            generation_observed: status
                .conditions
                .iter()
                .any(|c| c.observed_generation >= lws.metadata.generation),
            unschedulable: None,
        }
    }

    pub fn from_deployment(deployment: &Deployment) -> Self {
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        Self {
            name: deployment.name_any(),
            exists: true,
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            generation_observed: status.observed_generation >= deployment.metadata.generation,
            unschedulable: None,
        }
    }
}

/// The KV-transfer fabric as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvFabric {
    /// Aggregated serving: nothing to transfer.
    NotRequired,
    /// NIXL between prefill and decode pods.
    Nixl {
        transports: String,
        side_channel_port: i32,
        config_present: bool,
    },
}

/// The two sides of the KV fabric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPeers {
    pub prefill_ready: bool,
    pub decode_ready: bool,
    pub rolled_out: bool,
}

/// Everything conditions are computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub prefill: Option<Workload>,
    pub decode: Workload,
    pub endpoint_picker: Workload,
    pub kv_fabric: KvFabric,
    /// In precise prefix-cache mode, whose KV events reach the EndpointPicker.
    pub kv_events: Option<KvEventsSeen>,
    /// Where the KV fabric probe stands.
    pub kv_probe: Probe,
}

/// The scheduler's message for the first unschedulable pod among `pods`.
pub fn unschedulable_message(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .map(|c| {
                let message = c.message.clone().unwrap_or_default();
                format!("pod {}: {}", pod.name_any(), message.trim())
            })
    })
}

/// Fill in `unschedulable` of a workload that is short of ready pods, by reading its pods.
pub async fn unschedulable(api: &Api<Pod>, workload: &mut Workload, selector: &str) -> Result<()> {
    if workload.ready >= workload.desired {
        return Ok(());
    }
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube(format!("list pods of {}", workload.name), e))?;
    workload.unschedulable = unschedulable_message(&pods.items);
    Ok(())
}

/// The fabric the spec asks for, and whether its ConfigMap exists.
fn kv_fabric(spec: &LLMDeploymentSpec, config_present: bool) -> KvFabric {
    match spec.effective_connector() {
        KvConnector::None => KvFabric::NotRequired,
        KvConnector::Nixl => KvFabric::Nixl {
            transports: spec
                .kv_transfer
                .ucx
                .transports
                .clone()
                .unwrap_or_else(|| "as UCX picks".into()),
            side_channel_port: spec.kv_transfer.side_channel_port,
            config_present,
        },
    }
}

/// A workload that does not exist (yet).
fn absent(name: String) -> Workload {
    Workload {
        name,
        ..Workload::default()
    }
}

impl Observed {
    /// From the live children the apply step returned (pure).
    pub fn from_applied(live: &[Child], owner: &Owner, spec: &LLMDeploymentSpec) -> Observed {
        let stateful_set = |name: String| {
            live.iter()
                .find_map(|c| match c {
                    Child::StatefulSet(s) if s.name_any() == name => {
                        Some(Workload::from_stateful_set(s))
                    }
                    Child::LeaderWorkerSet(l) if l.name_any() == name => {
                        Some(Workload::from_leader_worker_set(l))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| absent(name))
        };
        let epp_name = endpoint_picker::name(owner);
        let endpoint_picker = live
            .iter()
            .find_map(|c| match c {
                Child::Deployment(d) if d.name_any() == epp_name => {
                    Some(Workload::from_deployment(d))
                }
                _ => None,
            })
            .unwrap_or_else(|| absent(epp_name));
        let kv_name = kv_transfer::name(owner);
        let config_present = live
            .iter()
            .any(|c| matches!(c, Child::ConfigMap(cm) if cm.name_any() == kv_name));
        Observed {
            prefill: spec
                .active_prefill()
                .map(|_| stateful_set(model_server::name(owner, model_server::Role::Prefill))),
            decode: stateful_set(model_server::name(owner, model_server::Role::Decode)),
            endpoint_picker,
            kv_fabric: kv_fabric(spec, config_present),
            kv_events: None,
            kv_probe: Probe::NotRequired,
        }
    }

    /// Read from the API without applying anything (the spec is invalid: show what
    /// runs).
    pub async fn read(ctx: &Context, owner: &Owner, spec: &LLMDeploymentSpec) -> Result<Observed> {
        let ns = &owner.namespace;
        let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
        let lws_api: Api<LeaderWorkerSet> = Api::namespaced(ctx.client.clone(), ns);
        // A role whose replica spans nodes runs as a LeaderWorkerSet (none is
        // found while its CRD is not served).
        let read_role = |role: model_server::Role, role_spec: &RoleSpec| {
            let (sts_api, lws_api) = (sts_api.clone(), lws_api.clone());
            let name = model_server::name(owner, role);
            let multi_node = role_spec.layout().multi_node();
            async move {
                if multi_node {
                    let lws = crate::apply::object::get_if_served(&lws_api, &name)
                        .await
                        .map_err(|e| Error::kube(format!("get LeaderWorkerSet {name}"), e))?;
                    return Ok::<_, Error>(
                        lws.map_or_else(|| absent(name), |l| Workload::from_leader_worker_set(&l)),
                    );
                }
                let sts = sts_api
                    .get_opt(&name)
                    .await
                    .map_err(|e| Error::kube(format!("get StatefulSet {name}"), e))?;
                Ok(sts.map_or_else(|| absent(name), |s| Workload::from_stateful_set(&s)))
            }
        };
        let prefill = match spec.active_prefill() {
            Some(role_spec) => Some(read_role(model_server::Role::Prefill, role_spec).await?),
            None => None,
        };
        let decode = read_role(model_server::Role::Decode, &spec.decode).await?;
        let epp_name = endpoint_picker::name(owner);
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
        let endpoint_picker = deployments
            .get_opt(&epp_name)
            .await
            .map_err(|e| Error::kube(format!("get Deployment {epp_name}"), e))?
            .map_or_else(|| absent(epp_name), |d| Workload::from_deployment(&d));
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
            kv_events: None,
            kv_probe: Probe::NotRequired,
        })
    }

    /// In precise prefix-cache mode, reads whose KV events reach each Ready
    /// EndpointPicker replica.
    pub async fn find_kv_events(
        &mut self,
        ctx: &Context,
        owner: &Owner,
        spec: &LLMDeploymentSpec,
    ) -> Result<()> {
        if spec.router.prefix_cache.mode != PrefixCacheMode::Precise
            || self.endpoint_picker.ready == 0
        {
            return Ok(());
        }
        self.kv_events = Some(kv_events_seen::read(ctx, &owner.namespace, &owner.name).await?);
        Ok(())
    }

    /// Fills in the scheduler's message for every workload short of ready pods.
    pub async fn find_unschedulable(&mut self, ctx: &Context, owner: &Owner) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        let mut workloads = vec![
            (&mut self.decode, Component::Decode),
            (&mut self.endpoint_picker, Component::EndpointPicker),
        ];
        if let Some(prefill) = self.prefill.as_mut() {
            workloads.push((prefill, Component::Prefill));
        }
        for (workload, component) in workloads {
            let selector = selector_string(&owner.selector_labels(component));
            unschedulable(&pods, workload, &selector).await?;
        }
        Ok(())
    }

    /// Every workload has all its pods ready on the current template.
    pub fn settled(&self) -> bool {
        self.prefill
            .iter()
            .chain([&self.decode, &self.endpoint_picker])
            .all(Workload::settled)
    }

    /// Whether prefill and decode pods are Ready, and all on the current template.
    pub fn kv_peers(&self) -> KvPeers {
        KvPeers {
            prefill_ready: self.prefill.as_ref().is_some_and(|p| p.ready > 0),
            decode_ready: self.decode.ready > 0,
            rolled_out: self.prefill.as_ref().is_none_or(|p| p.updated >= p.desired)
                && self.decode.updated >= self.decode.desired,
        }
    }

    /// Prefill and decode pods are Ready on the current fabric config: the KV
    /// fabric can be probed.
    pub fn kv_peers_ready(&self) -> bool {
        let p = self.kv_peers();
        matches!(
            self.kv_fabric,
            KvFabric::Nixl {
                config_present: true,
                ..
            }
        ) && p.prefill_ready
            && p.decode_ready
            && p.rolled_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    #[test]
    fn stateful_set_counts_and_generation() {
        let mut sts = StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                replicas: 3,
                ready_replicas: Some(2),
                updated_replicas: Some(3),
                observed_generation: Some(4),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        sts.metadata.name = Some("x-decode".into());
        sts.metadata.generation = Some(4);
        let w = Workload::from_stateful_set(&sts);
        assert_eq!((w.desired, w.replicas, w.ready, w.updated), (3, 3, 2, 3));
        assert!(w.generation_observed);
        assert!(!w.settled());
        sts.metadata.generation = Some(5);
        assert!(!Workload::from_stateful_set(&sts).generation_observed);
    }

    #[test]
    fn finds_the_scheduler_message() {
        let mut pod = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some(
                        "0/5 nodes are available: 5 Insufficient nvidia.com/gpu. ".into(),
                    ),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        pod.metadata.name = Some("x-decode-0".into());
        assert_eq!(
            unschedulable_message(&[Pod::default(), pod]).as_deref(),
            Some("pod x-decode-0: 0/5 nodes are available: 5 Insufficient nvidia.com/gpu.")
        );
        assert_eq!(unschedulable_message(&[Pod::default()]), None);
    }
}
