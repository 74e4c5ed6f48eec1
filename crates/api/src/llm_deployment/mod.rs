//! The `LLMDeployment` custom resource (`llmd.dev/v1alpha1`), one module per section
//! of its spec: the model and engine, the prefill and decode roles, the KV-transfer
//! fabric, and the router.
//!
//! Every field carries a doc comment: they become the schema descriptions that
//! `kubectl explain llmdeployment.spec...` prints. Bounds and enums live in the
//! schema, cross-field rules in CEL (`x-kubernetes-validations`) so that a bad spec
//! is refused at `kubectl apply` with a message that names the field.

mod autoscaling;
mod kv_transfer;
mod model;
mod roles;
mod router;

pub use autoscaling::*;
pub use kv_transfer::*;
pub use model::*;
pub use roles::*;
pub use router::*;

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::LLMDeploymentStatus;

/// Port every model server listens on (OpenAI API, /metrics and /health).
pub const MODEL_SERVER_PORT: i32 = 8000;
/// Where each engine publishes its KV-cache events with
/// `spec.router.prefixCache.mode: Precise` (vLLM binds `tcp://*:<port>`, every
/// EndpointPicker replica dials it; llm-d's port).
pub const KV_EVENTS_PORT: i32 = 5556;
/// Where each engine answers requests to replay KV-event messages a subscriber
/// missed (vLLM's `replay_endpoint`, a ZeroMQ ROUTER bound on `tcp://*:<port>`).
pub const KV_EVENTS_REPLAY_PORT: i32 = 5557;

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
    // `kubectl scale` and HorizontalPodAutoscalers drive the decode pods.
    scale(
        spec_replicas_path = ".spec.decode.replicas",
        status_replicas_path = ".status.decode.replicas",
        label_selector_path = ".status.decode.selector"
    ),
    derive = "PartialEq",
    doc = "LLMDeployment serves one model with disaggregated prefill/decode vLLM pods, a NIXL KV-transfer fabric and a cache-aware EndpointPicker.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Prefill", type_ = "string", description = "ready/desired prefill pods", json_path = ".status.prefill.ready"),
    printcolumn(name = "Decode", type_ = "string", description = "ready/desired decode pods", json_path = ".status.decode.ready"),
    printcolumn(name = "Router", type_ = "string", description = "EndpointPicker endpoint", json_path = ".status.router.endpoint"),
    printcolumn(name = "Model", type_ = "string", priority = 1, json_path = ".spec.model.name"),
    printcolumn(name = "Reason", type_ = "string", priority = 1, json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "KV GB/s", type_ = "number", priority = 1, description = "bandwidth of the last KV fabric probe", json_path = ".status.kvTransfer.gbPerSecond"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("size(self.metadata.name) <= 42").message("metadata.name must be at most 42 characters so that child names such as <name>-epp-config and pod names fit Kubernetes limits")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.prefill) || self.prefill.replicas == 0 || !has(self.kvTransfer) || !has(self.kvTransfer.connector) || self.kvTransfer.connector != 'None'"
).message("spec.kvTransfer.connector: disaggregated serving (spec.prefill.replicas > 0) needs a KV connector; set it to Nixl or remove spec.prefill").field_path(".kvTransfer.connector"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.router) || !has(self.router.prefixCache) || !has(self.router.prefixCache.mode) || self.router.prefixCache.mode != 'Precise' || [has(self.engine) && has(self.engine.args) ? self.engine.args : [], has(self.prefill) && has(self.prefill.args) ? self.prefill.args : [], has(self.decode.args) ? self.decode.args : []].all(l, !l.exists(a, a == '--kv-events-config' || a.startsWith('--kv-events-config=')))"
).message("spec.router.prefixCache.mode Precise: engine and role args must not set --kv-events-config, the operator renders it (ZeroMQ on port 5556)").field_path(".router.prefixCache.mode"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.prefill) || !has(self.prefill.autoscaling) || has(self.prefill.autoscaling.target.ttftMs)"
).message("spec.prefill.autoscaling.target: prefill pods scale on ttftMs (their work is the time to first token)").field_path(".prefill.autoscaling.target"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.decode.autoscaling) || !has(self.decode.autoscaling.target.ttftMs) || !has(self.prefill) || self.prefill.replicas == 0"
).message("spec.decode.autoscaling.target: with prefill pods, decode pods scale on interTokenLatencyMs, kvCacheUtilization or waitingPerPod (ttftMs is the prefill pods' signal)").field_path(".decode.autoscaling.target"))]
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

    /// NetworkPolicies that admit only this deployment's own pods and the peers named
    /// here (off by default; they take effect where the CNI enforces them).
    #[serde(default, skip_serializing_if = "NetworkIsolationSpec::is_off")]
    pub network_policy: NetworkIsolationSpec,
}

/// NetworkPolicies for the deployment's pods: the model servers accept connections
/// from the deployment's own pods (the EndpointPicker, and each other for the NIXL
/// side channel and UCX), the EndpointPicker from them too, and both from `allowFrom`
/// on their serving and metrics ports only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!self.enabled || (has(self.allowFrom) && size(self.allowFrom) > 0)").message("networkPolicy.allowFrom must name who may call the EndpointPicker and scrape metrics (the gateway, Prometheus, the operator) when networkPolicy is enabled"))]
pub struct NetworkIsolationSpec {
    #[serde(default)]
    pub enabled: bool,

    /// Who else may connect: the gateway's and Prometheus' pods or namespaces, the
    /// operator's namespace (for the tuner's scrape of the EndpointPicker).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allow_from: Vec<NetworkPolicyPeer>,
}

impl NetworkIsolationSpec {
    fn is_off(&self) -> bool {
        *self == NetworkIsolationSpec::default()
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
    /// Whether prefill and decode pods get `kv_producer` / `kv_consumer` rather than
    /// `kv_both`.
    pub fn nixl_per_role(&self) -> bool {
        match self.kv_transfer.roles {
            KvRoles::PerRole => true,
            KvRoles::Both => false,
            KvRoles::Auto => crate::engine_version::per_role_nixl(crate::engine_version::assumed(
                &self.engine.image,
            )),
        }
    }

    /// The prefill role when it runs pods (disaggregated serving).
    pub fn active_prefill(&self) -> Option<&RoleSpec> {
        self.prefill.as_ref().filter(|p| p.replicas > 0)
    }

    /// `spec.router.scorers` as the EndpointPicker runs them: an unset LoRA-affinity
    /// weight is [`DEFAULT_LORA_AFFINITY_WEIGHT`] when adapters are served, else 0.
    pub fn scorer_weights(&self) -> ScorerWeights {
        let lora = self
            .router
            .scorers
            .lora_affinity
            .unwrap_or(if self.model.adapters.is_empty() {
                0.0
            } else {
                DEFAULT_LORA_AFFINITY_WEIGHT
            });
        ScorerWeights {
            lora_affinity: Some(lora),
            ..self.router.scorers.clone()
        }
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

impl LLMDeployment {
    /// The weights the tuner chose, while `spec.router.autoTune` is on: kept in
    /// `status.routing` so that a reconcile (or a restarted operator) renders them
    /// instead of undoing them.
    pub fn tuned_weights(&self) -> Option<ScorerWeights> {
        if !self.spec.router.auto_tune.enabled {
            return None;
        }
        let routing = self.status.as_ref()?.routing.as_ref()?;
        ScorerWeights::from_plugins(&routing.weights)
    }
}
