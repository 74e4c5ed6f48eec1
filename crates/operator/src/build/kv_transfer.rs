//! The `<name>-kv-transfer` ConfigMap: the one KV-transfer fabric both roles share.
//!
//! Its keys are environment variable names: the model-server containers load it with
//! `envFrom`, and each role passes its own key to vLLM
//! (`--kv-transfer-config $(LLMD_KV_TRANSFER_CONFIG_PREFILL)` or `..._DECODE`: the
//! NIXL role differs per role from vLLM 0.33), so the ConfigMap is the single source
//! of truth. Its hash goes into the pod template so a change of the fabric rolls the
//! pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use llmd_api::content_hash::content_hash;
use llmd_api::{KvBufferDevice, KvTransferSpec};
use serde_json::json;

use super::meta::{Component, Owner};
use super::model_server::Role;

/// Env vars carrying vLLM's `--kv-transfer-config` JSON of prefill and of decode pods.
pub const KV_TRANSFER_CONFIG_ENVS: [&str; 2] = [
    "LLMD_KV_TRANSFER_CONFIG_PREFILL",
    "LLMD_KV_TRANSFER_CONFIG_DECODE",
];

/// The env var with `role`'s `--kv-transfer-config`.
pub fn config_env(role: Role) -> &'static str {
    match role {
        Role::Prefill => KV_TRANSFER_CONFIG_ENVS[0],
        Role::Decode => KV_TRANSFER_CONFIG_ENVS[1],
    }
}

/// `role`'s NIXL role: `kv_producer` / `kv_consumer` with `per_role`, else `kv_both`.
pub fn kv_role(role: Role, per_role: bool) -> &'static str {
    match (per_role, role) {
        (false, _) => "kv_both",
        (true, Role::Prefill) => "kv_producer",
        (true, Role::Decode) => "kv_consumer",
    }
}
pub const SIDE_CHANNEL_HOST_ENV: &str = "VLLM_NIXL_SIDE_CHANNEL_HOST";
pub const SIDE_CHANNEL_PORT_ENV: &str = "VLLM_NIXL_SIDE_CHANNEL_PORT";
pub const UCX_TLS_ENV: &str = "UCX_TLS";
pub const UCX_SOCKADDR_TLS_PRIORITY_ENV: &str = "UCX_SOCKADDR_TLS_PRIORITY";

/// Name of the ConfigMap.
pub fn name(owner: &Owner) -> String {
    owner.child_name("kv-transfer")
}

/// vLLM's `--kv-transfer-config` for the NixlConnector with NIXL role `kv_role`.
pub fn vllm_kv_transfer_config(spec: &KvTransferSpec, kv_role: &str) -> serde_json::Value {
    let mut config = json!({
        "kv_connector": "NixlConnector",
        "kv_role": kv_role,
        "kv_connector_extra_config": {
            "backends": spec.backends.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
        },
    });
    if let (Some(device), Some(obj)) = (spec.buffer_device, config.as_object_mut()) {
        let device = match device {
            KvBufferDevice::Cuda => "cuda",
            KvBufferDevice::Cpu => "cpu",
        };
        obj.insert("kv_buffer_device".to_string(), json!(device));
    }
    config
}

/// The ConfigMap's data.
pub fn data(spec: &KvTransferSpec, per_role: bool) -> BTreeMap<String, String> {
    let config = |role| {
        (
            config_env(role).to_string(),
            vllm_kv_transfer_config(spec, kv_role(role, per_role)).to_string(),
        )
    };
    let mut data = BTreeMap::from([
        config(Role::Prefill),
        config(Role::Decode),
        (
            SIDE_CHANNEL_PORT_ENV.to_string(),
            spec.side_channel_port.to_string(),
        ),
        (UCX_SOCKADDR_TLS_PRIORITY_ENV.to_string(), "tcp".to_string()),
    ]);
    // Unset, UCX picks from what each node has (a fixed list could rule out RDMA).
    if let Some(transports) = &spec.ucx.transports {
        data.insert(UCX_TLS_ENV.to_string(), transports.clone());
    }
    data
}

/// Content hash of the data, for the pod-template annotation.
pub fn hash(data: &BTreeMap<String, String>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in data {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    content_hash(&bytes)
}

/// The ConfigMap.
pub fn config_map(owner: &Owner, spec: &KvTransferSpec, per_role: bool) -> ConfigMap {
    ConfigMap {
        metadata: owner.object_meta(name(owner), Component::KvTransfer),
        data: Some(data(spec, per_role)),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmd_api::NixlBackend;

    #[test]
    fn nixl_config_lists_backends_and_buffer_device() {
        let spec = KvTransferSpec {
            backends: vec![NixlBackend::Ucx, NixlBackend::GdsMt],
            buffer_device: Some(KvBufferDevice::Cpu),
            ..KvTransferSpec::default()
        };
        assert_eq!(
            vllm_kv_transfer_config(&spec, "kv_both"),
            json!({"kv_connector": "NixlConnector", "kv_role": "kv_both",
                   "kv_buffer_device": "cpu",
                   "kv_connector_extra_config": {"backends": ["UCX", "GDS_MT"]}})
        );
    }

    #[test]
    fn hash_changes_with_any_value() {
        let base = data(&KvTransferSpec::default(), true);
        let mut other_spec = KvTransferSpec::default();
        other_spec.ucx.transports = Some("sm,cuda_ipc,cuda_copy,rc,tcp".into());
        assert_ne!(hash(&base), hash(&data(&other_spec, true)));
        assert_ne!(hash(&base), hash(&data(&KvTransferSpec::default(), false)));
        assert_eq!(hash(&base), hash(&data(&KvTransferSpec::default(), true)));
    }
}
