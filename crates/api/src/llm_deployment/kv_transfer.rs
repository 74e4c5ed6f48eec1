//! The KV-cache transfer fabric shared by prefill and decode pods.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

    /// NIXL roles: PerRole gives prefill pods `kv_producer` and decode pods
    /// `kv_consumer` (vLLM 0.33 and later), Both gives every pod `kv_both` (what
    /// older versions need); Auto picks by the engine image's version tag.
    #[serde(default)]
    pub roles: KvRoles,
}

/// How NIXL roles are assigned.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvRoles {
    #[default]
    Auto,
    PerRole,
    Both,
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
            roles: KvRoles::Auto,
        }
    }
}

/// KV connector of the vLLM engine.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvConnector {
    /// vLLM's NixlConnector (roles per spec.kvTransfer.roles).
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
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UcxSpec {
    /// UCX transports (UCX_TLS), comma separated, e.g. cuda_ipc,cuda_copy,tcp or, with
    /// RDMA, sm,cuda_ipc,cuda_copy,rc,tcp. Unset: UCX picks from what each node
    /// has (RDMA included), as vLLM and llm-d leave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z_]+(,[a-z_]+)*$')").message("spec.kvTransfer.ucx.transports must be a comma-separated list of UCX transports, e.g. cuda_ipc,cuda_copy,tcp"))]
    pub transports: Option<String>,
}
