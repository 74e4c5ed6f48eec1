//! The LeaderWorkerSet (`leaderworkerset.x-k8s.io/v1`, kubernetes-sigs/lws): the
//! fields this operator writes for a replica that spans nodes, as LWS's published
//! API types define them (`api/leaderworkerset/v1/leaderworkerset_types.go`). Its
//! CRD from these types stands in for the upstream one in tests, so a real API
//! server validates what the operator creates.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "leaderworkerset.x-k8s.io";
pub const VERSION: &str = "v1";
pub const PLURAL: &str = "leaderworkersets";

/// Environment variables LWS injects into every container of a group.
pub mod env {
    /// The leader pod's address (its DNS name in the set's headless Service).
    pub const LEADER_ADDRESS: &str = "LWS_LEADER_ADDRESS";
    /// Pods in the group.
    pub const GROUP_SIZE: &str = "LWS_GROUP_SIZE";
    /// This pod's index in the group: 0 for the leader, 1.. for the workers.
    pub const WORKER_INDEX: &str = "LWS_WORKER_INDEX";
}

/// Label LWS puts on every pod: the index of its pod in the group (0: the leader).
pub const WORKER_INDEX_LABEL: &str = "leaderworkerset.sigs.k8s.io/worker-index";

/// N replicas, each a group of one leader pod and `size - 1` worker pods.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "leaderworkerset.x-k8s.io",
    version = "v1",
    kind = "LeaderWorkerSet",
    plural = "leaderworkersets",
    shortname = "lws",
    status = "LeaderWorkerSetStatus",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.hpaPodSelector"}"#,
    derive = "PartialEq",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerSetSpec {
    /// Number of groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    pub leader_worker_template: LeaderWorkerTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<RolloutStrategy>,
    /// LeaderCreated or LeaderReady: when the workers are created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(LeaderCreated|LeaderReady)$"))]
    pub startup_policy: Option<String>,
}

/// The leader's and the workers' pod templates and the group size.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_template: Option<PodTemplateSpec>,
    pub worker_template: PodTemplateSpec,
    /// Pods per group, the leader included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub size: Option<i32>,
    /// RecreateGroupOnPodRestart, None (or the deprecated Default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(Default|RecreateGroupOnPodRestart|None)$"))]
    pub restart_policy: Option<String>,
}

/// How groups are updated when a template changes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// RollingUpdate (the only type).
    #[serde(rename = "type")]
    #[schemars(regex(pattern = "^RollingUpdate$"))]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update_configuration: Option<RollingUpdateConfiguration>,
}

/// Groups unavailable and above the count during an update.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
}

/// What LWS reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerSetStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Groups whose every pod is ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Groups on the current templates.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Groups created.
    #[serde(default)]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_pod_selector: Option<String>,
}
