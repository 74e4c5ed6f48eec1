//! The `<name>-epp-config` ConfigMap: the routing config in llm-d's
//! EndpointPickerConfig format (rendered by `llmd_api::endpoint_picker_config`),
//! which both our EPP and an upstream llm-d EPP read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use llmd_api::endpoint_picker_config::{CONFIG_KEY, EndpointPickerConfig};

use super::meta::{Component, Owner};

pub fn name(owner: &Owner) -> String {
    owner.child_name("epp-config")
}

/// The ConfigMap holding the config's canonical YAML.
pub fn config_map(owner: &Owner, config: &EndpointPickerConfig) -> ConfigMap {
    ConfigMap {
        metadata: owner.object_meta(name(owner), Component::EndpointPicker),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), config.to_yaml())])),
        ..ConfigMap::default()
    }
}
