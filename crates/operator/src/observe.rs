//! What the reconcile saw of its children after applying them: replica counts,
//! rollout progress and scheduling failures. The conversions from API objects are
//! pure; `unschedulable` is the one read.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::error::{Error, Result};

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

/// Everything conditions are computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub prefill: Option<Workload>,
    pub decode: Workload,
    pub endpoint_picker: Workload,
    pub kv_fabric: KvFabric,
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
