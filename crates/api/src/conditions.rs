//! Condition types and reasons of an `LLMDeployment`.

pub const READY: &str = "Ready";
pub const PREFILL_READY: &str = "PrefillReady";
pub const DECODE_READY: &str = "DecodeReady";
pub const KV_TRANSFER_READY: &str = "KVTransferReady";
pub const ENDPOINT_PICKER_READY: &str = "EndpointPickerReady";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Every condition type, in the order status lists them.
pub const ALL: [&str; 7] = [
    READY,
    PREFILL_READY,
    DECODE_READY,
    KV_TRANSFER_READY,
    ENDPOINT_PICKER_READY,
    PROGRESSING,
    DEGRADED,
];

pub mod reason {
    pub const ALL_READY: &str = "AllComponentsReady";
    pub const COMPONENTS_NOT_READY: &str = "ComponentsNotReady";
    pub const PODS_READY: &str = "PodsReady";
    pub const PODS_NOT_READY: &str = "PodsNotReady";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const NOT_CONFIGURED: &str = "NotConfigured";
    pub const AGGREGATED: &str = "AggregatedServing";
    pub const NIXL_CONFIGURED: &str = "NixlConfigured";
    pub const CONNECTOR_DISABLED: &str = "ConnectorDisabled";
    pub const KV_PEERS_NOT_READY: &str = "KVPeersNotReady";
    /// A real NIXL transfer between a prefill and a decode node succeeded.
    pub const KV_TRANSFER_PROVEN: &str = "KVTransferProven";
    /// The fabric probe is running; the EndpointPicker serves whole requests.
    pub const KV_TRANSFER_PROBING: &str = "KVTransferProbing";
    /// The fabric probe failed (its message names the cause); whole requests only.
    pub const KV_TRANSFER_PROBE_FAILED: &str = "KVTransferProbeFailed";
    pub const RECONCILED: &str = "Reconciled";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// A replica spans nodes and the cluster does not serve LeaderWorkerSets.
    pub const LEADER_WORKER_SET_NOT_INSTALLED: &str = "LeaderWorkerSetNotInstalled";
    /// An object with a child's name exists that this LLMDeployment does not control;
    /// it is left alone.
    pub const CHILD_CONFLICT: &str = "ChildConflict";
    pub const AS_EXPECTED: &str = "AsExpected";
}
