//! The kinds of object an LLMDeployment owns, declared once. The builders produce
//! [`Child`] values; applying, pruning and the controller's watches dispatch on
//! [`ChildKind`] with exhaustive matches, and a test checks the operator's RBAC grants
//! every kind, so a new kind of child cannot be half-wired.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use llmd_api::inference_pool::{self, InferencePool};
use llmd_api::leader_worker_set::{self, LeaderWorkerSet};
use strum::EnumIter;

use crate::build::{
    Children, EndpointPicker, ModelServer, Owner, RoleWorkload, kv_transfer, model_server,
    network_policy, routing_sidecar,
};

/// A kind of child object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter)]
pub enum ChildKind {
    ConfigMap,
    Service,
    StatefulSet,
    ServiceAccount,
    Role,
    RoleBinding,
    Deployment,
    PodDisruptionBudget,
    NetworkPolicy,
    InferencePool,
    LeaderWorkerSet,
}

impl ChildKind {
    /// API group and resource (plural), as RBAC rules name them.
    pub fn resource(self) -> (&'static str, &'static str) {
        match self {
            ChildKind::ConfigMap => ("", "configmaps"),
            ChildKind::Service => ("", "services"),
            ChildKind::ServiceAccount => ("", "serviceaccounts"),
            ChildKind::StatefulSet => ("apps", "statefulsets"),
            ChildKind::Deployment => ("apps", "deployments"),
            ChildKind::Role => ("rbac.authorization.k8s.io", "roles"),
            ChildKind::RoleBinding => ("rbac.authorization.k8s.io", "rolebindings"),
            ChildKind::PodDisruptionBudget => ("policy", "poddisruptionbudgets"),
            ChildKind::NetworkPolicy => ("networking.k8s.io", "networkpolicies"),
            ChildKind::InferencePool => (inference_pool::GROUP, inference_pool::PLURAL),
            ChildKind::LeaderWorkerSet => (leader_worker_set::GROUP, leader_worker_set::PLURAL),
        }
    }
}

/// One child object.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
    InferencePool(InferencePool),
    LeaderWorkerSet(Box<LeaderWorkerSet>),
}

impl Child {
    pub fn kind(&self) -> ChildKind {
        match self {
            Child::ConfigMap(_) => ChildKind::ConfigMap,
            Child::Service(_) => ChildKind::Service,
            Child::StatefulSet(_) => ChildKind::StatefulSet,
            Child::ServiceAccount(_) => ChildKind::ServiceAccount,
            Child::Role(_) => ChildKind::Role,
            Child::RoleBinding(_) => ChildKind::RoleBinding,
            Child::Deployment(_) => ChildKind::Deployment,
            Child::PodDisruptionBudget(_) => ChildKind::PodDisruptionBudget,
            Child::NetworkPolicy(_) => ChildKind::NetworkPolicy,
            Child::InferencePool(_) => ChildKind::InferencePool,
            Child::LeaderWorkerSet(_) => ChildKind::LeaderWorkerSet,
        }
    }

    /// The object as JSON (what is applied).
    #[cfg(test)]
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Child::ConfigMap(o) => serde_json::to_value(o),
            Child::Service(o) => serde_json::to_value(o),
            Child::StatefulSet(o) => serde_json::to_value(o),
            Child::ServiceAccount(o) => serde_json::to_value(o),
            Child::Role(o) => serde_json::to_value(o),
            Child::RoleBinding(o) => serde_json::to_value(o),
            Child::Deployment(o) => serde_json::to_value(o),
            Child::PodDisruptionBudget(o) => serde_json::to_value(o),
            Child::NetworkPolicy(o) => serde_json::to_value(o),
            Child::InferencePool(o) => serde_json::to_value(o),
            Child::LeaderWorkerSet(o) => serde_json::to_value(o),
        };
        value.expect("a child serializes")
    }

    pub fn name(&self) -> String {
        match self {
            Child::ConfigMap(o) => o.name_any(),
            Child::Service(o) => o.name_any(),
            Child::StatefulSet(o) => o.name_any(),
            Child::ServiceAccount(o) => o.name_any(),
            Child::Role(o) => o.name_any(),
            Child::RoleBinding(o) => o.name_any(),
            Child::Deployment(o) => o.name_any(),
            Child::PodDisruptionBudget(o) => o.name_any(),
            Child::NetworkPolicy(o) => o.name_any(),
            Child::InferencePool(o) => o.name_any(),
            Child::LeaderWorkerSet(o) => o.name_any(),
        }
    }
}

impl Children {
    /// Every desired child in apply order: the fabric first so pods never start
    /// without the ConfigMap they load, each workload after its Service, the
    /// EndpointPicker's identity and config before its Deployment.
    pub fn in_apply_order(&self) -> Vec<Child> {
        let Children {
            prefill,
            decode,
            routing_sidecar,
            kv_transfer,
            endpoint_picker,
            inference_pool,
            network_policies,
        } = self;
        let EndpointPicker {
            deployment,
            service,
            service_account,
            role,
            role_binding,
            config,
            disruption_budget: epp_budget,
            picker_config: _,
        } = endpoint_picker;
        let mut out: Vec<Child> = kv_transfer.iter().cloned().map(Child::ConfigMap).collect();
        // The sidecar's identity before the decode pods that run as it.
        if let Some(s) = routing_sidecar {
            out.extend([
                Child::ServiceAccount(s.service_account.clone()),
                Child::Role(s.role.clone()),
                Child::RoleBinding(s.role_binding.clone()),
            ]);
        }
        for ModelServer {
            workload,
            disruption_budget,
        } in prefill.iter().chain([decode])
        {
            match workload {
                RoleWorkload::StatefulSet {
                    stateful_set,
                    service,
                } => {
                    out.push(Child::Service(service.clone()));
                    out.push(Child::StatefulSet(stateful_set.clone()));
                }
                RoleWorkload::LeaderWorkerSet(lws) => {
                    out.push(Child::LeaderWorkerSet(lws.clone()));
                }
            }
            out.push(Child::PodDisruptionBudget(disruption_budget.clone()));
        }
        out.extend([
            Child::ServiceAccount(service_account.clone()),
            Child::Role(role.clone()),
            Child::RoleBinding(role_binding.clone()),
            Child::ConfigMap(config.clone()),
            Child::Service(service.clone()),
            Child::Deployment(deployment.clone()),
            Child::PodDisruptionBudget(epp_budget.clone()),
        ]);
        out.extend(network_policies.iter().cloned().map(Child::NetworkPolicy));
        out.extend(inference_pool.iter().cloned().map(Child::InferencePool));
        out
    }

    /// Children this deployment may own that the spec does not ask for now (a
    /// removed prefill role, the fabric of aggregated serving, a disabled
    /// InferencePool): deleted when they exist and this deployment controls them.
    pub fn undesired(&self, owner: &Owner) -> Vec<(ChildKind, String)> {
        let mut out = Vec::new();
        let roles = [
            (model_server::Role::Prefill, self.prefill.as_ref()),
            (model_server::Role::Decode, Some(&self.decode)),
        ];
        for (role, server) in roles {
            let name = model_server::name(owner, role);
            // A role's pods run as a StatefulSet or a LeaderWorkerSet, not both.
            match server.map(|s| &s.workload) {
                None => {
                    out.push((ChildKind::StatefulSet, name.clone()));
                    out.push((ChildKind::LeaderWorkerSet, name.clone()));
                    out.push((ChildKind::PodDisruptionBudget, name.clone()));
                    out.push((ChildKind::Service, name));
                }
                Some(RoleWorkload::StatefulSet { .. }) => {
                    out.push((ChildKind::LeaderWorkerSet, name));
                }
                Some(RoleWorkload::LeaderWorkerSet(_)) => {
                    out.push((ChildKind::StatefulSet, name.clone()));
                    out.push((ChildKind::Service, name));
                }
            }
        }
        if self.kv_transfer.is_none() {
            out.push((ChildKind::ConfigMap, kv_transfer::name(owner)));
        }
        if self.routing_sidecar.is_none() {
            let name = routing_sidecar::name(owner);
            out.push((ChildKind::RoleBinding, name.clone()));
            out.push((ChildKind::Role, name.clone()));
            out.push((ChildKind::ServiceAccount, name));
        }
        if self.inference_pool.is_none() {
            out.push((ChildKind::InferencePool, owner.name.clone()));
        }
        if self.network_policies.is_empty() {
            for name in [
                network_policy::model_servers_name(owner),
                network_policy::endpoint_picker_name(owner),
            ] {
                out.push((ChildKind::NetworkPolicy, name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use strum::IntoEnumIterator;

    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Rule {
        api_groups: Vec<String>,
        resources: Vec<String>,
        verbs: Vec<String>,
    }

    #[derive(serde::Deserialize)]
    struct ClusterRole {
        rules: Vec<Rule>,
    }

    #[test]
    fn the_operator_may_watch_apply_and_delete_every_kind_of_child() {
        let text = include_str!("../../../config/rbac/role.yaml");
        let role: ClusterRole = serde_yaml::from_str(text).expect("role.yaml parses");
        for kind in ChildKind::iter() {
            let (group, resource) = kind.resource();
            let verbs: BTreeSet<&str> = role
                .rules
                .iter()
                .filter(|r| {
                    r.api_groups.iter().any(|g| g == group)
                        && r.resources.iter().any(|r| r == resource)
                })
                .flat_map(|r| r.verbs.iter().map(String::as_str))
                .collect();
            for verb in ["get", "list", "watch", "create", "patch", "delete"] {
                assert!(
                    verbs.contains(verb),
                    "config/rbac/role.yaml does not grant {verb} on {group}/{resource}"
                );
            }
        }
    }

    #[test]
    fn every_sample_child_is_listed_once_and_nothing_desired_is_pruned() {
        let mut ld = crate::build::tests::sample(crate::build::tests::PD_NIXL);
        // Every optional child on, so every kind is built and none is pruned; decode
        // replicas span two nodes (a LeaderWorkerSet), prefill's are one pod each.
        ld.spec.network_policy = llmd_api::NetworkIsolationSpec {
            enabled: true,
            allow_from: vec![Default::default()],
        };
        ld.spec.decode.parallelism.tensor = 8;
        ld.spec.decode.parallelism.pipeline = 2;
        ld.spec.decode.gpus_per_node = Some(8);
        let owner = Owner::of(&ld).expect("owner");
        let options = crate::build::BuildOptions {
            inference_pool_served: true,
            ..Default::default()
        };
        let children = crate::build::build(&owner, &ld.spec, &options);
        let listed: Vec<(ChildKind, String)> = children
            .in_apply_order()
            .iter()
            .map(|c| (c.kind(), c.name()))
            .collect();
        let unique: BTreeSet<String> = listed.iter().map(|(k, n)| format!("{k:?}/{n}")).collect();
        assert_eq!(unique.len(), listed.len(), "{listed:?}");
        assert_eq!(listed.len(), 19);
        assert_eq!(
            listed[0],
            (ChildKind::ConfigMap, "llama-pd-kv-transfer".into())
        );
        // What is pruned is what the other kind of workload would have made.
        let undesired = children.undesired(&owner);
        assert!(
            undesired.iter().all(|u| !listed.contains(u)),
            "{undesired:?}"
        );
        assert_eq!(
            undesired,
            [
                (ChildKind::LeaderWorkerSet, "llama-pd-prefill".to_string()),
                (ChildKind::StatefulSet, "llama-pd-decode".to_string()),
                (ChildKind::Service, "llama-pd-decode".to_string()),
            ]
        );
        let kinds: BTreeSet<String> = listed.iter().map(|(k, _)| format!("{k:?}")).collect();
        assert_eq!(
            kinds.len(),
            ChildKind::iter().count(),
            "every kind is built"
        );
    }
}
