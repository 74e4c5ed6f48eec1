//! Status of an `LLMDeployment`: what the operator observed, for `kubectl get` and
//! `kubectl describe`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of an LLMDeployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LLMDeploymentStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, PrefillReady, DecodeReady, KVTransferReady, EndpointPickerReady,
    /// Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Prefill pods (absent for aggregated serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<RoleStatus>,

    /// Decode pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<RoleStatus>,

    /// The EndpointPicker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterStatus>,

    /// Scorer weights in force and why (written by the tuner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingStatus>,

    /// The last KV fabric probe: a real NIXL transfer between a prefill node and a
    /// decode node, run once per fabric config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer: Option<KvTransferStatus>,

    /// The autoscaler's decisions, per role with `spec.<role>.autoscaling` (written
    /// by the operator's embedded scheduler; the StatefulSets follow them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,

    /// Set while model-server pods keep the template they were created with although
    /// this operator renders it differently (a default changed in an upgrade): which
    /// workloads, where the new rendering differs, and how to take it (change the
    /// spec, or annotate the LLMDeployment `llmd.dev/rendering: latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_rendering: Option<String>,
}

/// The autoscaler's decisions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<RoleScaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<RoleScaling>,
}

/// One role's autoscaling decision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoleScaling {
    /// Pods the autoscaler decided on (within minReplicas and maxReplicas).
    pub replicas: i32,
    /// The signal it last measured, against its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Why the role has this many pods, in numbers.
    pub reason: String,
    /// When the replicas last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
}

/// What the KV fabric probe found.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KvTransferStatus {
    /// The fabric the probe ran for (the hash of the KV-transfer ConfigMap, and the
    /// `llmd.dev/reprobe-fabric` annotation's value when set).
    pub probed: String,
    /// A transfer succeeded.
    pub proven: bool,
    /// The measurement, or why the probe failed.
    pub message: String,
    /// Transfer throughput in GB/s, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gb_per_second: Option<f64>,
    /// When the probe finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed_at: Option<String>,
}

/// Replica counts of one role.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    /// Pods wanted by the spec.
    pub desired: i32,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods that are Ready.
    pub ready_replicas: i32,
    /// Pods at the current revision.
    pub updated_replicas: i32,
    /// "ready/desired", for kubectl get.
    pub ready: String,
    /// The label selector of the role's pods (the scale subresource reports it, so
    /// an HorizontalPodAutoscaler can read their metrics).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

/// State of the EndpointPicker.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouterStatus {
    /// EndpointPicker pods wanted.
    pub replicas: i32,
    /// EndpointPicker pods Ready.
    pub ready_replicas: i32,
    /// In-cluster address of the EndpointPicker's OpenAI-compatible HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Whether an InferencePool exists for this deployment: Created, Disabled or
    /// CRDNotInstalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_pool: Option<String>,
}

/// Scorer weights in force, and how they came to be.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStatus {
    /// Weight per scorer plugin type now in force.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Hash of the EndpointPicker config the router runs with (its
    /// llmd_epp_config_info metric shows the same value once it runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// When the weights last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// Why the weights are what they are, in numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// While the tuner runs an experiment: the weights the candidate now in force is
    /// compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incumbent: Option<BTreeMap<String, f64>>,
    /// The tuner's last experiments, newest last (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RoutingChange>,
}

/// One experiment of the tuner and its verdict.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoutingChange {
    /// When it ended (RFC 3339).
    pub time: String,
    /// Kept, RolledBack, StoppedEarly (rolled back after one slice) or Abandoned.
    pub outcome: String,
    /// The weights that changed, e.g. `prefix 3 -> 4.5`.
    pub change: String,
    /// The evidence, e.g. `TTFT P90 1.80 s -> 1.20 s over 120 requests`.
    pub reason: String,
}
