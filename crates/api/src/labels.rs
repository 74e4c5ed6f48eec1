//! Label and annotation keys. The role and serving labels follow llm-d so that an
//! upstream llm-d EndpointPicker also understands the pods this operator creates.

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "app.kubernetes.io/part-of";

/// `llm-d.ai/role`: `prefill`, `decode`, `prefill-decode` or `both`.
pub const ROLE: &str = "llm-d.ai/role";
/// `llm-d.ai/inference-serving: "true"` marks a pod as a model server.
pub const INFERENCE_SERVING: &str = "llm-d.ai/inference-serving";
/// `llm-d.ai/model`: the served model name (sanitised to a label value).
pub const MODEL: &str = "llm-d.ai/model";

/// Value of `app.kubernetes.io/name` on every child.
pub const APP_NAME: &str = "llmd";
/// Value of `app.kubernetes.io/managed-by` on every child.
pub const MANAGER: &str = "llmd-operator";

/// Pod template annotation carrying the hash of the KV-transfer ConfigMap, so a change
/// of the fabric rolls the model-server pods.
pub const KV_TRANSFER_HASH: &str = "llmd.dev/kv-transfer-hash";

/// Pod label: the hash of what decides whether two engines can hand each other KV
/// cache (engine image, model, KV block size, dtypes, the KV-transfer fabric).
/// The EndpointPicker pairs a prefill pod only with decode pods of the same value.
pub const KV_COMPATIBILITY: &str = "llmd.dev/kv-compatibility";
/// Pod label `"true"` on decode pods whose serving port is the routing sidecar's:
/// a P/D request is sent to it with `x-prefiller-host-port` and it runs the legs.
pub const ROUTING_SIDECAR: &str = "llmd.dev/routing-sidecar";

/// On the KV fabric probe's Jobs and pods: `server` or `sender`.
pub const FABRIC_PROBE: &str = "llmd.dev/fabric-probe";
/// On the KV fabric probe's Jobs and pods: the hash of the probe's key (the fabric
/// config, and a reprobe request).
pub const FABRIC_PROBE_KEY: &str = "llmd.dev/fabric-probe-key";
/// LLMDeployment annotation: a new value runs the KV fabric probe again.
pub const REPROBE_FABRIC: &str = "llmd.dev/reprobe-fabric";

pub const ROLE_PREFILL: &str = "prefill";
pub const ROLE_DECODE: &str = "decode";
pub const ROLE_BOTH: &str = "both";
pub const ROLE_PREFILL_DECODE: &str = "prefill-decode";
