//! Names, labels and metadata shared by every child object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use llmd_api::{LLMDeployment, labels};

/// The component a child object belongs to (`app.kubernetes.io/component`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Prefill,
    Decode,
    KvTransfer,
    EndpointPicker,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Decode => "decode",
            Self::KvTransfer => "kv-transfer",
            Self::EndpointPicker => "endpoint-picker",
        }
    }
}

/// Identity of the owning LLMDeployment, resolved once per reconcile.
#[derive(Clone, Debug)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub reference: OwnerReference,
}

impl Owner {
    /// `None` when the object lacks a namespace or uid (never the case for an object read
    /// from the API server).
    pub fn of(ld: &LLMDeployment) -> Option<Self> {
        Some(Self {
            name: ld.name_any(),
            namespace: ld.namespace()?,
            reference: ld.controller_owner_ref(&())?,
        })
    }

    /// `<name>-<suffix>`.
    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Labels on every child object of this deployment.
    pub fn common_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::NAME.to_string(), labels::APP_NAME.to_string()),
            (labels::INSTANCE.to_string(), self.name.clone()),
            (
                labels::COMPONENT.to_string(),
                component.as_str().to_string(),
            ),
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        ])
    }

    /// The labels a controller of this component selects its pods by (stable across
    /// upgrades, so never extended).
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::INSTANCE.to_string(), self.name.clone()),
            (
                labels::COMPONENT.to_string(),
                component.as_str().to_string(),
            ),
        ])
    }

    /// Metadata of a child: name, namespace, labels, controller owner reference.
    pub fn object_meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.common_labels(component)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// A model name as a label value: at most 63 characters of [A-Za-z0-9._-], starting
/// and ending alphanumeric.
pub fn label_value(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_value_maps_slashes_and_trims() {
        assert_eq!(
            label_value("meta-llama/Llama-3.1-8B-Instruct"),
            "meta-llama_Llama-3.1-8B-Instruct"
        );
        assert_eq!(label_value("/x/"), "x");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
    }
}
