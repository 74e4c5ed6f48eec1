//! The EndpointPicker's identity and least-privilege access: a ServiceAccount, a Role
//! that may read pods and inferencepools in the namespace and its own config
//! ConfigMap (no other), and the binding.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use llmd_api::inference_pool;

use super::meta::{Component, Owner};
use super::{endpoint_picker, endpoint_picker_config};

const READ: [&str; 3] = ["get", "list", "watch"];

pub fn service_account(owner: &Owner) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.object_meta(endpoint_picker::name(owner), Component::EndpointPicker),
        ..ServiceAccount::default()
    }
}

fn read_rule(group: &str, resource: &str) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        verbs: READ.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
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
    let name = endpoint_picker::name(owner);
    RoleBinding {
        metadata: owner.object_meta(name.clone(), Component::EndpointPicker),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(owner.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
