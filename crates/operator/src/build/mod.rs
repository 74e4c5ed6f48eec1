//! Pure builders of the child objects of an LLMDeployment, one module per kind.
//!
//! `build` turns a spec into the complete desired set of children, a plain value that
//! the reconcile applies and the tests snapshot. Nothing here talks to the API.

pub mod disruption_budget;
pub mod endpoint_picker;
pub mod endpoint_picker_config;
pub mod endpoint_picker_rbac;
pub mod endpoint_picker_service;
mod engine_contract;
pub mod fabric_probe;
pub mod inference_pool;
pub mod kv_transfer;
pub mod meta;
pub mod model_server;
pub mod network_policy;
pub mod pod_parts;
pub mod routing_sidecar;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use llmd_api::endpoint_picker_config::EndpointPickerConfig;
use llmd_api::inference_pool::InferencePool;
use llmd_api::leader_worker_set::LeaderWorkerSet;
use llmd_api::{KvConnector, LLMDeploymentSpec, ScorerWeights};

pub use meta::{Component, Owner};
use model_server::Role as ServingRole;

/// The pods of one role: a StatefulSet with its headless Service, or a
/// LeaderWorkerSet (which makes its own headless Service) when a replica spans
/// nodes; and their disruption budget.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelServer {
    pub workload: RoleWorkload,
    pub disruption_budget: PodDisruptionBudget,
}

/// What runs a role's pods. Two per deployment, built once per reconcile: the
/// size of the StatefulSet variant costs nothing worth a box.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum RoleWorkload {
    StatefulSet {
        stateful_set: StatefulSet,
        service: Service,
    },
    LeaderWorkerSet(Box<LeaderWorkerSet>),
}

#[cfg(test)]
impl ModelServer {
    /// The role's StatefulSet, unless it runs as a LeaderWorkerSet.
    pub fn stateful_set(&self) -> Option<&StatefulSet> {
        match &self.workload {
            RoleWorkload::StatefulSet { stateful_set, .. } => Some(stateful_set),
            RoleWorkload::LeaderWorkerSet(_) => None,
        }
    }

    /// The role's LeaderWorkerSet, when a replica spans nodes.
    pub fn leader_worker_set(&self) -> Option<&LeaderWorkerSet> {
        match &self.workload {
            RoleWorkload::LeaderWorkerSet(lws) => Some(lws),
            RoleWorkload::StatefulSet { .. } => None,
        }
    }

    /// Every pod template of the role (a LeaderWorkerSet's leader's and workers').
    pub fn pod_templates(&self) -> Vec<&k8s_openapi::api::core::v1::PodTemplateSpec> {
        match &self.workload {
            RoleWorkload::StatefulSet { stateful_set, .. } => {
                stateful_set.spec.iter().map(|s| &s.template).collect()
            }
            RoleWorkload::LeaderWorkerSet(lws) => {
                let t = &lws.spec.leader_worker_template;
                t.leader_template
                    .iter()
                    .chain([&t.worker_template])
                    .collect()
            }
        }
    }
}

/// The routing sidecar's ServiceAccount and its read access to pods.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingSidecar {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

/// Everything the EndpointPicker needs.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointPicker {
    pub deployment: Deployment,
    pub service: Service,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config: ConfigMap,
    pub disruption_budget: PodDisruptionBudget,
    /// The routing config the ConfigMap carries, as a value (for status).
    pub picker_config: EndpointPickerConfig,
}

/// The desired children of one LLMDeployment. Optional parts are absent when the spec
/// does not ask for them; the reconcile deletes such children if they exist.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub prefill: Option<ModelServer>,
    pub decode: ModelServer,
    /// The decode pods' routing sidecar's identity and access (P/D only).
    pub routing_sidecar: Option<RoutingSidecar>,
    pub kv_transfer: Option<ConfigMap>,
    pub endpoint_picker: EndpointPicker,
    pub inference_pool: Option<InferencePool>,
    /// Empty unless spec.networkPolicy.enabled.
    pub network_policies: Vec<NetworkPolicy>,
}

/// Operator-wide defaults for the EndpointPicker (from the operator's flags).
#[derive(Clone, Debug)]
pub struct EndpointPickerDefaults {
    pub image: String,
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

impl Default for EndpointPickerDefaults {
    fn default() -> Self {
        Self {
            image: llmd_api::images::DEFAULT_EPP_IMAGE.to_string(),
            resources: None,
        }
    }
}

/// Facts about the cluster and run-time state that shape the children.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// EndpointPicker image and resources when the spec leaves them unset.
    pub epp_defaults: EndpointPickerDefaults,
    /// The InferencePool CRD is served by the API server.
    pub inference_pool_served: bool,
    /// Weights chosen by the tuner; the spec's when `None`.
    pub tuned_weights: Option<ScorerWeights>,
    /// The KV fabric is not proven (its probe runs or failed): the EndpointPicker
    /// serves whole requests.
    pub fabric_unproven: bool,
    /// The autoscaler's decisions (`status.autoscaling`): the replicas of roles with
    /// `spec.<role>.autoscaling`.
    pub autoscaled: Option<llmd_api::AutoscalingStatus>,
}

/// The EndpointPicker's config: the spec's routing with `weights`, splitting into
/// prefill and decode only once the KV fabric is proven.
pub fn epp_config(
    spec: &LLMDeploymentSpec,
    weights: &ScorerWeights,
    fabric_unproven: bool,
) -> EndpointPickerConfig {
    if fabric_unproven {
        EndpointPickerConfig::for_router(&spec.router, weights, false)
    } else {
        EndpointPickerConfig::for_spec(spec, weights)
    }
}

fn model_server(
    pods: model_server::RolePods<'_>,
    inputs_hash: &str,
    autoscaled: Option<&llmd_api::AutoscalingStatus>,
) -> ModelServer {
    let role = pods.role;
    // With autoscaling, the autoscaler's decision (within the spec's bounds).
    let decision = autoscaled.and_then(|a| match role {
        ServingRole::Prefill => a.prefill.as_ref(),
        ServingRole::Decode => a.decode.as_ref(),
    });
    let replicas = pods.role_spec.desired_replicas(decision);
    // Each workload records what it was rendered from and how (see `rendering`).
    let workload = if pods.role_spec.layout().multi_node() {
        let mut lws = pods.leader_worker_set(replicas);
        crate::rendering::stamp(&mut lws, inputs_hash);
        RoleWorkload::LeaderWorkerSet(Box::new(lws))
    } else {
        let mut stateful_set = pods.stateful_set(replicas);
        crate::rendering::stamp(&mut stateful_set, inputs_hash);
        RoleWorkload::StatefulSet {
            stateful_set,
            service: model_server::headless_service(pods.owner, pods.spec, role),
        }
    };
    ModelServer {
        workload,
        disruption_budget: disruption_budget::pod_disruption_budget(
            pods.owner,
            model_server::name(pods.owner, role),
            role.component(),
        ),
    }
}

/// Build the desired children.
pub fn build(owner: &Owner, spec: &LLMDeploymentSpec, options: &BuildOptions) -> Children {
    let kv_transfer = (spec.effective_connector() == KvConnector::Nixl)
        .then(|| kv_transfer::config_map(owner, &spec.kv_transfer, spec.nixl_per_role()));
    let kv_hash = kv_transfer
        .as_ref()
        .and_then(|cm| cm.data.as_ref())
        .map(kv_transfer::hash);
    // The routing sidecar ships in the EndpointPicker's image.
    let sidecar_image = endpoint_picker::image(spec, &options.epp_defaults);
    // What shapes the model-server pods, hashed once for both roles.
    let inputs_hash = crate::rendering::pod_inputs_hash(spec, kv_hash.as_deref());
    let pods = |role, role_spec| model_server::RolePods {
        owner,
        spec,
        role,
        role_spec,
        kv_transfer_hash: kv_hash.as_deref(),
        sidecar_image,
    };
    let autoscaled = options.autoscaled.as_ref();
    let prefill = spec.active_prefill().map(|role_spec| {
        model_server(
            pods(ServingRole::Prefill, role_spec),
            &inputs_hash,
            autoscaled,
        )
    });
    let decode = model_server(
        pods(ServingRole::Decode, &spec.decode),
        &inputs_hash,
        autoscaled,
    );
    let routing_sidecar = routing_sidecar::enabled(spec).then(|| RoutingSidecar {
        service_account: routing_sidecar::service_account(owner),
        role: routing_sidecar::role(owner),
        role_binding: routing_sidecar::role_binding(owner),
    });
    let weights = options
        .tuned_weights
        .clone()
        .unwrap_or_else(|| spec.scorer_weights());
    let epp_config = epp_config(spec, &weights, options.fabric_unproven);
    let endpoint_picker = EndpointPicker {
        deployment: endpoint_picker::deployment(owner, spec, &options.epp_defaults),
        service: endpoint_picker_service::service(owner),
        service_account: endpoint_picker_rbac::service_account(owner),
        role: endpoint_picker_rbac::role(owner),
        role_binding: endpoint_picker_rbac::role_binding(owner),
        config: endpoint_picker_config::config_map(owner, &epp_config),
        disruption_budget: disruption_budget::pod_disruption_budget(
            owner,
            endpoint_picker::name(owner),
            Component::EndpointPicker,
        ),
        picker_config: epp_config,
    };
    let inference_pool = (spec.inference_pool.enabled && options.inference_pool_served)
        .then(|| inference_pool::inference_pool(owner));
    Children {
        prefill,
        decode,
        routing_sidecar,
        kv_transfer,
        endpoint_picker,
        inference_pool,
        network_policies: network_policy::network_policies(owner, spec),
    }
}

#[cfg(test)]
pub(crate) mod tests;
