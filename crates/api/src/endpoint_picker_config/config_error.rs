//! Why an EndpointPickerConfig was refused: one variant per rule, each message
//! naming what to fix.

use super::{API_VERSION, KIND, LEGACY_API_VERSION};

/// Why a config was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("not valid EndpointPickerConfig YAML: {0}")]
    Yaml(String),
    #[error("apiVersion {0:?} is not {API_VERSION} (or {LEGACY_API_VERSION})")]
    ApiVersion(String),
    #[error("kind {0:?} is not {KIND}")]
    Kind(String),
    #[error("plugin type {0:?} is not supported by llmd-epp")]
    UnknownPluginType(String),
    #[error("plugin name {0:?} is used twice")]
    DuplicatePlugin(String),
    #[error("plugin {plugin:?}: bad parameters: {reason}")]
    Parameters { plugin: String, reason: String },
    #[error("profile {profile:?} refers to unknown plugin {plugin:?}")]
    UnknownRef { profile: String, plugin: String },
    #[error("profile {profile:?}: weight of {plugin:?} must be a finite number >= 0")]
    BadWeight { profile: String, plugin: String },
    #[error("profile {profile:?}: {plugin:?} is not a scorer and takes no weight")]
    WeightOnNonScorer { profile: String, plugin: String },
    #[error("no scheduling profile")]
    NoProfile,
    #[error("profile names must be unique; {0:?} repeats")]
    DuplicateProfile(String),
    #[error("disagg-profile-handler needs profiles `decode` and `prefill`")]
    DisaggProfiles,
    #[error("prefix-cache scorers disagree on blockSizeTokens")]
    ConflictingPrefixParams,
    #[error(
        "profile {profile:?}: role filter {role:?} must come before {gate:?}, which keeps \
         endpoints by comparing them with the candidates it is given"
    )]
    RoleFilterAfterGate {
        profile: String,
        role: String,
        gate: String,
    },
}
