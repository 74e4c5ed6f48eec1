//! Optional NetworkPolicies (`spec.networkPolicy.enabled`): the deployment's own pods
//! reach each other on every port (the EndpointPicker its model servers and their
//! KV events, prefill and decode pods the NIXL side channel and UCX's data ports,
//! which UCX picks at run time), and the peers the spec names reach only the serving
//! and metrics ports. Nothing else gets in.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use llmd_api::endpoint_picker::{EXT_PROC_PORT, GRPC_HEALTH_PORT, HTTP_PORT, METRICS_PORT};
use llmd_api::{LLMDeploymentSpec, MODEL_SERVER_PORT, labels};

use super::meta::{Component, Owner};

/// Name of the model servers' policy.
pub fn model_servers_name(owner: &Owner) -> String {
    owner.child_name("model-servers")
}

/// Name of the EndpointPicker's policy.
pub fn endpoint_picker_name(owner: &Owner) -> String {
    owner.child_name("epp")
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn policy(
    owner: &Owner,
    name: String,
    component: Component,
    pods: LabelSelector,
    allowed: &[NetworkPolicyPeer],
    ports: &[i32],
) -> NetworkPolicy {
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(selector(BTreeMap::from([(
            labels::INSTANCE.to_string(),
            owner.name.clone(),
        )]))),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: owner.object_meta(name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![own_pods]),
                    ports: None,
                },
                NetworkPolicyIngressRule {
                    from: Some(allowed.to_vec()),
                    ports: Some(ports.iter().copied().map(tcp).collect()),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The policies a spec asks for (none unless enabled).
pub fn network_policies(owner: &Owner, spec: &LLMDeploymentSpec) -> Vec<NetworkPolicy> {
    let isolation = &spec.network_policy;
    if !isolation.enabled {
        return Vec::new();
    }
    let model_servers = selector(BTreeMap::from([
        (labels::INSTANCE.to_string(), owner.name.clone()),
        (labels::INFERENCE_SERVING.to_string(), "true".to_string()),
    ]));
    let endpoint_picker = owner.selector_labels(Component::EndpointPicker);
    // The serving port, and the routing sidecar's metrics where decode pods run one.
    let mut serving = vec![MODEL_SERVER_PORT];
    if super::routing_sidecar::enabled(spec) {
        serving.push(llmd_api::routing_sidecar::METRICS_PORT);
    }
    vec![
        policy(
            owner,
            model_servers_name(owner),
            Component::Decode,
            model_servers,
            &isolation.allow_from,
            &serving,
        ),
        policy(
            owner,
            endpoint_picker_name(owner),
            Component::EndpointPicker,
            selector(endpoint_picker),
            &isolation.allow_from,
            &[EXT_PROC_PORT, GRPC_HEALTH_PORT, HTTP_PORT, METRICS_PORT].map(i32::from),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicyIngressRule;

    use super::*;
    use crate::build::tests::{PD_NIXL, sample};

    fn ports(rule: &NetworkPolicyIngressRule) -> Option<Vec<i32>> {
        rule.ports.as_ref().map(|ports| {
            ports
                .iter()
                .filter_map(|p| match p.port {
                    Some(IntOrString::Int(n)) => Some(n),
                    _ => None,
                })
                .collect()
        })
    }

    #[test]
    fn own_pods_reach_everything_and_named_peers_only_serving_and_metrics_ports() {
        let mut ld = sample(PD_NIXL);
        let owner = Owner::of(&ld).expect("owner");
        assert!(
            network_policies(&owner, &ld.spec).is_empty(),
            "off by default"
        );
        let gateway = NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                "gateway".to_string(),
            )]))),
            ..NetworkPolicyPeer::default()
        };
        ld.spec.network_policy.enabled = true;
        ld.spec.network_policy.allow_from = vec![gateway.clone()];
        let policies = network_policies(&owner, &ld.spec);
        let names: Vec<_> = policies
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, ["llama-pd-model-servers", "llama-pd-epp"]);

        // P/D: the decode pods' routing sidecars serve their metrics on 9095.
        let expected_ports = [vec![8000, 9095], vec![9002, 9003, 8080, 9090]];
        for (policy, want) in policies.iter().zip(expected_ports) {
            let spec = policy.spec.as_ref().expect("spec");
            assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
            let rules = spec.ingress.as_ref().expect("ingress");
            // The deployment's own pods (NIXL side channel, UCX ports, KV events): all.
            let own = rules[0].from.as_ref().expect("from")[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone())
                .expect("own pods");
            assert_eq!(
                own,
                BTreeMap::from([(labels::INSTANCE.into(), "llama-pd".into())])
            );
            assert_eq!(ports(&rules[0]), None, "every port");
            assert_eq!(rules[1].from, Some(vec![gateway.clone()]));
            assert_eq!(ports(&rules[1]), Some(want));
        }
        let model_servers = policies[0]
            .spec
            .as_ref()
            .and_then(|s| s.pod_selector.as_ref())
            .and_then(|s| s.match_labels.clone())
            .expect("selector");
        assert_eq!(model_servers[labels::INFERENCE_SERVING], "true");
    }
}
