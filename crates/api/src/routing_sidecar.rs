//! What the operator and the decode-side routing sidecar (`llmd-sidecar`) agree on:
//! its ports, its flags and where it finds the pod's API credentials. The sidecar
//! owns the decode pod's serving port and the engine moves behind it, as llm-d's
//! routing sidecar does.

use crate::MODEL_SERVER_PORT;

/// The container's name in decode pods.
pub const CONTAINER: &str = "routing-sidecar";
/// The sidecar's program in the EndpointPicker image (the image's entrypoint is
/// the EndpointPicker; the sidecar container names this command).
pub const COMMAND: &str = "/usr/local/bin/llmd-sidecar";
/// Where the sidecar serves clients: the pod's serving port.
pub const PORT: i32 = MODEL_SERVER_PORT;
/// Where the engine serves behind the sidecar (llm-d's choice).
pub const ENGINE_PORT: i32 = 8200;
/// The sidecar's own metrics (`/metrics` on the serving port is the engine's).
pub const METRICS_PORT: i32 = 9095;
/// The named port of the engine container behind the sidecar.
pub const ENGINE_PORT_NAME: &str = "engine";
/// The named port of the sidecar's metrics.
pub const METRICS_PORT_NAME: &str = "sidecar-metrics";
/// Where a container's service-account credentials are mounted (Kubernetes'
/// in-cluster convention); only the sidecar container gets them.
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Command-line flags (llm-d's names where one exists).
pub mod flag {
    pub const PORT: &str = "port";
    pub const MODEL_SERVER_PORT: &str = "model-server-port";
    pub const ENABLE_SSRF_PROTECTION: &str = "enable-ssrf-protection";
    pub const PREFILL_SELECTOR: &str = "prefill-selector";
    pub const NAMESPACE: &str = "namespace";
    pub const METRICS_PORT: &str = "metrics-port";
}
