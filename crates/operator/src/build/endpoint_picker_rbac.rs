//! The EndpointPicker's identity and least-privilege access: a ServiceAccount, a Role
//! that may read pods and inferencepools in the namespace and its own config
//! ConfigMap (no other), and the binding.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use llmd_api::inference_pool;

use super::meta::{Component, Owner};
use super::pod_parts::{self, read_rule};
use super::{endpoint_picker, endpoint_picker_config};

pub fn service_account(owner: &Owner) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.object_meta(endpoint_picker::name(owner), Component::EndpointPicker),
        ..ServiceAccount::default()
    }
}

/// Read access to one object only (list and watch need a field selector on its name).
fn read_one_rule(group: &str, resource: &str, name: String) -> PolicyRule {
    PolicyRule {
        resource_names: Some(vec![name]),
        ..read_rule(group, resource)
    }
}

pub fn role(owner: &Owner) -> Role {
    Role {
        metadata: owner.object_meta(endpoint_picker::name(owner), Component::EndpointPicker),
        rules: Some(vec![
            read_rule("", "pods"),
            read_one_rule("", "configmaps", endpoint_picker_config::name(owner)),
            read_rule(inference_pool::GROUP, inference_pool::PLURAL),
        ]),
    }
}

pub fn role_binding(owner: &Owner) -> RoleBinding {
    pod_parts::role_binding(
        owner,
        endpoint_picker::name(owner),
        Component::EndpointPicker,
    )
}
