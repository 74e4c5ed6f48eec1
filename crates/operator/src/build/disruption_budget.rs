//! PodDisruptionBudgets: voluntary disruptions (a node drain, a cluster upgrade)
//! take the pods of one workload down one at a time, so a drain never empties a role
//! or the EndpointPicker at once, and never blocks forever on a single-pod role.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{Component, Owner};

/// The budget of `component`'s pods, named like its workload.
pub fn pod_disruption_budget(
    owner: &Owner,
    name: String,
    component: Component,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owner.object_meta(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(owner.selector_labels(component)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
