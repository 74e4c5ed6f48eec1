//! `llmd-operator crd`: the CustomResourceDefinitions this operator owns, as YAML.

use kube::CustomResourceExt;
use llmd_api::LLMDeployment;

/// The CRD YAML committed under `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&LLMDeployment::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `make crds` regenerates the file; this fails when the Rust types and the
    /// committed CRD drift apart.
    #[test]
    fn committed_crd_matches_the_rust_types() {
        let committed = include_str!("../../../crds/llmd.dev_llmdeployments.yaml");
        let generated = crd_yaml().expect("CRD renders");
        assert!(
            committed == generated,
            "crds/llmd.dev_llmdeployments.yaml is stale: run `make crds` and commit it"
        );
    }

    #[test]
    fn crd_has_printer_columns_short_name_and_status() {
        let crd = LLMDeployment::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["llmd".to_string()]));
        let version = &crd.spec.versions[0];
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        for column in ["Ready", "Prefill", "Decode", "Router", "Age"] {
            assert!(columns.contains(&column), "missing column {column}");
        }
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
}
