//! The model to serve and the vLLM engine that serves it.

use k8s_openapi::api::core::v1::{EnvVar, PodSecurityContext};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::images::DEFAULT_ENGINE_IMAGE;

/// Flags the operator derives from the spec; `spec.engine.args` may not set them.
pub const MANAGED_ENGINE_FLAGS: [&str; 6] = [
    "--port",
    "--model",
    "--served-model-name",
    "--tensor-parallel-size",
    "--data-parallel-size",
    "--kv-transfer-config",
];

/// How many adapters one engine holds at once (vLLM's `--max-loras`) unless
/// `spec.model.maxLoras` says otherwise.
pub const DEFAULT_MAX_LORAS: u32 = 4;

/// Where the claim of a pvc:// adapter is mounted in engine pods (`<mount>/<claim>`).
pub const ADAPTER_MOUNT: &str = "/adapters";

/// The pod condition (and readiness gate) the operator sets True once an engine has
/// loaded every adapter of `spec.model.adapters`.
pub const ADAPTERS_LOADED_CONDITION: &str = "llmd.dev/adapters-loaded";

/// The model to serve.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.adapters) || size(self.adapters) <= (has(self.maxLoras) ? self.maxLoras : 4)").message("spec.model.adapters: more adapters than spec.model.maxLoras (vLLM's --max-loras, default 4) lets an engine hold at once; raise maxLoras (which restarts the pods)"))]
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

    /// A Secret in the same namespace holding a Hugging Face token, for gated models:
    /// the engine gets it as HF_TOKEN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,

    /// A PersistentVolumeClaim in the same namespace for the download cache (HF_HOME),
    /// so a restarted pod does not download the weights again (ReadWriteMany to share
    /// it between pods). Without it the cache is an emptyDir of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.model.cacheClaim must be a PersistentVolumeClaim name"))]
    pub cache_claim: Option<String>,

    /// LoRA adapters served beside the base model: clients name an adapter in the
    /// OpenAI `model` field. The engines run with vLLM's `--enable-lora` and
    /// `--max-loras` and runtime LoRA updating; the operator loads each adapter into
    /// every engine through vLLM's `/v1/load_lora_adapter` (and unloads removed ones),
    /// so adding or removing an adapter restarts no pod. A new pod is Ready once its
    /// adapters are loaded (readiness gate `llmd.dev/adapters-loaded`). The
    /// EndpointPicker sends an adapter's requests only to pods that list it in
    /// `/v1/models`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("spec.model.adapters: adapter names must be unique"))]
    pub adapters: Vec<LoraAdapterSpec>,

    /// How many adapters an engine holds at once (vLLM's `--max-loras`; default 4).
    /// `spec.model.adapters` may list no more. Changing it restarts the pods; adding
    /// adapters up to it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub max_loras: Option<u32>,
}

impl ModelSpec {
    /// vLLM's `--max-loras` for this spec.
    pub fn max_loras(&self) -> u32 {
        self.max_loras.unwrap_or(DEFAULT_MAX_LORAS)
    }

    /// Where vLLM loads adapter `a` from: the Hugging Face repository of an hf://
    /// source, the path under the claim's mount of a pvc:// one.
    pub fn adapter_path(a: &LoraAdapterSpec) -> String {
        match a.source.strip_prefix("pvc://") {
            Some(rest) => format!("{ADAPTER_MOUNT}/{rest}")
                .trim_end_matches('/')
                .to_string(),
            None => a
                .source
                .strip_prefix("hf://")
                .unwrap_or(&a.source)
                .to_string(),
        }
    }

    /// The PersistentVolumeClaims pvc:// adapters come from, each once, in order.
    pub fn adapter_claims(&self) -> Vec<&str> {
        let claims: std::collections::BTreeSet<&str> = self
            .adapters
            .iter()
            .filter_map(|a| a.source.strip_prefix("pvc://"))
            .map(|rest| rest.split_once('/').map_or(rest, |(claim, _)| claim))
            .collect();
        claims.into_iter().collect()
    }
}

/// One LoRA adapter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoraAdapterSpec {
    /// The name clients send in the OpenAI `model` field.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9][-A-Za-z0-9_./]*$')").message("spec.model.adapters[].name must be letters, digits and -_./ (no spaces or '=')"))]
    pub name: String,

    /// Where the adapter comes from: hf://<org>/<adapter> (vLLM downloads it), or
    /// pvc://<claim>/<path> (a PersistentVolumeClaim in the same namespace, mounted
    /// read-only into the engine pods at /adapters/<claim>; adding an adapter from a
    /// claim the pods already mount restarts no pod, a new claim rolls them).
    #[schemars(length(min = 6, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^hf://[^\\\\s=]+$') || self.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\\\\s=]*)?$')").message("spec.model.adapters[].source must be hf://<org>/<adapter> or pvc://<claim>/<path> (s3:// and oci:// adapters are not supported)"))]
    pub source: String,
}

/// A key of a Secret in the LLMDeployment's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.model.tokenSecret.name must be a Secret name"))]
    pub name: String,

    /// The key that holds the token.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_token_key() -> String {
    "HF_TOKEN".to_string()
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
        "self.all(a, !['--port', '--model', '--served-model-name', '--tensor-parallel-size', '--data-parallel-size', '--kv-transfer-config'].exists(f, a == f || a.startsWith(f + '=') || a.startsWith(f + '.')))"
    ).message("spec.engine.args must not set --port, --model, --served-model-name, --tensor-parallel-size, --data-parallel-size or --kv-transfer-config: the operator derives them from the spec"))]
    pub args: Vec<String>,

    /// Extra environment variables for every model-server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// The model-server pods' security context, e.g. `runAsNonRoot: true` and
    /// `runAsUser` for an image that runs as a non-root user (vLLM's own runs as
    /// root). The RuntimeDefault seccomp profile applies unless this sets another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
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
            pod_security_context: None,
        }
    }
}
