//! The EndpointPicker Deployment `<name>-epp`.
//!
//! Its config is a mounted ConfigMap that the EPP watches and applies live, so a
//! weight change does not restart the pod (which would drop its prefix index): the
//! config hash is deliberately not part of the pod template.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, GRPCAction, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use llmd_api::endpoint_picker::{
    self, CONFIG_DIR, EXT_PROC_PORT, GRPC_HEALTH_PORT, HEALTH_SERVICE, HTTP_PORT, METRICS_PORT,
};
use llmd_api::{LLMDeploymentSpec, labels};

use super::EndpointPickerDefaults;
use super::endpoint_picker_config;
use super::meta::{Component, Owner};
use super::pod_parts::tcp_port;

/// Name of the Deployment, Service, ServiceAccount, Role and RoleBinding.
pub fn name(owner: &Owner) -> String {
    owner.child_name("epp")
}

/// Command-line arguments of `llmd-epp`. Precise prefix mode is in its config (the
/// precise-prefix-cache-producer), so switching modes needs no restart.
pub fn args(owner: &Owner) -> Vec<String> {
    endpoint_picker::Args::for_pool(
        &owner.name,
        &owner.namespace,
        &endpoint_picker_config::name(owner),
    )
    .render()
}

fn port(name: &str, number: u16) -> ContainerPort {
    tcp_port(name, i32::from(number))
}

fn grpc_health_probe(period: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: i32::from(GRPC_HEALTH_PORT),
            service: Some(HEALTH_SERVICE.into()),
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

/// The EndpointPicker's image: the spec's, else the operator's default.
pub fn image<'a>(spec: &'a LLMDeploymentSpec, defaults: &'a EndpointPickerDefaults) -> &'a str {
    spec.router.image.as_deref().unwrap_or(&defaults.image)
}

/// The Deployment; image and resources fall back to the operator's defaults.
pub fn deployment(
    owner: &Owner,
    spec: &LLMDeploymentSpec,
    defaults: &EndpointPickerDefaults,
) -> Deployment {
    let mut pod_labels = owner.common_labels(Component::EndpointPicker);
    pod_labels.insert(labels::PART_OF.to_string(), owner.name.clone());
    let container = Container {
        name: "epp".into(),
        image: Some(image(spec, defaults).to_string()),
        args: Some(args(owner)),
        ports: Some(vec![
            port("grpc", EXT_PROC_PORT),
            port("grpc-health", GRPC_HEALTH_PORT),
            port("http", HTTP_PORT),
            port("metrics", METRICS_PORT),
        ]),
        resources: spec
            .router
            .resources
            .clone()
            .or_else(|| defaults.resources.clone()),
        readiness_probe: Some(grpc_health_probe(5)),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/metrics".into()),
                port: IntOrString::String("metrics".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: owner.object_meta(name(owner), Component::EndpointPicker),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.router.replicas),
            selector: LabelSelector {
                match_labels: Some(owner.selector_labels(Component::EndpointPicker)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name(owner)),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: endpoint_picker_config::name(owner),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
