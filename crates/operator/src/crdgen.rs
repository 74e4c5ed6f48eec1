//! `llmd-operator crd`: the CustomResourceDefinitions this operator owns, as YAML.

use kube::CustomResourceExt;
use llmd_api::LLMDeployment;

/// The CRD YAML committed under `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&LLMDeployment::crd())
}
