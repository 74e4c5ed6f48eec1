//! llm-d's `EndpointPickerConfig` format (the subset this project reads and writes).
//!
//! ```yaml
//! apiVersion: llm-d.ai/v1alpha1
//! kind: EndpointPickerConfig
//! plugins:
//! - type: prefix-cache-scorer
//!   parameters: {blockSizeTokens: 16}
//! schedulingProfiles:
//! - name: decode
//!   plugins:
//!   - pluginRef: prefix-cache-scorer
//!     weight: 3
//! ```

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "llm-d.ai/v1alpha1";
/// The older group upstream configs still use; accepted when reading.
pub const LEGACY_API_VERSION: &str = "inference.networking.x-k8s.io/v1alpha1";
pub const KIND: &str = "EndpointPickerConfig";

/// Plugin type names.
pub mod plugin {
    pub const PREFIX_CACHE_SCORER: &str = "prefix-cache-scorer";
    pub const QUEUE_SCORER: &str = "queue-scorer";
    pub const KV_CACHE_UTILIZATION_SCORER: &str = "kv-cache-utilization-scorer";
    pub const ACTIVE_REQUEST_SCORER: &str = "active-request-scorer";
    pub const SESSION_AFFINITY_SCORER: &str = "session-affinity-scorer";
    pub const DECODE_FILTER: &str = "decode-filter";
    pub const PREFILL_FILTER: &str = "prefill-filter";
    pub const MAX_SCORE_PICKER: &str = "max-score-picker";
    pub const DISAGG_PROFILE_HANDLER: &str = "disagg-profile-handler";
    pub const SINGLE_PROFILE_HANDLER: &str = "single-profile-handler";
    pub const PD_DECIDER: &str = "prefix-based-pd-decider";
}

/// Scheduling profile names.
pub mod profile {
    pub const DECODE: &str = "decode";
    pub const PREFILL: &str = "prefill";
}

/// The whole config file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
    #[serde(default)]
    pub scheduling_profiles: Vec<SchedulingProfile>,
}

/// One plugin instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PluginSpec {
    /// Plugin type, e.g. `queue-scorer`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Instance name; defaults to the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Type-specific parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

impl PluginSpec {
    /// The name profiles refer to this plugin by.
    pub fn instance_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.plugin_type)
    }
}

/// A scheduling profile: filters, weighted scorers and a picker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SchedulingProfile {
    pub name: String,
    #[serde(default)]
    pub plugins: Vec<ProfilePlugin>,
}

/// A reference from a profile to a plugin, with a weight for scorers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProfilePlugin {
    pub plugin_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}
