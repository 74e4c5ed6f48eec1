//! The decode pods' routing sidecar (`llmd-sidecar`, in the EndpointPicker image):
//! it owns the pods' serving port and runs the P/D two-step for requests a Gateway
//! sends with the EndpointPicker's `x-prefiller-host-port`; the engine moves behind
//! it. Its API access (a watch of the prefill pods, for SSRF protection) comes from
//! a token projected into its container only, under its own ServiceAccount.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext,
    ServiceAccount, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use llmd_api::routing_sidecar::{self, flag};
use llmd_api::{LLMDeploymentSpec, labels};

use super::meta::{Component, Owner};
use super::pod_parts::{self, field_env, read_rule, tcp_port, unprivileged};

/// The pod volume holding the sidecar's credentials.
const TOKEN_VOLUME: &str = "routing-sidecar-token";
/// Lifetime of the projected token (the kubelet refreshes it at 80%).
const TOKEN_SECONDS: i64 = 3600;

/// Name of the sidecar's ServiceAccount, Role and RoleBinding.
pub fn name(owner: &Owner) -> String {
    owner.child_name(routing_sidecar::CONTAINER)
}

/// The label selector of the deployment's prefill pods: the prefillers it accepts.
pub fn prefill_selector(owner: &Owner) -> String {
    format!(
        "{}={},{}={}",
        labels::INSTANCE,
        owner.name,
        labels::ROLE,
        labels::ROLE_PREFILL
    )
}

fn args(owner: &Owner) -> Vec<String> {
    vec![
        format!("--{}={}", flag::PORT, routing_sidecar::PORT),
        format!(
            "--{}={}",
            flag::MODEL_SERVER_PORT,
            routing_sidecar::ENGINE_PORT
        ),
        format!("--{}", flag::ENABLE_SSRF_PROTECTION),
        format!("--{}={}", flag::PREFILL_SELECTOR, prefill_selector(owner)),
        format!("--{}={}", flag::METRICS_PORT, routing_sidecar::METRICS_PORT),
    ]
}

/// Ready once it has listed the prefill pods (its `/health` is its own; the
/// engine's container has its probes).
fn probe(period: i32) -> Probe {
    pod_parts::health_probe("http", period, 3, 2)
}

/// The spec's resources for the sidecar, else a small default.
fn resources(spec: &LLMDeploymentSpec) -> ResourceRequirements {
    if let Some(r) = &spec.router.sidecar.resources {
        return r.clone();
    }
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities("100m", "64Mi")),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("512Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// The sidecar container, running `image` (the EndpointPicker's).
pub fn container(owner: &Owner, spec: &LLMDeploymentSpec, image: &str) -> Container {
    Container {
        name: routing_sidecar::CONTAINER.into(),
        image: Some(image.into()),
        command: Some(vec![routing_sidecar::COMMAND.into()]),
        args: Some(args(owner)),
        env: Some(vec![field_env("POD_NAMESPACE", "metadata.namespace")]),
        ports: Some(vec![
            tcp_port("http", routing_sidecar::PORT),
            tcp_port(
                routing_sidecar::METRICS_PORT_NAME,
                routing_sidecar::METRICS_PORT,
            ),
        ]),
        readiness_probe: Some(probe(5)),
        liveness_probe: Some(probe(10)),
        resources: Some(resources(spec)),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: routing_sidecar::CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            // The image's user (distroless nonroot).
            run_as_user: Some(65532),
            ..unprivileged()
        }),
        ..Container::default()
    }
}

/// The credentials volume: a bound token, the cluster CA and the namespace, as the
/// kubelet would mount them, for the sidecar container alone.
pub fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..KeyToPath::default()
                        }]),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub fn service_account(owner: &Owner) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.object_meta(name(owner), Component::Decode),
        // Only the sidecar container mounts a token (the pod's volume above).
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Read access to pods in the namespace: all the sidecar needs to know its pool's
/// prefill pods.
pub fn role(owner: &Owner) -> Role {
    Role {
        metadata: owner.object_meta(name(owner), Component::Decode),
        rules: Some(vec![read_rule("", "pods")]),
    }
}

pub fn role_binding(owner: &Owner) -> RoleBinding {
    pod_parts::role_binding(owner, name(owner), Component::Decode)
}

/// Whether decode pods run the sidecar: whenever prefill pods can hand them KV
/// (the NIXL fabric is in force), so P/D works behind a Gateway as well as
/// through the EndpointPicker's own proxy, unless `spec.router.sidecar` says no.
pub fn enabled(spec: &LLMDeploymentSpec) -> bool {
    spec.effective_connector() == llmd_api::KvConnector::Nixl && spec.router.sidecar.enabled
}
