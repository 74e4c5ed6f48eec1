//! The `LLMDeployment` custom resource (`llmd.dev/v1alpha1`).
//!
//! Every field carries a doc comment: they become the schema descriptions that
//! `kubectl explain llmdeployment.spec...` prints. Bounds and enums live in the
//! schema, cross-field rules in CEL (`x-kubernetes-validations`) so that a bad spec
//! is refused at `kubectl apply` with a message that names the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::images::DEFAULT_ENGINE_IMAGE;
use crate::status::LLMDeploymentStatus;

/// Port every model server listens on (OpenAI API, /metrics and /health).
pub const MODEL_SERVER_PORT: i32 = 8000;

/// Flags the operator derives from the spec; `spec.engine.args` may not set them.
pub const MANAGED_ENGINE_FLAGS: [&str; 6] = [
    "--port",
    "--model",
    "--served-model-name",
    "--tensor-parallel-size",
    "--data-parallel-size",
    "--kv-transfer-config",
];

/// LLMDeployment turns one model into a complete llm-d style inference stack:
/// prefill and decode vLLM StatefulSets, a NIXL KV-transfer fabric, and an
/// EndpointPicker that routes by prefix-cache locality, queue depth and KV-cache load.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmd.dev",
    version = "v1alpha1",
    kind = "LLMDeployment",
    plural = "llmdeployments",
    singular = "llmdeployment",
    shortname = "llmd",
    category = "llmd",
    namespaced,
    status = "LLMDeploymentStatus",
    derive = "PartialEq",
    doc = "LLMDeployment serves one model with disaggregated prefill/decode vLLM pods, a NIXL KV-transfer fabric and a cache-aware EndpointPicker.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Prefill", type_ = "string", description = "ready/desired prefill pods", json_path = ".status.prefill.ready"),
    printcolumn(name = "Decode", type_ = "string", description = "ready/desired decode pods", json_path = ".status.decode.ready"),
    printcolumn(name = "Router", type_ = "string", description = "EndpointPicker endpoint", json_path = ".status.router.endpoint"),
    printcolumn(name = "Model", type_ = "string", priority = 1, json_path = ".spec.model.name"),
    printcolumn(name = "Reason", type_ = "string", priority = 1, json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("size(self.metadata.name) <= 42").message("metadata.name must be at most 42 characters so that child names such as <name>-epp-config and pod names fit Kubernetes limits")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.prefill) || self.prefill.replicas == 0 || !has(self.kvTransfer) || !has(self.kvTransfer.connector) || self.kvTransfer.connector != 'None'"
).message("spec.kvTransfer.connector: disaggregated serving (spec.prefill.replicas > 0) needs a KV connector; set it to Nixl or remove spec.prefill").field_path(".kvTransfer.connector"))]
pub struct LLMDeploymentSpec {
    /// The model to serve: its served name, where its weights come from, and its context length.
    pub model: ModelSpec,

    /// The vLLM engine every model-server pod runs.
    #[serde(default)]
    pub engine: EngineSpec,

    /// Prefill pods: they compute the KV cache of long prompts and ship it to decode
    /// pods over the KV-transfer fabric. Omit it (or set replicas 0) for aggregated
    /// serving, where decode pods do both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<RoleSpec>,

    /// Decode pods: they stream the generated tokens. Every deployment needs at least one.
    #[x_kube(validation = kube::core::Rule::new("self.replicas >= 1").message("spec.decode.replicas must be at least 1: decode pods serve every request").field_path(".replicas"))]
    pub decode: RoleSpec,

    /// The KV-cache transfer fabric shared by prefill and decode pods (vLLM's NixlConnector).
    #[serde(default)]
    pub kv_transfer: KvTransferSpec,

    /// The EndpointPicker that routes each request.
    #[serde(default)]
    pub router: RouterSpec,

    /// The Gateway API Inference Extension InferencePool for this deployment.
    #[serde(default)]
    pub inference_pool: InferencePoolSpec,
}

/// The model to serve.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Name clients send in the OpenAI `model` field (vLLM `--served-model-name`),
    /// e.g. meta-llama/Llama-3.1-8B-Instruct.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Where the weights come from: hf://<org>/<model> (Hugging Face),
    /// pvc://<claim>/<path> (a PersistentVolumeClaim in the same namespace),
    /// s3://<bucket>/<path> (streamed with the Run:ai model streamer), or
    /// oci://<image reference> (an image volume).
    #[schemars(length(min = 6, max = 2048))]
    #[x_kube(
        validation = kube::core::Rule::new("self.matches('^(hf|pvc|s3|oci)://[^\\\\s]+$')").message("spec.model.uri must start with hf://, pvc://, s3:// or oci:// and name a model"),
        validation = kube::core::Rule::new("!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?$')").message("spec.model.uri: pvc:// needs a valid claim name: pvc://<claim>/<path>"),
    )]
    pub uri: String,

    /// Maximum context length in tokens (vLLM `--max-model-len`). Defaults to the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 10_000_000))]
    pub max_model_len: Option<i32>,
}

/// The vLLM engine every model-server pod runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// Container image of the vLLM OpenAI server.
    #[serde(default = "default_engine_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Extra vLLM arguments for every model-server pod. Flags the operator derives
    /// from the spec (--port, --model, --served-model-name, --tensor-parallel-size,
    /// --data-parallel-size, --kv-transfer-config) are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(a, !['--port', '--model', '--served-model-name', '--tensor-parallel-size', '--data-parallel-size', '--kv-transfer-config'].exists(f, a == f || a.startsWith(f + '=')))"
    ).message("spec.engine.args must not set --port, --model, --served-model-name, --tensor-parallel-size, --data-parallel-size or --kv-transfer-config: the operator derives them from the spec"))]
    pub args: Vec<String>,

    /// Extra environment variables for every model-server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

fn default_engine_image() -> String {
    DEFAULT_ENGINE_IMAGE.to_string()
}

impl Default for EngineSpec {
    fn default() -> Self {
        Self {
            image: default_engine_image(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

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
        "self.all(a, !['--port', '--model', '--served-model-name', '--tensor-parallel-size', '--data-parallel-size', '--kv-transfer-config'].exists(f, a == f || a.startsWith(f + '=')))"
    ).message("args must not set --port, --model, --served-model-name, --tensor-parallel-size, --data-parallel-size or --kv-transfer-config: the operator derives them from the spec"))]
    pub args: Vec<String>,
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

/// The KV-cache transfer fabric shared by prefill and decode pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.sideChannelPort != 8000").message("spec.kvTransfer.sideChannelPort must differ from the model-server port 8000"))]
pub struct KvTransferSpec {
    /// KV connector. Nixl configures vLLM's NixlConnector; None disables KV transfer
    /// (only valid without prefill pods). Unset means Nixl when prefill pods exist and
    /// None otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<KvConnector>,

    /// NIXL transfer backends, in order of preference.
    #[serde(default = "default_backends")]
    #[schemars(length(min = 1, max = 8))]
    pub backends: Vec<NixlBackend>,

    /// Port of the NIXL side channel over which peers exchange metadata
    /// (VLLM_NIXL_SIDE_CHANNEL_PORT).
    #[serde(default = "default_side_channel_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub side_channel_port: i32,

    /// Where vLLM stages the KV buffer for transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_device: Option<KvBufferDevice>,

    /// UCX settings of the transfer.
    #[serde(default)]
    pub ucx: UcxSpec,
}

fn default_backends() -> Vec<NixlBackend> {
    vec![NixlBackend::Ucx]
}

fn default_side_channel_port() -> i32 {
    5600
}

impl Default for KvTransferSpec {
    fn default() -> Self {
        Self {
            connector: None,
            backends: default_backends(),
            side_channel_port: default_side_channel_port(),
            buffer_device: None,
            ucx: UcxSpec::default(),
        }
    }
}

/// KV connector of the vLLM engine.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvConnector {
    /// vLLM's NixlConnector (kv_role kv_both).
    Nixl,
    /// No KV transfer.
    None,
}

/// A NIXL transfer backend.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NixlBackend {
    #[serde(rename = "UCX")]
    Ucx,
    #[serde(rename = "LIBFABRIC")]
    Libfabric,
    #[serde(rename = "GDS")]
    Gds,
    #[serde(rename = "GDS_MT")]
    GdsMt,
    #[serde(rename = "POSIX")]
    Posix,
    Mooncake,
}

impl NixlBackend {
    /// The name NIXL knows the backend by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ucx => "UCX",
            Self::Libfabric => "LIBFABRIC",
            Self::Gds => "GDS",
            Self::GdsMt => "GDS_MT",
            Self::Posix => "POSIX",
            Self::Mooncake => "Mooncake",
        }
    }
}

/// Where the KV buffer is staged.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KvBufferDevice {
    Cuda,
    Cpu,
}

/// UCX settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UcxSpec {
    /// UCX transports (UCX_TLS), comma separated, e.g. cuda_ipc,cuda_copy,tcp or, with
    /// RDMA, sm,cuda_ipc,cuda_copy,rc,tcp.
    #[serde(default = "default_transports")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z_]+(,[a-z_]+)*$')").message("spec.kvTransfer.ucx.transports must be a comma-separated list of UCX transports, e.g. cuda_ipc,cuda_copy,tcp"))]
    pub transports: String,
}

fn default_transports() -> String {
    "cuda_ipc,cuda_copy,tcp".to_string()
}

impl Default for UcxSpec {
    fn default() -> Self {
        Self {
            transports: default_transports(),
        }
    }
}

/// The EndpointPicker (router) of the deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouterSpec {
    /// Number of EndpointPicker pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: i32,

    /// Container image of the EndpointPicker. Unset means the operator's default
    /// (its --default-epp-image flag, set by the Helm chart or OLM bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Resources of the EndpointPicker container. Unset means the operator's default
    /// (its --default-epp-resources flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Weights of the scorers; the picker takes the endpoint with the highest weighted sum.
    #[serde(default)]
    pub scorers: ScorerWeights,

    /// When a request is split into prefill and decode.
    #[serde(default)]
    pub disaggregation: DisaggregationSpec,

    /// Approximate prefix-cache index of the router.
    #[serde(default)]
    pub prefix_cache: PrefixCacheSpec,

    /// The operator's embedded scheduler, which retunes the scorer weights from live metrics.
    #[serde(default)]
    pub auto_tune: AutoTuneSpec,
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            image: None,
            resources: None,
            scorers: ScorerWeights::default(),
            disaggregation: DisaggregationSpec::default(),
            prefix_cache: PrefixCacheSpec::default(),
            auto_tune: AutoTuneSpec::default(),
        }
    }
}

/// Weights of the EndpointPicker scorers (each score is in [0, 1]; 0 turns a scorer off).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.prefixCache + self.queue + self.kvCacheUtilization + self.activeRequests + self.sessionAffinity > 0.0").message("spec.router.scorers: at least one scorer weight must be greater than 0"))]
pub struct ScorerWeights {
    /// Weight of the prefix-cache scorer (share of the prompt the pod probably holds).
    #[serde(default = "default_prefix_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub prefix_cache: f64,
    /// Weight of the queue scorer (fewer waiting requests is better).
    #[serde(default = "default_load_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub queue: f64,
    /// Weight of the KV-cache utilisation scorer (more free KV cache is better).
    #[serde(default = "default_load_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub kv_cache_utilization: f64,
    /// Weight of the active-request scorer (fewer requests in flight from this router is better).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub active_requests: f64,
    /// Weight of session affinity (requests with the same x-session-token header stick to a pod).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub session_affinity: f64,
}

fn default_prefix_weight() -> f64 {
    3.0
}

fn default_load_weight() -> f64 {
    2.0
}

impl Default for ScorerWeights {
    fn default() -> Self {
        Self {
            prefix_cache: 3.0,
            queue: 2.0,
            kv_cache_utilization: 2.0,
            active_requests: 0.0,
            session_affinity: 0.0,
        }
    }
}

/// When a request is split into prefill and decode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DisaggregationSpec {
    /// Split a request when the prompt tokens not cached on the chosen decode pod reach
    /// this many. 0 disables splitting.
    #[serde(default = "default_non_cached_tokens")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub non_cached_tokens: i32,
}

fn default_non_cached_tokens() -> i32 {
    256
}

impl Default for DisaggregationSpec {
    fn default() -> Self {
        Self {
            non_cached_tokens: default_non_cached_tokens(),
        }
    }
}

/// Approximate prefix-cache index of the router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrefixCacheSpec {
    /// Tokens per hashed prompt block; match the engine's KV block size.
    #[serde(default = "default_block_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub block_size_tokens: i32,
    /// Blocks remembered per model server (LRU).
    #[serde(default = "default_lru_capacity")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub lru_capacity_per_server: i32,
}

fn default_block_size() -> i32 {
    16
}

fn default_lru_capacity() -> i32 {
    31_250
}

impl Default for PrefixCacheSpec {
    fn default() -> Self {
        Self {
            block_size_tokens: default_block_size(),
            lru_capacity_per_server: default_lru_capacity(),
        }
    }
}

/// Settings of the embedded scheduler that retunes scorer weights at run time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.minWeight <= self.maxWeight").message("spec.router.autoTune.minWeight must not exceed spec.router.autoTune.maxWeight"))]
pub struct AutoTuneSpec {
    /// Turn run-time tuning on.
    #[serde(default)]
    pub enabled: bool,
    /// How often weights are recomputed, as a duration such as 30s or 2m (at least 5s).
    #[serde(default = "default_interval")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]+(s|m|h)$') && duration(self) >= duration('5s')").message("spec.router.autoTune.interval must be a duration of at least 5s, such as 30s or 2m"))]
    pub interval: String,
    /// Lowest weight the tuner may give a scorer.
    #[serde(default = "default_min_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_weight: f64,
    /// Highest weight the tuner may give a scorer.
    #[serde(default = "default_max_weight")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_weight: f64,
}

fn default_interval() -> String {
    "30s".to_string()
}

fn default_min_weight() -> f64 {
    0.1
}

fn default_max_weight() -> f64 {
    10.0
}

impl Default for AutoTuneSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_interval(),
            min_weight: default_min_weight(),
            max_weight: default_max_weight(),
        }
    }
}

/// The Gateway API Inference Extension InferencePool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// Create an InferencePool (inference.networking.k8s.io/v1) selecting the decode pods
    /// and pointing at the EndpointPicker. Only done when that CRD is served.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

impl Default for InferencePoolSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl LLMDeploymentSpec {
    /// The prefill role when it runs pods (disaggregated serving).
    pub fn active_prefill(&self) -> Option<&RoleSpec> {
        self.prefill.as_ref().filter(|p| p.replicas > 0)
    }

    /// The connector in force: an explicit one, else Nixl when prefill pods exist.
    pub fn effective_connector(&self) -> KvConnector {
        match self.kv_transfer.connector {
            Some(c) => c,
            None if self.active_prefill().is_some() => KvConnector::Nixl,
            None => KvConnector::None,
        }
    }
}
