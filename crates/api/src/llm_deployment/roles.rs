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
#[x_kube(
    validation = kube::core::Rule::new("!has(self.gpusPerNode) || self.parallelism.tensor * self.parallelism.pipeline * self.parallelism.data <= self.gpusPerNode || (self.parallelism.tensor * self.parallelism.pipeline * self.parallelism.data) % self.gpusPerNode == 0").message("gpusPerNode: a replica needing more GPUs than one node has (tensor x pipeline x data) must need a whole number of nodes"),
    validation = kube::core::Rule::new("(has(self.gpusPerNode) && self.parallelism.tensor * self.parallelism.pipeline * self.parallelism.data > self.gpusPerNode ? self.gpusPerNode : self.parallelism.tensor * self.parallelism.pipeline * self.parallelism.data) <= 64").message("GPUs per pod (tensor x pipeline x data, or gpusPerNode when a replica spans nodes) must be at most 64"),
)]
pub struct RoleSpec {
    /// Number of replicas: pods, or groups of pods when a replica spans nodes.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 512))]
    pub replicas: i32,

    /// How each replica splits the model over its GPUs: tensor x pipeline x data.
    #[serde(default)]
    pub parallelism: ParallelismSpec,

    /// GPUs one node offers this role (e.g. 8). A replica that needs more
    /// (tensor x pipeline x data) spans that many GPUs per node: it runs as a
    /// LeaderWorkerSet group (leaderworkerset.x-k8s.io/v1, which must be installed)
    /// of one leader and its workers, with vLLM's multi-node arguments. Unset: a
    /// replica is one pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub gpus_per_node: Option<i32>,

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

    /// How a replica lays out over nodes.
    pub fn layout(&self) -> Layout {
        let per_replica = self.parallelism.gpus_per_replica();
        match self.gpus_per_node {
            Some(per_node) if per_replica > i64::from(per_node) && per_node > 0 => Layout {
                nodes: i32::try_from((per_replica + i64::from(per_node) - 1) / i64::from(per_node))
                    .unwrap_or(i32::MAX),
                gpus_per_pod: i64::from(per_node),
            },
            _ => Layout {
                nodes: 1,
                gpus_per_pod: per_replica,
            },
        }
    }
}

/// How one replica of a role lays out over nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Pods (one per node) one replica spans: 1, or a LeaderWorkerSet group's size.
    pub nodes: i32,
    /// GPUs each of those pods requests.
    pub gpus_per_pod: i64,
}

impl Layout {
    pub fn multi_node(&self) -> bool {
        self.nodes > 1
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
            gpus_per_node: None,
        }
    }
}

/// How one pod splits the model over its GPUs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.tensor * self.pipeline * self.data <= 512").message("parallelism: tensor x pipeline x data (GPUs per replica) must be at most 512"))]
pub struct ParallelismSpec {
    /// Tensor-parallel size (vLLM --tensor-parallel-size): GPUs one model replica spans.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self in [1, 2, 4, 8, 16, 32, 64]").message("parallelism.tensor must be a power of two (1, 2, 4, 8, ...)"))]
    pub tensor: i32,

    /// Pipeline-parallel stages (vLLM --pipeline-parallel-size): the model's layers
    /// split into this many groups of `tensor` GPUs, across nodes if need be.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub pipeline: i32,

    /// Data-parallel ranks of one replica (vLLM --data-parallel-size).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub data: i32,
}

fn one() -> i32 {
    1
}

impl Default for ParallelismSpec {
    fn default() -> Self {
        Self {
            tensor: 1,
            pipeline: 1,
            data: 1,
        }
    }
}

impl ParallelismSpec {
    /// GPUs one replica needs: tensor x pipeline x data.
    pub fn gpus_per_replica(&self) -> i64 {
        i64::from(self.tensor.max(1))
            * i64::from(self.pipeline.max(1))
            * i64::from(self.data.max(1))
    }
}
