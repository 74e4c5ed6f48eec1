//! Checks of a spec that the schema cannot express. A failure is reported as
//! `Degraded=True, reason InvalidSpec` and the reconcile waits for a change.

use llmd_api::conditions::reason;
use llmd_api::{KvConnector, LLMDeploymentSpec, RoleSpec};

use crate::build::kv_transfer;
use crate::conditions::Failure;

/// Env vars the operator sets on model servers when the NIXL fabric is on.
const MANAGED_ENV: [&str; 6] = [
    kv_transfer::KV_TRANSFER_CONFIG_ENVS[0],
    kv_transfer::KV_TRANSFER_CONFIG_ENVS[1],
    kv_transfer::SIDE_CHANNEL_HOST_ENV,
    kv_transfer::SIDE_CHANNEL_PORT_ENV,
    kv_transfer::UCX_TLS_ENV,
    kv_transfer::UCX_SOCKADDR_TLS_PRIORITY_ENV,
];

/// The spec's problems as one `InvalidSpec` failure; `None` when it can be served.
pub fn failure(spec: &LLMDeploymentSpec) -> Option<Failure> {
    let problems = problems(spec);
    (!problems.is_empty()).then(|| Failure {
        reason: reason::INVALID_SPEC,
        message: problems.join("; "),
    })
}

/// The roles whose replicas span nodes, each described ("spec.decode: 16 GPUs per
/// replica ... 2 pods"); empty when every replica is one pod.
pub fn multi_node_roles(spec: &LLMDeploymentSpec) -> Vec<String> {
    let roles = [
        ("spec.prefill", spec.active_prefill()),
        ("spec.decode", Some(&spec.decode)),
    ];
    roles
        .into_iter()
        .filter_map(|(field, role)| {
            let role = role?;
            let layout = role.layout();
            let p = &role.parallelism;
            layout.multi_node().then(|| {
                format!(
                    "{field} needs {} GPUs per replica (tensor {} x pipeline {} x data {}), more than {field}.gpusPerNode {}: each replica is a group of {} pods",
                    p.gpus_per_replica(),
                    p.tensor,
                    p.pipeline,
                    p.data,
                    layout.gpus_per_pod,
                    layout.nodes
                )
            })
        })
        .collect()
}

/// `Degraded` when a replica spans nodes and LeaderWorkerSets are not served.
pub fn leader_worker_set_missing(spec: &LLMDeploymentSpec) -> Option<Failure> {
    let roles = multi_node_roles(spec);
    (!roles.is_empty()).then(|| Failure {
        reason: reason::LEADER_WORKER_SET_NOT_INSTALLED,
        message: format!(
            "{}, which runs as a LeaderWorkerSet, and this cluster does not serve leaderworkerset.x-k8s.io/v1: install LeaderWorkerSet (kubernetes-sigs/lws); the deployment proceeds once it is served",
            roles.join("; ")
        ),
    })
}

/// Data-parallel ranks of a replica spanning nodes must spread evenly over them.
fn data_parallel_spread(problems: &mut Vec<String>, field: &str, role: &RoleSpec) {
    let layout = role.layout();
    let data = role.parallelism.data;
    if layout.multi_node() && data > 1 && layout.nodes % data != 0 && data % layout.nodes != 0 {
        problems.push(format!(
            "{field}.parallelism.data: {data} data-parallel ranks do not spread evenly over the {} nodes a replica spans ({field}.gpusPerNode {}): make one a multiple of the other",
            layout.nodes, layout.gpus_per_pod
        ));
    }
}

/// Every problem found, each naming the field; empty when the spec can be served.
pub fn problems(spec: &LLMDeploymentSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(prefill) = spec.active_prefill() {
        data_parallel_spread(&mut problems, "spec.prefill", prefill);
        gpu_count(&mut problems, "spec.prefill", prefill);
        quantities(
            &mut problems,
            "spec.prefill.resources",
            prefill.resources.as_ref(),
        );
    }
    data_parallel_spread(&mut problems, "spec.decode", &spec.decode);
    gpu_count(&mut problems, "spec.decode", &spec.decode);
    quantities(
        &mut problems,
        "spec.decode.resources",
        spec.decode.resources.as_ref(),
    );
    quantities(
        &mut problems,
        "spec.router.resources",
        spec.router.resources.as_ref(),
    );
    quantities(
        &mut problems,
        "spec.router.sidecar.resources",
        spec.router.sidecar.resources.as_ref(),
    );
    if let (Some(prefill), KvConnector::Nixl) = (spec.active_prefill(), spec.effective_connector())
    {
        let version = llmd_api::engine_version::assumed(&spec.engine.image);
        problems.extend(llmd_api::engine_version::tensor_parallel_problem(
            version,
            prefill.parallelism.tensor,
            spec.decode.parallelism.tensor,
        ));
    }
    if spec.effective_connector() == KvConnector::Nixl {
        side_channel_range(&mut problems, spec);
        for var in &spec.engine.env {
            if MANAGED_ENV.contains(&var.name.as_str()) {
                problems.push(format!(
                    "spec.engine.env sets {}, which the operator derives from spec.kvTransfer",
                    var.name
                ));
            }
        }
    }
    problems
}

/// The ports the pods serve on besides NIXL's side channel.
const OTHER_POD_PORTS: [(i32, &str); 5] = [
    (llmd_api::MODEL_SERVER_PORT, "the model-server port"),
    (
        llmd_api::routing_sidecar::ENGINE_PORT,
        "the engine port behind the routing sidecar",
    ),
    (
        llmd_api::routing_sidecar::METRICS_PORT,
        "the routing sidecar's metrics port",
    ),
    (llmd_api::KV_EVENTS_PORT, "the KV-events port"),
    (llmd_api::KV_EVENTS_REPLAY_PORT, "the KV-events replay port"),
];

/// Each data-parallel rank has its own side-channel port (the base plus the rank):
/// the range must stay below 65536 and clear of the pods' other ports.
fn side_channel_range(problems: &mut Vec<String>, spec: &LLMDeploymentSpec) {
    let base = spec.kv_transfer.side_channel_port;
    let roles = spec.active_prefill().into_iter().chain([&spec.decode]);
    let ranks = roles.map(|r| r.parallelism.data.max(1)).max().unwrap_or(1);
    let last = base + ranks - 1;
    if last > 65535 {
        problems.push(format!(
            "spec.kvTransfer.sideChannelPort {base} with {ranks} data-parallel ranks needs ports up to {last}, beyond 65535"
        ));
    }
    for (port, what) in OTHER_POD_PORTS {
        if !(base..=last).contains(&port) {
            continue;
        }
        problems.push(if ranks == 1 {
            format!("spec.kvTransfer.sideChannelPort {base} is {what}")
        } else {
            format!(
                "spec.kvTransfer.sideChannelPort {base}: the {ranks} data-parallel ranks' side-channel ports {base}-{last} include {what} {port}"
            )
        });
    }
}

/// Is `text` a Kubernetes quantity: a decimal number with an optional binary (Ki..Ei),
/// decimal (n, u, m, k, M..E) or exponent (e3, E-2) suffix? The CRD schema cannot
/// check this (quantities are int-or-string there), and the API server answers a bad
/// one in a StatefulSet with a 500 rather than a validation error.
pub fn is_quantity(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_len = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let dots = number.chars().filter(|&c| c == '.').count();
    if digits == 0 || dots > 1 {
        return false;
    }
    const SUFFIXES: [&str; 16] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    let Some(exponent) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    !exponent.is_empty() && exponent.chars().all(|c| c.is_ascii_digit())
}

fn quantities(
    problems: &mut Vec<String>,
    field: &str,
    resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
) {
    let Some(resources) = resources else {
        return;
    };
    for (list_name, list) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        for (name, quantity) in list.iter().flatten() {
            if !is_quantity(&quantity.0) {
                problems.push(format!(
                    "{field}.{list_name}.{name}: {:?} is not a quantity (e.g. 500m, 4, 16Gi)",
                    quantity.0
                ));
            }
        }
    }
}

/// A GPU count set in resources must match what parallelism needs.
fn gpu_count(problems: &mut Vec<String>, field: &str, role: &RoleSpec) {
    let Some(resources) = &role.resources else {
        return;
    };
    let needed = role.layout().gpus_per_pod;
    for (list_name, list) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        let Some(quantity) = list.as_ref().and_then(|l| l.get(&role.gpu_resource_name)) else {
            continue;
        };
        if quantity.0.parse::<i64>().ok() != Some(needed) {
            problems.push(format!(
                "{field}.resources.{list_name} sets {}: {} but each pod needs {needed} (tensor {} x pipeline {} x data {}{})",
                role.gpu_resource_name,
                quantity.0,
                role.parallelism.tensor,
                role.parallelism.pipeline,
                role.parallelism.data,
                if role.layout().multi_node() {
                    " over gpusPerNode"
                } else {
                    ""
                }
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::build::tests::{AGGREGATED, PD_NIXL, sample};

    #[test]
    fn samples_have_no_problems() {
        assert!(problems(&sample(AGGREGATED).spec).is_empty());
        assert!(problems(&sample(PD_NIXL).spec).is_empty());
    }

    #[test]
    fn a_tensor_parallel_pair_the_engine_version_cannot_serve_names_both_fields() {
        let mut spec = sample(PD_NIXL).spec;
        if let Some(prefill) = spec.prefill.as_mut() {
            prefill.parallelism.tensor = 4;
            prefill.resources = None;
        }
        spec.decode.parallelism.tensor = 2;
        spec.decode.resources = None;
        assert!(problems(&spec).is_empty(), "vLLM 0.33 serves 4 -> 2");
        spec.engine.image = "vllm/vllm-openai:v0.11.0".into();
        let found = problems(&spec);
        assert!(
            found
                .iter()
                .any(|p| p.contains("spec.decode.parallelism.tensor (2)")
                    && p.contains("spec.prefill.parallelism.tensor (4)")
                    && p.contains("vLLM 0.11.0")),
            "{found:?}"
        );
    }

    #[test]
    fn gpu_count_must_match_parallelism() {
        let mut spec = sample(AGGREGATED).spec;
        spec.decode.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "nvidia.com/gpu".to_string(),
                Quantity("1".into()),
            )])),
            ..ResourceRequirements::default()
        });
        assert_eq!(
            problems(&spec),
            [
                "spec.decode.resources.limits sets nvidia.com/gpu: 1 but each pod needs 2 (tensor 2 x pipeline 1 x data 1)"
            ]
        );
    }

    #[test]
    fn a_replica_spanning_nodes_is_described_and_its_data_ranks_must_spread_evenly() {
        let mut spec = sample(AGGREGATED).spec;
        assert!(multi_node_roles(&spec).is_empty());
        assert!(leader_worker_set_missing(&spec).is_none());
        spec.decode.parallelism.tensor = 8;
        spec.decode.parallelism.pipeline = 2;
        spec.decode.gpus_per_node = Some(8);
        assert_eq!(
            multi_node_roles(&spec),
            [
                "spec.decode needs 16 GPUs per replica (tensor 8 x pipeline 2 x data 1), more than spec.decode.gpusPerNode 8: each replica is a group of 2 pods"
            ]
        );
        let missing = leader_worker_set_missing(&spec).expect("Degraded");
        assert_eq!(missing.reason, reason::LEADER_WORKER_SET_NOT_INSTALLED);
        assert!(
            missing.message.contains("install LeaderWorkerSet"),
            "{}",
            missing.message
        );
        assert!(problems(&spec).is_empty());
        // 3 data-parallel replicas of 8 GPUs over 8-GPU nodes: 3 nodes, even.
        spec.decode.parallelism = llmd_api::ParallelismSpec {
            tensor: 8,
            pipeline: 1,
            data: 3,
        };
        assert!(problems(&spec).is_empty());
        // 3 ranks of 4 GPUs over 8-GPU nodes: 12 GPUs need 2 nodes, 3 ranks do
        // not split over 2.
        spec.decode.parallelism.tensor = 4;
        assert_eq!(
            problems(&spec),
            [
                "spec.decode.parallelism.data: 3 data-parallel ranks do not spread evenly over the 2 nodes a replica spans (spec.decode.gpusPerNode 8): make one a multiple of the other"
            ]
        );
        // A GPU count in resources is per pod, that is per node.
        spec.decode.parallelism.data = 4;
        spec.decode.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "nvidia.com/gpu".to_string(),
                Quantity("16".into()),
            )])),
            ..ResourceRequirements::default()
        });
        assert_eq!(
            problems(&spec),
            [
                "spec.decode.resources.limits sets nvidia.com/gpu: 16 but each pod needs 8 (tensor 4 x pipeline 1 x data 4 over gpusPerNode)"
            ]
        );
    }

    #[test]
    fn quantities_follow_kubernetes_syntax() {
        for good in [
            "1", "500m", "0.5", "16Gi", "1e3", "2E-2", "+1", "100M", ".5",
        ] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["lots", "", "1.2.3", "16GB", "1e", "Gi", "-", "5 m"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let mut spec = sample(AGGREGATED).spec;
        spec.router.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_string(),
                Quantity("lots".into()),
            )])),
            ..ResourceRequirements::default()
        });
        assert_eq!(
            problems(&spec),
            ["spec.router.resources.requests.cpu: \"lots\" is not a quantity (e.g. 500m, 4, 16Gi)"]
        );
    }

    #[test]
    fn side_channel_ports_per_rank_stay_clear_of_the_pods_other_ports() {
        let mut spec = sample(PD_NIXL).spec;
        assert!(problems(&spec).is_empty(), "{:?}", problems(&spec));
        spec.decode.parallelism.data = 4;
        spec.decode.resources = None;
        spec.kv_transfer.side_channel_port = 8198;
        let p = problems(&spec).join("; ");
        assert!(
            p.contains("side-channel ports 8198-8201 include the engine port behind the routing sidecar 8200"),
            "{p}"
        );
        spec.kv_transfer.side_channel_port = 65534;
        assert!(problems(&spec).join("; ").contains("beyond 65535"));
        spec.decode.parallelism.data = 1;
        spec.kv_transfer.side_channel_port = 5556;
        assert!(
            problems(&spec)
                .join("; ")
                .contains("sideChannelPort 5556 is the KV-events port")
        );
    }

    #[test]
    fn managed_env_is_refused_only_with_nixl() {
        let env = vec![EnvVar {
            name: "UCX_TLS".into(),
            value: Some("tcp".into()),
            ..EnvVar::default()
        }];
        let mut pd = sample(PD_NIXL).spec;
        pd.engine.env = env.clone();
        assert_eq!(problems(&pd).len(), 1);
        assert!(problems(&pd)[0].starts_with("spec.engine.env sets UCX_TLS"));
        let mut aggregated = sample(AGGREGATED).spec;
        aggregated.engine.env = env;
        assert!(problems(&aggregated).is_empty());
    }
}
