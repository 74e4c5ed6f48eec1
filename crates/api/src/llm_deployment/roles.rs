//! The prefill and decode roles: how many model-server pods, how each splits the
//! model over its GPUs, and where they run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};

use super::AutoscalingSpec;
use crate::status::RoleScaling;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A set of model-server pods with one role (prefill or decode).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Number of pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 512))]
    pub replicas: i32,

    /// How each pod splits the model over its GPUs. GPUs per pod = tensor x data.
    #[serde(default)]
    pub parallelism: ParallelismSpec,

    /// Resources of the vLLM container. The GPU request is derived from parallelism and
    /// added unless set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extended resource name of one GPU.
    #[serde(default = "default_gpu_resource_name")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$')").message("gpuResourceName must be a resource name such as nvidia.com/gpu"))]
    pub gpu_resource_name: String,

    /// Node labels the pods must match (e.g. a GPU product label).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods (e.g. for tainted GPU nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Extra vLLM arguments for this role only, after spec.engine.args.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(a, !['--port', '--model', '--served-model-name', '--tensor-parallel-size', '--data-parallel-size', '--kv-transfer-config'].exists(f, a == f || a.startsWith(f + '=') || a.startsWith(f + '.')))"
    ).message("args must not set --port, --model, --served-model-name, --tensor-parallel-size, --data-parallel-size or --kv-transfer-config: the operator derives them from the spec"))]
    pub args: Vec<String>,

    /// Built-in autoscaling: the operator decides this role's pods from the
    /// EndpointPicker's metrics, within [minReplicas, maxReplicas], starting from
    /// `replicas`. Off: `replicas` is the count (and the LLMDeployment's /scale
    /// subresource lets an HPA or KEDA set decode's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

impl RoleSpec {
    /// The pods the role's StatefulSet should have: with autoscaling, the
    /// autoscaler's last decision (`replicas` until it made one), kept within the
    /// bounds; without, `replicas`.
    pub fn desired_replicas(&self, decision: Option<&RoleScaling>) -> i32 {
        match &self.autoscaling {
            Some(a) => a.clamp(decision.map_or(self.replicas, |d| d.replicas)),
            None => self.replicas,
        }
    }
}

fn default_replicas() -> i32 {
    1
}

fn default_gpu_resource_name() -> String {
    "nvidia.com/gpu".to_string()
}

impl Default for RoleSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            parallelism: ParallelismSpec::default(),
            resources: None,
            gpu_resource_name: default_gpu_resource_name(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            args: Vec::new(),
            autoscaling: None,
        }
    }
}

/// How one pod splits the model over its GPUs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.tensor * self.data <= 64").message("parallelism: tensor x data (GPUs per pod) must be at most 64"))]
pub struct ParallelismSpec {
    /// Tensor-parallel size (vLLM --tensor-parallel-size): GPUs one model replica spans.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self in [1, 2, 4, 8, 16, 32, 64]").message("parallelism.tensor must be a power of two (1, 2, 4, 8, ...)"))]
    pub tensor: i32,

    /// Data-parallel ranks inside one pod (vLLM --data-parallel-size).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub data: i32,
}

fn one() -> i32 {
    1
}

impl Default for ParallelismSpec {
    fn default() -> Self {
        Self { tensor: 1, data: 1 }
    }
}

impl ParallelismSpec {
    /// GPUs one pod needs: tensor x local data parallelism.
    pub fn gpus_per_pod(&self) -> i64 {
        i64::from(self.tensor.max(1)) * i64::from(self.data.max(1))
    }
}
